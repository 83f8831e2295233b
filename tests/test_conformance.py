"""Conformance: every spec feature, one row each, on every installed backend (and mode), must agree
with the NumPy float64 reference to 1e-9 relative at every step. Adding a layer, activation, loss,
optimizer or schedule means adding one row here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crossnn
from crossnn import backends
from crossnn import spec as S
from crossnn.checkpoint import load_checkpoint, save_checkpoint
from crossnn.harness import RunSpec, train
from crossnn.parity import compare
from tests.conftest import backend_params

Z = dict(kernel_init=S.GlorotUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))
RNG = np.random.default_rng(11)
X = RNG.standard_normal((24, 3))


def _experiment(name, *, hidden=S.Tanh(), extra=(), out_act=S.Linear(), loss=S.MSE(), y=None, units=None,
                optimizer=S.SGD(lr=0.1, momentum=0.9), train=S.Train(epochs=3, batch_size=8, shuffle=True)):
    units = units or (1 if y is None else np.asarray(y).shape[1])
    layers = (S.Dense(name="h", units=5, activation=hidden, **Z), *extra,
              S.Dense(name="out", units=units, activation=out_act, **Z))
    y = RNG.standard_normal((24, 1)) if y is None else y
    return S.Experiment(name=name, seed=3, data=S.InlineData(x=X.tolist(), y=np.asarray(y).tolist()),
                        model=S.Model(inputs=3, layers=layers), loss=loss, optimizer=optimizer, train=train)


IMAGES = RNG.standard_normal((24, 6, 6, 2))
HE = dict(kernel_init=S.HeUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))


def _conv(name, filters=3, **kw):
    return S.Conv2D(name=name, filters=filters, **{"kernel_size": 3, "padding": "same", "activation": S.Tanh(),
                                                   **HE, **kw})


def _image_experiment(name, *layers, head=(S.Flatten(name="flat"),), optimizer=S.Adam(lr=0.01, eps=1e-8)):
    """A small CNN on 6x6x2 images: the layers under test, then `head` and a dense output."""
    data = S.InlineData(x=IMAGES.tolist(), y=RNG.standard_normal((24, 2)).tolist())
    return S.Experiment(name=name, seed=5, data=data,
                        model=S.Model(inputs=[6, 6, 2], layers=(*layers, *head, S.Dense(name="out", units=2, **Z))),
                        loss=S.MSE(), optimizer=optimizer, train=S.Train(epochs=2, batch_size=8, shuffle=True))


SEQUENCES = RNG.standard_normal((24, 5, 3))
IDS = RNG.integers(0, 7, size=(24, 5)).astype(float)
RECURRENT = dict(kernel_init=S.GlorotUniform(), recurrent_init=S.Orthogonal(), bias_init=S.Normal(mean=0.0,
                                                                                                 stddev=0.1))


def _bn(name, **kw):
    return S.BatchNorm(name=name, **{"momentum": 0.9, "epsilon": 1e-3, "running_variance": "unbiased",
                                     "gamma_init": S.Uniform(low=0.5, high=1.5), "beta_init": S.Normal(mean=0.0,
                                                                                                      stddev=0.1),
                                     **kw})


def _sequence_experiment(name, *layers, x=SEQUENCES, optimizer=S.Adam(lr=0.01, eps=1e-8)):
    """A small model on (5, 3) sequences (or 5 ids): the layers under test, then a dense output."""
    data = S.InlineData(x=x.tolist(), y=RNG.standard_normal((24, 2)).tolist())
    return S.Experiment(name=name, seed=6, data=data,
                        model=S.Model(inputs=list(x.shape[1:]), layers=(*layers, S.Dense(name="out", units=2, **Z))),
                        loss=S.MSE(), optimizer=optimizer, train=S.Train(epochs=2, batch_size=8, shuffle=True))


LABELS = RNG.integers(0, 3, size=24)
ONE_HOT = np.eye(3)[LABELS]
BINARY = (RNG.uniform(size=(24, 1)) > 0.5).astype(float)
L2 = dict(weight_decay=0.05, weight_decay_kind="l2")
DECOUPLED = dict(weight_decay=0.05, weight_decay_kind="decoupled")

FEATURES = {
    # activations
    **{f"activation {a.kind}{'-' + a.approximate if isinstance(a, S.GELU) else ''}": _experiment("a", hidden=a)
       for a in (S.Linear(), S.ReLU(), S.Sigmoid(), S.Tanh(), S.Softmax(), S.Softplus(),
                 S.LeakyReLU(negative_slope=0.1), S.GELU(approximate="none"), S.GELU(approximate="tanh"))},
    # layers
    "activation layer": _experiment("l", extra=(S.ActivationLayer(name="act", activation=S.ReLU()),)),
    "dropout": _experiment("d", extra=(S.Dropout(name="drop", rate=0.5),)),
    "graph": S.Experiment(
        name="g", seed=1, data=S.RandomNormal(n=16, inputs=2, outputs=1),
        model=S.Model(inputs=2, layers=(S.Dense(name="a", units=2, activation=S.Sigmoid(), inputs=("input",), **Z),
                                        S.Dense(name="b", units=3, inputs=("input",), **Z),
                                        S.Concatenate(name="c", inputs=("b", "a")),
                                        S.Dropout(name="drop", rate=0.25),
                                        S.Dense(name="o", units=1, **Z))),
        loss=S.MSE(), optimizer=S.Adam(lr=0.01, eps=1e-8), train=S.Train(epochs=4, batch_size=4)),
    # convolution and pooling (channels last; geometry by TF's rule)
    "conv2d same stride 2 on an even input": _image_experiment("cs", _conv("c", strides=2)),
    "conv2d valid dilation 2 stride 1x2": _image_experiment("cv", _conv("c", padding="valid", dilation=2,
                                                                        strides=[1, 2])),
    "conv2d 2x3 kernel no bias relu": _image_experiment("ck", _conv("c", kernel_size=[2, 3], use_bias=False,
                                                                    activation=S.ReLU(), strides=[2, 1])),
    "max_pool2d same 3x3 stride 2": _image_experiment("mp", _conv("c"), S.MaxPool2D(name="p", pool_size=3,
                                                                                   strides=2, padding="same")),
    "avg_pool2d same counting padding": _image_experiment(
        "ap", _conv("c"), S.AvgPool2D(name="p", pool_size=[2, 3], padding="same", count_padding=True)),
    "avg_pool2d same not counting padding": _image_experiment(
        "an", _conv("c"), S.AvgPool2D(name="p", pool_size=[2, 3], strides=1, padding="same", count_padding=False)),
    "global_avg_pool2d": _image_experiment("g", _conv("c"), head=(S.GlobalAvgPool2D(name="gap"),)),
    "residual add and dropout on images": _image_experiment(
        "ra", _conv("c1"), _conv("c2", activation=S.Linear()), S.Add(name="sum", inputs=("c1", "c2")),
        S.Dropout(name="drop", rate=0.3), optimizer=S.SGD(lr=0.05, momentum=0.9)),
    "concatenate channels": _image_experiment(
        "cc", _conv("c1", inputs=("input",)), _conv("c2", filters=2, strides=1, inputs=("input",)),
        S.Concatenate(name="join", axis=-1, inputs=("c1", "c2")), S.MaxPool2D(name="p", pool_size=2)),
    "reshape and dense on the last axis": _image_experiment(
        "rd", _conv("c", strides=2), S.Reshape(name="rows", shape=[3, 9]),
        S.Dense(name="per_row", units=4, activation=S.Softmax(), **Z)),
    # normalization (state: the moving statistics are compared like parameters)
    "batch_norm, Keras' momentum and biased variance": _experiment("bk", extra=(_bn(
        "bn", momentum=0.99, running_variance="biased"),)),
    "batch_norm, PyTorch's momentum, unbiased, no center": _experiment("bt", extra=(_bn("bn", center=False),)),
    "batch_norm on images, no scale": _image_experiment("bi", _conv("c", activation=S.Linear(), use_bias=False),
                                                        _bn("bn", scale=False)),
    "layer_norm": _experiment("ln", extra=(S.LayerNorm(name="ln", epsilon=1e-5, gamma_init=S.Uniform(low=0.5,
                                                                                                     high=1.5)),)),
    "layer_norm on images": _image_experiment("li", _conv("c"), S.LayerNorm(name="ln", epsilon=1e-3, center=False)),
    # sequences
    "embedding": _sequence_experiment("em", S.Embedding(name="emb", input_dim=7, output_dim=4,
                                                        embeddings_init=S.Normal(mean=0.0, stddev=1.0)),
                                      S.Flatten(name="flat"), x=IDS),
    "simple_rnn": _sequence_experiment("sr", S.SimpleRNN(name="rnn", units=4, **RECURRENT)),
    "lstm sequences unit_forget_bias": _sequence_experiment(
        "ls", S.LSTM(name="lstm", units=3, return_sequences=True, unit_forget_bias=True, **RECURRENT),
        S.Flatten(name="flat")),
    "lstm relu activation": _sequence_experiment("lr", S.LSTM(name="lstm", units=3, activation=S.ReLU(),
                                                              unit_forget_bias=False, **RECURRENT),
                                                 optimizer=S.SGD(lr=0.05, momentum=0.9)),
    "gru reset_after": _sequence_experiment("ga", S.GRU(name="gru", units=4, reset_after=True, **RECURRENT)),
    "gru reset before, sequences": _sequence_experiment(
        "gb", S.GRU(name="gru", units=3, reset_after=False, return_sequences=True, **RECURRENT),
        S.Flatten(name="flat")),
    "embedding, gru, dense on ids": _sequence_experiment(
        "eg", S.Embedding(name="emb", input_dim=7, output_dim=3, embeddings_init=S.Uniform(low=-0.05, high=0.05)),
        S.GRU(name="gru", units=4, reset_after=True, **RECURRENT), x=IDS),
    # losses
    "loss mae": _experiment("m", loss=S.MAE()),
    "loss huber": _experiment("h", loss=S.Huber(delta=0.5)),
    "loss bce": _experiment("b", out_act=S.Sigmoid(), loss=S.BCE(log_min=-100.0), y=BINARY),
    "loss bce clamp -5": _experiment("b5", out_act=S.Sigmoid(), loss=S.BCE(log_min=-5.0), y=BINARY),
    "loss bce_logits": _experiment("bl", loss=S.BCELogits(), y=BINARY),
    "loss ce logits one-hot": _experiment("c1", loss=S.CrossEntropy(from_logits=True, sparse=False), y=ONE_HOT),
    "loss ce logits sparse": _experiment("c2", loss=S.CrossEntropy(from_logits=True, sparse=True),
                                         y=LABELS.reshape(-1, 1), units=3),
    "loss ce probabilities": _experiment("c3", out_act=S.Softmax(),
                                         loss=S.CrossEntropy(from_logits=False, sparse=False, log_min=-100.0),
                                         y=ONE_HOT),
    # optimizers
    "sgd": _experiment("s", optimizer=S.SGD(lr=0.1)),
    "sgd nesterov l2": _experiment("sn", optimizer=S.SGD(lr=0.1, momentum=0.9, nesterov=True, **L2)),
    "sgd decoupled": _experiment("sd", optimizer=S.SGD(lr=0.1, momentum=0.5, **DECOUPLED)),
    "adam l2": _experiment("al", optimizer=S.Adam(lr=0.01, eps=1e-8, **L2)),
    "adamw": _experiment("aw", optimizer=S.AdamW(lr=0.01, eps=1e-8, weight_decay=0.05)),
    "rmsprop": _experiment("r", optimizer=S.RMSprop(lr=0.01, alpha=0.99, eps=1e-8)),
    "rmsprop momentum centered l2": _experiment("rc", optimizer=S.RMSprop(lr=0.01, alpha=0.9, eps=1e-7, momentum=0.8,
                                                                          centered=True, **L2)),
    "adagrad": _experiment("ag", optimizer=S.Adagrad(lr=0.1, initial_accumulator=0.1, eps=1e-10)),
    "adagrad decoupled": _experiment("agd", optimizer=S.Adagrad(lr=0.1, initial_accumulator=0.0, eps=1e-10,
                                                                **DECOUPLED)),
    "clip_norm": _experiment("cl", optimizer=S.SGD(lr=0.5, momentum=0.9, clip_norm=0.05)),
    "schedule step per epoch": _experiment("se", optimizer=S.SGD(lr=0.1, momentum=0.9, schedule=S.StepDecay(
        unit="epoch", step_size=1, gamma=0.5))),
    "schedule exponential per step": _experiment("sx", optimizer=S.Adam(lr=0.01, eps=1e-8, schedule=S.ExponentialDecay(
        unit="step", gamma=0.9))),
}


def _targets():
    """(backend, mode) pairs to hold against the reference: every mode of every backend except
    torch.compile (slow to compile) and the reference itself (the NumPy float64 default mode, checked
    against finite differences and hand-computed steps in test_numpy_backend). The default run takes
    each backend's default and fast modes; the others (JAX's eager and xp, TensorFlow's eager, xla
    and epoch: 1.7 of this table's 3.6 minutes here) are marked slow, for `pytest -m slow` and CI."""
    params = []
    for name, entry in backends.discover().items():
        if not entry.available:
            params.append(pytest.param(name, None, marks=pytest.mark.skip(reason=f"backend '{name}' unavailable: "
                                                                                 f"{entry.reason}"), id=name))
            continue
        for mode in entry.backend.modes:
            if mode == "compile" or (entry.backend.reference and mode == entry.backend.modes[0]):
                continue
            everyday = mode == entry.backend.modes[0] or mode in entry.backend.fast_modes
            params.append(pytest.param(name, mode, id=f"{name}-{mode}", marks=() if everyday else pytest.mark.slow))
    return params


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("backend_name, mode", _targets())
def test_feature_agrees_with_the_reference(feature, backend_name, mode):
    result = train(FEATURES[feature], [RunSpec(backend_name, "float64", "cpu", mode)], snapshot_every=1)
    (record,) = result.records
    assert record.ok, record.message
    parity = compare(result.reference, record)
    assert parity.passed, f"{feature}: max rel {parity.max_rel:.2e}, first step out {parity.first_fail_step}"
    assert parity.loss_max_abs <= 1e-9 * max(1.0, float(np.max(np.abs(result.reference.losses))))


def test_schedule_changes_the_learning_rate_as_written():
    e = FEATURES["schedule step per epoch"]
    assert [e.optimizer.lr_at(epoch, 0) for epoch in range(4)] == [0.1, 0.05, 0.025, 0.0125]
    x = FEATURES["schedule exponential per step"].optimizer
    assert x.lr_at(5, 3) == pytest.approx(0.01 * 0.9 ** 3)


def test_dropout_masks_are_shared_and_scaled():
    from crossnn.schedule import StepClock

    clock = StepClock(FEATURES["dropout"], 24)
    a, b = clock.masks(7, 8)["drop"], clock.masks(7, 8)["drop"]
    assert np.array_equal(a, b) and set(np.unique(a)) == {0.0, 2.0}
    assert not np.array_equal(a, clock.masks(8, 8)["drop"])
    many = np.concatenate([clock.masks(s, 8)["drop"] for s in range(200)])
    assert abs((many > 0).mean() - 0.5) < 0.02


@pytest.mark.parametrize("first", backend_params())
def test_stop_and_resume_equals_never_stopping(first, tmp_path):
    """Stop after 17 steps on one backend, save, resume on every backend: the final parameters
    equal an uninterrupted reference run (Adam, shuffled batches, a schedule, dropout)."""
    e = dataclasses.replace(FEATURES["dropout"], optimizer=S.Adam(lr=0.01, eps=1e-8, schedule=S.StepDecay(
        unit="epoch", step_size=1, gamma=0.7)), train=S.Train(epochs=6, batch_size=5, shuffle=True))
    stopped = train(e, [RunSpec(first, "float64")], stop_after=17).records[0]
    assert stopped.ok, stopped.message
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, e, stopped.final_state)
    _, state = load_checkpoint(path, e)
    assert state.step == 17 and set(state.slots) == {"exp_avg", "exp_avg_sq"} and state.counters == {"step": 17}
    for name in backends.available():
        result = train(e, [RunSpec(name, "float64")], resume=state)
        (record,) = result.records
        assert record.ok, record.message
        parity = compare(result.reference, record)
        assert parity.passed, f"stopped in {first}, resumed in {name}: max rel {parity.max_rel:.2e}"
        assert record.start_step == 17 and max(record.snapshots) == result.plan.steps


def test_adamw_needs_decoupled_decay_and_decay_needs_its_kind():
    with pytest.raises(crossnn.SpecError, match="weight_decay_kind: is required when weight_decay > 0"):
        S.SGD(lr=0.1, weight_decay=0.1)
    with pytest.raises(crossnn.SpecError, match="adamw's weight decay is decoupled"):
        S.AdamW(lr=0.1, eps=1e-8, weight_decay=0.1, weight_decay_kind="l2")
    assert S.AdamW(lr=0.1, eps=1e-8, weight_decay=0.1).weight_decay_kind == "decoupled"
