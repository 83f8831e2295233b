"""Layers and activations: the model graph as a tf.Module holding one tf.Variable per parameter.

Activations are TF's own ops wherever they compute the spec's function, gradient included; the three
exceptions (gelu, leaky_relu, softplus) are written out below with TF ops, each saying why. In the
native flavour (`native` names catalog entries, see crossnn_tensorflow.NATIVE_ENTRIES) those three
are TF's own ops instead: tf.nn.leaky_relu ("leaky-relu-slope"), tf.nn.gelu ("gelu-approximation")
and tf.math.softplus ("softplus-threshold"). Gradients come from tf.GradientTape.

User-defined layers: subclass crossnn.spec.Layer (with a `kind`), then register its TF op here (and
its NumPy op with crossnn_numpy.layers.register):

    @crossnn_tensorflow.layers.register(MyScale)
    class Scale(tf.Module):
        def __init__(self, node, variables):        # node: crossnn.spec.Node; variables: name -> tf.Variable
            super().__init__()
            self.s = variables[f"{node.name}/scale"]
        def __call__(self, inputs):                  # inputs: the tensors of node.inputs, in order
            return inputs[0] * self.s

The op finds its parameters by canonical name ("<layer>/<param>", as the spec's Layer.parameters
names them, canonical layout) and tf.GradientTape differentiates it.

A Python float meets a tensor only in arithmetic (z * 0.5), where TF converts it straight to the
tensor's dtype; tf.cast(<Python float>, tf.float64) would round it through float32 first.
"""

from __future__ import annotations

import math
import re

import numpy as np
import tensorflow as tf

from crossnn import spec
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT, Experiment

# ---- activations: spec -> function of the pre-activation z -----------------------------------

SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _linear(s):
    return lambda z: z


def _relu(s):
    return tf.nn.relu  # gradient: ReluGrad passes da where z > 0, so relu'(0) = 0


def _sigmoid(s):
    return tf.nn.sigmoid  # gradient: SigmoidGrad, da · a (1 - a)


def _tanh(s):
    return tf.math.tanh  # gradient: TanhGrad, da (1 - a²)


def _softmax(s):
    return tf.nn.softmax  # gradient: SoftmaxGrad, (da - Σ da·a) a along the last axis


def _gelu(s: spec.GELU):
    """approximate = "none": ½ z (1 + erf(z √½)), gradient Φ(z) + z φ(z);
    approximate = "tanh": ½ z (1 + tanh(√(2/π) (z + 0.044715 z³))), with its exact derivative.
    Not tf.nn.gelu: it builds its constants with math_ops.cast(<Python float>, dtype), which goes
    through a float32 tensor, so in float64 it uses float32(1/√2) (exact form) and float32(0.044715)
    (tanh form): 5e-9 off the spec's value and gradient. The gradients mirror PyTorch's kernels."""
    if s.approximate == "none":
        @tf.custom_gradient
        def gelu(z):
            cdf = 0.5 * (1.0 + tf.math.erf(z * SQRT_HALF))
            pdf = tf.exp(-0.5 * z * z) * INV_SQRT_2PI
            return z * cdf, lambda da: da * (cdf + z * pdf)

        return gelu

    @tf.custom_gradient
    def gelu_tanh(z):
        t = tf.math.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z * z * z))
        d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * z * z)
        return 0.5 * z * (1.0 + t), lambda da: da * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * d_inner)

    return gelu_tanh


def _leaky_relu(s: spec.LeakyReLU):
    """z for z > 0, slope · z otherwise (gradient: slope at 0). Not tf.nn.leaky_relu: its `alpha` is
    a float32 op attribute, so in float64 a slope of 0.01 becomes 0.009999999776482582."""
    slope = s.negative_slope
    return lambda z: tf.where(z > 0, z, z * slope)


def _softplus(s):
    """max(z, 0) + log1p(exp(-|z|)) with gradient sigmoid(z) = 1 / (1 + exp(-z)). Not
    tf.math.softplus: its kernel returns exp(z) below z = log(eps) + 2 and z above -(log(eps) + 2),
    up to about 8 ulps from the spec's value there; and not autodiff of the
    formula, whose tf.maximum gradient at z = 0 would make softplus'(0) = 1 instead of 1/2."""

    @tf.custom_gradient
    def softplus(z):
        value = tf.maximum(z, 0.0) + tf.math.log1p(tf.exp(-tf.abs(z)))
        return value, lambda da: da * (1.0 / (1.0 + tf.exp(-z)))

    return softplus


ACTIVATIONS = {
    spec.Linear: _linear, spec.Sigmoid: _sigmoid, spec.Tanh: _tanh, spec.ReLU: _relu,
    spec.LeakyReLU: _leaky_relu, spec.Softplus: _softplus, spec.Softmax: _softmax, spec.GELU: _gelu,
}


# ---- the native flavour: TF's own ops where the spec writes its formula out ------------------------


def _native_leaky_relu(s: spec.LeakyReLU):
    """tf.nn.leaky_relu(z, alpha=slope): alpha is a float32 op attribute, so a float64 model uses
    float32(slope) (0.01 -> 0.009999999776482582)."""
    slope = s.negative_slope
    return lambda z: tf.nn.leaky_relu(z, alpha=slope)


def _native_gelu(s: spec.GELU):
    """tf.nn.gelu(z, approximate=...): its constants are cast from Python floats through float32, so
    a float64 model computes with float32(1/√2) or float32(0.044715); the gradient is the tape's."""
    approximate = s.approximate == "tanh"
    return lambda z: tf.nn.gelu(z, approximate=approximate)


def _native_softplus(s):
    """tf.math.softplus: exp(z) / z beyond its thresholds, its own gradient (sigmoid)."""
    return tf.math.softplus


def _keras_sigmoid(s):
    """keras.activations.sigmoid: tf.nn.sigmoid, with its input kept on the output (_keras_logits),
    from which keras.losses.BinaryCrossentropy recovers the logits. Used with the native "bce-clamp",
    so Keras' loss sees what it sees behind a Keras model's sigmoid in every mode: a bare
    tf.nn.sigmoid output is recognised by its op type inside a tf.function, but not eagerly."""
    import keras

    return keras.activations.sigmoid


def _keras_softmax(s):
    """keras.activations.softmax (tagged with its logits, as _keras_sigmoid), with the native
    "cross-entropy-inputs"."""
    import keras

    return keras.activations.softmax


#: catalog entry -> (activation spec class, TF's own lowering)
NATIVE_ACTIVATIONS = {"leaky-relu-slope": (spec.LeakyReLU, _native_leaky_relu),
                      "gelu-approximation": (spec.GELU, _native_gelu),
                      "softplus-threshold": (spec.Softplus, _native_softplus),
                      "bce-clamp": (spec.Sigmoid, _keras_sigmoid),
                      "cross-entropy-inputs": (spec.Softmax, _keras_softmax)}


def activation(s: spec.Activation, native: frozenset[str] = frozenset()):
    """The TF function of activation `s`; TF's own op where `native` names its catalog entry."""
    for entry, (cls, lower) in NATIVE_ACTIVATIONS.items():
        if entry in native and type(s) is cls:
            return lower(s)
    if type(s) not in ACTIVATIONS:
        raise UnsupportedFeature("tensorflow", f"activation '{s.kind}'")
    return ACTIVATIONS[type(s)](s)


# ---- layers: each maps its input tensors to one output -------------------------------------------


# Each op is built as op(node, variables) (node: crossnn.spec.Node; variables: canonical name ->
# tf.Variable; the built-in ops below also take native=) and called as op(inputs), the list of its
# input tensors; a Dropout op is called as op(inputs, mask), with the step's mask while training and
# None when predicting.


class Dense(tf.Module):
    """a = f(x @ W + b), W (in, units) as in keras.layers.Dense (the canonical layout, no transpose)."""

    def __init__(self, node, variables, native=frozenset()):
        super().__init__()
        self.kernel = variables[f"{node.name}/kernel"]
        self.bias = variables.get(f"{node.name}/bias")
        self.act = activation(node.layer.activation, native)

    def __call__(self, inputs):
        z = tf.matmul(inputs[0], self.kernel)
        if self.bias is not None:
            z = tf.nn.bias_add(z, self.bias)
        return self.act(z)


class ActivationLayer(tf.Module):
    """a = f(x)."""

    def __init__(self, node, variables, native=frozenset()):
        super().__init__()
        self.act = activation(node.layer.activation, native)

    def __call__(self, inputs):
        return self.act(inputs[0])


class Dropout(tf.Module):
    """y = x * mask while training, with the step's mask fed in (0 or 1/(1 - rate), drawn in NumPy by
    crossnn.schedule.StepClock, the same for every backend); y = x when predicting. Not
    tf.nn.dropout / keras.layers.Dropout: they draw their own masks from TF's random streams, which
    no other framework reproduces. The gradient is the tape's: dy * mask."""

    def __init__(self, node, variables, native=frozenset()):
        super().__init__()

    def __call__(self, inputs, mask=None):
        return inputs[0] if mask is None else inputs[0] * mask


class Concatenate(tf.Module):
    """[x_1, x_2, ...] joined along the feature axis."""

    def __init__(self, node, variables, native=frozenset()):
        super().__init__()

    def __call__(self, inputs):
        return tf.concat(inputs, axis=1)


LAYERS = {spec.Dense: Dense, spec.ActivationLayer: ActivationLayer, spec.Concatenate: Concatenate,
          spec.Dropout: Dropout}
#: the built-in ops, which take the native flavour's entries
_BUILT_IN = frozenset(LAYERS.values())


def register(spec_class: type[spec.Layer]):
    """Decorator: the TF op of a user-defined layer spec class (see the module docstring): a class
    built as op(node, variables) and called as op(inputs) -> tensor, as the ops above are. Mirrors
    crossnn_numpy.layers.register; registering again replaces the op."""
    if not (isinstance(spec_class, type) and issubclass(spec_class, spec.Layer)):
        raise TypeError(f"register() takes a crossnn.spec.Layer subclass, got {spec_class!r}")

    def add(op):
        LAYERS[spec_class] = op
        return op
    return add


def layer(node, variables, native=frozenset()):
    if type(node.layer) not in LAYERS:
        raise UnsupportedFeature("tensorflow", f"layer type '{node.layer.kind}'")
    op = LAYERS[type(node.layer)]
    return op(node, variables, native) if op in _BUILT_IN else op(node, variables)


class Model(tf.Module):
    """The spec's layer graph. `variables_by_name` maps canonical names to tf.Variables in the spec's
    parameter order, and `trainable` lists them in that order (the order the optimizer walks)."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], dtype, native=frozenset()):
        super().__init__()
        self.variables_by_name = {name: tf.Variable(tf.constant(value, dtype), name=_variable_name(name))
                                  for name, value in params.items()}
        self.trainable = list(self.variables_by_name.values())
        self.layers = [(node.name, node.inputs, layer(node, self.variables_by_name, native))
                       for node in experiment.model.nodes]
        self.output = experiment.model.layers[-1].name
        #: the dropout layers, in graph order (crossnn.schedule.StepClock's, the order masks are fed in)
        self.dropout = [(node.name, node.size) for node in experiment.model.nodes
                        if isinstance(node.layer, spec.Dropout)]
        self.dropout_names = frozenset(name for name, _ in self.dropout)

    def __call__(self, x, masks=None):
        """The model output; masks: {dropout layer: its mask} for a training step, None to predict."""
        values = {INPUT: x}
        for name, inputs, op in self.layers:
            args = [values[i] for i in inputs]
            if name in self.dropout_names:
                values[name] = op(args, masks[name] if masks is not None else None)
            else:
                values[name] = op(args)
        return values[self.output]


def _variable_name(name: str) -> str:
    """A TF-legal variable name for a canonical parameter name (layer names may hold any character)."""
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)


# ---- reading a user's Keras model back into a spec --------------------------------------------------

#: Keras activation names whose function is the spec's. leaky_relu (slope 0.2) and gelu (the exact
#: form) are left out on purpose: Keras computes them with float32 constants (the slope is a float32
#: op attribute, tf.nn.gelu casts 1/√2 through float32; catalog entries leaky-relu-slope and
#: gelu-approximation), so a float64 Keras model using them would not match the imported spec.
KERAS_ACTIVATIONS = {"linear": spec.Linear(), "relu": spec.ReLU(), "sigmoid": spec.Sigmoid(), "tanh": spec.Tanh(),
                     "softmax": spec.Softmax(), "softplus": spec.Softplus()}


def _keras_activation(name, where: str) -> spec.Activation:
    key = name if isinstance(name, str) else getattr(name, "__name__", repr(name))
    if key not in KERAS_ACTIVATIONS:
        raise UnsupportedFeature("tensorflow", f"importing activation '{key}' of {where}")
    return KERAS_ACTIVATIONS[key]


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
    """(spec Model, canonical float64 parameters) for a Keras Sequential or functional model of
    Dense, Activation and Concatenate layers with one input. Layer names are kept; the initializers
    recorded are Dense's defaults (glorot_uniform, zeros); the starting values are the model's."""
    config = model.get_config()
    entries = [entry for entry in config["layers"] if entry["class_name"] != "InputLayer"]
    input_entries = [entry for entry in config["layers"] if entry["class_name"] == "InputLayer"]
    if len(input_entries) != 1:
        raise UnsupportedFeature("tensorflow", "importing a model without exactly one Input")
    input_name = input_entries[0]["config"]["name"]
    features = input_entries[0]["config"].get("batch_shape") or input_entries[0]["config"].get("batch_input_shape")
    by_name = {layer.name: layer for layer in model.layers}
    sequential = "inbound_nodes" not in entries[0]
    layers: list[spec.Layer] = []
    params = {}
    for i, entry in enumerate(entries):
        name, kind, cfg = entry["config"]["name"], entry["class_name"], entry["config"]
        if sequential:
            inputs = (INPUT,) if i == 0 else (entries[i - 1]["config"]["name"],)
        else:
            inputs = tuple(INPUT if parent == input_name else parent for parent in _parents(entry["inbound_nodes"]))
        if kind == "Dense":
            layers.append(spec.Dense(name=name, units=cfg["units"], use_bias=cfg["use_bias"], inputs=inputs,
                                     activation=_keras_activation(cfg["activation"], f"layer {name}"),
                                     kernel_init=spec.GlorotUniform(), bias_init=spec.Zeros()))
            weights = by_name[name].get_weights()
            params[f"{name}/kernel"] = np.asarray(weights[0], dtype=np.float64)
            if cfg["use_bias"]:
                params[f"{name}/bias"] = np.asarray(weights[1], dtype=np.float64)
        elif kind == "Activation":
            layers.append(spec.ActivationLayer(name=name, inputs=inputs,
                                               activation=_keras_activation(cfg["activation"], f"layer {name}")))
        elif kind == "Concatenate" and cfg.get("axis", -1) in (-1, 1):
            layers.append(spec.Concatenate(name=name, inputs=inputs))
        else:
            raise UnsupportedFeature("tensorflow", f"importing layer {name} ({kind})")
    return spec.Model(inputs=int(features[-1]), layers=tuple(layers)), params
