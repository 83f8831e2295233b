"""The spec: construction, validation with field-naming errors, and exact TOML round trips."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import crossnn
from crossnn import examples
from crossnn import spec as S
from crossnn.data import load_dataset
from crossnn.errors import SpecError
from crossnn.params import initial_parameters
from crossnn.plan import BatchPlan
from crossnn.rng import stream
from crossnn.schedule import StepClock
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
    assert model.nodes[2].input_shapes == ((1,), (2,)) and model.nodes[2].shape == (3,)
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


def _conv(**kw):
    return S.Conv2D(**{"filters": 2, "kernel_size": 3, "padding": "same", "kernel_init": S.Zeros(),
                       "bias_init": S.Zeros(), **kw})


def _brute_force_window(size, k, s, d, padding):
    """(out, before, after) by counting: 'valid' = every start i·s whose span fits; 'same' = ceil(n/s)
    outputs with the least padding that fits them, split with the smaller half first."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return len([i for i in range(size) if i * s + span <= size]), 0, 0
    out = -(-size // s)
    total = next(p for p in range(size + span) if (out - 1) * s + span <= size + p)
    return out, total // 2, total - total // 2


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_window_geometry_matches_counting(padding):
    from crossnn.spec.layers import window_padding

    for size in range(1, 12):
        for k in range(1, 6):
            for s in range(1, 4):
                for d in (1, 2):
                    if padding == "valid" and (k - 1) * d + 1 > size:
                        with pytest.raises(SpecError, match="does not fit"):
                            window_padding(size, k, s, d, padding)
                        continue
                    assert window_padding(size, k, s, d, padding) == _brute_force_window(size, k, s, d, padding)


def test_shapes_flow_through_a_cnn_and_conv_fans_count_the_receptive_field():
    model = S.Model(inputs=[8, 8, 1], layers=(
        _conv(name="c", filters=8, strides=2), S.MaxPool2D(name="p", pool_size=2, padding="same"),
        S.AvgPool2D(name="a", pool_size=[2, 1], strides=1, count_padding=True),
        S.Reshape(name="r", shape=[-1, 8]), S.Flatten(name="f"), _dense(name="o", units=3)))
    assert [n.shape for n in model.nodes] == [(4, 4, 8), (2, 2, 8), (1, 2, 8), (2, 8), (16,), (3,)]
    kernel = model.parameter_inits()["c/kernel"]
    assert kernel.shape == (3, 3, 1, 8) and (kernel.fan_in, kernel.fan_out) == (9, 72)
    assert model.nodes[1].layer.strides == (2, 2)  # pooling strides default to the pool size, written out
    assert S.Model(inputs=[2, 3], layers=(_dense(units=4),)).output_shape == (2, 4)  # dense on the last axis


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
    (lambda: S.InlineData(x=[[[1.0], [2.0]], [[1.0]]], y=[[1.0], [2.0]]), "row [1] has 1 values, row [0] has 2"),
    (lambda: S.Model(inputs=[8, 0, 1], layers=(_dense(),)), "inputs: must be a positive feature count"),
    (lambda: _conv(kernel_size=[3, 0]), "kernel_size: must be positive, got [3, 0]"),
    (lambda: _conv(kernel_size=[1, 2, 3]), "kernel_size: expected an integer or a list of two integers"),
    (lambda: _conv(padding="full"), "padding: expected one of 'valid', 'same'"),
    (lambda: S.Model(inputs=[4, 4, 1], layers=(_conv(kernel_size=5, padding="valid"),)),
     "layers[0].kernel_size: a window spanning 5 does not fit an input of size 4 with padding 'valid'"),
    (lambda: S.Model(inputs=[4, 4, 1], layers=(S.MaxPool2D(pool_size=[2, 5], strides=[1, 1], padding="valid"),)),
     "layers[0].pool_size: a window spanning 5 does not fit an input of size 4"),
    (lambda: S.Model(inputs=[4, 4, 1], layers=(_conv(kernel_size=3, dilation=2, padding="valid"),)),
     "a window spanning 5 does not fit"),
    (lambda: S.Model(inputs=8, layers=(_conv(),)), "layers[0].inputs: needs an input of rank 3"),
    (lambda: S.Model(inputs=[4, 4, 2], layers=(S.Reshape(shape=[3, -1]),)), "cannot reshape [4, 4, 2] (32 values)"),
    (lambda: S.Reshape(shape=[-1, -1]), "shape: takes positive sizes and at most one -1"),
    (lambda: S.Model(inputs=[4, 4, 2], layers=(_conv(name="a", inputs=("input",)), _conv(name="b", filters=3),
                                                S.Add(name="s", inputs=("a", "b")))), "need one shape"),
    (lambda: S.Model(inputs=[4, 4, 2], layers=(_conv(name="a", inputs=("input",)), _conv(name="b"),
                                                S.Concatenate(name="s", axis=0, inputs=("a", "b")))),
     "axis: must name a non-batch axis"),
    (lambda: S.Model(inputs=[4, 4, 2], layers=(_conv(name="a", inputs=("input",)), _conv(name="b", strides=2),
                                                S.Concatenate(name="s", inputs=("a", "b")))), "differ outside axis -1"),
    (lambda: S.AvgPool2D.from_fields({"pool_size": 2}), "missing key 'count_padding'"),
    (lambda: S.InlineData(x=np.array([[1.0], [np.inf]]), y=np.ones((2, 1))), "x[1][0]: value is inf"),
    (lambda: S.InlineData(x=np.ones(2), y=np.ones(2)), "x: must be a list of rows"),
    (lambda: S.InlineData(x=np.zeros((0, 3)), y=np.zeros((0, 1))), "x: expected a non-empty list"),
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


FAN_IN, FAN_OUT = 400, 300  # unequal, so fan_in, fan_out and their mean 350 give different scales


def _truncated_moments(c=2.0):
    """E z² and E z⁴ of N(0, 1) cut at ±c, integrating by parts: ∫z²φ = -zφ + ∫φ, ∫z⁴φ = -z³φ + 3∫z²φ."""
    phi, mass = math.exp(-c * c / 2) / math.sqrt(2 * math.pi), math.erf(c / math.sqrt(2))
    return 1 - 2 * c * phi / mass, 3 - 2 * (c**3 + 3 * c) * phi / mass


def _variance_scaling(mode, n, distribution, scale=1.5):
    """A variance_scaling case by its closed form: a half-width √(3 s/n), a standard deviation √(s/n),
    or the σ before the cut at 2σ that leaves the variance s/n."""
    init = S.VarianceScaling(scale=scale, mode=mode, distribution=distribution)
    family, width = {"uniform": ("uniform", math.sqrt(3 * scale / n)), "normal": ("normal", math.sqrt(scale / n)),
                     "truncated_normal": ("truncated", math.sqrt(scale / n / _truncated_moments()[0]))}[distribution]
    return pytest.param(init, family, 0.0, width, id=f"variance_scaling-{mode}-{distribution}")


INITIALIZER_CASES = [pytest.param(init, family, center, width, id=init.kind) for init, family, center, width in (
    (S.Zeros(), "constant", 0.0, 0.0),
    (S.Ones(), "constant", 1.0, 0.0),
    (S.Constant(value=-2.5), "constant", -2.5, 0.0),
    (S.Uniform(low=-0.2, high=0.6), "uniform", 0.2, 0.4),
    (S.Normal(mean=1.5, stddev=0.3), "normal", 1.5, 0.3),
    (S.TruncatedNormal(mean=-0.5, stddev=0.2), "truncated", -0.5, 0.2),
    (S.GlorotUniform(), "uniform", 0.0, math.sqrt(6 / (FAN_IN + FAN_OUT))),
    (S.GlorotNormal(), "normal", 0.0, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (S.HeUniform(), "uniform", 0.0, math.sqrt(6 / FAN_IN)),
    (S.HeNormal(), "normal", 0.0, math.sqrt(2 / FAN_IN)),
    (S.LecunUniform(), "uniform", 0.0, math.sqrt(3 / FAN_IN)),
    (S.LecunNormal(), "normal", 0.0, math.sqrt(1 / FAN_IN)),
    (S.FanInUniform(), "uniform", 0.0, 1 / math.sqrt(FAN_IN)),
)] + [_variance_scaling(mode, n, distribution)
      for mode, n in (("fan_in", FAN_IN), ("fan_out", FAN_OUT), ("fan_avg", (FAN_IN + FAN_OUT) / 2))
      for distribution in ("uniform", "normal", "truncated_normal")]


@pytest.mark.parametrize("init, family, center, width", INITIALIZER_CASES)
def test_initializer_matches_its_closed_form(init, family, center, width):
    """On 120 000 draws: the bound (reached by uniform and cut draws), the mean, the variance within 2%
    (a fan_in/fan_avg mix-up is 14%, scale 1 for 2 is 50%) and the kurtosis (9/5 uniform, 3 normal,
    m4/m2² ≈ 2.37 cut at 2σ), which tells the three families apart at equal variance. Over seeds 0-99
    no moment used more than 55% of its tolerance."""
    w = init.sample(np.random.default_rng(0), (FAN_IN, FAN_OUT), FAN_IN, FAN_OUT)
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == np.float64
    if family == "constant":
        assert np.all(w == center)
        return
    m2, m4 = _truncated_moments()
    variance, kurtosis = {"uniform": (width**2 / 3, 9 / 5), "normal": (width**2, 3.0),
                          "truncated": (width**2 * m2, m4 / m2**2)}[family]
    d = w - center
    assert abs(w.mean() - center) < 0.02 * math.sqrt(variance)
    assert abs(w.var() / variance - 1) < 0.02
    assert abs(np.mean(d**4) / np.mean(d**2) ** 2 - kurtosis) < 0.1
    widest = np.abs(d).max()
    if family == "uniform":
        assert 0.999 * width < widest <= width
    elif family == "truncated":
        assert 0.995 * 2 * width < widest <= 2 * width
    else:
        assert widest > 3.5 * width  # 56 draws beyond 3.5σ expected


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


def test_dropout_masks_are_scaled_bernoulli_draws_per_layer_and_step():
    """rate 0.25: every mask value is 0 or 1/(1 - 0.25) = 4/3 and about 3/4 are kept (±0.01 is 5 standard
    deviations on 50 000 draws), so the mask averages 1; a (seed, layer, step) always gives the
    documented draw, stream(seed, "dropout", layer, step) uniforms < 0.75, and another layer, step or
    seed another one."""
    def dense(name, units=50):
        return S.Dense(name=name, units=units, kernel_init=S.Zeros(), bias_init=S.Zeros())

    e = dataclasses.replace(crossnn.example("circle"), model=S.Model(inputs=2, layers=(
        dense("h1"), S.Dropout(name="d1", rate=0.25), dense("h2"), S.Dropout(name="d2", rate=0.25), dense("out", 1))))
    clock = StepClock(e, 1200)
    masks = clock.masks(3, 1000)
    assert set(masks) == {"d1", "d2"}
    for name, mask in masks.items():
        assert mask.shape == (1000, 50) and set(np.unique(mask)) == {0.0, 4 / 3}
        assert abs((mask > 0).mean() - 0.75) < 0.01 and abs(mask.mean() - 1.0) < 0.015
        kept = stream(e.seed, "dropout", name, 3).random((1000, 50)) < 0.75
        assert np.array_equal(mask, kept * (4 / 3)) and np.array_equal(clock.masks(3, 1000)[name], mask)
    assert not np.array_equal(masks["d1"], masks["d2"])
    assert not np.array_equal(masks["d1"], clock.masks(4, 1000)["d1"])
    other_seed = StepClock(dataclasses.replace(e, seed=e.seed + 1), 1200)
    assert not np.array_equal(masks["d1"], other_seed.masks(3, 1000)["d1"])


def test_npz_and_csv_data_files_load_as_written(tmp_path):
    """A [data] path is read relative to the spec file. From an .npz: the arrays under x_key and y_key
    (integer x becomes float64, a 1-D y one column). From a .csv: the header line skipped, the last
    y_columns columns y and the others x."""
    linear = examples.path("linear-2x3").read_text()
    inline = "x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]"
    assert inline in linear
    (tmp_path / "data").mkdir()
    x = np.array([[1, -2, 3], [4, 5, -6], [7, 8, 9], [0, 1, 0]])
    y = np.array([0.5, -1.25, 3.0, 1e-3])
    np.savez(tmp_path / "data" / "train.npz", features=x, targets=y, unused=np.zeros(3))
    spec = tmp_path / "npz.toml"
    spec.write_text(linear.replace(inline, 'path = "data/train.npz"\nx_key = "features"\ny_key = "targets"'))
    data = load_dataset(S.load(spec))
    assert data.x.dtype == np.float64 and data.y.dtype == np.float64
    assert np.array_equal(data.x, x) and np.array_equal(data.y, y.reshape(4, 1))

    x = np.array([[0.5, -1.0], [2.25, 3.0], [-4.0, 0.125]])
    y = np.array([[10.0, -0.5], [20.0, 0.75], [30.0, 1.5]])
    rows = ["x1,x2,y1,y2"] + [",".join(repr(float(v)) for v in row) for row in np.hstack([x, y])]
    (tmp_path / "data" / "train.csv").write_text("\n".join(rows) + "\n")
    spec = tmp_path / "csv.toml"
    spec.write_text(linear.replace(inline, 'path = "data/train.csv"\ny_columns = 2\nheader = true')
                    .replace("inputs = 3", "inputs = 2").replace("units = 1", "units = 2"))
    data = load_dataset(S.load(spec))
    assert np.array_equal(data.x, x) and np.array_equal(data.y, y)


SMALL_GENERATORS = {"adder": {"n": 7, "inputs": 3}, "line": {"n": 7}, "circle": {"n": 7},
                    "random_normal": {"n": 7, "inputs": 3, "outputs": 2},
                    "teacher_classes": {"n": 7, "inputs": (5, 4, 3), "classes": 3},
                    "textures": {"n": 7, "size": 5, "channels": 2}, "token_sums": {"n": 7, "length": 4}}


@pytest.mark.parametrize("kind", sorted(S.DataSource.kinds()))
def test_every_generator_states_the_shapes_it_draws_before_drawing(kind):
    """The memory check sizes a generator's arrays from array_shapes before any is drawn: they must be
    a list of integer shapes whose first two are at least x and y as drawn (digits, shipped in
    memory by scikit-learn, states none)."""
    if kind == "digits":
        assert S.DataSource.kinds()[kind]().array_shapes() == []
        return
    source = S.DataSource.kinds()[kind](**SMALL_GENERATORS[kind])
    shapes = source.array_shapes()
    assert all(isinstance(k, int) for shape in shapes for k in shape)
    x, y = source.arrays(np.random.default_rng(0), None)
    assert shapes[0] == x.shape and math.prod(shapes[-1]) >= y.size


def test_inline_data_takes_numpy_arrays_as_the_same_frozen_spec(tmp_path):
    """Arrays of any numeric dtype become the nested tuples a file gives: equal, hashable, and the same
    TOML; the data set trains as the file's does."""
    x32, y = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32), np.array([[10], [20]], dtype=np.int64)
    from_arrays = S.InlineData(x=x32, y=y)
    from_lists = S.InlineData(x=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], y=[[10], [20]])
    assert from_arrays == from_lists and hash(from_arrays) == hash(from_lists)
    assert isinstance(from_arrays.x, tuple) and isinstance(from_arrays.x[0][0], float)
    assert isinstance(from_arrays.y[0][0], int)  # integers stay integers (class indices)
    linear = crossnn.example("linear-2x3")
    experiment = dataclasses.replace(linear, data=S.InlineData(x=np.array(linear.data.x), y=np.array(linear.data.y)))
    assert experiment == linear and S.dumps(experiment) == S.dumps(linear)
    assert crossnn.run(experiment, backends="numpy").table().endswith("fc/bias (1,): [0.78322055]")
    # also where inline data comes as a table, as in a file
    assert S.DataSource.from_value({"x": x32, "y": y}) == from_lists


def test_spec_files_are_read_with_tomli_where_tomllib_is_missing():
    """Python 3.10 has no tomllib; crossnn then reads TOML with tomli (a dependency there). Here tomllib
    is hidden from a fresh interpreter, which must fall back and read every example the same."""
    pytest.importorskip("tomli")
    code = ("import sys; sys.modules['tomllib'] = None\n"
            "import crossnn\n"
            "from crossnn import examples, spec\n"
            "from crossnn.spec import toml\n"
            "assert toml.tomllib.__name__ == 'tomli', toml.tomllib\n"
            "for name in examples.names():\n"
            "    text = examples.path(name).read_text()\n"
            "    assert spec.dumps(spec.loads(text)) == text, name\n"
            "try:\n    spec.loads('name = [')\nexcept crossnn.SpecError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("not valid TOML:")
