"""Presets (`defaults = "torch" | "keras"`): what they fill, the resolved form, the errors without one,
and every preset value against the installed framework's own default, measured."""

from __future__ import annotations

import math
import tomllib
from typing import NamedTuple

import numpy as np
import pytest

import crossnn
from crossnn import spec as S
from crossnn.cli import main
from crossnn.spec.presets import presets

#: a spec that leaves out every value a preset fills: eps, log_min, initializers, lr, slopes, the decay kind
PORTED = """\
defaults = "{preset}"
name = "ported"
seed = 4

[data]
generator = "circle"
n = 120

[model]
inputs = 2

[[model.layers]]
type = "dense"
units = 4
activation = "leaky_relu"

[[model.layers]]
type = "activation"
activation = "leaky_relu"

[[model.layers]]
type = "dense"
units = 1
activation = "sigmoid"

[loss]
type = "bce"

[optimizer]
type = "adam"
weight_decay = 0.01

[train]
epochs = 4
batch_size = 40
"""

#: the values each framework uses when they are left out (their documentation; measured below)
EXPECTED = {
    "torch": {"kernel_init": "fan_in_uniform", "bias_init": "fan_in_uniform", "dense_slope": 0.01, "layer_slope": 0.01,
              "log_min": -100.0, "lr": 1e-3, "eps": 1e-8, "weight_decay_kind": "l2"},
    "keras": {"kernel_init": "glorot_uniform", "bias_init": "zeros", "dense_slope": 0.2, "layer_slope": 0.3,
              "log_min": math.log(1e-7), "lr": 1e-3, "eps": 1e-7, "weight_decay_kind": "decoupled"},
}


def _write(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _resolved(table) -> dict:
    dense, activation, out = table["model"]["layers"]
    return {"kernel_init": dense["kernel_init"], "bias_init": out["bias_init"],
            "dense_slope": dense["activation"]["negative_slope"],
            "layer_slope": activation["activation"]["negative_slope"],
            "log_min": table["loss"]["log_min"], "lr": table["optimizer"]["lr"], "eps": table["optimizer"]["eps"],
            "weight_decay_kind": table["optimizer"]["weight_decay_kind"]}


@pytest.mark.parametrize("preset", ["torch", "keras"])
def test_show_resolved_writes_the_presets_values_as_plain_toml(tmp_path, capsys, preset):
    path = _write(tmp_path, PORTED.format(preset=preset))
    assert main(["show", str(path), "--resolved"]) == 0
    captured = capsys.readouterr()
    table = tomllib.loads(captured.out)  # stdout is TOML alone
    assert "defaults" not in table
    assert _resolved(table) == EXPECTED[preset]
    # the keras preset fills Keras' numbers into the spec's formulas, and says so where they differ
    assert ("optimizer.eps: Keras adds epsilon to √v before the bias correction" in captured.err) == (preset == "keras")

    again = S.loads(captured.out)  # the resolved form round-trips, and is what saving writes
    assert again == S.load(path)
    assert S.dumps(again) == captured.out


def test_torch_preset_spec_trains_to_parity_on_numpy_and_torch(tmp_path, capsys):
    pytest.importorskip("torch")
    path = _write(tmp_path, PORTED.format(preset="torch"))
    assert main(["run", str(path), "--backends", "numpy,torch"]) == 0
    assert "parity: PASS (1 of 1 runs agree)" in capsys.readouterr().out


def test_show_lists_what_the_preset_filled(tmp_path, capsys):
    path = _write(tmp_path, PORTED.format(preset="torch"))
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "filled from the torch preset" in out
    assert "  optimizer.eps = 1e-8  (adam-epsilon)" in out
    assert "  model.layers[1].activation.negative_slope = 0.01  (leaky-relu-slope)" in out


def test_written_values_win_over_the_preset():
    text = PORTED.format(preset="keras").replace('type = "adam"', 'type = "adam"\neps = 0.001\nlr = 0.5')
    optimizer = S.loads(text).optimizer
    assert (optimizer.eps, optimizer.lr) == (0.001, 0.5)


@pytest.mark.parametrize("value, message", [
    ('"jax"', "defaults: unknown preset 'jax'; presets: torch, keras"),
    ("3", "defaults: expected a preset name (a string), got int"),
])
def test_an_unknown_preset_is_one_line_and_exit_2(tmp_path, capsys, value, message):
    path = _write(tmp_path, PORTED.replace('"{preset}"', value))
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"crossnn: error: {path}: {message}\n"


def _complete(**changes) -> str:
    """The torch preset's resolved spec, without the preset, with `changes` applied to its text."""
    text = S.dumps(S.loads(PORTED.format(preset="torch")))
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("old, new, message", [
    ("eps = 1e-08\n", "", 'optimizer.eps: missing (torch uses 1e-8, keras 1e-7; write it, or set defaults = "torch" '
                         'or "keras" at the top of the file)'),
    ('kernel_init = "fan_in_uniform"\n', "",
     'model.layers[0].kernel_init: missing (torch uses fan_in_uniform, keras glorot_uniform; write it, or set '
     'defaults = "torch" or "keras" at the top of the file)'),
    ('activation = { type = "leaky_relu", negative_slope = 0.01 }\nuse_bias', 'activation = "leaky_relu"\nuse_bias',
     'model.layers[0].activation.negative_slope: missing (torch uses 0.01, keras 0.2; write { type = "leaky_relu", '
     'negative_slope = ... }, or set defaults = "torch" or "keras" at the top of the file)'),
    ('weight_decay_kind = "l2"\n', "", 'optimizer.weight_decay_kind: missing (torch uses "l2", keras "decoupled"; '
                                       'write it, or set defaults = "torch" or "keras" at the top of the file)'),
    ("log_min = -100.0\n", "", "loss.log_min: missing (torch uses -100.0, keras -16.11809565095832; write it, or "
                               'set defaults = "torch" or "keras" at the top of the file)'),
])
def test_a_missing_value_without_a_preset_names_the_field_and_suggests_the_presets(tmp_path, capsys, old, new,
                                                                                   message):
    path = _write(tmp_path, _complete(**{old: new}))
    assert main(["run", str(path), "--backends", "numpy"]) == 2
    assert capsys.readouterr().err == f"crossnn: error: {path}: {message}\n"


def test_a_field_no_preset_knows_keeps_the_plain_missing_key_error(tmp_path):
    text = _complete(**{'[loss]\ntype = "bce"\nlog_min = -100.0': '[loss]\ntype = "huber"'})
    with pytest.raises(crossnn.SpecError, match=r"loss: missing key 'delta' for loss 'huber'$"):
        S.loads(text, defaults="torch")


def test_a_value_the_chosen_preset_lacks_says_which_preset_has_one():
    text = PORTED.format(preset="torch").replace('type = "bce"', 'type = "cross_entropy"\nfrom_logits = false\n'
                                                                 'sparse = false')
    with pytest.raises(crossnn.SpecError) as info:
        S.loads(text)
    assert str(info.value) == "loss.log_min: missing (keras uses -16.11809565095832; torch has none; write it)"
    loss = S.loads(text.replace('"torch"', '"keras"')).loss
    assert (loss.from_logits, loss.log_min) == (False, math.log(1e-7))
    assert S.loads(text.replace("from_logits = false\n", "")).loss.from_logits is True  # torch's CE takes logits


def test_adamw_takes_its_frameworks_decay_and_always_decouples_it():
    text = PORTED.format(preset="{}").replace('type = "adam"\nweight_decay = 0.01', 'type = "adamw"')
    torch_adamw, keras_adamw = (S.loads(text.format(preset)).optimizer for preset in ("torch", "keras"))
    assert (torch_adamw.weight_decay, torch_adamw.weight_decay_kind) == (0.01, "decoupled")
    assert (keras_adamw.weight_decay, keras_adamw.weight_decay_kind) == (0.004, "decoupled")
    bare = _complete(**{'type = "adam"': 'type = "adamw"', "weight_decay = 0.01\n": "",
                        'weight_decay_kind = "l2"\n': ""})
    with pytest.raises(crossnn.SpecError, match=r"^optimizer.weight_decay: missing \(torch uses 0.01, keras 0.004;"):
        S.loads(bare)


def test_python_construction_with_and_without_a_preset():
    dense = S.make(S.Dense, units=5, activation="leaky_relu", defaults="keras")
    assert (dense.kernel_init, dense.bias_init, dense.activation) == (S.GlorotUniform(), S.Zeros(),
                                                                        S.LeakyReLU(negative_slope=0.2))
    layer = S.make(S.ActivationLayer, activation={"type": "leaky_relu"}, defaults="keras")
    assert layer.activation.negative_slope == 0.3  # keras.layers.LeakyReLU's, not keras.activations.leaky_relu's
    assert S.make(S.Adam, lr=0.1, defaults="torch") == S.Adam(lr=0.1, eps=1e-8)
    assert S.make(S.Optimizer, type="rmsprop", defaults="keras") == S.RMSprop(lr=1e-3, alpha=0.9, eps=1e-7)
    with pytest.raises(crossnn.SpecError) as info:
        S.make(S.Dense, units=5)
    assert str(info.value) == ('kernel_init: missing (torch uses fan_in_uniform, keras glorot_uniform; write it, or '
                               'pass defaults="torch" or "keras")')
    with pytest.raises(TypeError):  # the dataclass itself stays a plain dataclass
        S.Dense(units=5)

    table = tomllib.loads(PORTED.format(preset="torch"))
    del table["defaults"]
    assert S.from_dict(table, defaults="torch") == S.loads(PORTED.format(preset="torch"))
    assert S.from_dict({**table, "defaults": "torch"}) == S.from_dict(table, defaults="torch")
    with pytest.raises(crossnn.SpecError, match="defaults: the spec says 'keras', the caller 'torch'"):
        S.from_dict({**table, "defaults": "keras"}, defaults="torch")


def test_a_default_may_only_fill_a_field_the_spec_leaves_open():
    with pytest.raises(TypeError, match="SGD.momentum has a default in the spec"):
        S.Default(S.SGD, "momentum", {"torch": 0.0})
    with pytest.raises(TypeError, match="SGD has no field 'epsilon'"):
        S.Default(S.SGD, "epsilon", {"torch": 0.0})


# ---- every preset value against the installed frameworks --------------------------------------------

def _placements():
    """Every (spec class, field, containing class) a preset fills: each Default's own, and the subclasses
    that inherit it (AdamW takes Adam's eps)."""
    known, seen = presets(), {}
    for _, default in known.defaults:
        family = default.spec.kinds() if default.spec.family else {}
        for cls in [default.spec, *family.values()]:
            if cls.kind and issubclass(cls, default.spec) and cls.__module__.startswith("crossnn.spec"):
                seen[(cls, default.field, default.within)] = None
    return known, list(seen)


def _torch_defaults(cls):
    import torch

    return getattr(torch.optim, cls)([torch.zeros(1, requires_grad=True)]).defaults


def _keras_config(cls):
    import keras

    return getattr(keras.optimizers, cls)().get_config()


def _slope(activation) -> float:
    """The negative slope an activation applies, read off its value at -1."""
    return -float(np.asarray(activation(np.array([-1.0], dtype=np.float32)))[0])


def _torch_slope(layer):
    import torch

    return lambda x: layer(torch.from_numpy(x)).numpy()


def _keras_gelu_form() -> str:
    import keras

    z = 1.5
    value = float(keras.activations.get("gelu")(np.array([z], dtype=np.float64))[0])
    exact = 0.5 * z * (1 + math.erf(z / math.sqrt(2)))
    return "none" if math.isclose(value, exact, rel_tol=1e-6) else "tanh"


def _decay_kind(step) -> str:
    """Whether a framework's weight_decay is L2 or decoupled: two steps of its optimizer with decay λ
    against the same optimizer without decay fed g + λw (L2), or run after w ← w·(1 - lr·λ)
    (decoupled); `step(w0, gradient(w, g), decay, shrink)` runs them (lr 0.1, λ 0.1)."""
    lr, decay = 0.1, 0.1
    native = step(1.0, lambda w, g: g, decay)
    l2 = step(1.0, lambda w, g: g + decay * w, 0.0)
    decoupled = step(1.0, lambda w, g: g, 0.0, shrink=1 - lr * decay)
    assert not math.isclose(l2, decoupled, rel_tol=1e-9), "the two kinds must differ in this probe"
    if math.isclose(native, l2, rel_tol=1e-9):
        return "l2"
    return "decoupled" if math.isclose(native, decoupled, rel_tol=1e-9) else f"neither ({native} vs {l2}, {decoupled})"


def _torch_step(cls, **options):
    import torch

    def run(w0, gradient, decay, shrink=1.0):
        w = torch.tensor([w0], dtype=torch.float64, requires_grad=True)
        optimizer = getattr(torch.optim, cls)([w], lr=0.1, weight_decay=decay, **options)
        for g in (0.5, -0.3):
            with torch.no_grad():
                w.mul_(shrink)
            w.grad = torch.tensor([gradient(w.item(), g)], dtype=torch.float64)
            optimizer.step()
        return w.item()
    return run


def _keras_step(cls, **options):
    import keras
    import tensorflow as tf

    def run(w0, gradient, decay, shrink=1.0):
        w = tf.Variable([w0], dtype=tf.float64)
        optimizer = getattr(keras.optimizers, cls)(learning_rate=0.1, weight_decay=decay, **options)
        for g in (0.5, -0.3):
            w.assign(w * shrink)
            optimizer.apply_gradients([(tf.constant([gradient(float(w.numpy()[0]), g)], tf.float64), w)])
        return float(w.numpy()[0])
    return run


OPTIMIZERS = {S.SGD: "SGD", S.Adam: "Adam", S.AdamW: "AdamW", S.RMSprop: "RMSprop", S.Adagrad: "Adagrad"}
TORCH_OPTIONS = {"SGD": {"momentum": 0.9}, "AdamW": {}}  # momentum: plain SGD cannot tell L2 from decoupled
KERAS_OPTIONS = {"SGD": {"momentum": 0.9}}
TORCH_NAMES = {"lr": "lr", "eps": "eps", "alpha": "alpha", "initial_accumulator": "initial_accumulator_value",
               "weight_decay": "weight_decay"}
KERAS_NAMES = {"lr": "learning_rate", "eps": "epsilon", "alpha": "rho",
               "initial_accumulator": "initial_accumulator_value", "weight_decay": "weight_decay"}


class Drawn(NamedTuple):
    """A framework's initial values of one parameter, in the spec's layout, with the fans and units the
    spec's own layer of that size gives the parameter (the preset's initializer is drawn with them)."""

    values: np.ndarray
    fan_in: int
    fan_out: int
    units: int


def _drawn(values, layer: S.Layer, input_shape: tuple, name: str) -> Drawn:
    param = next(p for p in layer.parameters((input_shape,)) if p.name == name)
    units = getattr(layer, "units", None) or getattr(layer, "filters", None) or getattr(layer, "output_dim")
    return Drawn(np.asarray(values, dtype=np.float64), param.fan_in, param.fan_out, units)


_Z = S.Zeros()
#: the recurrent layers whose initializers are measured, sized so that every parameter has thousands of draws:
#: spec class -> (torch.nn class, keras.layers class, units)
RECURRENT = {S.SimpleRNN: ("RNN", "SimpleRNN", 1024), S.LSTM: ("LSTM", "LSTM", 512), S.GRU: ("GRU", "GRU", 512)}
FEATURES, STEPS = 64, 5
PARAMETER = {"kernel_init": "kernel", "recurrent_init": "recurrent_kernel", "bias_init": "bias",
             "embeddings_init": "embeddings"}


def _spec_layer(cls):
    """The spec's layer of the size the frameworks' layers are built with below, and its input shape."""
    if cls is S.Dense:
        return S.Dense(units=3000, kernel_init=_Z, bias_init=_Z), (400,)
    if cls is S.Conv2D:
        return S.Conv2D(filters=3000, kernel_size=(5, 5), padding="valid", kernel_init=_Z, bias_init=_Z), (8, 8, 16)
    if cls is S.Embedding:
        return S.Embedding(input_dim=4000, output_dim=300, embeddings_init=_Z), (7,)
    extra = {S.GRU: {"reset_after": True}, S.LSTM: {"unit_forget_bias": False}}.get(cls, {})
    return cls(units=RECURRENT[cls][2], kernel_init=_Z, recurrent_init=_Z, bias_init=_Z, **extra), (STEPS, FEATURES)


def _torch_draws(cls, field: str) -> Drawn:
    """torch's own initial values (seed 0) of the parameter `field` initializes, in the spec's layout."""
    import torch

    layer, shape = _spec_layer(cls)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if cls is S.Dense:
            module = torch.nn.Linear(400, 3000)
            values = {"kernel_init": module.weight.T, "bias_init": module.bias}[field]
        elif cls is S.Conv2D:
            module = torch.nn.Conv2d(16, 3000, (5, 5))
            values = {"kernel_init": module.weight.permute(2, 3, 1, 0), "bias_init": module.bias}[field]
        elif cls is S.Embedding:
            values = torch.nn.Embedding(4000, 300).weight
        else:  # both biases, b_ih and b_hh, are drawn alike
            module = getattr(torch.nn, RECURRENT[cls][0])(FEATURES, layer.units)
            values = {"kernel_init": module.weight_ih_l0.T, "recurrent_init": module.weight_hh_l0.T,
                      "bias_init": torch.cat([module.bias_ih_l0, module.bias_hh_l0])}[field]
    return _drawn(values.detach().numpy(), layer, shape, PARAMETER[field])


def _keras_draws(cls, field: str) -> Drawn:
    """Keras' own initial values (seed 0) of the parameter `field` initializes."""
    import keras

    layer, shape = _spec_layer(cls)
    keras.utils.set_random_seed(0)
    if cls is S.Dense:
        built = keras.layers.Dense(3000)
    elif cls is S.Conv2D:
        built = keras.layers.Conv2D(3000, (5, 5))
    elif cls is S.Embedding:
        built = keras.layers.Embedding(4000, 300)
    else:
        options = {"unit_forget_bias": False} if cls is S.LSTM else {}  # bias_init alone (see unit_forget_bias)
        built = getattr(keras.layers, RECURRENT[cls][1])(layer.units, **options)
    built.build((None, *shape))
    weights = {weight.path.rsplit("/", 1)[-1]: weight.numpy() for weight in built.weights}
    return _drawn(weights[PARAMETER[field]], layer, shape, PARAMETER[field])


def _variance_kind(estimate, x: np.ndarray) -> str:
    """Which variance of the batch x a running/moving variance equals."""
    for kind, ddof in (("biased", 0), ("unbiased", 1)):
        if np.allclose(estimate, x.var(axis=0, ddof=ddof), rtol=1e-5):
            return kind
    return f"neither ({estimate})"


def _torch_gru_resets_after() -> bool | str:
    """Whether nn.GRU's output is the reset-after form, n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),
    or the reset-before one, n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn): computed from its weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gru = torch.nn.GRU(3, 4, batch_first=True, dtype=torch.float64)
        x = torch.randn(2, 5, 3, dtype=torch.float64)
    out = gru(x)[0].detach().numpy()
    w_ih, w_hh, b_ih, b_hh = (p.detach().numpy() for p in (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0,
                                                            gru.bias_hh_l0))
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for after in (True, False):
        h, steps = np.zeros((2, 4)), []
        for t in range(5):
            gi, gh = x[:, t].numpy() @ w_ih.T + b_ih, h @ w_hh.T + b_hh
            r, z = sigmoid(gi[:, :4] + gh[:, :4]), sigmoid(gi[:, 4:8] + gh[:, 4:8])
            n = np.tanh(gi[:, 8:] + (r * gh[:, 8:] if after else (r * h) @ w_hh[8:].T + b_hh[8:]))
            h = (1 - z) * n + z * h
            steps.append(h)
        if np.allclose(np.stack(steps, 1), out, rtol=1e-12, atol=1e-12):
            return after
    return "neither form"


def _layer_default(preset: str, cls, field: str):
    """The installed framework's own value of a layer field that is not an initializer."""
    import keras
    import torch

    if cls is S.Conv2D:  # padding: the output size of a 3×3 convolution of an 8×8 image
        if preset == "torch":
            size = torch.nn.Conv2d(1, 1, 3)(torch.zeros(1, 1, 8, 8)).shape[-1]
        else:
            size = keras.layers.Conv2D(1, 3)(np.zeros((1, 8, 8, 1), dtype=np.float32)).shape[2]
        return {6: "valid", 8: "same"}.get(int(size), f"output size {size}")
    if cls is S.AvgPool2D:  # the average of a 2×2 window over one pixel of ones and three padded positions
        if preset == "torch":
            value = torch.nn.AvgPool2d(2, stride=2, padding=1)(torch.ones(1, 1, 3, 3))[0, 0, 0, 0].item()
        else:
            value = float(keras.layers.AveragePooling2D(2, 2, "same")(np.ones((1, 3, 3, 1), np.float32))[0, 1, 1, 0])
        return {0.25: True, 1.0: False}.get(value, f"average {value}")
    if cls is S.BatchNorm:
        x = np.array([[1.0, 2.0], [3.0, 5.0], [6.0, 11.0]])
        if preset == "torch":
            if field == "running_variance":  # momentum 1: the running variance is the batch's estimate
                bn = torch.nn.BatchNorm1d(2, momentum=1.0, dtype=torch.float64)
                bn(torch.from_numpy(x))
                return _variance_kind(bn.running_var.numpy(), x)
            bn = torch.nn.BatchNorm2d(3)
            return {"momentum": 1 - bn.momentum, "epsilon": bn.eps}[field]  # torch's momentum weighs the new batch
        if field == "running_variance":
            bn = keras.layers.BatchNormalization(momentum=0.0)
            bn(x.astype(np.float32), training=True)
            return _variance_kind(bn.moving_variance.numpy(), x)
        bn = keras.layers.BatchNormalization()
        return {"momentum": bn.momentum, "epsilon": bn.epsilon}[field]
    if cls is S.LayerNorm:
        return torch.nn.LayerNorm(4).eps if preset == "torch" else keras.layers.LayerNormalization().epsilon
    if cls is S.LSTM:  # unit_forget_bias: does the forget gate's bias start at 1 (the slice [units, 2·units))?
        if preset == "torch":
            lstm = torch.nn.LSTM(3, 8)
            return bool(torch.all(lstm.bias_ih_l0[8:16] + lstm.bias_hh_l0[8:16] == 1.0).item())
        lstm = keras.layers.LSTM(8)
        lstm.build((None, 5, 3))
        return bool(np.all(lstm.cell.bias.numpy()[8:16] == 1.0))
    if cls is S.GRU:
        if preset == "torch":
            return _torch_gru_resets_after()
        gru = keras.layers.GRU(4)
        gru.build((None, 5, 3))
        return gru.reset_after and tuple(gru.cell.bias.shape) == (2, 12)
    raise AssertionError(f"no measurement of the {preset} default of {cls.__name__}.{field}: add one here")


def _measure(preset: str, cls, field: str, within):
    """The installed framework's own default for the spec's `cls.field` (inside `within`), in the spec's
    convention: read from the framework's objects or computed by running them (initializers: their
    draws, see Drawn). None: it has none."""
    import keras
    import torch

    if cls in OPTIMIZERS:
        name = OPTIMIZERS[cls]
        if field == "weight_decay_kind":
            options = (TORCH_OPTIONS if preset == "torch" else KERAS_OPTIONS).get(name, {})
            return _decay_kind((_torch_step if preset == "torch" else _keras_step)(name, **options))
        if preset == "torch":
            return _torch_defaults(name)[TORCH_NAMES[field]]
        return float(_keras_config(name)[KERAS_NAMES[field]])
    if field in PARAMETER:
        return (_torch_draws if preset == "torch" else _keras_draws)(cls, field)
    if cls is S.LeakyReLU:
        if preset == "torch":  # nn.LeakyReLU and F.leaky_relu share the default
            return _slope(_torch_slope(torch.nn.LeakyReLU()))
        return _slope(keras.layers.LeakyReLU() if within is S.ActivationLayer else keras.activations.get("leaky_relu"))
    if cls is S.GELU:
        return torch.nn.GELU().approximate if preset == "torch" else _keras_gelu_form()
    if cls is S.BCE:  # the loss at p = 0, y = 1 is -log_min
        if preset == "torch":
            return -torch.nn.BCELoss()(torch.tensor([0.0]), torch.tensor([1.0])).item()
        return -float(keras.losses.BinaryCrossentropy()(np.array([[1.0]]), np.array([[0.0]])))
    if cls is S.CrossEntropy:
        z, label = np.array([[2.0, 1.0, 0.1]]), 0
        if field == "from_logits":  # torch: the loss of z is -log_softmax(z)[label], z taken as logits
            if preset == "torch":
                value = torch.nn.CrossEntropyLoss()(torch.from_numpy(z), torch.tensor([label])).item()
                return math.isclose(value, math.log(np.exp(z).sum()) - z[0, label], rel_tol=1e-12)
            return keras.losses.CategoricalCrossentropy().get_config()["from_logits"]
        if preset == "torch":
            return None  # torch has no cross-entropy on probabilities to take a clamp from
        return -float(keras.losses.CategoricalCrossentropy()(np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 0.5, 0.5]])))
    return _layer_default(preset, cls, field)


def _same_distribution(drawn: Drawn, init: S.Initializer) -> bool:
    """The framework's draws and the preset's initializer, drawn here in the same shape with the spec
    layer's fans and units, are one distribution: their two-sample Kolmogorov-Smirnov distance is under
    its 0.1 % critical value, their standard deviations agree within 3 % and the mean is within 5 % of
    one (zeros: both all zero). An orthogonal initializer's draws have orthonormal rows (or columns)
    times its gain, as the framework's must."""
    draws = drawn.values
    ours = init.for_units(drawn.units).sample(np.random.default_rng(0), draws.shape, drawn.fan_in, drawn.fan_out)
    if isinstance(init, S.Orthogonal):
        return _orthonormal(draws, init.gain) and _orthonormal(ours, init.gain)
    if not np.any(ours):
        return not np.any(draws)
    a, b = np.sort(draws.ravel()), np.sort(ours.ravel())
    points = np.concatenate([a, b])
    distance = np.max(np.abs(np.searchsorted(a, points, side="right") / a.size
                             - np.searchsorted(b, points, side="right") / b.size))
    critical = 1.95 * math.sqrt((a.size + b.size) / (a.size * b.size))
    return (distance < critical and math.isclose(draws.std(), ours.std(), rel_tol=3e-2)
            and abs(draws.mean()) < 0.05 * ours.std())


def _orthonormal(w: np.ndarray, gain: float) -> bool:
    """w (as a matrix of its last axis' columns) has orthonormal rows, or columns if it has fewer, times gain."""
    m = w.reshape(-1, w.shape[-1])
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return bool(np.allclose(gram, gain ** 2 * np.eye(len(gram)), atol=1e-5))


@pytest.mark.parametrize("preset", ["torch", "keras"])
def test_every_preset_value_is_the_installed_frameworks_default(preset):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    crossnn.backends.prepare(["torch", "tensorflow"])  # their import order
    known, placements = _placements()
    assert preset in known.names
    checked = []
    for cls, field, within in placements:
        chosen = known.pick(known.candidates(cls, field, within), preset)
        measured = _measure(preset, cls, field, within)
        where = f"{preset}: {cls.kind}.{field}" + (f" inside {within.kind}" if within else "")
        if chosen is None:
            assert measured is None, f"{where}: the framework has {measured!r}, the preset nothing"
            continue
        value = chosen[1].values[preset]
        if isinstance(value, S.Initializer):
            assert _same_distribution(measured, value), f"{where}: {value.kind} is not the framework's"
        elif isinstance(value, float):
            assert math.isclose(measured, value, rel_tol=1e-6), f"{where}: framework {measured!r}, preset {value!r}"
        else:
            assert measured == value, f"{where}: framework {measured!r}, preset {value!r}"
        checked.append(where)
    assert len(checked) >= 20, checked


@pytest.mark.parametrize("preset, expected", [
    ("torch", [S.SGD(lr=1e-3), S.Adam(lr=1e-3, eps=1e-8), S.AdamW(lr=1e-3, eps=1e-8, weight_decay=0.01),
               S.RMSprop(lr=1e-2, alpha=0.99, eps=1e-8), S.Adagrad(lr=1e-2, initial_accumulator=0.0, eps=1e-10),
               S.BCE(log_min=-100.0), S.CrossEntropy(from_logits=True, sparse=False), S.LeakyReLU(negative_slope=0.01),
               S.GELU(approximate="none")]),
    ("keras", [S.SGD(lr=1e-2), S.Adam(lr=1e-3, eps=1e-7), S.AdamW(lr=1e-3, eps=1e-7, weight_decay=0.004),
               S.RMSprop(lr=1e-3, alpha=0.9, eps=1e-7), S.Adagrad(lr=1e-3, initial_accumulator=0.1, eps=1e-7),
               S.BCE(log_min=math.log(1e-7)), S.CrossEntropy(from_logits=False, sparse=False, log_min=math.log(1e-7)),
               S.LeakyReLU(negative_slope=0.2), S.GELU(approximate="none")]),
])
def test_a_preset_completes_every_built_in_class_it_covers(preset, expected):
    fields = {S.CrossEntropy: {"sparse": False}}
    assert [S.make(type(spec), defaults=preset, **fields.get(type(spec), {})) for spec in expected] == expected


def _layers(conv_init, bias_init, count_padding, momentum, epsilon, variance, embeddings, recurrent, forget):
    """One of each layer a preset completes, with these values (recurrent: kernel, recurrent, bias inits)."""
    kernel, recurrent_kernel, bias = recurrent
    inits = dict(kernel_init=kernel, recurrent_init=recurrent_kernel, bias_init=bias)
    return [S.Conv2D(filters=4, kernel_size=(3, 3), padding="valid", kernel_init=conv_init, bias_init=bias_init),
            S.AvgPool2D(pool_size=(2, 2), count_padding=count_padding),
            S.BatchNorm(momentum=momentum, epsilon=epsilon, running_variance=variance), S.LayerNorm(epsilon=epsilon),
            S.Embedding(input_dim=10, output_dim=4, embeddings_init=embeddings), S.SimpleRNN(units=3, **inits),
            S.LSTM(units=3, unit_forget_bias=forget, **inits), S.GRU(units=3, reset_after=True, **inits)]


@pytest.mark.parametrize("preset, expected", [
    ("torch", _layers(S.FanInUniform(), S.FanInUniform(), True, 0.9, 1e-5, "unbiased", S.Normal(mean=0.0, stddev=1.0),
                      (S.UnitsUniform(),) * 3, False)),
    ("keras", _layers(S.GlorotUniform(), S.Zeros(), False, 0.99, 1e-3, "biased", S.Uniform(low=-0.05, high=0.05),
                      (S.GlorotUniform(), S.Orthogonal(), S.Zeros()), True)),
])
def test_a_preset_completes_the_layers_with_framework_defaults(preset, expected):
    sizes = {S.Conv2D: {"filters": 4, "kernel_size": (3, 3)}, S.AvgPool2D: {"pool_size": (2, 2)},
             S.Embedding: {"input_dim": 10, "output_dim": 4}}
    made = [S.make(type(layer), defaults=preset, **sizes.get(type(layer), {"units": 3} if hasattr(layer, "units")
                                                              else {})) for layer in expected]
    assert made == expected


def test_layer_defaults_without_a_preset_name_the_field_and_show_tables_as_toml():
    with pytest.raises(crossnn.SpecError) as info:
        S.make(S.Embedding, input_dim=10, output_dim=4)
    assert str(info.value) == ('embeddings_init: missing (torch uses { type = "normal", mean = 0.0, stddev = 1.0 }, '
                               'keras { type = "uniform", low = -0.05, high = 0.05 }; write it, or pass '
                               'defaults="torch" or "keras")')
    # unit_forget_bias has no default (PyTorch has no such option, Keras' is true): say it or take a preset
    inits = dict(kernel_init="glorot_uniform", recurrent_init="orthogonal", bias_init="zeros")
    with pytest.raises(crossnn.SpecError, match=r"^unit_forget_bias: missing \(torch uses false, keras true;"):
        S.make(S.LSTM, units=3, **inits)
    assert S.make(S.LSTM, units=3, defaults="keras", **inits).unit_forget_bias is True
    assert S.make(S.LSTM, units=3, unit_forget_bias=False, **inits).unit_forget_bias is False
