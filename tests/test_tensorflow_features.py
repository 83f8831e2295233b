"""The TensorFlow backend's issue 5/6 features, each against an independent reference:

* dropout masks and scheduled learning rates fed in as tensors (every mode, no retracing), predict
  without dropout — against the NumPy float64 reference backend;
* training state (canonical slot names and values equal to NumPy's; resuming in TF);
* user-defined layers and optimizers (register) — against the same extension registered for NumPy;
* the native flavour — against NumPy loops of Keras' own formulas, spec runs with float32-rounded
  constants, and Keras' own initializers;
* Keras .weights.h5 export/import — round trip, and a user's hand-built Keras model loading the file;
* facts() — against values computed here by hand;
* script() — every seed example and a dropout + schedule + shuffling spec, run in subprocesses,
  against crossnn's float64 TF run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import crossnn_numpy.ops  # noqa: E402
import crossnn_numpy.optimizers  # noqa: E402
import crossnn_tensorflow.ops  # noqa: E402
import crossnn_tensorflow.optimizers  # noqa: E402
from crossnn import backends, examples  # noqa: E402
from crossnn import spec as S  # noqa: E402
from crossnn.checkpoint import CheckpointError, TrainingState  # noqa: E402
from crossnn.data import load_dataset  # noqa: E402
from crossnn.errors import BackendError, UnsupportedFeature  # noqa: E402
from crossnn.harness import RunSpec, train  # noqa: E402
from crossnn.params import initial_parameters  # noqa: E402
from crossnn.parity import compare  # noqa: E402
from crossnn.plan import BatchPlan  # noqa: E402
from crossnn.spec.layers import window_geometry  # noqa: E402
from tests.scripts import run_scripts  # noqa: E402

MODES = ("graph", "eager", "xla", "epoch", "xla-epoch")
RNG = np.random.default_rng(5)
X = RNG.standard_normal((14, 3))
Y = RNG.standard_normal((14, 2))
INIT = dict(kernel_init=S.GlorotUniform(), bias_init=S.Uniform(low=-0.3, high=0.3))


def _spec(layers, optimizer, *, loss=S.MSE(), y=Y, epochs=3, batch=4, shuffle=True, name="tf-features"):
    """14 samples of 3 features, batches of 4 (the last one 2), reshuffled every epoch."""
    return S.Experiment(name=name, seed=4, data=S.InlineData(x=X.tolist(), y=np.asarray(y).tolist()),
                        model=S.Model(inputs=3, layers=tuple(layers)), loss=loss, optimizer=optimizer,
                        train=S.Train(epochs=epochs, batch_size=batch, shuffle=shuffle))


def _mlp(hidden=S.Tanh(), out=S.Linear(), units=2, extra=()):
    return [S.Dense(name="h", units=5, activation=hidden, **INIT), *extra,
            S.Dense(name="out", units=units, activation=out, **INIT)]


_CNN_RNG = np.random.default_rng(8)
IMAGES = _CNN_RNG.standard_normal((20, 7, 6, 2)).round(3)
HE = dict(kernel_init=S.HeUniform(), bias_init=S.Uniform(low=-0.1, high=0.1))
#: a CNN graph with every window layer (uneven 'same' padding in both poolings, count_padding), a
#: residual add, a channel concatenation, dropout on images and a dense head
CNN = S.Experiment(
    name="tf-cnn", seed=2, data=S.InlineData(x=IMAGES.tolist(), y=_CNN_RNG.integers(0, 3, 20).tolist()),
    model=S.Model(inputs=[7, 6, 2], layers=(
        S.Conv2D(name="c1", filters=4, kernel_size=3, strides=2, padding="same", activation=S.ReLU(), **HE),
        S.Conv2D(name="c2", filters=4, kernel_size=[2, 3], padding="same", activation=S.Linear(), **HE),
        S.Add(name="res", inputs=("c1", "c2")),
        S.MaxPool2D(name="mp", pool_size=2, strides=1, padding="same"),
        S.Conv2D(name="c3", filters=2, kernel_size=1, padding="valid", activation=S.Tanh(), inputs=("res",), **HE),
        S.Concatenate(name="join", axis=-1, inputs=("mp", "c3")),
        S.AvgPool2D(name="ap", pool_size=2, strides=2, padding="same", count_padding=True),
        S.Dropout(name="drop", rate=0.25),
        S.Flatten(name="flat"),
        S.Dense(name="out", units=3, activation=S.Softmax(), **INIT))),
    loss=S.CrossEntropy(from_logits=False, sparse=True, log_min=-100.0), optimizer=S.Adam(lr=0.01, eps=1e-8),
    train=S.Train(epochs=3, batch_size=8, shuffle=True))


def _rel(got: dict, want: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(got[k]) - want[k])) / np.max(np.abs(want[k]))) for k in want)


def _reference(exp) -> dict:
    """The NumPy float64 reference run's final parameters."""
    return train(exp, []).reference.final_params


def _build(exp, mode="graph", params=None, native=frozenset(), name="tensorflow"):
    backend = backends.get(name)
    backend.prepare()
    options = {"native": frozenset(native)} if native else {}
    return backend.build(exp, params if params is not None else initial_parameters(exp), load_dataset(exp),
                         dtype="float64", device="cpu", mode=mode if name == "tensorflow" else "default", **options)


# ---- dropout and schedules: fed tensors, no retracing ---------------------------------------------

DROPOUT_SCHEDULE = _spec(_mlp(extra=(S.Dropout(name="drop", rate=0.4),)),
                         S.SGD(lr=0.1, momentum=0.9, schedule=S.StepDecay(unit="epoch", step_size=1, gamma=0.5)))


@pytest.mark.parametrize("mode", ["graph", "xla", "epoch", "xla-epoch"])
def test_dropout_and_schedule_spans_trace_once_and_match_numpy(mode):
    """Spans of 1, 2, 5 and 4 steps cutting epochs (whose last batch is short) anywhere: the masks and
    learning rates arrive as tensors, so the step (or the loop) is traced once, and every loss and
    the final parameters equal NumPy's; predict() skips dropout."""
    exp = DROPOUT_SCHEDULE
    plan = BatchPlan.for_experiment(exp, len(X))
    trainer, reference = _build(exp, mode), _build(exp, name="numpy")
    cuts = [0, 1, 3, 8, plan.steps]
    losses = np.concatenate([trainer.run(plan.batches(a, b)) for a, b in zip(cuts[:-1], cuts[1:])])
    assert trainer.traces == 1 and trainer.steps_done == plan.steps == 12
    want = reference.run(plan.batches(0, plan.steps))
    np.testing.assert_allclose(losses, want, rtol=1e-12, atol=0)
    assert _rel(trainer.parameters(), reference.parameters()) <= 1e-12
    np.testing.assert_allclose(trainer.predict(X), reference.predict(X), rtol=1e-12, atol=1e-15)


def test_eager_mode_feeds_the_same_masks():
    result = train(DROPOUT_SCHEDULE, [RunSpec("tensorflow", "float64", "cpu", "eager")], snapshot_every=5)
    parity = compare(result.reference, result.records[0])
    assert parity.passed and parity.max_rel <= 1e-12, parity.max_rel


# ---- training state -------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd-momentum": S.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, weight_decay_kind="decoupled"),
    "adam": S.Adam(lr=0.01, eps=1e-8, clip_norm=0.5),
    "adamw": S.AdamW(lr=0.01, eps=1e-8, weight_decay=0.1),
    "rmsprop": S.RMSprop(lr=0.01, alpha=0.9, eps=1e-8, momentum=0.5, centered=True),
    "adagrad": S.Adagrad(lr=0.1, initial_accumulator=0.2, eps=1e-10, weight_decay=0.01, weight_decay_kind="l2"),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_is_numpys_and_resumes_in_any_mode(name):
    """After 7 steps the TF state has NumPy's slot names, counters and values; loaded into a fresh
    XLA loop trainer it continues exactly as NumPy does without stopping."""
    exp = _spec(_mlp(), OPTIMIZERS[name], epochs=4)
    plan = BatchPlan.for_experiment(exp, len(X))
    tf_trainer, np_trainer = _build(exp, "graph"), _build(exp, name="numpy")
    before = tf_trainer.state()
    assert before.step == 0 and before.slots == {}
    tf_trainer.run(plan.batches(0, 7))
    np_trainer.run(plan.batches(0, 7))
    got, want = tf_trainer.state(), np_trainer.state()
    assert got.step == want.step == 7 and got.counters == want.counters
    assert set(got.slots) == set(want.slots) == set(exp.optimizer.state_slots())
    for slot in want.slots:
        assert _rel(got.slots[slot], want.slots[slot]) <= 1e-12, slot
    assert _rel(got.params, want.params) <= 1e-12

    resumed = _build(exp, "xla-epoch")
    resumed.load_state(got)
    assert resumed.steps_done == 7
    losses = resumed.run(plan.batches(7, plan.steps))
    np.testing.assert_allclose(losses, np_trainer.run(plan.batches(7, plan.steps)), rtol=1e-11, atol=0)
    assert _rel(resumed.parameters(), np_trainer.parameters()) <= 1e-11
    assert resumed.traces == 1


def test_loading_a_step_0_state_resets_the_optimizer():
    """A state without slots (step 0) puts the buffers back at their start, e.g. Adagrad's sum at
    initial_accumulator, so training again repeats the first run bit for bit."""
    exp = _spec(_mlp(), OPTIMIZERS["adagrad"])
    plan = BatchPlan.for_experiment(exp, len(X))
    trainer = _build(exp)
    start = trainer.state()
    first = trainer.run(plan.batches(0, 5))
    trainer.load_state(start)
    assert trainer.steps_done == 0 and np.all(trainer.optimizer.slot_variables["sum"][0].numpy() == 0.2)
    assert np.array_equal(trainer.run(plan.batches(0, 5)), first)


# ---- user-defined layers and optimizers --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaleTFTest(S.Layer, kind="scale_tf_test"):
    """y = x * s with a learnable per-feature s (initialised to ones)."""

    def output_shape(self, input_shapes):
        return input_shapes[0]

    def parameters(self, input_shapes):
        n = input_shapes[0][-1]
        return (S.ParamInit("scale", (n,), S.Ones(), n, n),)


@crossnn_numpy.ops.OPS.register(ScaleTFTest)
class NumpyScale(crossnn_numpy.ops.Op):
    """forward y = x * s; backward ds = sum_n dy * x, dx = dy * s."""

    def forward(self, p, inputs, mask=None):
        return inputs[0] * p["scale"], inputs[0]

    def backward(self, p, x, dy, need):
        return (dy * p["scale"] if need[0] else None,), {"scale": self.xp.sum(dy * x, axis=0)}


@crossnn_tensorflow.ops.OPS.register(ScaleTFTest)
class TensorflowScale:
    def __init__(self, node, params, native=frozenset()):
        self.s = params["scale"]

    def __call__(self, inputs, mask=None):
        return inputs[0] * self.s


@dataclasses.dataclass(frozen=True, kw_only=True)
class TanhSGDTFTest(S.Optimizer, kind="tanh_sgd_tf_test"):
    """w <- w - lr * tanh(g)."""


@crossnn_numpy.ops.OPS.register(TanhSGDTFTest)
class NumpyTanhSGD(crossnn_numpy.optimizers.Rule):
    def update(self, u, state, params):
        return [self.xp.tanh(g) for g in u], state


@crossnn_tensorflow.ops.OPS.register(TanhSGDTFTest)
class TensorflowTanhSGD(crossnn_tensorflow.optimizers.Rule):
    def direction(self, i, w, g, scalars):
        return tf.math.tanh(g)


@pytest.mark.parametrize("mode", ["graph", "xla-epoch"])
def test_user_defined_layer_and_optimizer_match_numpy(mode):
    layers = [S.Dense(name="h", units=4, activation=S.Tanh(), **INIT), ScaleTFTest(name="scale"),
              S.Dense(name="out", units=2, **INIT)]
    for optimizer in (S.Adam(lr=0.05, eps=1e-8), TanhSGDTFTest(lr=0.1, clip_norm=1.0)):
        exp = _spec(layers, optimizer)
        result = train(exp, [RunSpec("tensorflow", "float64", "cpu", mode)], snapshot_every=1)
        record = result.records[0]
        assert record.ok, record.message
        parity = compare(result.reference, record)
        assert parity.passed and parity.max_rel <= 1e-9, (optimizer.kind, parity.max_rel)
        assert not np.allclose(record.final_params["scale/scale"], 1.0)  # the scale trained


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotARuleTFTest(S.Optimizer, kind="not_a_rule_tf_test"):
    """An optimizer whose TF entry is not a Rule."""


def test_register_refuses_what_is_not_a_spec_class():
    with pytest.raises(TypeError, match="takes crossnn spec classes"):
        crossnn_tensorflow.ops.OPS.register(S.Dense(units=1, **INIT))
    crossnn_tensorflow.ops.OPS.register(NotARuleTFTest)(object)
    with pytest.raises(TypeError, match="must subclass crossnn_tensorflow.optimizers.Rule"):
        _build(_spec(_mlp(), NotARuleTFTest(lr=0.1)))


# ---- the native flavour -----------------------------------------------------------------------------

ENTRIES = {"default-init", "momentum-sgd", "adam-epsilon", "weight-decay", "rmsprop", "adagrad", "bce-clamp",
           "cross-entropy-inputs", "leaky-relu-slope", "gelu-approximation", "softplus-threshold", "clip-norm"}


def test_native_entries_are_documented():
    entries = backends.get("tensorflow").native_entries
    assert set(entries) == ENTRIES
    assert all(line.strip() and "\n" not in line for line in entries.values())


def test_every_native_entry_runs_in_every_mode():
    """All entries at once (Keras SGD, its weight_decay, tf.clip_by_global_norm, Keras BCE, TF's own
    leaky_relu/gelu/softplus, Keras' initializers) on a dropout net with a schedule: every mode runs
    and the modes agree; the training state of a Keras optimizer is refused, not faked."""
    exp = _spec([S.Dense(name="a", units=4, activation=S.LeakyReLU(negative_slope=0.1), **INIT),
                 S.Dense(name="b", units=4, activation=S.GELU(approximate="tanh"), **INIT),
                 S.Dropout(name="drop", rate=0.25),
                 S.Dense(name="c", units=3, activation=S.Softplus(), **INIT),
                 S.Dense(name="out", units=1, activation=S.Sigmoid(), **INIT)],
                S.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, weight_decay_kind="l2", clip_norm=0.5,
                      schedule=S.ExponentialDecay(unit="step", gamma=0.95)),
                loss=S.BCE(log_min=-100.0), y=(Y[:, :1] > 0) * 1.0)
    result = train(exp, [RunSpec("tensorflow", "float64", "cpu", m, frozenset(ENTRIES)) for m in MODES])
    first = result.records[0]
    for record in result.records:
        assert record.ok, (record.spec.mode, record.message)
        assert record.spec.native == frozenset(ENTRIES)
        assert _rel(record.final_params, first.final_params) <= 1e-12, record.spec.mode
    assert _rel(first.final_params, result.reference.final_params) > 0.1  # not the spec's run
    trainer = _build(exp, native=ENTRIES)
    with pytest.raises(BackendError, match="Keras' own state"):
        trainer.state()
    with pytest.raises(UnsupportedFeature, match="native run's Keras optimizer"):
        trainer.load_state(TrainingState(0, initial_parameters(exp)))


# A linear model y = x @ W + b with MSE, trained by NumPy loops of Keras' formulas. Hyperparameters
# are exact in float32, so Keras' casts of Python floats through float32 change nothing here.
LINEAR = [S.Dense(name="fc", units=2, **INIT)]
STEP_DECAY = S.StepDecay(unit="epoch", step_size=1, gamma=0.5)


def _keras_sgd(s):
    def update(w, g, state, lr, t):
        v = state.setdefault("v", np.zeros_like(w))
        v[...] = v * s.momentum - g * lr  # Keras: the velocity holds lr
        return w + v
    return update


def _keras_adam(s):
    def update(w, g, state, lr, t):
        m, v = state.setdefault("m", np.zeros_like(w)), state.setdefault("v", np.zeros_like(w))
        alpha = lr * math.sqrt(1 - s.beta2 ** t) / (1 - s.beta1 ** t)
        m += (g - m) * (1 - s.beta1)
        v += (g * g - v) * (1 - s.beta2)
        return w - m * alpha / (np.sqrt(v) + s.eps)  # epsilon on the uncorrected sqrt(v)
    return update


def _keras_rmsprop(s):
    def update(w, g, state, lr, t):
        v = state.setdefault("v", np.zeros_like(w))
        v[...] = s.alpha * v + (1 - s.alpha) * g * g
        return w - lr * g / np.sqrt(v + s.eps)  # epsilon inside the root
    return update


def _keras_adagrad(s):
    def update(w, g, state, lr, t):
        acc = state.setdefault("acc", np.full_like(w, s.initial_accumulator))
        acc += g * g
        return w - lr * g / np.sqrt(acc + s.eps)
    return update


def _plain_sgd(s):
    return lambda w, g, state, lr, t: w - lr * g


def _spec_momentum_sgd(s):
    def update(w, g, state, lr, t):  # the spec's (torch's) buffer, as the lowering keeps it
        b = state.setdefault("b", np.zeros_like(w))
        b[...] = b * s.momentum + g
        return w - lr * b
    return update


NATIVE_OPTIMIZER_CASES = {
    # entry: (optimizer spec, update rule, Keras weight decay, tf.clip_by_global_norm)
    "momentum-sgd": (S.SGD(lr=0.0625, momentum=0.75, schedule=STEP_DECAY), _keras_sgd, False, False),
    "adam-epsilon": (S.Adam(lr=0.0625, beta1=0.875, beta2=0.9921875, eps=2.0 ** -10), _keras_adam, False, False),
    "rmsprop": (S.RMSprop(lr=0.015625, alpha=0.875, eps=2.0 ** -10), _keras_rmsprop, False, False),
    "adagrad": (S.Adagrad(lr=0.0625, initial_accumulator=0.125, eps=2.0 ** -10, schedule=STEP_DECAY),
                _keras_adagrad, False, False),
    # decoupled decay instead of the spec's L2 (plain SGD would not tell them apart: momentum does)
    "weight-decay": (S.SGD(lr=0.0625, momentum=0.75, weight_decay=0.125, weight_decay_kind="l2"), _spec_momentum_sgd,
                     True, False),
    "clip-norm": (S.SGD(lr=0.0625, clip_norm=0.25), _plain_sgd, False, True),
}


def _keras_formula_run(exp, rule, keras_decay, tf_clip):
    """Final parameters of a NumPy float64 loop over crossnn's plan with Keras' rule."""
    s = exp.optimizer
    params = initial_parameters(exp)
    w, b = params["fc/kernel"].copy(), params["fc/bias"].copy()
    plan = BatchPlan.for_experiment(exp, len(X))
    states: list[dict] = [{}, {}]
    for step in range(plan.steps):
        rows = plan.batch(step)
        x, y = X[rows], Y[rows]
        d = 2.0 * (x @ w + b - y) / y.size
        grads = [x.T @ d, d.sum(axis=0)]
        if tf_clip:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
            grads = [g * (s.clip_norm * min(1.0 / norm, 1.0 / s.clip_norm)) for g in grads]
        lr = s.lr_at(step // plan.steps_per_epoch, step)
        new = []
        for value, g, state in zip((w, b), grads, states):
            if keras_decay:
                value = value - value * s.weight_decay * lr  # decoupled, Keras' way
            new.append(rule(value, g, state, lr, step + 1))
        w, b = new
    return {"fc/kernel": w, "fc/bias": b}


@pytest.mark.parametrize("entry", sorted(NATIVE_OPTIMIZER_CASES))
def test_native_optimizers_are_keras_formulas(entry):
    """Each optimizer entry alone: crossnn's native TF run (graph and the while-loop mode) equals a
    NumPy loop of Keras' formula to 1e-12, and leaves the spec's run (the NumPy reference)."""
    optimizer, rule, keras_decay, tf_clip = NATIVE_OPTIMIZER_CASES[entry]
    exp = _spec(LINEAR, optimizer, epochs=3)
    want = _keras_formula_run(exp, rule(optimizer), keras_decay, tf_clip)
    result = train(exp, [RunSpec("tensorflow", "float64", "cpu", m, frozenset({entry})) for m in ("graph", "epoch")])
    for record in result.records:
        assert record.ok, record.message
        assert _rel(record.final_params, want) <= 1e-12, (entry, record.spec.mode, _rel(record.final_params, want))
    gap = _rel(result.records[0].final_params, result.reference.final_params)
    assert gap > (1e-9 if entry == "clip-norm" else 1e-4), (entry, gap)


def test_native_keras_optimizers_get_float64_hyperparameters():
    """keras.optimizers.SGD(momentum=0.9) on a float64 variable: Keras casts the Python float through
    float32 (one step from v = -1: 0.8999999761581421 * v); given np.float64(0.9), as the native
    flavour gives it, the momentum is 0.9. So the native run is the spec's run (Keras' velocity is
    -lr times the spec's buffer while lr is constant), not the spec's with float32(0.9)."""
    for momentum, want in ((0.9, float(np.float32(0.9))), (np.float64(0.9), 0.9)):
        w = tf.Variable(tf.constant(0.0, tf.float64))
        sgd = keras.optimizers.SGD(learning_rate=np.float64(1.0), momentum=momentum)
        for _ in range(2):  # v1 = -1, v2 = momentum * v1 - 0
            sgd.apply_gradients([(tf.constant(1.0 if not sgd.iterations.numpy() else 0.0, tf.float64), w)])
        assert float(sgd.momentums[0].numpy()) == -want
    native = train(_spec(LINEAR, S.SGD(lr=0.05, momentum=0.9)),
                   [RunSpec("tensorflow", "float64", "cpu", "graph", frozenset({"momentum-sgd"}))]).records[0]
    exact = _reference(_spec(LINEAR, S.SGD(lr=0.05, momentum=0.9)))
    as_float32 = _reference(_spec(LINEAR, S.SGD(lr=0.05, momentum=float(np.float32(0.9)))))
    assert _rel(native.final_params, exact) <= 1e-12
    assert _rel(native.final_params, as_float32) > 1e-9


def test_native_leaky_relu_is_the_float32_slope():
    """tf.nn.leaky_relu's alpha is a float32 attribute: the native run is the spec's run with slope
    float32(0.01), not 0.01."""
    def make(slope):
        return _spec(_mlp(hidden=S.LeakyReLU(negative_slope=slope)), S.SGD(lr=0.1, momentum=0.5))

    native = train(make(0.01), [RunSpec("tensorflow", "float64", "cpu", "xla-epoch",
                                        frozenset({"leaky-relu-slope"}))]).records[0]
    as_float32 = _reference(make(float(np.float32(0.01))))
    exact = _reference(make(0.01))
    assert _rel(native.final_params, as_float32) <= 1e-12
    assert _rel(native.final_params, exact) > 1e-10


def test_native_gelu_uses_float32_constants():
    """tf.nn.gelu in float64: 0.5 z erfc(-z float32(1/sqrt 2)); the first loss equals that formula
    in NumPy, not the spec's exact GELU."""
    exp = _spec(_mlp(hidden=S.GELU(approximate="none")), S.SGD(lr=0.1))
    trainer = _build(exp, native={"gelu-approximation"})
    plan = BatchPlan.for_experiment(exp, len(X))
    loss = float(trainer.run([plan.batch(0)])[0])
    p, rows = initial_parameters(exp), plan.batch(0)
    z = X[rows] @ p["h/kernel"] + p["h/bias"]
    erfc = np.vectorize(math.erfc)

    def first_loss(c):
        h = 0.5 * z * erfc(-z * c)
        return float(np.mean((h @ p["out/kernel"] + p["out/bias"] - Y[rows]) ** 2))

    assert abs(loss - first_loss(float(np.float32(math.sqrt(0.5))))) <= 1e-15 * loss
    assert abs(loss - first_loss(math.sqrt(0.5))) > 1e-12 * loss


def test_native_softplus_is_tfs_op():
    exp = _spec(_mlp(hidden=S.Softplus()), S.SGD(lr=0.1))
    trainer = _build(exp, native={"softplus-threshold"})
    assert trainer.model.layers[0][2].act.fn is tf.math.softplus
    plan = BatchPlan.for_experiment(exp, len(X))
    trainer.run(plan.batches(0, plan.steps))
    assert _rel(trainer.parameters(), _reference(exp)) <= 1e-12  # equal away from thresholds


def test_native_bce_recovers_the_logits_behind_the_sigmoid():
    """keras.losses.BinaryCrossentropy sees the sigmoid's logits (in every mode): the native run is
    BCE on the logits, and from saturated outputs (p exactly 0 in float64) its loss is the logit's
    size where the spec's clamps log p at log_min."""
    y = (Y[:, :1] > 0) * 1.0
    bce = _spec(_mlp(out=S.Sigmoid(), units=1), S.SGD(lr=0.5), loss=S.BCE(log_min=-100.0), y=y)
    logits = _spec(_mlp(units=1), S.SGD(lr=0.5), loss=S.BCELogits(), y=y)
    runs = [RunSpec("tensorflow", "float64", "cpu", m, frozenset({"bce-clamp"})) for m in ("graph", "eager")]
    on_logits = _reference(logits)
    for record in train(bce, runs).records:
        assert _rel(record.final_params, on_logits) <= 1e-12, record.spec.mode

    saturated = dict(initial_parameters(bce))
    saturated["out/kernel"] = saturated["out/kernel"] * 30000.0
    rows = np.arange(len(X))
    z = np.tanh(X @ saturated["h/kernel"] + saturated["h/bias"]) @ saturated["out/kernel"] + saturated["out/bias"]
    with np.errstate(over="ignore"):  # saturated on purpose: exp(-z) overflows to inf, the sigmoid to 0
        assert np.any(1.0 / (1.0 + np.exp(-z)) == 0.0)
    keras_loss = float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
    for mode in ("graph", "eager"):
        native = float(_build(bce, mode, saturated, native={"bce-clamp"}).run([rows])[0])
        assert abs(native - keras_loss) <= 1e-12 * keras_loss, mode
    spec_loss = float(_build(bce, "graph", saturated).run([rows])[0])
    assert spec_loss < keras_loss - 1.0  # the clamp at -100 caps each saturated term


def test_native_cross_entropy_takes_logits_for_probabilities():
    """Keras' CategoricalCrossentropy() keeps from_logits=False whatever the spec says: logits z are
    rescaled to z / sum(z) and clipped to [1e-7, 1 - 1e-7]."""
    labels = RNG.integers(0, 3, size=len(X))
    exp = _spec(_mlp(units=3), S.SGD(lr=0.05), loss=S.CrossEntropy(from_logits=True, sparse=False),
                y=np.eye(3)[labels])
    trainer = _build(exp, native={"cross-entropy-inputs"})
    rows = np.arange(len(X))
    loss = float(trainer.run([rows])[0])
    p = initial_parameters(exp)
    z = np.tanh(X @ p["h/kernel"] + p["h/bias"]) @ p["out/kernel"] + p["out/bias"]
    q = np.clip(z / z.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7)
    want = float(np.mean(-np.sum(np.eye(3)[labels] * np.log(q), axis=1)))
    assert abs(loss - want) <= 1e-12 * abs(want)
    assert abs(loss - float(_build(exp).run([rows])[0])) > 0.1


def test_native_default_init_is_keras_dense_seeded():
    """The native initial parameters are what a user's keras.Sequential of Dense layers gets after
    keras.utils.set_random_seed(seed): glorot_uniform kernels, zero biases."""
    exp = _spec(_mlp(), S.SGD(lr=0.1))
    record = train(exp, [RunSpec("tensorflow", "float64", "cpu", "graph", frozenset({"default-init"}))]).records[0]
    keras.utils.set_random_seed(exp.seed)
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(5, dtype="float64"),
                              keras.layers.Dense(2, dtype="float64")])
    start = record.snapshots[0]
    for name, layer in (("h", model.layers[0]), ("out", model.layers[1])):
        kernel, bias = layer.get_weights()
        assert np.array_equal(start[f"{name}/kernel"], kernel) and np.all(start[f"{name}/bias"] == 0)
        limit = math.sqrt(6 / sum(kernel.shape))
        assert 0.5 * limit < np.max(np.abs(kernel)) <= limit
    assert not np.array_equal(start["h/kernel"], initial_parameters(exp)["h/kernel"])


# ---- Keras .weights.h5 export and import -------------------------------------------------------------


def _trained_state(exp, steps=6):
    trainer = _build(exp)
    plan = BatchPlan.for_experiment(exp, load_dataset(exp).n)
    trainer.run(plan.batches(0, steps))
    return trainer, trainer.state()


def test_weights_h5_round_trip_and_a_users_keras_model(tmp_path):
    """Export a trained state (a chain with dropout), import it back exactly (step 0, no optimizer
    state: the file holds weights only), and load the file into a hand-built keras.Sequential of the
    same architecture, in float32 (Keras' default) and float64: same predictions as crossnn's TF model."""
    exp = _spec(_mlp(extra=(S.Dropout(name="drop", rate=0.5),)), S.Adam(lr=0.01, eps=1e-8))
    backend = backends.get("tensorflow")
    trainer, state = _trained_state(exp)
    path = tmp_path / "model.weights.h5"
    backend.export_native(exp, state, path)
    back = backend.import_native(exp, path)
    assert back.step == 0 and back.slots == {} and back.counters == {}
    assert list(back.params) == list(state.params)
    assert all(np.array_equal(back.params[k], state.params[k]) for k in state.params)

    want = trainer.predict(X)
    for dtype, rtol in (("float32", 1e-5), ("float64", 1e-13)):
        user = keras.Sequential([keras.Input(shape=(3,), dtype=dtype),
                                 keras.layers.Dense(5, activation="tanh", dtype=dtype),
                                 keras.layers.Dropout(0.5, dtype=dtype), keras.layers.Dense(2, dtype=dtype)])
        user.load_weights(str(path))
        # user(x), not user.predict(x): predict() feeds NumPy input through tf.data in keras.config.floatx()
        # (float32 unless set), even to a float64 model
        np.testing.assert_allclose(user(tf.constant(X, dtype)).numpy(), want, rtol=rtol, atol=rtol)


def test_weights_h5_of_a_graph_model(tmp_path):
    """two-tower: a functional keras.Model; the user's own functional twin loads the file."""
    exp = S.load(examples.path("two-tower"))
    backend = backends.get("tensorflow")
    trainer, state = _trained_state(exp, steps=20)
    path = tmp_path / "two-tower.weights.h5"
    backend.export_native(exp, state, path)
    assert all(np.array_equal(v, state.params[k]) for k, v in backend.import_native(exp, path).params.items())
    inputs = keras.Input(shape=(2,))
    towers = keras.layers.Concatenate()([keras.layers.Dense(1)(inputs), keras.layers.Dense(2)(inputs)])
    user = keras.Model(inputs, keras.layers.Dense(1)(towers))
    user.load_weights(str(path))
    x = load_dataset(exp).x
    np.testing.assert_allclose(user.predict(x, verbose=0), trainer.predict(x), rtol=1e-5, atol=1e-6)


def test_weights_h5_errors_are_one_line(tmp_path):
    backend = backends.get("tensorflow")
    exp = _spec(_mlp(), S.SGD(lr=0.1))
    _, state = _trained_state(exp, steps=1)
    good = tmp_path / "good.weights.h5"
    backend.export_native(exp, state, good)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not an HDF5 file")
    other = _spec([S.Dense(name="h", units=4, activation=S.Tanh(), **INIT), S.Dense(name="out", units=2, **INIT)],
                  S.SGD(lr=0.1))
    cases = [(lambda: backend.import_native(exp, tmp_path / "missing.weights.h5"), "no such file"),
             (lambda: backend.import_native(exp, garbage), "not a Keras .weights.h5 file"),
             (lambda: backend.import_native(other, good), r"has shape \(3, 5\), this spec's model needs \(3, 4\)"),
             (lambda: backend.import_native(S.load(examples.path("two-tower")), good),
              r"'layers/dense/vars/0' has shape \(3, 5\), this spec's model needs \(2, 1\)"),
             (lambda: backend.export_native(exp, state, tmp_path / "model.h5"), "must end in '.weights.h5'")]
    for call, message in cases:
        with pytest.raises(CheckpointError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.weights.h5", "good.weights.h5"]  # no leftovers


def test_weights_h5_of_a_cnn_and_a_users_keras_twin(tmp_path):
    """A trained CNN graph (conv kernels (kh, kw, in, out), pooling, add, concatenate, dropout) exported
    and imported back exactly; the user's own functional Keras twin loads the file and predicts what
    crossnn's TF model predicts (count_padding: ZeroPadding2D before a 'valid' AveragePooling2D)."""
    backend = backends.get("tensorflow")
    trainer, state = _trained_state(CNN, steps=5)
    path = tmp_path / "cnn.weights.h5"
    backend.export_native(CNN, state, path)
    back = backend.import_native(CNN, path)
    assert list(back.params) == list(state.params)
    assert all(np.array_equal(back.params[k], state.params[k]) for k in state.params)
    assert back.params["c2/kernel"].shape == (2, 3, 4, 4)

    layers = keras.layers
    inputs = keras.Input(shape=(7, 6, 2), dtype="float64")
    c1 = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", dtype="float64")(inputs)
    res = layers.Add(dtype="float64")([c1, layers.Conv2D(4, (2, 3), padding="same", dtype="float64")(c1)])
    pooled_res = layers.MaxPooling2D(2, strides=1, padding="same", dtype="float64")(res)
    joined = layers.Concatenate(dtype="float64")([pooled_res, layers.Conv2D(2, 1, activation="tanh",
                                                                            dtype="float64")(res)])
    pooled = layers.AveragePooling2D(2, strides=2, dtype="float64")(layers.ZeroPadding2D(((0, 0), (0, 1)),
                                                                                        dtype="float64")(joined))
    flat = layers.Flatten(dtype="float64")(layers.Dropout(0.25, dtype="float64")(pooled))
    user = keras.Model(inputs, layers.Dense(3, activation="softmax", dtype="float64")(flat))
    user.load_weights(str(path))
    np.testing.assert_allclose(user(tf.constant(IMAGES)).numpy(), trainer.predict(IMAGES), rtol=1e-13, atol=1e-15)


def test_a_dilated_strided_conv_has_no_keras_twin(tmp_path):
    exp = _spec_images([S.Conv2D(name="c", filters=2, kernel_size=3, strides=2, dilation=2, padding="same", **HE),
                        S.Flatten(name="f"), S.Dense(name="out", units=3, **INIT)])
    with pytest.raises(UnsupportedFeature, match="Keras refuses strides > 1 with dilation_rate > 1"):
        backends.get("tensorflow").export_native(exp, TrainingState(0, initial_parameters(exp)),
                                                 tmp_path / "c.weights.h5")
    assert list(tmp_path.iterdir()) == []


def _spec_images(layers, optimizer=S.SGD(lr=0.1)):
    return dataclasses.replace(CNN, model=S.Model(inputs=[7, 6, 2], layers=tuple(layers)), optimizer=optimizer)


def test_import_a_keras_sequential_cnn():
    """keras.Sequential of Conv2D ('same' at stride 2, and dilated), MaxPooling2D, AveragePooling2D
    ('same': Keras leaves padding out, so count_padding = false), Flatten, Dense: the spec has its
    layers, names, initializers and shapes, and crossnn's TF model with the imported parameters
    predicts what the Keras model predicts, in float64."""
    keras.utils.set_random_seed(3)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(shape=(9, 8, 2), dtype="float64"),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1", dtype="float64"),
        layers.Conv2D(3, (2, 2), dilation_rate=2, padding="same", activation="tanh", name="dil",
                      kernel_initializer="he_uniform", bias_initializer="ones", dtype="float64"),
        layers.MaxPooling2D(2, strides=1, padding="same", name="mp", dtype="float64"),
        layers.AveragePooling2D(2, padding="same", name="ap", dtype="float64"),
        layers.Flatten(name="flat", dtype="float64"),
        layers.Dense(3, activation="softmax", name="out", dtype="float64")])
    exp_model, params = backends.get("tensorflow").import_model(model)
    assert exp_model.input_shape == (9, 8, 2)
    conv, dilated, mp, ap = exp_model.layers[:4]
    assert (conv.kind, conv.filters, conv.kernel_size, conv.strides, conv.padding) == ("conv2d", 4, (3, 3), (2, 2),
                                                                                      "same")
    assert conv.kernel_init == S.GlorotUniform() and conv.bias_init == S.Zeros()
    assert dilated.dilation == (2, 2) and dilated.kernel_init == S.HeUniform() and dilated.bias_init == S.Ones()
    assert (mp.kind, mp.pool_size, mp.strides) == ("max_pool2d", (2, 2), (1, 1))
    assert (ap.kind, ap.padding, ap.count_padding) == ("avg_pool2d", "same", False)
    assert [n.shape for n in exp_model.nodes] == [(5, 4, 4), (5, 4, 3), (5, 4, 3), (3, 2, 3), (18,), (3,)]
    assert list(params) == ["c1/kernel", "c1/bias", "dil/kernel", "dil/bias", "out/kernel", "out/bias"]
    exp = dataclasses.replace(CNN, data=S.InlineData(x=np.zeros((4, 9, 8, 2)).tolist(), y=[0, 1, 2, 0]),
                              model=exp_model)
    x = np.random.default_rng(4).standard_normal((5, 9, 8, 2))
    np.testing.assert_allclose(_build(exp, params=params).predict(x), model(tf.constant(x)).numpy(), rtol=1e-13,
                               atol=1e-15)


def test_import_a_keras_functional_cnn():
    """A functional Keras model with a residual Add, a Concatenate along the channels, global average
    pooling and Keras' default initializers: imported graph and parameters predict as the model."""
    layers = keras.layers
    inputs = keras.Input(shape=(6, 6, 3), dtype="float64")
    a = layers.Conv2D(3, 3, padding="same", activation="relu", name="a", dtype="float64")(inputs)
    b = layers.Conv2D(3, 1, name="b", dtype="float64")(inputs)
    joined = layers.Concatenate(axis=-1, name="join", dtype="float64")([layers.Add(name="sum", dtype="float64")([a, b]),
                                                                       b])
    pooled = layers.GlobalAveragePooling2D(name="gap", dtype="float64")(joined)
    model = keras.Model(inputs, layers.Dense(2, name="out", dtype="float64")(pooled))
    exp_model, params = backends.get("tensorflow").import_model(model)
    by_name = {node.name: node for node in exp_model.nodes}
    assert by_name["sum"].inputs == ("a", "b") and by_name["join"].inputs == ("sum", "b")
    assert by_name["join"].shape == (6, 6, 6) and by_name["gap"].shape == (6,)
    exp = dataclasses.replace(CNN, data=S.InlineData(x=np.zeros((2, 6, 6, 3)).tolist(), y=np.zeros((2, 2)).tolist()),
                              model=exp_model,
                              loss=S.MSE())
    x = np.random.default_rng(5).standard_normal((4, 6, 6, 3))
    np.testing.assert_allclose(_build(exp, params=params).predict(x), model(tf.constant(x)).numpy(), rtol=1e-13,
                               atol=1e-15)


def test_import_refuses_what_a_spec_cannot_say():
    layers = keras.layers
    for layer, message in ((layers.Conv2D(2, 3, data_format="channels_first"), "data_format 'channels_first'"),
                           (layers.Conv2D(2, 3, groups=2), "groups = 2"),
                           (layers.Conv2D(2, 3, activation="elu"), "activation 'elu'"),
                           (layers.Dense(2, kernel_initializer="identity"), "initializer 'Identity"),
                           (layers.UpSampling2D(), "UpSampling2D")):
        model = keras.Sequential([keras.Input(shape=(6, 6, 4)), layer])
        with pytest.raises(UnsupportedFeature, match=message):
            backends.get("tensorflow").import_model(model)


def test_native_default_init_is_keras_conv2d_seeded():
    """default-init on a CNN: Keras' Conv2D and Dense defaults, seeded as a user's keras.Sequential
    after keras.utils.set_random_seed(seed): glorot_uniform kernels with receptive-field fans, zero
    biases; the layers without weights draw nothing."""
    exp = _spec_images([S.Conv2D(name="c", filters=5, kernel_size=[3, 2], padding="same", **HE),
                        S.MaxPool2D(name="p", pool_size=2), S.Flatten(name="f"), S.Dense(name="out", units=3, **INIT)])
    record = train(exp, [RunSpec("tensorflow", "float64", "cpu", "graph", frozenset({"default-init"}))]).records[0]
    keras.utils.set_random_seed(exp.seed)
    f64 = {"dtype": "float64"}
    model = keras.Sequential([keras.Input(shape=(7, 6, 2), **f64),
                              keras.layers.Conv2D(5, (3, 2), padding="same", **f64),
                              keras.layers.MaxPooling2D(2, **f64), keras.layers.Flatten(**f64),
                              keras.layers.Dense(3, **f64)])
    start = record.snapshots[0]
    (kernel, _), (dense, _) = model.layers[0].get_weights(), model.layers[3].get_weights()
    assert np.array_equal(start["c/kernel"], kernel) and np.all(start["c/bias"] == 0)
    assert np.array_equal(start["out/kernel"], dense)
    limit = math.sqrt(6 / (3 * 2 * 2 + 3 * 2 * 5))
    assert 0.8 * limit < np.max(np.abs(kernel)) <= limit


# ---- facts ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _facts():
    return backends.get("tensorflow").facts()


def test_facts_keys_and_json():
    facts = _facts()
    assert set(facts) == {
        "dense_kernel_shape", "dense_init", "default_lr", "adam_eps", "rmsprop_defaults", "adagrad_defaults",
        "adam_weight_decay_step", "momentum_first_step", "bce_p0_y1", "bce_logit_input", "ce_default_from_logits",
        "ce_on_logits_as_probabilities", "ce_on_logits", "mse_sum", "mse_mean", "mse_broadcast", "leaky_relu_default",
        "leaky_relu_float64", "gelu_default", "gelu_float64_error", "softplus_25", "batchnorm", "tf32",
        "random_seed0", "clip_at_max_norm", "conv_kernel_shape", "conv_init", "same_stride2_window_starts",
        "avg_pool_same_divisors", "flatten_order", "layernorm_epsilon", "embedding_init", "recurrent_init",
        "lstm_unit_forget_bias", "gru"}
    assert json.loads(json.dumps(facts)) == facts


def test_facts_values_against_hand_computed_references():
    f = _facts()
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    assert f["dense_kernel_shape"] == [3, 2]  # (in, out): no transpose to crossnn's layout
    init = f["dense_init"]
    assert init["glorot_limit"] == math.sqrt(6 / 150) and init["bias_all_zero"] is True
    assert 0.9 * init["glorot_limit"] < init["kernel_max_abs"] <= init["glorot_limit"]
    assert f["default_lr"] == {"SGD": 0.01, "Adam": 0.001, "RMSprop": 0.001, "Adagrad": 0.001}
    assert f["adam_eps"] == 1e-7
    assert f["rmsprop_defaults"] == {"rho": 0.9, "epsilon": 1e-7}
    assert f["adagrad_defaults"] == {"initial_accumulator_value": 0.1, "epsilon": 1e-7}
    assert f["adam_weight_decay_step"] == f32(1.0 - f32(0.1) * f32(0.1))  # decoupled: w (1 - lr wd), no gradient
    # Keras: v = 0.9 v - lr g; the spec's buffer would give w2 = 0.8 - 0.01 (0.9 * 2 + 2) = 0.762
    assert f["momentum_first_step"] == pytest.approx({"w": 0.8, "velocity": -0.2, "w2": 0.6}, rel=1e-6)
    assert f["bce_p0_y1"] == pytest.approx(-math.log(1e-7), rel=1e-6)  # p clipped to 1e-7
    assert f["bce_logit_input"] == pytest.approx(50.0, rel=1e-6)  # the logits recovered: log(1 + e^50)
    assert f["ce_default_from_logits"] is False
    assert f["ce_on_logits_as_probabilities"] == pytest.approx(-math.log(2.0 / 3.1), rel=1e-6)
    assert f["ce_on_logits"] == pytest.approx(math.log(math.exp(2) + math.exp(1) + math.exp(0.1)) - 2.0, rel=1e-6)
    assert f["mse_sum"] == 15.0 and f["mse_mean"] == 7.5  # per-sample means 2.5 and 12.5
    assert f["mse_broadcast"] == {"value": 0.0, "correct": 0.0}  # Keras 3 aligns the ranks (no 3x3 broadcast)
    assert f["leaky_relu_default"] == {"layer": 0.3, "activation": 0.2}
    assert f["leaky_relu_float64"] == -f32(0.01) != -0.01
    assert f["gelu_default"] == {"activations": False, "ops": True}
    c = f32(math.sqrt(0.5))
    assert f["gelu_float64_error"] == pytest.approx(abs(0.5 * math.erfc(-c) - 0.5 * (1 + math.erf(math.sqrt(0.5)))),
                                                    rel=1e-6)
    assert f["softplus_25"]["exact"] == math.log1p(math.exp(25.0))
    assert abs(f["softplus_25"]["tf"] - f["softplus_25"]["exact"]) <= 2 * math.ulp(25.0)
    x = np.array([[1.0, 2.0], [3.0, 5.0], [6.0, 11.0]])
    bn = f["batchnorm"]
    assert bn["momentum"] == 0.99 and bn["epsilon"] == 1e-3
    np.testing.assert_allclose(bn["moving_mean"], 0.01 * x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(bn["moving_variance"], 0.99 + 0.01 * x.var(axis=0), rtol=1e-6)  # biased variance
    assert f["tf32"] is True  # on by default in a fresh process; crossnn's prepare() turns it off
    assert len(f["random_seed0"]) == 3 and all(0.0 <= v < 1.0 for v in f["random_seed0"])
    assert f["clip_at_max_norm"] == [3.0, 4.0]  # norm 5 = clip_norm: scale exactly 1 (the spec: 5 / (5 + 1e-6))


def test_cnn_facts_against_hand_computed_references():
    f = _facts()
    assert f["conv_kernel_shape"] == [4, 5, 2, 3]  # Conv2D(3, (4, 5)) on 2 channels: (kh, kw, in, out)
    init = f["conv_init"]  # Conv2D(16, 3x3) on 8 channels: fans 3*3*8 and 3*3*16
    assert init["glorot_limit"] == math.sqrt(6 / (72 + 144)) and init["bias_all_zero"] is True
    assert 0.95 * init["glorot_limit"] < init["kernel_max_abs"] <= init["glorot_limit"]
    assert init["glorot_limit_without_receptive_field"] == math.sqrt(6 / 24) > 2 * init["kernel_max_abs"]
    # H = 8, k = 3, stride 2, 'same': 4 outputs, total padding (4 - 1) * 2 + 3 - 8 = 1, all of it after
    # (TF's rule), so the windows start at rows 0, 2, 4, 6 (one row before, -1, would mean padding first)
    assert f["same_stride2_window_starts"] == [0, 2, 4, 6]
    geometry = window_geometry(S.MaxPool2D(pool_size=3, strides=2, padding="same"), (8, 8, 1))
    assert (geometry.top, geometry.bottom) == (0, 1)
    # 3x3 input, 2x2 windows at stride 2, 'same': the last row and column are the padding's; the mean
    # divides by the window's positions inside the input
    assert f["avg_pool_same_divisors"] == [[4.0, 2.0], [2.0, 1.0]]
    assert f["flatten_order"] == np.arange(12).reshape(2, 3, 2).ravel().tolist()  # NHWC row-major: channels fastest


# ---- script() ------------------------------------------------------------------------------------------------

#: the script runs stop after the epoch that reaches this many steps (circle: 50 epochs of 12)
SCRIPT_STEPS = 600


def _lowered(exp) -> bool:
    """Whether the TF registry has an entry for every layer of the spec (the issue 15 layers, batch
    normalization and recurrent ones, come to this backend later)."""
    return all(type(node.layer) in crossnn_tensorflow.ops.OPS for node in exp.model.nodes)


def _script_cases():
    """Every example the backend lowers (shortened to about SCRIPT_STEPS steps; the CNNs to 2 epochs),
    a spec with dropout, a schedule, decoupled decay, clipping and shuffled batches, and a CNN with
    every window layer, dropout on images and a graph."""
    cases = {}
    for name in examples.names():
        exp = S.load(examples.path(name))
        if not _lowered(exp):
            continue
        per_epoch = BatchPlan.for_experiment(exp, load_dataset(exp).n).steps_per_epoch
        epochs = min(exp.train.epochs, 2 if len(exp.model.input_shape) > 1 else max(1, SCRIPT_STEPS // per_epoch))
        cases[name] = dataclasses.replace(exp, train=dataclasses.replace(exp.train, epochs=epochs))
    cases["dropout+schedule+shuffle"] = _spec(
        _mlp(hidden=S.GELU(approximate="tanh"), extra=(S.Dropout(name="drop", rate=0.3),)),
        S.AdamW(lr=0.02, eps=1e-8, weight_decay=0.05, clip_norm=1.0,
                schedule=S.ExponentialDecay(unit="step", gamma=0.97)), epochs=5)
    cases["cnn"] = dataclasses.replace(CNN, optimizer=S.RMSprop(lr=0.01, alpha=0.9, eps=1e-8, momentum=0.5))
    return cases


@pytest.mark.slow  # tests/test_codegen.py runs three of these scripts in the default run
def test_scripts_reproduce_crossnn_tf_runs(tmp_path):
    """Each script runs in its own Python process (two at a time) and prints, last, the final
    parameters: within 1e-9 relative of crossnn's float64 TF run of the same spec. Nothing on stderr."""
    backend = backends.get("tensorflow")
    cases = _script_cases()
    paths = {}
    for name, exp in cases.items():
        text = backend.script(exp, initial_parameters(exp), load_dataset(exp))
        compile(text, name, "exec")
        assert "@tf.function" in text and "tf.GradientTape()" in text and "def batches(epoch)" in text
        paths[name] = tmp_path / f"{name.replace('+', '_')}.py"
        paths[name].write_text(text)
    done = run_scripts(paths)
    for name, exp in cases.items():
        out = done[name]
        assert out.returncode == 0, (name, out.stderr[-2000:])
        assert out.stderr == "", (name, out.stderr[-2000:])
        got = json.loads(out.stdout.strip().splitlines()[-1])
        record = train(exp, [RunSpec("tensorflow", "float64", "cpu", "graph")]).records[0]
        rel = _rel(got, record.final_params)
        print(f"script {name}: max rel {rel:.2e} from crossnn's TF run")
        assert sorted(got) == sorted(record.final_params) and rel <= 1e-9, (name, rel)


def test_script_refuses_what_it_cannot_write():
    exp = _spec([ScaleTFTest(name="scale"), S.Dense(name="out", units=2, **INIT)], S.SGD(lr=0.1))
    with pytest.raises(UnsupportedFeature, match="layer 'scale_tf_test' in a script"):
        backends.get("tensorflow").script(exp, initial_parameters(exp), load_dataset(exp))


TINY_EPS = 1e-30  # inside or outside the square root, too small to matter: Keras' formula is then the spec's

KERAS_SAME_FORMULA = {
    # spec optimizer: the keras.optimizers optimizer that computes the same update (float64 hyperparameters)
    "rmsprop centered momentum": (
        S.RMSprop(lr=2.0**-6, alpha=0.875, eps=TINY_EPS, momentum=0.75, centered=True),
        lambda: keras.optimizers.RMSprop(learning_rate=np.float64(2.0**-6), rho=np.float64(0.875),
                                         epsilon=np.float64(TINY_EPS), momentum=np.float64(0.75), centered=True)),
    "adagrad": (
        S.Adagrad(lr=2.0**-4, initial_accumulator=0.125, eps=TINY_EPS),
        lambda: keras.optimizers.Adagrad(learning_rate=np.float64(2.0**-4), initial_accumulator_value=0.125,
                                         epsilon=np.float64(TINY_EPS))),
    "adamw": (
        S.AdamW(lr=2.0**-6, beta1=0.875, beta2=0.9921875, eps=TINY_EPS, weight_decay=0.125),
        lambda: keras.optimizers.AdamW(learning_rate=np.float64(2.0**-6), beta_1=np.float64(0.875),
                                       beta_2=np.float64(0.9921875), epsilon=np.float64(TINY_EPS),
                                       weight_decay=np.float64(0.125))),
}


@pytest.mark.parametrize("case", sorted(KERAS_SAME_FORMULA))
def test_spec_optimizers_match_a_keras_loop_configured_to_the_same_formula(case):
    """A Keras tutorial loop (GradientTape, apply_gradients) on tf.Variables, fed crossnn's initial
    parameters and batch plan, with the keras.optimizers optimizer set up to compute the spec's rule
    (epsilon negligible, constant lr): crossnn's TF lowering of the spec ends within 1e-9 of it in
    float64. The learning rates and betas are powers of two, so Keras' float32 learning-rate variable
    holds them exactly."""
    optimizer, make = KERAS_SAME_FORMULA[case]
    exp = _spec([S.Dense(name="h", units=4, activation=S.Tanh(), **INIT), S.Dense(name="out", units=2, **INIT)],
                optimizer, epochs=4)
    params = initial_parameters(exp)
    variables = {k: tf.Variable(tf.constant(v, tf.float64), name=k.replace("/", "_")) for k, v in params.items()}
    keras_optimizer = make()
    plan = BatchPlan.for_experiment(exp, len(X))
    for step in range(plan.steps):
        rows = plan.batch(step)
        x, y = tf.constant(X[rows]), tf.constant(Y[rows])
        with tf.GradientTape() as tape:
            h = tf.tanh(x @ variables["h/kernel"] + variables["h/bias"])
            loss = tf.reduce_mean(tf.square(h @ variables["out/kernel"] + variables["out/bias"] - y))
        order = list(variables.values())
        keras_optimizer.apply_gradients(zip(tape.gradient(loss, order), order))
    want = {k: v.numpy() for k, v in variables.items()}
    result = train(exp, [RunSpec("tensorflow", "float64")])
    got = result.records[0].final_params
    assert _rel(got, want) <= 1e-9, (case, _rel(got, want))
    assert _rel(want, params) > 1e-3  # it trained
