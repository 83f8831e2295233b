"""The PyTorch backend's normalization, embedding and recurrent layers (issue 15) against independent
references:

- training loops written by hand with nn.BatchNorm1d/2d (momentum = 1 - crossnn's), nn.LayerNorm,
  nn.Embedding, nn.LSTM and nn.GRU, fed crossnn's initial parameters converted to torch's layout here
  (transposes and the GRU's gate swap written out, not the backend's layouts), against the NumPy
  reference and every torch mode, moving statistics included;
- the lowering's other branches (crossnn's BatchNorm, LayerNormNoScale and Recurrent modules, axes
  moved, nn.RNN, ids shaped as images) against the reference in every mode;
- layer state in checkpoints: stop in torch after steps that moved the statistics, resume in NumPy
  or TensorFlow; torch.save'd state_dicts with torch's gate order and split biases, continued by a
  hand-written loop;
- the native flavour, model import, facts, the tutorial loop and emitted scripts of these layers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from crossnn import backends  # noqa: E402
from crossnn import spec as S  # noqa: E402
from crossnn.checkpoint import CheckpointError  # noqa: E402
from crossnn.data import load_dataset  # noqa: E402
from crossnn.errors import UnsupportedFeature  # noqa: E402
from crossnn.harness import RunSpec, train  # noqa: E402
from crossnn.params import cast, initial_parameters  # noqa: E402
from crossnn.parity import compare  # noqa: E402
from crossnn.plan import BatchPlan  # noqa: E402
from tests.scripts import run_scripts  # noqa: E402

pytestmark = pytest.mark.skipif("torch" not in backends.available(), reason="the torch backend is unavailable")

F64 = torch.float64
MODES = ("eager", "compile", "xp", "onednn")
RNG = np.random.default_rng(15)
DENSE = dict(kernel_init=S.GlorotUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))
RECURRENT = dict(kernel_init=S.GlorotUniform(), recurrent_init=S.Orthogonal(), bias_init=S.Normal(mean=0.0,
                                                                                                 stddev=0.2))
IDS = RNG.integers(0, 7, size=(24, 5)).astype(float)
LABELS = RNG.integers(0, 3, size=24)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(float(np.max(np.abs(b))), 1e-300))


def worst(got: dict, expected: dict) -> float:
    assert set(got) == set(expected)
    return max(rel(got[name], expected[name]) for name in expected)


def build(e, mode="eager", native=frozenset(), dtype="float64"):
    return backends.get("torch").build(e, cast(initial_parameters(e), dtype), load_dataset(e), dtype=dtype,
                                       device="cpu", mode=mode, native=native)


def numpy_run(e, start=0, stop=None, state=None):
    data = load_dataset(e)
    plan = BatchPlan.for_experiment(e, data.n)
    trainer = backends.get("numpy").build(e, initial_parameters(e), data, dtype="float64", device="cpu",
                                          mode="default")
    if state is not None:
        trainer.load_state(state)
    trainer.run(plan.batches(start, plan.steps if stop is None else stop))
    return trainer


def bn(name, **kw):
    return S.BatchNorm(name=name, **{"momentum": 0.8, "epsilon": 1e-3, "running_variance": "unbiased",
                                     "gamma_init": S.Uniform(low=0.5, high=1.5),
                                     "beta_init": S.Normal(mean=0.0, stddev=0.1),
                                     "moving_mean_init": S.Uniform(low=-0.2, high=0.2),
                                     "moving_variance_init": S.Uniform(low=0.5, high=1.5), **kw})


def experiment(name, inputs, layers, x, y, loss=S.MSE(), optimizer=S.Adam(lr=0.01, eps=1e-8), epochs=3,
               batch_size=8):
    return S.Experiment(name=name, seed=8, data=S.InlineData(x=np.asarray(x).tolist(), y=np.asarray(y).tolist()),
                        model=S.Model(inputs=inputs, layers=tuple(layers)), loss=loss, optimizer=optimizer,
                        train=S.Train(epochs=epochs, batch_size=batch_size, shuffle=True))


# ---- hand-written PyTorch loops: the oracles -----------------------------------------------------------


def gru_gates(w: torch.Tensor) -> torch.Tensor:
    """Keras' gate blocks z, r, h along the last axis as torch's r, z, n (and back: the swap is its own
    inverse)."""
    z, r, h = w.chunk(3, -1)
    return torch.cat([r, z, h], -1)


def hand_train(e, model, optimizer, loss_fn, x, y) -> list[float]:
    """The tutorial's loop over crossnn's batch plan."""
    plan = BatchPlan.for_experiment(e, len(x))
    losses = []
    model.train()
    for step in range(plan.steps):
        rows = torch.from_numpy(plan.batch(step))
        optimizer.zero_grad()
        loss = loss_fn(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def bn_cnn():
    """conv (no bias) -> batch_norm on the channels -> relu -> flatten -> dense, on 6x6x2 images."""
    layers = (S.Conv2D(name="conv", filters=3, kernel_size=3, padding="same", use_bias=False,
                       kernel_init=S.HeUniform(), bias_init=S.Zeros()),
              bn("bn"), S.ActivationLayer(name="relu", activation=S.ReLU()), S.Flatten(name="flat"),
              S.Dense(name="out", units=3, **DENSE))
    return experiment("bn-cnn", [6, 6, 2], layers, RNG.standard_normal((24, 6, 6, 2)), LABELS,
                      loss=S.CrossEntropy(from_logits=True, sparse=True))


class HandBNCNN(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False, dtype=F64)
        self.bn = nn.BatchNorm2d(3, eps=1e-3, momentum=1 - 0.8, dtype=F64)
        self.fc = nn.Linear(108, 3, dtype=F64)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(p["conv/kernel"]).permute(3, 2, 0, 1))
            self.bn.weight.copy_(torch.from_numpy(p["bn/gamma"]))
            self.bn.bias.copy_(torch.from_numpy(p["bn/beta"]))
            self.bn.running_mean.copy_(torch.from_numpy(p["bn/moving_mean"]))
            self.bn.running_var.copy_(torch.from_numpy(p["bn/moving_variance"]))
            self.fc.weight.copy_(torch.from_numpy(p["out/kernel"]).T)
            self.fc.bias.copy_(torch.from_numpy(p["out/bias"]))

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.permute(0, 2, 3, 1).flatten(1))  # crossnn flattens (H, W, C)

    def canonical(self):
        t = {"conv/kernel": self.conv.weight.permute(2, 3, 1, 0), "bn/gamma": self.bn.weight, "bn/beta": self.bn.bias,
             "bn/moving_mean": self.bn.running_mean, "bn/moving_variance": self.bn.running_var,
             "out/kernel": self.fc.weight.T, "out/bias": self.fc.bias}
        return {k: v.detach().numpy().copy() for k, v in t.items()}


def bn_ln_mlp():
    """dense -> batch_norm (Keras' momentum 0.99) -> dense -> layer_norm -> dense, momentum SGD."""
    layers = (S.Dense(name="h", units=5, activation=S.Tanh(), **DENSE), bn("bn", momentum=0.99),
              S.Dense(name="g", units=4, **DENSE),
              S.LayerNorm(name="ln", epsilon=1e-5, gamma_init=S.Uniform(low=0.5, high=1.5),
                          beta_init=S.Normal(mean=0.0, stddev=0.1)),
              S.Dense(name="out", units=1, **DENSE))
    return experiment("bn-ln-mlp", 3, layers, RNG.standard_normal((24, 3)), RNG.standard_normal((24, 1)),
                      optimizer=S.SGD(lr=0.05, momentum=0.9))


class HandBNLN(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.h, self.g, self.out = nn.Linear(3, 5, dtype=F64), nn.Linear(5, 4, dtype=F64), nn.Linear(4, 1, dtype=F64)
        self.bn = nn.BatchNorm1d(5, eps=1e-3, momentum=1 - 0.99, dtype=F64)
        self.ln = nn.LayerNorm(4, eps=1e-5, dtype=F64)
        with torch.no_grad():
            for name in ("h", "g", "out"):
                getattr(self, name).weight.copy_(torch.from_numpy(p[f"{name}/kernel"]).T)
                getattr(self, name).bias.copy_(torch.from_numpy(p[f"{name}/bias"]))
            for name in ("bn", "ln"):
                getattr(self, name).weight.copy_(torch.from_numpy(p[f"{name}/gamma"]))
                getattr(self, name).bias.copy_(torch.from_numpy(p[f"{name}/beta"]))
            self.bn.running_mean.copy_(torch.from_numpy(p["bn/moving_mean"]))
            self.bn.running_var.copy_(torch.from_numpy(p["bn/moving_variance"]))

    def forward(self, x):
        return self.out(self.ln(self.g(self.bn(torch.tanh(self.h(x))))))

    def canonical(self):
        t = {f"{n}/kernel": getattr(self, n).weight.T for n in ("h", "g", "out")}
        t.update({f"{n}/bias": getattr(self, n).bias for n in ("h", "g", "out")})
        t.update({f"{n}/gamma": getattr(self, n).weight for n in ("bn", "ln")})
        t.update({f"{n}/beta": getattr(self, n).bias for n in ("bn", "ln")})
        t.update({"bn/moving_mean": self.bn.running_mean, "bn/moving_variance": self.bn.running_var})
        return {k: v.detach().numpy().copy() for k, v in t.items()}


def embedding_lstm():
    """ids -> embedding -> lstm (last step) -> dense, as PyTorch's word-language-model example writes it."""
    layers = (S.Embedding(name="embed", input_dim=7, output_dim=4, embeddings_init=S.Normal(mean=0.0, stddev=1.0)),
              S.LSTM(name="lstm", units=5, unit_forget_bias=True, **RECURRENT), S.Dense(name="out", units=3, **DENSE))
    return experiment("embed-lstm", [5], layers, IDS, LABELS, loss=S.CrossEntropy(from_logits=True, sparse=True))


class HandLSTM(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.embed = nn.Embedding(7, 4, dtype=F64)
        self.lstm = nn.LSTM(4, 5, batch_first=True, dtype=F64)
        self.fc = nn.Linear(5, 3, dtype=F64)
        with torch.no_grad():
            self.embed.weight.copy_(torch.from_numpy(p["embed/embeddings"]))
            self.lstm.weight_ih_l0.copy_(torch.from_numpy(p["lstm/kernel"]).T)  # gates i, f, g, o in both
            self.lstm.weight_hh_l0.copy_(torch.from_numpy(p["lstm/recurrent_kernel"]).T)
            self.lstm.bias_ih_l0.copy_(torch.from_numpy(p["lstm/bias"]))
            self.lstm.bias_hh_l0.zero_()  # Keras' one bias: torch's second one held at zero
        self.lstm.bias_hh_l0.requires_grad_(False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(p["out/kernel"]).T)
            self.fc.bias.copy_(torch.from_numpy(p["out/bias"]))

    def forward(self, ids):
        output, _ = self.lstm(self.embed(ids))
        return self.fc(output[:, -1])

    def canonical(self):
        t = {"embed/embeddings": self.embed.weight, "lstm/kernel": self.lstm.weight_ih_l0.T,
             "lstm/recurrent_kernel": self.lstm.weight_hh_l0.T,
             "lstm/bias": self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0,
             "out/kernel": self.fc.weight.T, "out/bias": self.fc.bias}
        return {k: v.detach().numpy().copy() for k, v in t.items()}


def embedding_gru():
    """ids -> embedding -> gru (reset_after, every step) -> flatten -> dense, momentum SGD."""
    layers = (S.Embedding(name="embed", input_dim=7, output_dim=3, embeddings_init=S.Uniform(low=-0.5, high=0.5)),
              S.GRU(name="gru", units=4, reset_after=True, return_sequences=True, **RECURRENT),
              S.Flatten(name="flat"), S.Dense(name="out", units=2, **DENSE))
    return experiment("embed-gru", [5], layers, IDS, RNG.standard_normal((24, 2)),
                      optimizer=S.SGD(lr=0.1, momentum=0.9))


class HandGRU(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.embed = nn.Embedding(7, 3, dtype=F64)
        self.gru = nn.GRU(3, 4, batch_first=True, dtype=F64)
        self.fc = nn.Linear(20, 2, dtype=F64)
        with torch.no_grad():
            self.embed.weight.copy_(torch.from_numpy(p["embed/embeddings"]))
            self.gru.weight_ih_l0.copy_(gru_gates(torch.from_numpy(p["gru/kernel"])).T)
            self.gru.weight_hh_l0.copy_(gru_gates(torch.from_numpy(p["gru/recurrent_kernel"])).T)
            bias = torch.from_numpy(p["gru/bias"])  # (2, 3u): the input row and the recurrent row
            self.gru.bias_ih_l0.copy_(gru_gates(bias[0]))
            self.gru.bias_hh_l0.copy_(gru_gates(bias[1]))
            self.fc.weight.copy_(torch.from_numpy(p["out/kernel"]).T)
            self.fc.bias.copy_(torch.from_numpy(p["out/bias"]))

    def forward(self, ids):
        output, _ = self.gru(self.embed(ids))
        return self.fc(output.flatten(1))

    def canonical(self):
        t = {"embed/embeddings": self.embed.weight, "gru/kernel": gru_gates(self.gru.weight_ih_l0.T),
             "gru/recurrent_kernel": gru_gates(self.gru.weight_hh_l0.T),
             "gru/bias": torch.stack([gru_gates(self.gru.bias_ih_l0), gru_gates(self.gru.bias_hh_l0)]),
             "out/kernel": self.fc.weight.T, "out/bias": self.fc.bias}
        return {k: v.detach().numpy().copy() for k, v in t.items()}


ORACLES = {
    "nn.BatchNorm2d cnn, adam": (bn_cnn, HandBNCNN, lambda m: torch.optim.Adam(m.parameters(), lr=0.01, eps=1e-8),
                                 nn.CrossEntropyLoss()),
    "nn.BatchNorm1d + nn.LayerNorm mlp, sgd": (bn_ln_mlp, HandBNLN,
                                               lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
                                               nn.MSELoss()),
    "nn.Embedding + nn.LSTM, adam": (embedding_lstm, HandLSTM,
                                     lambda m: torch.optim.Adam(m.parameters(), lr=0.01, eps=1e-8),
                                     nn.CrossEntropyLoss()),
    "nn.Embedding + nn.GRU sequences, sgd": (embedding_gru, HandGRU,
                                             lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                                             nn.MSELoss()),
}


def oracle_inputs(e):
    data = load_dataset(e)
    if e.model.layers[0].reads_ids:
        x = torch.from_numpy(data.x).long()
    elif data.x.ndim == 4:
        x = torch.from_numpy(data.x).permute(0, 3, 1, 2).contiguous()
    else:
        x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    return x, y


@pytest.mark.parametrize("case", list(ORACLES))
def test_hand_written_torch_loop_matches_reference_and_every_mode(case):
    make, Hand, optimizer, loss_fn = ORACLES[case]
    e = make()
    hand = Hand(initial_parameters(e))
    x, y = oracle_inputs(e)
    losses = hand_train(e, hand, optimizer(hand), loss_fn, x, y)
    got = hand.canonical()
    result = train(e, [RunSpec("torch", "float64", "cpu", mode) for mode in MODES])
    reference = result.reference
    moved = [name for name in got if "moving" in name]
    assert all(rel(got[name], initial_parameters(e)[name]) > 1e-3 for name in moved)  # the statistics moved
    assert worst(got, reference.final_params) <= 1e-9, "hand-written loop vs the NumPy reference"
    np.testing.assert_allclose(losses, reference.losses, rtol=1e-9)
    for record in result.records:
        assert record.ok, record.message
        diff = worst(record.final_params, got)
        print(f"{case} {record.spec.mode}: max rel vs the hand-written loop {diff:.1e}")
        assert diff <= 1e-9, record.spec.mode


def test_predict_uses_the_moving_statistics():
    """After training, predict() (eval mode) equals the hand-written model's eval() output and the
    NumPy trainer's, and differs from the training-mode output."""
    e = bn_cnn()
    data = load_dataset(e)
    plan = BatchPlan.for_experiment(e, data.n)
    hand = HandBNCNN(initial_parameters(e))
    x, y = oracle_inputs(e)
    hand_train(e, hand, torch.optim.Adam(hand.parameters(), lr=0.01, eps=1e-8), nn.CrossEntropyLoss(), x, y)
    hand.eval()
    with torch.no_grad():
        expected = hand(x).numpy()
        hand.train()
        training_mode = hand(x).numpy()
    reference = numpy_run(e).predict(data.x)
    assert rel(expected, reference) <= 1e-9 and rel(training_mode, expected) > 1e-3
    for mode in ("eager", "xp"):
        trainer = build(e, mode)
        trainer.run(plan.batches(0, plan.steps))
        assert rel(trainer.predict(data.x), expected) <= 1e-9, mode


def test_the_lowering_uses_torchs_modules_where_they_compute_the_spec():
    kinds = {name: [type(m).__name__ for m in build(make()).model] for name, (make, *_) in ORACLES.items()}
    assert kinds == {"nn.BatchNorm2d cnn, adam": ["Conv2d", "BatchNorm2d", "ReLU", "ChannelsLast", "Flatten", "Linear"],
                     "nn.BatchNorm1d + nn.LayerNorm mlp, sgd": ["Linear", "Tanh", "BatchNorm1d", "Linear", "LayerNorm",
                                                                "Linear"],
                     "nn.Embedding + nn.LSTM, adam": ["Embedding", "LSTM", "RecurrentOutput", "Linear"],
                     "nn.Embedding + nn.GRU sequences, sgd": ["Embedding", "GRU", "RecurrentOutput", "Flatten",
                                                              "Linear"]}
    model = build(bn_cnn()).model
    assert (model[1].momentum, model[1].eps) == (pytest.approx(0.2), 1e-3)
    lstm = build(embedding_lstm()).model[1]
    assert not lstm.bias_hh_l0.requires_grad and torch.all(lstm.bias_hh_l0 == 0)


# ---- the lowering's other branches against the reference --------------------------------------------------

SEQUENCES = RNG.standard_normal((24, 5, 3))


def _sequence(name, *layers, x=SEQUENCES, optimizer=S.Adam(lr=0.01, eps=1e-8)):
    return experiment(name, list(x.shape[1:]), (*layers, S.Dense(name="out", units=2, **DENSE)), x,
                      RNG.standard_normal((24, 2)), optimizer=optimizer, epochs=2)


def _images(name, *layers):
    return experiment(name, [4, 5, 2], (*layers, S.Flatten(name="flat"), S.Dense(name="out", units=2, **DENSE)),
                      RNG.standard_normal((24, 4, 5, 2)), RNG.standard_normal((24, 2)), epochs=2)


CONV = S.Conv2D(name="conv", filters=3, kernel_size=2, padding="same", use_bias=False, kernel_init=S.HeUniform(),
                bias_init=S.Zeros())
BRANCHES = {
    # crossnn's BatchNorm (biased running variance), the features of (N, T, F) moved to dim 1 and back
    "batch_norm biased on sequences": _sequence("bs", bn("bn", running_variance="biased"), S.Flatten(name="flat")),
    # the time axis of sequences is dim 1 already: nn.BatchNorm1d without moving
    "batch_norm over time steps": _sequence("bt", bn("bn", axis=1), S.Flatten(name="flat")),
    "batch_norm beta without gamma": _sequence("bc", S.Dense(name="h", units=3, use_bias=False, **DENSE),
                                               S.Flatten(name="f"),
                                               bn("bn", scale=False)),
    "batch_norm neither gamma nor beta, images' height": _images("bh", CONV, bn("bn", axis=1, center=False,
                                                                                 scale=False)),
    "batch_norm biased on images": _images("bb", bn("bn", running_variance="biased", momentum=0.5)),
    "layer_norm beta without gamma over time": _sequence("lt", S.LayerNorm(name="ln", axis=1, epsilon=1e-3,
                                                                           scale=False), S.Flatten(name="flat")),
    "layer_norm without affine on images": _images("li", CONV, S.LayerNorm(name="ln", epsilon=1e-3, center=False,
                                                                           scale=False)),
    "simple_rnn relu (nn.RNN)": _sequence("rr", S.SimpleRNN(name="rnn", units=4, activation=S.ReLU(), **RECURRENT),
                                          optimizer=S.SGD(lr=0.05, momentum=0.9)),
    "simple_rnn sigmoid sequences (Recurrent)": _sequence(
        "rs", S.SimpleRNN(name="rnn", units=3, activation=S.Sigmoid(), return_sequences=True, **RECURRENT),
        S.Flatten(name="flat")),
    "lstm softplus, hard recurrent tanh (Recurrent)": _sequence(
        "ls", S.LSTM(name="lstm", units=3, activation=S.Softplus(), recurrent_activation=S.Tanh(),
                     unit_forget_bias=False, **RECURRENT)),
    "gru reset_after relu (Recurrent)": _sequence("gr", S.GRU(name="gru", units=3, reset_after=True,
                                                              activation=S.ReLU(), **RECURRENT)),
    "gru reset before (Recurrent)": _sequence("gb", S.GRU(name="gru", units=4, reset_after=False, **RECURRENT)),
    "embedding of [H, W] ids into images": experiment(
        "ei", [3, 4], (S.Embedding(name="embed", input_dim=7, output_dim=2, embeddings_init=S.Normal(mean=0.0,
                                                                                                     stddev=1.0)),
                       S.Conv2D(name="conv", filters=2, kernel_size=2, padding="valid", kernel_init=S.HeUniform(),
                                bias_init=S.Zeros()),
                       S.Flatten(name="flat"), S.Dense(name="out", units=2, **DENSE)),
        RNG.integers(0, 7, size=(24, 3, 4)).astype(float), RNG.standard_normal((24, 2)), epochs=2),
}


@pytest.mark.parametrize("case", list(BRANCHES))
def test_lowering_branches_agree_with_the_reference(case):
    e = BRANCHES[case]
    modes = ("eager", "xp") if "Recurrent" in case or "biased on images" in case else ("eager",)
    result = train(e, [RunSpec("torch", "float64", "cpu", mode) for mode in modes], snapshot_every=1)
    assert result.reference.ok, result.reference.message
    for record in result.records:
        assert record.ok, record.message
        parity = compare(result.reference, record)
        assert parity.passed, f"{case} {record.spec.mode}: max rel {parity.max_rel:.2e}"
    assert worst(result.reference.final_params, initial_parameters(e)) > 1e-4  # it trained


def test_branch_modules():
    def modules(case):
        return " ".join(type(m).__name__ for m in build(BRANCHES[case]).model)

    assert "MoveAxis BatchNorm MoveAxis" in modules("batch_norm biased on sequences")
    assert modules("batch_norm over time steps").startswith("BatchNorm1d Flatten")
    assert "Flatten BatchNorm Linear" in modules("batch_norm beta without gamma")
    assert "Conv2d MoveAxis BatchNorm2d MoveAxis" in modules("batch_norm neither gamma nor beta, images' height")
    assert "MoveAxis LayerNormNoScale MoveAxis" in modules("layer_norm beta without gamma over time")
    assert "Conv2d MoveAxis LayerNorm MoveAxis" in modules("layer_norm without affine on images")
    assert modules("simple_rnn relu (nn.RNN)").startswith("RNN RecurrentOutput")
    assert modules("gru reset before (Recurrent)").startswith("Recurrent RecurrentOutput")
    assert modules("embedding of [H, W] ids into images").startswith("Embedding ChannelsFirst")


@pytest.mark.slow  # torch.compile takes 7-10 s per model here
def test_compile_mode_trains_custom_modules():
    """crossnn's BatchNorm (buffers moved inside the compiled graph) and Recurrent under torch.compile."""
    e = _sequence("cm", bn("bn", running_variance="biased"),
                  S.GRU(name="gru", units=3, reset_after=False, **RECURRENT))
    result = train(e, [RunSpec("torch", "float64", "cpu", "compile")], snapshot_every=1)
    (record,) = result.records
    assert record.ok, record.message
    assert compare(result.reference, record).passed


def test_float32_stays_within_the_envelope():
    """float32 (oneDNN's fused LSTM on the CPU in eager mode) against the float64 reference."""
    e = embedding_lstm()
    result = train(e, [RunSpec("torch", "float32", "cpu", mode) for mode in ("eager", "xp")], snapshot_every=1)
    for record in result.records:
        parity = compare(result.reference, record)
        assert parity.passed and parity.max_rel < 1e-5, (record.spec.mode, parity.max_rel)


# ---- layouts -------------------------------------------------------------------------------------------------


def test_gates_layout_round_trips_and_its_code_computes_the_same():
    from crossnn_torch import ops

    w = torch.arange(2 * 12, dtype=F64).reshape(2, 12)
    for layout in (ops.Gates((1, 0, 2), transpose=True), ops.Gates((1, 0, 2), split="rows"),
                   ops.Gates((0, 1, 2, 3), split="sum"), ops.Gates((1, 0, 2), split="sum")):
        canonical = w if layout.split == "rows" else (w[0] if layout.split else w)
        native = layout.native(canonical)
        torch.testing.assert_close(layout.canonical(native), canonical, rtol=0, atol=0)
        code = ops.parts(layout.native_code("c"))
        for part, text in zip(ops.parts(native), code):
            expected = torch.zeros_like(part) if text is None else eval(text, {"c": canonical, "torch": torch})
            torch.testing.assert_close(part, expected, rtol=0, atol=0)
        names = tuple(f"n{k}" for k in range(len(code)))
        back = eval(layout.canonical_code(names if len(names) > 1 else names[0]),
                    {"torch": torch, **dict(zip(names, ops.parts(native)))})
        torch.testing.assert_close(back, canonical, rtol=0, atol=0)
    u = 4
    gru = ops.Gates((1, 0, 2), transpose=True).native(w[:, :12])
    torch.testing.assert_close(gru[:u], w[:, u:2 * u].T)  # torch's first block, r, is Keras' second
    with torch.no_grad():
        split = ops.Gates((0, 1, 2, 3), split="sum").native(torch.ones(8, dtype=F64))
    assert torch.all(split[1] == 0)


# ---- layer state in checkpoints ----------------------------------------------------------------------------


def test_stop_in_torch_after_moving_statistics_resume_in_numpy_and_back():
    e = bn_ln_mlp()
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    stop = 4
    uninterrupted = numpy_run(e).parameters()
    reference_state = numpy_run(e, 0, stop).state()
    for mode in ("eager", "xp"):
        trainer = build(e, mode)
        trainer.run(plan.batches(0, stop))
        state = trainer.state()
        assert {"bn/moving_mean", "bn/moving_variance"} <= set(state.params)
        assert rel(state.params["bn/moving_mean"], initial_parameters(e)["bn/moving_mean"]) > 1e-4
        assert worst(state.params, reference_state.params) <= 1e-12, mode
        assert worst(numpy_run(e, stop, state=state).parameters(), uninterrupted) <= 1e-9, mode
        resumed = build(e, mode)
        resumed.load_state(reference_state)
        resumed.run(plan.batches(stop, plan.steps))
        assert worst(resumed.parameters(), uninterrupted) <= 1e-9, f"stopped in numpy, resumed in torch {mode}"


def test_stop_in_torch_resume_in_tensorflow_and_back():
    """Stop in torch after steps that moved the statistics, resume in TensorFlow: equals an
    uninterrupted NumPy run; and the reverse."""
    if "tensorflow" not in backends.available():
        pytest.skip("the tensorflow backend is unavailable")
    e = bn_ln_mlp()
    stopped = train(e, [RunSpec("torch", "float64")], stop_after=5).records[0]
    assert stopped.ok and stopped.final_state.step == 5
    try:
        backends.get("tensorflow").build(e, initial_parameters(e), load_dataset(e), dtype="float64", device="cpu",
                                         mode=backends.get("tensorflow").modes[0])
    except UnsupportedFeature as err:
        pytest.skip(f"the tensorflow backend does not lower this model yet: {err}")
    uninterrupted = numpy_run(e).parameters()
    result = train(e, [RunSpec("tensorflow", "float64")], resume=stopped.final_state)
    (record,) = result.records
    assert record.ok, record.message
    assert compare(result.reference, record).passed
    assert worst(record.final_params, uninterrupted) <= 1e-9
    # and the reverse: stopped in TensorFlow, resumed in torch
    stopped = train(e, [RunSpec("tensorflow", "float64")], stop_after=5).records[0]
    record = train(e, [RunSpec("torch", "float64")], resume=stopped.final_state).records[0]
    assert record.ok and worst(record.final_params, uninterrupted) <= 1e-9


def mixed():
    """batch_norm, an lstm and a gru in one model: every split and reordered layout in one state_dict."""
    layers = (S.Embedding(name="embed", input_dim=7, output_dim=3, embeddings_init=S.Normal(mean=0.0, stddev=1.0)),
              S.LSTM(name="lstm", units=4, return_sequences=True, unit_forget_bias=False, **RECURRENT), bn("bn"),
              S.GRU(name="gru", units=3, reset_after=True, **RECURRENT), S.Dense(name="out", units=2, **DENSE))
    return experiment("mixed", [5], layers, IDS, RNG.standard_normal((24, 2)), epochs=4)


def test_state_dict_has_torchs_gate_order_split_biases_and_running_statistics(tmp_path):
    e = mixed()
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    trainer = build(e)
    trainer.run(plan.batches(0, 6))
    state = trainer.state()
    backend = backends.get("torch")
    path = tmp_path / "mixed.pt"
    backend.export_native(e, state, path)
    saved = torch.load(path)["model"]
    # embedding, lstm + RecurrentOutput, MoveAxis + nn.BatchNorm1d + MoveAxis, gru + RecurrentOutput, linear
    assert list(saved) == ["0.weight", "1.weight_ih_l0", "1.weight_hh_l0", "1.bias_ih_l0", "1.bias_hh_l0",
                           "4.weight", "4.bias", "4.running_mean", "4.running_var", "4.num_batches_tracked",
                           "6.weight_ih_l0", "6.weight_hh_l0", "6.bias_ih_l0", "6.bias_hh_l0", "8.weight", "8.bias"]
    p = {k: torch.from_numpy(v) for k, v in state.params.items()}
    torch.testing.assert_close(saved["1.bias_ih_l0"], p["lstm/bias"])
    assert torch.all(saved["1.bias_hh_l0"] == 0)
    torch.testing.assert_close(saved["4.running_var"], p["bn/moving_variance"])
    assert int(saved["4.num_batches_tracked"]) == 6
    torch.testing.assert_close(saved["6.weight_ih_l0"], gru_gates(p["gru/kernel"]).T)
    torch.testing.assert_close(saved["6.bias_ih_l0"], gru_gates(p["gru/bias"][0]))
    torch.testing.assert_close(saved["6.bias_hh_l0"], gru_gates(p["gru/bias"][1]))
    back = backend.import_native(e, path)
    assert back.step == 6 and worst(back.params, state.params) == 0.0
    for slot in state.slots:
        assert worst(back.slots[slot], state.slots[slot]) == 0.0
    assert set(state.slots["exp_avg"]) == set(e.model.parameter_inits())  # no slots for the moving statistics
    resumed = build(e)
    resumed.load_state(back)
    resumed.run(plan.batches(6, plan.steps))
    assert worst(resumed.parameters(), numpy_run(e).parameters()) <= 1e-9


def test_hand_written_loop_continues_from_the_exported_file(tmp_path):
    """A hand-written nn.LSTM model loads the state_dict and optimizer state crossnn exported after 5
    steps and ends where the uninterrupted reference ends."""
    e = embedding_lstm()
    plan = BatchPlan.for_experiment(e, load_dataset(e).n)
    trainer = build(e, "xp")
    trainer.run(plan.batches(0, 5))
    path = tmp_path / "lstm.pt"
    backends.get("torch").export_native(e, trainer.state(), path)
    saved = torch.load(path)
    hand = HandLSTM(initial_parameters(e))
    hand.load_state_dict({k.replace("0.", "embed.").replace("1.", "lstm.").replace("3.", "fc."): v
                          for k, v in saved["model"].items()})
    optimizer = torch.optim.Adam(hand.parameters(), lr=1.0)
    optimizer.load_state_dict(saved["optimizer"])
    x, y = oracle_inputs(e)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(saved["step"], plan.steps):
        rows = torch.from_numpy(plan.batch(step))
        optimizer.zero_grad()
        loss_fn(hand(x[rows]), y[rows]).backward()
        optimizer.step()
    assert worst(hand.canonical(), numpy_run(e).parameters()) <= 1e-9


def test_a_file_that_trained_bias_hh_is_refused(tmp_path):
    e = embedding_lstm()
    model = nn.Sequential(nn.Embedding(7, 4), nn.LSTM(4, 5, batch_first=True), nn.Identity(), nn.Linear(5, 3)).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-8)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    path = tmp_path / "user.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1}, path)
    with pytest.raises(CheckpointError, match="bias_hh_l0"):
        backends.get("torch").import_native(e, path)


# ---- native flavour, import, facts --------------------------------------------------------------------------


def test_native_default_init_is_torchs_own():
    """Embedding N(0, 1), nn.LSTM U(±1/√hidden) for both biases (the canonical bias is their sum),
    BatchNorm ones and zeros, drawn after torch.manual_seed(seed) in the order of the layers."""
    e = mixed()
    got = build(e, native={"default-init"}).parameters()
    torch.manual_seed(e.seed)
    embed, lstm = nn.Embedding(7, 3, dtype=F64), nn.LSTM(3, 4, batch_first=True, dtype=F64)
    np.testing.assert_array_equal(got["embed/embeddings"], embed.weight.detach().numpy())
    np.testing.assert_array_equal(got["lstm/kernel"], lstm.weight_ih_l0.detach().numpy().T)
    np.testing.assert_array_equal(got["lstm/bias"], (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy())
    assert got["lstm/bias"].max() > 0.5  # a sum of two draws of U(±1/2)
    for name, value in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0), ("moving_variance", 1.0)):
        assert np.all(got[f"bn/{name}"] == value)
    assert np.max(np.abs(got["gru/recurrent_kernel"])) <= 1 / math.sqrt(3)
    trainer = build(e, native={"default-init"})
    trainer.run(BatchPlan.for_experiment(e, 24).batches(0, 3))  # bias_hh_l0 keeps its draw, frozen
    assert trainer.model[1].bias_hh_l0.requires_grad is False


def test_an_nn_sequential_with_normalization_and_recurrent_layers_imports():
    """A user's models (eval mode) become specs whose NumPy forward computes the module's function,
    moving statistics and GRU gates included; then every torch mode trains them to the reference."""
    from crossnn_torch.ops import RecurrentOutput

    torch.manual_seed(3)
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, momentum=0.3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(48, 4), nn.BatchNorm1d(4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    with torch.no_grad():
        cnn[1].running_mean.uniform_(-1, 1)
        cnn[5].running_var.uniform_(0.5, 2)
    words = nn.Sequential(nn.Embedding(7, 3), nn.GRU(3, 4, batch_first=True), RecurrentOutput(True),
                          nn.LayerNorm(4, bias=False), nn.LSTM(4, 2, batch_first=True), RecurrentOutput(False),
                          nn.Linear(2, 2)).double()
    x_images = RNG.standard_normal((6, 4, 4, 2))
    results = {}
    for module, inputs, x, torch_x in ((cnn, [4, 4, 2], x_images, torch.from_numpy(x_images).permute(0, 3, 1, 2)),
                                       (words, [5], IDS[:6], torch.from_numpy(IDS[:6]).long())):
        module.eval()
        model, params = backends.get("torch").import_model(module, inputs=inputs)
        e = experiment("imported", inputs, model.layers, x, np.zeros((6, 2)), epochs=1)
        assert set(params) == set(e.model.variable_inits())
        reference = backends.get("numpy").build(e, params, load_dataset(e), dtype="float64", device="cpu",
                                                mode="default")
        with torch.no_grad():
            np.testing.assert_allclose(reference.predict(x), module(torch_x).numpy(), rtol=1e-10, atol=1e-13)
        results[module is words] = (e, params)
    bn2d = backends.get("torch").import_model(cnn, inputs=[4, 4, 2])[0].layers[1]
    assert (bn2d.momentum, bn2d.epsilon, bn2d.running_variance) == (0.7, 1e-5, "unbiased")
    e, params = results[True]
    e = experiment("words", [5], e.model.layers, IDS, RNG.standard_normal((24, 2)), epochs=2)
    result = train(e, [RunSpec("torch", "float64", "cpu", mode) for mode in ("eager", "xp")], initial_params=params)
    for record in result.records:
        assert record.ok and compare(result.reference, record).passed, record.spec.mode


@pytest.mark.parametrize("module, message", [
    (nn.Sequential(nn.Embedding(7, 3), nn.LSTM(3, 2, batch_first=True), nn.Linear(2, 2)), "RecurrentOutput"),
    (nn.Sequential(nn.Embedding(7, 3), nn.LSTM(3, 2, batch_first=True)), "RecurrentOutput"),
    (nn.Sequential(nn.Embedding(7, 3), nn.LSTM(3, 2)), "batch_first"),
    (nn.Sequential(nn.Embedding(7, 3), nn.LSTM(3, 2, num_layers=2, batch_first=True)), "one layer"),
    (nn.Sequential(nn.Embedding(7, 3, padding_idx=0)), "padding_idx"),
    (nn.Sequential(nn.Embedding(7, 3), nn.Flatten(), nn.BatchNorm1d(15, momentum=None)), "cumulative average"),
    (nn.Sequential(nn.Embedding(7, 3), nn.LayerNorm((5, 3))), "takes one axis"),
    (nn.Sequential(nn.Linear(5, 3), nn.Embedding(7, 3)), "must come first"),
])
def test_import_refuses_what_crossnn_cannot_express(module, message):
    with pytest.raises(UnsupportedFeature, match=message):
        backends.get("torch").import_model(module, inputs=[5])


def test_facts_of_normalization_and_recurrent_layers():
    facts = backends.get("torch").facts()
    assert json.loads(json.dumps(facts)) == facts
    assert facts["batchnorm2d_defaults"] == {"momentum": 0.1, "eps": 1e-5} and facts["layernorm_eps"] == 1e-5
    var = facts["batchnorm_running_var"]
    values = np.array([1.0, 2.0, 4.0, 9.0])
    assert var["running_var"] == pytest.approx(0.9 + 0.1 * values.var(ddof=1), rel=1e-15)  # unbiased ...
    assert var["running_var"] == var["if_unbiased"] != var["if_biased"]
    assert var["normalized_with"] == "biased"  # ... though the output is normalized with the biased one
    assert var["running_mean"] == pytest.approx(0.1 * values.mean()) and var["batch_weight"] == 0.1
    emb = facts["embedding_init"]
    assert abs(emb["mean"]) < 0.01 and abs(emb["std"] - 1.0) < 0.01 and emb["max_abs"] > 4  # N(0, 1), not U(±0.05)
    lstm = facts["lstm_init"]
    assert lstm["parameters"] == {"weight_ih_l0": [64, 8], "weight_hh_l0": [64, 16], "bias_ih_l0": [64],
                                  "bias_hh_l0": [64]}
    assert lstm["bound"] == 0.25 and 0.24 < lstm["max_abs"] <= 0.25
    assert -0.25 <= lstm["forget_bias_range"][0] < 0 < lstm["forget_bias_range"][1] <= 0.25  # no forget bias of 1
    assert facts["lstm_gate_order"]["blocks"] == ["i", "f", "g", "o"]
    assert facts["gru_gate_order"]["blocks"] == ["r", "z", "n"]
    after = facts["gru_reset_after"]
    assert after["h"] == pytest.approx(after["reset_after"], rel=1e-12) and after["h"] != pytest.approx(
        after["reset_before"])


# ---- tutorial loop and scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [embedding_lstm, embedding_gru, bn_cnn])
def test_tutorial_loop_covers_sequences_and_ends_where_the_lowering_ends(make):
    e = make()
    data = load_dataset(e)
    plan = BatchPlan.for_experiment(e, data.n)
    tutorial = backends.get("torch").tutorial(e, initial_parameters(e), data, dtype="float64", device="cpu")
    losses = tutorial.run(plan.batches(0, plan.steps))
    trainer = build(e)
    expected = trainer.run(plan.batches(0, plan.steps))
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    assert worst(tutorial.parameters(), trainer.parameters()) <= 1e-12
    assert rel(tutorial.predict(data.x), trainer.predict(data.x)) <= 1e-12


def test_scripts_of_crossnns_own_modules_reproduce_the_run(tmp_path):
    """Scripts carrying crossnn's BatchNorm, LayerNormNoScale, MoveAxis and Recurrent (with a nested
    softplus module and math) reproduce crossnn's torch run."""
    sequences = _sequence("script", bn("bn", running_variance="biased"),
                          S.LayerNorm(name="ln", axis=1, epsilon=1e-3, scale=False),
                          S.LSTM(name="lstm", units=3, activation=S.Softplus(), recurrent_activation=S.Tanh(),
                                 return_sequences=True, unit_forget_bias=False, **RECURRENT),
                          S.GRU(name="gru", units=4, reset_after=False, **RECURRENT))
    cases = {"sequences": sequences, "images": BRANCHES["embedding of [H, W] ids into images"]}
    backend = backends.get("torch")
    paths = {}
    for name, e in cases.items():
        text = backend.script(e, initial_parameters(e), load_dataset(e))
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(text)
    text = paths["sequences"].read_text()
    assert "import math" in text and "class Recurrent(nn.Module)" in text and "class LayerNormNoScale" in text
    assert "Recurrent('lstm', 3, 3, activation=Softplus(), recurrent_activation=nn.Tanh())" in text
    done = run_scripts(paths)
    for name, e in cases.items():
        assert done[name].returncode == 0, done[name].stderr[-2000:]
        got = {k: np.array(v) for k, v in json.loads(done[name].stdout.strip().splitlines()[-1]).items()}
        record = train(e, [RunSpec("torch", "float64")]).records[0]
        assert worst(got, record.final_params) <= 1e-9, name
