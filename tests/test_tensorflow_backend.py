"""The TensorFlow backend against two independent references:

* the NumPy float64 reference backend, through crossnn.harness.train and crossnn.parity.compare
  (every parameter at every snapshot within 1e-9 relative), and
* for each seed experiment, an oracle written the way the original TF tutorials write it —
  tf.Variables / keras.layers.Dense, a tf.GradientTape step and optimizer.apply_gradients over
  crossnn's batch plan — started from crossnn's initial parameters (plus Keras' compile/fit for
  `line`).

Also: the loop modes (epoch, xla-epoch) against NumPy and against the per-step modes, their tracing
and XLA input shapes across spans; the hand-written Keras loop (Backend.tutorial) against crossnn;
and what benchmarks read (mode_notes, runtime(), matmul_gflops). The issue 5/6 features (dropout,
schedules, the other optimizers, training state, native flavour, .weights.h5, facts, scripts, user
extensions) are in tests/test_tensorflow_features.py.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from crossnn import backends, examples  # noqa: E402
from crossnn import spec as S  # noqa: E402
from crossnn.data import load_dataset  # noqa: E402
from crossnn.errors import BackendError, UnsupportedFeature  # noqa: E402
from crossnn.harness import RunSpec, train  # noqa: E402
from crossnn.params import cast, initial_parameters  # noqa: E402
from crossnn.parity import compare  # noqa: E402
from crossnn.plan import BatchPlan  # noqa: E402

MODES = ("graph", "eager", "xla", "epoch", "xla-epoch")
COMPILED = ("graph", "xla", "epoch", "xla-epoch")
LOOPS = ("epoch", "xla-epoch")
#: modes checked against NumPy per example; eager mode costs ~2 ms a step here, so the long runs
#: (adder: 5,000 steps, circle: 12,000) check the compiled modes
PARITY_MODES = {"adder": COMPILED, "line": MODES, "linear-2x3": MODES, "two-tower": MODES, "circle": COMPILED}
FLOAT64_RTOL = 1e-9


def _experiment(name: str) -> S.Experiment:
    return S.load(examples.path(name))


@lru_cache(maxsize=None)
def _run(name: str, modes: tuple[str, ...], dtype: str = "float64"):
    """crossnn's NumPy float64 reference and the TensorFlow lowerings of one example."""
    return train(_experiment(name), [RunSpec("tensorflow", dtype, "cpu", mode) for mode in modes])


def _tf_record(name: str, mode: str = "graph"):
    result = _run(name, PARITY_MODES[name])
    return next(r for r in result.records if r.spec.mode == mode)


def _max_rel(got: dict, want: dict) -> float:
    return max(float(np.max(np.abs(got[k] - want[k])) / np.max(np.abs(want[k]))) for k in want)


@pytest.fixture
def float64_keras():
    """Keras in float64: layers AND the optimizer's learning-rate variable, which Keras creates in
    floatx() and casts to the variable's dtype (with float32 floatx, lr = 0.1 would train a float64
    model with 0.10000000149011612)."""
    from crossnn_tensorflow.device import floatx

    with floatx("float64"):
        yield


# ---- the TF lowering against the NumPy float64 reference ----------------------------------------


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "circle" else name
                                  for name in sorted(PARITY_MODES)])  # circle: 12,000 steps per mode
def test_float64_parity_with_numpy_every_snapshot(name):
    result = _run(name, PARITY_MODES[name])
    assert result.reference.ok and len(result.records) == len(PARITY_MODES[name])
    for record in result.records:
        assert record.ok, record.message
        assert record.steps_done == result.plan.steps
        parity = compare(result.reference, record)
        assert parity.complete and parity.passed, (record.spec.label, parity.first_fail_step)
        assert parity.max_rel <= FLOAT64_RTOL, (record.spec.label, parity.max_rel)
        assert parity.loss_max_abs <= 1e-9 * max(1.0, float(np.max(np.abs(result.reference.losses))))
        assert sorted(record.snapshots) == sorted(result.reference.snapshots)


@pytest.mark.parametrize("name", ["adder", pytest.param("circle", marks=pytest.mark.slow)])  # circle: 13 s
def test_loop_modes_run_the_same_step(name):
    """The epoch loop runs the graph step's kernels, so its 12,000 circle steps give the graph mode's
    bits; the XLA loop stays within 1e-12 of the per-step XLA function (fusion may differ)."""
    records = {r.spec.mode: r for r in _run(name, PARITY_MODES[name]).records}
    for loop, step, rtol in (("epoch", "graph", 0.0), ("xla-epoch", "xla", 1e-12)):
        assert _max_rel(records[loop].final_params, records[step].final_params) <= rtol, (loop, step)
        np.testing.assert_allclose(records[loop].losses, records[step].losses, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", ["linear-2x3", "two-tower"])
def test_float32_within_1e_5_of_numpy_float64(name):
    result = _run(name, MODES, "float32")
    for record in result.records:
        assert record.ok, record.message
        for step, ref in result.reference.snapshots.items():
            for key, value in ref.items():
                assert np.max(np.abs(record.snapshots[step][key] - value)) <= 1e-5, (record.spec.label, step, key)


@pytest.mark.parametrize("mode", MODES)
def test_linear_2x3_final_parameters(mode):
    """The seed's numbers after 100 SGD(0.01) steps on [[1,2,3],[4,5,6]] -> [10, 20] from zeros."""
    final = next(r for r in _run("linear-2x3", MODES).records if r.spec.mode == mode).final_params
    np.testing.assert_allclose(final["fc/kernel"][:, 0], [0.40784463, 1.19106518, 1.97428573], rtol=0, atol=1e-8)
    np.testing.assert_allclose(final["fc/bias"], [0.78322055], rtol=0, atol=1e-8)


def test_same_spec_twice_is_bit_identical():
    """Each lowering run twice (shuffled batches, sigmoid net, momentum) gives the same bits."""
    exp = _experiment("circle")
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, epochs=20, shuffle=True))
    lowerings = [(dtype, mode) for dtype in ("float64", "float32") for mode in COMPILED]
    records = train(exp, [RunSpec("tensorflow", d, "cpu", m) for d, m in lowerings for _ in range(2)]).records
    for first, second in zip(records[::2], records[1::2]):
        assert first.ok and second.ok and first.spec == second.spec
        assert np.array_equal(first.losses, second.losses), first.spec.label
        for key, value in first.final_params.items():
            assert np.array_equal(value, second.final_params[key]), (first.spec.label, key)
    assert not np.array_equal(records[0].final_params["fc1/kernel"], initial_parameters(exp)["fc1/kernel"])


@pytest.mark.parametrize("mode", COMPILED)
def test_compiled_step_traces_once(mode):
    """Batches of 4, 4 and 2 rows, reshuffled every epoch, in spans of 4 steps that cut the epochs
    at different places: one trace for the whole run (the loop modes too: their loop is traced once
    whatever the span's length and batch sizes)."""
    exp = _experiment("two-tower")
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, epochs=5, batch_size=4, shuffle=True))
    backend = backends.get("tensorflow")
    backend.prepare()
    data = load_dataset(exp)
    plan = BatchPlan.for_experiment(exp, data.n)
    trainer = backend.build(exp, initial_parameters(exp), data, dtype="float64", device="cpu", mode=mode)
    assert trainer.traces == 1 and trainer.mode.step.experimental_get_tracing_count() == 1  # traced in build
    losses = np.concatenate([trainer.run(plan.batches(a, b)) for a, b in plan.spans(4)]
                            + [trainer.run(plan.batches(0, 7)), trainer.run([plan.batch(2)])])
    plan_batches = plan.batches(0, plan.steps) + plan.batches(0, 7) + [plan.batch(2)]
    assert {len(plan.batch(s)) for s in range(plan.steps)} == {4, 2}
    assert trainer.traces == 1 and trainer.mode.step.experimental_get_tracing_count() == 1
    reference = backends.get("numpy").build(exp, initial_parameters(exp), data, dtype="float64", device="cpu",
                                            mode="default")
    np.testing.assert_allclose(losses, reference.run(plan_batches), rtol=1e-12, atol=0)
    assert _max_rel(trainer.parameters(), reference.parameters()) <= 1e-12


def test_xla_loop_calls_have_one_shape_per_batch_size():
    """XLA compiles once per input shape: every call of the xla-epoch loop gets a XLA_CHUNK-row index
    tensor (long segments cut, short ones padded), so span lengths never cause a recompile; segments
    break where the batch size changes, and the real rows are the batches, in order."""
    from crossnn_tensorflow.step import XLA_CHUNK, LoopSpan, XlaLoopSpan

    sizes = [4] * 300 + [2] + [4] * 5 + [2, 2]
    batches = [np.arange(k) + i for i, k in enumerate(sizes)]
    calls = list(XlaLoopSpan.chunks(XlaLoopSpan.__new__(XlaLoopSpan), batches))
    assert [count for _, count in calls] == [XLA_CHUNK, XLA_CHUNK, 300 - 2 * XLA_CHUNK, 1, 5, 2]
    assert {rows.shape for rows, _ in calls} == {(XLA_CHUNK, 4), (XLA_CHUNK, 2)}
    real = [row for rows, count in calls for row in rows[:count]]
    assert all(np.array_equal(a, b) for a, b in zip(real, batches)) and len(real) == len(batches)
    unchunked = list(LoopSpan.chunks(LoopSpan.__new__(LoopSpan), batches))
    assert [rows.shape for rows, _ in unchunked] == [(300, 4), (1, 2), (5, 4), (2, 2)]


@pytest.mark.parametrize("mode", LOOPS)
def test_loop_modes_long_spans_match_numpy(mode):
    """Spans longer than one XLA chunk (adder: batch 1, spans of 300 steps), against NumPy."""
    exp = _experiment("adder")
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, epochs=7))
    result = train(exp, [RunSpec("tensorflow", "float64", "cpu", mode)], snapshot_every=300)
    assert result.plan.steps == 700
    parity = compare(result.reference, result.records[0])
    assert parity.passed and parity.max_rel <= FLOAT64_RTOL, parity.max_rel
    np.testing.assert_allclose(result.records[0].losses, result.reference.losses, rtol=1e-9, atol=1e-12)


# ---- spec features beyond the seed experiments, against NumPy -----------------------------------

#: L2 weight decay, spelled out where the spec asks which kind of decay is meant
_L2 = {"weight_decay_kind": "l2"} if "weight_decay_kind" in {f.name for f in dataclasses.fields(S.SGD)} else {}
_RNG = np.random.default_rng(7)
_X = _RNG.normal(size=(12, 3)).round(3)
_LABELS = _RNG.integers(0, 3, size=12)
_INIT = {"kernel_init": S.GlorotUniform(), "bias_init": S.Uniform(low=-0.5, high=0.5)}


def _dense(units, activation=S.Linear()):
    return S.Dense(units=units, activation=activation, **_INIT)


def _feature_experiment(layers, loss, y, optimizer):
    """12 inline samples of 3 features, batches of 5 (the last one 2), reshuffled for 6 epochs."""
    return S.Experiment(name="features", seed=3, data=S.InlineData(x=_X.tolist(), y=y.tolist()),
                        model=S.Model(inputs=3, layers=tuple(layers)), loss=loss, optimizer=optimizer,
                        train=S.Train(epochs=6, batch_size=5, shuffle=True))


#: every activation of the spec between the input and a linear output layer of `units`
def _hidden_stack(units):
    return [_dense(4, S.Tanh()), _dense(4, S.LeakyReLU(negative_slope=0.01)),
            S.ActivationLayer(activation=S.Softplus()), _dense(5, S.GELU(approximate="none")),
            _dense(4, S.GELU(approximate="tanh")), _dense(4, S.ReLU()), _dense(units)]


_FEATURES = {
    "mse+sgd-nesterov-decay": (S.MSE(), _RNG.normal(size=(12, 2)),
                               S.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, **_L2)),
    "mae+adam-decay": (S.MAE(), _RNG.normal(size=(12, 2)), S.Adam(lr=0.01, eps=1e-8, weight_decay=0.1, **_L2)),
    "huber": (S.Huber(delta=0.5), 2 * _RNG.normal(size=(12, 2)), S.SGD(lr=0.1)),
    "bce_logits": (S.BCELogits(), (_RNG.uniform(size=(12, 1)) > 0.5) * 1.0, S.SGD(lr=0.1, momentum=0.5)),
    "xent-logits-sparse": (S.CrossEntropy(from_logits=True, sparse=True), _LABELS, S.Adam(lr=0.02, eps=1e-8)),
    "xent-logits-onehot": (S.CrossEntropy(from_logits=True, sparse=False), np.eye(3)[_LABELS], S.SGD(lr=0.1)),
}


@pytest.mark.parametrize("case", sorted(_FEATURES))
def test_features_match_numpy(case):
    """Every activation, the other losses and optimizer options, against NumPy: the graph step at
    every step, and the XLA-compiled loop (spans of 3 steps) at every third step and every loss."""
    loss, y, optimizer = _FEATURES[case]
    units = 3 if isinstance(loss, S.CrossEntropy) else y.shape[1]
    exp = _feature_experiment(_hidden_stack(units), loss, y, optimizer)
    for mode, every in (("graph", 1), ("xla-epoch", 3)):
        result = train(exp, [RunSpec("tensorflow", "float64", "cpu", mode)], snapshot_every=every)
        record = result.records[0]
        parity = compare(result.reference, record)
        assert parity.passed and parity.max_rel <= FLOAT64_RTOL, (mode, parity.max_rel, record.message)
        np.testing.assert_allclose(record.losses, result.reference.losses, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["bce", "xent-probabilities-sparse", "xent-probabilities-onehot"])
def test_probability_losses_match_numpy(case):
    """Losses on probabilities behind a sigmoid / softmax layer, trained against NumPy; then one step
    from saturated outputs (p exactly 0 or 1), where the log clamp is active and the gradient there
    must be 0, not NaN."""
    if case == "bce":
        loss, y, head, units = S.BCE(log_min=-100.0), (_RNG.uniform(size=(12, 1)) > 0.5) * 1.0, S.Sigmoid(), 1
    else:
        sparse = case.endswith("sparse")
        loss = S.CrossEntropy(from_logits=False, sparse=sparse, log_min=-30.0)
        y, head, units = (_LABELS if sparse else np.eye(3)[_LABELS]), S.Softmax(), 3
    exp = _feature_experiment([_dense(4, S.Tanh()), _dense(units), S.ActivationLayer(activation=head)],
                              loss, y, S.SGD(lr=0.2))
    result = train(exp, [RunSpec("tensorflow", "float64", "cpu", m) for m in COMPILED], snapshot_every=1)
    for record in result.records:
        parity = compare(result.reference, record)
        assert parity.passed and parity.max_rel <= FLOAT64_RTOL, (record.spec.label, parity.max_rel)

    saturated = dict(initial_parameters(exp))
    saturated["dense2/kernel"] = saturated["dense2/kernel"] * 1000.0
    data = load_dataset(exp)
    ran = {}
    for name in ("numpy", "tensorflow"):
        backend = backends.get(name)
        trainer = backend.build(exp, saturated, data, dtype="float64", device="cpu", mode=backend.modes[0])
        ran[name] = trainer.run([np.arange(12)])[0], trainer.parameters(), trainer.predict(data.x)
    (want_loss, want, _), (got_loss, got, _) = ran["numpy"], ran["tensorflow"]
    outputs = backends.get("numpy").build(exp, saturated, data, dtype="float64", device="cpu",
                                          mode="default").predict(data.x)
    assert np.any((outputs == 0.0) | (outputs == 1.0))  # the clamp is in play
    assert np.isfinite(got_loss) and all(np.all(np.isfinite(v)) for v in got.values())
    assert abs(got_loss - want_loss) <= 1e-12 * abs(want_loss)
    assert _max_rel(got, want) <= 1e-12


def test_activation_formulas_where_tf_ops_differ():
    """softplus: gradient sigmoid(z), 1/2 at z = 0; leaky_relu: the float64 slope, not float32(0.01)."""
    from crossnn_tensorflow import ops

    z = tf.constant([-40.0, -3.0, 0.0, 2.5, 40.0], tf.float64)
    softplus = ops.activation(S.Softplus())
    leaky = ops.activation(S.LeakyReLU(negative_slope=0.01))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        a, b = softplus(z), leaky(z)
    zn = z.numpy()
    np.testing.assert_allclose(a.numpy(), np.maximum(zn, 0) + np.log1p(np.exp(-np.abs(zn))), rtol=2e-16, atol=0)
    np.testing.assert_allclose(tape.gradient(a, z).numpy(), 1 / (1 + np.exp(-zn)), rtol=2e-16, atol=0)
    assert tape.gradient(a, z).numpy()[2] == 0.5
    assert b.numpy()[1] == -3.0 * 0.01 and tf.nn.leaky_relu(z, 0.01).numpy()[1] != -3.0 * 0.01
    np.testing.assert_array_equal(tape.gradient(b, z).numpy(), [0.01, 0.01, 0.01, 1.0, 1.0])


# ---- unsupported features ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Swish(S.Activation):
    """An activation no backend lowers; its kind is a plain class attribute, so it is not registered
    in the spec's activation family (no other test sees it)."""

    kind = "swish"


def test_unsupported_feature_names_backend_and_feature():
    exp = _experiment("linear-2x3")
    layer = dataclasses.replace(exp.model.layers[0], activation=_Swish())
    exp = dataclasses.replace(exp, model=S.Model(inputs=3, layers=(layer,)))
    with pytest.raises(UnsupportedFeature) as err:
        backends.get("tensorflow").build(exp, initial_parameters(exp), load_dataset(exp), dtype="float64",
                                         device="cpu", mode="graph")
    assert err.value.backend == "tensorflow" and err.value.feature == "activation 'swish'"
    assert str(err.value) == "backend 'tensorflow' cannot lower activation 'swish'"
    assert "swish" not in S.Activation.kinds()
    exp = _experiment("linear-2x3")
    with pytest.raises(UnsupportedFeature, match="cannot lower dtype 'float16'"):
        backends.get("tensorflow").build(exp, initial_parameters(exp), load_dataset(exp), dtype="float16",
                                         device="cpu", mode="graph")


# ---- oracles written the way the TF tutorials write them ----------------------------------------


class PaperAdam(keras.optimizers.Optimizer):
    """Adam as written in Kingma & Ba (Algorithm 1) and torch.optim.Adam, following Keras' guide to
    custom optimizers (build + update_step). Not keras.optimizers.Adam: Keras adds epsilon to the
    uncorrected √v (w ← w - lr·√(1-β₂ᵗ)/(1-β₁ᵗ) · m / (√v + ε)), i.e. it uses ε/√(1-β₂ᵗ) on √v̂ —
    about 30x the spec's ε on the first step of beta2 = 0.999 — so it trains different numbers."""

    def __init__(self, learning_rate, beta_1, beta_2, epsilon, name="paper_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.m = [self.add_variable_from_reference(v, "m") for v in variables]
        self.v = [self.add_variable_from_reference(v, "v") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        lr = ops.cast(learning_rate, variable.dtype)
        t = ops.cast(self.iterations + 1, variable.dtype)
        m = self.m[self._get_variable_index(variable)]
        v = self.v[self._get_variable_index(variable)]
        self.assign(m, self.beta_1 * m + (1 - self.beta_1) * gradient)
        self.assign(v, self.beta_2 * v + (1 - self.beta_2) * ops.square(gradient))
        m_hat = m / (1 - ops.power(self.beta_1, t))
        v_hat = v / (1 - ops.power(self.beta_2, t))
        self.assign_sub(variable, lr * m_hat / (ops.sqrt(v_hat) + self.epsilon))


def _oracle_loop(exp, model_fn, variables, loss_fn, optimizer):
    """The tutorials' loop: for each batch of crossnn's plan, a tf.function GradientTape step and
    optimizer.apply_gradients(zip(grads, variables))."""
    data = load_dataset(exp)
    plan = BatchPlan.for_experiment(exp, data.n)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model_fn(x))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    losses = [train_step(data.x[batch], data.y[batch]) for batch in plan.batches(0, plan.steps)]
    return np.array([float(v) for v in losses])


def _mse(y, p):
    return tf.reduce_mean(tf.square(y - p))


def _keras_weights(params, *layers):
    return [w for layer in layers for w in (params[f"{layer}/kernel"], params[f"{layer}/bias"])]


def _oracle_adder(exp, params):
    """Seed 000: a tf.Module Dense layer of tf.Variables (y = x @ w + b), one sample per step."""

    class DenseNN(tf.Module):
        def __init__(self, w, b):
            super().__init__()
            self.w, self.b = tf.Variable(w), tf.Variable(b)

        def __call__(self, x):
            return x @ self.w + self.b

    model = DenseNN(params["dense/kernel"], params["dense/bias"])
    opt = exp.optimizer
    adam = PaperAdam(opt.lr, opt.beta1, opt.beta2, opt.eps)
    losses = _oracle_loop(exp, model, [model.w, model.b], _mse, adam)
    return {"dense/kernel": model.w.numpy(), "dense/bias": model.b.numpy()}, losses


def _oracle_line(exp, params):
    """Seed 001: f(x) = w x + b with scalar tf.Variables (W = 5, b = 0), full-batch SGD."""

    class MyModel(tf.Module):
        def __init__(self, w, b):
            super().__init__()
            self.w, self.b = tf.Variable(w), tf.Variable(b)

        def __call__(self, x):
            return self.w * x + self.b

    model = MyModel(params["linear/kernel"][0, 0], params["linear/bias"][0])
    losses = _oracle_loop(exp, model, [model.w, model.b], _mse, keras.optimizers.SGD(exp.optimizer.lr))
    return {"linear/kernel": model.w.numpy().reshape(1, 1), "linear/bias": model.b.numpy().reshape(1)}, losses


def _oracle_linear_2x3(exp, params):
    """Seed 002: a keras.Model subclass around one Dense(1), SGD(0.01) on the whole 2x3 matrix."""

    class Linear(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")

        def call(self, x):
            return self.dense(x)

    model = Linear()
    model(np.zeros((1, 3)))  # builds the Dense layer
    model.dense.set_weights(_keras_weights(params, "fc"))
    losses = _oracle_loop(exp, model, model.trainable_variables, _mse, keras.optimizers.SGD(exp.optimizer.lr))
    kernel, bias = model.dense.get_weights()
    return {"fc/kernel": kernel, "fc/bias": bias}, losses


def _oracle_two_tower(exp, params):
    """Seed 003: the functional two-tower model, Dense(1) and Dense(2) on one input, concatenated,
    Dense(1) on top."""
    inputs = keras.Input(shape=(2,), name="input")
    dense1 = keras.layers.Dense(1, name="dense1")
    dense2 = keras.layers.Dense(2, name="dense2")
    dense3 = keras.layers.Dense(1, name="dense3")
    outputs = dense3(keras.layers.Concatenate(name="concat")([dense1(inputs), dense2(inputs)]))
    model = keras.Model(inputs=inputs, outputs=outputs)
    for name, layer in (("dense1", dense1), ("dense2", dense2), ("dense3", dense3)):
        layer.set_weights(_keras_weights(params, name))
    opt = exp.optimizer
    adam = PaperAdam(opt.lr, opt.beta1, opt.beta2, opt.eps)
    losses = _oracle_loop(exp, model, model.trainable_variables, _mse, adam)
    return {f"{n}/{p}": w for n, layer in (("dense1", dense1), ("dense2", dense2), ("dense3", dense3))
            for p, w in zip(("kernel", "bias"), layer.get_weights())}, losses


def _oracle_circle(exp, params):
    """Seed 004's 2-5-1 sigmoid net as keras.Sequential, keras.losses.BinaryCrossentropy and Keras'
    momentum SGD. Keras' momentum (v ← μ v - lr g, w ← w + v) equals the spec's (b ← μ b + g,
    w ← w - lr b) at a constant lr up to rounding; Keras' BCE sees the sigmoid's logits (Keras 3 tags
    sigmoid outputs) and uses sigmoid_cross_entropy_with_logits, the same loss up to rounding while
    no probability saturates."""
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(5, activation="sigmoid", name="fc1"),
                              keras.layers.Dense(1, activation="sigmoid", name="fc2")])
    for name in ("fc1", "fc2"):
        model.get_layer(name).set_weights(_keras_weights(params, name))
    opt = exp.optimizer
    # np.float64, not a Python float: SGD.update_step does ops.cast(self.momentum, float64), and
    # casting a Python float goes through a float32 tensor (0.8 -> 0.800000011920929), which moves
    # the final parameters by ~1e-6 relative after 12,000 steps
    sgd = keras.optimizers.SGD(opt.lr, momentum=np.float64(opt.momentum))
    losses = _oracle_loop(exp, model, model.trainable_variables, keras.losses.BinaryCrossentropy(), sgd)
    return {f"{n}/{p}": w for n in ("fc1", "fc2")
            for p, w in zip(("kernel", "bias"), model.get_layer(n).get_weights())}, losses


ORACLES = {"adder": (_oracle_adder, 1e-11), "line": (_oracle_line, 1e-13), "linear-2x3": (_oracle_linear_2x3, 1e-13),
           "two-tower": (_oracle_two_tower, 1e-12), "circle": (_oracle_circle, 1e-12)}


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_tutorial_oracle_matches_tf_lowering(name, float64_keras):
    oracle, rtol = ORACLES[name]
    exp = _experiment(name)
    record = _tf_record(name)
    params, losses = oracle(exp, initial_parameters(exp))
    assert sorted(params) == sorted(record.final_params)
    rel = _max_rel(params, record.final_params)
    print(f"{name}: oracle vs crossnn TF final parameters, max rel {rel:.3g}")
    assert rel <= rtol
    np.testing.assert_allclose(losses, record.losses, rtol=1e-9, atol=1e-12)


def test_keras_compile_fit_line_matches(float64_keras):
    """Seed 001's Keras twin: Dense(1) compiled with SGD(0.1) and MSE, fit on all 201 samples per
    batch, no shuffling, 10 epochs, from crossnn's initial parameters."""
    exp = _experiment("line")
    data = load_dataset(exp)
    params = initial_parameters(exp)
    model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1, name="linear")])
    model.set_weights(_keras_weights(params, "linear"))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    history = model.fit(data.x, data.y, batch_size=201, epochs=10, shuffle=False, verbose=0)
    kernel, bias = model.get_weights()
    record = _tf_record("line")
    rel = _max_rel({"linear/kernel": kernel, "linear/bias": bias}, record.final_params)
    print(f"line: keras fit vs crossnn TF final parameters, max rel {rel:.3g}")
    assert rel <= 1e-13
    np.testing.assert_allclose(history.history["loss"], record.losses, rtol=1e-12)


# ---- the hand-written Keras loop (Backend.tutorial), the yardstick of the benchmarks ---------------


def _tutorial(exp, dtype, **kwargs):
    backend = backends.get("tensorflow")
    params = cast(initial_parameters(exp), dtype)
    trainer = backend.tutorial(exp, params, load_dataset(exp), dtype=dtype, device="cpu", **kwargs)
    assert all(np.array_equal(trainer.parameters()[k], params[k]) for k in params)  # starts where crossnn does
    return trainer


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_tutorial_loop_close_to_crossnn_on_circle(dtype):
    """keras.Sequential + BinaryCrossentropy + Keras' momentum SGD over the full circle run (12,000
    steps). Keras' BCE recovers the sigmoid's logits and its momentum keeps lr·velocity, so it is
    close to, not equal to, the spec: measured here 3e-14 relative from crossnn's TF lowering in
    float64, and 2.6e-6 from the NumPy float64 reference in float32 (final parameters; crossnn's own
    float32 TF runs end 3e-6 to 2e-5 from it)."""
    exp = _experiment("circle")
    record = _tf_record("circle")
    reference = _run("circle", PARITY_MODES["circle"]).reference
    trainer = _tutorial(exp, dtype)
    plan = BatchPlan.for_experiment(exp, load_dataset(exp).n)
    losses = np.concatenate([trainer.run(plan.batches(a, b)) for a, b in plan.spans(1200)])
    got = {k: v.astype(np.float64) for k, v in trainer.parameters().items()}
    if dtype == "float64":
        rel = _max_rel(got, record.final_params)
        print(f"circle float64: Keras tutorial loop vs crossnn TF, final parameters max rel {rel:.3g}")
        assert rel <= 1e-12
        np.testing.assert_allclose(losses, record.losses, rtol=1e-10, atol=1e-13)
    else:
        rel = _max_rel(got, reference.final_params)
        print(f"circle float32: Keras tutorial loop vs NumPy float64, final parameters max rel {rel:.3g}")
        assert rel <= 1e-4
        np.testing.assert_allclose(losses, reference.losses, rtol=1e-4, atol=1e-5)
    data = load_dataset(exp)
    np.testing.assert_allclose(trainer.predict(data.x).astype(np.float64),
                               _tf_predict(exp, got, data.x), rtol=1e-12 if dtype == "float64" else 1e-5)


def _tf_predict(exp, params, x):
    trainer = backends.get("tensorflow").build(exp, params, load_dataset(exp), dtype="float64", device="cpu",
                                               mode="eager")
    return trainer.predict(x)


def test_tutorial_loop_adam_is_the_specs():
    """adder (Adam, eps 1e-7, batch 1), 500 steps: the tutorial's Adam is the spec's formula written
    as a Keras optimizer (keras.optimizers.Adam would add epsilon to the uncorrected √v), so the loop
    ends on crossnn's parameters up to rounding."""
    exp = _experiment("adder")
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, epochs=5))
    result = train(exp, [RunSpec("tensorflow", "float64", "cpu", "graph")])
    trainer = _tutorial(exp, "float64")
    plan = result.plan
    losses = trainer.run(plan.batches(0, plan.steps))
    rel = _max_rel(trainer.parameters(), result.records[0].final_params)
    print(f"adder (500 steps) float64: Keras tutorial loop vs crossnn TF, max rel {rel:.3g}")
    assert rel <= 1e-12
    np.testing.assert_allclose(losses, result.records[0].losses, rtol=1e-11, atol=1e-14)


def test_tutorial_loop_eager_feed_is_the_same_training():
    """Gathering the batches in the graph (the default) or eagerly before train_step (as a tf.data
    loop hands them over) changes the cost, not the numbers."""
    exp = _experiment("circle")
    plan = BatchPlan.for_experiment(exp, load_dataset(exp).n)
    runs = []
    for feed in ("graph", "eager"):
        trainer = _tutorial(exp, "float64") if feed == "graph" else _eager_feed_tutorial(exp)
        runs.append((trainer.run(plan.batches(0, 30)), trainer.parameters()))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert all(np.array_equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def _eager_feed_tutorial(exp):
    from crossnn_tensorflow.tutorial import KerasTutorialTrainer

    return KerasTutorialTrainer(exp, initial_parameters(exp), load_dataset(exp), dtype="float64", device="cpu",
                                feed="eager")


def test_tutorial_loop_refuses_what_it_does_not_cover():
    backend = backends.get("tensorflow")
    two_tower = _experiment("two-tower")
    with pytest.raises(UnsupportedFeature, match="graph model"):
        backend.tutorial(two_tower, initial_parameters(two_tower), load_dataset(two_tower), dtype="float64",
                         device="cpu")
    exp = _experiment("linear-2x3")
    decayed = dataclasses.replace(exp, optimizer=S.SGD(lr=0.01, weight_decay=0.1, **_L2))
    with pytest.raises(UnsupportedFeature, match="weight decay"):
        backend.tutorial(decayed, initial_parameters(exp), load_dataset(exp), dtype="float64", device="cpu")
    with pytest.raises(UnsupportedFeature, match="dtype 'float16'"):
        backend.tutorial(exp, initial_parameters(exp), load_dataset(exp), dtype="float16", device="cpu")


# ---- what the benchmarks read: modes, their notes, runtime settings, the matmul peak -----------------


def test_modes_and_mode_notes():
    from crossnn_tensorflow import step

    backend = backends.get("tensorflow")
    assert backend.modes[0] == "graph" and set(backend.modes) == set(step.MODES) == set(MODES)
    assert set(backend.mode_notes) == set(backend.modes)
    assert all(note.strip() and "\n" not in note for note in backend.mode_notes.values())


def test_runtime_reports_the_parity_settings():
    backend = backends.get("tensorflow")
    backend.prepare()
    runtime = backend.runtime()
    assert set(runtime) == {"tensorflow", "intra_op_threads", "inter_op_threads", "op_determinism", "tf32", "onednn"}
    assert runtime["tensorflow"] == tf.__version__
    assert runtime["op_determinism"] is True and runtime["tf32"] is False
    assert isinstance(runtime["onednn"], bool) and runtime["inter_op_threads"] == 1


def test_matmul_gflops():
    backend = backends.get("tensorflow")
    for dtype in ("float32", "float64"):
        assert 0 < backend.matmul_gflops(256, dtype, "cpu") < 1e5
    with pytest.raises(BackendError, match="has no device"):
        backend.matmul_gflops(64, "float32", "tpu")


def test_devices_guess_without_importing_tensorflow():
    import subprocess
    import sys

    from importlib import metadata

    code = ("import sys; from crossnn import backends; b = backends.get('tensorflow'); "
            "print(repr(b.devices()), 'tensorflow' in sys.modules, sep=';')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    guess, imported = out.strip().split(";")
    assert imported == "False" and guess.startswith("('cpu',")
    try:
        metadata.distribution("tensorflow-cpu")
        assert guess == "('cpu',)"  # a CPU-only distribution has no GPU kernels, whatever the driver lists
    except metadata.PackageNotFoundError:
        pass
    gpus = len(tf.config.list_physical_devices("GPU"))
    assert backends.get("tensorflow").devices(probe=True) == ("cpu",) + tuple(f"gpu:{i}" for i in range(gpus))


def test_device_names():
    from crossnn_tensorflow import device

    assert device.resolve("cpu") == device.resolve("CPU:0") == "/CPU:0"
    for bad in ("tpu", "cpu:1", "cuda:x"):
        with pytest.raises(BackendError, match="has no device"):
            device.resolve(bad)
    gpus = len(tf.config.list_physical_devices("GPU"))
    for name in ("gpu", "cuda", f"gpu:{gpus}", f"cuda:{gpus}"):
        if name in ("gpu", "cuda") and gpus:
            assert device.resolve(name) == "/GPU:0"
        else:
            with pytest.raises(BackendError, match=f"sees {gpus} GPU"):
                device.resolve(name)


@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="TensorFlow lists no GPU here")
def test_gpu_float64_parity():
    exp = _experiment("two-tower")
    result = train(exp, [RunSpec("tensorflow", "float64", "gpu", "graph")])
    assert compare(result.reference, result.records[0]).passed


# ---- convolutional networks ----------------------------------------------------------------------

_CNN_RNG = np.random.default_rng(21)
CNN_X = _CNN_RNG.uniform(size=(40, 8, 8, 2)).round(3)
CNN_LABELS = _CNN_RNG.integers(0, 4, size=40)
HE = {"kernel_init": S.HeUniform(), "bias_init": S.Uniform(low=-0.1, high=0.1)}


def _cnn_spec(layers, optimizer, *, inputs=(8, 8, 2), x=CNN_X, y=CNN_LABELS, loss=None, epochs=3, batch=16,
              shuffle=False, name="cnn"):
    """40 images (8x8x2 by default) in batches of 16, 16 and 8."""
    loss = loss or S.CrossEntropy(from_logits=False, sparse=True, log_min=-100.0)
    return S.Experiment(name=name, seed=6, data=S.InlineData(x=np.asarray(x).tolist(), y=np.asarray(y).tolist()),
                        model=S.Model(inputs=list(inputs), layers=tuple(layers)), loss=loss, optimizer=optimizer,
                        train=S.Train(epochs=epochs, batch_size=batch, shuffle=shuffle))


#: the Keras twin of crossnn's acceptance CNN: 'same' at stride 2 on an even input (TF's rule: the
#: extra padding row and column after), 'valid', and both poolings with uneven 'same' padding
KERAS_CNN = [S.Conv2D(name="c1", filters=4, kernel_size=3, strides=2, padding="same", activation=S.ReLU(), **HE),
             S.Conv2D(name="c2", filters=6, kernel_size=2, padding="valid", activation=S.Tanh(), **HE),
             S.MaxPool2D(name="mp", pool_size=2, strides=1, padding="same"),
             S.AvgPool2D(name="ap", pool_size=2, strides=2, padding="same", count_padding=False),
             S.Flatten(name="flat"), S.Dense(name="out", units=4, activation=S.Softmax(), **_INIT)]


def test_keras_fit_cnn_matches_crossnn(float64_keras):
    """The acceptance oracle: a keras.Sequential CNN (Conv2D 'same' at stride 2 on an 8x8 input,
    Conv2D 'valid', MaxPooling2D and AveragePooling2D with uneven 'same' padding, Flatten, Dense
    softmax), fed crossnn's initial parameters, compiled with plain SGD (the spec's formula: w - lr g)
    and SparseCategoricalCrossentropy, trained with fit(shuffle=False) on the same batches: crossnn's
    TensorFlow lowering in every mode, and the NumPy reference, end within 1e-9 of it in float64.
    Keras' loss sees the softmax's logits, the spec takes log p: the same loss up to rounding."""
    exp = _cnn_spec(KERAS_CNN, S.SGD(lr=0.2))
    params = initial_parameters(exp)
    keras_layers = [keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1"),
                    keras.layers.Conv2D(6, 2, padding="valid", activation="tanh", name="c2"),
                    keras.layers.MaxPooling2D(2, strides=1, padding="same"),
                    keras.layers.AveragePooling2D(2, strides=2, padding="same"),
                    keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax", name="out")]
    model = keras.Sequential([keras.Input(shape=(8, 8, 2))] + keras_layers)
    for name in ("c1", "c2", "out"):
        model.get_layer(name).set_weights([params[f"{name}/kernel"], params[f"{name}/bias"]])
    # jit_compile=False: what Keras picks on a CPU-only machine ("auto"), said outright
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.2), loss=keras.losses.SparseCategoricalCrossentropy(),
                  jit_compile=False)
    history = model.fit(CNN_X, CNN_LABELS, batch_size=16, epochs=3, shuffle=False, verbose=0)
    want = {f"{name}/{p}": w for name in ("c1", "c2", "out")
            for p, w in zip(("kernel", "bias"), model.get_layer(name).get_weights())}
    assert _max_rel(want, params) > 1e-2  # it trained

    result = train(exp, [RunSpec("tensorflow", "float64", "cpu", mode) for mode in MODES])
    for record in [result.reference, *result.records]:
        assert record.ok, record.message
        rel = _max_rel(record.final_params, want)
        print(f"keras fit vs crossnn {record.spec.label}: max rel {rel:.2e}")
        assert rel <= 1e-9, (record.spec.label, rel)
        # Keras reports each epoch's loss as the sample-weighted mean of its batch losses (16, 16, 8)
        per_epoch = (record.losses.reshape(3, 3) @ np.array([16, 16, 8])) / 40
        np.testing.assert_allclose(history.history["loss"], per_epoch, rtol=1e-10)


#: the TF lowering's own branches: a dilated convolution at stride 2 (TF's CPU kernels have no
#: backward for it), max pooling with uneven 'same' padding (rewritten under XLA), average pooling
#: counting uneven padding (explicit zeros), dropout on images, concatenation along the width,
#: dense on the last axis of an image and softmax over its channels
BRANCHES = {
    "dilated conv stride 2 same": [
        S.Conv2D(name="c", filters=3, kernel_size=3, strides=2, dilation=2, padding="same", activation=S.Tanh(), **HE),
        S.Flatten(name="f"), S.Dense(name="out", units=4, activation=S.Softmax(), **_INIT)],
    "dilated conv stride 2x1 valid": [
        S.Conv2D(name="c", filters=3, kernel_size=[2, 3], strides=[2, 1], dilation=[2, 1], padding="valid",
                 activation=S.ReLU(), **HE),
        S.GlobalAvgPool2D(name="g"), S.Dense(name="out", units=4, activation=S.Softmax(), **_INIT)],
    "pools with uneven padding": [
        S.Conv2D(name="c", filters=3, kernel_size=2, padding="same", activation=S.Linear(), **HE),
        S.MaxPool2D(name="mp", pool_size=3, strides=2, padding="same"),
        S.AvgPool2D(name="ap", pool_size=2, strides=1, padding="same", count_padding=True),
        S.Flatten(name="f"), S.Dense(name="out", units=4, activation=S.Softmax(), **_INIT)],
    "dropout, width concat, dense per pixel": [
        S.Conv2D(name="a", filters=2, kernel_size=3, padding="same", activation=S.Tanh(), inputs=("input",), **HE),
        S.Conv2D(name="b", filters=2, kernel_size=1, padding="same", inputs=("input",), **HE),
        S.Concatenate(name="join", axis=2, inputs=("a", "b")), S.Dropout(name="drop", rate=0.3),
        S.Dense(name="pixel", units=3, activation=S.Softmax(), **_INIT),
        S.Reshape(name="rows", shape=[8, 48]), S.Dense(name="row", units=2, activation=S.ReLU(), **_INIT),
        S.Flatten(name="f"), S.Dense(name="out", units=4, activation=S.Softmax(), **_INIT)],
}


@pytest.mark.parametrize("case", sorted(BRANCHES))
def test_cnn_branches_match_numpy_in_every_mode(case):
    exp = _cnn_spec(BRANCHES[case], S.Adam(lr=0.01, eps=1e-8), epochs=2, shuffle=True)
    result = train(exp, [RunSpec("tensorflow", "float64", "cpu", mode) for mode in MODES], snapshot_every=1)
    for record in result.records:
        assert record.ok, record.message
        parity = compare(result.reference, record)
        assert parity.passed and parity.max_rel <= FLOAT64_RTOL, (record.spec.label, parity.max_rel)
        np.testing.assert_allclose(record.losses, result.reference.losses, rtol=1e-10)


def _window_op(layer, input_shape):
    """The TF and NumPy registry entries of one parameterless window layer on `input_shape`."""
    import crossnn_numpy.ops
    from crossnn_numpy import xp
    from crossnn_tensorflow import ops

    node = S.Model(inputs=list(input_shape), layers=(layer,)).nodes[0]
    return ops.layer(node, {}), crossnn_numpy.ops.layer(node, xp.numpy)


@pytest.mark.parametrize("size, pool, stride", [(8, 3, 2), (7, 3, 2), (5, 2, 2), (6, 3, 1), (6, 2, 2)])
def test_max_pool_ties_send_the_gradient_to_the_first_maximum(size, pool, stride):
    """On 0/1 images (ties everywhere), eagerly, in a tf.function and under XLA (where the entry
    rewrites the pool): the output and the input gradient equal the NumPy reference's exactly, i.e.
    each window's gradient reaches its first maximum in row-major order."""
    layer = S.MaxPool2D(name="p", pool_size=pool, strides=stride, padding="same")
    tf_op, np_op = _window_op(layer, (size, size + 1, 2))
    rng = np.random.default_rng(size * 10 + pool)
    x = rng.integers(0, 2, size=(3, size, size + 1, 2)).astype(np.float64)
    want, cache = np_op.forward({}, [x])
    dy = rng.standard_normal(want.shape)
    (want_dx,), _ = np_op.backward({}, cache, dy, (True,))

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf_op([x])
        return y, tape.gradient(y, x, output_gradients=tf.constant(dy))

    for how, run in (("eager", grad), ("graph", tf.function(grad)), ("xla", tf.function(grad, jit_compile=True))):
        y, dx = (t.numpy() for t in run(tf.constant(x)))
        assert np.array_equal(y, want), how
        assert np.array_equal(dx != 0, want_dx != 0), how  # the same elements get the gradient
        np.testing.assert_allclose(dx, want_dx, rtol=1e-15, atol=1e-15, err_msg=how)  # summed where windows overlap


def test_dilated_conv_at_stride_2_against_numpy():
    """TF's CPU Conv2D has no backward pass for dilation > 1 (and tf.nn.convolution refuses dilation
    with stride > 1), so the entry convolves the explicitly padded input at stride 1 and slices: its
    output and gradients equal the NumPy reference's to rounding, eagerly, in a graph and under XLA."""
    import crossnn_numpy.ops
    from crossnn_numpy import xp
    from crossnn_tensorflow import ops

    layer = S.Conv2D(name="c", filters=3, kernel_size=3, strides=2, dilation=2, padding="same", **HE)
    node = S.Model(inputs=[9, 10, 2], layers=(layer,)).nodes[0]
    rng = np.random.default_rng(3)
    x, kernel, bias = rng.standard_normal((2, 9, 10, 2)), rng.standard_normal((3, 3, 2, 3)), rng.standard_normal(3)
    np_op = crossnn_numpy.ops.layer(node, xp.numpy)
    want, cache = np_op.forward({"kernel": kernel, "bias": bias}, [x])
    dy = rng.standard_normal(want.shape)
    (want_dx,), want_grads = np_op.backward({"kernel": kernel, "bias": bias}, cache, dy, (True,))
    variables = {"kernel": tf.Variable(kernel), "bias": tf.Variable(bias)}
    tf_op = ops.layer(node, variables)

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf_op([x])
        return (y, *tape.gradient(y, [x, variables["kernel"], variables["bias"]], output_gradients=tf.constant(dy)))

    for how, run in (("eager", grad), ("graph", tf.function(grad)), ("xla", tf.function(grad, jit_compile=True))):
        y, dx, dkernel, dbias = (t.numpy() for t in run(tf.constant(x)))
        for got, expected in ((y, want), (dx, want_dx), (dkernel, want_grads["kernel"]), (dbias, want_grads["bias"])):
            np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13, err_msg=how)
    x = tf.constant(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="dilation"):  # why: TF's own op has no CPU backward
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.conv2d(x, variables["kernel"], 1, "SAME", dilations=2)
        tape.gradient(y, x)


TUTORIAL_CNN = [S.Conv2D(name="c1", filters=4, kernel_size=3, padding="same", activation=S.ReLU(), **HE),
                S.MaxPool2D(name="mp", pool_size=2),
                S.Conv2D(name="c2", filters=6, kernel_size=3, strides=2, padding="same", activation=S.Tanh(), **HE),
                S.AvgPool2D(name="ap", pool_size=2, padding="valid", count_padding=True),
                S.Flatten(name="flat"), S.Dense(name="out", units=4, **_INIT)]


@pytest.mark.parametrize("optimizer", [S.SGD(lr=0.1, momentum=0.9), S.Adam(lr=0.01, eps=1e-7)],
                         ids=["sgd-momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tutorial_loop_trains_a_cnn_as_crossnn_does(optimizer, dtype):
    """The hand-written Keras loop on a CNN (Conv2D, MaxPooling2D, AveragePooling2D, Flatten, Dense,
    logits into SparseCategoricalCrossentropy): within 1e-12 of crossnn's TF graph run in float64
    (Keras' momentum keeps lr·velocity, the spec lr·buffer: equal at a constant lr up to rounding),
    and within 1e-4 of the NumPy float64 reference in float32."""
    exp = _cnn_spec(TUTORIAL_CNN, optimizer, loss=S.CrossEntropy(from_logits=True, sparse=True), epochs=4,
                    shuffle=True)
    result = train(exp, [RunSpec("tensorflow", dtype, "cpu", "graph")])
    trainer = _tutorial(exp, dtype)
    plan = result.plan
    losses = np.concatenate([trainer.run(plan.batches(a, b)) for a, b in plan.spans(5)])
    got = {k: v.astype(np.float64) for k, v in trainer.parameters().items()}
    want, rtol = ((result.records[0].final_params, 1e-12) if dtype == "float64"
                  else (result.reference.final_params, 1e-4))
    rel = _max_rel(got, want)
    print(f"CNN {optimizer.kind} {dtype}: Keras tutorial loop, max rel {rel:.2e}")
    assert rel <= rtol
    np.testing.assert_allclose(losses, result.records[0].losses, rtol=1e-10 if dtype == "float64" else 1e-4)


def test_tutorial_loop_refuses_counting_same_padding():
    exp = _cnn_spec([S.AvgPool2D(name="ap", pool_size=3, strides=2, padding="same", count_padding=True),
                     S.Flatten(name="f"), S.Dense(name="out", units=4, **_INIT)], S.SGD(lr=0.1))
    with pytest.raises(UnsupportedFeature, match="avg_pool2d counting 'same' padding"):
        _tutorial(exp, "float64")
