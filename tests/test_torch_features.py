"""The PyTorch backend's newer features against independent references:

- AdamW, RMSprop, Adagrad, decoupled decay, clipping, schedules and dropout: training loops written
  by hand with torch.optim, torch.optim.lr_scheduler and clip_grad_norm_, fed crossnn's initial
  parameters, batch plan and dropout masks, against crossnn's torch lowering and the NumPy reference;
- training state: stop in one backend or mode, resume in another;
- torch's own checkpoint file: round trip, a hand-written loop that continues from it, bad files;
- user-defined layers and optimizers registered for NumPy and torch (seed 004's My_Linear and SGD);
- the native flavour, facts() and script().
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.parameter import Parameter  # noqa: E402

import crossnn  # noqa: E402
import crossnn.examples  # noqa: E402
from crossnn import backends  # noqa: E402
from crossnn import spec as S  # noqa: E402
from crossnn.checkpoint import CheckpointError  # noqa: E402
from crossnn.data import load_dataset  # noqa: E402
from crossnn.errors import UnsupportedFeature  # noqa: E402
from crossnn.harness import RunSpec, train  # noqa: E402
from crossnn.params import cast, initial_parameters  # noqa: E402
from crossnn.parity import compare  # noqa: E402
from crossnn.plan import BatchPlan  # noqa: E402
from crossnn.schedule import StepClock  # noqa: E402
from crossnn.spec.base import positive  # noqa: E402
from tests.scripts import run_scripts  # noqa: E402

pytestmark = pytest.mark.skipif("torch" not in backends.available(), reason="the torch backend is unavailable")

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def experiment(optimizer, *, dropout=False, epochs=4, batch_size=5, loss=S.MSE(), out_act=S.Linear(), y=None,
               hidden=S.Tanh(), units=None):
    """h = tanh(x W1 + b1) [dropout 0.5], out = h W2 + b2, on 24 shuffled samples (the last batch short)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((24, 3))
    y = rng.standard_normal((24, 1)) if y is None else y
    init = dict(kernel_init=S.GlorotUniform(), bias_init=S.Uniform(low=-0.3, high=0.3))
    layers = (S.Dense(name="h", units=5, activation=hidden, **init),
              *((S.Dropout(name="drop", rate=0.5),) if dropout else ()),
              S.Dense(name="out", units=units or np.asarray(y).shape[1], activation=out_act, **init))
    return S.Experiment(name="features", seed=5, data=S.InlineData(x=x.tolist(), y=np.asarray(y).tolist()),
                        model=S.Model(inputs=3, layers=layers), loss=loss, optimizer=optimizer,
                        train=S.Train(epochs=epochs, batch_size=batch_size, shuffle=True))


def build(e, mode="eager", native=frozenset(), dtype="float64"):
    backend = backends.get("torch")
    return backend.build(e, cast(initial_parameters(e), dtype), load_dataset(e), dtype=dtype, device="cpu", mode=mode,
                         native=native)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(float(np.max(np.abs(b))), 1e-300))


def worst(got: dict, expected: dict) -> float:
    assert set(got) == set(expected)
    return max(rel(got[name], expected[name]) for name in expected)


def numpy_run(e, start=0, stop=None, state=None):
    """The NumPy reference trainer run over plan steps [start, stop), from `state` when given."""
    data = load_dataset(e)
    plan = BatchPlan.for_experiment(e, data.n)
    trainer = backends.get("numpy").build(e, initial_parameters(e), data, dtype="float64", device="cpu",
                                          mode="default")
    if state is not None:
        trainer.load_state(state)
    trainer.run(plan.batches(start, plan.steps if stop is None else stop))
    return trainer


# ---- torch.optim by hand: the acceptance oracle for the new optimizer features ---------------------


def hand_loop(e, make_optimizer, *, scheduler=None, per="epoch", clip=None, decoupled=0.0):
    """A training loop written as PyTorch users write it: two nn.Linear, torch.optim, an optional
    lr_scheduler (stepped per epoch or per step), clip_grad_norm_ and decoupled decay by hand, and
    crossnn's dropout masks multiplied in. Starts from crossnn's initial parameters and batch plan."""
    data = load_dataset(e)
    plan = BatchPlan.for_experiment(e, data.n)
    clock = StepClock(e, data.n)
    p0 = initial_parameters(e)
    fc1, fc2 = nn.Linear(3, 5, dtype=F64), nn.Linear(5, 1, dtype=F64)
    with torch.no_grad():
        for name, linear in (("h", fc1), ("out", fc2)):
            linear.weight.copy_(torch.from_numpy(p0[f"{name}/kernel"].T))
            linear.bias.copy_(torch.from_numpy(p0[f"{name}/bias"]))
    params = [*fc1.parameters(), *fc2.parameters()]
    optimizer = make_optimizer(params)
    schedule = scheduler(optimizer) if scheduler else None
    X, Y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    dropout = any(isinstance(layer, S.Dropout) for layer in e.model.layers)
    losses = []
    for step in range(plan.steps):
        rows = torch.from_numpy(plan.batch(step))
        h = torch.tanh(fc1(X[rows]))
        if dropout:
            h = h * torch.from_numpy(clock.masks(step, len(rows))["drop"])
        loss = nn.functional.mse_loss(fc2(h), Y[rows])
        optimizer.zero_grad()
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        if decoupled:
            with torch.no_grad():
                for p in params:
                    p.mul_(1.0 - optimizer.param_groups[0]["lr"] * decoupled)
        optimizer.step()
        losses.append(loss.item())
        if schedule and (per == "step" or (step + 1) % plan.steps_per_epoch == 0):
            schedule.step()
    final = {"h/kernel": fc1.weight.detach().numpy().T, "h/bias": fc1.bias.detach().numpy(),
             "out/kernel": fc2.weight.detach().numpy().T, "out/bias": fc2.bias.detach().numpy()}
    return final, np.array(losses)


L2 = dict(weight_decay=0.05, weight_decay_kind="l2")
DECOUPLED = dict(weight_decay=0.05, weight_decay_kind="decoupled")

ORACLES = {
    "adamw": (S.AdamW(lr=0.02, eps=1e-8, weight_decay=0.05),
              lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05), {}),
    "adam decoupled is adamw": (S.Adam(lr=0.02, eps=1e-8, **DECOUPLED),
                                lambda p: torch.optim.AdamW(p, lr=0.02, eps=1e-8, weight_decay=0.05), {}),
    "rmsprop": (S.RMSprop(lr=0.01, alpha=0.99, eps=1e-8),
                lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8), {}),
    "rmsprop centered momentum l2": (S.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.8, centered=True, **L2),
                                     lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, momentum=0.8,
                                                                   centered=True, weight_decay=0.05), {}),
    "adagrad": (S.Adagrad(lr=0.1, initial_accumulator=0.1, eps=1e-10),
                lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, eps=1e-10), {}),
    "adagrad decoupled": (S.Adagrad(lr=0.1, initial_accumulator=0.0, eps=1e-10, **DECOUPLED),
                          lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10), {"decoupled": 0.05}),
    "sgd decoupled": (S.SGD(lr=0.1, momentum=0.5, **DECOUPLED),
                      lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5), {"decoupled": 0.05}),
    "sgd clip": (S.SGD(lr=0.5, momentum=0.9, clip_norm=0.05),
                 lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9), {"clip": 0.05}),
    "step schedule per epoch (StepLR)": (
        S.SGD(lr=0.1, momentum=0.9, schedule=S.StepDecay(unit="epoch", step_size=2, gamma=0.5)),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        {"scheduler": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)}),
    "exponential schedule per step (ExponentialLR)": (
        S.Adam(lr=0.02, eps=1e-8, schedule=S.ExponentialDecay(unit="step", gamma=0.9)),
        lambda p: torch.optim.Adam(p, lr=0.02, eps=1e-8),
        {"scheduler": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), "per": "step"}),
}


@pytest.mark.parametrize("dropout", [False, True], ids=["", "dropout"])
@pytest.mark.parametrize("case", ORACLES)
def test_hand_written_torch_optim_loop_matches_lowering_and_reference(case, dropout):
    spec_optimizer, make, options = ORACLES[case]
    e = experiment(spec_optimizer, dropout=dropout)
    expected, expected_losses = hand_loop(e, make, **options)
    trainer = build(e)
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    losses = trainer.run(plan.batches(0, plan.steps))
    lowering = worst(trainer.parameters(), expected)
    reference = worst(numpy_run(e).parameters(), expected)
    print(f"{case}{' + dropout' if dropout else ''}: lowering vs hand {lowering:.1e}, numpy vs hand {reference:.1e}")
    assert lowering <= 1e-12 and reference <= 1e-9
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12, atol=0)
    assert not np.allclose(trainer.parameters()["out/kernel"], initial_parameters(e)["out/kernel"])


def test_lowering_uses_torch_optim_built_ins():
    cases = {S.AdamW(lr=0.1, eps=1e-8, weight_decay=0.1): torch.optim.AdamW,
             S.RMSprop(lr=0.1, alpha=0.9, eps=1e-8): torch.optim.RMSprop,
             S.Adagrad(lr=0.1, initial_accumulator=0.0, eps=1e-10): torch.optim.Adagrad,
             S.Adam(lr=0.1, eps=1e-8, **DECOUPLED): torch.optim.Adam}
    for s, cls in cases.items():
        optimizer = build(experiment(s)).optimizer
        assert type(optimizer) is cls
    adam = build(experiment(S.Adam(lr=0.1, eps=1e-8, **DECOUPLED))).optimizer.param_groups[0]
    assert adam["decoupled_weight_decay"] is True and adam["weight_decay"] == 0.05
    sgd = build(experiment(S.SGD(lr=0.1, **DECOUPLED))).optimizer.param_groups[0]
    assert sgd["weight_decay"] == 0.0  # decoupled is done by the loop, not as torch's L2


def test_dropout_is_the_identity_when_predicting_and_masks_follow_the_step():
    e = experiment(S.SGD(lr=0.1), dropout=True)
    trainer = build(e)
    x = load_dataset(e).x[:4]
    before = trainer.predict(x)
    h = np.tanh(x @ initial_parameters(e)["h/kernel"] + initial_parameters(e)["h/bias"])
    expected = h @ initial_parameters(e)["out/kernel"] + initial_parameters(e)["out/bias"]
    np.testing.assert_allclose(before, expected, rtol=1e-13)
    assert trainer.model.training  # predict() puts the model back in train mode
    assert "Dropout(rate=0.5" in str(trainer.model)


# ---- training state: stop anywhere, resume anywhere -----------------------------------------------

RESUME = {
    "adam dropout schedule": experiment(S.Adam(lr=0.01, eps=1e-8, schedule=S.StepDecay(unit="epoch", step_size=1,
                                                                                       gamma=0.7)), dropout=True),
    "rmsprop centered momentum": experiment(S.RMSprop(lr=0.01, alpha=0.9, eps=1e-7, momentum=0.8, centered=True)),
    "adagrad decoupled clip": experiment(S.Adagrad(lr=0.1, initial_accumulator=0.1, eps=1e-10, clip_norm=0.5,
                                                   **DECOUPLED)),
    "sgd momentum": experiment(S.SGD(lr=0.1, momentum=0.9, nesterov=True)),
}


@pytest.mark.parametrize("case", RESUME)
def test_stop_in_torch_resume_in_numpy_and_back(case):
    e = RESUME[case]
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    stop = 7
    uninterrupted = numpy_run(e).parameters()
    for mode in ("eager", "xp"):
        trainer = build(e, mode)
        trainer.run(plan.batches(0, stop))
        state = trainer.state()
        assert state.step == stop and set(state.slots) == set(e.optimizer.state_slots())
        assert all(v.shape == (3, 5) for slot, v in ((s, state.slots[s]["h/kernel"]) for s in state.slots))
        assert state.counters == {c: stop for c in e.optimizer.state_counters()}
        # the canonical state equals the reference's after the same steps
        reference_state = numpy_run(e, 0, stop).state()
        for slot, values in reference_state.slots.items():
            assert worst(state.slots[slot], values) <= 1e-12, (mode, slot)
        resumed = numpy_run(e, stop, state=state).parameters()
        assert worst(resumed, uninterrupted) <= 1e-9, f"stopped in torch {mode}, resumed in numpy"
    for mode in ("eager", "xp"):  # and back: stopped in NumPy, resumed in torch
        trainer = build(e, mode)
        trainer.load_state(reference_state)
        assert trainer.steps_done == stop
        trainer.run(plan.batches(stop, plan.steps))
        assert worst(trainer.parameters(), uninterrupted) <= 1e-9, f"stopped in numpy, resumed in torch {mode}"
    assert worst(reference_state.params, numpy_run(e, 0, stop).parameters()) == 0.0  # the state was not mutated


def test_state_at_step_zero_and_harness_stop_after():
    e = RESUME["adam dropout schedule"]
    state = build(e).state()
    assert state.step == 0 and state.slots == {} and state.counters == {"step": 0}
    record = train(e, [RunSpec("torch")], stop_after=9).records[0]
    assert record.ok and record.final_state.step == 9 and record.steps_done == 9
    result = train(e, [RunSpec("torch", mode="xp")], resume=record.final_state)
    assert compare(result.reference, result.records[0]).passed


# ---- torch's own checkpoint file ------------------------------------------------------------------


def trained_state(e, steps):
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    trainer = build(e)
    trainer.run(plan.batches(0, steps))
    return trainer.state()


def test_native_export_import_round_trip(tmp_path):
    backend = backends.get("torch")
    for case in ("adam dropout schedule", "rmsprop centered momentum", "sgd momentum"):
        e = RESUME[case]
        state = trained_state(e, 9)
        path = tmp_path / f"{case}.pt"
        backend.export_native(e, state, path)
        back = backend.import_native(e, path)
        assert back.step == 9 and back.counters == state.counters
        assert worst(back.params, state.params) == 0.0
        assert set(back.slots) == set(state.slots)
        for slot in state.slots:
            assert worst(back.slots[slot], state.slots[slot]) == 0.0
    saved = torch.load(path)  # torch's default weights_only=True reads it
    assert set(saved) == {"info", "date", "model", "optimizer", "step"}
    datetime.datetime.fromisoformat(saved["date"])
    assert list(saved["model"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    np.testing.assert_array_equal(saved["model"]["0.weight"].numpy(), state.params["h/kernel"].T)
    assert saved["optimizer"]["param_groups"][0]["momentum"] == 0.9
    np.testing.assert_array_equal(saved["optimizer"]["state"][0]["momentum_buffer"].numpy(),
                                  state.slots["momentum_buffer"]["h/kernel"].T)


def test_hand_written_loop_continues_from_the_exported_file(tmp_path):
    """Seed 004's recipe: create the model and an optimizer with any lr, load_state_dict both, train on."""
    e = experiment(S.Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-7), epochs=5)
    data = load_dataset(e)
    plan = BatchPlan.for_experiment(e, data.n)
    path = tmp_path / "state.pt"
    backends.get("torch").export_native(e, trained_state(e, 11), path)

    state = torch.load(path)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    X, Y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    for step in range(state["step"], plan.steps):
        rows = torch.from_numpy(plan.batch(step))
        optimizer.zero_grad()
        nn.functional.mse_loss(model(X[rows]), Y[rows]).backward()
        optimizer.step()
    got = {"h/kernel": model[0].weight.detach().numpy().T, "h/bias": model[0].bias.detach().numpy(),
           "out/kernel": model[2].weight.detach().numpy().T, "out/bias": model[2].bias.detach().numpy()}
    trainer = build(e)
    trainer.run(plan.batches(0, plan.steps))
    assert worst(got, trainer.parameters()) <= 1e-12
    assert worst(got, numpy_run(e).parameters()) <= 1e-9


def test_a_seed_style_file_with_a_datetime_imports(tmp_path):
    e = RESUME["sgd momentum"]
    trainer = build(e)
    trainer.run(BatchPlan.for_experiment(e, 24).batches(0, 3))
    path = tmp_path / "state.pt"
    torch.save({"info": "my net", "date": datetime.datetime.now(), "model": trainer.model.state_dict(),
                "optimizer": trainer.optimizer.state_dict(), "step": 3}, path)
    state = backends.get("torch").import_native(e, path)
    assert state.step == 3 and worst(state.params, trainer.parameters()) == 0.0


def test_bad_native_files_raise_one_line_checkpoint_errors(tmp_path):
    backend = backends.get("torch")
    e = RESUME["sgd momentum"]
    good = tmp_path / "good.pt"
    backend.export_native(e, trained_state(e, 3), good)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {}, "step": 0}, partial)
    narrow = experiment(S.SGD(lr=0.1, momentum=0.9))
    narrow = dataclasses.replace(narrow, model=S.Model(inputs=3, layers=(
        dataclasses.replace(narrow.model.layers[0], units=4), narrow.model.layers[1])))
    no_activation = experiment(S.SGD(lr=0.1, momentum=0.9), hidden=S.Linear())
    adam = experiment(S.Adam(lr=0.1, eps=1e-8))
    cases = [(tmp_path / "missing.pt", e, "no such checkpoint"), (corrupt, e, "not a readable torch checkpoint"),
             (text, e, "not a readable torch checkpoint"), (tensor, e, "holds a Tensor"),
             (partial, e, "missing key 'optimizer'"), (good, narrow, r"model '0.weight' has shape \(5, 3\), the model "
                                                                       r"of 'features' needs \(4, 3\)"),
             (good, no_activation, "'model' does not fit the model of 'features' .missing 1.weight"),
             (good, adam, "not the state of torch.optim.Adam")]
    for path, spec_, message in cases:
        with pytest.raises(CheckpointError, match=message) as err:
            backend.import_native(spec_, path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


# ---- user-defined layers and optimizers (seed 004) -------------------------------------------------
# Spec kinds are process-wide, so these carry a suffix no other test file uses.

from crossnn.spec import Initializer, ParamInit  # noqa: E402
from crossnn_numpy import ops as numpy_ops  # noqa: E402
from crossnn_numpy.optimizers import Rule as NumpyRule  # noqa: E402
from crossnn_torch import ops as torch_ops  # noqa: E402
from crossnn_torch.optimizers import Rule as TorchRule  # noqa: E402


@dataclass(frozen=True, kw_only=True)
class MyLinearInit(Initializer, kind="my_linear_uniform_pt"):
    """U(±1/√fan_in), drawn in NumPy like every initializer. (Seed 004's reset_parameters uses
    1/√p.shape[0], which for its (out, in) weight and its bias is 1/√out_F, not 1/√in_F.)"""

    def sample(self, rng, shape, fan_in, fan_out):
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape)


@dataclass(frozen=True, kw_only=True)
class MyLinear(S.Layer, kind="my_linear_pt"):
    """y = x @ kernel + bias, kernel (in, units): seed 004's My_Linear as a spec layer."""

    units: int

    def validate(self):
        super().validate()
        positive(self, "units")

    def output_shape(self, input_shapes):
        return input_shapes[0][:-1] + (self.units,)

    def parameters(self, input_shapes):
        fan_in = input_shapes[0][-1]
        init = MyLinearInit()
        return (ParamInit("kernel", (fan_in, self.units), init, fan_in, self.units),
                ParamInit("bias", (self.units,), init, fan_in, self.units))


@numpy_ops.OPS.register(MyLinear)
class NumpyMyLinear(numpy_ops.Op):
    """The reference op: forward y = x K + b, backward dK = xᵀ dy, db = Σ dy, dx = dy Kᵀ."""

    def forward(self, p, inputs, mask=None):
        x = inputs[0]
        return self.xp.matmul(x, p["kernel"]) + p["bias"], x

    def backward(self, p, x, dy, need):
        grads = {"kernel": self.xp.matmul(x.T, dy), "bias": self.xp.sum(dy, axis=0)}
        return (self.xp.matmul(dy, p["kernel"].T) if need[0] else None,), grads


class My_Linear(nn.Module):  # noqa: N801  (seed 004's name)
    """Seed 004's layer, taking its sizes from the crossnn node."""

    def __init__(self, node, dtype=None, device=None):
        super().__init__()
        in_F, out_F = node.input_shapes[0][-1], node.layer.units  # noqa: N806
        self.weight = Parameter(torch.empty(out_F, in_F, dtype=dtype, device=device))
        self.bias = Parameter(torch.empty(out_F, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self):
        for p in self.parameters():
            stdv = 1.0 / math.sqrt(p.shape[0])
            p.data.uniform_(-stdv, stdv)

    def forward(self, x):
        return x @ self.weight.t() + self.bias


@torch_ops.OPS.register(MyLinear)
class TorchMyLinear(torch_ops.LayerOp):
    """The torch entry: seed 004's module, its weight stored (out, in) like nn.Linear's."""

    @staticmethod
    def modules(node, native):
        return [torch_ops.Mod(My_Linear, (node,), factory=True)]

    @staticmethod
    def params(node):
        return {"kernel": torch_ops.Param(0, "weight", torch_ops.LINEAR_WEIGHT), "bias": torch_ops.Param(0, "bias")}


@dataclass(frozen=True, kw_only=True)
class SeedSGD(S.Optimizer, kind="seed_sgd_pt"):
    """Seed 004's SGD: b ← μ b + g (b = g on the first step), w ← w - lr b."""

    momentum: float = 0.0

    def state_slots(self):
        return ("momentum_buf",) if self.momentum else ()


@numpy_ops.OPS.register(SeedSGD)
class NumpySeedSGD(NumpyRule):
    """b starts at zero, so μ · 0 + g is exactly the g seed 004 clones on the first step."""

    def update(self, u, state, params):
        if not self.s.momentum:
            return u, state
        buffers = [self.s.momentum * b + g for b, g in zip(state["momentum_buf"], u)]
        return buffers, {**state, "momentum_buf": buffers}


class SGD(torch.optim.Optimizer):
    """Seed 004's optimizer, verbatim."""

    def __init__(self, params, lr=0.1, momentum=0):
        defaults = dict(lr=lr, momentum=momentum)
        super(SGD, self).__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            momentum = group['momentum']
            lr = group['lr']
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad
                if momentum != 0:
                    p_state = self.state[p]
                    if 'momentum_buf' not in p_state:
                        buf = p_state['momentum_buf'] = torch.clone(grad)
                    else:
                        buf = p_state['momentum_buf']
                        buf.mul_(momentum).add_(grad)
                    grad = buf
                p.add_(grad, alpha=-lr)


@torch_ops.OPS.register(SeedSGD)
def seed_sgd(s, native):
    return TorchRule(SGD, {"lr": s.lr, "momentum": s.momentum})


def custom_experiment(**optimizer):
    base = experiment(S.SGD(lr=0.1))
    layers = (MyLinear(name="my1", units=5), S.ActivationLayer(name="act", activation=S.Tanh()),
              MyLinear(name="my2", units=1))
    return dataclasses.replace(base, model=S.Model(inputs=3, layers=layers),
                               optimizer=SeedSGD(lr=0.1, momentum=0.9, **optimizer))


@pytest.mark.parametrize("mode", ["eager", "xp"])
@pytest.mark.parametrize("extras", [{}, {"clip_norm": 0.5, **L2}], ids=["plain", "clip+l2"])
def test_user_defined_layer_and_optimizer_match_the_reference(mode, extras):
    e = custom_experiment(**extras)
    result = train(e, [RunSpec("torch", "float64", "cpu", mode)], snapshot_every=1)
    record = result.records[0]
    assert record.ok, record.message
    parity = compare(result.reference, record)
    print(f"custom layer + optimizer {mode} {extras}: max rel {parity.max_rel:.1e}")
    assert parity.passed and parity.max_rel <= 1e-9
    trainer = build(e, mode)
    if mode == "eager":
        assert [type(m) for m in trainer.model] == [My_Linear, nn.Tanh, My_Linear] and type(trainer.optimizer) is SGD
    trainer.run(BatchPlan.for_experiment(e, 24).batches(0, 6))
    state = trainer.state()
    assert set(state.slots) == {"momentum_buf"} and state.slots["momentum_buf"]["my1/kernel"].shape == (3, 5)
    resumed = numpy_run(e, 6, state=state).parameters()
    assert worst(resumed, result.reference.final_params) <= 1e-9


def test_user_defined_layer_needs_its_parameters():
    @dataclass(frozen=True, kw_only=True)
    class Broken(MyLinear, kind="my_broken_linear_pt"):
        pass

    @torch_ops.OPS.register(Broken)
    class TorchBroken(TorchMyLinear):
        @staticmethod
        def params(node):
            return {"kernel": torch_ops.Param(0, "w", torch_ops.LINEAR_WEIGHT), "bias": torch_ops.Param(0, "bias")}

    numpy_ops.OPS.register(Broken)(NumpyMyLinear)
    e = dataclasses.replace(custom_experiment(), model=S.Model(inputs=3, layers=(Broken(name="b", units=1),)))
    with pytest.raises(UnsupportedFeature, match="no nn.Parameter 'w'"):
        build(e)


# ---- native flavour ----------------------------------------------------------------------------------


def test_native_entries_are_documented_in_one_line_each():
    entries = backends.get("torch").native_entries
    assert set(entries) == {"default-init", "weight-decay", "bce-clamp", "cross-entropy-inputs", "softplus-threshold"}
    assert all(isinstance(v, str) and v and "\n" not in v for v in entries.values())


def test_native_default_init_is_nn_linear_after_manual_seed():
    e = experiment(S.SGD(lr=0.1))
    trainer = build(e, native={"default-init"})
    torch.manual_seed(e.seed)
    fc1, fc2 = nn.Linear(3, 5, dtype=F64), nn.Linear(5, 1, dtype=F64)
    got = trainer.parameters()
    np.testing.assert_array_equal(got["h/kernel"], fc1.weight.detach().numpy().T)
    np.testing.assert_array_equal(got["out/bias"], fc2.bias.detach().numpy())
    assert np.max(np.abs(got["h/kernel"])) <= 1 / math.sqrt(3)
    record = train(e, [RunSpec("torch", native=frozenset({"default-init"}))]).records[0]
    assert record.spec.label.endswith("native")
    np.testing.assert_array_equal(record.snapshots[0]["h/kernel"], got["h/kernel"])


def native_vs(e, native, twin, mode="eager"):
    """crossnn's torch run of `e` with `native` against the NumPy reference of the spec `twin` that
    writes the native behaviour out."""
    trainer = build(e, mode, native=frozenset(native))
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    trainer.run(plan.batches(0, plan.steps))
    return trainer, worst(trainer.parameters(), numpy_run(twin).parameters())


def test_native_weight_decay_is_l2_except_adamw():
    for s in (S.SGD(lr=0.1, momentum=0.5, **DECOUPLED), S.Adagrad(lr=0.1, initial_accumulator=0.0, eps=1e-10,
                                                                    **DECOUPLED),
              S.Adam(lr=0.01, eps=1e-8, **DECOUPLED)):
        e = experiment(s)
        trainer, diff = native_vs(e, {"weight-decay"}, experiment(dataclasses.replace(s, weight_decay_kind="l2")))
        assert diff <= 1e-12 and trainer.optimizer.param_groups[0]["weight_decay"] == 0.05
        assert worst(trainer.parameters(), numpy_run(e).parameters()) > 1e-6  # not the spec's decoupled decay
    adamw = experiment(S.AdamW(lr=0.01, eps=1e-8, weight_decay=0.05))
    assert native_vs(adamw, {"weight-decay"}, adamw)[1] <= 1e-12


def test_native_bce_clamp_and_cross_entropy_inputs():
    binary = (np.random.default_rng(3).uniform(size=(24, 1)) > 0.5).astype(float)
    e = experiment(S.SGD(lr=0.5), loss=S.BCE(log_min=-5.0), out_act=S.Sigmoid(), y=binary)
    trainer, diff = native_vs(e, {"bce-clamp"}, dataclasses.replace(e, loss=S.BCE(log_min=-100.0)))
    assert type(trainer.loss_fn) is nn.BCELoss and diff <= 1e-12

    labels = np.eye(3)[np.random.default_rng(4).integers(0, 3, size=24)]
    for sparse in (False, True):
        y = labels.argmax(axis=1).reshape(-1, 1) if sparse else labels
        e = experiment(S.SGD(lr=0.5), loss=S.CrossEntropy(from_logits=False, sparse=sparse, log_min=-100.0),
                       out_act=S.Softmax(), y=y, units=3)
        double_softmax = dataclasses.replace(e, loss=S.CrossEntropy(from_logits=True, sparse=sparse))
        trainer, diff = native_vs(e, {"cross-entropy-inputs"}, double_softmax)
        assert type(trainer.loss_fn) is nn.CrossEntropyLoss and diff <= 1e-12, sparse
        assert trainer.y.dtype == (torch.int64 if sparse else F64)


def test_native_softplus_threshold_and_no_native_in_xp():
    e = experiment(S.SGD(lr=0.1), hidden=S.Softplus())
    trainer = build(e, native={"softplus-threshold"})
    assert type(trainer.model[1]) is nn.Softplus and type(build(e).model[1]) is not nn.Softplus
    assert trainer.model[1](torch.tensor(25.0, dtype=F64)).item() == 25.0
    with pytest.raises(UnsupportedFeature, match="native flavour in the xp mode"):
        build(e, "xp", native={"softplus-threshold"})
    assert build(e, native={"not-an-entry"}).native == frozenset()


# ---- compile mode: the new features, correct ---------------------------------------------------------


@pytest.mark.slow  # torch.compile takes 7-10 s per model here
def test_compile_mode_with_dropout_schedule_clip_decay_and_adagrad():
    """Compiling takes seconds per model, so two short runs cover dropout, a per-step schedule (the lr
    becomes a tensor), clipping and decoupled decay, and Adagrad (whose step counter torch creates in
    float32 up front)."""
    for s in (S.SGD(lr=0.1, momentum=0.9, clip_norm=0.5, schedule=S.ExponentialDecay(unit="step", gamma=0.95),
                    **DECOUPLED),
              S.Adagrad(lr=0.1, initial_accumulator=0.1, eps=1e-10)):
        e = experiment(s, dropout=True, epochs=2)
        result = train(e, [RunSpec("torch", "float64", "cpu", "compile")], snapshot_every=1)
        record = result.records[0]
        assert record.ok, record.message
        parity = compare(result.reference, record)
        assert parity.passed and parity.max_rel <= 1e-9, parity.to_json()
    assert torch.get_default_dtype() == torch.float32


# ---- facts() ------------------------------------------------------------------------------------------

FACT_KEYS = {"linear_weight_shape", "linear_init", "default_lr", "adam_eps", "rmsprop_defaults", "adagrad_defaults",
             "adam_weight_decay_step", "adamw_weight_decay_step", "momentum_first_step", "bce_p0_y1",
             "bce_logit_input", "ce_on_probabilities", "ce_on_logits", "mse_sum", "mse_mean", "mse_broadcast",
             "leaky_relu_default", "gelu_default", "softplus_25", "batchnorm", "tf32", "random_seed0",
             "clip_at_max_norm", "conv_weight_shape", "conv_init", "conv_same_stride2", "same_padding_stride2",
             "conv_same_even_kernel", "avgpool_count_include_pad", "flatten_order", "max_pool_tie_gradient",
             "batchnorm2d_defaults", "batchnorm_running_var", "layernorm_eps", "embedding_init", "lstm_init",
             "lstm_gate_order", "gru_gate_order", "gru_reset_after"}  # the last row: test_torch_sequences


def test_facts_are_measured_and_json_serialisable():
    facts = backends.get("torch").facts()
    assert set(facts) == FACT_KEYS
    assert json.loads(json.dumps(facts)) == facts
    assert facts["linear_weight_shape"] == [2, 3]
    init = facts["linear_init"]
    assert init["bound"] == 0.1 and 0.09 < init["weight_max_abs"] <= 0.1 and 0.05 < init["bias_max_abs"] <= 0.1
    assert init["bias_all_zero"] is False
    assert facts["default_lr"] == {"SGD": 0.001, "Adam": 0.001, "RMSprop": 0.01, "Adagrad": 0.01}
    assert facts["adam_eps"] == 1e-8 and facts["rmsprop_defaults"] == {"alpha": 0.99, "eps": 1e-8}
    assert facts["adagrad_defaults"] == {"initial_accumulator_value": 0, "eps": 1e-10}
    # L2 makes the gradient 0.1, Adam normalises it to a full lr step: 1 - 0.1 · 0.1 / (0.1 + 1e-8)
    assert facts["adam_weight_decay_step"] == pytest.approx(1 - 0.1 * 0.1 / (0.1 + 1e-8), rel=1e-15)
    assert facts["adamw_weight_decay_step"] == pytest.approx(0.99, rel=1e-15)  # decay only: gradient 0
    assert facts["momentum_first_step"] == pytest.approx({"w": 0.8, "buffer": 2.0, "w2": 0.8 - 0.01 * (0.9 * 2 + 2)})
    assert facts["bce_p0_y1"] == 100.0
    assert facts["bce_logit_input"] == pytest.approx(50.0, rel=1e-6)  # float32 sigmoid(-50) = 1.9e-22 > 0
    z = np.array([2.0, 1.0, 0.1])
    p = np.exp(z) / np.exp(z).sum()
    assert facts["ce_on_logits"] == pytest.approx(-np.log(p[0]), rel=1e-14)
    assert facts["ce_on_probabilities"] == pytest.approx(-np.log(np.exp(p[0]) / np.exp(p).sum()), rel=1e-14)
    assert facts["mse_sum"] == 30.0 and facts["mse_mean"] == 7.5
    assert facts["mse_broadcast"] == {"value": pytest.approx(4 / 3), "correct": 0.0, "warned": True}
    assert facts["leaky_relu_default"] == 0.01 and facts["gelu_default"] == "none"
    assert facts["softplus_25"] == {"torch": 25.0, "exact": math.log1p(math.exp(25.0))}
    x = np.array([[1.0, 2.0], [3.0, 5.0], [6.0, 11.0]])
    bn = facts["batchnorm"]
    assert bn["momentum"] == 0.1 and bn["eps"] == 1e-5
    np.testing.assert_allclose(bn["running_mean"], 0.1 * x.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(bn["running_var"], 0.9 + 0.1 * x.var(axis=0, ddof=1), rtol=1e-15)
    assert set(facts["tf32"]) == {"matmul", "cudnn"} and all(isinstance(v, bool) for v in facts["tf32"].values())
    torch.manual_seed(0)
    assert facts["random_seed0"] == torch.rand(3, dtype=F64).tolist()
    np.testing.assert_allclose(facts["clip_at_max_norm"], np.array([3.0, 4.0]) * 5 / (5 + 1e-6), rtol=1e-15)
    assert facts["clip_at_max_norm"][0] < 3.0  # at exactly max_norm the 1e-6 still shrinks the gradient
    # convolutions: the (out, in, kh, kw) weight, U(±1/√(in·kh·kw)) for weight and bias, no strided 'same'
    assert facts["conv_weight_shape"] == [3, 2, 4, 5]
    conv = facts["conv_init"]
    assert conv["bound"] == 1 / math.sqrt(72) and 0.9 * conv["bound"] < conv["weight_max_abs"] <= conv["bound"]
    assert 0 < conv["bias_max_abs"] <= conv["bound"] and conv["bias_all_zero"] is False
    assert facts["conv_same_stride2"]["raised"] == "ValueError" and "strided" in facts["conv_same_stride2"]["message"]
    # H = 8, k = 3, s = 2: torch's padding=1 starts a window on the padded row -1, crossnn's 'same' at row 0
    assert facts["same_padding_stride2"] == {"torch_padding_1": [-1.0, 1.0, 3.0, 5.0], "same": [0.0, 2.0, 4.0, 6.0]}
    assert facts["conv_same_even_kernel"] == [0.0, 1.0, 2.0, 3.0]  # stride 1 'same': the extra row after, as crossnn
    assert facts["avgpool_count_include_pad"] is True
    order = np.arange(12).reshape(3, 2, 2)  # (C, H, W)
    assert facts["flatten_order"] == {"nn_flatten": order.ravel().tolist(),
                                      "channels_last": order.transpose(1, 2, 0).ravel().tolist()}
    assert facts["max_pool_tie_gradient"] == [[1.0, 0.0], [0.0, 0.0]]  # the first maximum, row-major


# ---- script() -----------------------------------------------------------------------------------------


def _shortened(name):
    e = crossnn.example(name)
    epochs = {"circle": 60, "adder": 5, "digits": 3, "digits-cnn": 1, "resnet-mini": 1, "digits-bn": 1,
              "token-sums": 2}.get(name, e.train.epochs)
    return dataclasses.replace(e, train=dataclasses.replace(e.train, epochs=epochs))


def _everything():
    """Dropout, a step schedule, shuffling, a graph, clipping, decoupled decay, softplus, clamped BCE."""
    init = dict(kernel_init=S.GlorotUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))
    layers = (S.Dense(name="tower.a", units=3, activation=S.Softplus(), inputs=("input",), **init),
              S.Dense(name="forward", units=2, activation=S.Tanh(), inputs=("input",), **init),
              S.Concatenate(name="join", inputs=("forward", "tower.a")),
              S.Dropout(name="drop", rate=0.3),
              S.Dense(name="out", units=1, activation=S.Sigmoid(), **init))
    y = (np.random.default_rng(2).uniform(size=(24, 1)) > 0.5).astype(float)
    e = experiment(S.RMSprop(lr=0.01, alpha=0.9, eps=1e-7, momentum=0.5, clip_norm=0.5,
                             schedule=S.StepDecay(unit="epoch", step_size=2, gamma=0.5), **DECOUPLED),
                   loss=S.BCE(log_min=-20.0), y=y, epochs=6)
    return dataclasses.replace(e, name="everything", model=S.Model(inputs=3, layers=layers))


def _torch_lowers(e) -> bool:
    """Whether the torch backend has an entry for every layer of `e` (examples of later issues' layers
    join this test when their torch entries do)."""
    return all(type(node.layer) in torch_ops.OPS for node in e.model.nodes)


SCRIPT_SPECS = {**{name: _shortened(name) for name in crossnn.examples.names() if _torch_lowers(crossnn.example(name))},
                "dropout + schedule + shuffle": experiment(
                    S.Adam(lr=0.01, eps=1e-8, schedule=S.ExponentialDecay(unit="step", gamma=0.97)), dropout=True,
                    epochs=8),
                "everything": _everything()}


@pytest.mark.slow  # tests/test_codegen.py runs three of these scripts in the default run
def test_scripts_reproduce_crossnns_torch_run(tmp_path):
    """Every seed example (circle 60 epochs; adder and digits shortened) and specs with the newer
    features, each emitted, run as `python script.py` (two at a time) and compared with crossnn's
    torch float64 run."""
    backend = backends.get("torch")
    texts = {}
    for name, e in SCRIPT_SPECS.items():
        text = backend.script(e, initial_parameters(e), load_dataset(e))
        assert "torch.set_default_dtype(torch.float64)" in text and "optimizer.zero_grad()" in text
        assert not re.search(r"^\s*(import|from)\s+crossnn", text, re.M)  # standalone: NumPy and torch only
        compile(text, name, "exec")
        path = tmp_path / f"{len(texts)}.py"
        path.write_text(text)
        texts[name] = path
    done = run_scripts(texts)
    for name, e in SCRIPT_SPECS.items():
        out = done[name]
        assert out.returncode == 0, f"{name}: {out.stderr[-2000:]}"
        got = {k: np.array(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
        record = train(e, [RunSpec("torch", "float64")]).records[0]
        assert record.ok, record.message
        diff = worst(got, record.final_params)
        print(f"script {name}: max rel vs crossnn torch {diff:.1e}")
        assert diff <= 1e-9, name
        assert worst(record.final_params, initial_parameters(e)) > 1e-6  # it trained


def test_script_reads_like_a_tutorial():
    backend = backends.get("torch")
    circle = crossnn.example("circle")
    text = backend.script(circle, initial_parameters(circle), load_dataset(circle))
    assert ("model = nn.Sequential(\n    nn.Linear(2, 5, bias=True),  # fc1: 2 -> 5\n    nn.Sigmoid(),\n"
            "    nn.Linear(5, 1, bias=True)") in text
    assert "loss_fn = nn.BCELoss()" in text and "torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.8" in text
    for line in ("optimizer.zero_grad()", "loss = loss_fn(model(xb), yb)", "loss.backward()", "optimizer.step()"):
        assert line in text
    assert "unpack(" not in text.split("INIT = {")[1]  # small arrays are literals
    assert text.index("model = nn.Sequential(") < text.index("def main():") < text.index("def load_data():")
    tower = crossnn.example("two-tower")
    text = backend.script(tower, initial_parameters(tower), load_dataset(tower))
    assert "class Net(nn.Module):" in text and "Concatenate(dim=1)" in text
    assert "torch.cat(inputs, dim=self.dim)" in text
    everything = _everything()
    text = backend.script(everything, initial_parameters(everything), load_dataset(everything))
    for piece in ("self.tower_a = nn.Sequential(", "nn.Linear(3, 3, bias=True),", "Softplus(),",
                  "self.forward_ = nn.Sequential(", "class SoftplusFunction(torch.autograd.Function):",
                  "model.drop.mask = torch.from_numpy(dropout_mask('drop', step,", "clip_grad_norm_",
                  "p.mul_(1.0 - lr * 0.05)", "group[\"lr\"] = lr", "ClampedBCELoss(log_min=-20.0)"):
        assert piece in text, piece
    assert "ChannelsLast" not in text and "import math" not in text  # only what the script uses
    custom = custom_experiment()
    with pytest.raises(UnsupportedFeature, match="my_linear_pt"):
        backend.script(custom, initial_parameters(custom), load_dataset(custom))


# ---- CUDA (skipped without a GPU) ------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
@pytest.mark.parametrize("mode", ["eager", "xp", "compile"])
def test_new_features_on_cuda_match_the_reference_and_resume_on_the_cpu(mode):
    """Dropout masks, schedules, clipping, decoupled decay, AdamW, RMSprop and Adagrad on the GPU in
    float64 (TF32 off), within the GPU tolerance; a state stopped on the GPU resumes in NumPy."""
    schedule = "exponential schedule per step (ExponentialLR)"
    names = ("adagrad decoupled", schedule) if mode == "compile" else (
        "adamw", "rmsprop centered momentum l2", "adagrad decoupled", "sgd clip", schedule)
    cases = {name: experiment(ORACLES[name][0], dropout=True) for name in names}
    for name, e in cases.items():
        result = train(e, [RunSpec("torch", "float64", "cuda", mode)], snapshot_every=1)
        record = result.records[0]
        parity = compare(result.reference, record)
        assert record.ok and parity.passed, (name, record.message, parity.to_json())
        print(f"cuda {mode} {name}: max rel {parity.max_rel:.1e}")
        stopped = train(e, [RunSpec("torch", "float64", "cuda", mode)], stop_after=6).records[0]
        resumed = numpy_run(e, 6, state=stopped.final_state).parameters()
        assert worst(resumed, result.reference.final_params) <= 1e-9, name


# ---- convolutional networks --------------------------------------------------------------------------
# torch computes images as (N, C, H, W), crossnn keeps them channels-last; crossnn's 'same' padding is
# TensorFlow's (the extra row/column after), which torch writes as an explicit pad before the window.

IMAGES = np.random.default_rng(21).standard_normal((12, 8, 8, 2))
IMAGE_LABELS = np.random.default_rng(22).integers(0, 3, size=12)
CONV = dict(kernel_init=S.HeUniform(), bias_init=S.Uniform(low=-0.2, high=0.2))
DENSE = dict(kernel_init=S.GlorotUniform(), bias_init=S.Uniform(low=-0.2, high=0.2))
#: the last pooling layer of the acceptance CNN: asymmetric 'same' (k 2, s 2 on 3×3: one row and column
#: after) or symmetric 'same' (k 3, s 1 on 3×3: one on each side)
AVG_POOLS = {"asym": dict(pool_size=(2, 2), strides=(2, 2)), "sym": dict(pool_size=(3, 3), strides=(1, 1))}


def cnn_experiment(pool="asym", count_padding=False, optimizer=None, epochs=3):
    """conv 3×3 stride 2 'same' on 8×8 (asymmetric) tanh -> max pool 2 stride 1 'same' on 4×4
    (asymmetric, -inf) -> conv 2×2 'valid' relu -> avg pool 'same' -> flatten -> dense 3 (logits),
    sparse softmax cross-entropy, Adam; 12 shuffled samples in batches of 5."""
    layers = (S.Conv2D(name="conv1", filters=3, kernel_size=(3, 3), strides=(2, 2), padding="same",
                       activation=S.Tanh(), **CONV),
              S.MaxPool2D(name="max", pool_size=(2, 2), strides=(1, 1), padding="same"),
              S.Conv2D(name="conv2", filters=4, kernel_size=(2, 2), padding="valid", activation=S.ReLU(), **CONV),
              S.AvgPool2D(name="avg", padding="same", count_padding=count_padding, **AVG_POOLS[pool]),
              S.Flatten(name="flat"),
              S.Dense(name="fc", units=3, **DENSE))
    return S.Experiment(name=f"cnn-{pool}-{count_padding}", seed=8,
                        data=S.InlineData(x=IMAGES.tolist(), y=IMAGE_LABELS.tolist()),
                        model=S.Model(inputs=[8, 8, 2], layers=layers),
                        loss=S.CrossEntropy(from_logits=True, sparse=True),
                        optimizer=optimizer or S.Adam(lr=0.01, eps=1e-8),
                        train=S.Train(epochs=epochs, batch_size=5, shuffle=True))


class HandCNN(nn.Module):
    """cnn_experiment written by hand, as a PyTorch user writes TensorFlow's 'same' padding: F.pad with
    the extra row and column after, -inf for max pooling, and the window sums over the in-input count
    for average pooling without padding counted; a permute before flatten for crossnn's (H, W, C) order."""

    def __init__(self, pool, count_padding):
        super().__init__()
        self.pool, self.count_padding = pool, count_padding
        self.conv1 = nn.Conv2d(2, 3, 3, stride=2, dtype=F64)
        self.conv2 = nn.Conv2d(3, 4, 2, dtype=F64)
        self.fc = nn.Linear(16 if pool == "asym" else 36, 3, dtype=F64)

    def forward(self, x):
        x = torch.tanh(self.conv1(nn.functional.pad(x, (0, 1, 0, 1))))  # 8 -> 4: 1 extra row/column after
        x = nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1), value=-math.inf), 2, stride=1)  # 4 -> 4
        x = torch.relu(self.conv2(x))  # 4 -> 3
        if self.pool == "sym":
            x = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=self.count_padding)
        else:  # 3 -> 2; windows of rows/columns {0, 1} and {2, padding}
            sums = nn.functional.avg_pool2d(nn.functional.pad(x, (0, 1, 0, 1)), 2, stride=2, divisor_override=1)
            x = sums / (4.0 if self.count_padding else torch.tensor([[4.0, 2.0], [2.0, 1.0]], dtype=F64))
        return self.fc(x.permute(0, 2, 3, 1).flatten(1))


def cnn_hand_loop(e, pool, count_padding):
    """HandCNN from crossnn's initial parameters (conv kernels (kh, kw, in, out) -> (out, in, kh, kw)),
    torch.optim.Adam and nn.CrossEntropyLoss over crossnn's batch plan: (final parameters, losses)."""
    data = load_dataset(e)
    plan = BatchPlan.for_experiment(e, data.n)
    p0 = initial_parameters(e)
    model = HandCNN(pool, count_padding)
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            getattr(model, name).weight.copy_(torch.from_numpy(p0[f"{name}/kernel"]).permute(3, 2, 0, 1))
            getattr(model, name).bias.copy_(torch.from_numpy(p0[f"{name}/bias"]))
        model.fc.weight.copy_(torch.from_numpy(p0["fc/kernel"]).T)
        model.fc.bias.copy_(torch.from_numpy(p0["fc/bias"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-8)
    X, Y = torch.from_numpy(data.x).permute(0, 3, 1, 2), torch.from_numpy(data.y)
    losses = []
    for step in range(plan.steps):
        rows = torch.from_numpy(plan.batch(step))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X[rows]), Y[rows])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final = {f"{name}/kernel": getattr(model, name).weight.detach().permute(2, 3, 1, 0).numpy()
             for name in ("conv1", "conv2")}
    final.update({f"{name}/bias": getattr(model, name).bias.detach().numpy() for name in ("conv1", "conv2", "fc")})
    final["fc/kernel"] = model.fc.weight.detach().numpy().T
    return final, np.array(losses)


@pytest.mark.parametrize("count_padding", [True, False], ids=["count_padding", "inside_count"])
@pytest.mark.parametrize("pool", list(AVG_POOLS))
def test_hand_written_cnn_loop_matches_reference_and_every_torch_mode(pool, count_padding):
    """The acceptance oracle: a hand-written PyTorch CNN (F.pad for the asymmetric 'same' padding,
    nn.MaxPool2d's function after a -inf pad, a permute before flatten, torch.optim.Adam) fed crossnn's
    initial parameters agrees with the NumPy reference and with crossnn's torch lowering in every mode
    but compile (below), in float64, over the whole run: parameters at every step, losses."""
    e = cnn_experiment(pool, count_padding)
    expected, expected_losses = cnn_hand_loop(e, pool, count_padding)
    modes = ["eager", "xp"] + (["onednn"] if torch.backends.mkldnn.is_available() else [])
    result = train(e, [RunSpec("torch", "float64", "cpu", mode) for mode in modes], snapshot_every=1)
    assert worst(result.reference.final_params, expected) <= 1e-9
    np.testing.assert_allclose(result.reference.losses, expected_losses, rtol=1e-9, atol=0)
    for record in result.records:
        parity = compare(result.reference, record)
        assert record.ok and parity.passed and parity.max_rel <= 1e-9, (record.spec.label, parity.to_json())
        assert worst(record.final_params, expected) <= 1e-9, record.spec.label
        np.testing.assert_allclose(record.losses, expected_losses, rtol=1e-9, atol=0)
        print(f"{pool} {count_padding} {record.spec.mode}: vs hand {worst(record.final_params, expected):.1e}")
    assert worst(expected, initial_parameters(e)) > 1e-3  # it trained


def test_cnn_modules_read_like_pytorch():
    printed = str(build(cnn_experiment("asym", False)).model)
    for piece in ("(0): ZeroPad2d((0, 1, 0, 1))", "(1): Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2))",
                  "(3): ConstantPad2d(padding=(0, 1, 0, 1), value=-inf)",
                  "(4): MaxPool2d(kernel_size=(2, 2), stride=(1, 1)",
                  "(5): Conv2d(3, 4, kernel_size=(2, 2), stride=(1, 1))",
                  "(7): AvgPoolInside(", "(8): ChannelsLast()", "(9): Flatten(",
                  "(10): Linear(in_features=16, out_features=3, bias=True)"):
        assert piece in printed, piece
    symmetric = str(build(cnn_experiment("sym", True)).model)
    assert "AvgPool2d(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in symmetric  # count_include_pad default
    (pool,) = [m for m in build(cnn_experiment("sym", False)).model if isinstance(m, nn.AvgPool2d)]
    assert pool.count_include_pad is False and pool.padding == (1, 1)


@pytest.mark.slow  # torch.compile takes 7-10 s per model here
def test_compile_mode_trains_a_cnn():
    """One short compiled run (compiling a CNN takes a while): asymmetric padding, both pools."""
    e = cnn_experiment("asym", False, epochs=1)
    result = train(e, [RunSpec("torch", "float64", "cpu", "compile")], snapshot_every=1)
    parity = compare(result.reference, result.records[0])
    assert result.records[0].ok and parity.passed and parity.max_rel <= 1e-9, parity.to_json()


def _image_experiment(name, layers, inputs=(6, 5, 2), y=None, loss=S.MSE(), optimizer=None, x=None, n=8):
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((n, *inputs)) if x is None else x
    model = S.Model(inputs=list(inputs), layers=layers)
    y = rng.standard_normal((n, *model.output_shape)) if y is None else y
    return S.Experiment(name=name, seed=2, data=S.InlineData(x=x.tolist(), y=np.asarray(y).tolist()), model=model,
                        loss=loss, optimizer=optimizer or S.SGD(lr=0.05, momentum=0.9),
                        train=S.Train(epochs=2, batch_size=4, shuffle=True))


def _tie_images():
    """Whole numbers 0..2 in two channels: a 1×1 convolution with a constant kernel sums them, so max
    pool windows hold equal largest values made of different inputs, and which one gets the gradient
    changes the kernel's gradient."""
    return np.random.default_rng(5).integers(0, 3, size=(8, 4, 4, 2)).astype(float)


CONV_CASES = {
    "dilation, odd input, stride (1, 2)": _image_experiment("dil", (
        S.Conv2D(name="c", filters=3, kernel_size=(3, 2), strides=(1, 2), dilation=(2, 1), padding="same",
                 activation=S.GELU(approximate="tanh"), **CONV),
        S.Flatten(name="f"), S.Dense(name="d", units=2, **DENSE))),
    "no bias, global average pool, sigmoid": _image_experiment("gap", (
        S.Conv2D(name="c", filters=4, kernel_size=(2, 2), strides=(2, 2), padding="valid", use_bias=False,
                 activation=S.Sigmoid(), **CONV),
        S.GlobalAvgPool2D(name="g"), S.Dense(name="d", units=2, **DENSE))),
    "max pool ties": _image_experiment("ties", (
        S.Conv2D(name="c", filters=1, kernel_size=(1, 1), padding="valid", kernel_init=S.Constant(value=1.0),
                 bias_init=S.Zeros()),
        S.MaxPool2D(name="m", pool_size=(2, 2), padding="valid"), S.Flatten(name="f"),
        S.Dense(name="d", units=2, **DENSE)), inputs=(4, 4, 2), x=_tie_images()),
    "image output: dense on an image, softmax over channels, dropout, reshape": _image_experiment("img", (
        S.Conv2D(name="c", filters=3, kernel_size=(3, 3), padding="same", activation=S.Tanh(), **CONV),
        S.Dropout(name="drop", rate=0.3),
        S.Dense(name="pixel", units=4, activation=S.ReLU(), **DENSE),
        S.ActivationLayer(name="soft", activation=S.Softmax()),
        S.Reshape(name="r", shape=(5, 6, 4)),
        S.AvgPool2D(name="a", pool_size=(2, 2), strides=(1, 1), padding="same", count_padding=False))),
    "residual graph: add, concatenate over channels and over width": _image_experiment("res", (
        S.Conv2D(name="a", filters=2, kernel_size=(3, 3), padding="same", activation=S.ReLU(), inputs=("input",),
                 **CONV),
        S.Add(name="skip", inputs=("a", "input")),
        S.Concatenate(name="channels", axis=-1, inputs=("skip", "input")),
        S.Concatenate(name="width", axis=2, inputs=("channels", "channels")),
        S.MaxPool2D(name="m", pool_size=(3, 3), strides=(2, 2), padding="same"),
        S.Flatten(name="f"), S.Dense(name="d", units=3, **DENSE)),
        y=np.eye(3)[np.random.default_rng(1).integers(0, 3, size=8)],
        loss=S.CrossEntropy(from_logits=True, sparse=False), optimizer=S.RMSprop(lr=0.01, alpha=0.9, eps=1e-7)),
    "pixel classes: cross-entropy over the channels of an image output": _image_experiment("pix", (
        S.Conv2D(name="c", filters=3, kernel_size=(3, 3), padding="same", **CONV),),
        y=np.eye(3)[np.random.default_rng(2).integers(0, 3, size=(8, 6, 5))],
        loss=S.CrossEntropy(from_logits=True, sparse=False), optimizer=S.Adam(lr=0.01, eps=1e-8)),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_layer_conformance_in_every_fast_mode(case):
    """Every new layer and the layout conversions it needs, against the reference at every step, in
    eager, xp and onednn (compile: test_compile_mode_trains_a_cnn)."""
    modes = ["eager", "xp"] + (["onednn"] if torch.backends.mkldnn.is_available() else [])
    result = train(CONV_CASES[case], [RunSpec("torch", "float64", "cpu", mode) for mode in modes], snapshot_every=1)
    for record in result.records:
        parity = compare(result.reference, record)
        assert record.ok and parity.passed and parity.max_rel <= 1e-9, (record.spec.label, record.message,
                                                                         parity.to_json())
        assert parity.loss_max_abs <= 1e-9 * max(1.0, float(np.max(np.abs(result.reference.losses))))
    assert worst(result.reference.final_params, initial_parameters(CONV_CASES[case])) > 1e-4


def test_max_pool_ties_really_tie_and_the_first_maximum_gets_the_gradient():
    """In the ties case, windows with equal largest sums of different inputs exist; the gradient of
    torch's max_pool2d goes to the first of them (row-major), as the reference's does."""
    x = _tie_images()
    sums = x.sum(axis=3).reshape(8, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(8, 2, 2, 4)
    ties = (sums == sums.max(axis=3, keepdims=True)).sum(axis=3) > 1
    assert ties.sum() >= 10
    pooled = torch.from_numpy(sums.reshape(-1, 1, 2, 2)).requires_grad_()
    nn.functional.max_pool2d(pooled, 2).sum().backward()
    first = np.argmax(sums.reshape(-1, 4), axis=1)  # NumPy's argmax: the first largest
    np.testing.assert_array_equal(pooled.grad.reshape(-1, 4).argmax(axis=1).numpy(), first)


def test_cnn_state_round_trips_through_torch_state_dict_and_resumes_elsewhere(tmp_path):
    """A CNN stopped in torch (eager and xp), exported as torch.save'd state_dicts (conv weight
    (out, in, kh, kw), Adam's buffers in the same layout), read back, resumed in NumPy, and resumed
    by hand from the file."""
    e = cnn_experiment("asym", False, epochs=4)
    backend = backends.get("torch")
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    uninterrupted = numpy_run(e).parameters()
    for mode in ("eager", "xp"):
        trainer = build(e, mode)
        trainer.run(plan.batches(0, 5))
        state = trainer.state()
        assert state.slots["exp_avg"]["conv1/kernel"].shape == (3, 3, 2, 3)
        assert worst(numpy_run(e, 5, state=state).parameters(), uninterrupted) <= 1e-9, mode
    path = tmp_path / "cnn.pt"
    backend.export_native(e, state, path)
    saved = torch.load(path)
    weight = saved["model"]["1.weight"]
    assert tuple(weight.shape) == (3, 2, 3, 3)
    np.testing.assert_array_equal(weight.numpy(), state.params["conv1/kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(saved["optimizer"]["state"][0]["exp_avg"].numpy(),
                                  state.slots["exp_avg"]["conv1/kernel"].transpose(3, 2, 0, 1))
    back = backend.import_native(e, path)
    assert back.step == 5 and worst(back.params, state.params) == 0.0
    for slot in state.slots:
        assert worst(back.slots[slot], state.slots[slot]) == 0.0
    resumed = build(e)
    resumed.load_state(back)
    resumed.run(plan.batches(5, plan.steps))
    assert worst(resumed.parameters(), uninterrupted) <= 1e-9


def test_native_default_init_is_nn_conv2d_after_manual_seed():
    e = cnn_experiment()
    got = build(e, native={"default-init"}).parameters()
    torch.manual_seed(e.seed)
    conv1 = nn.Conv2d(2, 3, 3, stride=2, dtype=F64)
    np.testing.assert_array_equal(got["conv1/kernel"], conv1.weight.detach().permute(2, 3, 1, 0).numpy())
    np.testing.assert_array_equal(got["conv1/bias"], conv1.bias.detach().numpy())
    assert np.max(np.abs(got["conv2/kernel"])) <= 1 / math.sqrt(3 * 2 * 2)


def test_an_nn_sequential_cnn_imports_with_the_flatten_permutation():
    """A user's CNN becomes a spec whose NumPy forward pass computes the module's function: 'same'
    padding read from torch's symmetric ints and from an nn.ZeroPad2d, count_include_pad, and the
    nn.Linear after nn.Flatten of (C, H, W) features given crossnn's (H, W, C) column order."""
    torch.manual_seed(4)
    module = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(4, 3, 3, stride=2), nn.Tanh(),
                           nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                           nn.Flatten(), nn.Dropout(0.25), nn.Linear(12, 5), nn.Softmax(dim=1)).double().eval()
    backend = backends.get("torch")
    model, params = backend.import_model(module, inputs=[8, 8, 2])
    assert [layer.kind for layer in model.layers] == ["conv2d", "max_pool2d", "conv2d", "avg_pool2d", "flatten",
                                                      "dropout", "dense"]
    conv1, _, conv2, avg, _, drop, dense = model.layers
    assert (conv1.padding, conv2.padding, conv2.strides, avg.padding, avg.count_padding) == \
        ("same", "same", (2, 2), "same", False)
    assert conv1.activation == S.ReLU() and dense.activation == S.Softmax() and drop.rate == 0.25
    assert params["0/kernel"].shape == (3, 3, 2, 4)
    x = np.random.default_rng(3).standard_normal((5, 8, 8, 2))
    e = S.Experiment(name="imported", seed=0, data=S.InlineData(x=x.tolist(), y=np.zeros((5, 5)).tolist()),
                     model=model, loss=S.MSE(), optimizer=S.SGD(lr=0.1), train=S.Train(epochs=1, batch_size=5))
    reference = backends.get("numpy").build(e, params, load_dataset(e), dtype="float64", device="cpu", mode="default")
    expected = module(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(reference.predict(x), expected, rtol=1e-12, atol=1e-15)
    flat_kernel = module[9].weight.detach().numpy().T
    assert not np.allclose(params["9/kernel"], flat_kernel)  # reordered, not merely transposed
    assert backend.import_model(nn.Sequential(nn.Linear(3, 2)))[0].inputs == 3


@pytest.mark.parametrize("module, message", [
    (nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1)), r"neither 'valid' nor crossnn's 'same'"),
    (nn.Sequential(nn.Conv2d(2, 3, 3, padding_mode="reflect")), "padding_mode='zeros'"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), "ceil_mode"),
    (nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten()), "ends before the layer"),
    (nn.Sequential(nn.Conv2d(2, 3, 3), nn.Linear(6, 2)), "acts on the width"),
    (nn.Sequential(nn.Conv2d(2, 3, 3), nn.Softmax(dim=-1)), "no crossnn equivalent"),
])
def test_import_refuses_what_crossnn_cannot_express(module, message):
    with pytest.raises(UnsupportedFeature, match=message):
        backends.get("torch").import_model(module, inputs=[8, 8, 2])
    with pytest.raises(UnsupportedFeature, match=r"input shape \(inputs=\[H, W, C\]\)"):
        backends.get("torch").import_model(nn.Sequential(nn.Conv2d(2, 3, 3)))


@pytest.mark.parametrize("count_padding", [True, False])
def test_tutorial_loop_covers_cnns_and_ends_where_the_lowering_ends(count_padding):
    """The hand-written tutorial loop (nn.ZeroPad2d, nn.ConstantPad2d(-inf), its own 'same' average
    pool, a permute before flatten) on the CNN, in float64 and float32, against the eager lowering."""
    backend = backends.get("torch")
    for dtype, tolerance in (("float64", 1e-12), ("float32", 1e-5)):
        e = cnn_experiment("asym", count_padding)
        data = load_dataset(e)
        params = cast(initial_parameters(e), dtype)
        hand = backend.tutorial(e, params, data, dtype=dtype, device="cpu")
        lowered = backend.build(e, params, data, dtype=dtype, device="cpu", mode="eager")
        batches = BatchPlan.for_experiment(e, data.n).batches(0, 9)
        np.testing.assert_allclose(hand.run(batches), lowered.run(batches), rtol=tolerance, atol=0)
        assert worst(hand.parameters(), lowered.parameters()) <= tolerance, dtype
        np.testing.assert_allclose(hand.predict(data.x[:3]), lowered.predict(data.x[:3]), rtol=tolerance)
    assert [type(m).__name__ for m in hand.model] == [
        "ZeroPad2d", "Conv2d", "Tanh", "ConstantPad2d", "MaxPool2d", "Conv2d", "ReLU",
        *(["ZeroPad2d", "AvgPool2d"] if count_padding else ["AvgPoolSame"]), "Permute", "Flatten", "Linear"]


SCRIPT_SPECS["cnn: asymmetric 'same', -inf pad, in-input average"] = cnn_experiment("asym", False)
SCRIPT_SPECS["cnn: image output, graph, reshape, dropout"] = CONV_CASES[
    "image output: dense on an image, softmax over channels, dropout, reshape"]
SCRIPT_SPECS["cnn: residual graph"] = CONV_CASES["residual graph: add, concatenate over channels and over width"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
@pytest.mark.parametrize("mode", ["eager", "xp", "compile"])
def test_cnns_on_cuda_match_the_reference(mode):
    """The acceptance CNNs and the conformance cases on the GPU, float64 (TF32 off, deterministic
    algorithms on: no layer may pick a kernel torch refuses there) and float32; the tutorial loop on
    the GPU ends where the lowering ends."""
    cases = [cnn_experiment("asym", False, epochs=1)] if mode == "compile" else [
        cnn_experiment("asym", False), cnn_experiment("sym", True), *CONV_CASES.values()]
    for e in cases:
        result = train(e, [RunSpec("torch", dtype, "cuda", mode) for dtype in ("float64", "float32")],
                       snapshot_every=1)
        for record in result.records:
            parity = compare(result.reference, record)
            assert record.ok and parity.passed, (e.name, record.spec.label, record.message, parity.to_json())
            assert "cuda" in record.description
    if mode == "eager":
        e = cnn_experiment("asym", False)
        data = load_dataset(e)
        params = cast(initial_parameters(e), "float64")
        backend = backends.get("torch")
        hand = backend.tutorial(e, params, data, dtype="float64", device="cuda")
        lowered = backend.build(e, params, data, dtype="float64", device="cuda", mode="eager")
        batches = BatchPlan.for_experiment(e, data.n).batches(0, 9)
        np.testing.assert_allclose(hand.run(batches), lowered.run(batches), rtol=1e-12, atol=0)
