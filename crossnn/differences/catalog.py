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
from crossnn.data import load_dataset
from crossnn.differences.lab import Finding, Lab
from crossnn.metrics import accuracy
from crossnn.params import initial_parameters
from crossnn.spec import Condition, Default, Experiment
from crossnn.spec.layers import window_geometry, window_padding

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
#: the two presets (spec values, `defaults = ...`) whose values the demonstrations below train side by
#: side on crossnn's NumPy reference; no backend is chosen by these names
PRESET_PAIR = ("torch", "keras")

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
#: nn.Conv2d's kaiming_uniform(a=√5) is U(±1/√fan_in) with fan_in = in·kh·kw, as the spec's conv fans count it
CONV_KERNEL_INIT = Default(S.Conv2D, "kernel_init", {"torch": S.FanInUniform(), "keras": S.GlorotUniform()})
CONV_BIAS_INIT = Default(S.Conv2D, "bias_init", {"torch": S.FanInUniform(), "keras": S.Zeros()})
CONV_PADDING = Default(S.Conv2D, "padding", {"torch": "valid", "keras": "valid"})
COUNT_PADDING = Default(S.AvgPool2D, "count_padding", {"torch": True, "keras": False})
BN_MOMENTUM = Default(S.BatchNorm, "momentum", {"torch": 0.9, "keras": 0.99}, notes={
    "torch": "nn.BatchNorm's momentum=0.1 is the weight of the new batch; the spec's momentum is the weight of the "
             "old average (Keras' convention), so torch's 0.1 is the spec's 0.9"})
BN_EPSILON = Default(S.BatchNorm, "epsilon", {"torch": 1e-5, "keras": 1e-3})
BN_VARIANCE = Default(S.BatchNorm, "running_variance", {"torch": "unbiased", "keras": "biased"})
LN_EPSILON = Default(S.LayerNorm, "epsilon", {"torch": 1e-5, "keras": 1e-3})
EMBEDDINGS_INIT = Default(S.Embedding, "embeddings_init", {"torch": S.Normal(mean=0.0, stddev=1.0),
                                                             "keras": S.Uniform(low=-0.05, high=0.05)})
_TWO_BIASES = ("{torch} adds two biases, b_ih + b_hh, each drawn from U(±1/√units); the preset draws the spec's one "
               "bias like either of them, so it spreads less than their sum")
_KERAS_RECURRENT = (("kernel_init", S.GlorotUniform()), ("recurrent_init", S.Orthogonal()), ("bias_init", S.Zeros()))
RECURRENT_INITS = tuple(
    Default(layer, field, {"torch": S.UnitsUniform(), "keras": keras},
            notes={"torch": _TWO_BIASES.format(torch=torch)} if field == "bias_init" and torch else {})
    for layer, torch in ((S.SimpleRNN, "nn.RNN"), (S.LSTM, "nn.LSTM"), (S.GRU, None))  # GRU: the spec has both rows
    for field, keras in _KERAS_RECURRENT)
LSTM_FORGET_BIAS = Default(S.LSTM, "unit_forget_bias", {"torch": False, "keras": True})
GRU_RESET_AFTER = Default(S.GRU, "reset_after", {"torch": True, "keras": True})


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
    found += _default_conv_init(lab)
    e = _regression(S.SGD(lr=0.05), epochs=3)
    for backend in sorted(lab.lowering("default-init")):
        d = lab.run(e, backend, frozenset({"default-init"}))
        ref, own = d.result.reference.snapshots[0], d.record.snapshots[0]
        kernels = [n for n in ref if n.endswith("kernel")]  # the shared biases start at 0: no relative scale
        apart = max(float(np.max(np.abs(own[n] - ref[n])) / np.max(np.abs(ref[n]))) for n in kernels)
        found.append(Finding(f"{backend} with its own initializers and RNG starts elsewhere: its initial kernels "
                             f"differ from the shared start by {apart:.2f} (relative)", apart > 1e-2))
    return found


def _default_conv_init(lab: Lab) -> list[Finding]:
    """nn.Conv2d(8, 16, 3) and keras Conv2D(16, 3) on 8 channels against the presets, drawn with the fans
    crossnn's conv2d gives that layer."""
    t, k = lab.facts("torch")["conv_init"], lab.facts("tensorflow")["conv_init"]
    conv = S.Conv2D(name="conv", filters=16, kernel_size=(3, 3), padding="valid", kernel_init=_G, bias_init=_Z)
    fan_in, fan_out = conv.parameters(((10, 10, 8),))[0][3:]
    kernel = {p: _support(v, fan_in, fan_out) for p, v in CONV_KERNEL_INIT.values.items()}
    bias = {p: _support(v, fan_in, fan_out) for p, v in CONV_BIAS_INIT.values.items()}
    draws = 3 * 3 * 8 * 16
    return [Finding(f"nn.Conv2d(8, 16, 3): largest |weight| {_fmt(t['weight_max_abs'])} of {draws}, largest |bias| "
                    f"{_fmt(t['bias_max_abs'])} of 16: the bound {_fmt(kernel['torch'])} of the torch preset's "
                    f"{CONV_KERNEL_INIT.values['torch'].kind} with crossnn's conv fan_in 3·3·8 = {fan_in}; bias drawn "
                    "with the same bound", fan_in == 72 and _near_bound(t["weight_max_abs"], kernel["torch"], draws)
                    and 0 < t["bias_max_abs"] <= bias["torch"] * (1 + 1e-3) and not t["bias_all_zero"]),
            Finding(f"keras Conv2D(16, 3) on 8 channels: largest |kernel| {_fmt(k['kernel_max_abs'])} of {draws}: the "
                    f"bound {_fmt(kernel['keras'])} of {CONV_KERNEL_INIT.values['keras'].kind} with receptive-field "
                    f"fans ({fan_in}, {fan_out}), not {_fmt(k['glorot_limit_without_receptive_field'])} (8, 16); bias "
                    f"all zero ({k['bias_all_zero']}) as the keras preset's {CONV_BIAS_INIT.values['keras'].kind}",
                    fan_out == 144 and _near_bound(k["kernel_max_abs"], kernel["keras"], draws)
                    and k["bias_all_zero"] == (bias["keras"] == 0))]


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


# ---- layers: convolution, pooling, flatten ---------------------------------------------------------

_G, _Z = S.GlorotUniform(), S.Zeros()


def _window_starts(size: int, window: int, stride: int, padding: str) -> list[int]:
    """Where crossnn's windows start along one axis of `size` (rows padded before the input count negative)."""
    out, before, _ = window_padding(size, window, stride, 1, padding)
    return [i * stride - before for i in range(out)]


def _experiment(name: str, inputs, layers, x, y, loss: S.Loss, optimizer: S.Optimizer, epochs: int,
                batch_size: int | None = None, seed: int = 3) -> Experiment:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    return S.Experiment(name=name, seed=seed, data=S.InlineData(x=x.tolist(), y=y.tolist()),
                        model=S.Model(inputs=inputs, layers=tuple(layers)), loss=loss, optimizer=optimizer,
                        train=S.Train(epochs=epochs, batch_size=batch_size or len(x)))


def _apart(a: np.ndarray, b: np.ndarray) -> float:
    """max |b - a| / max |a|."""
    return float(np.max(np.abs(b - a)) / np.max(np.abs(a)))


def same_padding_pair() -> tuple[Experiment, Experiment]:
    """One CNN on 8×8 images (conv 3×3 stride 2 -> flatten -> dense), twice: with 'same' (TensorFlow's
    padding: none above, one row below) and with PyTorch users' symmetric padding=1, written as a
    'valid' convolution of the images padded with one zero row above and one zero column left (the
    row and column padding=1 adds below and right are never read at stride 2). Their variables have
    the same names, shapes and initial values."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((24, 8, 8, 1))
    y = x[:, ::2, ::2, 0].reshape(24, -1) @ np.linspace(-1.0, 1.0, 16).reshape(16, 1)
    bias = S.Uniform(low=-0.1, high=0.1)

    def cnn(padding, images):
        conv = S.Conv2D(name="conv", filters=2, kernel_size=(3, 3), strides=(2, 2), padding=padding,
                        activation=S.Tanh(), kernel_init=_G, bias_init=bias)
        return _experiment("demo-same-padding", list(images.shape[1:]),
                           [conv, S.Flatten(name="flat"), S.Dense(name="out", units=1, kernel_init=_G, bias_init=bias)],
                           images, y, S.MSE(), S.SGD(lr=0.05), epochs=10)
    return cnn("same", x), cnn("valid", np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0))))


def _same_padding(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["same_padding_stride2"], lab.facts("tensorflow")["same_stride2_window_starts"]
    ours = _window_starts(8, 3, 2, "same")
    symmetric, padded_after = [int(v) for v in t["torch_padding_1"]], [int(v) for v in t["same"]]
    found = [Finding(f"8 rows holding their index, a 3-row kernel, stride 2: keras 'same' starts its windows at rows "
                     f"{k}, crossnn's 'same' at {ours} (no row above, one below), torch with F.pad one row below at "
                     f"{padded_after}; nn.Conv2d(padding=1) at {symmetric}: every window a row earlier",
                     list(k) == ours == padded_after and symmetric == [row - 1 for row in ours])]
    same, shifted = same_padding_pair()
    as_torch = [row - 1 for row in _window_starts(9, 3, 2, "valid")]  # the padded row above is row -1
    start = _apart(*(lab.predict(e, initial_parameters(e)) for e in (same, shifted)))
    d = lab.apart(same, shifted, "nn.Conv2d(padding=1) against 'same', stride 2 (both NumPy float64)")
    found.append(Finding(f"trained: one CNN (8×8 images, conv 3×3 stride 2, dense) with padding=1's windows "
                         f"(rows {as_torch}) instead of 'same': its first outputs are {start:.2f} apart (relative), "
                         f"and after {max(d.record.snapshots)} SGD steps its parameters {d.final_rel:.2g} apart",
                         as_torch == symmetric and start > 0.05 and d.final_rel > 1e-3))
    return found


def strided_same_spec() -> Experiment:
    """A stride-2 'same' convolution (3×4 kernel) on 8×7 images: padding (0, 1) rows and (1, 2) columns."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((12, 8, 7, 2))
    conv = S.Conv2D(name="conv", filters=3, kernel_size=(3, 4), strides=(2, 2), padding="same",
                    activation=S.Tanh(), kernel_init=_G, bias_init=S.Uniform(low=-0.1, high=0.1))
    return _experiment("demo-strided-same", [8, 7, 2], [conv, S.Flatten(name="flat"),
                                                         S.Dense(name="out", units=1, kernel_init=_G, bias_init=_Z)],
                       x, rng.standard_normal((12, 1)), S.MSE(), S.SGD(lr=0.05), epochs=5)


def _torch_same_stride(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch"), lab.facts("tensorflow")
    refused, even = t["conv_same_stride2"], [int(v) for v in t["conv_same_even_kernel"]]
    ours = _window_starts(4, 2, 1, "same")
    found = [Finding(f"nn.Conv2d(2, 3, 3, stride=2, padding='same') raises {refused['raised']}: "
                     f"\"{refused['message']}\"; keras Conv2D(strides=(2, 1), padding='same') runs (windows at rows "
                     f"{k['same_stride2_window_starts']})",
                     refused["raised"] == "ValueError" and "same" in refused["message"]
                     and len(k["same_stride2_window_starts"]) == 4),
             Finding(f"at stride 1 torch's padding='same' pads as TensorFlow and crossnn: a 2-row kernel on 4 rows "
                     f"starts its windows at rows {even}, crossnn's at {ours} (the extra row after)", even == ours)]
    spec = strided_same_spec()
    window = window_geometry(spec.model.layers[0], spec.model.input_shape)
    d = lab.run(spec, "torch", caption="stride 2, 'same' on 8×7")
    found.append(Finding(f"crossnn's torch backend pads explicitly (F.pad, the extra row and column after) and "
                         f"convolves with padding 0: a stride-2 'same' 3×4 convolution on 8×7 images (rows padded "
                         f"{window.top} above, {window.bottom} below, columns {window.left} left, {window.right} "
                         f"right) trains with the reference to {d.max_rel:.1e}",
                         d.max_rel <= 1e-9 and not window.symmetric))
    return found


def image_classifier() -> Experiment:
    """4×4 one-channel images of three classes (a bright top-left square, top-right square or bottom row
    under noise): conv 3×3 stride 2 'same' with 3 filters (2×2×3) -> flatten (12) -> dense 3."""
    rng = np.random.default_rng(13)
    labels = np.arange(90) % 3
    x = 0.3 * rng.standard_normal((90, 4, 4, 1))
    x[labels == 0, :2, :2] += 1.0
    x[labels == 1, :2, 2:] += 1.0
    x[labels == 2, 3:, :] += 1.0
    conv = S.Conv2D(name="conv", filters=3, kernel_size=(3, 3), strides=(2, 2), padding="same",
                    activation=S.ReLU(), kernel_init=_G, bias_init=_Z)
    return _experiment("demo-images", [4, 4, 1], [conv, S.Flatten(name="flat"),
                                                   S.Dense(name="out", units=3, kernel_init=_G, bias_init=_Z)],
                       x, labels.reshape(-1, 1), S.CrossEntropy(from_logits=True, sparse=True),
                       S.Adam(lr=0.05, eps=1e-8), epochs=40, batch_size=30)


def _accuracy(lab: Lab, e: Experiment, variables) -> float:
    data = load_dataset(e)
    return accuracy(e.loss, lab.predict(e, variables, data.x), data.y)


def _flatten_order(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["flatten_order"], lab.facts("tensorflow")["flatten_order"]
    order = [int(v) for v in t["channels_last"]]  # (h, w, c) position -> where nn.Flatten puts that value
    moved = sum(position != index for position, index in enumerate(order))
    e = image_classifier()
    trained = lab.reference(e).final_params
    unpermuted = {**trained, "out/kernel": trained["out/kernel"][order]}  # Keras' rows met by nn.Flatten's order
    right, wrong = _accuracy(lab, e, trained), _accuracy(lab, e, unpermuted)
    return [Finding(f"one (C, H, W) = (3, 2, 2) image holding 0..11: nn.Flatten gives 0..11; in crossnn's and "
                    f"Keras' (h, w, c) order the same values read {order}: {moved} of 12 move (keras Flatten of an "
                    f"(H, W, C) tensor holding 0..11: {k}, row-major, channels fastest)",
                    moved == 10 and list(k) == list(range(12)) and order[:3] == [0, 4, 8]),
            Finding(f"a CNN (conv -> flatten -> dense) trained on crossnn's reference classifies {right:.0%} of its "
                    f"images; its weights in PyTorch without the permute before nn.Flatten (the dense rows met in "
                    f"(c, h, w) order) classify {wrong:.0%}", right >= 0.9 and wrong <= right - 0.2,
                    {"accuracy, (h, w, c) as trained": right, "accuracy, nn.Flatten without permute": wrong})]


def _conv_layout(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["conv_weight_shape"], lab.facts("tensorflow")["conv_kernel_shape"]
    conv = S.Conv2D(name="c", filters=3, kernel_size=(4, 5), padding="valid", kernel_init=_G, bias_init=_Z)
    ours = list(conv.parameters(((8, 8, 2),))[0].shape)
    e = image_classifier()
    trained = lab.reference(e).final_params
    weight = trained["conv/kernel"].transpose(3, 2, 0, 1)  # what a torch state_dict holds: (out, in, kh, kw)
    back, reshaped = weight.transpose(2, 3, 1, 0), weight.reshape(trained["conv/kernel"].shape)
    right, wrong = _accuracy(lab, e, trained), _accuracy(lab, e, {**trained, "conv/kernel": reshaped})
    return [Finding(f"nn.Conv2d(2, 3, (4, 5)).weight has shape {t} (out, in, kh, kw); keras Conv2D(3, (4, 5)) on 2 "
                    f"channels a kernel {k} (kh, kw, in, out); crossnn's conv2d kernel {ours}, Keras' layout",
                    t == [3, 2, 4, 5] and k == [4, 5, 2, 3] and ours == k,
                    {"torch weight axis 0 (out)": t[0], "torch axis 1 (in)": t[1],
                     "keras kernel axis 2 (in)": k[2], "keras axis 3 (out)": k[3]}),
            Finding(f"a trained CNN's kernel through torch's layout and back: transpose(2, 3, 1, 0) restores it "
                    f"exactly ({np.array_equal(back, trained['conv/kernel'])}) and the model classifies {right:.0%}; "
                    f"a reshape to (kh, kw, in, out) instead scrambles the filters: {wrong:.0%}",
                    np.array_equal(back, trained["conv/kernel"]) and right >= 0.9 and wrong <= right - 0.2)]


def _pool_probe(count_padding: bool) -> Experiment:
    """avg_pool2d 2×2, stride 2, 'same' on a 3×3 image holding 1..9 (the last row and column of windows
    reach into the padding)."""
    x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    pool = S.AvgPool2D(name="pool", pool_size=(2, 2), strides=(2, 2), padding="same", count_padding=count_padding)
    return _experiment("demo-avg-pool", [3, 3, 1], [pool], x, np.zeros((1, 2, 2, 1)), S.MSE(), S.SGD(lr=0.1), 1)


def avg_pool_pair() -> tuple[Experiment, Experiment]:
    """A CNN whose 'same' average pooling reaches into the padding (5×5 -> 3×3), with count_padding
    false (TensorFlow) and true (PyTorch's count_include_pad)."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((20, 5, 5, 1))
    y = x.mean(axis=(1, 2)) + x[:, -1, -1]

    def cnn(count_padding):
        layers = [S.Conv2D(name="conv", filters=2, kernel_size=(3, 3), padding="same", activation=S.Tanh(),
                           kernel_init=_G, bias_init=S.Uniform(low=-0.1, high=0.1)),
                  S.AvgPool2D(name="pool", pool_size=(2, 2), strides=(2, 2), padding="same",
                              count_padding=count_padding),
                  S.Flatten(name="flat"), S.Dense(name="out", units=1, kernel_init=_G, bias_init=_Z)]
        return _experiment("demo-avg-pool", [5, 5, 1], layers, x, y, S.MSE(), S.SGD(lr=0.05), epochs=10)
    return cnn(False), cnn(True)


def _avg_pool(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["avgpool_count_include_pad"], lab.facts("tensorflow")["avg_pool_same_divisors"]
    window = window_geometry(_pool_probe(True).model.layers[0], (3, 3, 1))
    x = np.arange(1.0, 10.0).reshape(3, 3)
    padded = np.pad(x, ((window.top, window.bottom), (window.left, window.right)))
    sums = np.array([[padded[i:i + 2, j:j + 2].sum() for j in (0, 2)] for i in (0, 2)])
    divisors = {count: (sums / lab.predict(e, {})[0, :, :, 0]).round(12).tolist()
                for count, e in ((c, _pool_probe(c)) for c in (False, True))}
    keras_counts = k == [[4.0, 4.0], [4.0, 4.0]]
    presets_hold = COUNT_PADDING.values["torch"] is t and COUNT_PADDING.values["keras"] is keras_counts
    found = [Finding(f"2×2 windows, stride 2, 'same' on a 3×3 image holding 1..9: keras AveragePooling2D divides the "
                     f"window sums by {k} (the input positions only), crossnn's avg_pool2d with count_padding = false "
                     f"by {divisors[False]}, with true by {divisors[True]}, as nn.AvgPool2d with its default "
                     f"count_include_pad={t}; the presets: torch {COUNT_PADDING.values['torch']}, keras "
                     f"{COUNT_PADDING.values['keras']}",
                     k == divisors[False] and divisors[True] == [[4.0, 4.0], [4.0, 4.0]] and t is True and presets_hold,
                     {"keras divisor, corner window": k[1][1], "crossnn count_padding=false": divisors[False][1][1],
                      "crossnn count_padding=true": divisors[True][1][1]})]
    d = lab.apart(*avg_pool_pair(), "count_padding true against false (both NumPy float64)")
    found.append(Finding(f"trained: a CNN whose 'same' average pooling reaches into the padding, counted as PyTorch "
                         f"does instead of as TensorFlow: its parameters are {d.final_rel:.2g} apart (relative) after "
                         f"{max(d.record.snapshots)} SGD steps", d.final_rel > 1e-3))
    return found


# ---- layers: normalization, embeddings, recurrent --------------------------------------------------

#: the batch the backends' batchnorm facts normalize
_BATCH = np.array([[1.0, 2.0], [3.0, 5.0], [6.0, 11.0]])


def batch_norm_spec(preset: str, x=_BATCH, y=None, *, epochs=1) -> Experiment:
    """batch_norm (the preset's momentum, epsilon and running variance) -> dense 1, trained on x in
    one batch per step."""
    y = np.zeros((len(x), 1)) if y is None else y
    return _experiment(f"demo-batch-norm-{preset}", x.shape[1], [
        S.make(S.BatchNorm, name="bn", defaults=preset),
        S.Dense(name="out", units=1, kernel_init=_G, bias_init=S.Uniform(low=-0.1, high=0.1))],
        x, y, S.MSE(), S.SGD(lr=0.05), epochs=epochs)


def _batchnorm(lab: Lab) -> list[Finding]:
    t, k = lab.facts("torch")["batchnorm"], lab.facts("tensorflow")["batchnorm"]
    x = _BATCH
    torch_var = (1 - t["momentum"]) * 1.0 + t["momentum"] * x.var(axis=0, ddof=1)
    keras_var = k["momentum"] * 1.0 + (1 - k["momentum"]) * x.var(axis=0, ddof=0)
    found = [Finding(f"defaults: torch momentum {t['momentum']} (weight of the new batch: the spec's "
                     f"{1 - t['momentum']:.2g}), eps {t['eps']}; keras momentum {k['momentum']} (weight of the old "
                     f"average), epsilon {_fmt(k['epsilon'])}, as the presets",
                     _close(1 - t["momentum"], BN_MOMENTUM.values["torch"]) and t["eps"] == BN_EPSILON.values["torch"]
                     and _close(k["momentum"], BN_MOMENTUM.values["keras"])
                     and _close(k["epsilon"], BN_EPSILON.values["keras"])),
             Finding(f"after one training batch: torch running_var {np.round(t['running_var'], 6).tolist()} "
                     "= 0.9 + 0.1 · unbiased variance; keras moving_variance "
                     f"{np.round(k['moving_variance'], 6).tolist()} = 0.99 + 0.01 · biased variance",
                     np.allclose(t["running_var"], torch_var, rtol=1e-6)
                     and np.allclose(k["moving_variance"], keras_var, rtol=1e-5),
                     {f"{name}[{i}]": values[i] for i in (0, 1)
                      for name, values in (("torch running_var", t["running_var"]),
                                           ("keras moving_variance", k["moving_variance"]))})]
    ours = {}
    for preset in PRESET_PAIR:
        after = lab.reference(batch_norm_spec(preset)).snapshots[1]
        ours[preset] = (after["bn/moving_mean"], after["bn/moving_variance"])
    found.append(Finding(f"crossnn's batch_norm with the torch preset (running_variance \"unbiased\") after the same "
                         f"batch: moving_mean {np.round(ours['torch'][0], 6).tolist()}, moving_variance "
                         f"{np.round(ours['torch'][1], 6).tolist()}, torch's; with the keras preset (\"biased\"): "
                         f"{np.round(ours['keras'][1], 6).tolist()}, keras' (float32)",
                         np.allclose(ours["torch"][0], t["running_mean"], rtol=1e-12)
                         and np.allclose(ours["torch"][1], t["running_var"], rtol=1e-12)
                         and np.allclose(ours["keras"][0], k["moving_mean"], rtol=1e-6)
                         and np.allclose(ours["keras"][1], k["moving_variance"], rtol=1e-6)))
    rng = np.random.default_rng(15)
    x = 2.0 + 3.0 * rng.standard_normal((8, 3))
    y = x @ np.array([[0.5], [-1.0], [0.25]])
    torch_bn, keras_bn = (batch_norm_spec(preset, x, y, epochs=20) for preset in PRESET_PAIR)
    d = lab.apart(torch_bn, keras_bn, "keras' batch-norm defaults against torch's (both NumPy float64)")
    predicted = {"torch": lab.predict(torch_bn, d.result.reference.final_params),
                 "keras": lab.predict(keras_bn, d.record.final_params)}
    found.append(Finding(f"trained 20 steps on the same data from the same start, torch's and keras' batch-norm "
                         f"defaults end {d.final_rel:.2g} apart (relative, moving statistics included) and their "
                         f"predictions {_apart(predicted['torch'], predicted['keras']):.2g} apart",
                         d.final_rel > 1e-2 and _apart(predicted["torch"], predicted["keras"]) > 1e-2))
    return found


def layer_norm_spec(epsilon: float, x, y, epochs: int = 1) -> Experiment:
    return _experiment("demo-layer-norm", x.shape[1], [
        S.LayerNorm(name="ln", epsilon=epsilon),
        S.Dense(name="out", units=1, kernel_init=_G, bias_init=S.Uniform(low=-0.1, high=0.1))],
        x, y, S.MSE(), S.SGD(lr=0.05), epochs=epochs)


def _layernorm_epsilon(lab: Lab) -> list[Finding]:
    rng = np.random.default_rng(16)
    x = 0.03 * rng.standard_normal((8, 6))  # variance of each row about 1e-3
    y = x @ np.linspace(-10.0, 10.0, 6).reshape(6, 1)
    eps = {preset: LN_EPSILON.values[preset] for preset in PRESET_PAIR}
    normalized = {}
    for preset, epsilon in eps.items():
        e = _experiment("demo-layer-norm", 6, [S.LayerNorm(name="ln", epsilon=epsilon)], x, x, S.MSE(),
                        S.SGD(lr=0.1), 1)
        normalized[preset] = lab.predict(e, initial_parameters(e))
    ratio = normalized["torch"] / normalized["keras"]
    variance = x.var(axis=1, keepdims=True)
    predicted = np.sqrt((variance + eps["keras"]) / (variance + eps["torch"]))
    d = lab.apart(*(layer_norm_spec(eps[preset], x, y, epochs=20) for preset in PRESET_PAIR),
                  "layer_norm epsilon 1e-3 against 1e-5 (both NumPy float64)")
    return [Finding(f"crossnn's layer_norm with the presets' epsilon, torch {_fmt(eps['torch'])} and keras "
                    f"{_fmt(eps['keras'])}, on rows whose variance is {variance.min():.1e}..{variance.max():.1e}: the "
                    f"torch preset's outputs are {ratio.min():.3g}..{ratio.max():.3g} times keras', √((σ² + 1e-3) / "
                    f"(σ² + 1e-5)) as the formula says (to {np.max(np.abs(ratio - predicted)):.0e}; measured on "
                    "crossnn's reference: the backends report no layer-norm facts yet)",
                    np.allclose(ratio, predicted, rtol=1e-12) and ratio.min() > 1.2,
                    {"output ratio torch / keras, smallest": float(ratio.min()),
                     "largest": float(ratio.max())}),
            Finding(f"trained 20 steps from the same start, the two epsilons end {d.final_rel:.2g} apart (relative)",
                    d.final_rel > 1e-3)]


def _sequence_spec(name: str, layer: S.Layer, *, ids=False, steps=5, features=3, n=12) -> Experiment:
    """`layer` on sequences (ids from a vocabulary of 1000, or `features` floats per step), its output
    flattened into a dense layer of 1."""
    rng = np.random.default_rng(17)
    x = rng.integers(0, 1000, (n, steps)) if ids else rng.standard_normal((n, steps, features))
    inputs = [steps] if ids else [steps, features]
    return _experiment(name, inputs, [layer, S.Flatten(name="flat"), S.Dense(name="out", units=1, kernel_init=_G,
                                                                             bias_init=_Z)],
                       x, rng.standard_normal((n, 1)), S.MSE(), S.SGD(lr=0.05), 1)


def _embedding_init(lab: Lab) -> list[Finding]:
    tables = {preset: initial_parameters(_sequence_spec("demo-embedding", S.make(
        S.Embedding, name="embed", input_dim=1000, output_dim=16, defaults=preset), ids=True))["embed/embeddings"]
              for preset in PRESET_PAIR}
    t, k = tables["torch"], tables["keras"]
    return [Finding(f"crossnn's draws of a 1000×16 table with the presets' embeddings_init (the backends report no "
                    f"embedding facts yet): torch's N(0, 1) has std {t.std():.3f}, largest |value| "
                    f"{np.abs(t).max():.2f}; keras' U(±0.05) std {k.std():.4f} (0.05/√3 = 0.0289), largest "
                    f"{np.abs(k).max():.4f}: the torch preset's vectors start {t.std() / k.std():.0f}× larger",
                    _close(t.std(), 1.0, 0.03) and _close(k.std(), 0.05 / math.sqrt(3), 0.03)
                    and np.abs(k).max() <= 0.05 and np.abs(t).max() > 3.0,
                    {"torch preset std": float(t.std()), "keras preset std": float(k.std())})]


def _recurrent_init(lab: Lab) -> list[Finding]:
    units, features = 16, 3
    drawn = {preset: initial_parameters(_sequence_spec("demo-lstm", S.make(
        S.LSTM, name="lstm", units=units, defaults=preset), features=features)) for preset in PRESET_PAIR}
    t, k = drawn["torch"], drawn["keras"]
    bound, glorot = 1 / math.sqrt(units), math.sqrt(6 / (features + 4 * units))
    largest = {name: float(np.abs(t[f"lstm/{name}"]).max()) for name in ("kernel", "recurrent_kernel", "bias")}
    recurrent = k["lstm/recurrent_kernel"]
    off = float(np.max(np.abs(recurrent @ recurrent.T - np.eye(units))))
    bias = k["lstm/bias"].reshape(4, units)
    return [Finding(f"crossnn's LSTM (3 features, 16 units) with the torch preset (units_uniform, the backends report "
                    f"no recurrent-init facts yet): largest |kernel| {largest['kernel']:.4f} of 192, "
                    f"|recurrent_kernel| {largest['recurrent_kernel']:.4f} of 1024, |bias| {largest['bias']:.4f} of "
                    f"64: all within 1/√16 = 0.25, whatever the input size",
                    all(value <= bound for value in largest.values())
                    and _near_bound(largest["recurrent_kernel"], bound, 1024)),
            Finding(f"with the keras preset: largest |kernel| {np.abs(k['lstm/kernel']).max():.4f} (glorot bound "
                    f"√(6/(3 + 64)) = {glorot:.4f}), recurrent kernel orthogonal (|R Rᵀ − I| ≤ {off:.0e}), bias per "
                    f"gate (i, f, c, o) {bias.mean(axis=1).tolist()}: zeros but the forget gate's ones "
                    "(unit_forget_bias)", np.abs(k["lstm/kernel"]).max() <= glorot and off < 1e-12
                    and bias.mean(axis=1).tolist() == [0.0, 1.0, 0.0, 0.0],
                    {"torch preset, largest |kernel|": largest["kernel"],
                     "keras preset, largest |kernel|": float(np.abs(k["lstm/kernel"]).max())})]


def _lstm(unit_forget_bias: bool) -> S.LSTM:
    return S.LSTM(name="lstm", units=8, return_sequences=True, kernel_init=_G, recurrent_init=S.Orthogonal(),
                  bias_init=_Z, unit_forget_bias=unit_forget_bias)


def _lstm_forget_bias(lab: Lab) -> list[Finding]:
    biases = {preset: initial_parameters(_sequence_spec("demo-lstm", S.make(
        S.LSTM, name="lstm", units=8, defaults=preset)))["lstm/bias"].reshape(4, 8)[1] for preset in PRESET_PAIR}
    with_ones, without = (_sequence_spec("demo-lstm", _lstm(flag), steps=20) for flag in (True, False))
    starts = {flag: initial_parameters(e) for flag, e in ((True, with_ones), (False, without))}
    same_weights = all(np.array_equal(starts[True][name], starts[False][name]) for name in starts[True]
                       if name != "lstm/bias")
    apart = _apart(*(lab.predict(e, starts[flag]) for flag, e in ((False, without), (True, with_ones))))
    keras_flag = str(LSTM_FORGET_BIAS.values["keras"]).lower()
    return [Finding(f"crossnn's initial forget-gate biases (the backends report no LSTM-bias facts yet): keras "
                    f"preset {biases['keras'].tolist()} (unit_forget_bias = {keras_flag}), torch preset in "
                    f"[{biases['torch'].min():.3f}, {biases['torch'].max():.3f}] (drawn like "
                    f"the other gates', U(±1/√8))",
                    np.all(biases["keras"] == 1.0) and np.all(np.abs(biases["torch"]) <= 1 / math.sqrt(8))),
            Finding(f"the same LSTM weights on 20-step sequences with and without the forget bias of 1: outputs "
                    f"{apart:.2g} apart (relative) before any training", same_weights and apart > 1e-2,
                    {"outputs apart, forget bias 1 vs 0": apart})]


def _gru(reset_after: bool) -> S.GRU:
    return S.GRU(name="gru", units=6, return_sequences=True, kernel_init=_G, recurrent_init=S.Orthogonal(),
                 bias_init=_Z, reset_after=reset_after)


def _gru_gates(lab: Lab) -> list[Finding]:
    after, before = (_sequence_spec("demo-gru", _gru(flag), steps=8) for flag in (True, False))
    start = initial_parameters(after)
    shared = {name: value for name, value in start.items() if name != "gru/bias"}
    same_weights = all(np.array_equal(value, initial_parameters(before)[name]) for name, value in shared.items())
    out_after, out_before = lab.predict(after, start), lab.predict(before, initial_parameters(before))
    units = 6
    swap = np.r_[units:2 * units, 0:units, 2 * units:3 * units]  # torch's r, z, n read as Keras' z, r, h
    swapped = {**start, "gru/kernel": start["gru/kernel"][:, swap],
               "gru/recurrent_kernel": start["gru/recurrent_kernel"][:, swap]}
    reset, order = _apart(out_after, out_before), _apart(out_after, lab.predict(after, swapped))
    return [Finding(f"crossnn's reference GRU, the same weights (the backends report no GRU facts yet): reset_after "
                    f"= false instead of true (both frameworks' default now, the presets') moves the outputs "
                    f"{reset:.2g} (relative); z and r swapped, nn.GRU's gate order r, z, n read as Keras' z, r, h, "
                    f"moves them {order:.2g}", same_weights and reset > 1e-2 and order > 1e-2
                    and GRU_RESET_AFTER.values == {"torch": True, "keras": True},
                    {"outputs apart, reset_after false": reset, "outputs apart, z and r swapped": order})]


def _uses(kind: type) -> Callable[[Experiment], bool]:
    def applies(e: Experiment) -> bool:
        for node in e.model.nodes:
            activation = getattr(node.layer, "activation", None)
            if isinstance(node.layer, kind) or isinstance(activation, kind):
                return True
        return isinstance(e.loss, kind) or isinstance(e.optimizer, kind)
    return applies


def _has_layer(test: Callable[[S.Layer, tuple], bool]) -> Callable[[Experiment], bool]:
    """Applies where some node's layer passes `test(layer, input_shape)`."""
    return lambda e: any(test(node.layer, node.input_shapes[0]) for node in e.model.nodes)


def _same_strided(layer, shape) -> bool:
    return getattr(layer, "padding", None) == "same" and max(layer.strides) > 1


_RECURRENT = (S.SimpleRNN, S.LSTM, S.GRU)


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
          "With no initializer given, nn.Linear and nn.Conv2d draw weight and bias from U(±1/√fan_in) "
          "(kaiming_uniform with a = √5; a convolution's fan_in is in·kh·kw); Keras' Dense and Conv2D use "
          "glorot_uniform for the kernel (a convolution's fans count the receptive field: kh·kw·in and kh·kw·filters) "
          "and zeros for the bias. Each draws from its own random stream, so the same seed gives different numbers "
          "too (see random-streams).",
          {"torch": "weight and bias ~ U(-1/√fan_in, 1/√fan_in); Conv2d: fan_in = in·kh·kw",
           "tensorflow": "kernel ~ glorot_uniform (Conv2D: fans × kh·kw), bias = 0"},
          "initializers required, or from a preset; values are drawn once in NumPy and shared; conv2d fans count "
          "the receptive field",
          (TORCH_DOCS + "generated/torch.nn.Linear.html", TORCH_DOCS + "generated/torch.nn.Conv2d.html",
           KERAS_DOCS + "layers/core_layers/dense/", KERAS_DOCS + "layers/convolution_layers/convolution2d/",
           "torch/nn/modules/linear.py, torch/nn/modules/conv.py (reset_parameters)"), _default_init,
          defaults=(KERNEL_INIT, BIAS_INIT, CONV_KERNEL_INIT, CONV_BIAS_INIT)),
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
          "epsilon is 1e-3 instead of 1e-5. Both normalize a training batch with its biased variance.",
          {"torch": "r ← 0.9 r + 0.1 · var_unbiased; eps 1e-5",
           "tensorflow": "r ← 0.99 r + 0.01 · var_biased; epsilon 1e-3"},
          "batch_norm: momentum in Keras' convention (the weight of the old average: torch's 0.1 is 0.9), epsilon, "
          "running_variance = \"unbiased\" (PyTorch) or \"biased\" (Keras); required, or from a preset",
          (TORCH_DOCS + "generated/torch.nn.BatchNorm2d.html",
           KERAS_DOCS + "layers/normalization_layers/batch_normalization/"), _batchnorm, _uses(S.BatchNorm),
          defaults=(BN_MOMENTUM, BN_EPSILON, BN_VARIANCE)),
    Entry("conv-kernel-layout", "Convolution kernel layout",
          "nn.Conv2d stores its weight as (out, in, kh, kw) and computes on (N, C, H, W) images; Keras' Conv2D keeps "
          "its kernel as (kh, kw, in, out) on (N, H, W, C) images. Copying weights needs kernel.transpose(3, 2, 0, 1) "
          "one way and (2, 3, 1, 0) the other; a reshape instead of a transpose scrambles the filters silently.",
          {"torch": "nn.Conv2d.weight: (out_channels, in_channels, kh, kw)",
           "tensorflow": "Conv2D.kernel: (kh, kw, in_channels, filters)"},
          "canonical (kh, kw, in, out); the torch backend transposes at its boundary, its state_dicts hold torch's "
          "layout", (TORCH_DOCS + "generated/torch.nn.Conv2d.html",
                     KERAS_DOCS + "layers/convolution_layers/convolution2d/"), _conv_layout, _uses(S.Conv2D)),
    Entry("same-padding", "'same' padding at stride 2: which side gets the extra row",
          "With an even input and stride 2, 'same' needs an odd total padding. TensorFlow/Keras put the smaller half "
          "before and the extra row/column after: on 8 rows with a 3-row kernel, none above and one below, windows "
          "starting at rows 0, 2, 4, 6. PyTorch has no strided 'same' (see torch-same-stride); its users write the "
          "symmetric padding=1 (k // 2), one row on each side, which starts every window a row earlier (−1, 1, 3, "
          "5): the outputs and every layer after them differ. With odd inputs the two agree.",
          {"torch": "padding=k//2 on both sides: windows a row/column earlier than TF; F.pad(x, (0, 1, 0, 1)) then "
                    "padding 0 reproduces TF",
           "tensorflow": "'same': total max((⌈H/s⌉ − 1)·s + k − H, 0), the smaller half before, the extra after"},
          "padding = \"same\" is TensorFlow's rule (crossnn.spec.window_geometry), at any stride; no default "
          "(both frameworks' is \"valid\": from a preset)",
          (TORCH_DOCS + "generated/torch.nn.Conv2d.html", KERAS_DOCS + "layers/convolution_layers/convolution2d/",
           "https://www.tensorflow.org/api_docs/python/tf/nn#notes_on_padding_2"), _same_padding,
          _has_layer(_same_strided), defaults=(CONV_PADDING,)),
    Entry("torch-same-stride", "PyTorch refuses padding='same' with stride > 1",
          "nn.Conv2d(..., stride=2, padding='same') raises at construction; Keras accepts 'same' at any stride. A "
          "ported model must write its padding out, and the natural padding=k//2 is not TensorFlow's (see "
          "same-padding). At stride 1 torch's 'same' pads as TensorFlow does, even kernels' extra row after.",
          {"torch": "padding='same' only at stride 1 (ValueError otherwise)", "tensorflow": "'same' at any stride"},
          "\"same\" at any stride; the torch backend pads with F.pad (the extra row and column after) and convolves "
          "with padding 0", (TORCH_DOCS + "generated/torch.nn.Conv2d.html",
                             KERAS_DOCS + "layers/convolution_layers/convolution2d/"), _torch_same_stride,
          _has_layer(lambda layer, shape: isinstance(layer, S.Conv2D) and _same_strided(layer, shape))),
    Entry("avg-pool-padding", "Average pooling: is the padding counted?",
          "Where an average-pooling window reaches into the padding, nn.AvgPool2d (count_include_pad=True by "
          "default) divides by the whole window, padded zeros included; TensorFlow/Keras divide by the number of "
          "input positions the window covers. A 2×2 window over one input pixel gives x/4 in PyTorch and x in Keras.",
          {"torch": "count_include_pad=True: sum / (kh·kw)", "tensorflow": "sum / (input positions in the window)"},
          "count_padding = true or false, required or from a preset (they agree without padding)",
          (TORCH_DOCS + "generated/torch.nn.AvgPool2d.html", KERAS_DOCS + "layers/pooling_layers/average_pooling2d/"),
          _avg_pool, _has_layer(lambda layer, shape: isinstance(layer, S.AvgPool2D) and layer.padding == "same"),
          defaults=(COUNT_PADDING,)),
    Entry("flatten-order", "Flatten order: NCHW against NHWC",
          "PyTorch images are (N, C, H, W) and nn.Flatten reads them channel by channel, (c, h, w); Keras' are "
          "(N, H, W, C) and Flatten reads channels fastest, (h, w, c). The Dense/Linear layer after Flatten pairs its "
          "rows with those positions: weights copied between the frameworks without permuting them (or the tensor "
          "before flattening) compute with the features shuffled.",
          {"torch": "nn.Flatten of (N, C, H, W): index (c·H + h)·W + w",
           "tensorflow": "Flatten of (N, H, W, C): index (h·W + w)·C + c"},
          "flatten in (H, W, C) order (Keras'); the torch backend permutes to channels-last before flattening, and "
          "model import permutes the Linear's rows",
          (TORCH_DOCS + "generated/torch.nn.Flatten.html", KERAS_DOCS + "layers/reshaping_layers/flatten/"),
          _flatten_order, _has_layer(lambda layer, shape: isinstance(layer, S.Flatten) and len(shape) >= 3)),
    Entry("layernorm-epsilon", "LayerNorm's epsilon",
          "nn.LayerNorm's eps defaults to 1e-5, keras.layers.LayerNormalization's epsilon to 1e-3 (BatchNorm's "
          "likewise, see batchnorm). Both add it to the biased variance under the square root, so on features whose "
          "variance is small the two normalize to visibly different values.",
          {"torch": "(x − μ)/√(σ² + eps), eps 1e-5", "tensorflow": "(x − μ)/√(σ² + epsilon), epsilon 1e-3"},
          "layer_norm.epsilon required, or from a preset",
          (TORCH_DOCS + "generated/torch.nn.LayerNorm.html",
           KERAS_DOCS + "layers/normalization_layers/layer_normalization/"), _layernorm_epsilon, _uses(S.LayerNorm),
          defaults=(LN_EPSILON,)),
    Entry("embedding-init", "Embedding initializers",
          "nn.Embedding draws its table from N(0, 1); keras.layers.Embedding from U(−0.05, 0.05): PyTorch's vectors "
          "start about 35 times larger.",
          {"torch": "weight ~ N(0, 1)", "tensorflow": "embeddings ~ U(−0.05, 0.05)"},
          "embeddings_init required, or from a preset",
          (TORCH_DOCS + "generated/torch.nn.Embedding.html", KERAS_DOCS + "layers/core_layers/embedding/"),
          _embedding_init, _uses(S.Embedding), defaults=(EMBEDDINGS_INIT,)),
    Entry("recurrent-init", "Recurrent layers' initializers",
          "nn.RNN, nn.LSTM and nn.GRU draw every weight and bias from U(±1/√hidden_size), whatever the input size; "
          "Keras' SimpleRNN, LSTM and GRU use glorot_uniform for the input kernel, orthogonal for the recurrent "
          "kernel and zeros for the bias. PyTorch also keeps two biases (b_ih, b_hh) where Keras has one (GRU with "
          "reset_after: two rows).",
          {"torch": "weight_ih, weight_hh, b_ih, b_hh ~ U(±1/√hidden_size)",
           "tensorflow": "kernel glorot_uniform, recurrent_kernel orthogonal, bias zeros"},
          "kernel_init, recurrent_init and bias_init required, or from a preset (units_uniform: U(±1/√units))",
          (TORCH_DOCS + "generated/torch.nn.LSTM.html", TORCH_DOCS + "generated/torch.nn.GRU.html",
           KERAS_DOCS + "layers/recurrent_layers/lstm/", KERAS_DOCS + "layers/recurrent_layers/simple_rnn/"),
          _recurrent_init, _uses(_RECURRENT), defaults=RECURRENT_INITS),
    Entry("lstm-forget-bias", "LSTM forget-gate bias",
          "Keras' LSTM starts the forget gate's bias at 1 (unit_forget_bias=True) and the other gates' at 0, so the "
          "cell state is kept longer early in training; nn.LSTM draws the forget gate's biases like the others' "
          "(U(±1/√hidden_size), twice: b_ih and b_hh).",
          {"torch": "b_if, b_hf ~ U(±1/√hidden_size), like the other gates", "tensorflow": "unit_forget_bias=True: "
                                                                                             "forget bias 1, others 0"},
          "unit_forget_bias (the forget slice of the bias set to 1), written or from a preset",
          (TORCH_DOCS + "generated/torch.nn.LSTM.html", KERAS_DOCS + "layers/recurrent_layers/lstm/"),
          _lstm_forget_bias, _uses(S.LSTM), defaults=(LSTM_FORGET_BIAS,)),
    Entry("gru-gates", "GRU gate order and reset_after",
          "Keras' GRU orders its gates z, r, h and by default (reset_after=True, since TensorFlow 2) applies the "
          "reset gate after the recurrent matrix product, with separate input and recurrent biases; nn.GRU orders "
          "them r, z, n and computes only that reset-after form. Copying weights needs the first two gate blocks "
          "swapped as well as the weights transposed; older Keras (reset_after=False) computes another model.",
          {"torch": "gates r, z, n; n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)) only",
           "tensorflow": "gates z, r, h; reset_after=True by default (bias (2, 3·units))"},
          "Keras' gate order and layout; reset_after required (both frameworks' default is true), or from a preset",
          (TORCH_DOCS + "generated/torch.nn.GRU.html", KERAS_DOCS + "layers/recurrent_layers/gru/"), _gru_gates,
          _uses(S.GRU), defaults=(GRU_RESET_AFTER,)),
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
