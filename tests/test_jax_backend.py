"""The JAX backend against independent references: the training loop as the JAX and optax
documentation write it (crossnn_jax.tutorial, fed crossnn's initial parameters), the NumPy float64
reference, hand computations of optax's formulas; plus what keeps JAX from leaking into the process
(x64 and the matmul precision only inside a scope), devices, and `crossnn list` without jax."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from crossnn import backends
from crossnn import spec as S
from crossnn.data import load_dataset
from crossnn.errors import BackendError, UnsupportedFeature
from crossnn.harness import RunSpec, train
from crossnn.params import initial_parameters
from crossnn.parity import compare
from crossnn.plan import BatchPlan

pytestmark = pytest.mark.skipif("jax" not in backends.available(), reason="the jax backend is unavailable")

MODES = ("jit", "eager", "scan", "xp")
GLOROT = dict(kernel_init=S.GlorotUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))
HE = dict(kernel_init=S.HeUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))
RNG = np.random.default_rng(16)

MLP = S.Experiment(
    name="mlp", seed=2, data=S.InlineData(x=RNG.standard_normal((40, 5)).tolist(),
                                          y=RNG.integers(0, 3, size=(40, 1)).tolist()),
    model=S.Model(inputs=5, layers=(S.Dense(name="h1", units=8, activation=S.Tanh(), **GLOROT),
                                    S.Dense(name="h2", units=6, activation=S.ReLU(), **GLOROT),
                                    S.Dense(name="logits", units=3, **GLOROT))),
    loss=S.CrossEntropy(from_logits=True, sparse=True), optimizer=S.Adam(lr=0.01, eps=1e-8),
    train=S.Train(epochs=4, batch_size=12, shuffle=True))

CNN = S.Experiment(
    name="cnn", seed=3, data=S.InlineData(x=RNG.standard_normal((20, 9, 10, 2)).tolist(),
                                          y=np.eye(4)[RNG.integers(0, 4, size=20)].tolist()),
    model=S.Model(inputs=[9, 10, 2], layers=(
        S.Conv2D(name="c1", filters=4, kernel_size=3, strides=2, padding="same", activation=S.ReLU(), **HE),
        S.MaxPool2D(name="p1", pool_size=2, strides=1, padding="same"),
        S.Conv2D(name="c2", filters=3, kernel_size=[2, 3], padding="valid", dilation=[1, 2], activation=S.Tanh(),
                 **HE),
        S.AvgPool2D(name="p2", pool_size=2, strides=1, padding="same", count_padding=False),
        S.Flatten(name="flat"),
        S.Dense(name="logits", units=4, **GLOROT))),
    loss=S.CrossEntropy(from_logits=True, sparse=False), optimizer=S.SGD(lr=0.05, momentum=0.9, nesterov=True),
    train=S.Train(epochs=3, batch_size=6, shuffle=True))


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / max(float(np.max(np.abs(b))), 1e-300))


def _tutorial_params(experiment, dtype="float64") -> dict:
    data = load_dataset(experiment)
    plan = BatchPlan.for_experiment(experiment, data.n)
    trainer = backends.get("jax").tutorial(experiment, initial_parameters(experiment), data, dtype=dtype,
                                           device="cpu")
    trainer.run(plan.batches(0, plan.steps))
    return trainer.parameters()


# ---- the oracle: the JAX documentation's loop ----------------------------------------------------


@pytest.mark.parametrize("experiment, modes", [(MLP, MODES), (CNN, ("jit", "scan"))], ids=["mlp", "cnn"])
def test_tutorial_loop_agrees_with_the_lowering_and_the_reference(experiment, modes):
    """The hand-written loop (lax's own 'SAME' padding, optax.adam / optax.sgd(nesterov)) fed crossnn's
    initial parameters ends where the lowering (every mode for the MLP; the CNN's eager and xp modes
    compile slowly and are held to the reference in test_jax_features) and the NumPy reference end
    (float64)."""
    expected = _tutorial_params(experiment)
    result = train(experiment, [RunSpec("jax", "float64", "cpu", mode) for mode in modes])
    assert set(expected) == set(result.reference.final_params)
    for name, value in result.reference.final_params.items():
        assert _rel(expected[name], value) <= 1e-9, f"tutorial vs numpy {name}"
    for record in result.records:
        assert record.ok, record.message
        for name, value in record.final_params.items():
            assert _rel(value, expected[name]) <= 1e-9, f"{record.spec.mode} {name}"
        assert compare(result.reference, record).passed


def test_tutorial_loop_shares_no_code_with_the_lowering_and_refuses_what_a_tutorial_would_not_write():
    import crossnn_jax.tutorial as tutorial

    source = open(tutorial.__file__).read()
    for module in ("crossnn_jax.ops", "crossnn_jax.step", "crossnn_jax.optimizers", "crossnn_jax.device",
                   "window_geometry", "crossnn_numpy"):
        assert module not in source
    data = load_dataset(MLP)
    graph = crossnn_example("two-tower")
    with pytest.raises(UnsupportedFeature, match="tutorial loop"):
        backends.get("jax").tutorial(graph, initial_parameters(graph), load_dataset(graph), dtype="float64",
                                     device="cpu")
    clipped = dataclasses.replace(MLP, optimizer=S.SGD(lr=0.1, clip_norm=1.0))
    with pytest.raises(UnsupportedFeature, match="without decay, clipping or schedules"):
        backends.get("jax").tutorial(clipped, initial_parameters(clipped), data, dtype="float64", device="cpu")


def crossnn_example(name):
    import crossnn

    return crossnn.example(name)


# ---- float64 only inside the scope --------------------------------------------------------------


def test_float64_runs_leave_jax_defaults_and_other_backends_alone():
    import jax
    import jax.numpy as jnp

    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    result = train(MLP, [RunSpec("jax", "float64", "cpu", mode) for mode in ("jit", "scan")]
                   + [RunSpec("jax", "float32", "cpu", "jit")]
                   + [RunSpec(name, "float32") for name in backends.available() if name not in ("jax", "numpy")])
    assert all(record.ok for record in result.records), [r.message for r in result.records]
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before == (False, None)
    assert jnp.zeros(1).dtype == jnp.float32 and jnp.array(1.0).dtype == jnp.float32
    # the float64 runs kept float64 to the last bit of parity, the float32 ones stayed float32
    for record in result.records:
        assert compare(result.reference, record).passed, record.spec.label
        assert {v.dtype for v in record.snapshots[0].values()} == {np.dtype("float64")}  # harness copies
    trainer = backends.get("jax").build(MLP, initial_parameters(MLP), load_dataset(MLP), dtype="float32",
                                        device="cpu", mode="jit")
    trainer.run(BatchPlan.for_experiment(MLP, 40).batches(0, 2))
    assert {v.dtype for v in trainer.parameters().values()} == {np.dtype("float32")}
    float64 = backends.get("jax").build(MLP, initial_parameters(MLP), load_dataset(MLP), dtype="float64",
                                        device="cpu", mode="jit")
    assert {v.dtype for v in float64.parameters().values()} == {np.dtype("float64")}
    assert jnp.ones(2).dtype == jnp.float32


def test_torch_and_tensorflow_in_the_same_process_keep_their_defaults_after_jax():
    if "torch" in backends.available():
        import torch

        assert torch.get_default_dtype() == torch.float32
        assert torch.ones(1).dtype == torch.float32
    train(MLP, [RunSpec("jax", "float64", "cpu", "jit")])
    if "torch" in backends.available():
        assert torch.zeros(1).dtype == torch.float32
    if "tensorflow" in backends.available():
        import tensorflow as tf

        assert tf.constant(1.0).dtype == tf.float32


# ---- the optax stages against the spec's formulas, by hand ----------------------------------------


def _one_step(optimizer, g: float, w: float = 1.0, native=frozenset()):
    import jax
    import jax.numpy as jnp

    from crossnn_jax.optimizers import Chain

    with jax.enable_x64(True):
        chain = Chain(optimizer, native)
        params = {"w": jnp.array([w])}
        state = chain.init(params)
        direction, state = chain.update({"w": jnp.array([g])}, state, params)
        slots, counters = chain.export(state)
        return float(chain.apply(params, direction, optimizer.lr)["w"][0]), (
            {slot: {name: np.asarray(value) for name, value in per.items()} for slot, per in slots.items()}, counters)


def test_each_rule_computes_the_spec_formula_on_one_step():
    g, lr = 0.3, 0.1
    w, (slots, counters) = _one_step(S.Adam(lr=lr, eps=0.05), g)
    assert w == pytest.approx(1.0 - lr * g / (abs(g) + 0.05), rel=1e-15)  # eps on the corrected sqrt(v)
    assert counters == {"step": 1} and set(slots) == {"exp_avg", "exp_avg_sq"}
    w, (slots, counters) = _one_step(S.RMSprop(lr=lr, alpha=0.9, eps=0.05), g)
    assert w == pytest.approx(1.0 - lr * g / (math.sqrt(0.1 * g * g) + 0.05), rel=1e-15)
    assert counters == {"step": 1} and slots["square_avg"]["w"][0] == pytest.approx(0.1 * g * g)
    native, _ = _one_step(S.RMSprop(lr=lr, alpha=0.9, eps=0.05), g, native=frozenset({"rmsprop"}))
    assert native == pytest.approx(1.0 - lr * g / math.sqrt(0.1 * g * g + 0.05), rel=1e-15)  # optax's default
    w, (slots, counters) = _one_step(S.Adagrad(lr=lr, initial_accumulator=0.2, eps=0.05), g)
    assert w == pytest.approx(1.0 - lr * g / (math.sqrt(0.2 + g * g) + 0.05), rel=1e-15)
    assert counters == {"step": 1} and slots["sum"]["w"][0] == pytest.approx(0.2 + g * g)
    native, _ = _one_step(S.Adagrad(lr=lr, initial_accumulator=0.2, eps=0.05), g, native=frozenset({"adagrad"}))
    assert native == pytest.approx(1.0 - lr * g / math.sqrt(0.2 + g * g + 0.05), rel=1e-15)
    w, (slots, _) = _one_step(S.SGD(lr=lr, momentum=0.9, nesterov=True), g)
    assert w == pytest.approx(1.0 - lr * (g + 0.9 * g)) and slots["momentum_buffer"]["w"][0] == g
    w, _ = _one_step(S.SGD(lr=lr, clip_norm=0.1), g)
    assert w == pytest.approx(1.0 - lr * g * 0.1 / (g + 1e-6), rel=1e-15)  # torch's 1e-6
    native, _ = _one_step(S.SGD(lr=lr, clip_norm=0.1), g, native=frozenset({"clip-norm"}))
    assert native == pytest.approx(1.0 - lr * 0.1, rel=1e-15)  # optax: g / |g| * max_norm
    w, _ = _one_step(S.AdamW(lr=lr, eps=1e-8, weight_decay=0.5), 0.0)
    assert w == pytest.approx(1.0 - lr * 0.5)  # decoupled: the zero gradient's Adam step is 0
    w, _ = _one_step(S.SGD(lr=lr, weight_decay=0.5, weight_decay_kind="l2"), g)
    assert w == pytest.approx(1.0 - lr * (g + 0.5))


def test_the_chain_uses_optax_where_optax_computes_the_spec():
    import optax

    from crossnn_jax.optimizers import Chain

    def functions(optimizer):
        return [stage.fn for stage in Chain(optimizer).stages]

    assert functions(S.AdamW(lr=0.1, eps=1e-8, weight_decay=0.1))[1:] == [optax.add_decayed_weights]
    assert optax.trace in functions(S.SGD(lr=0.1, momentum=0.9))
    assert optax.scale_by_stddev in functions(S.RMSprop(lr=0.1, alpha=0.9, eps=1e-8, centered=True))
    stages = Chain(S.RMSprop(lr=0.1, alpha=0.9, eps=1e-8)).stages
    assert [s.kwargs.get("eps_in_sqrt") for s in stages if s.fn is optax.scale_by_rms] == [False]
    assert optax.scale_by_rss not in functions(S.Adagrad(lr=0.1, initial_accumulator=0.0, eps=1e-10))


# ---- modes, devices, listing -----------------------------------------------------------------------


def test_adam_is_optax_scale_by_adam_with_accurate_float32_bias_corrections():
    """In float64 the spec's Adam stage equals optax.scale_by_adam (eps_root 0) over 30 steps; in float32
    its updates stay within 1e-6 of float64 where optax's, whose 1 - βᵗ starts from β rounded to float32,
    are ~1e-5 off."""
    import jax
    import jax.numpy as jnp
    import optax

    from crossnn_jax.optimizers import scale_by_adam_expm1

    grads = RNG.standard_normal((30, 50))

    def updates(transform, dtype):
        params = {"w": jnp.zeros(50, dtype)}
        state, out = transform.init(params), []
        for g in grads:
            d, state = transform.update({"w": jnp.asarray(g, dtype)}, state, params)
            out.append(np.asarray(d["w"], np.float64))
        return np.array(out)

    with jax.enable_x64(True):
        exact = updates(optax.scale_by_adam(0.9, 0.999, 1e-8), jnp.float64)
        assert _rel(updates(scale_by_adam_expm1(0.9, 0.999, 1e-8), jnp.float64), exact) <= 1e-14
    ours = updates(scale_by_adam_expm1(0.9, 0.999, 1e-8), jnp.float32)
    theirs = updates(optax.scale_by_adam(0.9, 0.999, 1e-8), jnp.float32)
    assert _rel(ours, exact) < 1e-6 < 5e-6 < _rel(theirs, exact)


def test_scan_chunks_are_runs_of_one_batch_size_of_at_most_chunk_steps():
    from crossnn_jax.step import CHUNK, ScanMode

    assert ScanMode.chunks([4] * 7 + [2] + [4] * 3) == [(0, 7), (7, 8), (8, 11)]
    assert ScanMode.chunks([8] * (2 * CHUNK + 3)) == [(0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 2 * CHUNK + 3)]


def test_scan_compiles_once_per_batch_size_whatever_the_span_lengths():
    e = dataclasses.replace(MLP, train=S.Train(epochs=30, batch_size=16))  # batches of 16, 16, 8 per epoch
    data, plan = load_dataset(e), BatchPlan.for_experiment(e, 40)
    trainer = backends.get("jax").build(e, initial_parameters(e), data, dtype="float64", device="cpu", mode="scan")
    reference = backends.get("numpy").build(e, initial_parameters(e), data, dtype="float64", device="cpu",
                                            mode="default")
    start = 0
    for length in (1, 2, 7, 30, 3):
        np.testing.assert_allclose(trainer.run(plan.batches(start, start + length)),
                                   reference.run(plan.batches(start, start + length)), rtol=1e-12)
        start += length
    assert trainer.mode.span._cache_size() == 2  # batch sizes 16 and 8
    assert _rel(trainer.parameters()["h1/kernel"], reference.parameters()["h1/kernel"]) <= 1e-12


def test_step_and_run_agree_in_every_mode_and_parameters_are_copies():
    data, params = load_dataset(MLP), initial_parameters(MLP)
    plan = BatchPlan.for_experiment(MLP, data.n)
    for mode in MODES:
        one = backends.get("jax").build(MLP, params, data, dtype="float64", device="cpu", mode=mode)
        many = backends.get("jax").build(MLP, params, data, dtype="float64", device="cpu", mode=mode)
        losses = [one.step(batch) for batch in plan.batches(0, 3)]
        assert np.allclose(losses, many.run(plan.batches(0, 3)), rtol=1e-12, atol=0)
        first = one.parameters()
        first["h1/kernel"][...] = 0.0
        assert np.any(one.parameters()["h1/kernel"] != 0.0)
        assert one.predict(data.x[:3]).shape == (3, 3)


def test_modes_notes_and_fast_mode():
    backend = backends.get("jax")
    from crossnn_jax.step import MODES as STEP_MODES

    assert backend.modes == tuple(STEP_MODES) and set(backend.mode_notes) == set(backend.modes)
    assert backend.fast_modes == ("scan",)
    with pytest.raises(BackendError, match="no mode 'xla'"):
        backend.build(MLP, initial_parameters(MLP), load_dataset(MLP), dtype="float64", device="cpu", mode="xla")


@pytest.mark.parametrize("device", ["tpu", "cpu:1", "cuda:x"])
def test_unknown_device_is_a_backend_error(device):
    with pytest.raises(BackendError, match="no device"):
        backends.get("jax").check_device(device)


def test_gpu_without_one_is_a_backend_error_and_with_one_a_device():
    from crossnn_jax.device import gpus

    if gpus():
        backends.get("jax").check_device("cuda:0")
        assert "cuda:0" in backends.get("jax").devices(probe=True)
    else:
        with pytest.raises(BackendError, match="sees 0 GPU"):
            backends.get("jax").check_device("cuda")
        assert backends.get("jax").devices(probe=True) == ("cpu",)


def _fresh(*code: str) -> subprocess.CompletedProcess:
    """Run the code blocks in a fresh interpreter."""
    program = "\n".join(textwrap.dedent(block) for block in code)
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)


def test_list_shows_jax_without_importing_it():
    done = _fresh("""
        import sys
        from crossnn.cli import main
        code = main(["list"])
        print("IMPORTED" if "jax" in sys.modules else "NOT IMPORTED")
        sys.exit(code)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["jax"])
    assert "yes" in row and "jit, eager, scan, xp" in row and "cpu" in row
    assert done.stdout.strip().endswith("NOT IMPORTED")


BLOCK_JAX = """
    import sys

    class Hidden:
        '''Delegates to a finder, except that jax, jaxlib and optax are not there.'''
        def __init__(self, finder):
            self.finder = finder
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("jax", "jaxlib", "optax"):
                return None
            find = getattr(self.finder, "find_spec", None)
            return find(name, path, target) if find else None
        def __getattr__(self, attribute):
            return getattr(self.finder, attribute)

    sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
"""


def test_without_jax_everything_else_runs_and_jax_is_listed_unavailable():
    done = _fresh(BLOCK_JAX, """
        import importlib.util
        assert importlib.util.find_spec("jax") is None
        try:
            import jax
        except ImportError:
            pass
        else:
            raise SystemExit("jax imported")
        from crossnn.cli import main
        assert main(["list"]) == 0
        assert main(["run", "linear-2x3", "--backends", "numpy", "--quiet"]) == 0
        print("RUN", main(["run", "linear-2x3", "--backends", "jax", "--quiet"]))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["jax"])
    assert " no " in row and "jax is not installed (pip install 'crossnn[jax]')" in row
    assert "parity: PASS" in done.stdout or "numpy" in done.stdout
    assert "RUN 2" in done.stdout and "backend 'jax' is unavailable: jax is not installed" in done.stderr


# ---- facts: measured, and as the catalog states them ----------------------------------------------


def test_facts_measure_optax_and_jax_defaults():
    facts = backends.get("jax").facts()
    json.dumps(facts)  # plain Python
    adam = facts["adam_step"]
    assert adam["w"] == pytest.approx(adam["eps_on_corrected"], rel=1e-14)  # PyTorch's placement, not Keras'
    assert abs(adam["w"] - adam["eps_on_uncorrected"]) > 1e-3
    assert facts["adam_defaults"] == {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0}
    assert 1e-6 < facts["adam_float32_bias_correction"]["relative_error"] < 1e-4  # 0.999 rounded to float32
    for rule in ("rmsprop_step", "adagrad_step"):
        assert facts[rule]["w"] == pytest.approx(facts[rule]["eps_inside"], rel=1e-14)
        assert facts[rule]["w"] != pytest.approx(facts[rule]["eps_outside"], rel=1e-6)
    assert facts["rmsprop_defaults"]["eps_in_sqrt"] is True
    assert facts["x64"]["enable_x64"] is False and facts["x64"]["default_float"] == "float32"
    assert facts["x64"]["float64_input_becomes"] == "float32"
    assert facts["momentum_first_step"] == pytest.approx({"w": 0.8, "buffer": 2.0, "w2": 0.762})
    randoms = facts["random"]
    assert randoms["same_key_same_numbers"] and randoms["split_key_differs"] and not randoms["global_seed_function"]
    assert randoms["key0"] != np.random.default_rng(0).random(3).tolist()
    init = facts["dense_init"]
    assert init["kernel_max_abs"] <= init["truncation_bound"] and abs(init["kernel_std"] - 0.1) < 0.01
    precision = facts["matmul_precision"]
    assert precision["process_default"] is None and precision["float32_error_highest"] < 1e-5
    if precision["gpu"]:  # TF32 under "default" on NVIDIA GPUs from Ampere on
        assert precision["float32_error_default"] > 10 * precision["float32_error_highest"]
    assert facts["same_padding_stride2"] == [[0, 1]]  # the extra pixel after, as TensorFlow
    assert facts["conv_default_dimension_numbers"] == "NCHW/OIHW"
    assert facts["gelu_default_approximate"] is True and facts["leaky_relu_grad_at_0"] == 1.0
    assert facts["clip_at_max_norm"] == pytest.approx([3.0, 4.0]) and facts["default_lr"]["adam"] is None


def test_catalog_sides_and_preset_are_plain_data_that_need_no_jax():
    done = _fresh("""
        import sys
        from crossnn_jax.facts import CATALOG_DEFAULTS, CATALOG_SIDES
        print(len(CATALOG_SIDES), "jax" in sys.modules)
    """)
    from crossnn_jax.facts import CATALOG_DEFAULTS, CATALOG_SIDES

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(len(CATALOG_SIDES)), "False"]
    from crossnn.differences import BY_ID

    assert set(BY_ID) <= set(CATALOG_SIDES) and set(CATALOG_DEFAULTS) <= set(BY_ID)
    assert all(isinstance(text, str) and "\n" not in text and text for text in CATALOG_SIDES.values())
    assert set(backends.get("jax").native_entries) <= set(CATALOG_SIDES)


def test_the_jax_preset_is_what_jax_and_optax_default_to(monkeypatch):
    """Wired in as a plugin would (Backend.catalog_sides / catalog_defaults), `defaults = "jax"` fills
    each field with the value the installed jax.nn and optax use."""
    import inspect

    import jax
    import optax

    from crossnn_jax import JaxBackend
    from crossnn_jax.facts import CATALOG_DEFAULTS, CATALOG_SIDES

    assert JaxBackend.catalog_sides is CATALOG_SIDES  # the catalog's JAX column is wired in; the preset is opt-in
    monkeypatch.setattr(JaxBackend, "catalog_defaults", CATALOG_DEFAULTS)

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    adam = S.make(S.Adam, lr=0.1, defaults="jax")
    assert adam.eps == default(optax.adam, "eps")
    assert S.make(S.AdamW, lr=0.1, defaults="jax").weight_decay == default(optax.adamw, "weight_decay")
    rms = S.make(S.RMSprop, lr=0.1, defaults="jax")
    assert (rms.alpha, rms.eps) == (default(optax.rmsprop, "decay"), default(optax.rmsprop, "eps"))
    ada = S.make(S.Adagrad, lr=0.1, defaults="jax")
    assert (ada.initial_accumulator, ada.eps) == (default(optax.adagrad, "initial_accumulator_value"),
                                                  default(optax.adagrad, "eps"))
    assert S.make(S.LeakyReLU, defaults="jax").negative_slope == default(jax.nn.leaky_relu, "negative_slope")
    assert (S.make(S.GELU, defaults="jax").approximate == "tanh") == default(jax.nn.gelu, "approximate")
    assert S.make(S.CrossEntropy, sparse=True, defaults="jax").from_logits is True
    dense = S.make(S.Dense, units=50, defaults="jax")
    assert isinstance(dense.bias_init, S.Zeros)
    # the spec's truncated variance scaling draws what jax.nn.initializers.lecun_normal draws
    ours = dense.kernel_init.sample(np.random.default_rng(0), (400, 500), 400, 500)
    flax = np.asarray(jax.nn.initializers.lecun_normal()(jax.random.key(0), (400, 500)))
    assert abs(ours.std() - flax.std()) < 2e-3 and abs(np.abs(ours).max() - np.abs(flax).max()) < 2e-3
    table = S.make(S.Embedding, input_dim=300, output_dim=40, defaults="jax").embeddings_init
    ours = table.sample(np.random.default_rng(0), (300, 40), 300, 40)
    embed = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)  # flax.linen.Embed's
    theirs = np.asarray(embed(jax.random.key(0), (300, 40)))
    assert abs(ours.std() / theirs.std() - 1.0) < 0.03 and abs(ours.std() - 1 / np.sqrt(40)) < 0.01


@pytest.mark.parametrize("strides, pads, dilation, shape, kernel", [
    ((2, 2), ((1, 2), (1, 2)), (1, 1), (2, 9, 10, 3), (3, 4)),
    ((1, 2), ((0, 0), (0, 0)), (2, 1), (2, 11, 9, 2), (2, 3)),
    ((3, 1), ((2, 2), (0, 1)), (1, 2), (3, 8, 7, 2), (5, 2))])
def test_scan_modes_convolution_has_autodiffs_gradients(strides, pads, dilation, shape, kernel):
    """loop_conv2d (the scan mode's convolution: its gradients written as canonical NHWC/HWIO
    convolutions, which XLA's CPU compiler runs fast inside loops) against autodiff of
    lax.conv_general_dilated, for strides, asymmetric padding and dilations."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from crossnn_jax.ops import NHWC, loop_conv2d

    x, w = RNG.standard_normal(shape), RNG.standard_normal((*kernel, shape[3], 4))
    with jax.enable_x64(True):
        def plain(x, w):
            return jnp.sum(jnp.tanh(lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation,
                                                             dimension_numbers=NHWC)))

        def looped(x, w):
            return jnp.sum(jnp.tanh(loop_conv2d(x, w, strides, pads, dilation)))

        expected, got = jax.grad(plain, (0, 1))(x, w), jax.grad(looped, (0, 1))(x, w)
        for a, b in zip(got, expected):
            assert a.shape == b.shape and _rel(np.asarray(a), np.asarray(b)) <= 1e-13


def test_threads_are_xlas_pool_and_cannot_change_in_a_running_process(monkeypatch, capsys):
    backend = backends.get("jax")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=3")
    assert backend.threads() == 3
    backend.set_threads(3)  # already so
    with pytest.raises(BackendError, match="intra_op_parallelism_threads=2"):
        backend.set_threads(2)
    monkeypatch.delenv("XLA_FLAGS")
    import os

    assert backend.threads() == len(os.sched_getaffinity(0))
    from crossnn.cli import main  # on the command line the refusal names the option

    other = str(len(os.sched_getaffinity(0)) + 1)
    assert main(["run", "linear-2x3", "--backends", "jax", "--threads", other, "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("crossnn: error: --threads: backend 'jax' cannot change its thread count")
