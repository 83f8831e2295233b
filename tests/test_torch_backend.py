"""The PyTorch backend against two independent references: training loops written by hand the way
PyTorch's tutorials write them, and the NumPy float64 reference backend. Every mode (eager, xp,
compile) is held to float64 parity; the compile tests train only a few steps, because compiling
takes seconds per model."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import crossnn  # noqa: E402
from crossnn import backends, spec  # noqa: E402
from crossnn.data import load_dataset  # noqa: E402
from crossnn.errors import BackendError, UnsupportedFeature  # noqa: E402
from crossnn.harness import RunSpec, train  # noqa: E402
from crossnn.params import cast, initial_parameters  # noqa: E402
from crossnn.parity import compare  # noqa: E402
from crossnn.plan import BatchPlan  # noqa: E402

pytestmark = pytest.mark.skipif("torch" not in backends.available(), reason="the torch backend is unavailable")



@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: these models are tiny, and a second thread that has to wait for a busy
    core makes every step several times slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EXAMPLES = ("adder", "line", "linear-2x3", "two-tower", "circle")
FLOAT32_EXAMPLES = ("linear-2x3", "two-tower")


# ---- the oracles: each seed experiment written by hand, as a PyTorch tutorial writes it ----------


class TwoTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense1 = nn.Linear(2, 1)
        self.dense2 = nn.Linear(2, 2)
        self.dense3 = nn.Linear(3, 1)

    def forward(self, x):
        return self.dense3(torch.cat([self.dense1(x), self.dense2(x)], dim=1))


def oracle_setup(name):
    """(model, {layer name: its nn.Linear}, loss module, optimizer factory), hand-written from the
    example's TOML file."""
    if name == "adder":
        model = nn.Sequential(nn.Linear(2, 1))
        return model, {"dense": model[0]}, nn.MSELoss(), lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999),
                                                                                      eps=1e-8)
    if name == "line":
        model = nn.Sequential(nn.Linear(1, 1))
        return model, {"linear": model[0]}, nn.MSELoss(), lambda p: torch.optim.SGD(p, lr=0.1)
    if name == "linear-2x3":
        model = nn.Sequential(nn.Linear(3, 1))
        return model, {"fc": model[0]}, nn.MSELoss(), lambda p: torch.optim.SGD(p, lr=0.01)
    if name == "two-tower":
        model = TwoTower()
        layers = {"dense1": model.dense1, "dense2": model.dense2, "dense3": model.dense3}
        return model, layers, nn.MSELoss(), lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    if name == "circle":
        model = nn.Sequential(nn.Linear(2, 5), nn.Sigmoid(), nn.Linear(5, 1), nn.Sigmoid())
        return model, {"fc1": model[0], "fc2": model[2]}, nn.BCELoss(), lambda p: torch.optim.SGD(p, lr=0.5,
                                                                                                   momentum=0.8)
    raise KeyError(name)


@dataclass
class OracleRun:
    params: dict[str, np.ndarray]
    losses: np.ndarray


@lru_cache(maxsize=None)
def oracle(name) -> OracleRun:
    """The hand-written loop, float64, from crossnn's initial parameters, data and batch plan."""
    experiment = crossnn.example(name)
    data = load_dataset(experiment)
    plan = BatchPlan.for_experiment(experiment, data.n)
    model, linears, loss_fn, make_optimizer = oracle_setup(name)
    model = model.double()
    params0 = initial_parameters(experiment)
    with torch.no_grad():
        for layer, linear in linears.items():
            linear.weight.copy_(torch.from_numpy(params0[f"{layer}/kernel"].T))
            linear.bias.copy_(torch.from_numpy(params0[f"{layer}/bias"]))
    optimizer = make_optimizer(model.parameters())
    X, Y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    losses = []
    for step in range(plan.steps):
        idx = torch.from_numpy(plan.batch(step))
        xb, yb = X[idx], Y[idx]
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    params = {}
    for layer, linear in linears.items():
        params[f"{layer}/kernel"] = linear.weight.detach().numpy().T.copy()
        params[f"{layer}/bias"] = linear.bias.detach().numpy().copy()
    return OracleRun(params, np.array(losses))


@lru_cache(maxsize=None)
def harness_run(name):
    """crossnn's torch float64 (and, for some examples, float32) lowerings beside the NumPy reference."""
    runs = [RunSpec("torch", "float64")] + ([RunSpec("torch", "float32")] if name in FLOAT32_EXAMPLES else [])
    return train(crossnn.example(name), runs)


def rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("name", EXAMPLES)
def test_oracle_loop_matches_crossnn_torch(name):
    result = harness_run(name)
    record = result.records[0]
    assert record.ok, record.message
    expected = oracle(name)
    got = record.final_params
    assert list(got) == list(initial_parameters(result.experiment))
    for param in got:
        # the same kernels in the same order: equal to the last bit
        np.testing.assert_array_equal(got[param], expected.params[param], err_msg=param)
    np.testing.assert_array_equal(record.losses, expected.losses)


@pytest.mark.parametrize("name", EXAMPLES)
def test_float64_matches_numpy_reference_at_every_snapshot(name):
    result = harness_run(name)
    record = result.records[0]
    parity = compare(result.reference, record)
    assert parity.complete and record.steps_done == result.plan.steps
    assert parity.passed, parity.to_json()
    worst = {p.name: p.max_rel for p in parity.params}
    print(f"{name}: torch float64 vs numpy, max rel per parameter {worst}")
    assert max(worst.values()) <= 1e-9
    assert parity.loss_max_abs <= 1e-9 * max(1.0, float(np.max(np.abs(result.reference.losses))))
    assert record.metrics == pytest.approx(result.reference.metrics)


@pytest.mark.parametrize("name", FLOAT32_EXAMPLES)
def test_float32_within_1e5_of_numpy_float64(name):
    result = harness_run(name)
    record = result.records[1]
    assert record.spec.dtype == "float32" and record.ok
    for step, ref in result.reference.snapshots.items():
        for param, value in ref.items():
            assert np.max(np.abs(record.snapshots[step][param] - value)) <= 1e-5, (step, param)
    assert compare(result.reference, record).passed


def test_linear_2x3_known_result():
    final = harness_run("linear-2x3").records[0].final_params
    np.testing.assert_allclose(final["fc/kernel"][:, 0], [0.40784463, 1.19106518, 1.97428573], rtol=0, atol=1e-8)
    np.testing.assert_allclose(final["fc/bias"], [0.78322055], rtol=0, atol=1e-8)


# ---- building trainers directly ---------------------------------------------------------------


def build(experiment, dtype="float64", data=None, device="cpu", mode="eager"):
    backend = backends.get("torch")
    backend.prepare()
    data = data or load_dataset(experiment)
    return backend.build(experiment, cast(initial_parameters(experiment), dtype), data, dtype=dtype,
                         device=device, mode=mode)


def run_to_end(trainer, experiment):
    plan = BatchPlan.for_experiment(experiment, load_dataset(experiment).n)
    losses = trainer.run(plan.batches(0, plan.steps))
    return trainer.parameters(), losses


def test_same_spec_twice_is_bit_identical():
    experiment = dataclasses.replace(crossnn.example("two-tower"),
                                     train=spec.Train(epochs=40, batch_size=3, shuffle=True))
    first = run_to_end(build(experiment), experiment)
    second = run_to_end(build(experiment), experiment)
    for name in first[0]:
        assert first[0][name].tobytes() == second[0][name].tobytes(), name
    assert first[1].tobytes() == second[1].tobytes()
    assert not np.array_equal(first[0]["dense3/kernel"], initial_parameters(experiment)["dense3/kernel"])


def test_step_and_run_agree_and_parameters_are_canonical():
    experiment = crossnn.example("circle")
    plan = BatchPlan.for_experiment(experiment, load_dataset(experiment).n)
    stepped, spanned = build(experiment), build(experiment)
    losses = [stepped.step(b) for b in plan.batches(0, 30)]
    np.testing.assert_array_equal(spanned.run(plan.batches(0, 30)), losses)
    params = spanned.parameters()
    assert params["fc1/kernel"].shape == (2, 5) and params["fc1/kernel"].flags.c_contiguous
    params["fc1/kernel"][:] = 0  # a copy, not a view of the model's weight
    assert np.any(spanned.parameters()["fc1/kernel"] != 0)


def test_printed_model_reads_like_pytorch():
    circle = str(build(crossnn.example("circle")).model)
    assert circle.startswith("Sequential(")
    assert "Linear(in_features=2, out_features=5, bias=True)" in circle
    assert "Linear(in_features=5, out_features=1, bias=True)" in circle
    assert circle.count("Sigmoid()") == 2
    tower = str(build(crossnn.example("two-tower")).model)
    assert "(dense1): Linear(in_features=2, out_features=1, bias=True)" in tower
    assert "(dense2): Linear(in_features=2, out_features=2, bias=True)" in tower
    assert "(dense3): Linear(in_features=3, out_features=1, bias=True)" in tower


# ---- every lowered feature against the NumPy reference -------------------------------------------


def feature_experiment(*, act=spec.Tanh(), loss=spec.MSE(), opt=spec.SGD(lr=0.05), classes=2, out_act=spec.Linear(),
                       targets="values", use_bias=True, extra=()):
    """A small shuffled two-layer net on inline data; `targets`: values, binary, labels or onehot."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 3))
    y = {"values": lambda: rng.normal(size=(12, classes)),
         "binary": lambda: (rng.random((12, classes)) < 0.5).astype(float),
         "labels": lambda: rng.integers(0, classes, size=12).astype(float),
         "onehot": lambda: np.eye(classes)[rng.integers(0, classes, size=12)]}[targets]()
    bias_init = spec.Uniform(low=-0.5, high=0.5) if use_bias else spec.Zeros()
    layers = (spec.Dense(name="hidden", units=4, activation=act, use_bias=use_bias, kernel_init=spec.GlorotUniform(),
                         bias_init=bias_init),
              *extra,
              spec.Dense(name="out", units=classes, activation=out_act, kernel_init=spec.GlorotUniform(),
                         bias_init=spec.Zeros()))
    return spec.Experiment(name="feature", seed=3, data=spec.InlineData(x=x.tolist(), y=y.tolist()),
                           model=spec.Model(inputs=3, layers=layers), loss=loss, optimizer=opt,
                           train=spec.Train(epochs=30, batch_size=5, shuffle=True))


FEATURES = {
    "relu": dict(act=spec.ReLU()),
    "leaky_relu": dict(act=spec.LeakyReLU(negative_slope=0.1)),
    "sigmoid": dict(act=spec.Sigmoid()),
    "softplus": dict(act=spec.Softplus()),
    "gelu": dict(act=spec.GELU(approximate="none")),
    "gelu_tanh": dict(act=spec.GELU(approximate="tanh")),
    "no_bias": dict(use_bias=False),
    "activation_layer": dict(act=spec.Linear(), extra=(spec.ActivationLayer(name="act", activation=spec.Tanh()),)),
    "mae": dict(loss=spec.MAE()),
    "huber": dict(loss=spec.Huber(delta=0.5)),
    "bce": dict(loss=spec.BCE(log_min=-100.0), out_act=spec.Sigmoid(), targets="binary"),
    "bce_log_min_50": dict(loss=spec.BCE(log_min=-50.0), out_act=spec.Sigmoid(), targets="binary"),
    "bce_logits": dict(loss=spec.BCELogits(), targets="binary"),
    "ce_logits_sparse": dict(loss=spec.CrossEntropy(from_logits=True, sparse=True), classes=3, targets="labels"),
    "ce_logits_onehot": dict(loss=spec.CrossEntropy(from_logits=True, sparse=False), classes=3, targets="onehot"),
    "ce_probs_sparse": dict(loss=spec.CrossEntropy(from_logits=False, sparse=True, log_min=-100.0), classes=3,
                            out_act=spec.Softmax(), targets="labels"),
    "ce_probs_onehot": dict(loss=spec.CrossEntropy(from_logits=False, sparse=False, log_min=-30.0), classes=3,
                            out_act=spec.Softmax(), targets="onehot"),
    "sgd_momentum_decay": dict(opt=spec.SGD(lr=0.05, momentum=0.5, weight_decay=0.1, weight_decay_kind="l2")),
    "sgd_nesterov_decay": dict(opt=spec.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01,
                                            weight_decay_kind="l2")),
    "adam_decay": dict(opt=spec.Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05,
                                     weight_decay_kind="l2")),
}


@pytest.mark.parametrize("mode", ["eager", "xp"])
@pytest.mark.parametrize("feature", FEATURES)
def test_feature_matches_numpy_reference(feature, mode):
    result = train(feature_experiment(**FEATURES[feature]), [RunSpec("torch", "float64", "cpu", mode)],
                   snapshot_every=1)
    parity = compare(result.reference, result.records[0])
    assert parity.passed, parity.to_json()
    assert parity.max_rel <= 1e-12 and parity.loss_max_abs <= 1e-12


def test_graph_with_activations_and_awkward_names_matches_numpy_reference():
    base = feature_experiment()
    init = dict(kernel_init=spec.GlorotUniform(), bias_init=spec.Uniform(low=-0.5, high=0.5))
    layers = (spec.Dense(name="tower.a", units=3, activation=spec.Tanh(), inputs=("input",), **init),
              spec.Dense(name="forward", units=2, activation=spec.Sigmoid(), inputs=("input",), **init),
              spec.Concatenate(name="join", inputs=("forward", "tower.a")),
              spec.ActivationLayer(name="squash", activation=spec.ReLU()),
              spec.Dense(name="out", units=2, **init))
    experiment = dataclasses.replace(base, model=spec.Model(inputs=3, layers=layers))
    printed = str(build(experiment).model)
    assert "(tower_a): Sequential(" in printed and "(forward_): Sequential(" in printed
    assert "(join): Concatenate(dim=1)" in printed and "(squash): ReLU()" in printed
    result = train(experiment, [RunSpec("torch", "float64"), RunSpec("torch", "float64", "cpu", "xp")],
                   snapshot_every=1)
    for record in result.records:
        parity = compare(result.reference, record)
        assert parity.passed and parity.max_rel <= 1e-12, (record.spec.label, parity.to_json())


def test_builtin_modules_where_torch_computes_the_spec_formula():
    from crossnn_torch import ops

    def built(mod):
        return mod.build(torch.float64, "cpu")

    assert type(built(ops.loss(spec.BCE(log_min=-100.0)).mod)) is nn.BCELoss
    assert type(built(ops.loss(spec.BCE(log_min=-50.0)).mod)) is ops.ClampedBCELoss
    sparse = ops.loss(spec.CrossEntropy(from_logits=True, sparse=True))
    assert type(built(sparse.mod)) is nn.CrossEntropyLoss and sparse.class_indices
    assert type(built(ops.loss(spec.Huber(delta=2.0)).mod)) is nn.HuberLoss
    assert type(built(ops.activation(spec.Softplus()))) is ops.Softplus  # not nn.Softplus (threshold 20)
    assert built(ops.activation(spec.LeakyReLU(negative_slope=0.3))).negative_slope == 0.3
    assert built(ops.activation(spec.GELU(approximate="tanh"))).approximate == "tanh"
    assert built(ops.activation(spec.Softmax(), dim=1)).dim == 1  # the channels of an NCHW image


def test_softplus_is_the_spec_formula_with_sigmoid_gradient():
    from crossnn_torch.ops import Softplus

    values = [-40.0, -1.0, 0.0, 1.0, 25.0, 40.0]
    z = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    out = Softplus()(z)
    out.sum().backward()
    expected = [max(v, 0.0) + np.log1p(np.exp(-abs(v))) for v in values]
    np.testing.assert_array_equal(out.detach().numpy(), expected)
    assert out[4].item() != 25.0  # nn.Softplus would return z itself above 20
    assert z.grad[2].item() == 0.5
    np.testing.assert_array_equal(z.grad.numpy(), torch.sigmoid(z.detach()).numpy())


# ---- errors, devices, set-up -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Shuffle(spec.Layer, kind="torch_test_shuffle"):
    """A layer kind only this test knows: no backend lowers it."""

    def output_shape(self, input_shapes):
        return input_shapes[0]


@dataclass(frozen=True, kw_only=True)
class Cube(spec.Activation, kind="torch_test_cube"):
    """f(z) = z³, an activation only this test knows."""


def test_unsupported_features_name_backend_and_feature():
    base = crossnn.example("linear-2x3")
    dense = base.model.layers[0]
    odd_layer = dataclasses.replace(base, model=spec.Model(inputs=3, layers=(Shuffle(name="mix"), dense)))
    with pytest.raises(UnsupportedFeature) as err:
        build(odd_layer)
    assert err.value.backend == "torch" and "torch_test_shuffle" in err.value.feature
    assert "'torch'" in str(err.value) and "torch_test_shuffle" in str(err.value)

    cubic = dataclasses.replace(dense, activation=Cube())
    odd_act = dataclasses.replace(base, model=spec.Model(inputs=3, layers=(cubic,)))
    with pytest.raises(UnsupportedFeature, match="torch.*activation 'torch_test_cube'"):
        build(odd_act)

    record = train(odd_layer, [RunSpec("torch")]).records[0]
    assert record.status == "error" and "torch" in record.message and "torch_test_shuffle" in record.message


def test_devices_without_probe_do_not_import_torch():
    code = ("import sys; from crossnn_torch import TorchBackend; b = TorchBackend(); "
            "print(b.devices()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].startswith("('cpu'") and out[1] == "False"
    probed = backends.get("torch").devices(probe=True)
    assert probed[0] == "cpu" and len(probed) == 1 + (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_guess_lists_no_gpu_for_a_cpu_build():
    from crossnn_torch import device

    assert device.guess("2.13.0+cpu") == ("cpu",)


def test_prepare_sets_parity_switches():
    backends.get("torch").prepare()
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False


def test_modes_are_the_step_modes_each_with_a_note():
    from crossnn_torch.step import MODES

    backend = backends.get("torch")
    assert backend.modes == tuple(MODES) == ("eager", "xp", "compile", "onednn")
    assert set(backend.mode_notes) == set(backend.modes)
    assert all(isinstance(note, str) and note and "\n" not in note for note in backend.mode_notes.values())
    assert backend.fast_modes == ("onednn", "xp") and backend.mode_device_kinds == {"onednn": ("cpu",)}


@pytest.mark.parametrize("device", ["tpu", "cpu:1"])
def test_unknown_device_is_a_backend_error(device):
    with pytest.raises(BackendError, match=f"torch.*'{device}'"):
        build(crossnn.example("linear-2x3"), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_backend_error():
    with pytest.raises(BackendError, match="torch.*cuda"):
        build(crossnn.example("linear-2x3"), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
@pytest.mark.parametrize("mode", ["eager", "xp"])
@pytest.mark.parametrize("name", ["linear-2x3", "two-tower", "circle"])
def test_cuda_matches_numpy_reference(name, mode):
    result = train(crossnn.example(name), [RunSpec("torch", "float64", "cuda", mode),
                                           RunSpec("torch", "float32", "cuda", mode)])
    for record in result.records:
        parity = compare(result.reference, record)
        assert record.ok and parity.passed, (record.spec.label, record.message, parity.to_json())
        assert "cuda" in record.description


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_cuda_xp_keeps_everything_on_the_gpu():
    experiment = crossnn.example("two-tower")
    trainer = build(experiment, device="cuda", mode="xp")
    step = trainer.train_step
    assert step.flat.device.type == "cuda" and all(v.device.type == "cuda" for v in step.parameters().values())
    plan = BatchPlan.for_experiment(experiment, load_dataset(experiment).n)
    losses = trainer.run(plan.batches(0, 10))
    assert losses.shape == (10,) and np.all(np.isfinite(losses))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_tutorial_loop_on_cuda_matches_lowering():
    experiment = crossnn.example("circle")
    data = load_dataset(experiment)
    params = cast(initial_parameters(experiment), "float64")
    backend = backends.get("torch")
    hand = backend.tutorial(experiment, params, data, dtype="float64", device="cuda")
    lowered = backend.build(experiment, params, data, dtype="float64", device="cuda", mode="eager")
    batches = BatchPlan.for_experiment(experiment, data.n).batches(0, 240)
    np.testing.assert_allclose(hand.run(batches), lowered.run(batches), rtol=1e-12, atol=0)
    assert backend.matmul_gflops(256, "float32", "cuda") > 0


# ---- the fast mode: the NumPy backend's math on torch tensors ------------------------------------


@lru_cache(maxsize=None)
def xp_run(name):
    runs = [RunSpec("torch", "float64", "cpu", "xp")]
    if name in FLOAT32_EXAMPLES:
        runs.append(RunSpec("torch", "float32", "cpu", "xp"))
    return train(crossnn.example(name), runs)


@pytest.mark.parametrize("name", EXAMPLES)
def test_xp_mode_matches_numpy_reference_in_float64(name):
    result = xp_run(name)
    record = result.records[0]
    assert record.ok and record.steps_done == result.plan.steps, record.message
    parity = compare(result.reference, record)
    assert parity.complete and parity.passed, parity.to_json()
    print(f"{name}: torch xp float64 vs numpy, max rel {parity.max_rel:.2e}, loss max abs {parity.loss_max_abs:.2e}")
    assert parity.max_rel <= 1e-9
    assert parity.loss_max_abs <= 1e-9 * max(1.0, float(np.max(np.abs(result.reference.losses))))
    assert record.metrics == pytest.approx(result.reference.metrics)
    assert "inference_mode" in record.description


@pytest.mark.parametrize("name", FLOAT32_EXAMPLES)
def test_xp_mode_float32_passes(name):
    result = xp_run(name)
    record = result.records[1]
    assert record.spec.dtype == "float32" and record.ok
    assert compare(result.reference, record).passed


def test_xp_namespace_provides_every_function_of_the_contract():
    from crossnn_numpy.xp import FUNCTIONS
    from crossnn_torch.xp import torch_namespace as xp

    assert all(callable(getattr(xp, name)) for name in FUNCTIONS)
    z = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64)
    assert torch.equal(xp.maximum(z, 0.0), torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64))
    assert torch.equal(xp.amax(z, axis=1, keepdims=True), torch.tensor([[2.0]], dtype=torch.float64))
    assert torch.equal(xp.sum(z, axis=0), z[0])
    assert xp.minimum(z, 1.0).tolist() == [[-1.0, 0.0, 1.0]] and xp.argmax(torch.tensor([[1.0, 3.0, 3.0]]), 1) == 1
    assert xp.pad(z, ((0, 1), (2, 0)), -1.0).tolist() == [[-1, -1, -1, 0, 2], [-1, -1, -1, -1, -1]]  # NumPy's widths
    assert xp.pad(z, ((0, 1), (2, 0)), constant_values=-1.0).shape == (2, 5)
    cube = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(xp.sum(cube, axis=(1, 2)), torch.tensor([66.0, 210.0]))
    np.testing.assert_array_equal(xp.mean(cube, axis=(0, 2)).numpy(), cube.numpy().mean(axis=(0, 2)))
    assert xp.stack([z, z], 0).shape == (2, 1, 3) and xp.ones_like(z).sum().item() == 3


def test_xp_step_and_run_agree_and_parameters_are_canonical_copies():
    experiment = crossnn.example("circle")
    plan = BatchPlan.for_experiment(experiment, load_dataset(experiment).n)
    stepped, spanned = build(experiment, mode="xp"), build(experiment, mode="xp")
    losses = [stepped.step(b) for b in plan.batches(0, 30)]
    assert all(isinstance(v, float) for v in losses)
    np.testing.assert_array_equal(spanned.run(plan.batches(0, 30)), losses)
    params = spanned.parameters()
    assert list(params) == list(initial_parameters(experiment))
    assert params["fc1/kernel"].shape == (2, 5) and params["fc1/kernel"].flags.c_contiguous
    params["fc1/kernel"][:] = 0
    assert np.any(spanned.parameters()["fc1/kernel"] != 0)
    # shuffled batches go through index tensors instead of slices: same losses as eager
    shuffled = dataclasses.replace(experiment, train=spec.Train(epochs=2, batch_size=64, shuffle=True))
    plan = BatchPlan.for_experiment(shuffled, load_dataset(shuffled).n)
    batches = plan.batches(0, plan.steps)
    np.testing.assert_allclose(build(shuffled, mode="xp").run(batches), build(shuffled).run(batches),
                               rtol=1e-13, atol=0)


# ---- the onednn mode: the xp step with float32 products on PyTorch's bundled oneDNN -------------------

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


@pytest.fixture
def every_product_on_onednn(monkeypatch):
    """The onednn namespace with no size threshold: the small test nets' products go to oneDNN too."""
    from crossnn_torch import xp

    monkeypatch.setattr(xp, "SMALL_PRODUCT", 0)


@needs_onednn
def test_onednn_matmul_computes_the_product_in_every_call_form(monkeypatch):
    """The three products of a Dense layer (x·W, xᵀ·dz, dz·Wᵀ), against float64 NumPy, each shown to go
    through oneDNN's operator; float64 products, and float32 ones under SMALL_PRODUCT multiply-adds,
    go to torch.matmul instead."""
    from crossnn_torch import xp

    assert 33 * 70 * 19 < xp.SMALL_PRODUCT
    monkeypatch.setattr(xp, "SMALL_PRODUCT", 33 * 70 * 19)
    calls = []
    operator = xp.linear_operator()
    monkeypatch.setattr(xp, "linear_operator", lambda: lambda *a: calls.append(a) or operator(*a))
    rng = np.random.default_rng(3)
    x, w, dz = (torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
                for shape in ((33, 70), (70, 19), (33, 19)))
    products = {"x·W": (xp.onednn_namespace.matmul(x, w), x.numpy() @ w.numpy()),
                "xᵀ·dz": (xp.onednn_namespace.matmul(x.T, dz), x.numpy().T @ dz.numpy()),
                "dz·Wᵀ": (xp.onednn_namespace.matmul(dz, w.T), dz.numpy() @ w.numpy().T)}
    assert len(calls) == 3
    for name, (got, want) in products.items():
        np.testing.assert_allclose(got.numpy(), want.astype(np.float64), rtol=2e-5, atol=2e-5, err_msg=name)
    doubles = x.double()
    np.testing.assert_array_equal(xp.onednn_namespace.matmul(doubles, w.double()).numpy(),
                                  (doubles @ w.double()).numpy())
    np.testing.assert_array_equal(xp.onednn_namespace.matmul(x[:32], w).numpy(), (x[:32] @ w).numpy())
    assert len(calls) == 3


@lru_cache(maxsize=None)
def onednn_run(name):
    runs = [RunSpec("torch", "float64", "cpu", "onednn"), RunSpec("torch", "float64", "cpu", "xp"),
            RunSpec("torch", "float32", "cpu", "onednn")]
    return train(crossnn.example(name), runs)


@needs_onednn
@pytest.mark.parametrize("name", ["two-tower", "circle", "digits"])
def test_onednn_mode_keeps_parity(name, every_product_on_onednn):
    if name == "digits":
        pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")
    result = onednn_run(name)
    onednn64, xp64, onednn32 = result.records
    assert onednn64.ok and onednn32.ok, (onednn64.message, onednn32.message)
    for param in xp64.final_params:  # float64 products are torch.matmul's: the xp mode's numbers exactly
        np.testing.assert_array_equal(onednn64.final_params[param], xp64.final_params[param])
    parity = compare(result.reference, onednn32)
    print(f"{name}: torch onednn float32 vs numpy float64, max rel {parity.max_rel:.2e}")
    assert parity.complete and parity.passed, parity.to_json()
    assert "oneDNN" in onednn32.description


def test_onednn_mode_is_cpu_only_and_refuses_the_native_flavour():
    experiment = crossnn.example("two-tower")
    with pytest.raises(UnsupportedFeature, match="torch.*native flavour in the onednn mode"):
        backends.get("torch").build(experiment, initial_parameters(experiment), load_dataset(experiment),
                                    dtype="float64", device="cpu", mode="onednn", native={"default-init"})
    if torch.cuda.is_available():
        with pytest.raises(UnsupportedFeature, match="onednn mode on cuda"):
            build(experiment, device="cuda", mode="onednn")


# ---- torch.compile ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear-2x3", *(pytest.param(n, marks=pytest.mark.slow)
                                                  for n in ("two-tower", "circle"))])
def test_compile_mode_matches_numpy_reference_in_float64(name):
    """Compiling takes seconds per model (more on a cold inductor cache), so circle trains 2 epochs.
    two-tower trains with Adam, whose compiled step would keep its step count, and so the bias
    corrections, in float32 (about 1e-6 off) unless run with the run's default dtype."""
    experiment = crossnn.example(name)
    if name == "circle":
        experiment = dataclasses.replace(experiment, train=dataclasses.replace(experiment.train, epochs=2))
    result = train(experiment, [RunSpec("torch", "float64", "cpu", "compile")], snapshot_every=5)
    record = result.records[0]
    assert record.ok and record.steps_done == result.plan.steps, record.message
    parity = compare(result.reference, record)
    assert parity.passed and parity.max_rel <= 1e-9, parity.to_json()
    assert "torch.compile" in record.description
    assert torch.get_default_dtype() == torch.float32  # restored after every step


# ---- the hand-written tutorial loop, runtime settings, matmul peak ----------------------------------


def tutorial_and_lowering(experiment, dtype="float64"):
    backend = backends.get("torch")
    data = load_dataset(experiment)
    params = cast(initial_parameters(experiment), dtype)
    return (backend.tutorial(experiment, params, data, dtype=dtype, device="cpu"),
            backend.build(experiment, params, data, dtype=dtype, device="cpu", mode="eager"))


@pytest.mark.parametrize("name", ["circle", "adder", "line"])
def test_tutorial_loop_ends_where_the_lowering_ends(name):
    experiment = crossnn.example(name)
    epochs = {"circle": 300, "adder": 3}.get(name, experiment.train.epochs)
    experiment = dataclasses.replace(experiment, train=dataclasses.replace(experiment.train, epochs=epochs))
    hand, lowered = tutorial_and_lowering(experiment)
    plan = BatchPlan.for_experiment(experiment, load_dataset(experiment).n)
    batches = plan.batches(0, plan.steps)
    np.testing.assert_allclose(hand.run(batches), lowered.run(batches), rtol=1e-12, atol=1e-15)
    got, expected = hand.parameters(), lowered.parameters()
    assert list(got) == list(expected)
    for param in expected:
        assert got[param].shape == expected[param].shape
        np.testing.assert_allclose(got[param], expected[param], rtol=1e-12, atol=1e-14, err_msg=param)
    x = load_dataset(experiment).x[:5]
    np.testing.assert_allclose(hand.predict(x), lowered.predict(x), rtol=1e-12)
    hand.synchronize()


def test_tutorial_loop_is_plain_pytorch_and_shares_no_code_with_the_lowering():
    import inspect

    from crossnn_torch import tutorial

    hand, _ = tutorial_and_lowering(crossnn.example("circle"))
    assert type(hand.model) is nn.Sequential
    assert [type(m) for m in hand.model] == [nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid]
    assert type(hand.loss_fn) is nn.BCELoss and type(hand.optimizer) is torch.optim.SGD
    source = inspect.getsource(tutorial)
    for module in ("crossnn_torch.ops", "crossnn_torch.optimizers", "crossnn_torch.step", "crossnn_numpy"):
        assert module not in source


def test_tutorial_loop_refuses_what_a_tutorial_would_not_write():
    backend = backends.get("torch")
    for experiment in (crossnn.example("two-tower"), feature_experiment(act=spec.Softplus()),
                       feature_experiment(loss=spec.BCE(log_min=-50.0), out_act=spec.Sigmoid(), targets="binary")):
        params = cast(initial_parameters(experiment), "float64")
        with pytest.raises(UnsupportedFeature) as err:
            backend.tutorial(experiment, params, load_dataset(experiment), dtype="float64", device="cpu")
        assert err.value.backend == "torch"
    tower = crossnn.example("two-tower")
    with pytest.raises(UnsupportedFeature, match="graph"):
        backend.tutorial(tower, cast(initial_parameters(tower), "float64"), load_dataset(tower), dtype="float64",
                         device="cpu")


def test_runtime_records_threads_determinism_tf32_and_math_libraries():
    backend = backends.get("torch")
    backend.prepare()
    info = backend.runtime()
    for key in ("torch", "intra_op_threads", "interop_threads", "deterministic_algorithms", "cuda_matmul_allow_tf32",
                "cudnn_allow_tf32", "mkl", "mkldnn"):
        assert key in info, key
    assert info["intra_op_threads"] == torch.get_num_threads()
    assert info["deterministic_algorithms"] is True and info["cuda_matmul_allow_tf32"] is False


@needs_onednn
def test_matmul_gflops_times_onednn_too_for_float32_on_the_cpu(monkeypatch):
    from crossnn_torch import xp

    calls = []
    operator = xp.linear_operator()
    monkeypatch.setattr(xp, "linear_operator", lambda: lambda *a: calls.append(a) or operator(*a))
    gflops = backends.get("torch").matmul_gflops(128, "float32", "cpu")
    assert isinstance(gflops, float) and 0 < gflops < 1e6
    assert len(calls) == 11  # warm-up and 10 timed
    assert 0 < backends.get("torch").matmul_gflops(128, "float64", "cpu") < 1e6
    assert len(calls) == 11


def test_bce_gradient_floor_is_torchs_float32_constant():
    """nn.BCELoss floors p (1 - p) at the float constant 1e-12 (9.999999960041972e-13 in float64):
    the NumPy reference and crossnn's clamped torch BCE share that floor (1e-12 itself was 4e-9 off)."""
    from crossnn_numpy.ops import BCE as NumpyBCE
    from crossnn_torch.ops import ClampedBCELoss

    from crossnn_torch.ops import ClampedBCEFunction

    assert spec.BCE.grad_floor == float(np.float32(1e-12)) == ClampedBCEFunction.GRAD_FLOOR != 1e-12
    p = np.array([[1e-30], [1e-13], [0.3], [1.0 - 1e-13], [1.0]])
    y = np.array([[1.0], [0.0], [1.0], [0.0], [1.0]])
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf, clamped
        _, want = NumpyBCE(spec.BCE(log_min=-100.0), np).value_and_grad(p, y)
    for loss in (nn.BCELoss(), ClampedBCELoss(log_min=-100.0)):
        pt = torch.tensor(p, requires_grad=True)
        loss(pt, torch.tensor(y)).backward()
        np.testing.assert_allclose(pt.grad.numpy(), want, rtol=5e-16, atol=0)
    assert want[0, 0] == -1.0 / spec.BCE.grad_floor / 5
