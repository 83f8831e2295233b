"""The JAX backend's lowering registry: one entry per activation, layer and loss (optimizer rules:
crossnn_jax.optimizers), each holding the jax.numpy / jax.lax code that trains it and, beside it, the
same code as the text the emitted script uses (crossnn_jax.script).

Layout: crossnn's canonical layout is JAX's own choice here: images (N, H, W, C), conv kernels
(kh, kw, in, out) ("NHWC", "HWIO", "NHWC" dimension numbers of lax.conv_general_dilated, as Flax
uses), dense kernels (in, out). Nothing is permuted. Parameters travel as a dict pytree
{canonical name: array}; gradients come from jax.value_and_grad of the loss, so entries hold forward
code only. Where the spec fixes a gradient that autodiff of the forward formula would get wrong, the
entry's function carries its own rule (jax.custom_vjp): the floored denominator of BCE's gradient,
and the clamp of cross-entropy on probabilities (autodiff through a clamped log gives 0·∞ = NaN at
p = 0). relu'(0) = 0 is jax.nn.relu's own rule (jnp.maximum(z, 0) would give ½); softplus is
jax.nn.softplus, log(1 + exp(z)) computed as max(z, 0) + log1p(exp(-|z|)) with derivative sigmoid(z)
(exactly ½ at 0).

'same' padding is crossnn's (TensorFlow's) rule, from crossnn.spec.layers.window_geometry, written out
as explicit (before, after) pairs. Max pooling pads with -inf (padding never wins); its gradient goes
to the first maximum of a window, as XLA's select-and-scatter picks it.

Entry contracts (`OPS.register(SpecClass)` adds one; `native` is the set of native-flavour catalog
entries the run asked for, see JaxBackend.native_entries):

activation  act(s, native) -> Activation(fn, code, helpers): fn(z) -> a in jax; code, the same as a
            template over {z}; helpers, names of SCRIPT_HELPERS the code calls.
layer       a class: Layer(node, native) is callable as (p, inputs, mask) -> output, p the layer's
            parameters by short name ("kernel", "bias"), inputs the list of input arrays, mask the
            step's dropout mask (None when predicting); code(ins, out) -> script lines computing
            `out` from the variables `ins` (params["<layer>/<param>"], masks["<dropout layer>"]);
            helpers; native_init(key, dtype) -> {short name: array} for the "default-init" flavour.
            A layer with state (stateful = True, BatchNorm) finds its state in p too, and has
            train(p, inputs, mask) -> (output, {short name: new state}) for training steps (its script
            lines branch on `training` and write state["<layer>/<name>"]). `loops` is set when the
            layer runs inside a device loop (the scan mode; see loop_conv2d).
loss        a class: Loss(s, native) is callable as (output, targets) -> the mean loss; class_indices:
            sparse targets stay class indices (int32, the output's shape without its last axis)
            instead of one-hot rows; code -> the body of the script's loss(out, y); helpers.
"""

from __future__ import annotations

import functools
import inspect
import math
import textwrap
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from crossnn import spec
from crossnn.errors import UnsupportedFeature
from crossnn.lowering import Registry
from crossnn.spec.layers import merge_axis, window_geometry

OPS = Registry("jax")


# ---- functions with the spec's gradients (scripts carry their source) ----------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def clamped_bce(p, y, log_min):
    """Binary cross-entropy on probabilities, logs clamped at log_min:
    -mean(y·max(log p, log_min) + (1 - y)·max(log1p(-p), log_min)). Its gradient (clamped_bce_bwd) is
    the unclamped form's with the denominator floored, (p - y) / max(p (1 - p), 1e-12) / size, as
    torch's BCELoss computes it: finite at p = 0 or 1, where autodiff of the clamps gives 0·∞."""
    log_p = jnp.maximum(jnp.log(p), log_min)
    log_q = jnp.maximum(jnp.log1p(-p), log_min)
    return jnp.mean((y - 1.0) * log_q - y * log_p)


def clamped_bce_fwd(p, y, log_min):
    return clamped_bce(p, y, log_min), (p, y)


def clamped_bce_bwd(log_min, residuals, g):
    p, y = residuals
    floor = 9.999999960041972e-13  # float32(1e-12), the floor of torch's BCELoss gradient
    return g * ((p - y) / jnp.maximum((1.0 - p) * p, floor) * (1.0 / p.size)), None


clamped_bce.defvjp(clamped_bce_fwd, clamped_bce_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def clamped_cross_entropy(p, y, log_min):
    """Categorical cross-entropy on probabilities p (classes on the last axis), log p clamped at
    log_min: -Σ y·max(log p, log_min) / rows. Gradient (clamped_cross_entropy_bwd): -y / p / rows
    where log p > log_min, else 0 (autodiff would give 0·∞ = NaN at p = 0)."""
    log_p = jnp.log(p)
    rows = p.size // p.shape[-1]
    return -jnp.sum(y * jnp.where(log_p > log_min, log_p, log_min)) / rows


def clamped_cross_entropy_fwd(p, y, log_min):
    return clamped_cross_entropy(p, y, log_min), (p, y)


def clamped_cross_entropy_bwd(log_min, residuals, g):
    p, y = residuals
    active = jnp.log(p) > log_min
    rows = p.size // p.shape[-1]
    return g * (jnp.where(active, -y / jnp.where(active, p, 1.0), 0.0) * (1.0 / rows)), None


clamped_cross_entropy.defvjp(clamped_cross_entropy_fwd, clamped_cross_entropy_bwd)


def normalize(x, gamma, beta, reduce, shape, epsilon):
    """y = gamma · (x - μ) / √(σ² + epsilon) + beta with μ and the biased σ² over the axes `reduce`
    (gamma, beta: None or vectors broadcast by `shape`); returns (y, μ, σ²). Autodiff differentiates
    the statistics too."""
    mean = jnp.mean(x, axis=reduce, keepdims=True)
    centered = x - mean
    var = jnp.mean(centered * centered, axis=reduce, keepdims=True)
    y = centered * (1.0 / jnp.sqrt(var + epsilon))
    y = y if gamma is None else y * gamma.reshape(shape)
    return (y if beta is None else y + beta.reshape(shape)), mean, var


def moving_statistics(mean, var, moving_mean, moving_variance, momentum, count, unbiased):
    """BatchNorm's moving statistics after a training step (Keras' momentum): momentum · moving +
    (1 - momentum) · batch, the batch variance times count / (count - 1) when unbiased (PyTorch's)."""
    mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    if unbiased:
        var = var * (count / (count - 1))
    return (momentum * moving_mean + (1.0 - momentum) * mean.reshape(moving_mean.shape),
            momentum * moving_variance + (1.0 - momentum) * var.reshape(moving_variance.shape))


def normalize_moving(x, gamma, beta, moving_mean, moving_variance, shape, epsilon):
    """BatchNorm when predicting: gamma · (x - moving_mean) / √(moving_variance + epsilon) + beta."""
    y = (x - moving_mean.reshape(shape)) / jnp.sqrt(moving_variance.reshape(shape) + epsilon)
    y = y if gamma is None else y * gamma.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)


@functools.partial(jax.jit, static_argnames=("act", "return_sequences"))
def simple_rnn(x, kernel, recurrent, bias, act, return_sequences):
    """h_t = act(x_t @ kernel + h_{t-1} @ recurrent + bias) from h_0 = 0, over the time axis of x
    (N, T, F) with jax.lax.scan; every h_t (N, T, units) or the last (N, units). The recurrent layers
    are jitted functions (the activations static): inside a jitted step they are inlined; called op by
    op (the eager mode) they compile once instead of tracing their scan again at every call."""
    xw = x @ kernel + bias

    def cell(h, xw_t):
        h = act(xw_t + h @ recurrent)
        return h, h

    h, hs = jax.lax.scan(cell, jnp.zeros((x.shape[0], recurrent.shape[0]), x.dtype), jnp.swapaxes(xw, 0, 1))
    return jnp.swapaxes(hs, 0, 1) if return_sequences else h


@functools.partial(jax.jit, static_argnames=("act", "rec", "return_sequences"))
def lstm(x, kernel, recurrent, bias, act, rec, return_sequences):
    """Gates i, f, c, o of z = x_t @ kernel + h_{t-1} @ recurrent + bias: c_t = rec(z_f) c_{t-1} +
    rec(z_i) act(z_c), h_t = rec(z_o) act(c_t), from zero states, scanned over time."""
    xw = x @ kernel + bias

    def cell(carry, xw_t):
        h, c = carry
        zi, zf, zg, zo = jnp.split(xw_t + h @ recurrent, 4, axis=-1)
        c = rec(zf) * c + rec(zi) * act(zg)
        h = rec(zo) * act(c)
        return (h, c), h

    zero = jnp.zeros((x.shape[0], recurrent.shape[0]), x.dtype)
    (h, _), hs = jax.lax.scan(cell, (zero, zero), jnp.swapaxes(xw, 0, 1))
    return jnp.swapaxes(hs, 0, 1) if return_sequences else h


@functools.partial(jax.jit, static_argnames=("act", "rec", "return_sequences", "reset_after"))
def gru(x, kernel, recurrent, bias, act, rec, return_sequences, reset_after):
    """Gates z, r, h (crossnn.spec.GRU): h_t = z h_{t-1} + (1 - z) h~, from zero, scanned over time.
    reset_after: bias (2, 3u) = (input row, recurrent row), h~ = act(a_h + r ⊙ (h @ R_h + b_h));
    else bias (3u,), h~ = act(a_h + (r ⊙ h) @ R_h)."""
    u = recurrent.shape[0]
    xw = x @ kernel + (bias[0] if reset_after else bias)

    def cell(h, a):
        if reset_after:
            hb = h @ recurrent + bias[1]
            z, r = rec(a[:, :u] + hb[:, :u]), rec(a[:, u:2 * u] + hb[:, u:2 * u])
            candidate = act(a[:, 2 * u:] + r * hb[:, 2 * u:])
        else:
            hb = h @ recurrent[:, :2 * u]
            z, r = rec(a[:, :u] + hb[:, :u]), rec(a[:, u:2 * u] + hb[:, u:2 * u])
            candidate = act(a[:, 2 * u:] + (r * h) @ recurrent[:, 2 * u:])
        h = z * h + (1.0 - z) * candidate
        return h, h

    h, hs = jax.lax.scan(cell, jnp.zeros((x.shape[0], u), x.dtype), jnp.swapaxes(xw, 0, 1))
    return jnp.swapaxes(hs, 0, 1) if return_sequences else h


NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def loop_conv2d(x, kernel, strides, pads, dilation):
    """lax.conv_general_dilated on NHWC images and HWIO kernels, whose gradients (loop_conv2d_bwd) are
    written as convolutions in that same canonical form, with explicit transposes: the form XLA gives
    autodiff's transposed convolutions itself, except inside a device loop, where its CPU compiler
    leaves them non-canonical and runs them 7 to 25 times slower (measured on jax 0.10). The scan
    mode's convolutions use it; the math is autodiff's."""
    return lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=NHWC)


def loop_conv2d_fwd(x, kernel, strides, pads, dilation):
    return loop_conv2d(x, kernel, strides, pads, dilation), (x, kernel)


def loop_conv2d_bwd(strides, pads, dilation, residuals, dz):
    x, kernel = residuals
    (kh, kw), (height, width), (ho, wo) = kernel.shape[:2], x.shape[1:3], dz.shape[1:3]
    (sh, sw), (dh, dw), ((top, bottom), (left, right)) = strides, dilation, pads
    # dx: dz spread by the strides, against the kernel flipped in space with in and out swapped
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    dx_pads = (((kh - 1) * dh - top, height - (ho - 1) * sh - 1 + top),
               ((kw - 1) * dw - left, width - (wo - 1) * sw - 1 + left))
    dx = lax.conv_general_dilated(dz, flipped, (1, 1), dx_pads, lhs_dilation=strides, rhs_dilation=dilation,
                                  dimension_numbers=NHWC)
    # dkernel: x's channels as the batch and its batch as the features, dz as the kernel
    dk = lax.conv_general_dilated(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dz, (1, 2, 0, 3)), dilation,
                                  ((top, bottom), (left, right)), rhs_dilation=strides, dimension_numbers=NHWC)
    return dx, jnp.transpose(dk[:, :kh, :kw, :], (1, 2, 0, 3))


loop_conv2d.defvjp(loop_conv2d_fwd, loop_conv2d_bwd)


def _source(*objects, tail: str = "") -> str:
    return "\n\n".join(textwrap.dedent(inspect.getsource(o)) for o in objects) + tail


#: script helpers the entries' code may call, by name: their source
SCRIPT_HELPERS = {
    "clamped_bce": _source(clamped_bce, clamped_bce_fwd, clamped_bce_bwd,
                           tail="\n\nclamped_bce.defvjp(clamped_bce_fwd, clamped_bce_bwd)\n"),
    "clamped_cross_entropy": _source(
        clamped_cross_entropy, clamped_cross_entropy_fwd, clamped_cross_entropy_bwd,
        tail="\n\nclamped_cross_entropy.defvjp(clamped_cross_entropy_fwd, clamped_cross_entropy_bwd)\n"),
    **{f.__name__: _source(f) for f in (normalize, moving_statistics, normalize_moving, simple_rnn, lstm, gru)},
}


# ---- activations: act(s, native) -> Activation -------------------------------------------------------


class Activation(NamedTuple):
    fn: Callable
    code: str
    helpers: frozenset[str] = frozenset()


def activation(s: spec.Activation, native=frozenset()) -> Activation:
    return OPS.lookup(s)(s, native)


OPS.register(spec.Linear)(lambda s, native: Activation(lambda z: z, "{z}"))
OPS.register(spec.Sigmoid)(lambda s, native: Activation(jax.nn.sigmoid, "jax.nn.sigmoid({z})"))
OPS.register(spec.Tanh)(lambda s, native: Activation(jnp.tanh, "jnp.tanh({z})"))
OPS.register(spec.ReLU)(lambda s, native: Activation(jax.nn.relu, "jax.nn.relu({z})"))
OPS.register(spec.Softplus)(lambda s, native: Activation(jax.nn.softplus, "jax.nn.softplus({z})"))
OPS.register(spec.Softmax)(lambda s, native: Activation(functools.partial(jax.nn.softmax, axis=-1),
                                                        "jax.nn.softmax({z}, axis=-1)"))


@OPS.register(spec.LeakyReLU)
def leaky_relu(s: spec.LeakyReLU, native):
    """jnp.where(z > 0, z, slope·z): derivative slope at 0, as the spec says. With native
    "leaky-relu-slope", jax.nn.leaky_relu, whose where(z >= 0, ...) gives derivative 1 at 0."""
    slope = s.negative_slope
    if "leaky-relu-slope" in native:
        return Activation(functools.partial(jax.nn.leaky_relu, negative_slope=slope),
                          f"jax.nn.leaky_relu({{z}}, negative_slope={slope!r})")
    return Activation(lambda z: jnp.where(z > 0, z, z * slope), f"jnp.where({{z}} > 0, {{z}}, {{z}} * {slope!r})")


@OPS.register(spec.GELU)
def gelu(s: spec.GELU, native):
    """jax.nn.gelu with the spec's approximate; with native "gelu-approximation", jax.nn.gelu's own
    default (approximate=True, the tanh form) whatever the spec says."""
    if "gelu-approximation" in native:
        return Activation(jax.nn.gelu, "jax.nn.gelu({z})")
    tanh = s.approximate == "tanh"
    return Activation(functools.partial(jax.nn.gelu, approximate=tanh), f"jax.nn.gelu({{z}}, approximate={tanh})")


# ---- layers ----------------------------------------------------------------------------------------


def _param(node, short: str) -> str:
    return f'params["{node.name}/{short}"]'


class Layer:
    """Defaults of a layer entry: no parameters, no state, no helpers."""

    helpers: frozenset[str] = frozenset()
    #: a layer with state (crossnn.spec.Layer.state) also has train(p, inputs, mask) -> (output, {short
    #: name: new state}) for training steps; calling it predicts (p holds its state beside its parameters)
    stateful = False
    #: set when the layer runs inside a loop on the device (the scan mode): an entry may then compute
    #: the same math in a form XLA compiles better there
    loops = False

    def __init__(self, node, native=frozenset()):
        self.node, self.native = node, native

    def __call__(self, p, inputs, mask=None):
        raise NotImplementedError

    def code(self, ins: list[str], out: str) -> list[str]:
        raise NotImplementedError

    def native_init(self, key, dtype) -> dict:
        """The framework's own initial values ("default-init"); layers without parameters have none."""
        if self.node.params:
            raise UnsupportedFeature("jax", f"Flax-style default initializers for layer '{self.node.layer.kind}'")
        return {}


class _Activated(Layer):
    """A layer whose pre-activation z is followed by the spec's activation."""

    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        self.act = activation(node.layer.activation, native)
        self.helpers = self.act.helpers

    def activated(self, z: str, out: str) -> list[str]:
        """Script lines setting `out` to the activation of the expression z (one line when linear)."""
        if self.act.code == "{z}":
            return [f"{out} = {z}"]
        return ([] if z == "z" else [f"z = {z}"]) + [f"{out} = {self.act.code.format(z='z')}"]

    def native_init(self, key, dtype) -> dict:
        """Flax's nn.Dense / nn.Conv defaults: kernel lecun_normal (truncated normal, variance
        1/fan_in, fan_in = the product of every kernel axis but the last), bias zeros."""
        out = {}
        for p in self.node.params:
            if p.name == "kernel":
                out["kernel"] = jax.nn.initializers.lecun_normal()(key, p.shape, dtype)
            else:
                out[p.name] = jnp.zeros(p.shape, dtype)
        return out


@OPS.register(spec.Dense)
class Dense(_Activated):
    """a = f(x @ kernel + bias) over the last axis (jnp.matmul broadcasts over leading axes)."""

    def __call__(self, p, inputs, mask=None):
        z = inputs[0] @ p["kernel"]
        if "bias" in p:
            z = z + p["bias"]
        return self.act.fn(z)

    def code(self, ins, out):
        z = f"{ins[0]} @ {_param(self.node, 'kernel')}"
        if self.node.layer.use_bias:
            z += f" + {_param(self.node, 'bias')}"
        return self.activated(z, out)


@OPS.register(spec.ActivationLayer)
class ActivationLayer(_Activated):
    def __call__(self, p, inputs, mask=None):
        return self.act.fn(inputs[0])

    def code(self, ins, out):
        return [f"{out} = {self.act.code.format(z=ins[0])}"]


@OPS.register(spec.Dropout)
class Dropout(Layer):
    """y = x ⊙ mask while training (crossnn's mask of the step: 0 or 1/(1 - rate)), y = x when predicting."""

    def __call__(self, p, inputs, mask=None):
        return inputs[0] if mask is None else inputs[0] * mask

    def code(self, ins, out):
        return [f"{out} = {ins[0]} if masks is None else {ins[0]} * masks[{self.node.name!r}]"]


@OPS.register(spec.Concatenate)
class Concatenate(Layer):
    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        self.axis = merge_axis(node.layer.axis, len(node.shape)) + 1

    def __call__(self, p, inputs, mask=None):
        return jnp.concatenate(inputs, axis=self.axis)

    def code(self, ins, out):
        return [f"{out} = jnp.concatenate([{', '.join(ins)}], axis={self.axis})"]


@OPS.register(spec.Add)
class Add(Layer):
    def __call__(self, p, inputs, mask=None):
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total

    def code(self, ins, out):
        return [f"{out} = {' + '.join(ins)}"]


class _Window:
    """The geometry of a conv2d or pooling layer on its input, as lax's arguments."""

    def __init__(self, node):
        g = window_geometry(node.layer, node.input_shapes[0])
        self.window = tuple(node.layer.window_size)
        self.strides = tuple(node.layer.strides)
        self.pads = ((g.top, g.bottom), (g.left, g.right))
        # reduce_window works over every axis: batch and channels get window 1, no padding
        self.dims, self.steps = (1, *self.window, 1), (1, *self.strides, 1)
        self.pads4 = ((0, 0), *self.pads, (0, 0))

    def reduce_args(self) -> str:
        return f"{self.dims}, {self.steps}, {self.pads4}"


@OPS.register(spec.Conv2D)
class Conv2D(_Activated):
    """a = f(conv(x, kernel) + bias): lax.conv_general_dilated on NHWC images and HWIO kernels with
    the explicit padding of window_geometry (TF's 'same': the extra row/column after); loop_conv2d
    (the same, with its gradients in canonical form) when the layer runs inside a device loop."""

    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        self.geometry = _Window(node)
        self.dilation = tuple(node.layer.dilation)

    def __call__(self, p, inputs, mask=None):
        g = self.geometry
        if self.loops:
            z = loop_conv2d(inputs[0], p["kernel"], g.strides, g.pads, self.dilation)
        else:
            z = lax.conv_general_dilated(inputs[0], p["kernel"], window_strides=g.strides, padding=g.pads,
                                         rhs_dilation=self.dilation, dimension_numbers=NHWC)
        if "bias" in p:
            z = z + p["bias"]
        return self.act.fn(z)

    def code(self, ins, out):
        g = self.geometry
        conv = (f"z = lax.conv_general_dilated({ins[0]}, {_param(self.node, 'kernel')}, window_strides={g.strides}, "
                f"padding={g.pads}, rhs_dilation={self.dilation}, dimension_numbers=(\"NHWC\", \"HWIO\", \"NHWC\"))")
        bias = f"z + {_param(self.node, 'bias')}" if self.node.layer.use_bias else "z"
        return [conv] + self.activated(bias, out)


@OPS.register(spec.MaxPool2D)
class MaxPool2D(Layer):
    """The largest value of each window, padding -inf (lax.reduce_window with lax.max)."""

    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        self.geometry = _Window(node)

    def __call__(self, p, inputs, mask=None):
        g = self.geometry
        return lax.reduce_window(inputs[0], -jnp.inf, lax.max, g.dims, g.steps, g.pads4)

    def code(self, ins, out):
        return [f"{out} = lax.reduce_window({ins[0]}, -jnp.inf, lax.max, {self.geometry.reduce_args()})"]


@OPS.register(spec.AvgPool2D)
class AvgPool2D(Layer):
    """Window sums over the zero-padded input divided by kh·kw (count_padding) or by the number of
    the window's positions inside the input (the window sums of an all-ones image)."""

    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        self.geometry = _Window(node)
        self.count_inside = not node.layer.count_padding and any(map(any, self.geometry.pads))

    def __call__(self, p, inputs, mask=None):
        g, x = self.geometry, inputs[0]
        total = lax.reduce_window(x, 0.0, lax.add, g.dims, g.steps, g.pads4)
        if not self.count_inside:
            return total / float(g.window[0] * g.window[1])
        counts = lax.reduce_window(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, lax.add, g.dims, g.steps, g.pads4)
        return total / counts

    def code(self, ins, out):
        g = self.geometry
        total = f"lax.reduce_window({ins[0]}, 0.0, lax.add, {g.reduce_args()})"
        if not self.count_inside:
            return [f"{out} = {total} / {float(g.window[0] * g.window[1])!r}"]
        height, width = self.node.input_shapes[0][:2]
        return [f"counts = lax.reduce_window(jnp.ones((1, {height}, {width}, 1), {ins[0]}.dtype), 0.0, lax.add, "
                f"{g.reduce_args()})  # window positions inside the input", f"{out} = {total} / counts"]


@OPS.register(spec.GlobalAvgPool2D)
class GlobalAvgPool2D(Layer):
    def __call__(self, p, inputs, mask=None):
        return jnp.mean(inputs[0], axis=(1, 2))

    def code(self, ins, out):
        return [f"{out} = jnp.mean({ins[0]}, axis=(1, 2))"]


@OPS.register(spec.Flatten, spec.Reshape)
class Reshaping(Layer):
    """x reshaped row-major to the node's shape: (H, W, C) images flatten channel-fastest, as crossnn's layout."""

    def __call__(self, p, inputs, mask=None):
        return inputs[0].reshape(inputs[0].shape[0], *self.node.shape)

    def code(self, ins, out):
        return [f"{out} = {ins[0]}.reshape({ins[0]}.shape[0], {', '.join(map(str, self.node.shape))})"]


# ---- normalization ----------------------------------------------------------------------------------


def _norm_geometry(node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(axes a statistic is taken over, the shape that broadcasts a per-channel vector against x)."""
    rank = len(node.shape) + 1
    keep = merge_axis(node.layer.axis, len(node.shape)) + 1
    shape = tuple(node.shape[keep - 1] if i == keep else 1 for i in range(rank))
    if isinstance(node.layer, spec.LayerNorm):
        return (keep,), shape
    return tuple(i for i in range(rank) if i != keep), shape


class _Norm(Layer):
    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        self.reduce, self.shape = _norm_geometry(node)
        self.helpers = frozenset({"normalize"})

    def _scale(self) -> tuple[str, str]:
        s = self.node.layer
        return (_param(self.node, "gamma") if s.scale else "None", _param(self.node, "beta") if s.center else "None")

    def native_init(self, key, dtype):
        """Flax's nn.BatchNorm / nn.LayerNorm: scale ones, bias zeros."""
        return {p.name: (jnp.ones if p.name == "gamma" else jnp.zeros)(p.shape, dtype) for p in self.node.params}


@OPS.register(spec.BatchNorm)
class BatchNorm(_Norm):
    """Training: normalize with the batch's statistics and move the moving ones (state); predicting:
    normalize with the moving statistics."""

    stateful = True

    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        self.helpers = frozenset({"normalize", "moving_statistics", "normalize_moving"})

    def __call__(self, p, inputs, mask=None):
        return normalize_moving(inputs[0], p.get("gamma"), p.get("beta"), p["moving_mean"], p["moving_variance"],
                                self.shape, self.node.layer.epsilon)

    def train(self, p, inputs, mask=None):
        s, x = self.node.layer, inputs[0]
        y, mean, var = normalize(x, p.get("gamma"), p.get("beta"), self.reduce, self.shape, s.epsilon)
        count = x.size // math.prod(self.shape)
        mm, mv = moving_statistics(mean, var, p["moving_mean"], p["moving_variance"], s.momentum, count,
                                   s.running_variance == "unbiased")
        return y, {"moving_mean": mm, "moving_variance": mv}

    def code(self, ins, out):
        s, node = self.node.layer, self.node
        gamma, beta = self._scale()
        mm, mv = _param(node, "moving_mean"), _param(node, "moving_variance")
        return ["if not training:  # predicting: the moving statistics",
                f"    {out} = normalize_moving({ins[0]}, {gamma}, {beta}, {mm}, {mv}, {self.shape}, {s.epsilon!r})",
                "else:  # training: the batch's statistics, and the moving ones move",
                f"    {out}, mean, var = normalize({ins[0]}, {gamma}, {beta}, {self.reduce}, {self.shape}, "
                f"{s.epsilon!r})",
                f'    state["{node.name}/moving_mean"], state["{node.name}/moving_variance"] = moving_statistics('
                f"mean, var, {mm}, {mv}, {s.momentum!r}, {ins[0]}.size // {math.prod(self.shape)}, "
                f"{s.running_variance == 'unbiased'})"]


@OPS.register(spec.LayerNorm)
class LayerNorm(_Norm):
    """Each sample normalized over its axis, in training and predicting alike."""

    def __call__(self, p, inputs, mask=None):
        return normalize(inputs[0], p.get("gamma"), p.get("beta"), self.reduce, self.shape, self.node.layer.epsilon)[0]

    def code(self, ins, out):
        gamma, beta = self._scale()
        return [f"{out}, _, _ = normalize({ins[0]}, {gamma}, {beta}, {self.reduce}, {self.shape}, "
                f"{self.node.layer.epsilon!r})"]


# ---- sequences --------------------------------------------------------------------------------------


@OPS.register(spec.Embedding)
class Embedding(Layer):
    """y = embeddings[ids], the ids stored as numbers in the model input; autodiff sums each id's rows."""

    def __call__(self, p, inputs, mask=None):
        return p["embeddings"][inputs[0].astype(jnp.int32)]

    def code(self, ins, out):
        return [f"{out} = {_param(self.node, 'embeddings')}[{ins[0]}.astype(jnp.int32)]  # ids stored as numbers"]

    def native_init(self, key, dtype):
        """Flax's nn.Embed: N(0, 1/features) (variance_scaling(1, "fan_in", "normal", out_axis=0))."""
        init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
        return {"embeddings": init(key, self.node.params[0].shape, dtype)}


class _Recurrent(Layer):
    """A recurrent layer: simple_rnn / lstm / gru above (jax.lax.scan over time), autodiff through time."""

    function: Callable

    def __init__(self, node, native=frozenset()):
        super().__init__(node, native)
        s = node.layer
        self.acts = [activation(s.activation, native)]
        if hasattr(s, "recurrent_activation"):
            self.acts.append(activation(s.recurrent_activation, native))
        self.options = (s.return_sequences, s.reset_after) if isinstance(s, spec.GRU) else (s.return_sequences,)
        self.helpers = frozenset({self.function.__name__}).union(*(a.helpers for a in self.acts))

    def __call__(self, p, inputs, mask=None):
        return self.function(inputs[0], p["kernel"], p["recurrent_kernel"], p["bias"], *(a.fn for a in self.acts),
                             *self.options)

    def code(self, ins, out):
        params = ", ".join(_param(self.node, name) for name in ("kernel", "recurrent_kernel", "bias"))
        acts = ", ".join(f"lambda z: {a.code.format(z='z')}" for a in self.acts)
        return [f"{out} = {self.function.__name__}({ins[0]}, {params}, {acts}, {', '.join(map(str, self.options))})"]

    def native_init(self, key, dtype):
        """Flax-style recurrent cells: kernel lecun_normal, recurrent kernel orthogonal, bias zeros."""
        k1, k2 = jax.random.split(key)
        shapes = {p.name: p.shape for p in self.node.params}
        return {"kernel": jax.nn.initializers.lecun_normal()(k1, shapes["kernel"], dtype),
                "recurrent_kernel": jax.nn.initializers.orthogonal()(k2, shapes["recurrent_kernel"], dtype),
                "bias": jnp.zeros(shapes["bias"], dtype)}


@OPS.register(spec.SimpleRNN)
class SimpleRNN(_Recurrent):
    function = staticmethod(simple_rnn)


@OPS.register(spec.LSTM)
class LSTM(_Recurrent):
    function = staticmethod(lstm)


@OPS.register(spec.GRU)
class GRU(_Recurrent):
    function = staticmethod(gru)


# ---- losses: Loss(s, native)(output, targets) -> the mean loss ----------------------------------------


class Loss:
    class_indices = False
    helpers: frozenset[str] = frozenset()

    def __init__(self, s, native=frozenset()):
        self.s, self.native = s, native


@OPS.register(spec.MSE)
class MSE(Loss):
    code = "return jnp.mean(optax.losses.squared_error(out, y))"

    def __call__(self, out, y):
        return jnp.mean(optax.losses.squared_error(out, y))


@OPS.register(spec.MAE)
class MAE(Loss):
    code = "return jnp.mean(jnp.abs(out - y))"

    def __call__(self, out, y):
        return jnp.mean(jnp.abs(out - y))


@OPS.register(spec.Huber)
class Huber(Loss):
    """optax.losses.huber_loss: ½ min(|d|, δ)² + δ (|d| - min(|d|, δ)), the spec's formula."""

    def __call__(self, out, y):
        return jnp.mean(optax.losses.huber_loss(out, y, delta=self.s.delta))

    @property
    def code(self):
        return f"return jnp.mean(optax.losses.huber_loss(out, y, delta={self.s.delta!r}))"


@OPS.register(spec.BCE)
class BCE(Loss):
    """clamped_bce: the spec's clamp and gradient (optax has no BCE on probabilities)."""

    helpers = frozenset({"clamped_bce"})

    def __call__(self, out, y):
        return clamped_bce(out, y, self.s.log_min)

    @property
    def code(self):
        return f"return clamped_bce(out, y, {self.s.log_min!r})"


@OPS.register(spec.BCELogits)
class BCELogits(Loss):
    code = "return jnp.mean(optax.losses.sigmoid_binary_cross_entropy(out, y))"

    def __call__(self, out, y):
        return jnp.mean(optax.losses.sigmoid_binary_cross_entropy(out, y))


@OPS.register(spec.CrossEntropy)
class CrossEntropy(Loss):
    """From logits: optax's softmax cross-entropy (class indices for sparse targets, one-hot rows
    otherwise), the mean over the rows. On probabilities: clamped_cross_entropy on one-hot rows."""

    def __init__(self, s, native=frozenset()):
        super().__init__(s, native)
        self.class_indices = s.from_logits and s.sparse
        self.helpers = frozenset() if s.from_logits else frozenset({"clamped_cross_entropy"})

    def __call__(self, out, y):
        if not self.s.from_logits:
            return clamped_cross_entropy(out, y, self.s.log_min)
        if self.class_indices:
            return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(out, y))
        return jnp.mean(optax.losses.softmax_cross_entropy(out, y))

    @property
    def code(self):
        if not self.s.from_logits:
            return f"return clamped_cross_entropy(out, y, {self.s.log_min!r})"
        if self.class_indices:
            return "return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(out, y))"
        return "return jnp.mean(optax.losses.softmax_cross_entropy(out, y))"


def loss(s: spec.Loss, native=frozenset()) -> Loss:
    return OPS.lookup(s)(s, native)


def layer(node, native=frozenset()) -> Layer:
    return OPS.lookup(node.layer)(node, native)


from crossnn_jax import optimizers  # noqa: E402,F401  (registers the optimizer rules in OPS)
