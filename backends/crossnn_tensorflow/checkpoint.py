"""Keras' own formats: a keras model mirroring a spec, checkpoints in Keras' .weights.h5 format,
Keras' default initial parameters drawn on that model (the native "default-init"), and a user's
Keras model read back into a spec (import_keras).

The keras model is a keras.Sequential of the layers' Keras counterparts (each registry entry's
`keras`, named like the spec's layers) when the model is a chain, else a functional keras.Model.
Keras keeps weights in crossnn's canonical layout (a Dense kernel (in, units), a Conv2D kernel
(kh, kw, in, out), NHWC images), so weights move without a transpose, in node.params order.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from crossnn import spec
from crossnn.checkpoint import CheckpointError, TrainingState
from crossnn.errors import UnsupportedFeature
from crossnn.files import write_bytes_atomic
from crossnn.spec import INPUT, Experiment

from crossnn_tensorflow import ops


def keras_layer(node, dtype: str, purpose: str):
    """The Keras counterpart of a node (its entry's `keras`), or UnsupportedFeature."""
    entry = ops.OPS.lookup(node.layer, purpose)
    if not hasattr(entry, "keras"):
        raise UnsupportedFeature("tensorflow", f"layer '{node.layer.kind}' {purpose} (its entry has no Keras layer)")
    return entry.keras(node, dtype)


def _is_chain(model: spec.Model) -> bool:
    previous = INPUT
    for node, layer in zip(model.nodes, model.layers):
        if node.layer is not layer or node.inputs != (previous,):
            return False
        previous = layer.name
    return True


def keras_model(experiment: Experiment, dtype: str = "float64"):
    """(keras model, {spec layer name: keras layer}) mirroring the spec's model, built (weights made,
    Keras' default initializers in them)."""
    import keras

    model = experiment.model
    made = {node.name: keras_layer(node, dtype, "as a Keras layer") for node in model.nodes}
    inputs = keras.Input(shape=model.input_shape, dtype=dtype, name="input")
    if _is_chain(model):
        return keras.Sequential([inputs] + [made[layer.name] for layer in model.layers]), made
    tensors = {INPUT: inputs}
    for node in model.nodes:
        args = [tensors[name] for name in node.inputs]
        tensors[node.name] = made[node.name](args if len(args) > 1 else args[0])
    return keras.Model(inputs=inputs, outputs=tensors[model.layers[-1].name]), made


def _node(experiment: Experiment, name: str):
    return next(n for n in experiment.model.nodes if n.name == name)


def _weights(node) -> tuple:
    """A node's variables in its Keras layer's weight order: the parameters, then the state (Keras
    keeps a BatchNormalization's moving statistics after gamma and beta)."""
    return (*node.params, *node.state)


def set_weights(experiment: Experiment, made: dict, params, dtype: str) -> None:
    for name, layer in made.items():
        if layer.weights:
            node = _node(experiment, name)
            layer.set_weights([np.asarray(params[f"{name}/{p.name}"], dtype=dtype) for p in _weights(node)])


def get_weights(experiment: Experiment, made: dict) -> dict[str, np.ndarray]:
    """Canonical float64 variables (parameters and state) of the keras layers, in the spec's order."""
    values = {name: layer.get_weights() for name, layer in made.items()}
    out = {}
    for name in experiment.model.variable_inits():
        layer, param = name.split("/", 1)
        shorts = [p.name for p in _weights(_node(experiment, layer))]
        out[name] = np.array(values[layer][shorts.index(param)], dtype=np.float64)
    return out


# ---- the native "default-init": Keras' own initializers ------------------------------------------


def keras_initial_parameters(experiment: Experiment, params, dtype: str):
    """The given parameters with every layer that has a Keras counterpart replaced by that layer's
    defaults (Dense and Conv2D: kernel glorot_uniform, whose fans count the receptive field for a
    conv kernel, and zero bias; BatchNormalization and LayerNormalization: gamma ones, beta zeros,
    moving mean zeros, moving variance ones; Embedding U(±0.05); SimpleRNN, LSTM and GRU: kernel
    glorot_uniform, recurrent kernel orthogonal, bias zeros, LSTM's forget gate's 1), drawn after
    keras.utils.set_random_seed(experiment.seed) (which also seeds Python's `random`, NumPy's global
    generator and TF's global seed, as it does in a user's program). Layers are built in the model's
    order, as a Keras model builds them."""
    import keras

    keras.utils.set_random_seed(experiment.seed)
    out = dict(params)
    for node in experiment.model.nodes:
        if node.params or node.state:
            layer = keras_layer(node, dtype, "with Keras' initializers")
            layer.build((None, *node.input_shapes[0]))
            for p, value in zip(_weights(node), layer.get_weights()):
                out[f"{node.name}/{p.name}"] = value
    return out


# ---- native checkpoints: Keras' .weights.h5 -------------------------------------------------------

SUFFIX = ".weights.h5"


def _quiet_save(model, path) -> None:
    with warnings.catch_warnings():  # Keras' own np.array(variable) call, NumPy 2's copy= notice
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        model.save_weights(path)


def export_weights(experiment: Experiment, state: TrainingState, path) -> None:
    """Write the state's parameters and layer state (a BatchNormalization's moving statistics) as a
    Keras .weights.h5 of the keras model mirroring the spec (float64 weights), completely or not at
    all. A .weights.h5 holds weights only: the step and the optimizer state are not written."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise CheckpointError(f"{path}: a Keras weights file must end in '{SUFFIX}'")
    missing = [name for name in experiment.model.variable_inits() if name not in state.params]
    if missing:
        raise CheckpointError(f"{path}: the training state has no parameter '{missing[0]}'")
    model, made = keras_model(experiment, "float64")
    set_weights(experiment, made, state.params, "float64")
    with tempfile.TemporaryDirectory() as folder:
        made_here = Path(folder) / f"model{SUFFIX}"
        _quiet_save(model, made_here)
        write_bytes_atomic(path, made_here.read_bytes())  # crossnn's writer: modes, links, one-line errors


def _h5_datasets(path) -> dict[str, tuple[int, ...]]:
    """{dataset path: shape} of every array in an HDF5 file."""
    import h5py

    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, tuple(obj.shape)) if isinstance(obj, h5py.Dataset)
                     else None)
    return found


def import_weights(experiment: Experiment, path) -> TrainingState:
    """Load a Keras .weights.h5 into the keras model mirroring the spec and return its parameters as
    a TrainingState at step 0 with no optimizer state (the file holds weights only). The file must
    hold exactly the arrays of that model (paths and shapes, as Keras names them: by layer class and
    position, not by layer name), else CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        found = _h5_datasets(path)
    except OSError as err:
        raise CheckpointError(f"{path}: not a Keras .weights.h5 file ({str(err).splitlines()[0]})") from None
    model, made = keras_model(experiment, "float64")
    with tempfile.TemporaryDirectory() as tmp:  # what this spec's model writes: the paths and shapes expected
        own = Path(tmp) / f"expected{SUFFIX}"
        _quiet_save(model, own)
        expected = _h5_datasets(own)
    for key in sorted(set(expected) | set(found)):
        if key not in found:
            raise CheckpointError(f"{path}: missing '{key}' of shape {expected[key]} (not a weights file of "
                                  f"this spec's model '{experiment.name}')")
        if key not in expected:
            raise CheckpointError(f"{path}: holds '{key}', which this spec's model '{experiment.name}' does not have")
        if found[key] != expected[key]:
            raise CheckpointError(f"{path}: '{key}' has shape {found[key]}, this spec's model needs {expected[key]}")
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: Keras cannot load it ({str(err).splitlines()[0]})") from None
    return TrainingState(0, get_weights(experiment, made), {}, {})


# ---- reading a user's Keras model back into a spec --------------------------------------------------

#: Keras activation names whose function is the spec's. leaky_relu (slope 0.2) and gelu (the exact
#: form) are left out on purpose: Keras computes them with float32 constants (the slope is a float32
#: op attribute, tf.nn.gelu casts 1/√2 through float32; catalog entries leaky-relu-slope and
#: gelu-approximation), so a float64 Keras model using them would not match the imported spec.
KERAS_ACTIVATIONS = {"linear": spec.Linear(), "relu": spec.ReLU(), "sigmoid": spec.Sigmoid(), "tanh": spec.Tanh(),
                     "softmax": spec.Softmax(), "softplus": spec.Softplus()}

#: Keras initializer class -> the spec's initializer, from its config. Keras' GlorotNormal, HeNormal
#: and LecunNormal truncate their normal (the spec's names for those do not: torch's)
KERAS_INITIALIZERS = {
    "GlorotUniform": lambda c: spec.GlorotUniform(), "HeUniform": lambda c: spec.HeUniform(),
    "LecunUniform": lambda c: spec.LecunUniform(), "Zeros": lambda c: spec.Zeros(), "Ones": lambda c: spec.Ones(),
    "Constant": lambda c: spec.Constant(value=float(c["value"])),
    "RandomUniform": lambda c: spec.Uniform(low=c["minval"], high=c["maxval"]),
    "RandomNormal": lambda c: spec.Normal(mean=c["mean"], stddev=c["stddev"]),
    "TruncatedNormal": lambda c: spec.TruncatedNormal(mean=c["mean"], stddev=c["stddev"]),
    "Orthogonal": lambda c: spec.Orthogonal(gain=float(c.get("gain", 1.0))),
    "GlorotNormal": lambda c: spec.VarianceScaling(scale=1.0, mode="fan_avg", distribution="truncated_normal"),
    "HeNormal": lambda c: spec.VarianceScaling(scale=2.0, mode="fan_in", distribution="truncated_normal"),
    "LecunNormal": lambda c: spec.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal"),
    "VarianceScaling": lambda c: spec.VarianceScaling(
        scale=c["scale"], mode=c["mode"],
        distribution={"untruncated_normal": "normal"}.get(c["distribution"], c["distribution"])),
}


class KerasReader:
    """What an entry's from_keras uses to read Keras' activations and initializers, for one layer."""

    def __init__(self, where: str):
        self.where = where

    def activation(self, name) -> spec.Activation:
        key = name if isinstance(name, str) else getattr(name, "__name__", repr(name))
        if key not in KERAS_ACTIVATIONS:
            raise UnsupportedFeature("tensorflow", f"importing activation '{key}' of {self.where}")
        return KERAS_ACTIVATIONS[key]

    def initializer(self, config) -> spec.Initializer:
        name = config["class_name"] if isinstance(config, dict) else str(config)
        if name not in KERAS_INITIALIZERS:
            raise UnsupportedFeature("tensorflow", f"importing initializer '{name}' of {self.where}")
        return KERAS_INITIALIZERS[name](config.get("config", {}) if isinstance(config, dict) else {})


def _parents(nodes) -> list[str]:
    """Names of the layers feeding a layer, from its Keras 3 inbound_nodes config, in order."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            history = (value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__"
                       else None)
            if history:
                found.append(history[0])
            else:
                for item in value.values():
                    walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(nodes[:1])  # a layer called once: its first node
    return found


def import_keras(model):
    """(spec Model, canonical float64 parameters) for a built Keras Sequential or functional model
    with one input, of the layers the registry entries read (Dense, Conv2D, MaxPooling2D,
    AveragePooling2D (count_padding = false: Keras leaves the padding out of the mean),
    GlobalAveragePooling2D, Flatten, Reshape, Activation, Dropout, Add, Concatenate,
    BatchNormalization (running_variance = "biased": Keras' moving variance), LayerNormalization,
    Embedding, SimpleRNN, LSTM, GRU). Layer names, initializers and the starting values (the moving
    statistics included) are the model's."""
    config = model.get_config()
    entries = [entry for entry in config["layers"] if entry["class_name"] != "InputLayer"]
    input_names = [entry["config"]["name"] for entry in config["layers"] if entry["class_name"] == "InputLayer"]
    if len(getattr(model, "inputs", None) or ()) != 1:
        raise UnsupportedFeature("tensorflow", "importing a model without exactly one input")
    input_shape = tuple(int(n) for n in model.inputs[0].shape[1:])
    by_name = {layer.name: layer for layer in model.layers}
    sequential = "inbound_nodes" not in entries[0]
    layers: list[spec.Layer] = []
    for i, entry in enumerate(entries):
        name, kind, cfg = entry["config"]["name"], entry["class_name"], entry["config"]
        if sequential:
            inputs = (INPUT,) if i == 0 else (entries[i - 1]["config"]["name"],)
        else:
            inputs = tuple(INPUT if parent in input_names else parent for parent in _parents(entry["inbound_nodes"]))
        reader = ops.KERAS_READERS.get(kind)
        if reader is None:
            raise UnsupportedFeature("tensorflow", f"importing layer {name} ({kind})")
        layers.append(reader.from_keras(cfg, inputs, KerasReader(f"layer {name}")))
    imported = spec.Model(inputs=input_shape[0] if len(input_shape) == 1 else list(input_shape), layers=tuple(layers))
    params = {}
    for node in imported.nodes:
        weights = by_name[node.name].get_weights()
        if [tuple(w.shape) for w in weights] != [tuple(p.shape) for p in _weights(node)]:
            raise UnsupportedFeature("tensorflow", f"importing layer {node.name}: weights of shapes "
                                                   f"{[list(w.shape) for w in weights]}")
        params.update({f"{node.name}/{p.name}": np.asarray(w, dtype=np.float64) for p, w in zip(_weights(node),
                                                                                                  weights)})
    return imported, {name: params[name] for name in imported.variable_inits()}
