"""The TensorFlow backend's lowering registry: one entry per activation, layer and loss (optimizer
rules: crossnn_tensorflow.optimizers), each holding its training lowering (TF ops on tf.Variables,
differentiated by tf.GradientTape), the text the emitted script uses, and its Keras counterpart.

The canonical layout is TensorFlow's own (images NHWC, a dense kernel (in, out), a conv kernel
(kh, kw, in, out)), so nothing is transposed anywhere. TF's ops are used wherever they compute the
spec's function, gradient included; where they do not (TF's leaky_relu, gelu and softplus, the
clamped losses, max pooling under XLA, dilated convolution on the CPU) the entry says why and writes
the spec's formula with TF ops. The native flavour (`native`: the catalog entries of the run, see
crossnn_tensorflow.NATIVE_ENTRIES) swaps in TF's or Keras' own op where an entry names one.

A Python float meets a tensor only in arithmetic (z * 0.5), where TF converts it straight to the
tensor's dtype; tf.cast(<Python float>, tf.float64) would round it through float32 first.

Entry contracts (`OPS.register(SpecClass)` adds one; examples/custom_layer.py shows a user's):

activation  Act(s, native): __call__(z) -> a.  code(z) -> the script's expression of `a` for the
            expression z; helpers: names of script helpers it calls (SCRIPT_HELPERS);
            keras(s) -> the Keras activation (a name or a function) for the Keras mirror.
layer       Op(node, params, native): __call__(inputs, mask=None) -> the output tensor, where params
            maps the layer's parameter short names ("kernel", "bias") to its tf.Variables, inputs
            are the tensors of node.inputs and mask is the step's dropout mask (dropout layers;
            None when predicting). An entry with `stateful = True` (a layer with state,
            crossnn.spec.Layer.state: batch_norm) is called as __call__(inputs, mask, training), params
            holding its state's tf.Variables too ("moving_mean", ...); training, it assigns their new
            values in the step.
            forward_code(node, ins) -> (lines, expression): the script's statements and the output's
            expression given the input expressions `ins` (p["<layer>/<param>"] are the parameters,
            masks the dropout masks, `training` whether the step trains (models with state), `z` a
            free temporary); helpers(node) -> script helper names.
            keras(node, dtype) -> the Keras layer mirroring it, Keras' default initializers (the
            .weights.h5 export and the native "default-init"); its weights are node.params then
            node.state, in that order (Keras keeps a BatchNormalization's moving statistics last).
            An entry decorated @reads_keras("KerasClass") also reads that Keras layer back:
            from_keras(config, inputs, read) -> the spec layer, from the layer's get_config() and
            its input names; read.activation(name) and read.initializer(config) convert Keras'
            activations and initializers (crossnn_tensorflow.checkpoint.import_keras).
loss        Loss(s, native, dtype): __call__(p, y) -> the scalar loss (targets: class indices for
            sparse cross-entropy, else the run's dtype); code -> the script's definitions, ending
            with loss_fn(p, y).
"""

from __future__ import annotations

import functools
import inspect
import math
import textwrap

from crossnn import spec
from crossnn.errors import UnsupportedFeature
from crossnn.lowering import Registry
from crossnn.spec.layers import merge_axis, window_geometry

from crossnn_tensorflow.device import import_tensorflow

tf = import_tensorflow()

OPS = Registry("tensorflow")

#: Keras layer class name -> the entry that reads it back into a spec layer
KERAS_READERS: dict[str, type] = {}


def reads_keras(*class_names: str):
    """Decorator: the entry reads Keras layers of these classes (its from_keras)."""
    def add(entry):
        KERAS_READERS.update(dict.fromkeys(class_names, entry))
        return entry
    return add


def activation(s: spec.Activation, native=frozenset()):
    return OPS.lookup(s)(s, native)


def layer(node, params, native=frozenset()):
    return OPS.lookup(node.layer)(node, params, native)


def loss(s: spec.Loss, native=frozenset(), dtype: str = "float64"):
    return OPS.lookup(s)(s, native, dtype)


def _keras():
    import keras

    return keras


# ---- activations ---------------------------------------------------------------------------------

SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Act:
    """Defaults of an activation entry: `lower(s)` gives the spec's function; `natives` maps a catalog
    entry to a function of s giving TF's or Keras' own op, used when the run names that entry."""

    natives: dict = {}
    helpers: frozenset[str] = frozenset()
    template = "{z}"
    keras_name = "linear"

    def __init__(self, s, native=frozenset()):
        self.s = s
        own = [make for entry, make in self.natives.items() if entry in native]
        self.fn = own[0](s) if own else self.lower(s)

    def lower(self, s):
        return lambda z: z

    def __call__(self, z):
        return self.fn(z)

    def code(self, z: str) -> str:
        return self.template.format(z=z)

    def keras(self, s):
        return self.keras_name


OPS.register(spec.Linear)(Act)


def _keras_sigmoid(s):
    """keras.activations.sigmoid: tf.nn.sigmoid, with its input kept on the output (_keras_logits),
    from which keras.losses.BinaryCrossentropy recovers the logits. With the native "bce-clamp", so
    Keras' loss sees what it sees behind a Keras model's sigmoid in every mode (a bare tf.nn.sigmoid
    output is recognised by its op type inside a tf.function, but not eagerly)."""
    return _keras().activations.sigmoid


def _keras_softmax(s):
    """keras.activations.softmax (tagged with its logits, as above), with "cross-entropy-inputs"."""
    return _keras().activations.softmax


@OPS.register(spec.Sigmoid)
class Sigmoid(Act):
    """tf.nn.sigmoid; gradient SigmoidGrad, da · a (1 - a)."""

    natives = {"bce-clamp": _keras_sigmoid}
    template = "tf.nn.sigmoid({z})"
    keras_name = "sigmoid"

    def lower(self, s):
        return tf.nn.sigmoid


@OPS.register(spec.Tanh)
class Tanh(Act):
    """tf.math.tanh; gradient TanhGrad, da (1 - a²)."""

    template = "tf.math.tanh({z})"
    keras_name = "tanh"

    def lower(self, s):
        return tf.math.tanh


@OPS.register(spec.ReLU)
class ReLU(Act):
    """tf.nn.relu; gradient ReluGrad, da where z > 0 (relu'(0) = 0)."""

    template = "tf.nn.relu({z})"
    keras_name = "relu"

    def lower(self, s):
        return tf.nn.relu


@OPS.register(spec.Softmax)
class Softmax(Act):
    """tf.nn.softmax over the last axis (the channels of an image); gradient SoftmaxGrad,
    (da - Σ da·a) a along that axis."""

    natives = {"cross-entropy-inputs": _keras_softmax}
    template = "tf.nn.softmax({z})"
    keras_name = "softmax"

    def lower(self, s):
        return tf.nn.softmax


@OPS.register(spec.LeakyReLU)
class LeakyReLU(Act):
    """z for z > 0, slope · z otherwise (gradient: slope at 0). Not tf.nn.leaky_relu: its `alpha` is
    a float32 op attribute, so in float64 a slope of 0.01 becomes 0.009999999776482582 (the native
    "leaky-relu-slope" uses it)."""

    natives = {"leaky-relu-slope": lambda s: functools.partial(tf.nn.leaky_relu, alpha=s.negative_slope)}
    helpers = frozenset({"leaky_relu"})

    def lower(self, s):
        slope = s.negative_slope
        return lambda z: tf.where(z > 0, z, z * slope)

    def code(self, z):
        return f"leaky_relu({z}, {self.s.negative_slope!r})"

    def keras(self, s):
        return functools.partial(_keras().activations.leaky_relu, negative_slope=s.negative_slope)


@tf.custom_gradient
def _softplus(z):
    """max(z, 0) + log1p(exp(-|z|)) with gradient sigmoid(z)."""
    value = tf.maximum(z, 0.0) + tf.math.log1p(tf.exp(-tf.abs(z)))
    return value, lambda da: da * (1.0 / (1.0 + tf.exp(-z)))


@OPS.register(spec.Softplus)
class Softplus(Act):
    """max(z, 0) + log1p(exp(-|z|)) with gradient sigmoid(z) = 1 / (1 + exp(-z)). Not
    tf.math.softplus (the native "softplus-threshold"): its kernel returns exp(z) below
    z = log(eps) + 2 and z above -(log(eps) + 2), up to about 8 ulps from the spec's value there;
    and not the tape's gradient of the formula, whose tf.maximum would make softplus'(0) = 1, not 1/2."""

    natives = {"softplus-threshold": lambda s: tf.math.softplus}
    helpers = frozenset({"softplus"})
    template = "softplus({z})"
    keras_name = "softplus"

    def lower(self, s):
        return _softplus


@OPS.register(spec.GELU)
class GELU(Act):
    """approximate = "none": ½ z (1 + erf(z √½)), gradient Φ(z) + z φ(z);
    approximate = "tanh": ½ z (1 + tanh(√(2/π) (z + 0.044715 z³))), with its exact derivative.
    Not tf.nn.gelu (the native "gelu-approximation"): it builds its constants with
    math_ops.cast(<Python float>, dtype), through a float32 tensor, so in float64 it uses
    float32(1/√2) (exact form) and float32(0.044715) (tanh form): 5e-9 off the spec's value and
    gradient. The gradients mirror PyTorch's kernels."""

    natives = {"gelu-approximation": lambda s: functools.partial(tf.nn.gelu, approximate=s.approximate == "tanh")}

    def __init__(self, s, native=frozenset()):
        super().__init__(s, native)
        name = "gelu" if s.approximate == "none" else "gelu_tanh"
        self.helpers = frozenset({name})
        self.template = name + "({z})"

    def lower(self, s):
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

    def keras(self, s):
        return functools.partial(_keras().activations.gelu, approximate=s.approximate == "tanh")


#: helpers the script text may call, by name: their source (TF's own ops differ from the spec here)
SCRIPT_HELPERS = {
    "leaky_relu": '''def leaky_relu(z, slope):
    """z for z > 0, slope * z otherwise. Not tf.nn.leaky_relu: its alpha is a float32 op attribute,
    so in float64 a slope of 0.01 would become 0.009999999776482582."""
    return tf.where(z > 0, z, z * slope)
''',
    "softplus": '''@tf.custom_gradient
def softplus(z):
    """max(z, 0) + log1p(exp(-|z|)), gradient sigmoid(z). Not tf.math.softplus: its kernel switches
    to exp(z) / z beyond a threshold, a few ulps from this; and not the tape's gradient of this
    formula, which would make softplus'(0) = 1 (tf.maximum's gradient) instead of 1/2."""
    value = tf.maximum(z, 0.0) + tf.math.log1p(tf.exp(-tf.abs(z)))
    return value, lambda da: da * (1.0 / (1.0 + tf.exp(-z)))
''',
    "gelu": '''@tf.custom_gradient
def gelu(z):
    """z * Phi(z) = 0.5 z (1 + erf(z / sqrt 2)), gradient Phi(z) + z phi(z). Not tf.nn.gelu: it casts
    its constant 1/sqrt(2) from a Python float through float32, 5e-9 off in float64."""
    cdf = 0.5 * (1.0 + tf.math.erf(z * math.sqrt(0.5)))
    pdf = tf.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
    return z * cdf, lambda da: da * (cdf + z * pdf)
''',
    "gelu_tanh": '''@tf.custom_gradient
def gelu_tanh(z):
    """0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) and its exact derivative. Not
    tf.nn.gelu(approximate=True): it casts 0.044715 through float32."""
    c = math.sqrt(2.0 / math.pi)
    t = tf.math.tanh(c * (z + 0.044715 * z * z * z))
    d_inner = c * (1.0 + 3.0 * 0.044715 * z * z)
    return 0.5 * z * (1.0 + t), lambda da: da * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * d_inner)
''',
}


# ---- layers --------------------------------------------------------------------------------------


class Op:
    """Defaults of a layer entry: no script helpers beyond its activation's; a layer without weights or
    state."""

    #: called with `training` and owns state it assigns while training (see the module docstring)
    stateful = False

    def __init__(self, node, params, native=frozenset()):
        self.node, self.params = node, params

    @staticmethod
    def helpers(node) -> frozenset[str]:
        act = getattr(node.layer, "activation", None)
        return activation(act).helpers if act is not None else frozenset()


def _p(node, short: str) -> str:
    """The script's expression of one of the layer's parameters."""
    return f'p["{node.name}/{short}"]'


def _act_code(node, z: str) -> str:
    return activation(node.layer.activation).code(z)


def _keras_activation(node):
    act = node.layer.activation
    return activation(act).keras(act)


@OPS.register(spec.Dense)
@reads_keras("Dense")
class Dense(Op):
    """a = f(x @ kernel + bias) over the last axis; the kernel is (in, units), as keras.layers.Dense
    keeps it. An input of rank > 1 (batch excluded) is taken as rows of its last axis: reshaped to
    (-1, in) for one matmul and back, as the NumPy reference computes it."""

    def __init__(self, node, params, native=frozenset()):
        super().__init__(node, params, native)
        self.kernel, self.bias = params["kernel"], params.get("bias")
        self.act = activation(node.layer.activation, native)
        self.rows = len(node.input_shapes[0]) > 1

    def __call__(self, inputs, mask=None):
        x = inputs[0]
        if self.rows:
            x = tf.reshape(x, [-1, self.node.input_shapes[0][-1]])
        z = tf.matmul(x, self.kernel)
        if self.bias is not None:
            z = tf.nn.bias_add(z, self.bias)
        if self.rows:
            z = tf.reshape(z, [-1, *self.node.shape])
        return self.act(z)

    @staticmethod
    def forward_code(node, ins):
        x = ins[0]
        rows = len(node.input_shapes[0]) > 1
        if rows:
            x = f"tf.reshape({x}, [-1, {node.input_shapes[0][-1]}])"
        z = f"{x} @ {_p(node, 'kernel')}" + (f" + {_p(node, 'bias')}" if node.layer.use_bias else "")
        if not rows:
            return [], _act_code(node, z)
        return [f"z = tf.reshape({z}, [-1, {', '.join(map(str, node.shape))}])  # rows of the last axis"], \
            _act_code(node, "z")

    @staticmethod
    def keras(node, dtype):
        layer = node.layer
        return _keras().layers.Dense(layer.units, activation=_keras_activation(node), use_bias=layer.use_bias,
                                     name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        return spec.Dense(name=config["name"], units=config["units"], use_bias=config["use_bias"], inputs=inputs,
                          activation=read.activation(config["activation"]),
                          kernel_init=read.initializer(config["kernel_initializer"]),
                          bias_init=read.initializer(config["bias_initializer"]))


@OPS.register(spec.ActivationLayer)
@reads_keras("Activation")
class ActivationLayer(Op):
    """a = f(x)."""

    def __init__(self, node, params, native=frozenset()):
        super().__init__(node, params, native)
        self.act = activation(node.layer.activation, native)

    def __call__(self, inputs, mask=None):
        return self.act(inputs[0])

    @staticmethod
    def forward_code(node, ins):
        return [], _act_code(node, ins[0])

    @staticmethod
    def keras(node, dtype):
        return _keras().layers.Activation(_keras_activation(node), name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        return spec.ActivationLayer(name=config["name"], inputs=inputs,
                                    activation=read.activation(config["activation"]))


@OPS.register(spec.Dropout)
@reads_keras("Dropout")
class Dropout(Op):
    """y = x * mask while training, with the step's mask fed in (0 or 1/(1 - rate), drawn in NumPy by
    crossnn.schedule.StepClock, the same for every backend; any shape); y = x when predicting. Not
    tf.nn.dropout / keras.layers.Dropout: they draw their own masks from TF's random streams, which
    no other framework reproduces. The gradient is the tape's: dy * mask."""

    def __call__(self, inputs, mask=None):
        return inputs[0] if mask is None else inputs[0] * mask

    @staticmethod
    def forward_code(node, ins):
        return [], f"{ins[0]} if masks is None else {ins[0]} * masks[{node.name!r}]"

    @staticmethod
    def keras(node, dtype):
        return _keras().layers.Dropout(node.layer.rate, name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        if config.get("noise_shape") is not None:
            raise UnsupportedFeature("tensorflow", f"importing layer {config['name']} (Dropout with a noise_shape)")
        return spec.Dropout(name=config["name"], inputs=inputs, rate=config["rate"])


@OPS.register(spec.Concatenate)
@reads_keras("Concatenate")
class Concatenate(Op):
    """The inputs joined along the axis (counted over the whole tensor, batch = 0, as Keras counts it)."""

    def __call__(self, inputs, mask=None):
        return tf.concat(inputs, axis=merge_axis(self.node.layer.axis, len(self.node.shape)) + 1)

    @staticmethod
    def forward_code(node, ins):
        return [], f"tf.concat([{', '.join(ins)}], axis={merge_axis(node.layer.axis, len(node.shape)) + 1})"

    @staticmethod
    def keras(node, dtype):
        return _keras().layers.Concatenate(axis=node.layer.axis, name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        return spec.Concatenate(name=config["name"], inputs=inputs, axis=config.get("axis", -1))


@OPS.register(spec.Add)
@reads_keras("Add")
class Add(Op):
    """x_1 + x_2 + ..., summed left to right (the NumPy reference's order)."""

    def __call__(self, inputs, mask=None):
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total

    @staticmethod
    def forward_code(node, ins):
        return [], " + ".join(ins)

    @staticmethod
    def keras(node, dtype):
        return _keras().layers.Add(name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        return spec.Add(name=config["name"], inputs=inputs)


def _pads(node) -> list[list[int]]:
    """tf.pad's paddings of a window layer's input, from crossnn.spec.layers.window_geometry."""
    g = window_geometry(node.layer, node.input_shapes[0])
    return [[0, 0], [g.top, g.bottom], [g.left, g.right], [0, 0]]


def _window_fields(config, where: str) -> None:
    """Refuse what a spec window layer cannot say: channels-first data."""
    if config.get("data_format", "channels_last") not in (None, "channels_last"):
        raise UnsupportedFeature("tensorflow", f"importing {where} with data_format '{config['data_format']}'")
    if config.get("padding", "valid") not in ("valid", "same"):
        raise UnsupportedFeature("tensorflow", f"importing {where} with padding '{config['padding']}'")


@OPS.register(spec.Conv2D)
@reads_keras("Conv2D")
class Conv2D(Op):
    """z = conv(x) + bias, a = f(z): tf.nn.conv2d on NHWC with the (kh, kw, in, out) kernel, TF's own
    padding="SAME" / "VALID" (the spec's rule, crossnn.spec.layers.window_geometry).

    Dilation > 1 is written differently: TF's CPU Conv2D has no backward pass for it (its
    Conv2DBackpropInput refuses dilation rates > 1) and tf.nn.convolution, which lowers a dilated
    convolution by space_to_batch onto undilated kernels, refuses stride > 1 with it. So the input
    is padded explicitly (window_geometry's padding), convolved at stride 1 with tf.nn.convolution
    (dilated, "VALID") and the stride taken by a strided slice: the same sums, at stride² the work."""

    def __init__(self, node, params, native=frozenset()):
        super().__init__(node, params, native)
        self.kernel, self.bias = params["kernel"], params.get("bias")
        self.act = activation(node.layer.activation, native)
        layer = node.layer
        self.strides, self.dilation = tuple(layer.strides), tuple(layer.dilation)
        self.pads = _pads(node)

    def __call__(self, inputs, mask=None):
        x = inputs[0]
        if self.dilation == (1, 1):
            z = tf.nn.conv2d(x, self.kernel, self.strides, self.node.layer.padding.upper())
        else:
            z = tf.nn.convolution(tf.pad(x, self.pads), self.kernel, padding="VALID", dilations=self.dilation)
            if self.strides != (1, 1):
                z = z[:, ::self.strides[0], ::self.strides[1], :]
        if self.bias is not None:
            z = tf.nn.bias_add(z, self.bias)
        return self.act(z)

    @staticmethod
    def forward_code(node, ins):
        layer = node.layer
        strides, dilation = tuple(layer.strides), tuple(layer.dilation)
        if dilation == (1, 1):
            padding = layer.padding.upper()
            line = f'z = tf.nn.conv2d({ins[0]}, {_p(node, "kernel")}, strides={strides}, padding="{padding}")'
        else:
            line = (f'z = tf.nn.convolution(tf.pad({ins[0]}, {_pads(node)}), {_p(node, "kernel")}, padding="VALID", '
                    f"dilations={dilation})")
            if strides != (1, 1):
                line += f"[:, ::{strides[0]}, ::{strides[1]}, :]  # TF's CPU kernels have no strided dilated backward"
        return [line], _act_code(node, f"z + {_p(node, 'bias')}" if layer.use_bias else "z")

    @staticmethod
    def keras(node, dtype):
        layer = node.layer
        if max(layer.strides) > 1 and max(layer.dilation) > 1:
            raise UnsupportedFeature("tensorflow", f"a Keras Conv2D for layer {node.name}: Keras refuses strides > 1 "
                                                   "with dilation_rate > 1")
        return _keras().layers.Conv2D(layer.filters, tuple(layer.kernel_size), strides=tuple(layer.strides),
                                      padding=layer.padding, dilation_rate=tuple(layer.dilation),
                                      activation=_keras_activation(node), use_bias=layer.use_bias, name=node.name,
                                      dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        where = f"layer {config['name']} (Conv2D)"
        _window_fields(config, where)
        if config.get("groups", 1) != 1:
            raise UnsupportedFeature("tensorflow", f"importing {where} with groups = {config['groups']}")
        return spec.Conv2D(name=config["name"], inputs=inputs, filters=config["filters"],
                           kernel_size=tuple(config["kernel_size"]), strides=tuple(config["strides"]),
                           padding=config["padding"], dilation=tuple(config["dilation_rate"]),
                           activation=read.activation(config["activation"]), use_bias=config["use_bias"],
                           kernel_init=read.initializer(config["kernel_initializer"]),
                           bias_init=read.initializer(config["bias_initializer"]))


def _pool_spec(cls, config, inputs, **extra):
    _window_fields(config, f"layer {config['name']}")
    strides = config.get("strides") or config["pool_size"]
    return cls(name=config["name"], inputs=inputs, pool_size=tuple(config["pool_size"]), strides=tuple(strides),
               padding=config["padding"], **extra)


def _in_xla() -> bool:
    """Whether ops are being traced for XLA (inside a tf.function with jit_compile=True, a loop of one
    included): TF's own test where an op's lowering differs under XLA (its array_grad and cond_v2
    use it)."""
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


@OPS.register(spec.MaxPool2D)
@reads_keras("MaxPooling2D")
class MaxPool2D(Op):
    """y = the largest value of each window; the gradient goes to the first maximum of each window in
    row-major order (padding counts as -inf, so it never wins).

    tf.nn.max_pool2d with TF's "SAME" / "VALID" does exactly this (its gradient, MaxPoolGrad, picks
    the first maximum). Under XLA it cannot be used: with op determinism on (crossnn's parity
    setting) TF refuses XLA's MaxPoolGrad ("no deterministic XLA implementation"), and without it
    XLA's SelectAndScatter sends a tie's gradient elsewhere when "SAME" pads unevenly. So under XLA
    the input is padded with -inf, cut into the kh·kw strided slices of the window offsets, and each
    output takes the slice of the first offset holding the maximum (a tf.where, whose gradient goes to
    that element only)."""

    def __init__(self, node, params, native=frozenset()):
        super().__init__(node, params, native)
        layer = node.layer
        self.window, self.strides = tuple(layer.pool_size), tuple(layer.strides)
        self.padding = layer.padding.upper()
        self.pads = _pads(node)

    def __call__(self, inputs, mask=None):
        if _in_xla():
            return self._first_maximum(inputs[0])
        return tf.nn.max_pool2d(inputs[0], self.window, self.strides, self.padding)

    def _first_maximum(self, x):
        (kh, kw), (sh, sw), (ho, wo) = self.window, self.strides, self.node.shape[:2]
        if any(map(any, self.pads)):
            x = tf.pad(x, self.pads, constant_values=-math.inf)
        stacked = tf.stack([x[:, a:a + (ho - 1) * sh + 1:sh, b:b + (wo - 1) * sw + 1:sw, :]
                            for a in range(kh) for b in range(kw)], axis=3)
        offset = tf.reshape(tf.range(kh * kw), [1, 1, 1, kh * kw, 1])
        top = tf.reduce_max(stacked, axis=3, keepdims=True)
        first = tf.reduce_min(tf.where(stacked == top, offset, kh * kw), axis=3, keepdims=True)
        return tf.reduce_sum(tf.where(offset == first, stacked, tf.zeros_like(stacked)), axis=3)

    @staticmethod
    def forward_code(node, ins):
        layer = node.layer
        return [], (f'tf.nn.max_pool2d({ins[0]}, {tuple(layer.pool_size)}, {tuple(layer.strides)}, '
                    f'"{layer.padding.upper()}")')

    @staticmethod
    def keras(node, dtype):
        layer = node.layer
        return _keras().layers.MaxPooling2D(tuple(layer.pool_size), strides=tuple(layer.strides),
                                            padding=layer.padding, name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        return _pool_spec(spec.MaxPool2D, config, inputs)


@OPS.register(spec.AvgPool2D)
@reads_keras("AveragePooling2D")
class AvgPool2D(Op):
    """y = the window means: tf.nn.avg_pool2d, whose "SAME" divides by the window's positions inside
    the input (count_padding = false, Keras' rule). count_padding = true on a padded input pads with
    zeros explicitly and pools "VALID", so every window divides by kh·kw (PyTorch's default)."""

    def __init__(self, node, params, native=frozenset()):
        super().__init__(node, params, native)
        layer = node.layer
        self.window, self.strides = tuple(layer.pool_size), tuple(layer.strides)
        self.pads = _pads(node)
        self.explicit = layer.count_padding and any(map(any, self.pads))
        self.padding = "VALID" if self.explicit else layer.padding.upper()

    def __call__(self, inputs, mask=None):
        x = inputs[0]
        if self.explicit:
            x = tf.pad(x, self.pads)
        return tf.nn.avg_pool2d(x, self.window, self.strides, self.padding)

    @staticmethod
    def forward_code(node, ins):
        layer = node.layer
        window, strides = tuple(layer.pool_size), tuple(layer.strides)
        pads = _pads(node)
        if not (layer.count_padding and any(map(any, pads))):
            note = "  # TF's 'SAME' mean leaves the padding out" if layer.padding == "same" else ""
            return [], f'tf.nn.avg_pool2d({ins[0]}, {window}, {strides}, "{layer.padding.upper()}"){note}'
        return [f"z = tf.pad({ins[0]}, {pads})  # count_padding: the zeros count in every window's mean"], \
            f'tf.nn.avg_pool2d(z, {window}, {strides}, "VALID")'

    @staticmethod
    def keras(node, dtype):
        """keras.layers.AveragePooling2D leaves the padding out of the mean; counting it is
        ZeroPadding2D before a "valid" AveragePooling2D (a Sequential under the layer's name)."""
        keras, layer = _keras(), node.layer
        window, strides = tuple(layer.pool_size), tuple(layer.strides)
        pads = _pads(node)
        if not (layer.count_padding and any(map(any, pads))):
            return keras.layers.AveragePooling2D(window, strides=strides, padding=layer.padding, name=node.name,
                                                 dtype=dtype)
        return keras.Sequential([keras.layers.ZeroPadding2D((tuple(pads[1]), tuple(pads[2])), dtype=dtype),
                                 keras.layers.AveragePooling2D(window, strides=strides, padding="valid", dtype=dtype)],
                                name=node.name)

    @staticmethod
    def from_keras(config, inputs, read):
        return _pool_spec(spec.AvgPool2D, config, inputs, count_padding=False)


@OPS.register(spec.GlobalAvgPool2D)
@reads_keras("GlobalAveragePooling2D")
class GlobalAvgPool2D(Op):
    """y = the mean over height and width."""

    def __call__(self, inputs, mask=None):
        return tf.reduce_mean(inputs[0], axis=[1, 2])

    @staticmethod
    def forward_code(node, ins):
        return [], f"tf.reduce_mean({ins[0]}, axis=[1, 2])"

    @staticmethod
    def keras(node, dtype):
        return _keras().layers.GlobalAveragePooling2D(name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        _window_fields(config, f"layer {config['name']}")
        if config.get("keepdims"):
            raise UnsupportedFeature("tensorflow", f"importing layer {config['name']} (keepdims=True)")
        return spec.GlobalAvgPool2D(name=config["name"], inputs=inputs)


@OPS.register(spec.Flatten, spec.Reshape)
@reads_keras("Flatten", "Reshape")
class Reshaping(Op):
    """flatten and reshape: x reshaped to the node's shape, row-major over NHWC (images flatten
    channel-fastest, as keras.layers.Flatten does)."""

    def __call__(self, inputs, mask=None):
        return tf.reshape(inputs[0], [-1, *self.node.shape])

    @staticmethod
    def forward_code(node, ins):
        return [], f"tf.reshape({ins[0]}, [-1, {', '.join(map(str, node.shape))}])"

    @staticmethod
    def keras(node, dtype):
        layers = _keras().layers
        if type(node.layer) is spec.Flatten:
            return layers.Flatten(name=node.name, dtype=dtype)
        return layers.Reshape(tuple(node.shape), name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        if "target_shape" in config:
            return spec.Reshape(name=config["name"], inputs=inputs, shape=tuple(config["target_shape"]))
        _window_fields(config, f"layer {config['name']}")
        return spec.Flatten(name=config["name"], inputs=inputs)


# ---- normalization: batch_norm (with state) and layer_norm ------------------------------------------
#
# The functions below are the lowering's AND the emitted script's (their source is copied into it):
# TF ops only, in the NumPy reference's order of operations (crossnn_numpy.normalization), gradients
# by the tape.


def normalize(x, gamma, beta, reduce, shape, epsilon):
    """y = gamma · (x - μ) / √(σ² + epsilon) + beta with μ and the biased σ² over the axes `reduce`
    (sums divided by the count, as the reference divides); gamma, beta: None or vectors reshaped to
    `shape`. Returns (y, μ, σ², count); the tape differentiates the statistics too."""
    count = tf.reduce_prod(tf.gather(tf.shape(x), reduce))
    n = tf.cast(count, x.dtype)
    mean = tf.reduce_sum(x, axis=reduce, keepdims=True) / n
    centered = x - mean
    var = tf.reduce_sum(centered * centered, axis=reduce, keepdims=True) / n
    y = centered * (1.0 / tf.sqrt(var + epsilon))
    if gamma is not None:
        y = y * tf.reshape(gamma, shape)
    return (y if beta is None else y + tf.reshape(beta, shape)), mean, var, count


def move_statistics(moving_mean, moving_variance, mean, var, count, momentum, unbiased):
    """BatchNorm's moving statistics (tf.Variables) after a training batch, in Keras' convention:
    moving ← momentum · moving + (1 - momentum) · batch. unbiased: the batch variance is scaled by
    count / (count - 1) first (PyTorch's running variance; Keras has no such option)."""
    if unbiased:
        var = var * tf.cast(tf.cast(count, tf.float64) / tf.cast(count - 1, tf.float64), var.dtype)
    moving_mean.assign(momentum * moving_mean + (1.0 - momentum) * tf.reshape(mean, [-1]))
    moving_variance.assign(momentum * moving_variance + (1.0 - momentum) * tf.reshape(var, [-1]))


def normalize_moving(x, gamma, beta, moving_mean, moving_variance, shape, epsilon):
    """BatchNorm when predicting: gamma · (x - moving_mean) / √(moving_variance + epsilon) + beta."""
    y = (x - tf.reshape(moving_mean, shape)) / tf.sqrt(tf.reshape(moving_variance, shape) + epsilon)
    if gamma is not None:
        y = y * tf.reshape(gamma, shape)
    return y if beta is None else y + tf.reshape(beta, shape)


def _norm_geometry(node) -> tuple[list[int], list[int]]:
    """(the axes a statistic is taken over, the shape a per-channel vector takes against x), batch axis
    included: batch_norm reduces every axis but its own, layer_norm only its own."""
    rank = len(node.shape) + 1
    keep = merge_axis(node.layer.axis, len(node.shape)) + 1
    shape = [node.shape[keep - 1] if i == keep else 1 for i in range(rank)]
    if isinstance(node.layer, spec.LayerNorm):
        return [keep], shape
    return [i for i in range(rank) if i != keep], shape


class _Normalization(Op):
    def __init__(self, node, params, native=frozenset()):
        super().__init__(node, params, native)
        self.reduce, self.shape = _norm_geometry(node)
        self.gamma, self.beta = params.get("gamma"), params.get("beta")

    @staticmethod
    def _scale_code(node) -> str:
        layer = node.layer
        return f"{_p(node, 'gamma') if layer.scale else 'None'}, {_p(node, 'beta') if layer.center else 'None'}"

    @staticmethod
    def _axis(config, where: str) -> int:
        axis = config.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if not isinstance(axis, int):
            raise UnsupportedFeature("tensorflow", f"importing {where} normalizing over the axes {axis}")
        return axis


@OPS.register(spec.BatchNorm)
@reads_keras("BatchNormalization")
class BatchNorm(_Normalization):
    """Training: normalize with the batch's statistics (normalize) and move the moving statistics,
    non-trainable tf.Variables, in the step (move_statistics); predicting: normalize with the moving
    statistics (normalize_moving). Written out rather than tf.nn.batch_normalization /
    keras.layers.BatchNormalization: they compute x · inv + (beta - μ · inv), another rounding, and
    Keras has no unbiased running variance."""

    stateful = True

    def __call__(self, inputs, mask=None, training=False):
        layer, params = self.node.layer, self.params
        if not training:
            return normalize_moving(inputs[0], self.gamma, self.beta, params["moving_mean"], params["moving_variance"],
                                    self.shape, layer.epsilon)
        y, mean, var, count = normalize(inputs[0], self.gamma, self.beta, self.reduce, self.shape, layer.epsilon)
        move_statistics(params["moving_mean"], params["moving_variance"], mean, var, count, layer.momentum,
                        layer.running_variance == "unbiased")
        return y

    @staticmethod
    def helpers(node):
        return frozenset({"normalize", "move_statistics", "normalize_moving"})

    @staticmethod
    def forward_code(node, ins):
        layer = node.layer
        reduce, shape = _norm_geometry(node)
        scale = _Normalization._scale_code(node)
        moving = f"{_p(node, 'moving_mean')}, {_p(node, 'moving_variance')}"
        return ["if training:  # the batch's statistics; the moving ones (tf.Variables, not trained) move",
                f"    z, mean, var, count = normalize({ins[0]}, {scale}, {reduce}, {shape}, {layer.epsilon!r})",
                f"    move_statistics({moving}, mean, var, count, {layer.momentum!r}, "
                f"{layer.running_variance == 'unbiased'})",
                "else:  # predicting: the moving statistics",
                f"    z = normalize_moving({ins[0]}, {scale}, {moving}, {shape}, {layer.epsilon!r})"], "z"

    @staticmethod
    def keras(node, dtype):
        """keras.layers.BatchNormalization; weights gamma, beta, moving_mean, moving_variance (those
        the layer has), Keras' initializers ones/zeros/zeros/ones. Its moving variance is always the
        biased one (running_variance = "biased")."""
        layer = node.layer
        return _keras().layers.BatchNormalization(axis=layer.axis, momentum=layer.momentum, epsilon=layer.epsilon,
                                                  center=layer.center, scale=layer.scale, name=node.name,
                                                  dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        where = f"layer {config['name']} (BatchNormalization)"
        if config.get("renorm") or config.get("synchronized"):
            raise UnsupportedFeature("tensorflow", f"importing {where} with renorm or synchronized")
        return spec.BatchNorm(name=config["name"], inputs=inputs, axis=_Normalization._axis(config, where),
                              momentum=config["momentum"], epsilon=config["epsilon"], running_variance="biased",
                              center=config["center"], scale=config["scale"],
                              gamma_init=read.initializer(config["gamma_initializer"]),
                              beta_init=read.initializer(config["beta_initializer"]),
                              moving_mean_init=read.initializer(config["moving_mean_initializer"]),
                              moving_variance_init=read.initializer(config["moving_variance_initializer"]))


@OPS.register(spec.LayerNorm)
@reads_keras("LayerNormalization")
class LayerNorm(_Normalization):
    """Each sample normalized over its axis (normalize), in training and predicting alike."""

    def __call__(self, inputs, mask=None):
        return normalize(inputs[0], self.gamma, self.beta, self.reduce, self.shape, self.node.layer.epsilon)[0]

    @staticmethod
    def helpers(node):
        return frozenset({"normalize"})

    @staticmethod
    def forward_code(node, ins):
        reduce, shape = _norm_geometry(node)
        return [], (f"normalize({ins[0]}, {_Normalization._scale_code(node)}, {reduce}, {shape}, "
                    f"{node.layer.epsilon!r})[0]")

    @staticmethod
    def keras(node, dtype):
        """keras.layers.LayerNormalization; weights gamma, beta (those the layer has)."""
        layer = node.layer
        return _keras().layers.LayerNormalization(axis=layer.axis, epsilon=layer.epsilon, center=layer.center,
                                                  scale=layer.scale, name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        where = f"layer {config['name']} (LayerNormalization)"
        if config.get("rms_scaling"):
            raise UnsupportedFeature("tensorflow", f"importing {where} with rms_scaling")
        return spec.LayerNorm(name=config["name"], inputs=inputs, axis=_Normalization._axis(config, where),
                              epsilon=config["epsilon"], center=config["center"], scale=config["scale"],
                              gamma_init=read.initializer(config["gamma_initializer"]),
                              beta_init=read.initializer(config["beta_initializer"]))


# ---- sequences: embedding and the recurrent layers ----------------------------------------------------
#
# The recurrent functions step through time with tf.scan (a tf.while_loop): the graph holds the cell
# once, whatever the sequence length, and the tape differentiates through the loop (its gradient keeps
# every step's activations in TensorLists). Unrolling the 32 steps of the lstm-r benchmark in Python
# instead ran its graph-mode step no faster here (53 against 50 ms, best of 30, float32, batch 32)
# but took 4 s to trace and over a minute for XLA to compile (the loop: 0.6 s and 7 s). As in the
# reference, the input part x_t @ kernel + bias of every step is one matmul before the loop.


def _input_part(x, kernel, bias):
    """x @ kernel + bias for every step at once, time first: (N, T, F) -> (T, N, G·units)."""
    steps, features = x.shape[1], x.shape[2]
    xw = tf.reshape(tf.matmul(tf.reshape(x, [-1, features]), kernel), [-1, steps, kernel.shape[1]]) + bias
    return tf.transpose(xw, [1, 0, 2])


def _sequence(hs, return_sequences):
    """The layer's output from every step's h (T, N, units): all of them (N, T, units) or the last."""
    return tf.transpose(hs, [1, 0, 2]) if return_sequences else hs[-1]


def simple_rnn(x, kernel, recurrent, bias, act, return_sequences):
    """h_t = act(x_t @ kernel + h_{t-1} @ recurrent + bias) from h_0 = 0 over the time axis of x
    (N, T, F); every h_t (N, T, units) or the last (N, units)."""
    h0 = tf.zeros([tf.shape(x)[0], recurrent.shape[0]], x.dtype)
    hs = tf.scan(lambda h, xw_t: act(xw_t + tf.matmul(h, recurrent)), _input_part(x, kernel, bias), initializer=h0)
    return _sequence(hs, return_sequences)


def lstm(x, kernel, recurrent, bias, act, rec, return_sequences):
    """Gates i, f, c, o of z = x_t @ kernel + h_{t-1} @ recurrent + bias: c_t = rec(z_f) c_{t-1} +
    rec(z_i) act(z_c), h_t = rec(z_o) act(c_t), from zero states (keras.layers.LSTM's formula)."""

    def cell(carry, xw_t):
        h, c = carry
        zi, zf, zg, zo = tf.split(xw_t + tf.matmul(h, recurrent), 4, axis=1)
        c = rec(zf) * c + rec(zi) * act(zg)
        return rec(zo) * act(c), c

    zero = tf.zeros([tf.shape(x)[0], recurrent.shape[0]], x.dtype)
    hs, _ = tf.scan(cell, _input_part(x, kernel, bias), initializer=(zero, zero))
    return _sequence(hs, return_sequences)


def gru(x, kernel, recurrent, bias, act, rec, return_sequences, reset_after):
    """Gates z, r, h (crossnn.spec.GRU): h_t = z h_{t-1} + (1 - z) h~ from h_0 = 0.
    reset_after: bias (2, 3u) = (input row, recurrent row), h~ = act(a_h + r ⊙ (h @ R_h + b_h));
    else bias (3u,), h~ = act(a_h + (r ⊙ h) @ R_h) (keras.layers.GRU's two forms)."""
    units = recurrent.shape[0]
    x_bias, h_bias = (bias[0], bias[1]) if reset_after else (bias, None)
    gates, candidate = recurrent[:, :2 * units], recurrent[:, 2 * units:]

    def cell(h, a):
        a_z, a_r, a_h = tf.split(a, 3, axis=1)
        if reset_after:
            b_z, b_r, b_h = tf.split(tf.matmul(h, recurrent) + h_bias, 3, axis=1)
            z, r = rec(a_z + b_z), rec(a_r + b_r)
            proposal = act(a_h + r * b_h)
        else:
            b_z, b_r = tf.split(tf.matmul(h, gates), 2, axis=1)
            z, r = rec(a_z + b_z), rec(a_r + b_r)
            proposal = act(a_h + tf.matmul(r * h, candidate))
        return z * h + (1.0 - z) * proposal

    h0 = tf.zeros([tf.shape(x)[0], units], x.dtype)
    return _sequence(tf.scan(cell, _input_part(x, kernel, x_bias), initializer=h0), return_sequences)


def _source(function) -> str:
    return textwrap.dedent(inspect.getsource(function))


#: the functions the emitted script copies: the script computes what the lowering computes
SCRIPT_HELPERS.update({f.__name__: _source(f) for f in (normalize, move_statistics, normalize_moving, _input_part,
                                                        _sequence, simple_rnn, lstm, gru)})


@OPS.register(spec.Embedding)
@reads_keras("Embedding")
class Embedding(Op):
    """y = tf.gather(embeddings, ids): the model input holds the ids as numbers of the run's dtype,
    cast to int32 at the boundary (keras.layers.Embedding casts them too). The tape's gradient is a
    tf.IndexedSlices of the rows read, which the step densifies (unsorted_segment_sum: each id's rows
    summed) before the optimizer. tf.gather raises for an id outside the table on the CPU (crossnn's
    data check refuses them first)."""

    def __call__(self, inputs, mask=None):
        return tf.gather(self.params["embeddings"], tf.cast(inputs[0], tf.int32))

    @staticmethod
    def forward_code(node, ins):
        return [], f"tf.gather({_p(node, 'embeddings')}, tf.cast({ins[0]}, tf.int32))  # ids stored as numbers"

    @staticmethod
    def keras(node, dtype):
        """keras.layers.Embedding, Keras' initializer U(±0.05)."""
        layer = node.layer
        return _keras().layers.Embedding(layer.input_dim, layer.output_dim, name=node.name, dtype=dtype)

    @staticmethod
    def from_keras(config, inputs, read):
        if config.get("mask_zero"):
            raise UnsupportedFeature("tensorflow", f"importing layer {config['name']} (Embedding with mask_zero)")
        return spec.Embedding(name=config["name"], inputs=inputs, input_dim=config["input_dim"],
                              output_dim=config["output_dim"],
                              embeddings_init=read.initializer(config["embeddings_initializer"]))


class _Recurrent(Op):
    """A recurrent layer through its function above (simple_rnn, lstm, gru): the activations are the
    registry's, the options the spec's."""

    #: the function over time, the Keras layer class's name, the spec class (set by each entry)
    function = None
    keras_class = ""
    spec_class = None

    def __init__(self, node, params, native=frozenset()):
        super().__init__(node, params, native)
        layer = node.layer
        self.acts = [activation(layer.activation, native)]
        if hasattr(layer, "recurrent_activation"):
            self.acts.append(activation(layer.recurrent_activation, native))

    def __call__(self, inputs, mask=None):
        p = self.params
        return type(self).function(inputs[0], p["kernel"], p["recurrent_kernel"], p["bias"], *self.acts,
                                   *self._options(self.node.layer))

    @staticmethod
    def _activations(layer) -> list:
        return [layer.activation] + ([layer.recurrent_activation] if hasattr(layer, "recurrent_activation") else [])

    @classmethod
    def helpers(cls, node):
        acts = cls._activations(node.layer)
        return frozenset({cls.function.__name__, "_input_part", "_sequence"}).union(*(activation(a).helpers
                                                                                      for a in acts))

    @classmethod
    def forward_code(cls, node, ins):
        params = ", ".join(_p(node, name) for name in ("kernel", "recurrent_kernel", "bias"))
        acts = ", ".join(f"lambda z: {activation(a).code('z')}" for a in cls._activations(node.layer))
        options = ", ".join(map(str, cls._options(node.layer)))
        return [], f"{cls.function.__name__}({ins[0]}, {params}, {acts}, {options})"

    @staticmethod
    def _options(layer) -> tuple:
        """return_sequences, and GRU's reset_after."""
        return (layer.return_sequences, layer.reset_after) if isinstance(layer, spec.GRU) else (layer.return_sequences,)

    @classmethod
    def keras(cls, node, dtype):
        """The Keras layer with Keras' default initializers (glorot_uniform, orthogonal, zeros; LSTM's
        unit_forget_bias=True, Keras' default, whatever the spec's flag: it only initializes)."""
        layer = node.layer
        options = {"reset_after": layer.reset_after} if isinstance(layer, spec.GRU) else {}
        acts = dict(activation=activation(layer.activation).keras(layer.activation))
        if hasattr(layer, "recurrent_activation"):
            acts["recurrent_activation"] = activation(layer.recurrent_activation).keras(layer.recurrent_activation)
        return getattr(_keras().layers, cls.keras_class)(layer.units, return_sequences=layer.return_sequences,
                                                         name=node.name, dtype=dtype, **acts, **options)

    @classmethod
    def from_keras(cls, config, inputs, read):
        where = f"layer {config['name']} ({cls.keras_class})"
        refused = [key for key, plain in (("use_bias", True), ("return_state", False), ("go_backwards", False),
                                          ("stateful", False), ("dropout", 0.0), ("recurrent_dropout", 0.0))
                   if config.get(key, plain) != plain]
        if refused:
            raise UnsupportedFeature("tensorflow", f"importing {where} with {refused[0]} = {config[refused[0]]}")
        fields = dict(name=config["name"], inputs=inputs, units=config["units"],
                      return_sequences=config["return_sequences"], activation=read.activation(config["activation"]),
                      kernel_init=read.initializer(config["kernel_initializer"]),
                      recurrent_init=read.initializer(config["recurrent_initializer"]),
                      bias_init=read.initializer(config["bias_initializer"]))
        if "recurrent_activation" in config:
            fields["recurrent_activation"] = read.activation(config["recurrent_activation"])
        if cls.keras_class == "LSTM":
            fields["unit_forget_bias"] = config["unit_forget_bias"]
        if cls.keras_class == "GRU":
            fields["reset_after"] = config["reset_after"]
        return cls.spec_class(**fields)


@OPS.register(spec.SimpleRNN)
@reads_keras("SimpleRNN")
class SimpleRNN(_Recurrent):
    function = staticmethod(simple_rnn)
    keras_class, spec_class = "SimpleRNN", spec.SimpleRNN


@OPS.register(spec.LSTM)
@reads_keras("LSTM")
class LSTM(_Recurrent):
    function = staticmethod(lstm)
    keras_class, spec_class = "LSTM", spec.LSTM


@OPS.register(spec.GRU)
@reads_keras("GRU")
class GRU(_Recurrent):
    function = staticmethod(gru)
    keras_class, spec_class = "GRU", spec.GRU


# ---- losses: loss(p, y) -> the scalar mean ----------------------------------------------------------

LOSS_NOTE = ("# ---- the loss, with TF ops (keras.losses would compute it in keras.config.floatx(), float32\n"
             "# unless set) ----\n")


def _inverse_count(count, dtype):
    """1/n formed in float64 and cast once, as the NumPy reference and PyTorch do."""
    return tf.cast(1.0 / tf.cast(count, tf.float64), dtype)


def _rows(p):
    """The rows of a classifier's output: every position but the class (last) axis."""
    return tf.size(p) // tf.shape(p)[-1]


def _keras_loss(keras_loss):
    """Our (p, y) argument order for a Keras loss object, which takes (y_true, y_pred)."""
    return lambda p, y: keras_loss(y, p)


class LossOp:
    """Defaults of a loss entry: `lower(s)` gives the spec's loss; `natives` maps a catalog entry to
    a function of (s, dtype) giving Keras' loss object (computed in the run's dtype, as a float64
    Keras program sets floatx)."""

    natives: dict = {}

    def __init__(self, s, native=frozenset(), dtype="float64"):
        self.s = s
        own = [make for entry, make in self.natives.items() if entry in native]
        self.fn = _keras_loss(own[0](s, dtype)) if own else self.lower(s)

    def __call__(self, p, y):
        return self.fn(p, y)


@OPS.register(spec.MSE)
class MSE(LossOp):
    """mean((p - y)²); the tape gives (1/n) · 2 (p - y)."""

    code = LOSS_NOTE + '''def loss_fn(p, y):
    """mean((p - y)^2) over every element; the tape's gradient is 2 (p - y) / n."""
    return tf.reduce_mean(tf.square(p - y))
'''

    def lower(self, s):
        return lambda p, y: tf.reduce_mean(tf.square(p - y))


@OPS.register(spec.MAE)
class MAE(LossOp):
    """mean(|p - y|); the tape gives (1/n) · sign(p - y), sign(0) = 0."""

    code = LOSS_NOTE + '''def loss_fn(p, y):
    """mean(|p - y|) over every element; the tape's gradient is sign(p - y) / n."""
    return tf.reduce_mean(tf.abs(p - y))
'''

    def lower(self, s):
        return lambda p, y: tf.reduce_mean(tf.abs(p - y))


@OPS.register(spec.Huber)
class Huber(LossOp):
    """mean(½ d² where |d| < delta, else delta (|d| - ½ delta)); the tape gives clip(d, ±delta) / n
    (both branches are finite, so the untaken one contributes exact zeros)."""

    def lower(self, s):
        delta = s.delta

        def huber(p, y):
            d = p - y
            ad = tf.abs(d)
            return tf.reduce_mean(tf.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta)))

        return huber

    @property
    def code(self):
        return LOSS_NOTE + f'''DELTA = {self.s.delta!r}


def loss_fn(p, y):
    """mean(d^2 / 2 where |d| < DELTA, else DELTA (|d| - DELTA / 2)), d = p - y."""
    d = p - y
    ad = tf.abs(d)
    return tf.reduce_mean(tf.where(ad < DELTA, 0.5 * d * d, DELTA * (ad - 0.5 * DELTA)))
'''


@OPS.register(spec.BCE)
class BCE(LossOp):
    """-mean(y max(log p, log_min) + (1 - y) max(log1p(-p), log_min)); gradient
    (p - y) / max(p (1 - p), grad_floor) / n, PyTorch's binary_cross_entropy_backward (a
    tf.custom_gradient). The native "bce-clamp": keras.losses.BinaryCrossentropy, which clips p to
    [1e-7, 1 - 1e-7] instead, and recovers the logits when p carries them (a Keras sigmoid's output:
    under that entry the model's sigmoid is keras.activations.sigmoid)."""

    natives = {"bce-clamp": lambda s, dtype: _keras().losses.BinaryCrossentropy(dtype=dtype)}

    def lower(self, s):
        log_min, grad_floor = s.log_min, s.grad_floor

        @tf.custom_gradient
        def bce(p, y):
            log_p = tf.maximum(tf.math.log(p), log_min)
            log_q = tf.maximum(tf.math.log1p(-p), log_min)
            value = tf.reduce_mean((y - 1.0) * log_q - y * log_p)

            def grad(upstream):
                dp = (p - y) / tf.maximum((1.0 - p) * p, grad_floor) * _inverse_count(tf.size(p), p.dtype)
                return upstream * dp, None

            return value, grad

        return bce

    @property
    def code(self):
        return LOSS_NOTE + f'''LOG_MIN = {self.s.log_min!r}  # the spec's clamp of log p and log(1 - p)
BCE_GRAD_FLOOR = {self.s.grad_floor!r}  # floor of p (1 - p) in the gradient: float32(1e-12), as torch's BCELoss


@tf.custom_gradient
def loss_fn(p, y):
    """-mean(y max(log p, LOG_MIN) + (1 - y) max(log(1 - p), LOG_MIN)); gradient
    (p - y) / max(p (1 - p), BCE_GRAD_FLOOR) / n. keras.losses.BinaryCrossentropy clips p to
    [1e-7, 1 - 1e-7] instead."""
    log_p = tf.maximum(tf.math.log(p), LOG_MIN)
    log_q = tf.maximum(tf.math.log1p(-p), LOG_MIN)
    value = tf.reduce_mean((y - 1.0) * log_q - y * log_p)

    def grad(upstream):
        n = tf.cast(tf.size(p), p.dtype)
        return upstream * ((p - y) / tf.maximum((1.0 - p) * p, BCE_GRAD_FLOOR) * (1.0 / n)), None

    return value, grad
'''


@OPS.register(spec.BCELogits)
class BCELogits(LossOp):
    """mean of tf.nn.sigmoid_cross_entropy_with_logits (max(z, 0) - z y + log1p(exp(-|z|)));
    gradient (sigmoid(z) - y) / n, exactly 1/2 - y at z = 0 (a tf.custom_gradient)."""

    code = LOSS_NOTE + '''@tf.custom_gradient
def loss_fn(z, y):
    """mean of tf.nn.sigmoid_cross_entropy_with_logits (max(z, 0) - z y + log1p(exp(-|z|)));
    gradient (sigmoid(z) - y) / n, exactly 1/2 - y at z = 0."""
    value = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))

    def grad(upstream):
        n = tf.cast(tf.size(z), z.dtype)
        return upstream * ((1.0 / (1.0 + tf.exp(-z)) - y) * (1.0 / n)), None

    return value, grad
'''

    def lower(self, s):
        @tf.custom_gradient
        def bce_logits(z, y):
            value = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))

            def grad(upstream):
                dz = (1.0 / (1.0 + tf.exp(-z)) - y) * _inverse_count(tf.size(z), z.dtype)
                return upstream * dz, None

            return value, grad

        return bce_logits


def _keras_cross_entropy(s, dtype):
    """Keras' categorical cross-entropy with its default from_logits=False, whatever the spec says
    (the native "cross-entropy-inputs": logits are then taken for probabilities)."""
    losses = _keras().losses
    return (losses.SparseCategoricalCrossentropy if s.sparse else losses.CategoricalCrossentropy)(dtype=dtype)


@OPS.register(spec.CrossEntropy)
class CrossEntropy(LossOp):
    """A mean over the rows (every position but the last, class, axis) of the cross-entropy.
    From logits: tf.nn.(sparse_)softmax_cross_entropy_with_logits, whose tape gradient is
    (softmax(z) - onehot) / rows. On probabilities: -Σ y max(log p, log_min) / rows with gradient
    -y / p / rows where log p > log_min, else 0 (a tf.custom_gradient: the tape's gradient of the
    clamp would be 0 · (1/0) = NaN at p = 0)."""

    natives = {"cross-entropy-inputs": _keras_cross_entropy}

    def lower(self, s):
        if s.from_logits:
            if s.sparse:
                return lambda z, labels: tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z))
            return lambda z, y: tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z))

        log_min, sparse = s.log_min, s.sparse

        @tf.custom_gradient
        def xent_probabilities(p, y):
            if sparse:
                y = tf.one_hot(y, tf.shape(p)[-1], dtype=p.dtype)
            log_p = tf.math.log(p)
            active = log_p > log_min
            rows = _rows(p)
            value = -tf.reduce_sum(y * tf.where(active, log_p, log_min)) / tf.cast(rows, p.dtype)

            def grad(upstream):
                dp = tf.where(active, -y / tf.where(active, p, 1.0), 0.0) * _inverse_count(rows, p.dtype)
                return upstream * dp, None

            return value, grad

        return xent_probabilities

    @property
    def code(self):
        s = self.s
        if s.from_logits and s.sparse:
            return LOSS_NOTE + '''def loss_fn(z, labels):
    """mean over the rows of log sum exp z - z[label], on the logits z and class indices."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z))
'''
        if s.from_logits:
            return LOSS_NOTE + '''def loss_fn(z, y):
    """mean over the rows of -sum_k y log_softmax(z), on the logits z and one-hot rows y."""
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z))
'''
        one_hot = ("\n    y = tf.one_hot(y, tf.shape(p)[-1], dtype=p.dtype)  # class indices as one-hot rows"
                   if s.sparse else "")
        return LOSS_NOTE + f'''LOG_MIN = {s.log_min!r}  # the spec's clamp of log p


@tf.custom_gradient
def loss_fn(p, y):
    """-sum y max(log p, LOG_MIN) / rows on probabilities p (rows: every position but the class axis);
    gradient -y / p / rows where log p > LOG_MIN, else 0 (the tape's gradient of the clamp would be
    0 * (1/0) = NaN at p = 0). Keras' CategoricalCrossentropy rescales p to sum to 1 and clips it instead."""{one_hot}
    log_p = tf.math.log(p)
    active = log_p > LOG_MIN
    rows = tf.cast(tf.size(p) // tf.shape(p)[-1], p.dtype)
    value = -tf.reduce_sum(y * tf.where(active, log_p, LOG_MIN)) / rows

    def grad(upstream):
        return upstream * (tf.where(active, -y / tf.where(active, p, 1.0), 0.0) * (1.0 / rows)), None

    return value, grad
'''


from crossnn_tensorflow import optimizers  # noqa: E402,F401  (registers the optimizer rules in OPS)
