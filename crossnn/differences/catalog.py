"""The catalog: one entry per place where PyTorch, TensorFlow/Keras and crossnn's spec differ.

Each entry says what differs, each framework's side (a mapping from backend name to its formula or
default), what the spec does, where that is documented, and how to see it: `demonstrate(lab)`
measures it on the installed frameworks (their facts, or a spec trained with the entry lowered
natively) and returns findings that hold or not. The tests assert every finding; `crossnn diff` and
the report pages print them.

Entries that state a framework default carry it as data too (`defaults`, crossnn.spec.presets.Default):
this is the one place each default is stated, and the presets (`defaults = "torch" | "keras"` in a
spec) are computed from it. The demonstrations compare those values with what the installed
frameworks measure. A backend added later contributes its side and its defaults from its own
package (Backend.catalog_sides, Backend.catalog_defaults; merged by crossnn.differences.entries).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import numpy as np

from crossnn import spec as S
from crossnn.differences.lab import Finding, Lab
from crossnn.spec import Condition, Default, Experiment

TORCH_DOCS = "https://pytorch.org/docs/stable/"
KERAS_DOCS = "https://keras.io/api/"


@dataclass(frozen=True)
class Entry:
    """One difference. sides: backend name -> that framework's side; spec: what crossnn's spec does;
    defaults: the framework defaults this entry states, by preset (see crossnn.spec.presets)."""

    id: str
    title: str
    what: str
    sides: Mapping[str, str]
    spec: str
    sources: tuple[str, ...]
    demonstrate: Callable[[Lab], list[Finding]]
    applies: Callable[[Experiment], bool] = lambda e: True
    defaults: tuple[Default, ...] = ()


# ---- framework defaults, as data (values in the spec's convention; presets fill them in) --------------

def _decaying(value) -> bool:
    return value is not None and value > 0


_DECAYING = Condition("weight_decay", _decaying, "weight_decay > 0")
_PROBABILITIES = Condition("from_logits", lambda value: value is False, "from_logits = false")
_KERAS_NATIVE = "; `crossnn run --flavor native` trains Keras' own"

KERNEL_INIT = Default(S.Dense, "kernel_init", {"torch": S.FanInUniform(), "keras": S.GlorotUniform()})
BIAS_INIT = Default(S.Dense, "bias_init", {"torch": S.FanInUniform(), "keras": S.Zeros()})
ADAM_EPS = Default(S.Adam, "eps", {"torch": 1e-8, "keras": 1e-7}, notes={
    "keras": "Keras adds epsilon to √v before the bias correction, the spec adds eps to √v̂ (PyTorch's rule): "
             "the preset puts Keras' 1e-7 into the spec's rule" + _KERAS_NATIVE})
WEIGHT_DECAY_KIND = Default(S.Optimizer, "weight_decay_kind", {"torch": "l2", "keras": "decoupled"}, when=_DECAYING)
ADAMW_WEIGHT_DECAY_KIND = Default(S.AdamW, "weight_decay_kind", {"torch": "decoupled", "keras": "decoupled"},
                                  when=_DECAYING)
ADAMW_WEIGHT_DECAY = Default(S.AdamW, "weight_decay", {"torch": 0.01, "keras": 0.004})
RMSPROP_ALPHA = Default(S.RMSprop, "alpha", {"torch": 0.99, "keras": 0.9})
RMSPROP_EPS = Default(S.RMSprop, "eps", {"torch": 1e-8, "keras": 1e-7}, notes={
    "keras": "Keras adds epsilon inside the square root, √(v + ε), the spec outside, √v + eps (and with momentum "
             "Keras keeps lr inside the buffer)" + _KERAS_NATIVE})
ADAGRAD_START = Default(S.Adagrad, "initial_accumulator", {"torch": 0.0, "keras": 0.1})
ADAGRAD_EPS = Default(S.Adagrad, "eps", {"torch": 1e-10, "keras": 1e-7}, notes={
    "keras": "Keras adds epsilon inside the square root, √(s + ε), the spec outside, √s + eps" + _KERAS_NATIVE})
#: Keras clips p to [1e-7, 1 - 1e-7]: clamping log p at log(1e-7) gives the same loss value wherever the clip acts
KERAS_LOG_MIN = math.log(1e-7)
BCE_LOG_MIN = Default(S.BCE, "log_min", {"torch": -100.0, "keras": KERAS_LOG_MIN}, notes={
    "keras": "the clamp at log(1e-7) gives Keras' loss value where its clip of p acts, but the gradient stays the "
             "spec's (PyTorch's), where Keras' is 0 past the clip, and Keras recovers the logits after a sigmoid"
             + _KERAS_NATIVE})
CE_FROM_LOGITS = Default(S.CrossEntropy, "from_logits", {"torch": True, "keras": False})
CE_LOG_MIN = Default(S.CrossEntropy, "log_min", {"keras": KERAS_LOG_MIN}, when=_PROBABILITIES, notes={
    "keras": "Keras also rescales p to sum to 1 before clipping it to [1e-7, 1 - 1e-7]" + _KERAS_NATIVE})
LEARNING_RATES = {
    S.SGD: Default(S.SGD, "lr", {"torch": 1e-3, "keras": 1e-2}),
    S.Adam: Default(S.Adam, "lr", {"torch": 1e-3, "keras": 1e-3}),
    S.RMSprop: Default(S.RMSprop, "lr", {"torch": 1e-2, "keras": 1e-3}),
    S.Adagrad: Default(S.Adagrad, "lr", {"torch": 1e-2, "keras": 1e-3}),
}
#: keras.activations.leaky_relu (what Dense(activation="leaky_relu") uses); keras.layers.LeakyReLU below
LEAKY_SLOPE = Default(S.LeakyReLU, "negative_slope", {"torch": 0.01, "keras": 0.2})
LEAKY_LAYER_SLOPE = Default(S.LeakyReLU, "negative_slope", {"keras": 0.3}, within=S.ActivationLayer)
GELU_APPROXIMATE = Default(S.GELU, "approximate", {"torch": "none", "keras": "none"})


# ---- small demo specs ----------------------------------------------------------------------------

def _regression(optimizer: S.Optimizer, *, epochs=10, scale=1.0, hidden=S.Tanh(), n=16, seed=5) -> Experiment:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = scale * (x @ np.array([[0.5], [-1.0], [0.25]]) + 0.1 * rng.standard_normal((n, 1)))
    dense = dict(kernel_init=S.GlorotUniform(), bias_init=S.Zeros())
    return S.Experiment(name="demo", seed=seed, data=S.InlineData(x=x.tolist(), y=y.tolist()),
                        model=S.Model(inputs=3, layers=(S.Dense(name="h", units=4, activation=hidden, **dense),
                                                        S.Dense(name="out", units=1, **dense))),
                        loss=S.MSE(), optimizer=optimizer, train=S.Train(epochs=epochs, batch_size=n))


def _classifier(loss: S.Loss, out: S.Activation, *, epochs=20) -> Experiment:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((30, 2))
    labels = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 0] > 1).astype(int)
    y = labels.reshape(-1, 1) if getattr(loss, "sparse", False) else np.eye(3)[labels]
    dense = dict(kernel_init=S.GlorotUniform(), bias_init=S.Zeros())
    return S.Experiment(name="demo-classes", seed=9, data=S.InlineData(x=x.tolist(), y=y.tolist()),
                        model=S.Model(inputs=2, layers=(S.Dense(name="h", units=5, activation=S.Tanh(), **dense),
                                                        S.Dense(name="out", units=3, activation=out, **dense))),
                        loss=loss, optimizer=S.SGD(lr=0.1), train=S.Train(epochs=epochs, batch_size=10))


def _close(a, b, rel=1e-6) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-12)


def _fmt(x) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


# ---- demonstrations --------------------------------------------------------------------------------

def _layout(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    return [Finding(f"nn.Linear(3, 2).weight has shape {t['linear_weight_shape']} (out, in)",
                    t["linear_weight_shape"] == [2, 3],
                    {"torch weight rows (out)": t["linear_weight_shape"][0],
                     "torch weight cols (in)": t["linear_weight_shape"][1]}),
            Finding(f"keras Dense(2) on 3 inputs has kernel shape {k['dense_kernel_shape']} (in, out), "
                    "crossnn's canonical layout", k["dense_kernel_shape"] == [3, 2],
                    {"keras kernel rows (in)": k["dense_kernel_shape"][0],
                     "keras kernel cols (out)": k["dense_kernel_shape"][1]})]


def _support(init: S.Initializer, fan_in: int, fan_out: int) -> float:
    """The largest |value| `init` draws for these fans, from 100,000 draws (a uniform's bound to 1e-4)."""
    return float(np.max(np.abs(init.sample(np.random.default_rng(0), (100_000,), fan_in, fan_out))))


def _near_bound(largest: float, bound: float, draws: int) -> bool:
    """`largest` of `draws` uniform draws is within the bound and no further below it than chance allows."""
    return bound * (1 - 20 / draws) <= largest <= bound * (1 + 1e-3)


def _default_init(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["linear_init"], lab.facts("tensorflow")["dense_init"]
    kernel = {p: _support(v, 100, 50) for p, v in KERNEL_INIT.values.items()}
    bias = {p: _support(v, 100, 50) for p, v in BIAS_INIT.values.items()}
    found = [Finding(f"nn.Linear(100, 50): largest |weight| {_fmt(t['weight_max_abs'])} of 5000, largest |bias| "
                     f"{_fmt(t['bias_max_abs'])} of 50: the bound {_fmt(kernel['torch'])} of the torch preset's "
                     f"{KERNEL_INIT.values['torch'].kind} (1/√100), bias not zero",
                     _near_bound(t["weight_max_abs"], kernel["torch"], 5000)
                     and 0 < t["bias_max_abs"] <= bias["torch"] * (1 + 1e-3) and not t["bias_all_zero"]),
             Finding(f"keras Dense(50) on 100 inputs: largest |kernel| {_fmt(k['kernel_max_abs'])} of 5000: the bound "
                     f"{_fmt(kernel['keras'])} of the keras preset's {KERNEL_INIT.values['keras'].kind}; bias all zero "
                     f"({k['bias_all_zero']}) as the preset's {BIAS_INIT.values['keras'].kind}",
                     _near_bound(k["kernel_max_abs"], kernel["keras"], 5000)
                     and k["bias_all_zero"] == (bias["keras"] == 0))]
    e = _regression(S.SGD(lr=0.05), epochs=3)
    for backend in sorted(lab.lowering("default-init")):
        d = lab.run(e, backend, frozenset({"default-init"}))
        ref, own = d.result.reference.snapshots[0], d.record.snapshots[0]
        kernels = [n for n in ref if n.endswith("kernel")]  # the shared biases start at 0: no relative scale
        apart = max(float(np.max(np.abs(own[n] - ref[n])) / np.max(np.abs(ref[n]))) for n in kernels)
        found.append(Finding(f"{backend} with its own initializers and RNG starts elsewhere: its initial kernels "
                             f"differ from the shared start by {apart:.2f} (relative)", apart > 1e-2))
    return found


def _split_at_lr_change(d, *, change: int, lr_old: float, lr_new: float, mu: float) -> tuple[float, float]:
    """For an optimizer that keeps lr inside its momentum buffer against one that applies it outside:
    (largest difference up to step `change`, where lr is constant; relative error of the predicted
    split at step change + 1). Steps 0 .. change-1 use lr_old, step `change` the first lr_new, so
    with the buffer b = (w_k-1 - w_k)/lr_old the lr-inside rule lands μ·(lr_new - lr_old)·b away."""
    ref = d.result.reference.snapshots
    before = max(float(np.max(np.abs(d.record.snapshots[s][n] - ref[s][n]))) for s in range(change + 1) for n in ref[0])
    worst = 0.0
    for name in ref[0]:
        predicted = mu * (lr_new - lr_old) / lr_old * (ref[change - 1][name] - ref[change][name])
        measured = d.record.snapshots[change + 1][name] - ref[change + 1][name]
        worst = max(worst, float(np.max(np.abs(measured - predicted))) / max(float(np.max(np.abs(predicted))), 1e-300))
    return before, worst


def momentum_split_spec() -> Experiment:
    """SGD with momentum whose learning rate drops tenfold after epoch 2 (one step per epoch)."""
    return _regression(S.SGD(lr=0.1, momentum=0.9, schedule=S.StepDecay(unit="epoch", step_size=3, gamma=0.1)),
                       epochs=6)


def _momentum(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["momentum_first_step"], lab.facts("tensorflow")["momentum_first_step"]
    found = [Finding(f"torch, lr 0.1, momentum 0.9, g = 2 from w = 1: buffer {_fmt(t['buffer'])} (= g), "
                     f"w {_fmt(t['w'])}; after lr -> 0.01 and g = 2 again: "
                     f"w {_fmt(t['w2'])} (= 0.8 - 0.01·(0.9·2 + 2) = 0.762)",
                     _close(t["buffer"], 2.0) and _close(t["w"], 0.8) and _close(t["w2"], 0.762)),
             Finding(f"keras, same steps: velocity {_fmt(k['velocity'])} (= -lr·g), w {_fmt(k['w'])}; "
                     f"after lr -> 0.01: w {_fmt(k['w2'])} (= 0.8 + 0.9·(-0.2) - 0.01·2 = 0.6)",
                     _close(k["velocity"], -0.2) and _close(k["w"], 0.8) and _close(k["w2"], 0.6))]
    d = lab.run(momentum_split_spec(), "tensorflow", frozenset({"momentum-sgd"}))
    before, worst = _split_at_lr_change(d, change=3, lr_old=0.1, lr_new=0.01, mu=0.9)
    found.append(Finding(f"keras SGD vs the spec under a step decay: identical to {before:.1e} while lr is constant; "
                         f"at the first step with the new lr they split by mu·(lr_new - lr_old)/lr_old·(w_k-1 - w_k), "
                         f"as the formulas predict (measured vs predicted: {worst:.1e} relative)",
                         before < 1e-12 and worst < 1e-9))
    return found


def adam_epsilon_spec() -> Experiment:
    """Adam on a problem scaled so gradients are ~1e-5: epsilon matters."""
    return _regression(S.Adam(lr=0.01, eps=1e-7), epochs=10, scale=1e-5)


def _adam_epsilon(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    e = adam_epsilon_spec()
    torch_native = lab.run(e, "torch", frozenset({"adam-epsilon"}))  # torch's Adam is the spec's
    keras_native = lab.run(e, "tensorflow", frozenset({"adam-epsilon"}))
    spec_tf = lab.run(e, "tensorflow")
    last = max(keras_native.record.snapshots)
    a, b = torch_native.record.snapshots[last], keras_native.record.snapshots[last]
    apart = max(float(np.max(np.abs(a[n] - b[n]))) for n in a)
    return [Finding(f"defaults: torch eps {_fmt(t['adam_eps'])}, keras epsilon {_fmt(k['adam_eps'])}, as the presets",
                    t["adam_eps"] == ADAM_EPS.values["torch"] and k["adam_eps"] == ADAM_EPS.values["keras"]),
            Finding(f"with the same eps = 1e-7, torch.optim.Adam and keras Adam differ by {apart:.2e} after 10 steps "
                    f"(gradients ~1e-5), while the spec flavour in TF agrees with NumPy to {spec_tf.max_rel:.1e}",
                    apart > 1e-6 and spec_tf.max_rel <= 1e-9 and torch_native.max_rel <= 1e-9)]


def _weight_decay(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    # one Adam step from w = 1, g = 0, lr 0.1, weight_decay 0.1: L2 makes g = 0.1, and Adam's step is lr·m̂/√v̂ = lr;
    # decoupled decay makes w = 1·(1 - 0.1·0.1) and leaves g = 0, so no Adam step
    after = {"l2": 0.9, "decoupled": 0.99}
    torch_adam, torch_adamw = (after[d.values["torch"]] for d in (WEIGHT_DECAY_KIND, ADAMW_WEIGHT_DECAY_KIND))
    keras_adam = after[WEIGHT_DECAY_KIND.values["keras"]]
    found = [Finding(f"one Adam step from w = 1 with zero gradient, lr 0.1, weight_decay 0.1: torch Adam -> "
                     f"{_fmt(t['adam_weight_decay_step'])} (L2: the decay passes through Adam's normalisation), "
                     f"torch AdamW -> {_fmt(t['adamw_weight_decay_step'])}, keras Adam -> "
                     f"{_fmt(k['adam_weight_decay_step'])} (decoupled: w·(1 - lr·wd) = 0.99), as the presets' kinds",
                     _close(t["adam_weight_decay_step"], torch_adam, 1e-5)
                     and _close(t["adamw_weight_decay_step"], torch_adamw, 1e-6)
                     and _close(k["adam_weight_decay_step"], keras_adam, 1e-6))]
    e = _regression(S.Adam(lr=0.01, eps=1e-8, weight_decay=0.1, weight_decay_kind="l2"))
    d = lab.run(e, "tensorflow", frozenset({"weight-decay"}))
    found.append(Finding(f"a spec with L2 weight decay lowered to keras' weight_decay drifts by {d.max_rel:.2e}",
                         d.max_rel > 1e-6))
    return found


def rmsprop_momentum_split_spec() -> Experiment:
    """RMSprop with momentum whose learning rate drops tenfold after epoch 2 (one step per epoch); eps
    so small that inside or outside the square root makes no difference."""
    return _regression(S.RMSprop(lr=0.01, alpha=0.9, eps=1e-30, momentum=0.9,
                                 schedule=S.StepDecay(unit="epoch", step_size=3, gamma=0.1)), epochs=6)


def _rmsprop(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["rmsprop_defaults"], lab.facts("tensorflow")["rmsprop_defaults"]
    e = _regression(S.RMSprop(lr=0.01, alpha=0.9, eps=1e-7), scale=1e-4)
    d = lab.run(e, "tensorflow", frozenset({"rmsprop"}), caption="eps 1e-7, gradients ~1e-4")
    found = [Finding(f"defaults: torch alpha {t['alpha']}, eps {t['eps']}; "
                     f"keras rho {k['rho']}, epsilon {k['epsilon']}, as the presets",
                     t["alpha"] == RMSPROP_ALPHA.values["torch"] and k["rho"] == RMSPROP_ALPHA.values["keras"]
                     and t["eps"] == RMSPROP_EPS.values["torch"] and k["epsilon"] == RMSPROP_EPS.values["keras"]),
             Finding(f"same alpha/rho and eps, eps outside (torch) vs inside (keras) the square root: keras RMSprop "
                     f"drifts from the spec by {d.max_rel:.2e} on gradients ~1e-4", d.max_rel > 1e-6)]
    split = lab.run(rmsprop_momentum_split_spec(), "tensorflow", frozenset({"rmsprop"}),
                    caption="momentum 0.9, lr / 10 after step 2")
    before, worst = _split_at_lr_change(split, change=3, lr_old=0.01, lr_new=0.001, mu=0.9)
    found.append(Finding(f"with momentum 0.9 under a step decay (eps 1e-30): keras RMSprop equals the spec to "
                         f"{before:.1e} while lr is constant and splits at the new lr by "
                         f"mu·(lr_new - lr_old)/lr_old·(w_k-1 - w_k), lr inside its momentum buffer as in keras SGD "
                         f"(measured vs predicted: {worst:.1e} relative)", before < 1e-12 and worst < 1e-9))
    return found


def _adagrad(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["adagrad_defaults"], lab.facts("tensorflow")["adagrad_defaults"]
    e = _regression(S.Adagrad(lr=0.1, initial_accumulator=0.1, eps=1e-7), scale=1e-3)
    d = lab.run(e, "tensorflow", frozenset({"adagrad"}))
    return [Finding(f"defaults: torch initial_accumulator_value {t['initial_accumulator_value']}, eps {t['eps']}; "
                    f"keras initial_accumulator_value {k['initial_accumulator_value']}, epsilon {k['epsilon']}, as the "
                    "presets", all(facts[name] == default.values[preset]
                                   for preset, facts, names in (("torch", t, ("initial_accumulator_value", "eps")),
                                                                ("keras", k, ("initial_accumulator_value", "epsilon")))
                                   for name, default in zip(names, (ADAGRAD_START, ADAGRAD_EPS)))),
            Finding(f"same accumulator start and eps, eps inside keras' square root: drift {d.max_rel:.2e}",
                    d.max_rel > 1e-10)]


def _bce(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    return [Finding(f"BCE at p = 0 with y = 1: torch {_fmt(t['bce_p0_y1'])} (log clamped at -100), keras "
                    f"{_fmt(k['bce_p0_y1'])} (p clipped to 1e-7: -log(1e-7) = 16.118): minus the presets' log_min",
                    _close(t["bce_p0_y1"], -BCE_LOG_MIN.values["torch"])
                    and _close(k["bce_p0_y1"], -BCE_LOG_MIN.values["keras"], 1e-6),
                    {"torch BCE(p=0, y=1)": t["bce_p0_y1"], "keras BCE(p=0, y=1)": k["bce_p0_y1"]}),
            Finding(f"BCE of sigmoid(-50) against y = 1: torch {_fmt(t['bce_logit_input'])}, keras "
                    f"{_fmt(k['bce_logit_input'])}: keras recovers the logit from the sigmoid's output instead of "
                    f"clipping (which would give 16.118)", _close(k["bce_logit_input"], 50.0, 1e-4))]


def _ce_inputs(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    e = _classifier(S.CrossEntropy(from_logits=True, sparse=False), S.Linear())
    d = lab.run(e, "tensorflow", frozenset({"cross-entropy-inputs"}))
    p = _classifier(S.CrossEntropy(from_logits=False, sparse=False, log_min=-100.0), S.Softmax())
    dt = lab.run(p, "torch", frozenset({"cross-entropy-inputs"}))
    on_logits = math.log(sum(math.exp(v) for v in (2.0, 1.0, 0.1))) - 2.0  # -log_softmax(z)[0]
    return [Finding(f"nn.CrossEntropyLoss takes logits (the torch preset's from_logits = "
                    f"{str(CE_FROM_LOGITS.values['torch']).lower()}): on z = [2, 1, 0.1] it gives "
                    f"{_fmt(t['ce_on_logits'])} = -log_softmax(z)[0], on softmax(z) {_fmt(t['ce_on_probabilities'])} "
                    "(a second softmax)",
                    CE_FROM_LOGITS.values["torch"] is True and _close(t["ce_on_logits"], on_logits)
                    and not _close(t["ce_on_logits"], t["ce_on_probabilities"])),
            Finding(f"keras CategoricalCrossentropy defaults to from_logits={k['ce_default_from_logits']}, as the "
                    f"keras preset: on the same logits it gives {_fmt(k['ce_on_logits_as_probabilities'])} instead of "
                    f"{_fmt(k['ce_on_logits'])}", k["ce_default_from_logits"] is CE_FROM_LOGITS.values["keras"]
                    and not _close(k["ce_on_logits"], k["ce_on_logits_as_probabilities"])),
            Finding(f"trained natively: keras' default on a logit model drifts by {d.max_rel:.2e}; torch's "
                    f"CrossEntropyLoss after a softmax layer by {dt.max_rel:.2e}",
                    d.max_rel > 1e-3 and dt.max_rel > 1e-3)]


def _reduction(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    return [Finding(f"mean squared error of p = [[1, 2], [3, 4]] against zeros: mean reduction torch "
                    f"{_fmt(t['mse_mean'])}, keras {_fmt(k['mse_mean'])} (the same)",
                    _close(t["mse_mean"], k["mse_mean"])),
            Finding(f"sum reduction: torch {_fmt(t['mse_sum'])} (sum of all squared errors), "
                    f"keras {_fmt(k['mse_sum'])} (sum over samples of each sample's mean over outputs)",
                    _close(t["mse_sum"], 30.0) and _close(k["mse_sum"], 15.0),
                    {"torch sum": t["mse_sum"], "keras sum": k["mse_sum"], "torch mean": t["mse_mean"],
                     "keras mean": k["mse_mean"]})]


def _broadcast(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["mse_broadcast"], lab.facts("tensorflow")["mse_broadcast"]
    return [Finding(f"MSE of predictions (3, 1) against targets (3,) that are equal: torch {_fmt(t['value'])} "
                    f"(broadcast to 3×3; warning raised: {t['warned']}), keras {_fmt(k['value'])} (shapes aligned)",
                    t["value"] > 0.5 and t["warned"] and _close(k["value"], 0.0),
                    {"torch MSE": t["value"], "keras MSE": k["value"], "correct": 0.0})]


def _learning_rates(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["default_lr"], lab.facts("tensorflow")["default_lr"]
    presets = {cls.__name__: default.values for cls, default in LEARNING_RATES.items()}
    differing = [name for name in ("SGD", "Adam", "RMSprop", "Adagrad") if t[name] != k[name]]
    return [Finding("default learning rates, torch vs keras: " + ", ".join(f"{n} {t[n]} vs {k[n]}" for n in t)
                    + ", as the presets", set(differing) == {"SGD", "RMSprop", "Adagrad"}
                    and all(t[n] == presets[n]["torch"] and k[n] == presets[n]["keras"] for n in presets),
                    {**{f"torch {n}": t[n] for n in t if t[n] is not None},
                     **{f"keras {n}": k[n] for n in k if k[n] is not None}})]


def _leaky(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    return [Finding(f"default slopes: torch {t['leaky_relu_default']}, keras.layers.LeakyReLU "
                    f"{k['leaky_relu_default']['layer']}, "
                    f"keras.activations.leaky_relu {k['leaky_relu_default']['activation']}, as the presets",
                    t["leaky_relu_default"] == LEAKY_SLOPE.values["torch"]
                    and k["leaky_relu_default"]["layer"] == LEAKY_LAYER_SLOPE.values["keras"]
                    and k["leaky_relu_default"]["activation"] == LEAKY_SLOPE.values["keras"],
                    {"torch nn.LeakyReLU": t["leaky_relu_default"],
                     "keras LeakyReLU layer": k["leaky_relu_default"]["layer"],
                     "keras leaky_relu": k["leaky_relu_default"]["activation"]}),
            Finding(f"tf.nn.leaky_relu(-1.0, alpha=0.01) in float64 = {k['leaky_relu_float64']!r}: alpha is a float32 "
                    "attribute", k["leaky_relu_float64"] != -0.01 and _close(k["leaky_relu_float64"], -0.01, 1e-7))]


def _gelu(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    return [Finding(f"defaults: torch nn.GELU approximate='{t['gelu_default']}', keras.activations.gelu approximate="
                    f"{k['gelu_default']['activations']}, keras.ops.gelu approximate={k['gelu_default']['ops']}; the "
                    "presets: the activations' exact form", t["gelu_default"] == GELU_APPROXIMATE.values["torch"]
                    and ("tanh" if k["gelu_default"]["activations"] else "none") == GELU_APPROXIMATE.values["keras"]
                    and k["gelu_default"]["ops"] is True),
            Finding(f"tf.nn.gelu(1.0) in float64 is {k['gelu_float64_error']:.1e} off the exact value "
                    "(float32 constants)",
                    1e-12 < k["gelu_float64_error"] < 1e-6,
                    {"tf.nn.gelu(1.0) error, float64": k["gelu_float64_error"]})]


def _softplus(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["softplus_25"], lab.facts("tensorflow")["softplus_25"]
    return [Finding(f"softplus(25) in float64: exact {t['exact']!r}, torch nn.Softplus {t['torch']!r} (the identity "
                    f"above 20), tf.math.softplus {k['tf']!r}", t["torch"] == 25.0 and t["exact"] != 25.0,
                    {"torch error": abs(t["torch"] - t["exact"]), "tf error": abs(k["tf"] - t["exact"])})]


def _batchnorm(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["batchnorm"], lab.facts("tensorflow")["batchnorm"]
    x = np.array([[1.0, 2.0], [3.0, 5.0], [6.0, 11.0]])
    torch_var = (1 - t["momentum"]) * 1.0 + t["momentum"] * x.var(axis=0, ddof=1)
    keras_var = k["momentum"] * 1.0 + (1 - k["momentum"]) * x.var(axis=0, ddof=0)
    return [Finding(f"defaults: torch momentum {t['momentum']} (weight of the new batch), eps {t['eps']}; "
                    f"keras momentum {k['momentum']} (weight of the old average), epsilon {k['epsilon']}",
                    t["momentum"] == 0.1 and k["momentum"] == 0.99 and t["eps"] == 1e-5 and _close(k["epsilon"], 1e-3)),
            Finding(f"after one training batch: torch running_var {np.round(t['running_var'], 6).tolist()} "
                    "= 0.9 + 0.1 · unbiased variance; keras moving_variance "
                    f"{np.round(k['moving_variance'], 6).tolist()} = 0.99 + 0.01 · biased variance",
                    np.allclose(t["running_var"], torch_var, rtol=1e-6)
                    and np.allclose(k["moving_variance"], keras_var, rtol=1e-5),
                    {"torch running_var[0]": t["running_var"][0], "keras moving_variance[0]": k["moving_variance"][0],
                     "torch running_var[1]": t["running_var"][1], "keras moving_variance[1]": k["moving_variance"][1]})]


def _tf32(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["tf32"], lab.facts("tensorflow")["tf32"]
    return [Finding(f"fresh-process defaults: torch matmul TF32 {t['matmul']}, cuDNN TF32 {t['cudnn']}; TensorFlow "
                    f"TF32 {k}", t["matmul"] is False and t["cudnn"] is True and k is True,
                    {"torch matmul TF32 (1 = on)": float(t["matmul"]), "torch cuDNN TF32": float(t["cudnn"]),
                     "TensorFlow TF32": float(k)})]


def _random(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["random_seed0"], lab.facts("tensorflow")["random_seed0"]
    n = np.random.default_rng(0).random(3).tolist()
    return [Finding(f"three uniforms from seed 0: torch {np.round(t, 4).tolist()}, "
                    f"TensorFlow {np.round(k, 4).tolist()}, NumPy {np.round(n, 4).tolist()}",
                    len({tuple(t), tuple(k), tuple(n)}) == 3,
                    {"torch first uniform": t[0], "TensorFlow first uniform": k[0], "NumPy first uniform": n[0]})]


def _clip(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["clip_at_max_norm"], lab.facts("tensorflow")["clip_at_max_norm"]
    e = _regression(S.SGD(lr=0.1, clip_norm=0.01))
    d = lab.run(e, "tensorflow", frozenset({"clip-norm"}))
    return [Finding(f"gradient [3, 4] (norm 5) clipped at 5: torch {t} (scaled by 5 / (5 + 1e-6)), TF {k} (unchanged)",
                    t[0] < 3.0 and k == [3.0, 4.0]),
            Finding(f"tf.clip_by_global_norm instead of the spec's clip: drift {d.max_rel:.1e}", d.max_rel > 1e-12)]


def _uses(kind: type) -> Callable[[Experiment], bool]:
    def applies(e: Experiment) -> bool:
        for node in e.model.nodes:
            activation = getattr(node.layer, "activation", None)
            if isinstance(node.layer, kind) or isinstance(activation, kind):
                return True
        return isinstance(e.loss, kind) or isinstance(e.optimizer, kind)
    return applies


ENTRIES = [
    Entry("weight-layout", "Linear/Dense weight layout",
          "PyTorch's nn.Linear stores its weight as (out, in) and computes x Wᵀ + b; Keras' Dense stores its kernel "
          "as (in, out) and computes x W + b. Copying weights between them needs a transpose.",
          {"torch": "nn.Linear.weight: (out_features, in_features)",
           "tensorflow": "Dense.kernel: (input_dim, units)"},
          "canonical (in, out); the torch backend transposes at its boundary only",
          (TORCH_DOCS + "generated/torch.nn.Linear.html", KERAS_DOCS + "layers/core_layers/dense/",
           "torch/nn/modules/linear.py", "keras/src/layers/core/dense.py"), _layout),
    Entry("default-init", "Default initializers",
          "With no initializer given, nn.Linear draws weight and bias from U(±1/√fan_in) (kaiming_uniform with "
          "a = √5); Keras' Dense uses glorot_uniform for the kernel and zeros for the bias. Each draws from its own "
          "random stream, so the same seed gives different numbers too (see random-streams).",
          {"torch": "weight and bias ~ U(-1/√fan_in, 1/√fan_in)",
           "tensorflow": "kernel ~ glorot_uniform, bias = 0"},
          "initializers required, or from a preset; values are drawn once in NumPy and shared",
          (TORCH_DOCS + "generated/torch.nn.Linear.html", KERAS_DOCS + "layers/core_layers/dense/",
           "torch/nn/modules/linear.py (reset_parameters)"), _default_init,
          defaults=(KERNEL_INIT, BIAS_INIT)),
    Entry("momentum-sgd", "Momentum SGD: buffer vs learning-rate-scaled velocity",
          "PyTorch accumulates b ← μb + g and steps w ← w − lr·b (b = g on the first step); Keras keeps a velocity "
          "v ← μv − lr·g and steps w ← w + v. While lr is constant they are the same; when lr changes, Keras' velocity "
          "still carries the old lr, PyTorch's buffer does not, and they split.",
          {"torch": "b ← μ b + g;  w ← w − lr·b", "tensorflow": "v ← μ v − lr·g;  w ← w + v"},
          "PyTorch's rule (crossnn.spec.optimizers.SGD)",
          (TORCH_DOCS + "generated/torch.optim.SGD.html", KERAS_DOCS + "optimizers/sgd/",
           "torch/optim/sgd.py", "keras/src/optimizers/sgd.py"), _momentum,
          lambda e: isinstance(e.optimizer, S.SGD) and e.optimizer.momentum > 0),
    Entry("adam-epsilon", "Adam's epsilon",
          "PyTorch adds eps = 1e-8 to √v̂ after bias correction; Keras adds epsilon = 1e-7 to √v before it, which "
          "acts like 1e-7/√(1 − β₂ᵗ) on √v̂: about 3e-6 on the first step. With small gradients the updates differ.",
          {"torch": "w ← w − lr·m̂/(√v̂ + eps), eps 1e-8",
           "tensorflow": "w ← w − lr_t·m/(√v + epsilon), lr_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ), epsilon 1e-7"},
          "PyTorch's rule; eps required, or from a preset (which puts its value into this rule)",
          (TORCH_DOCS + "generated/torch.optim.Adam.html", KERAS_DOCS + "optimizers/adam/",
           "torch/optim/adam.py", "keras/src/optimizers/adam.py"), _adam_epsilon, _uses(S.Adam),
          defaults=(ADAM_EPS,)),
    Entry("weight-decay", "What weight_decay means",
          "In torch.optim (SGD, Adam, RMSprop, Adagrad) weight_decay adds λw to the gradient (L2), which adaptive "
          "optimizers then rescale; AdamW, and every Keras optimizer's weight_decay, shrink the weights directly "
          "(w ← w·(1 − lr·λ), decoupled). AdamW's own default λ is 0.01 in PyTorch, 0.004 in Keras.",
          {"torch": "L2: g ← g + λw (AdamW: decoupled, λ 0.01)",
           "tensorflow": "decoupled for every optimizer (AdamW λ 0.004)"},
          "weight_decay_kind = \"l2\" or \"decoupled\", required when weight_decay > 0, or from a preset",
          (TORCH_DOCS + "generated/torch.optim.Adam.html", TORCH_DOCS + "generated/torch.optim.AdamW.html",
           KERAS_DOCS + "optimizers/", "keras/src/optimizers/base_optimizer.py (_apply_weight_decay)"), _weight_decay,
          lambda e: e.optimizer.weight_decay > 0,
          defaults=(WEIGHT_DECAY_KIND, ADAMW_WEIGHT_DECAY_KIND, ADAMW_WEIGHT_DECAY)),
    Entry("rmsprop", "RMSprop's defaults, epsilon and momentum buffer",
          "PyTorch's RMSprop averages squared gradients with alpha = 0.99 and divides by √v + eps (eps 1e-8); Keras "
          "uses rho = 0.9 and divides by √(v + epsilon) (epsilon 1e-7). With momentum, Keras keeps lr inside the "
          "momentum buffer, as its SGD does, so the two split when the learning rate changes.",
          {"torch": "v ← αv + (1−α)g²; w ← w − lr·g/(√v + eps); momentum: b ← μb + g/(√v + eps), w ← w − lr·b",
           "tensorflow": "v ← ρv + (1−ρ)g²; w ← w − lr·g/√(v + ε); momentum: m ← μm + lr·g/√(v + ε), w ← w − m"},
          "PyTorch's rule; alpha and eps required, or from a preset",
          (TORCH_DOCS + "generated/torch.optim.RMSprop.html", KERAS_DOCS + "optimizers/rmsprop/",
           "keras/src/optimizers/rmsprop.py"), _rmsprop, _uses(S.RMSprop),
          defaults=(RMSPROP_ALPHA, RMSPROP_EPS)),
    Entry("adagrad", "Adagrad's starting accumulator and epsilon",
          "PyTorch starts the squared-gradient sum at 0 and divides by √s + eps (1e-10); Keras starts it at 0.1 and "
          "divides by √(s + epsilon) (1e-7).",
          {"torch": "s₀ = 0; w ← w − lr·g/(√s + eps)", "tensorflow": "s₀ = 0.1; w ← w − lr·g/√(s + ε)"},
          "PyTorch's rule; initial_accumulator and eps required, or from a preset",
          (TORCH_DOCS + "generated/torch.optim.Adagrad.html", KERAS_DOCS + "optimizers/adagrad/",
           "keras/src/optimizers/adagrad.py"), _adagrad, _uses(S.Adagrad),
          defaults=(ADAGRAD_START, ADAGRAD_EPS)),
    Entry("bce-clamp", "Binary cross-entropy: clamping, and logits recovered after a sigmoid",
          "nn.BCELoss clamps each log at −100; Keras clips p to [1e-7, 1 − 1e-7], and when p comes straight from a "
          "sigmoid it recovers the logit and computes the stable form instead. Near saturation the losses and "
          "gradients differ.",
          {"torch": "−[y·max(log p, −100) + (1−y)·max(log(1−p), −100)]",
           "tensorflow": "p clipped to [ε, 1−ε], ε = 1e-7; logits recovered after a sigmoid"},
          "log clamp log_min (required, or from a preset: torch -100, keras log(1e-7)), PyTorch's gradient",
          (TORCH_DOCS + "generated/torch.nn.BCELoss.html", KERAS_DOCS + "losses/probabilistic_losses/",
           "aten/src/ATen/native/Loss.cpp", "keras/src/backend/tensorflow/nn.py (binary_crossentropy)"), _bce,
          _uses(S.BCE), defaults=(BCE_LOG_MIN,)),
    Entry("cross-entropy-inputs", "Cross-entropy: logits or probabilities",
          "nn.CrossEntropyLoss always expects logits (it applies log_softmax itself); Keras' CategoricalCrossentropy "
          "expects probabilities unless from_logits=True, and clips them to [1e-7, 1 − 1e-7]. Feeding one the other's "
          "input trains a different model.",
          {"torch": "CrossEntropyLoss(logits, target)",
           "tensorflow": "CategoricalCrossentropy(from_logits=False) by default"},
          "from_logits required, or from a preset",
          (TORCH_DOCS + "generated/torch.nn.CrossEntropyLoss.html", KERAS_DOCS + "losses/probabilistic_losses/"),
          _ce_inputs, _uses(S.CrossEntropy), defaults=(CE_FROM_LOGITS, CE_LOG_MIN)),
    Entry("loss-reduction", "Loss reductions",
          "Both average by default and agree; with reduction='sum' PyTorch sums every element while Keras sums the "
          "per-sample losses, each already averaged over the outputs.",
          {"torch": "mean over all N·K elements; sum over all",
           "tensorflow": "mean over samples of per-sample means; sum over samples"},
          "every loss is a mean (crossnn.spec.losses)",
          (TORCH_DOCS + "generated/torch.nn.MSELoss.html", KERAS_DOCS + "losses/"), _reduction),
    Entry("target-broadcasting", "Silent target broadcasting",
          "nn.MSELoss with predictions (N, 1) and targets (N,) broadcasts them to (N, N) and returns a wrong loss "
          "with only a warning; Keras aligns the shapes.",
          {"torch": "broadcasts (N,1) − (N,) to (N,N), warns", "tensorflow": "squeezes or expands to the same rank"},
          "targets are checked against the model output when data loads",
          (TORCH_DOCS + "generated/torch.nn.MSELoss.html", "keras/src/losses/loss.py (squeeze_or_expand_to_same_rank)"),
          _broadcast, lambda e: isinstance(e.loss, (S.MSE, S.MAE, S.Huber))),
    Entry("default-learning-rates", "Default learning rates",
          "The optimizers' default learning rates differ between the frameworks for SGD, RMSprop and Adagrad.",
          {"torch": "SGD 1e-3, Adam 1e-3, RMSprop 1e-2, Adagrad 1e-2",
           "tensorflow": "SGD 1e-2, Adam 1e-3, RMSprop 1e-3, Adagrad 1e-3"},
          "lr required, or from a preset", (TORCH_DOCS + "optim.html", KERAS_DOCS + "optimizers/"), _learning_rates,
          defaults=tuple(LEARNING_RATES.values())),
    Entry("leaky-relu-slope", "LeakyReLU slopes",
          "nn.LeakyReLU's negative slope defaults to 0.01, keras.layers.LeakyReLU's to 0.3 and "
          "keras.activations.leaky_relu's to 0.2; tf.nn.leaky_relu also rounds alpha to float32.",
          {"torch": "negative_slope 0.01",
           "tensorflow": "LeakyReLU 0.3, leaky_relu 0.2; tf.nn.leaky_relu alpha is float32"},
          "negative_slope required, or from a preset; written with where() in TF",
          (TORCH_DOCS + "generated/torch.nn.LeakyReLU.html", KERAS_DOCS + "layers/activation_layers/leaky_relu/"),
          _leaky, _uses(S.LeakyReLU), defaults=(LEAKY_SLOPE, LEAKY_LAYER_SLOPE)),
    Entry("gelu-approximation", "GELU: exact or tanh approximation",
          "nn.GELU and keras.activations.gelu default to the exact erf form, keras.ops.gelu to the tanh form; "
          "tf.nn.gelu builds its constants in float32, so in float64 it is ~5e-9 off.",
          {"torch": "approximate='none'",
           "tensorflow": "activations.gelu exact, ops.gelu tanh; tf.nn.gelu float32 constants"},
          "approximate required, or from a preset; written with TF ops in float64",
          (TORCH_DOCS + "generated/torch.nn.GELU.html", KERAS_DOCS + "layers/activations/"),
          _gelu, _uses(S.GELU), defaults=(GELU_APPROXIMATE,)),
    Entry("softplus-threshold", "Softplus thresholds",
          "nn.Softplus returns its input unchanged above 20; tf.math.softplus switches to approximations past a "
          "threshold too. The spec computes max(z, 0) + log1p(exp(−|z|)) everywhere.",
          {"torch": "z above threshold 20", "tensorflow": "thresholded in the kernel"},
          "the exact formula, gradient sigmoid(z)",
          (TORCH_DOCS + "generated/torch.nn.Softplus.html", "tensorflow/core/kernels/softplus_op.h"), _softplus,
          _uses(S.Softplus)),
    Entry("batchnorm", "BatchNorm momentum, epsilon and variance",
          "PyTorch's momentum (0.1) is the weight of the new batch and its running variance uses the unbiased "
          "estimate; Keras' momentum (0.99) is the weight of the old average, its moving variance is biased, and its "
          "epsilon is 1e-3 instead of 1e-5. "
          "(crossnn has no BatchNorm layer; this entry is measured on the frameworks.)",
          {"torch": "r ← 0.9 r + 0.1 · var_unbiased; eps 1e-5",
           "tensorflow": "r ← 0.99 r + 0.01 · var_biased; epsilon 1e-3"},
          "no BatchNorm layer in the spec",
          (TORCH_DOCS + "generated/torch.nn.BatchNorm1d.html",
           KERAS_DOCS + "layers/normalization_layers/batch_normalization/"), _batchnorm, lambda e: False),
    Entry("tf32", "TF32 on NVIDIA GPUs",
          "On Ampere and later GPUs TensorFlow runs float32 matrix multiplies in TF32 (10-bit mantissa) by default; "
          "PyTorch does not for matmuls (since 1.12) but does for cuDNN convolutions.",
          {"torch": "cuda.matmul.allow_tf32 False, cudnn.allow_tf32 True",
           "tensorflow": "tensor_float_32_execution_enabled() True"},
          "parity runs switch TF32 off in every backend",
          (TORCH_DOCS + "notes/cuda.html",
           "https://www.tensorflow.org/api_docs/python/tf/config/experimental/enable_tensor_float_32_execution"),
          _tf32),
    Entry("random-streams", "Random streams",
          "The same seed gives different numbers in NumPy, PyTorch and TensorFlow: their generators differ.",
          {"torch": "torch.manual_seed: Philox/MT per device", "tensorflow": "tf.random.set_seed: global + op seeds"},
          "all randomness (data, initial values, batch order, dropout) is drawn once in NumPy from the spec's seed",
          (TORCH_DOCS + "notes/randomness.html", "https://www.tensorflow.org/api_docs/python/tf/random/set_seed"),
          _random),
    Entry("clip-norm", "Clipping by global norm",
          "torch.nn.utils.clip_grad_norm_ scales by max_norm/(‖g‖ + 1e-6), so it shrinks gradients slightly even at "
          "the threshold; tf.clip_by_global_norm scales by max_norm/max(‖g‖, max_norm).",
          {"torch": "g · min(1, c/(‖g‖ + 1e-6))", "tensorflow": "g · c/max(‖g‖, c)"}, "PyTorch's formula",
          (TORCH_DOCS + "generated/torch.nn.utils.clip_grad_norm_.html",
           "https://www.tensorflow.org/api_docs/python/tf/clip_by_global_norm"), _clip,
          lambda e: e.optimizer.clip_norm is not None),
]

BY_ID = {entry.id: entry for entry in ENTRIES}
