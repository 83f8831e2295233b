"""The NumPy reference backend: backward passes against central finite differences, optimizer
steps against hand-computed numbers, and the harness behaviour around it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crossnn
from crossnn import spec as S
from crossnn.data import Dataset
from crossnn.errors import UnsupportedFeature
from crossnn.harness import RunSpec, train
from crossnn_numpy import ops as np_ops
from crossnn_numpy import optimizers as np_optimizers
from crossnn_numpy.step import NumpyTrainer, Program
from crossnn_numpy.xp import numpy as XP

RNG = np.random.default_rng(1234)


def _experiment(layers, loss, inputs=3, optimizer=None):
    """An experiment around `layers` (its data is never trained on here: the tests feed their own)."""
    return S.Experiment(name="t", seed=0, data=S.RandomNormal(n=4, inputs=3, outputs=1),
                        model=S.Model(inputs=inputs, layers=tuple(layers)), loss=loss,
                        optimizer=optimizer or S.SGD(lr=0.1), train=S.Train(epochs=1, batch_size=4))


def _targets(loss, n, k):
    if isinstance(loss, (S.BCE, S.BCELogits)):
        return (RNG.uniform(size=(n, k)) > 0.5).astype(float)
    if isinstance(loss, S.CrossEntropy):
        return np.eye(k)[RNG.integers(0, k, size=n)]
    return RNG.standard_normal((n, k))


def _check_gradients(experiment, x, y, masks=None):
    """Analytic gradients of the NumPy backend against central differences, relative error < 1e-6."""
    values = {name: RNG.normal(0, 0.7, size=p.shape) for name, p in experiment.model.parameter_inits().items()}
    program = Program(experiment, XP)
    loss = np_ops.loss(experiment.loss, XP)

    def objective(vals):
        out, _ = program.forward(vals, x, masks)
        return float(loss.value_and_grad(out, y)[0])

    out, caches = program.forward(values, x, masks)
    _, d_out = loss.value_and_grad(out, y)
    grads = program.backward(values, caches, d_out)
    assert set(grads) == set(values)
    h = 1e-6
    for name, value in values.items():
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            saved = value[idx]
            value[idx] = saved + h
            plus = objective(values)
            value[idx] = saved - h
            minus = objective(values)
            value[idx] = saved
            numeric[idx] = (plus - minus) / (2 * h)
        scale = max(np.abs(numeric).max(), 1e-3)
        err = np.abs(grads[name] - numeric).max() / scale
        assert err < 1e-6, f"{name}: analytic vs numeric relative error {err:.2e}"
    return grads


ACTIVATIONS = [S.Linear(), S.ReLU(), S.Sigmoid(), S.Tanh(), S.Softmax(), S.LeakyReLU(negative_slope=0.1),
               S.Softplus(), S.GELU(approximate="none"), S.GELU(approximate="tanh")]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a.kind + getattr(a, "approximate", ""))
def test_activation_backward_matches_finite_differences(act):
    e = _experiment([S.Dense(name="h", units=4, activation=act, kernel_init=S.Zeros(), bias_init=S.Zeros()),
                     S.ActivationLayer(name="again", activation=act),
                     S.Dense(name="out", units=2, kernel_init=S.Zeros(), bias_init=S.Zeros())], S.MSE())
    _check_gradients(e, RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2)))


LOSSES = [S.MSE(), S.MAE(), S.Huber(delta=0.7), S.BCE(log_min=-100.0), S.BCELogits(),
          S.CrossEntropy(from_logits=True, sparse=False),
          S.CrossEntropy(from_logits=False, sparse=False, log_min=-100.0)]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda s: s.kind + ("_logits" if getattr(s, "from_logits", False) else ""))
def test_loss_backward_matches_finite_differences(loss):
    last = {S.BCE: S.Sigmoid(), S.CrossEntropy: S.Softmax() if not getattr(loss, "from_logits", True) else S.Linear()}
    act = last.get(type(loss), S.Linear())
    e = _experiment([S.Dense(name="h", units=4, activation=S.Tanh(), kernel_init=S.Zeros(), bias_init=S.Zeros()),
                     S.Dense(name="out", units=3, activation=act, kernel_init=S.Zeros(), bias_init=S.Zeros())], loss)
    _check_gradients(e, RNG.standard_normal((6, 3)), _targets(loss, 6, 3))


def test_graph_backward_sums_gradients_of_shared_values():
    """A value feeding two layers (the input of both towers, and `h` feeding both branches)."""
    layers = [S.Dense(name="h", units=3, activation=S.Tanh(), kernel_init=S.Zeros(), bias_init=S.Zeros()),
              S.Dense(name="a", units=2, kernel_init=S.Zeros(), bias_init=S.Zeros(), inputs=("h",)),
              S.Dense(name="b", units=1, activation=S.Sigmoid(), kernel_init=S.Zeros(), bias_init=S.Zeros(),
                      inputs=("h",)),
              S.Concatenate(name="cat", inputs=("a", "b", "h")),
              S.Dense(name="out", units=1, use_bias=False, kernel_init=S.Zeros(), bias_init=S.Zeros())]
    _check_gradients(_experiment(layers, S.MSE()), RNG.standard_normal((4, 3)), RNG.standard_normal((4, 1)))


def test_bce_clamp_keeps_the_loss_finite_at_saturation():
    loss = np_ops.loss(S.BCE(log_min=-100.0), XP)
    with np.errstate(divide="ignore"):
        value, grad = loss.value_and_grad(np.array([[0.0], [1.0]]), np.array([[1.0], [0.0]]))
    assert value == pytest.approx(100.0)
    assert np.all(np.isfinite(grad))


# ---- optimizers on hand-computed numbers ------------------------------------------------------------

def _steps(opt_spec, w0, grads):
    """The chain's updates applied as the trainers apply them, w ← w + u; every input left as it was."""
    opt = np_optimizers.chain(opt_spec, XP)
    params = [np.array(w0, dtype=float)]
    state = opt.init(params)
    for g in grads:
        g = [np.array(g, dtype=float)]
        before = (params[0].copy(), g[0].copy())
        (u,), state = opt.update(g, state, params, opt_spec.lr)
        assert np.array_equal(params[0], before[0]) and np.array_equal(g[0], before[1])  # pure
        params = [params[0] + u]
    return params[0]


def test_sgd_plain_step():
    # w = 1 - 0.1 * 2 = 0.8
    assert _steps(S.SGD(lr=0.1), [1.0], [[2.0]]) == pytest.approx([0.8], abs=1e-15)


def test_sgd_momentum_two_steps():
    # step 1: b = g = 2, w = 1 - 0.1*2 = 0.8; step 2: b = 0.9*2 + 1 = 2.8, w = 0.8 - 0.28 = 0.52
    assert _steps(S.SGD(lr=0.1, momentum=0.9), [1.0], [[2.0], [1.0]]) == pytest.approx([0.52], abs=1e-15)


def test_sgd_nesterov_and_weight_decay():
    # g1 = 2 + 0.5*1 = 2.5, b = 2.5, d = 2.5 + 0.9*2.5 = 4.75, w = 1 - 0.475 = 0.525
    # g2 = 1 + 0.5*0.525 = 1.2625, b = 0.9*2.5 + 1.2625 = 3.5125, d = 1.2625 + 0.9*3.5125 = 4.42375
    # w = 0.525 - 0.442375 = 0.082625
    sgd = S.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5, weight_decay_kind="l2")
    w = _steps(sgd, [1.0], [[2.0], [1.0]])
    assert w == pytest.approx([0.082625], abs=1e-15)


def test_adam_two_steps():
    # t=1: m = 0.1*2 = 0.2, v = 0.001*4 = 0.004, m̂ = 2, v̂ = 4, w = 1 - 0.1*2/(2 + 1e-8)
    w1 = 1 - 0.1 * 2 / (2 + 1e-8)
    assert _steps(S.Adam(lr=0.1, eps=1e-8), [1.0], [[2.0]]) == pytest.approx([w1], abs=1e-15)
    # t=2 with g=-1: m = 0.9*0.2 - 0.1 = 0.08, v = 0.999*0.004 + 0.001 = 0.004996
    m, v = 0.08, 0.004996
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    w2 = w1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    assert _steps(S.Adam(lr=0.1, eps=1e-8), [1.0], [[2.0], [-1.0]]) == pytest.approx([w2], abs=1e-14)


def test_adam_weight_decay_is_l2():
    # g = 2 + 0.1*1 = 2.1: the first Adam step moves by lr * 2.1/(2.1 + eps) ≈ lr
    w = _steps(S.Adam(lr=0.1, eps=1e-8, weight_decay=0.1, weight_decay_kind="l2"), [1.0], [[2.0]])
    assert w == pytest.approx([1 - 0.1 * 2.1 / (2.1 + 1e-8)], abs=1e-15)


# ---- the examples on the reference backend -------------------------------------------------------------

def test_linear_2x3_matches_hand_computed_values():
    result = train(crossnn.example("linear-2x3"), [RunSpec("numpy", "float64")])
    final = result.reference.final_params
    np.testing.assert_allclose(final["fc/kernel"].ravel(), [0.40784463, 1.19106518, 1.97428573], atol=1e-8)
    np.testing.assert_allclose(final["fc/bias"], [0.78322055], atol=1e-8)


def test_linear_2x3_first_step_by_hand():
    """From zero weights the output is 0, so dL/dW = -2/2 * Σ_n y_n x_n and dL/db = -(10 + 20)."""
    result = train(crossnn.example("linear-2x3"), [RunSpec("numpy", "float64")], snapshot_every=1)
    after_one = result.reference.snapshots[1]
    x, y = np.array([[1, 2, 3], [4, 5, 6.0]]), np.array([10.0, 20.0])
    np.testing.assert_allclose(after_one["fc/kernel"].ravel(), 0.01 * (x.T @ y), rtol=1e-15)
    np.testing.assert_allclose(after_one["fc/bias"], [0.01 * 30.0], rtol=1e-15)
    assert result.reference.losses[0] == pytest.approx((100 + 400) / 2)


def test_circle_reaches_high_accuracy():
    result = train(crossnn.example("circle"), [RunSpec("numpy", "float64")])
    assert result.reference.steps_done == 12_000
    assert result.reference.metrics["accuracy"] >= 0.98


def test_adder_learns_addition():
    final = train(crossnn.example("adder"), [RunSpec("numpy", "float64")]).reference.final_params
    np.testing.assert_allclose(final["dense/kernel"].ravel(), [1.0, 1.0], atol=0.01)
    assert abs(final["dense/bias"][0]) < 0.05


def test_line_recovers_slope_and_intercept():
    final = train(crossnn.example("line"), [RunSpec("numpy", "float64")]).reference.final_params
    assert final["linear/kernel"][0, 0] == pytest.approx(3.07, abs=0.1)
    assert final["linear/bias"][0] == pytest.approx(1.78, abs=0.1)


def test_same_run_twice_is_bit_identical():
    e = crossnn.example("two-tower")
    a = train(e, [RunSpec("numpy", "float32")]).records[0].final_params
    b = train(e, [RunSpec("numpy", "float32")]).records[0].final_params
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_diverging_training_stops_at_the_first_nonfinite_loss():
    """lr = 1e6 on the line data blows up in a few steps; the run stops there and says where."""
    e = crossnn.example("line")
    e = dataclasses.replace(e, optimizer=S.SGD(lr=1e6), train=S.Train(epochs=200, batch_size=201))
    result = train(e, [RunSpec("numpy", "float32")], snapshot_every=1)
    run = result.records[0]
    assert run.status == "nonfinite"
    assert f"step {run.steps_done - 1}" in run.message and run.steps_done < 200
    assert np.all(np.isfinite(run.losses[:-1])) and not np.isfinite(run.losses[-1])


def test_unknown_layer_kind_is_reported_as_unsupported():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Scale(S.Layer, kind="test_scale_numpy"):
        def output_shape(self, input_shapes):
            return input_shapes[0]

    e = _experiment([Scale(name="s"), S.Dense(name="o", units=1, kernel_init=S.Zeros(), bias_init=S.Zeros())], S.MSE())
    data = Dataset(np.zeros((4, 3)), np.zeros((4, 1)))
    with pytest.raises(UnsupportedFeature, match="backend 'numpy' cannot lower layer 'test_scale_numpy'"):
        NumpyTrainer(e, {"o/kernel": np.zeros((3, 1)), "o/bias": np.zeros(1)}, data, "float64")


# ---- the array namespace the math is written against ---------------------------------------------------

def test_math_uses_only_the_documented_namespace_functions():
    """ops, windows, optimizers and the step's Program/TrainStep call nothing of NumPy directly (the
    script text aside), and every xp.<name> they use is in crossnn_numpy.xp.FUNCTIONS, which every
    namespace provides."""
    import inspect
    import re

    from crossnn_numpy import ops, optimizers, step, windows
    from crossnn_numpy.xp import FUNCTIONS

    for module in (ops, optimizers, windows):
        assert not hasattr(module, "np"), module.__name__
    sources = [inspect.getsource(m) for m in (ops, optimizers, windows)]
    sources += [inspect.getsource(step.Program), inspect.getsource(step.TrainStep)]
    used = {name for source in sources for name in re.findall(r"(?:\bself\.|(?<![\w.]))xp\.([a-z_]+)", source)}
    assert used and used <= set(FUNCTIONS), used - set(FUNCTIONS)
    assert all(callable(getattr(XP, name)) for name in FUNCTIONS)


def _frozen(a):
    """A copy of `a` that refuses in-place writes (NumPy's writeable flag)."""
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_reference_math_is_pure():
    """A whole training step with every input array read-only: no op, loss or optimizer stage writes
    into what it was handed (so the same code runs under jax.jit)."""
    from crossnn_numpy.step import TrainStep

    e = S.Experiment(
        name="pure", seed=0, data=S.RandomNormal(n=4, inputs=3, outputs=1),
        model=S.Model(inputs=[5, 4, 2], layers=(
            S.Conv2D(name="c", filters=3, kernel_size=3, strides=2, padding="same", activation=S.ReLU(),
                     kernel_init=S.HeUniform(), bias_init=S.Zeros()),
            S.MaxPool2D(name="m", pool_size=2, padding="same"),
            S.AvgPool2D(name="a", pool_size=1, count_padding=False),
            S.Dropout(name="d", rate=0.5), S.Flatten(name="f"),
            S.Dense(name="o", units=2, activation=S.Softmax(), kernel_init=S.GlorotUniform(), bias_init=S.Zeros()))),
        loss=S.CrossEntropy(from_logits=False, sparse=False, log_min=-100.0),
        optimizer=S.AdamW(lr=0.01, eps=1e-8, weight_decay=0.1, clip_norm=0.5), train=S.Train(epochs=1, batch_size=4))
    step = TrainStep(e, XP)
    flat = _frozen(step.flatten({n: RNG.normal(size=p.shape) for n, p in e.model.parameter_inits().items()}))
    state = {k: [_frozen(a) for a in v] if isinstance(v, list) else v for k, v in step.init(flat).items()}
    x, y = _frozen(RNG.normal(size=(4, 5, 4, 2))), _frozen(np.eye(2)[[0, 1, 1, 0]])
    masks = {"d": _frozen((RNG.uniform(size=(4, 2, 1, 3)) < 0.5) * 2.0)}
    loss, new_flat, new_state = step(flat, state, x, y, 0.01, masks)
    assert np.isfinite(loss) and not np.array_equal(new_flat, flat) and new_state["step"] == 1


def test_namespace_functions_mean_what_numpy_means():
    z = np.array([[-1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(XP.sigmoid(z), 1.0 / (1.0 + np.exp(-z)))
    np.testing.assert_allclose(XP.erf(z), [[-0.8427007929497149, 0.0, 0.9953222650189527]], rtol=1e-15)
    np.testing.assert_array_equal(XP.pad(z, ((0, 1), (2, 0)), constant_values=-1.0),
                                  [[-1, -1, -1, 0, 2], [-1, -1, -1, -1, -1]])
    np.testing.assert_array_equal(XP.argmax(np.array([[1.0, 3.0, 3.0]]), 1), [1])  # the first largest
    np.testing.assert_array_equal(XP.amax(z, 1, keepdims=True), [[2.0]])


def test_sigmoid_takes_zero_dimensional_and_integer_input():
    assert XP.sigmoid(np.array(0.0)) == 0.5 and XP.sigmoid(0.0) == 0.5
    np.testing.assert_array_equal(XP.sigmoid(np.arange(3)), 1.0 / (1.0 + np.exp(-np.arange(3.0))))


def test_contiguous_batches_become_slices():
    from crossnn_numpy.step import contiguous_slices

    assert contiguous_slices([np.arange(0, 3), np.arange(7, 9)]) == [slice(0, 3), slice(7, 9)]
    assert contiguous_slices([np.array([5]), np.array([1])]) == [slice(5, 6), slice(1, 2)]
    assert contiguous_slices([np.arange(3), np.array([4, 3])]) is None
    assert contiguous_slices([np.array([0, 2, 1])]) is None
    assert contiguous_slices([]) == []


def test_parameters_live_in_one_flat_array_and_a_parameterless_model_still_runs():
    e = _experiment([S.Dense(name="h", units=4, activation=S.Tanh(), kernel_init=S.Zeros(), bias_init=S.Zeros()),
                     S.Dense(name="out", units=1, kernel_init=S.Zeros(), bias_init=S.Zeros())], S.MSE())
    names = list(e.model.parameter_inits())
    params = {name: RNG.normal(size=p.shape) for name, p in e.model.parameter_inits().items()}
    trainer = NumpyTrainer(e, params, Dataset(RNG.normal(size=(4, 3)), RNG.normal(size=(4, 1))), "float64")
    assert trainer.flat.shape == (3 * 4 + 4 + 4 + 1,)
    assert all(np.shares_memory(v, trainer.flat) for v in trainer.train_step.unflatten(trainer.flat).values())
    assert [n for n in trainer.parameters()] == names
    for name in names:
        np.testing.assert_array_equal(trainer.parameters()[name], params[name])

    bare = _experiment([S.ActivationLayer(name="a", activation=S.Tanh())], S.MSE(), inputs=1)
    losses = NumpyTrainer(bare, {}, Dataset(np.zeros((4, 1)), np.ones((4, 1))), "float64").run([np.arange(4)])
    assert losses.tolist() == [1.0]


def test_rmsprop_two_steps_by_hand():
    # v1 = 0.1·4 = 0.4, w1 = 1 - 0.1·2/(√0.4 + 1e-8); v2 = 0.9·0.4 + 0.1·1 = 0.46, w2 = w1 - 0.1·1/(√0.46 + 1e-8)
    w1 = 1 - 0.1 * 2 / (np.sqrt(0.4) + 1e-8)
    w2 = w1 - 0.1 * 1 / (np.sqrt(0.46) + 1e-8)
    assert _steps(S.RMSprop(lr=0.1, alpha=0.9, eps=1e-8), [1.0], [[2.0], [1.0]]) == pytest.approx([w2], abs=1e-15)


def test_rmsprop_centered_with_momentum_two_steps_by_hand():
    """Two steps, so the momentum coefficient weighs the first step's buffer in the second."""
    # step 1, g = 2: v = 0.1·4 = 0.4, ḡ = 0.1·2 = 0.2, a = √(0.4 - 0.04) + eps, b = 2/a, w = 1 - 0.1·b
    a1 = np.sqrt(0.4 - 0.2**2) + 1e-8
    b1 = 2 / a1
    w1 = 1 - 0.1 * b1
    # step 2, g = -1: v = 0.9·0.4 + 0.1·1 = 0.46, ḡ = 0.9·0.2 - 0.1 = 0.08, a = √(0.46 - 0.0064) + eps, b = 0.5·b1 - 1/a
    a2 = np.sqrt(0.46 - 0.08**2) + 1e-8
    w2 = w1 - 0.1 * (0.5 * b1 - 1 / a2)
    spec = S.RMSprop(lr=0.1, alpha=0.9, eps=1e-8, momentum=0.5, centered=True)
    assert _steps(spec, [1.0], [[2.0]]) == pytest.approx([w1], abs=1e-15)
    assert _steps(spec, [1.0], [[2.0], [-1.0]]) == pytest.approx([w2], abs=1e-15)


def test_adagrad_two_steps_by_hand():
    # s1 = 0.1 + 4, w1 = 1 - 0.5·2/(√4.1 + 1e-10); s2 = 4.1 + 1, w2 = w1 - 0.5·1/(√5.1 + 1e-10)
    w1 = 1 - 0.5 * 2 / (np.sqrt(4.1) + 1e-10)
    w2 = w1 - 0.5 * 1 / (np.sqrt(5.1) + 1e-10)
    spec = S.Adagrad(lr=0.5, initial_accumulator=0.1, eps=1e-10)
    assert _steps(spec, [1.0], [[2.0], [1.0]]) == pytest.approx([w2], abs=1e-15)


def test_adamw_decouples_decay_from_the_update():
    # w ← w·(1 - lr·wd) = 0.99, then the first Adam step moves by lr·g/(|g| + eps) ≈ 0.1
    w = _steps(S.AdamW(lr=0.1, eps=1e-8, weight_decay=0.1), [1.0], [[2.0]])
    assert w == pytest.approx([0.99 - 0.1 * 2 / (2 + 1e-8)], abs=1e-15)


def test_decoupled_sgd_with_momentum_differs_from_l2():
    # decoupled: w ← 0.95 then b = g = 2, w ← 0.95 - 0.2 = 0.75; L2: g = 2 + 0.5 = 2.5, w ← 1 - 0.25 = 0.75 (same
    # on step 1), step 2 with g = 0: decoupled w ← 0.75·0.95 - 0.1·(0.9·2) = 0.5325; L2 g = 0.375, b = 2.25 + 0.375,
    # w ← 0.75 - 0.2625 = 0.4875
    decoupled = S.SGD(lr=0.1, momentum=0.9, weight_decay=0.5, weight_decay_kind="decoupled")
    l2 = S.SGD(lr=0.1, momentum=0.9, weight_decay=0.5, weight_decay_kind="l2")
    assert _steps(decoupled, [1.0], [[2.0], [0.0]]) == pytest.approx([0.5325], abs=1e-15)
    assert _steps(l2, [1.0], [[2.0], [0.0]]) == pytest.approx([0.4875], abs=1e-15)


def test_clip_by_global_norm_by_hand():
    # gradients [3] and [4]: norm 5, clipped to 1: scale 1/(5 + 1e-6); SGD lr 1 from zero
    opt = np_optimizers.chain(S.SGD(lr=1.0, clip_norm=1.0), XP)
    params, grads = [np.zeros(1), np.zeros(1)], [np.array([3.0]), np.array([4.0])]
    (u0, u1), _ = opt.update(grads, opt.init(params), params, 1.0)
    scale = 1.0 / (5.0 + 1e-6)
    assert u0[0] == pytest.approx(-3 * scale, abs=1e-15) and u1[0] == pytest.approx(-4 * scale, abs=1e-15)


def test_dropout_backward_matches_finite_differences_with_a_fixed_mask():
    e = _experiment([S.Dense(name="h", units=4, activation=S.Tanh(), kernel_init=S.Zeros(), bias_init=S.Zeros()),
                     S.Dropout(name="drop", rate=0.5),
                     S.Dense(name="out", units=1, kernel_init=S.Zeros(), bias_init=S.Zeros())], S.MSE())
    mask = (RNG.uniform(size=(5, 4)) < 0.5) * 2.0
    grads = _check_gradients(e, RNG.standard_normal((5, 3)), RNG.standard_normal((5, 1)), {"drop": mask})
    assert np.all(grads["h/kernel"][:, mask.sum(axis=0) == 0] == 0)  # a unit dropped in every row gets no gradient


# ---- 2-D windows: every padding, stride, dilation and odd/even input size ------------------------------

WINDOW_CASES = [(k, s, d, pad, size) for k in (1, 2, 3) for s in (1, 2, 3) for d in (1, 2) for pad in ("valid", "same")
                for size in (5, 6) if pad == "same" or (k - 1) * d + 1 <= size]


def _window_experiment(layer, size, out_act=S.Linear()):
    return _experiment([layer, S.Flatten(name="f"),
                        S.Dense(name="o", units=2, activation=out_act, kernel_init=S.Zeros(), bias_init=S.Zeros())],
                       S.MSE(), inputs=[size, size + 1, 2])


@pytest.mark.parametrize("k, s, d, pad, size", WINDOW_CASES)
def test_conv2d_backward_matches_finite_differences(k, s, d, pad, size):
    conv = S.Conv2D(name="c", filters=2, kernel_size=[k, max(1, k - 1)], strides=[s, 1 + s % 2], dilation=[d, 1],
                    padding=pad, activation=S.Tanh(), kernel_init=S.Zeros(), bias_init=S.Zeros())
    e = dataclasses.replace(_window_experiment(conv, size), model=S.Model(inputs=[size, size + 1, 2], layers=(
        S.Dense(name="pre", units=2, activation=S.Sigmoid(), kernel_init=S.Zeros(), bias_init=S.Zeros()),
        dataclasses.replace(conv, inputs=None), S.Flatten(name="f"),
        S.Dense(name="o", units=2, kernel_init=S.Zeros(), bias_init=S.Zeros()))))
    _check_gradients(e, RNG.standard_normal((2, size, size + 1, 2)), RNG.standard_normal((2, 2)))


def test_residual_add_and_reshape_backward_match_finite_differences():
    """add sums the gradient into both of its inputs (here the model input's dense map and a conv on
    it), reshape hands the gradient back in the input's shape, global average pooling spreads it evenly."""
    dense = dict(kernel_init=S.Zeros(), bias_init=S.Zeros())
    layers = (S.Dense(name="pre", units=2, activation=S.Tanh(), **dense),
              S.Conv2D(name="c", filters=2, kernel_size=3, strides=1, dilation=1, padding="same",
                       activation=S.Sigmoid(), **dense),
              S.Add(name="sum", inputs=["pre", "c"]),
              S.Reshape(name="r", shape=[3, -1]),
              S.Dense(name="per_row", units=2, activation=S.Tanh(), **dense),
              S.Reshape(name="back", shape=[3, 2, 1]),
              S.GlobalAvgPool2D(name="g"),
              S.Dense(name="o", units=2, **dense))
    e = dataclasses.replace(_window_experiment(layers[1], 3), model=S.Model(inputs=[3, 4, 2], layers=layers))
    _check_gradients(e, RNG.standard_normal((2, 3, 4, 2)), RNG.standard_normal((2, 2)))


@pytest.mark.parametrize("kind", ["max", "avg counting padding", "avg not counting padding"])
@pytest.mark.parametrize("k, s, pad, size", sorted({(k, s, pad, size) for k, s, _, pad, size in WINDOW_CASES}))
def test_pooling_backward_matches_finite_differences(kind, k, s, pad, size):
    pool = (S.MaxPool2D(name="p", pool_size=[k, 2], strides=[s, 1], padding=pad) if kind == "max" else
            S.AvgPool2D(name="p", pool_size=[k, 2], strides=[s, 2], padding=pad,
                        count_padding=kind == "avg counting padding"))
    e = dataclasses.replace(_window_experiment(pool, size), model=S.Model(inputs=[size, size + 1, 2], layers=(
        S.Dense(name="pre", units=3, activation=S.Tanh(), kernel_init=S.Zeros(), bias_init=S.Zeros()), pool,
        S.GlobalAvgPool2D(name="g"), S.Dense(name="o", units=2, kernel_init=S.Zeros(), bias_init=S.Zeros()))))
    _check_gradients(e, RNG.standard_normal((2, size, size + 1, 2)), RNG.standard_normal((2, 2)))


def test_avg_pool_divisor_counts_padding_only_when_asked():
    """A 2x2 'same' window on a 3x3 image of ones: the bottom-right windows hang over the edge (TF's
    rule pads after), so counting the padding averages in zeros there."""
    make = lambda count: _experiment([S.AvgPool2D(name="p", pool_size=2, strides=1, padding="same",  # noqa: E731
                                                  count_padding=count)], S.MSE(), inputs=[3, 3, 1])
    x = np.ones((1, 3, 3, 1))
    counted = Program(make(True), XP).forward({}, x)[0][0, :, :, 0]
    np.testing.assert_array_equal(counted, [[1, 1, 0.5], [1, 1, 0.5], [0.5, 0.5, 0.25]])
    not_counted = Program(make(False), XP).forward({}, x)[0][0, :, :, 0]
    np.testing.assert_array_equal(not_counted, np.ones((3, 3)))


def test_same_padding_at_stride_two_puts_the_extra_row_after():
    """H = 8, k = 3, s = 2: TF's rule pads 0 rows before and 1 after, so the windows start at rows
    0, 2, 4, 6 (PyTorch's usual padding=1 starts them at -1, 1, 3, 5)."""
    conv = S.Conv2D(name="c", filters=1, kernel_size=[3, 1], strides=[2, 1], padding="same", use_bias=False,
                    kernel_init=S.Zeros(), bias_init=S.Zeros())
    e = _experiment([conv], S.MSE(), inputs=[8, 1, 1])
    rows = np.arange(8.0).reshape(1, 8, 1, 1) + 1.0
    first_tap = np.zeros((3, 1, 1, 1))
    first_tap[0] = 1.0  # picks the top row of each window
    out = Program(e, XP).forward({"c/kernel": first_tap}, rows)[0].ravel()
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0, 7.0])


@pytest.mark.parametrize("name", ["linear-2x3", "two-tower"])
def test_float32_within_1e5_of_the_float64_reference(name):
    """NumPy's own float32 run stays within 1e-5 absolute of its float64 run at every snapshot."""
    result = train(crossnn.example(name), [RunSpec("numpy", "float32")], snapshot_every=1)
    (record,) = result.records
    assert record.ok and record.spec.dtype == "float32"
    worst = max(float(np.max(np.abs(record.snapshots[step][k] - ref[k])))
                for step, ref in result.reference.snapshots.items() for k in ref)
    assert 0 < worst <= 1e-5, worst  # float32 rounding shows, and stays small


# ---- normalization, embeddings and recurrent layers ------------------------------------------------------

def _bn(**kw):
    return S.BatchNorm(name="bn", **{"momentum": 0.9, "epsilon": 1e-3, "running_variance": "unbiased",
                                     "gamma_init": S.Normal(mean=1.0, stddev=0.1), **kw})


@pytest.mark.parametrize("layer, inputs", [
    (_bn(), [3]), (_bn(center=False, running_variance="biased"), [3]), (_bn(scale=False), [4, 3, 2]),
    (_bn(axis=2), [4, 3, 2]), (S.LayerNorm(name="ln", epsilon=1e-5), [3]),
    (S.LayerNorm(name="ln", epsilon=1e-5, center=False), [4, 3, 2]),
], ids=["bn", "bn no center", "bn images no scale", "bn axis 2", "ln", "ln images"])
def test_normalization_backward_matches_finite_differences(layer, inputs):
    e = _experiment([S.Dense(name="pre", units=inputs[-1], activation=S.Tanh(), kernel_init=S.Zeros(),
                             bias_init=S.Zeros()), layer, S.Flatten(name="f"),
                     S.Dense(name="o", units=2, kernel_init=S.Zeros(), bias_init=S.Zeros())], S.MSE(), inputs=inputs)
    program = Program(e, XP)
    x, y = RNG.standard_normal((5, *inputs)), RNG.standard_normal((5, 2))
    values = {name: RNG.normal(0, 0.7, size=p.shape) for name, p in e.model.variable_inits().items()}
    loss = np_ops.loss(e.loss, XP)
    out, caches = program.forward(values, x, {}, training=True)
    grads = program.backward(values, caches, loss.value_and_grad(out, y)[1])
    for name, value in values.items():
        if name not in grads:
            continue
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            saved = value[idx]
            value[idx] = saved + 1e-6
            plus = float(loss.value_and_grad(program.forward(values, x, {}, training=True)[0], y)[0])
            value[idx] = saved - 1e-6
            minus = float(loss.value_and_grad(program.forward(values, x, {}, training=True)[0], y)[0])
            value[idx] = saved
            numeric[idx] = (plus - minus) / 2e-6
        assert np.abs(grads[name] - numeric).max() / max(np.abs(numeric).max(), 1e-3) < 1e-6, name


def test_batch_norm_moving_statistics_by_hand():
    """One training step: the moving statistics move by (1 - momentum) towards the batch's, with the
    unbiased variance (n / (n - 1)) where asked; predicting uses them, training the batch's."""
    e = _experiment([_bn(gamma_init=S.Ones()), S.Dense(name="o", units=1, kernel_init=S.Zeros(),
                                                       bias_init=S.Zeros())], S.MSE())
    x = np.array([[1.0, 2.0, 3.0], [3.0, 6.0, 3.0]])
    values = {name: np.asarray(v, dtype=float) for name, v in
              {"bn/gamma": np.ones(3), "bn/beta": np.zeros(3), "bn/moving_mean": np.zeros(3),
               "bn/moving_variance": np.ones(3), "o/kernel": np.ones((3, 1)), "o/bias": np.zeros(1)}.items()}
    program = Program(e, XP)
    out, caches = program.forward(values, x, {}, training=True)
    moved = program.state_updates(values, caches)
    np.testing.assert_allclose(moved["bn/moving_mean"], 0.1 * np.array([2.0, 4.0, 3.0]), rtol=1e-15)
    np.testing.assert_allclose(moved["bn/moving_variance"], 0.9 + 0.1 * np.array([2.0, 8.0, 0.0]), rtol=1e-15)
    normalized = (x - [2.0, 4.0, 3.0]) / np.sqrt(np.array([1.0, 4.0, 0.0]) + 1e-3)
    np.testing.assert_allclose(out, normalized.sum(axis=1, keepdims=True), rtol=1e-12)
    predicted = program.forward({**values, **moved}, x)[0]
    by_hand = ((x - moved["bn/moving_mean"]) / np.sqrt(moved["bn/moving_variance"] + 1e-3)).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(predicted, by_hand, rtol=1e-12)


RECURRENT = {
    "simple_rnn": lambda **kw: S.SimpleRNN(name="r", units=3, **kw),
    "lstm": lambda **kw: S.LSTM(name="r", units=3, unit_forget_bias=True, **kw),
    "lstm relu, hard sigmoid-like tanh": lambda **kw: S.LSTM(name="r", units=2, activation=S.ReLU(),
                                                             unit_forget_bias=False, recurrent_activation=S.Tanh(),
                                                             **kw),
    "gru reset_after": lambda **kw: S.GRU(name="r", units=3, reset_after=True, **kw),
    "gru reset before": lambda **kw: S.GRU(name="r", units=3, reset_after=False, **kw),
}


@pytest.mark.parametrize("sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_recurrent_backward_through_time_matches_finite_differences(kind, sequences):
    rnn = RECURRENT[kind](return_sequences=sequences, kernel_init=S.Zeros(), recurrent_init=S.Zeros(),
                          bias_init=S.Zeros())
    layers = [S.Dense(name="pre", units=2, activation=S.Tanh(), kernel_init=S.Zeros(), bias_init=S.Zeros()), rnn]
    layers += [S.Flatten(name="f")] if sequences else []
    e = _experiment([*layers, S.Dense(name="o", units=2, kernel_init=S.Zeros(), bias_init=S.Zeros())], S.MSE(),
                    inputs=[4, 3])
    _check_gradients(e, RNG.standard_normal((3, 4, 3)), RNG.standard_normal((3, 2)))


def test_embedding_gradient_sums_the_rows_each_id_reads():
    e = _experiment([S.Embedding(name="emb", input_dim=5, output_dim=2, embeddings_init=S.Zeros()),
                     S.Flatten(name="f"), S.Dense(name="o", units=1, kernel_init=S.Zeros(), bias_init=S.Zeros())],
                    S.MSE(), inputs=[3])
    ids = np.array([[0.0, 3.0, 0.0], [4.0, 4.0, 4.0]])
    grads = _check_gradients(e, ids, RNG.standard_normal((2, 1)))
    np.testing.assert_array_equal(grads["emb/embeddings"][[1, 2]], 0.0)  # ids never read get no gradient


@pytest.mark.parametrize("first", [S.Flatten(name="first"), S.LayerNorm(name="first", epsilon=1e-5, scale=False,
                                                                        center=False)], ids=["flatten", "layer_norm"])
def test_a_parameterless_layer_on_the_input_gets_no_gradient_and_needs_none(first):
    """Nothing upstream of it has parameters, so the backward pass stops before it."""
    e = _experiment([first, S.Flatten(name="flat"), S.Dense(name="o", units=1, kernel_init=S.Zeros(),
                                                             bias_init=S.Zeros())], S.MSE(), inputs=[2, 3])
    _check_gradients(e, RNG.standard_normal((4, 2, 3)), RNG.standard_normal((4, 1)))
