"""The JAX backend end to end: every example in every mode against the NumPy float64 reference,
training state that moves between all four frameworks, JAX's own checkpoint file, emitted scripts
that reproduce the run, the native flavour (optax's and Flax's defaults), and float32 within the
envelope."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import crossnn
from crossnn import backends, examples
from crossnn import spec as S
from crossnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from crossnn.cli import main
from crossnn.data import load_dataset
from crossnn.errors import UnsupportedFeature
from crossnn.harness import RunSpec, train
from crossnn.params import initial_parameters
from crossnn.parity import compare
from crossnn.plan import BatchPlan
from crossnn.spec import ParamInit
from crossnn_numpy import ops as numpy_ops
from crossnn_numpy.optimizers import Rule as NumpyRule

pytestmark = pytest.mark.skipif("jax" not in backends.available(), reason="the jax backend is unavailable")

MODES = ("jit", "eager", "scan", "xp")
#: steps of each example these tests train (every example in full: by hand, see the closing note of issue 16)
SHORT = 6


def _worst(got: dict, expected: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(got[k]) - v)) / max(float(np.max(np.abs(v))), 1e-300))
               for k, v in expected.items())


def _example(name: str) -> S.Experiment:
    """An example cut to one epoch (the reference trains the whole plan even when the runs stop early)."""
    e = crossnn.example(name)
    return dataclasses.replace(e, train=dataclasses.replace(e.train, epochs=1))


SLOW_EXAMPLES = ("digits", "digits-cnn", "digits-bn", "resnet-mini", "token-sums")  # 8-19 s each here: -m slow


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_EXAMPLES else name
                                  for name in examples.names()])
def test_every_example_in_every_mode_agrees_with_the_reference(name):
    e = _example(name)
    result = train(e, [RunSpec("jax", "float64", "cpu", mode) for mode in MODES], snapshot_every=1,
                   stop_after=min(SHORT, BatchPlan.for_experiment(e, load_dataset(e).n).steps))
    for record in result.records:
        assert record.ok, f"{record.spec.label}: {record.message}"
        parity = compare(result.reference, record)
        assert parity.passed, f"{name} {record.spec.mode}: max rel {parity.max_rel:.2e}"


@pytest.mark.parametrize("name", ["two-tower", "digits-cnn"])
def test_float32_stays_within_the_envelope(name):
    """two-tower in full, digits-cnn's first epoch (34 Adam steps)."""
    e = crossnn.example(name) if name == "two-tower" else _example(name)
    result = train(e, [RunSpec("jax", "float32", "cpu", mode) for mode in ("jit", "scan")])
    for record in result.records:
        assert record.ok and compare(result.reference, record).passed, record.spec.label


# ---- training state across the four frameworks ----------------------------------------------------


DENSE = dict(kernel_init=S.GlorotUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))
RESUME = S.Experiment(
    name="resume", seed=7, data=S.RandomNormal(n=20, inputs=3, outputs=2),
    model=S.Model(inputs=3, layers=(S.Dense(name="h", units=5, activation=S.Tanh(), **DENSE),
                                    S.Dropout(name="drop", rate=0.25), S.Dense(name="out", units=2, **DENSE))),
    loss=S.MSE(), optimizer=S.RMSprop(lr=0.01, alpha=0.9, eps=1e-8, momentum=0.5, centered=True,
                                      weight_decay=0.01, weight_decay_kind="l2",
                                      schedule=S.StepDecay(unit="epoch", step_size=2, gamma=0.5)),
    train=S.Train(epochs=5, batch_size=6, shuffle=True))


@pytest.mark.parametrize("optimizer, everywhere", [
    (RESUME.optimizer, True), (S.Adagrad(lr=0.1, initial_accumulator=0.1, eps=1e-10), False),
    (S.AdamW(lr=0.01, eps=1e-8, weight_decay=0.1), False)], ids=["rmsprop", "adagrad", "adamw"])
def test_stop_anywhere_resume_in_jax_and_back_equals_never_stopping(optimizer, everywhere, tmp_path):
    """Stopped after 7 steps in every backend (the jax modes included), saved, resumed in every jax mode;
    and stopped in jax, resumed in every backend: the end equals one uninterrupted reference run. (The
    other rules go through NumPy and jax's jit mode only: the slots are what differs.)"""
    e = dataclasses.replace(RESUME, optimizer=optimizer)
    others = [name for name in backends.available() if name != "jax"] if everywhere else ["numpy"]
    sources = [RunSpec(name, "float64") for name in others]
    sources += [RunSpec("jax", "float64", "cpu", mode) for mode in (("jit", "scan", "xp") if everywhere else ("jit",))]
    stopped = train(e, sources, stop_after=7)
    for source in stopped.records:
        assert source.ok, source.message
        path = tmp_path / "state.npz"
        save_checkpoint(path, e, source.final_state)
        _, state = load_checkpoint(path, e)
        assert state.step == 7 and set(state.slots) == set(e.optimizer.state_slots())
        targets = [RunSpec("jax", "float64", "cpu", mode) for mode in MODES] if source.spec.backend != "jax" \
            else [RunSpec(name, "float64") for name in others]
        result = train(e, targets, resume=state)
        for record in result.records:
            assert record.ok and compare(result.reference, record).passed, \
                f"stopped in {source.spec.label}, resumed in {record.spec.label}"


def test_state_at_step_zero_holds_zero_slots_and_counters():
    trainer = backends.get("jax").build(RESUME, initial_parameters(RESUME), load_dataset(RESUME), dtype="float64",
                                        device="cpu", mode="jit")
    state = trainer.state()
    assert state.step == 0 and state.counters == {"step": 0}
    assert set(state.slots) == {"square_avg", "grad_avg", "momentum_buffer"}
    assert all(np.all(v == 0) for per in state.slots.values() for v in per.values())


# ---- JAX's own file ----------------------------------------------------------------------------------


def test_native_file_round_trips_and_resumes(tmp_path):
    backend = backends.get("jax")
    record = train(RESUME, [RunSpec("jax", "float64", "cpu", "scan")], stop_after=9).records[0]
    state = record.final_state
    path = tmp_path / "state.npz"
    holds = backend.export_native(RESUME, state, path)
    assert "optax" in holds and "step 9" in holds
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        assert "params/h/kernel" in keys and str(archive["format"]) == "crossnn-jax-1"
        assert "optax.scale_by_stddev" in str(archive["optimizer"])
        trace = [k for k in keys if k.startswith("opt_state/") and k.endswith(".trace['h/kernel']")]
        assert len(trace) == 1
        np.testing.assert_array_equal(archive[trace[0]], state.slots["momentum_buffer"]["h/kernel"])
    back = backend.import_native(RESUME, path)
    assert back.step == 9 and back.counters == state.counters and set(back.slots) == set(state.slots)
    assert _worst(back.params, state.params) == 0.0
    for slot in state.slots:
        assert _worst(back.slots[slot], state.slots[slot]) == 0.0
    result = train(RESUME, [RunSpec("jax", "float64", "cpu", "jit")], resume=back)
    assert compare(result.reference, result.records[0]).passed
    other = dataclasses.replace(RESUME, optimizer=S.Adam(lr=0.01, eps=1e-8))
    with pytest.raises(CheckpointError, match="missing key 'opt_state/"):
        backend.import_native(other, path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        backend.import_native(RESUME, tmp_path / "bad.npz")


def test_cli_export_and_import_through_the_jax_file(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(S.dumps(crossnn.example("two-tower")))
    checkpoint, native, back = tmp_path / "ckpt.npz", tmp_path / "jax.npz", tmp_path / "back.npz"
    assert main(["run", str(spec), "--backends", "jax", "--stop-after", "5", "--save", str(checkpoint),
                 "--quiet"]) == 0
    assert main(["export", str(checkpoint), "--backend", "jax", "--out", str(native)]) == 0
    assert main(["import", str(native), "--backend", "jax", "--spec", str(spec), "--out", str(back)]) == 0
    _, a = load_checkpoint(checkpoint)
    _, b = load_checkpoint(back)
    assert a.step == b.step == 5 and _worst(b.params, a.params) == 0.0 and a.counters == b.counters


# ---- emitted scripts ------------------------------------------------------------------------------------

SCRIPTED = {
    "cnn": S.Experiment(
        name="cnn", seed=4, data=S.Textures(n=24, size=8),
        model=S.Model(inputs=[8, 8, 3], layers=(
            S.Conv2D(name="c", filters=4, kernel_size=3, strides=2, padding="same", activation=S.ReLU(),
                     kernel_init=S.HeUniform(), bias_init=S.Zeros()),
            S.BatchNorm(name="bn", momentum=0.9, epsilon=1e-3, running_variance="unbiased"),
            S.Dropout(name="drop", rate=0.2),
            S.AvgPool2D(name="p", pool_size=3, strides=1, padding="same", count_padding=False),
            S.GlobalAvgPool2D(name="g"), S.Dense(name="out", units=4, **DENSE))),
        loss=S.CrossEntropy(from_logits=True, sparse=True),
        optimizer=S.Adagrad(lr=0.05, initial_accumulator=0.1, eps=1e-10, clip_norm=1.0),
        train=S.Train(epochs=2, batch_size=8, shuffle=True)),
    "gru": S.Experiment(
        name="gru", seed=5, data=S.TokenSums(n=16, length=5, vocab=6),
        model=S.Model(inputs=[5], layers=(
            S.Embedding(name="e", input_dim=6, output_dim=3, embeddings_init=S.Normal(mean=0.0, stddev=0.5)),
            S.GRU(name="r", units=4, return_sequences=True, reset_after=False, kernel_init=S.GlorotUniform(),
                  recurrent_init=S.Orthogonal(), bias_init=S.Normal(mean=0.0, stddev=0.1)),
            S.LayerNorm(name="ln", epsilon=1e-5),
            S.SimpleRNN(name="s", units=3, kernel_init=S.GlorotUniform(), recurrent_init=S.Orthogonal(),
                        bias_init=S.Zeros()),
            S.Dense(name="out", units=2, activation=S.Softmax(), **DENSE))),
        loss=S.CrossEntropy(from_logits=False, sparse=True, log_min=-100.0),
        optimizer=S.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, weight_decay_kind="decoupled"),
        train=S.Train(epochs=2, batch_size=5)),
}


@pytest.mark.parametrize("name", list(SCRIPTED))
def test_emitted_script_reproduces_the_run(name, tmp_path):
    e = SCRIPTED[name]
    data = load_dataset(e)
    code = backends.get("jax").script(e, initial_parameters(e), data, side_file="arrays.npz")
    from crossnn.codegen import side_arrays

    np.savez(tmp_path / "arrays.npz", **side_arrays(data, initial_parameters(e)))
    (tmp_path / "train.py").write_text(code)
    done = subprocess.run([sys.executable, str(tmp_path / "train.py")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    result = train(e, [RunSpec("jax", "float64", "cpu", "jit")])
    expected = result.records[0].final_params
    assert set(got) == set(expected) and _worst(got, expected) <= 1e-9
    assert compare(result.reference, result.records[0]).passed
    assert "@jax.jit" in code and "jax.value_and_grad" in code and "optax.chain(" in code
    assert code.index("def model(") < code.index("def main():") < code.index("def load_data():")


def test_side_by_side_has_a_jax_column(capsys):
    assert main(["code", "digits-cnn", "--side-by-side", "--backends", "numpy,jax", "--width", "160"]) == 0
    out = capsys.readouterr().out
    assert "JAX" in out.splitlines()[0] and "lax.conv_general_dilated" in out


# ---- the native flavour ----------------------------------------------------------------------------------


def test_native_default_init_is_flax_lecun_normal_from_the_seed():
    e = dataclasses.replace(SCRIPTED["cnn"], optimizer=S.SGD(lr=0.01))
    backend = backends.get("jax")
    first = backend.build(e, initial_parameters(e), load_dataset(e), dtype="float64", device="cpu", mode="jit",
                          native=frozenset({"default-init"})).parameters()
    again = backend.build(e, initial_parameters(e), load_dataset(e), dtype="float64", device="cpu", mode="scan",
                          native=frozenset({"default-init"})).parameters()
    assert _worst(again, first) == 0.0  # the same key, the same numbers
    spec_start = initial_parameters(e)
    assert _worst(first, {k: v for k, v in spec_start.items() if k.endswith("kernel")}) > 0.1
    fan_in = 3 * 3 * 3
    bound = 2.0 / np.sqrt(fan_in) / 0.87962566103423978  # lecun_normal: truncated at 2 sigma
    assert 0 < np.max(np.abs(first["c/kernel"])) <= bound and np.all(first["c/bias"] == 0.0)
    assert np.all(first["bn/gamma"] == 1.0) and np.all(first["out/bias"] == 0.0)


def test_native_flavour_runs_optax_defaults_and_drifts_where_they_differ():
    e = dataclasses.replace(RESUME, optimizer=S.RMSprop(lr=0.01, alpha=0.9, eps=1e-4), model=dataclasses.replace(
        RESUME.model, layers=(S.Dense(name="h", units=5, activation=S.GELU(approximate="none"), **DENSE),
                              S.Dense(name="out", units=2, activation=S.LeakyReLU(negative_slope=0.1), **DENSE))))
    for entry in ("rmsprop", "gelu-approximation"):
        result = train(e, [RunSpec("jax", "float64", "cpu", "jit", native=frozenset({entry}))])
        assert result.records[0].ok and not compare(result.reference, result.records[0]).passed, entry
    with pytest.raises(UnsupportedFeature, match="native flavour in the xp mode"):
        backends.get("jax").build(e, initial_parameters(e), load_dataset(e), dtype="float64", device="cpu",
                                  mode="xp", native=frozenset({"rmsprop"}))


# ---- a user's own layer and optimizer, registered from user code --------------------------------------

@dataclass(frozen=True, kw_only=True)
class Scale(S.Layer, kind="scale_jax_test"):
    """y = x ⊙ gain + shift over the last axis; gain and shift (features,) start at 1 and 0."""

    def output_shape(self, input_shapes):
        return input_shapes[0]

    def parameters(self, input_shapes):
        n = input_shapes[0][-1]
        return (ParamInit("gain", (n,), S.Ones(), n, n), ParamInit("shift", (n,), S.Zeros(), n, n))


@dataclass(frozen=True, kw_only=True)
class SignSGD(S.Optimizer, kind="sign_sgd_jax_test"):
    """w ← w - lr · sign(g) (no state)."""


@numpy_ops.OPS.register(Scale)
class NumpyScale(numpy_ops.Op):
    def forward(self, p, inputs, mask=None):
        return inputs[0] * p["gain"] + p["shift"], inputs[0]

    def backward(self, p, x, dy, need):
        return (dy * p["gain"] if need[0] else None,), {"gain": self.xp.sum(dy * x, axis=0),
                                                        "shift": self.xp.sum(dy, axis=0)}


@numpy_ops.OPS.register(SignSGD)
class NumpySignSGD(NumpyRule):
    def update(self, u, state, params):
        return [self.xp.sign(g) for g in u], state


def _jax_extensions():
    """The jax entries: a layer with its script line, a rule as an optax stage (optax has its sign)."""
    import optax

    from crossnn_jax import ops as jax_ops
    from crossnn_jax.optimizers import Stage

    @jax_ops.OPS.register(Scale)
    class JaxScale(jax_ops.Layer):
        def __call__(self, p, inputs, mask=None):
            return inputs[0] * p["gain"] + p["shift"]

        def code(self, ins, out):
            return [f'{out} = {ins[0]} * params["{self.node.name}/gain"] + params["{self.node.name}/shift"]']

    @jax_ops.OPS.register(SignSGD)
    def sign_sgd(s, native):
        return [Stage(optax.scale_by_sign, {})]


def test_a_users_layer_and_optimizer_lower_through_the_registry_in_every_mode():
    _jax_extensions()
    e = dataclasses.replace(RESUME, optimizer=SignSGD(lr=0.01), model=S.Model(inputs=3, layers=(
        S.Dense(name="h", units=4, activation=S.Tanh(), **DENSE), Scale(name="scale"),
        S.Dense(name="out", units=2, **DENSE))))
    result = train(e, [RunSpec("jax", "float64", "cpu", mode) for mode in MODES])
    for record in result.records:
        assert record.ok and compare(result.reference, record).passed, record.spec.label
    code = backends.get("jax").script(e, initial_parameters(e), load_dataset(e))
    assert 'v_scale = v_h * params["scale/gain"] + params["scale/shift"]' in code and "optax.scale_by_sign()" in code
