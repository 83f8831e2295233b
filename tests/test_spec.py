"""The spec: construction, validation with field-naming errors, and exact TOML round trips."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import crossnn
from crossnn import examples
from crossnn import spec as S
from crossnn.errors import SpecError
from crossnn.params import initial_parameters
from crossnn.plan import BatchPlan
from crossnn.rng import stream
from tests.strategies import experiments


@pytest.mark.parametrize("name", examples.names())
def test_example_files_are_in_canonical_form(name):
    """Every example file reads and writes back byte for byte: all hyperparameters written out."""
    text = examples.path(name).read_text()
    experiment = S.loads(text)
    assert S.dumps(experiment) == text
    assert S.loads(S.dumps(experiment)) == experiment


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiments())
def test_generated_specs_round_trip_through_toml(experiment):
    text = S.dumps(experiment)
    again = S.loads(text)
    assert again == experiment
    assert S.dumps(again) == text


def test_save_and_load_file(tmp_path):
    experiment = crossnn.example("two-tower")
    target = tmp_path / "nested" / "tt.toml"
    S.save(experiment, target)
    assert S.load(target) == experiment
    assert [p.name for p in tmp_path.joinpath("nested").iterdir()] == ["tt.toml"]  # no temp files left


def test_two_tower_graph_and_parameter_counts():
    model = crossnn.example("two-tower").model
    counts = {}
    for name, p in model.parameter_inits().items():
        counts[name.split("/")[0]] = counts.get(name.split("/")[0], 0) + math.prod(p.shape)
    assert counts == {"dense1": 3, "dense2": 6, "dense3": 4}
    assert [n.name for n in model.nodes] == ["dense1", "dense2", "concat", "dense3"]
    assert model.nodes[2].input_sizes == (1, 2) and model.nodes[2].size == 3
    assert model.parameter_inits()["dense3/kernel"].shape == (3, 1)  # canonical (in, out)


def test_circle_has_21_parameters():
    assert crossnn.example("circle").model.parameter_count() == 21


def test_layer_names_are_generated_per_type_and_avoid_taken_names():
    model = S.Model(inputs=2, layers=(
        S.Dense(units=3, kernel_init=S.Zeros(), bias_init=S.Zeros()),
        S.Dense(name="dense2", units=3, kernel_init=S.Zeros(), bias_init=S.Zeros()),
        S.ActivationLayer(activation=S.ReLU()),
        S.Dense(units=1, kernel_init=S.Zeros(), bias_init=S.Zeros()),
    ))
    assert [layer.name for layer in model.layers] == ["dense1", "dense2", "activation1", "dense3"]


def test_graph_layers_may_be_listed_before_their_inputs():
    model = S.Model(inputs=2, layers=(
        S.Dense(name="a", units=2, kernel_init=S.Zeros(), bias_init=S.Zeros(), inputs=("b",)),
        S.Dense(name="b", units=3, kernel_init=S.Zeros(), bias_init=S.Zeros(), inputs=("input",)),
        S.Dense(name="out", units=1, kernel_init=S.Zeros(), bias_init=S.Zeros(), inputs=("a",)),
    ))
    assert [n.name for n in model.nodes] == ["b", "a", "out"]
    assert model.parameter_inits()["a/kernel"].shape == (3, 2)


def _dense(**kw):
    return S.Dense(**{"units": 1, "kernel_init": S.Zeros(), "bias_init": S.Zeros(), **kw})


@pytest.mark.parametrize("build, fragment", [
    (lambda: _dense(units=0), "units: must be > 0"),
    (lambda: _dense(units=2.5), "units: expected an integer"),
    (lambda: _dense(activation="swish"), "unknown activation type 'swish'"),
    (lambda: _dense(activation="leaky_relu"), "needs negative_slope"),
    (lambda: _dense(kernel_init={"type": "uniform", "low": 1.0, "high": 0.5}), "kernel_init.high: must be greater"),
    (lambda: S.SGD(lr=-1.0), "lr: must be > 0"),
    (lambda: S.SGD(lr=0.1, momentum=1.0), "momentum: must be in [0, 1)"),
    (lambda: S.SGD(lr=0.1, nesterov=True), "nesterov: needs momentum > 0"),
    (lambda: S.Adam(lr=0.1, eps=0.0), "eps: must be > 0"),
    (lambda: S.BCE(log_min=5.0), "log_min: must be negative"),
    (lambda: S.CrossEntropy(from_logits=False, sparse=False), "log_min: is required"),
    (lambda: S.Model(inputs=2, layers=(_dense(name="a", inputs=("a",)),)), "names itself"),
    (lambda: S.Model(inputs=2, layers=(_dense(name="a", inputs=("b",)), _dense(name="b", inputs=("a",)))),
     "cycle: b -> a -> b"),
    (lambda: S.Model(inputs=2, layers=(_dense(name="a"), _dense(name="a"))), "duplicate layer name 'a'"),
    (lambda: S.Model(inputs=2, layers=(_dense(name="a", inputs=("input",)), _dense(name="b", inputs=("input",)))),
     "layer 'a' does not feed the output"),
    (lambda: S.Concatenate(inputs=("a",)), "takes at least 2 input(s), got 1"),
    (lambda: S.Train(epochs=0, batch_size=1), "epochs: must be > 0"),
    (lambda: S.InlineData(x=[[1.0], [float("nan")]], y=[[1.0], [2.0]]), "x[1][0]: value is nan"),
])
def test_invalid_specs_name_the_field(build, fragment):
    with pytest.raises(SpecError) as info:
        build()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_errors_from_files_carry_the_file_and_key_path(tmp_path):
    text = examples.path("circle").read_text().replace("units = 5", "units = -5")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        S.load(path)
    assert str(info.value) == f"{path}: model.layers[0].units: must be > 0, got -5"


def test_initializer_distributions():
    """Bounds and moments of each initializer, on a large draw."""
    rng = np.random.default_rng(0)
    fan_in, fan_out = 300, 200
    shape = (300, 200)
    draw = lambda init: init.sample(rng, shape, fan_in, fan_out)  # noqa: E731
    w = draw(S.FanInUniform())
    assert np.abs(w).max() <= 1 / math.sqrt(fan_in) and np.abs(w).max() > 0.99 / math.sqrt(fan_in)
    w = draw(S.LecunUniform())
    assert np.abs(w).max() <= math.sqrt(3 / fan_in) and abs(w.var() - 1 / fan_in) < 0.03 / fan_in
    w = draw(S.GlorotUniform())
    assert np.abs(w).max() <= math.sqrt(6 / (fan_in + fan_out))
    w = draw(S.HeNormal())
    assert abs(w.std() - math.sqrt(2 / fan_in)) < 0.01 * math.sqrt(2 / fan_in)
    w = draw(S.TruncatedNormal(mean=1.0, stddev=0.1))
    assert np.all(np.abs(w - 1.0) <= 0.2) and abs(w.mean() - 1.0) < 1e-3
    w = draw(S.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal"))
    assert abs(w.var() - 1 / fan_in) < 0.03 / fan_in  # the 0.8796 factor restores the variance
    assert np.all(draw(S.Constant(value=2.5)) == 2.5)


def test_initial_parameters_are_seeded_per_parameter():
    e = crossnn.example("circle")
    a, b = initial_parameters(e), initial_parameters(e)
    assert all(np.array_equal(a[k], b[k]) and a[k].dtype == np.float64 for k in a)
    assert a["fc1/kernel"].shape == (2, 5) and a["fc2/bias"].shape == (1,)
    # adding a layer leaves the other layers' draws unchanged
    extra = S.Dense(name="fc3", units=1, kernel_init=S.FanInUniform(), bias_init=S.Zeros())
    bigger = S.Experiment(name="x", seed=e.seed, data=e.data, loss=e.loss, optimizer=e.optimizer, train=e.train,
                          model=S.Model(inputs=2, layers=e.model.layers + (extra,)))
    c = initial_parameters(bigger)
    assert np.array_equal(c["fc1/kernel"], a["fc1/kernel"]) and np.array_equal(c["fc2/bias"], a["fc2/bias"])
    other_seed = initial_parameters(dataclasses.replace(e, seed=1))
    assert not np.array_equal(other_seed["fc1/kernel"], a["fc1/kernel"])


def test_batch_plan():
    plan = BatchPlan(n_samples=10, batch_size=4, epochs=3, shuffle=False, drop_last=False, seed=0)
    assert plan.steps == 9 and [b.tolist() for b in plan.batches(0, 3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = BatchPlan(n_samples=10, batch_size=4, epochs=3, shuffle=False, drop_last=True, seed=0)
    assert dropped.steps == 6
    shuffled = BatchPlan(n_samples=10, batch_size=4, epochs=3, shuffle=True, drop_last=False, seed=7)
    epochs = [np.concatenate(shuffled.batches(3 * e, 3 * e + 3)) for e in range(3)]
    assert all(sorted(ep.tolist()) == list(range(10)) for ep in epochs)
    assert not np.array_equal(epochs[0], epochs[1])
    assert np.array_equal(epochs[1], stream(7, "plan", 1).permutation(10))
    assert BatchPlan(5, 100, 1, False, False, 0).batch_size == 5  # a batch larger than the data is the data
