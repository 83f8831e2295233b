"""Keras' own format: a keras model mirroring a spec, checkpoints in Keras' .weights.h5 format, and
Keras' default initial parameters drawn on that model (the native "default-init").

The keras model: a keras.Sequential of keras.layers.Dense / Activation / Dropout named like the spec's
layers when the model is a chain, else a functional keras.Model (Concatenate joins branches). A Dense
kernel is (in, units) in Keras as in crossnn's canonical layout, so weights move without a transpose.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np

from crossnn import spec
from crossnn.checkpoint import CheckpointError, TrainingState
from crossnn.errors import UnsupportedFeature
from crossnn.files import write_bytes_atomic
from crossnn.spec import INPUT, Experiment

KERAS_ACTIVATIONS = {spec.Linear: "linear", spec.ReLU: "relu", spec.Sigmoid: "sigmoid", spec.Tanh: "tanh",
                     spec.Softmax: "softmax", spec.Softplus: "softplus"}


def keras_activation(s: spec.Activation):
    """The Keras activation for a spec activation (a name, or keras.activations.* with its arguments)."""
    import keras

    if type(s) in KERAS_ACTIVATIONS:
        return KERAS_ACTIVATIONS[type(s)]
    if isinstance(s, spec.LeakyReLU):
        return functools.partial(keras.activations.leaky_relu, negative_slope=s.negative_slope)
    if isinstance(s, spec.GELU):
        return functools.partial(keras.activations.gelu, approximate=s.approximate == "tanh")
    raise UnsupportedFeature("tensorflow", f"a Keras activation for '{s.kind}'")


def _keras_layer(node, dtype: str):
    import keras

    layer = node.layer
    if isinstance(layer, spec.Dense):
        return keras.layers.Dense(layer.units, activation=keras_activation(layer.activation), use_bias=layer.use_bias,
                                  name=node.name, dtype=dtype)
    if isinstance(layer, spec.ActivationLayer):
        return keras.layers.Activation(keras_activation(layer.activation), name=node.name, dtype=dtype)
    if isinstance(layer, spec.Dropout):
        return keras.layers.Dropout(layer.rate, name=node.name, dtype=dtype)
    if isinstance(layer, spec.Concatenate):
        return keras.layers.Concatenate(axis=-1, name=node.name, dtype=dtype)
    raise UnsupportedFeature("tensorflow", f"a Keras layer for layer type '{layer.kind}'")


def _is_chain(model: spec.Model) -> bool:
    previous = INPUT
    for node, layer in zip(model.nodes, model.layers):
        if node.layer is not layer or node.inputs != (previous,):
            return False
        previous = layer.name
    return True


def keras_model(experiment: Experiment, dtype: str = "float64"):
    """(keras model, {spec layer name: keras layer}) mirroring the spec's model, built (weights made,
    Keras' default values in them)."""
    import keras

    model = experiment.model
    made = {node.name: _keras_layer(node, dtype) for node in model.nodes}
    inputs = keras.Input(shape=(model.inputs,), dtype=dtype, name="input")
    if _is_chain(model):
        return keras.Sequential([inputs] + [made[layer.name] for layer in model.layers]), made
    tensors = {INPUT: inputs}
    for node in model.nodes:
        args = [tensors[name] for name in node.inputs]
        tensors[node.name] = made[node.name](args if isinstance(node.layer, spec.Concatenate) else args[0])
    return keras.Model(inputs=inputs, outputs=tensors[model.layers[-1].name]), made


def _weights(experiment: Experiment, params, layer_name: str) -> list[np.ndarray]:
    """A Dense layer's weights in Keras' order (kernel, bias)."""
    node = next(n for n in experiment.model.nodes if n.name == layer_name)
    return [np.asarray(params[f"{layer_name}/{p.name}"]) for p in node.params]


def set_weights(experiment: Experiment, made: dict, params, dtype: str) -> None:
    for name, layer in made.items():
        if layer.weights:
            layer.set_weights([w.astype(dtype) for w in _weights(experiment, params, name)])


def get_weights(experiment: Experiment, made: dict) -> dict[str, np.ndarray]:
    """Canonical float64 parameters of the keras layers, in the spec's parameter order."""
    out = {}
    values = {name: layer.get_weights() for name, layer in made.items()}
    for name in experiment.model.parameter_inits():
        layer, param = name.split("/", 1)
        node = next(n for n in experiment.model.nodes if n.name == layer)
        out[name] = np.array(values[layer][[p.name for p in node.params].index(param)], dtype=np.float64)
    return out


# ---- the native "default-init": Keras' own initializers ------------------------------------------


def keras_initial_parameters(experiment: Experiment, params, dtype: str):
    """The given parameters with every Dense layer's replaced by keras.layers.Dense's defaults
    (kernel glorot_uniform, bias zeros), drawn after keras.utils.set_random_seed(experiment.seed)
    (which also seeds Python's `random`, NumPy's global generator and TF's global seed, as it does
    in a user's program). Layers are built in the model's order, as a Keras model builds them; a
    layer whose parameters are not a Dense layer's keeps the given ones."""
    import keras

    keras.utils.set_random_seed(experiment.seed)
    out = dict(params)
    for node in experiment.model.nodes:
        if isinstance(node.layer, spec.Dense):
            layer = keras.layers.Dense(node.layer.units, use_bias=node.layer.use_bias, dtype=dtype)
            layer.build((None, node.input_sizes[0]))
            out[f"{node.name}/kernel"] = layer.kernel.numpy()
            if node.layer.use_bias:
                out[f"{node.name}/bias"] = layer.bias.numpy()
    return out


# ---- native checkpoints: Keras' .weights.h5 -------------------------------------------------------

SUFFIX = ".weights.h5"


def export_weights(experiment: Experiment, state: TrainingState, path) -> None:
    """Write the state's parameters as a Keras .weights.h5 of the keras model mirroring the spec
    (float64 weights), completely or not at all. A .weights.h5 holds weights only: the step and the
    optimizer state are not written."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise CheckpointError(f"{path}: a Keras weights file must end in '{SUFFIX}'")
    missing = [name for name in experiment.model.parameter_inits() if name not in state.params]
    if missing:
        raise CheckpointError(f"{path}: the training state has no parameter '{missing[0]}'")
    model, made = keras_model(experiment, "float64")
    set_weights(experiment, made, state.params, "float64")
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # Keras' own np.array(variable) call, NumPy 2's copy= notice
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        made_here = Path(folder) / f"model{SUFFIX}"
        model.save_weights(made_here)
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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                    category=DeprecationWarning)
            model.save_weights(own)
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


# ---- measured facts ---------------------------------------------------------------------------------

#: facts that depend on the process' global state, measured in a fresh interpreter: TF32 as a new
#: process has it (crossnn's prepare() switches it off here), TF's global-seed stream, and Keras'
#: seeded Dense initializers (keras.utils.set_random_seed reseeds Python, NumPy and TF globally)
