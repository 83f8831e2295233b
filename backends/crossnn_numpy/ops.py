"""The NumPy backend's lowering registry: one entry per activation, layer and loss (optimizer rules:
crossnn_numpy.optimizers), each holding its training math and the text the emitted script uses.

The math is written against the array namespace `xp` (crossnn_numpy.xp) and is pure: inputs in,
outputs out, nothing handed in is written to. The same entries therefore train on NumPy, CuPy, torch
tensors (the torch backend's xp mode) and jax.numpy. Each backward mirrors the operation order of
PyTorch's kernels where that is cheap, so float64 results agree to the last bits where possible.

Entry contracts (`OPS.register(SpecClass)` adds one; examples/custom_layer.py shows a user's):

activation  Act(s, xp): forward(z) -> a; backward(z, a, da) -> dz.
            code: (forward template over {z}, backward template over {z}, {a}, {da}), in NumPy;
            helpers: names of script helpers the templates call (SCRIPT_HELPERS).
layer       Op(node, xp): forward(p, inputs, mask) -> (output, cache), where p maps the layer's
            parameter short names ("kernel", "bias") to arrays and mask is the step's dropout mask
            (dropout layers; None when predicting); backward(p, cache, dy, need) -> (input
            gradients, {short name: gradient}), an input's gradient None where `need` is false (no
            parameter upstream).
            Script text: forward_code(node, ins, out) -> lines computing `out` from the input
            variables `ins` (P holds the parameters, c the caches, masks the dropout masks);
            backward_code(node, d) -> (lines, one expression per input for its gradient, None for
            none) with d the output gradient's expression, writing g["<layer>/<param>"];
            helpers(node) -> script helper names.
loss        Loss(s, xp): value_and_grad(p, y) -> (L, dL/dp); code -> the body of the script's
            loss_and_grad(p, y); targets are one-hot rows for sparse cross-entropy.
"""

from __future__ import annotations

import math

from crossnn import spec
from crossnn.errors import UnsupportedFeature
from crossnn.lowering import Registry
from crossnn.spec.layers import merge_axis, window_geometry

from crossnn_numpy import normalization, sequences, windows

OPS = Registry("numpy")


def activation(s: spec.Activation, xp):
    return OPS.lookup(s)(s, xp)


def layer(node, xp):
    return OPS.lookup(node.layer)(node, xp)


def loss(s: spec.Loss, xp):
    return OPS.lookup(s)(s, xp)


# ---- activations ---------------------------------------------------------------------------------


class Act:
    code = ("{z}", "{da}")
    helpers: frozenset[str] = frozenset()

    def __init__(self, s, xp):
        self.s, self.xp = s, xp


@OPS.register(spec.Linear)
class Identity(Act):
    def forward(self, z):
        return z

    def backward(self, z, a, da):
        return da


@OPS.register(spec.Sigmoid)
class Sigmoid(Act):
    code = ("1.0 / (1.0 + np.exp(-{z}))", "{da} * (1.0 - {a}) * {a}")

    def forward(self, z):
        return self.xp.sigmoid(z)

    def backward(self, z, a, da):
        return da * (1.0 - a) * a  # PyTorch's order


@OPS.register(spec.Tanh)
class Tanh(Act):
    code = ("np.tanh({z})", "{da} * (1.0 - {a} * {a})")

    def forward(self, z):
        return self.xp.tanh(z)

    def backward(self, z, a, da):
        return da * (1.0 - a * a)


@OPS.register(spec.ReLU)
class ReLU(Act):
    code = ("np.maximum({z}, 0.0)", "np.where({z} > 0, {da}, 0.0)")

    def forward(self, z):
        return self.xp.maximum(z, 0.0)

    def backward(self, z, a, da):
        return self.xp.where(z > 0, da, 0.0)


@OPS.register(spec.LeakyReLU)
class LeakyReLU(Act):
    def __init__(self, s: spec.LeakyReLU, xp):
        super().__init__(s, xp)
        self.slope = s.negative_slope
        self.code = (f"np.where({{z}} > 0, {{z}}, {{z}} * {self.slope!r})",
                     f"np.where({{z}} > 0, {{da}}, {{da}} * {self.slope!r})")

    def forward(self, z):
        return self.xp.where(z > 0, z, z * self.slope)

    def backward(self, z, a, da):
        return self.xp.where(z > 0, da, da * self.slope)


@OPS.register(spec.Softplus)
class Softplus(Act):
    code = ("np.maximum({z}, 0.0) + np.log1p(np.exp(-np.abs({z})))", "{da} * (1.0 / (1.0 + np.exp(-{z})))")

    def forward(self, z):
        xp = self.xp
        return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))

    def backward(self, z, a, da):
        return da * self.xp.sigmoid(z)


@OPS.register(spec.Softmax)
class Softmax(Act):
    code = ("softmax({z})", "{a} * ({da} - np.sum({da} * {a}, axis=-1, keepdims=True))")
    helpers = frozenset({"softmax"})

    def forward(self, z):
        xp = self.xp
        e = xp.exp(z - xp.amax(z, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def backward(self, z, a, da):
        return a * (da - self.xp.sum(da * a, axis=-1, keepdims=True))


@OPS.register(spec.GELU)
class GELU(Act):
    """Exact: Φ via erf; tanh form: PyTorch's gelu(approximate='tanh') derivative."""

    SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
    INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

    def __init__(self, s: spec.GELU, xp):
        super().__init__(s, xp)
        self.exact = s.approximate == "none"
        if self.exact:
            self.code = ("{z} * 0.5 * (1.0 + erf({z} * math.sqrt(0.5)))",
                         "{da} * (0.5 * (1.0 + erf({z} * math.sqrt(0.5))) "
                         "+ {z} * np.exp(-0.5 * {z} * {z}) / math.sqrt(2 * math.pi))")
            self.helpers = frozenset({"erf"})
        else:
            inner = "math.sqrt(2.0 / math.pi) * ({z} + 0.044715 * {z} * {z} * {z})"
            self.code = (f"0.5 * {{z}} * (1.0 + np.tanh({inner}))",
                         f"{{da}} * (0.5 * (1.0 + np.tanh({inner})) + 0.5 * {{z}} * (1.0 - np.tanh({inner}) ** 2) * "
                         f"math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * {{z}} * {{z}}))")

    def forward(self, z):
        if self.exact:
            return z * 0.5 * (1.0 + self.xp.erf(z * math.sqrt(0.5)))
        inner = self.SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        return 0.5 * z * (1.0 + self.xp.tanh(inner))

    def backward(self, z, a, da):
        xp = self.xp
        if self.exact:
            cdf = 0.5 * (1.0 + xp.erf(z * math.sqrt(0.5)))
            pdf = xp.exp(-0.5 * z * z) * self.INV_SQRT_2PI
            return da * (cdf + z * pdf)
        inner = self.SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        t = xp.tanh(inner)
        d_inner = self.SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * z * z)
        return da * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * d_inner)


# ---- layers --------------------------------------------------------------------------------------


class Op:
    """Defaults of a layer entry: no state, no helpers, parameters named "<layer>/<short>" in the script."""

    #: a layer with state (crossnn.spec.Layer.state) is called as forward(p, inputs, mask, training), p
    #: holding its state too, and gives its new state after a training step with updated_state(p, cache)
    stateful = False

    def __init__(self, node, xp):
        self.node, self.xp = node, xp

    @staticmethod
    def helpers(node) -> frozenset[str]:
        act = getattr(node.layer, "activation", None)
        return activation(act, None).helpers if act is not None else frozenset()

    @staticmethod
    def forward_code(node, ins, out):
        raise UnsupportedFeature("numpy", f"layer '{node.layer.kind}' in a script (its entry has no script text)")

    @staticmethod
    def backward_code(node, d):
        raise UnsupportedFeature("numpy", f"layer '{node.layer.kind}' in a script (its entry has no script text)")


def _act_code(node) -> tuple[str, str]:
    return activation(node.layer.activation, None).code


def _param(node, short: str) -> str:
    return f'P["{node.name}/{short}"]'


def _grad(node, short: str) -> str:
    return f'g["{node.name}/{short}"]'


@OPS.register(spec.Dense)
class Dense(Op):
    """z = x @ W + b over the last axis, a = f(z). Gradients: dz = f'(z) ⊙ da, dW = xᵀ dz,
    db = Σ_n dz, dx = dz Wᵀ (inputs of rank > 2 are taken as rows of their last axis)."""

    def __init__(self, node, xp):
        super().__init__(node, xp)
        self.act = activation(node.layer.activation, xp)
        self.identity = isinstance(self.act, Identity)
        self.rows = len(node.input_shapes[0]) > 1

    def forward(self, p, inputs, mask=None):
        (x,) = inputs
        z = self.xp.matmul(x.reshape(-1, x.shape[-1]) if self.rows else x, p["kernel"])
        if "bias" in p:
            z = z + p["bias"]
        if self.rows:
            z = z.reshape(*x.shape[:-1], z.shape[-1])
        a = z if self.identity else self.act.forward(z)
        return a, (x, z, a)

    def backward(self, p, cache, da, need):
        x, z, a = cache
        dz = da if self.identity else self.act.backward(z, a, da)
        if self.rows:
            x, dz = x.reshape(-1, x.shape[-1]), dz.reshape(-1, dz.shape[-1])
        grads = {"kernel": self.xp.matmul(x.T, dz)}
        if "bias" in p:
            grads["bias"] = self.xp.sum(dz, axis=0)
        dx = self.xp.matmul(dz, p["kernel"].T) if need[0] else None
        return (dx.reshape(cache[0].shape) if self.rows and dx is not None else dx,), grads

    @staticmethod
    def forward_code(node, ins, out):
        f, _ = _act_code(node)
        bias = f" + {_param(node, 'bias')}" if node.layer.use_bias else ""
        return [f"z = {ins[0]} @ {_param(node, 'kernel')}{bias}", f"{out} = {f.format(z='z')}",
                f"c[{node.name!r}] = ({ins[0]}, z, {out})"]

    @staticmethod
    def backward_code(node, d):
        _, b = _act_code(node)
        x = "x_in.reshape(-1, x_in.shape[-1])" if len(node.input_shapes[0]) > 1 else "x_in"
        dz = "dz.reshape(-1, dz.shape[-1])" if len(node.input_shapes[0]) > 1 else "dz"
        lines = [f"x_in, z, a = c[{node.name!r}]", f"dz = {b.format(z='z', a='a', da=d)}",
                 f"{_grad(node, 'kernel')} = {x}.T @ {dz}"]
        if node.layer.use_bias:
            lines.append(f"{_grad(node, 'bias')} = np.sum({dz}, axis=0)")
        return lines, [f"dz @ {_param(node, 'kernel')}.T"]


@OPS.register(spec.ActivationLayer)
class ActivationLayer(Op):
    def __init__(self, node, xp):
        super().__init__(node, xp)
        self.act = activation(node.layer.activation, xp)

    def forward(self, p, inputs, mask=None):
        a = self.act.forward(inputs[0])
        return a, (inputs[0], a)

    def backward(self, p, cache, da, need):
        z, a = cache
        return (self.act.backward(z, a, da),), {}

    @staticmethod
    def forward_code(node, ins, out):
        f, _ = _act_code(node)
        return [f"{out} = {f.format(z=ins[0])}", f"c[{node.name!r}] = ({ins[0]}, {out})"]

    @staticmethod
    def backward_code(node, d):
        _, b = _act_code(node)
        return [f"z, a = c[{node.name!r}]"], [f"({b.format(z='z', a='a', da=d)})"]


@OPS.register(spec.Dropout)
class Dropout(Op):
    """y = x ⊙ m while training, with m the step's mask (0 or 1/(1 - rate), drawn by crossnn's
    StepClock); y = x when predicting (no mask). Gradient: dx = dy ⊙ m."""

    def forward(self, p, inputs, mask=None):
        return (inputs[0] if mask is None else inputs[0] * mask), mask

    def backward(self, p, mask, da, need):
        return (da if mask is None else da * mask,), {}

    @staticmethod
    def forward_code(node, ins, out):
        return [f"mask = masks[{node.name!r}] if masks else None  # inverted dropout while training",
                f"{out} = {ins[0]} if mask is None else {ins[0]} * mask", f"c[{node.name!r}] = mask"]

    @staticmethod
    def backward_code(node, d):
        key = repr(node.name)
        return [], [f"({d} if c[{key}] is None else {d} * c[{key}])"]


def _axis_slices(node) -> list[tuple]:
    """Index tuples that cut a concatenate layer's output back into its inputs."""
    index = merge_axis(node.layer.axis, len(node.shape)) + 1
    cuts, start = [], 0
    for shape in node.input_shapes:
        cuts.append((slice(None),) * index + (slice(start, start + shape[index - 1]),))
        start += shape[index - 1]
    return cuts


def _index_code(cut: tuple) -> str:
    return ", ".join(":" if s.start is None and s.stop is None else f"{s.start}:{s.stop}" for s in cut)


@OPS.register(spec.Concatenate)
class Concatenate(Op):
    """y = the inputs joined along the axis; dx_k = the k-th piece of dy."""

    def __init__(self, node, xp):
        super().__init__(node, xp)
        self.axis = merge_axis(node.layer.axis, len(node.shape)) + 1
        self.cuts = _axis_slices(node)

    def forward(self, p, inputs, mask=None):
        return self.xp.concat(inputs, axis=self.axis), None

    def backward(self, p, cache, da, need):
        return tuple(da[cut] for cut in self.cuts), {}

    @staticmethod
    def forward_code(node, ins, out):
        axis = merge_axis(node.layer.axis, len(node.shape)) + 1
        return [f"{out} = np.concatenate([{', '.join(ins)}], axis={axis})"]

    @staticmethod
    def backward_code(node, d):
        return [], [f"{d}[{_index_code(cut)}]" for cut in _axis_slices(node)]


@OPS.register(spec.Add)
class Add(Op):
    """y = Σ x_k; every input's gradient is dy."""

    def forward(self, p, inputs, mask=None):
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total, None

    def backward(self, p, cache, da, need):
        return tuple(da for _ in need), {}

    @staticmethod
    def forward_code(node, ins, out):
        return [f"{out} = {' + '.join(ins)}"]

    @staticmethod
    def backward_code(node, d):
        return [], [d for _ in node.inputs]


def _geometry(node) -> dict:
    """A conv2d or pooling layer's window on its input, as the windows functions take it."""
    g = window_geometry(node.layer, node.input_shapes[0])
    return {"window": tuple(node.layer.window_size), "strides": tuple(node.layer.strides),
            "pads": (g.top, g.bottom, g.left, g.right), "out": (g.out_h, g.out_w)}


class _Window(Op):
    def __init__(self, node, xp):
        super().__init__(node, xp)
        self.geometry = _geometry(node)


WINDOW_HELPERS = frozenset({"pad2d", "crop2d", "window_slices", "unslice", "gather_windows"})


@OPS.register(spec.Conv2D)
class Conv2D(_Window):
    """z = conv(x) + b (im2col: crossnn_numpy.windows.conv2d_forward), a = f(z)."""

    def __init__(self, node, xp):
        super().__init__(node, xp)
        self.act = activation(node.layer.activation, xp)
        self.identity = isinstance(self.act, Identity)
        g = self.geometry
        self.kw = dict(strides=g["strides"], dilation=tuple(node.layer.dilation), pads=g["pads"])

    def forward(self, p, inputs, mask=None):
        (x,) = inputs
        z, cols = windows.conv2d_forward(self.xp, x, p["kernel"], p.get("bias"), out=self.geometry["out"], **self.kw)
        a = z if self.identity else self.act.forward(z)
        return a, (x.shape, cols, z, a)

    def backward(self, p, cache, da, need):
        x_shape, cols, z, a = cache
        dz = da if self.identity else self.act.backward(z, a, da)
        dx, dkernel, dbias = windows.conv2d_backward(self.xp, dz, cols, p["kernel"], x_shape, need_dx=need[0],
                                                     **self.kw)
        return (dx,), ({"kernel": dkernel, "bias": dbias} if "bias" in p else {"kernel": dkernel})

    @staticmethod
    def helpers(node):
        return Op.helpers(node) | WINDOW_HELPERS | {"conv2d_forward", "conv2d_backward"}

    @staticmethod
    def _geometry_code(node) -> str:
        g = _geometry(node)
        return f"{g['strides']}, {tuple(node.layer.dilation)}, {g['pads']}"

    @classmethod
    def forward_code(cls, node, ins, out):
        f, _ = _act_code(node)
        bias = _param(node, "bias") if node.layer.use_bias else "None"
        return [f"z, cols = conv2d_forward(np, {ins[0]}, {_param(node, 'kernel')}, {bias}, "
                f"{cls._geometry_code(node)}, {_geometry(node)['out']})",
                f"{out} = {f.format(z='z')}", f"c[{node.name!r}] = ({ins[0]}.shape, cols, z, {out})"]

    @classmethod
    def backward_code(cls, node, d):
        _, b = _act_code(node)
        bias = _grad(node, "bias") if node.layer.use_bias else "_"
        return [f"x_shape, cols, z, a = c[{node.name!r}]", f"dz = {b.format(z='z', a='a', da=d)}",
                f"dx, {_grad(node, 'kernel')}, {bias} = conv2d_backward(np, dz, cols, {_param(node, 'kernel')}, "
                f"x_shape, {cls._geometry_code(node)})"], ["dx"]


@OPS.register(spec.MaxPool2D)
class MaxPool2D(_Window):
    """y = the largest value of each window; its gradient goes to the first largest element."""

    def forward(self, p, inputs, mask=None):
        g = self.geometry
        y, first = windows.max_pool_forward(self.xp, inputs[0], g["window"], g["strides"], g["pads"], g["out"])
        return y, (inputs[0].shape, first)

    def backward(self, p, cache, dy, need):
        x_shape, first = cache
        g = self.geometry
        return (windows.max_pool_backward(self.xp, dy, first, x_shape, g["window"], g["strides"], g["pads"]),), {}

    @staticmethod
    def helpers(node):
        return WINDOW_HELPERS | {"max_pool_forward", "max_pool_backward"}

    @staticmethod
    def forward_code(node, ins, out):
        g = _geometry(node)
        return [f"{out}, first = max_pool_forward(np, {ins[0]}, {g['window']}, {g['strides']}, {g['pads']}, "
                f"{g['out']})", f"c[{node.name!r}] = ({ins[0]}.shape, first)"]

    @staticmethod
    def backward_code(node, d):
        g = _geometry(node)
        return [f"x_shape, first = c[{node.name!r}]"], [
            f"max_pool_backward(np, {d}, first, x_shape, {g['window']}, {g['strides']}, {g['pads']})"]


@OPS.register(spec.AvgPool2D)
class AvgPool2D(_Window):
    """y = window sum / divisor (kh·kw, or the positions inside the input without count_padding)."""

    def forward(self, p, inputs, mask=None):
        g, x = self.geometry, inputs[0]
        divisor = windows.avg_pool_divisor(self.xp, x, g["window"], g["strides"], g["pads"], g["out"],
                                           self.node.layer.count_padding)
        return windows.avg_pool_forward(self.xp, x, g["window"], g["strides"], g["pads"], g["out"], divisor), \
            (x.shape, divisor)

    def backward(self, p, cache, dy, need):
        x_shape, divisor = cache
        g = self.geometry
        return (windows.avg_pool_backward(self.xp, dy, x_shape, g["window"], g["strides"], g["pads"], divisor),), {}

    @staticmethod
    def helpers(node):
        return WINDOW_HELPERS | {"avg_pool_divisor", "avg_pool_forward", "avg_pool_backward"}

    @staticmethod
    def forward_code(node, ins, out):
        g = _geometry(node)
        geometry = f"{g['window']}, {g['strides']}, {g['pads']}"
        return [f"divisor = avg_pool_divisor(np, {ins[0]}, {geometry}, {g['out']}, {node.layer.count_padding})",
                f"{out} = avg_pool_forward(np, {ins[0]}, {geometry}, {g['out']}, divisor)",
                f"c[{node.name!r}] = ({ins[0]}.shape, divisor)"]

    @staticmethod
    def backward_code(node, d):
        g = _geometry(node)
        return [f"x_shape, divisor = c[{node.name!r}]"], [
            f"avg_pool_backward(np, {d}, x_shape, {g['window']}, {g['strides']}, {g['pads']}, divisor)"]


@OPS.register(spec.GlobalAvgPool2D)
class GlobalAvgPool2D(Op):
    """y[n, c] = mean over (H, W); dx = dy / (H·W) at every position."""

    def forward(self, p, inputs, mask=None):
        return self.xp.mean(inputs[0], axis=(1, 2)), inputs[0]

    def backward(self, p, x, dy, need):
        h, w = x.shape[1:3]
        return (self.xp.zeros_like(x) + (dy * (1.0 / (h * w)))[:, None, None, :],), {}

    @staticmethod
    def forward_code(node, ins, out):
        return [f"{out} = np.mean({ins[0]}, axis=(1, 2))", f"c[{node.name!r}] = {ins[0]}.shape"]

    @staticmethod
    def backward_code(node, d):
        h, w, _ = node.input_shapes[0]
        return [], [f"np.zeros(c[{node.name!r}]) + ({d} * (1.0 / {h * w}))[:, None, None, :]"]


@OPS.register(spec.Flatten, spec.Reshape)
class Reshaping(Op):
    """flatten and reshape: y = x reshaped to the node's shape, row-major over the canonical layout
    ((H, W, C) images flatten channel-fastest); dx = dy reshaped back."""

    def forward(self, p, inputs, mask=None):
        return inputs[0].reshape(-1, *self.node.shape), None

    def backward(self, p, cache, dy, need):
        return (dy.reshape(-1, *self.node.input_shapes[0]),), {}

    @staticmethod
    def forward_code(node, ins, out):
        return [f"{out} = {ins[0]}.reshape(-1, {', '.join(str(n) for n in node.shape)})"]

    @staticmethod
    def backward_code(node, d):
        return [], [f"{d}.reshape(-1, {', '.join(str(n) for n in node.input_shapes[0])})"]



# ---- normalization --------------------------------------------------------------------------------


def _norm_geometry(node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(axes a statistic is taken over, the shape that broadcasts a per-channel vector against x)."""
    rank = len(node.shape) + 1
    keep = merge_axis(node.layer.axis, len(node.shape)) + 1
    shape = tuple(node.shape[keep - 1] if i == keep else 1 for i in range(rank))
    if isinstance(node.layer, spec.LayerNorm):
        return (keep,), shape
    return tuple(i for i in range(rank) if i != keep), shape


NORM_HELPERS = frozenset({"normalize_forward", "normalize_backward", "_count"})


@OPS.register(spec.BatchNorm)
class BatchNorm(Op):
    """Training: normalize with the batch's statistics (crossnn_numpy.normalization) and move the
    moving statistics; predicting: normalize with the moving statistics."""

    stateful = True

    def __init__(self, node, xp):
        super().__init__(node, xp)
        self.reduce, self.shape = _norm_geometry(node)

    def forward(self, p, inputs, mask, training):
        (x,) = inputs
        s = self.node.layer
        if not training:
            return normalization.batch_norm_inference(x, p.get("gamma"), p.get("beta"), p["moving_mean"],
                                                      p["moving_variance"], self.shape, s.epsilon, self.xp), None
        y, xhat, inv, mean, var = normalization.normalize_forward(self.xp, x, p.get("gamma"), p.get("beta"),
                                                                  self.reduce, self.shape, s.epsilon)
        count = math.prod(x.shape) // math.prod(self.shape)
        return y, (xhat, inv, mean, var, count)

    def updated_state(self, p, cache):
        _, _, mean, var, count = cache
        s = self.node.layer
        mm, mv = normalization.batch_norm_moving(mean, var, p["moving_mean"], p["moving_variance"], s.momentum,
                                                 count, s.running_variance == "unbiased")
        return {"moving_mean": mm, "moving_variance": mv}

    def backward(self, p, cache, dy, need):
        xhat, inv, _, _, _ = cache
        dx, dgamma, dbeta = normalization.normalize_backward(self.xp, dy, xhat, inv, p.get("gamma"), self.reduce,
                                                             self.shape)
        grads = {}
        if "gamma" in p:
            grads["gamma"] = dgamma
        if "beta" in p:
            grads["beta"] = dbeta
        return (dx,), grads

    @staticmethod
    def helpers(node):
        return NORM_HELPERS | {"batch_norm_moving", "batch_norm_inference"}

    @staticmethod
    def forward_code(node, ins, out):
        s, key = node.layer, repr(node.name)
        reduce, shape = _norm_geometry(node)
        gamma = _param(node, "gamma") if s.scale else "None"
        beta = _param(node, "beta") if s.center else "None"
        unbiased = s.running_variance == "unbiased"
        return ["if not training:  # predicting: the moving statistics",
                f"    {out} = batch_norm_inference({ins[0]}, {gamma}, {beta}, {_param(node, 'moving_mean')}, "
                f"{_param(node, 'moving_variance')}, {shape}, {s.epsilon!r}, np)",
                "else:  # training: the batch's statistics, and the moving ones move",
                f"    {out}, xhat, inv, mean, var = normalize_forward(np, {ins[0]}, {gamma}, {beta}, {reduce}, "
                f"{shape}, {s.epsilon!r})",
                f"    c[{key}] = (xhat, inv)",
                f'    c["state"]["{node.name}/moving_mean"], c["state"]["{node.name}/moving_variance"] = '
                f"batch_norm_moving(mean, var, {_param(node, 'moving_mean')}, {_param(node, 'moving_variance')}, "
                f"{s.momentum!r}, {ins[0]}.size // {math.prod(shape)}, {unbiased})"]

    @staticmethod
    def backward_code(node, d):
        s = node.layer
        reduce, shape = _norm_geometry(node)
        gamma = _param(node, "gamma") if s.scale else "None"
        dgamma = _grad(node, "gamma") if s.scale else "_"
        dbeta = _grad(node, "beta") if s.center else "_"
        return [f"xhat, inv = c[{node.name!r}]",
                f"dx, {dgamma}, {dbeta} = normalize_backward(np, {d}, xhat, inv, {gamma}, {reduce}, {shape})"], ["dx"]


@OPS.register(spec.LayerNorm)
class LayerNorm(Op):
    """Each sample normalized over its axis (crossnn_numpy.normalization), in training and predicting."""

    def __init__(self, node, xp):
        super().__init__(node, xp)
        self.reduce, self.shape = _norm_geometry(node)

    def forward(self, p, inputs, mask=None):
        y, xhat, inv, _, _ = normalization.normalize_forward(self.xp, inputs[0], p.get("gamma"), p.get("beta"),
                                                             self.reduce, self.shape, self.node.layer.epsilon)
        return y, (xhat, inv)

    def backward(self, p, cache, dy, need):
        xhat, inv = cache
        dx, _, _ = normalization.normalize_backward(self.xp, dy, xhat, inv, p.get("gamma"), self.reduce, self.shape)
        rows = tuple(i for i in range(len(dy.shape)) if i not in self.reduce)
        grads = {}
        if "gamma" in p:
            grads["gamma"] = self.xp.sum(dy * xhat, axis=rows)
        if "beta" in p:
            grads["beta"] = self.xp.sum(dy, axis=rows)
        return (dx,), grads

    @staticmethod
    def helpers(node):
        return NORM_HELPERS

    @staticmethod
    def forward_code(node, ins, out):
        s = node.layer
        reduce, shape = _norm_geometry(node)
        gamma = _param(node, "gamma") if s.scale else "None"
        beta = _param(node, "beta") if s.center else "None"
        return [f"{out}, xhat, inv, _, _ = normalize_forward(np, {ins[0]}, {gamma}, {beta}, {reduce}, {shape}, "
                f"{s.epsilon!r})", f"c[{node.name!r}] = (xhat, inv)"]

    @staticmethod
    def backward_code(node, d):
        s = node.layer
        reduce, shape = _norm_geometry(node)
        rows = tuple(i for i in range(len(node.shape) + 1) if i not in reduce)
        gamma = _param(node, "gamma") if s.scale else "None"
        lines = [f"xhat, inv = c[{node.name!r}]",
                 f"dx, _, _ = normalize_backward(np, {d}, xhat, inv, {gamma}, {reduce}, {shape})"]
        if s.scale:
            lines.append(f"{_grad(node, 'gamma')} = np.sum({d} * xhat, axis={rows})")
        if s.center:
            lines.append(f"{_grad(node, 'beta')} = np.sum({d}, axis={rows})")
        return lines, ["dx"]


# ---- sequences ------------------------------------------------------------------------------------


@OPS.register(spec.Embedding)
class Embedding(Op):
    """y = embeddings[ids]; d embeddings = the rows' gradients summed per id (crossnn_numpy.sequences)."""

    def forward(self, p, inputs, mask=None):
        ids = self.xp.as_index(inputs[0])
        return sequences.embedding_forward(self.xp, ids, p["embeddings"]), ids

    def backward(self, p, ids, dy, need):
        return (None,), {"embeddings": sequences.embedding_backward(self.xp, ids, p["embeddings"], dy)}

    @staticmethod
    def forward_code(node, ins, out):
        return [f"ids = {ins[0]}.astype(np.int64)  # the ids, stored as numbers in the data",
                f"{out} = {_param(node, 'embeddings')}[ids]", f"c[{node.name!r}] = ids"]

    @staticmethod
    def backward_code(node, d):
        table = _param(node, "embeddings")
        return [f"{_grad(node, 'embeddings')} = np.zeros_like({table})",
                f"np.add.at({_grad(node, 'embeddings')}, c[{node.name!r}].reshape(-1), "
                f"{d}.reshape(-1, {table}.shape[1]))  # each id's rows summed"], [None]


class _Recurrent(Op):
    """A recurrent layer through crossnn_numpy.sequences: the forward pass keeps every step, the backward
    pass runs through time."""

    def __init__(self, node, xp):
        super().__init__(node, xp)
        s = node.layer
        self.act = activation(s.activation, xp)
        self.rec = activation(s.recurrent_activation, xp) if hasattr(s, "recurrent_activation") else None

    def args(self) -> tuple:
        return (self.act,) if self.rec is None else (self.act, self.rec)

    def options(self) -> dict:
        return {}

    def forward(self, p, inputs, mask=None):
        return self.forward_fn(self.xp, inputs[0], p["kernel"], p["recurrent_kernel"], p["bias"], *self.args(),
                               self.node.layer.return_sequences, **self.options())

    def backward(self, p, cache, dy, need):
        dx, dk, dr, db = self.backward_fn(self.xp, dy, cache, p["kernel"], p["recurrent_kernel"], *self.args(),
                                          self.node.layer.return_sequences, **self.options(), need_dx=need[0])
        return (dx,), {"kernel": dk, "recurrent_kernel": dr, "bias": db}

    @classmethod
    def helpers(cls, node):
        s = node.layer
        acts = [s.activation] + ([s.recurrent_activation] if hasattr(s, "recurrent_activation") else [])
        return frozenset({cls.forward_fn.__name__, cls.backward_fn.__name__, "_steps_of", "_sequence",
                          "Activation"}).union(*(activation(a, None).helpers for a in acts))

    @classmethod
    def _script_args(cls, node) -> str:
        s = node.layer
        acts = [f"Activation({_act_code_of(s.activation)})"]
        if hasattr(s, "recurrent_activation"):
            acts.append(f"Activation({_act_code_of(s.recurrent_activation)})")
        extra = f", reset_after={s.reset_after}" if isinstance(s, spec.GRU) else ""
        return f"{', '.join(acts)}, {s.return_sequences}{extra}"

    @classmethod
    def forward_code(cls, node, ins, out):
        params = ", ".join(_param(node, n) for n in ("kernel", "recurrent_kernel", "bias"))
        return [f"{out}, c[{node.name!r}] = {cls.forward_fn.__name__}(np, {ins[0]}, {params}, "
                f"{cls._script_args(node)})"]

    @classmethod
    def backward_code(cls, node, d):
        grads = ", ".join(_grad(node, n) for n in ("kernel", "recurrent_kernel", "bias"))
        return [f"dx, {grads} = {cls.backward_fn.__name__}(np, {d}, c[{node.name!r}], {_param(node, 'kernel')}, "
                f"{_param(node, 'recurrent_kernel')}, {cls._script_args(node)})"], ["dx"]


def _act_code_of(act: spec.Activation) -> str:
    """An activation's (forward, backward) templates as lambdas for the script's Activation helper."""
    f, b = activation(act, None).code
    return (f"lambda z: {f.format(z='z')}, "
            f"lambda z, a, da: {b.format(z='z', a='a', da='da')}")


@OPS.register(spec.SimpleRNN)
class SimpleRNN(_Recurrent):
    forward_fn = staticmethod(sequences.rnn_forward)
    backward_fn = staticmethod(sequences.rnn_backward)


@OPS.register(spec.LSTM)
class LSTM(_Recurrent):
    forward_fn = staticmethod(sequences.lstm_forward)
    backward_fn = staticmethod(sequences.lstm_backward)


@OPS.register(spec.GRU)
class GRU(_Recurrent):
    forward_fn = staticmethod(sequences.gru_forward)
    backward_fn = staticmethod(sequences.gru_backward)

    def options(self):
        return {"reset_after": self.node.layer.reset_after}


# ---- losses: value_and_grad(p, y) -> (L, dL/dp) ------------------------------------------------------


class LossOp:
    def __init__(self, s, xp):
        self.s, self.xp = s, xp


@OPS.register(spec.MSE)
class MSE(LossOp):
    code = "d = p - y\nreturn np.mean(d * d), (2.0 / d.size) * d"

    def value_and_grad(self, p, y):
        d = p - y
        return self.xp.mean(d * d), (2.0 / math.prod(d.shape)) * d


@OPS.register(spec.MAE)
class MAE(LossOp):
    code = "d = p - y\nreturn np.mean(np.abs(d)), np.sign(d) * (1.0 / d.size)"

    def value_and_grad(self, p, y):
        d = p - y
        return self.xp.mean(self.xp.abs(d)), self.xp.sign(d) * (1.0 / math.prod(d.shape))


@OPS.register(spec.Huber)
class Huber(LossOp):
    def value_and_grad(self, p, y):
        xp, delta = self.xp, self.s.delta
        d = p - y
        ad = xp.abs(d)
        value = xp.mean(xp.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta)))
        return value, xp.clip(d, -delta, delta) * (1.0 / math.prod(d.shape))

    @property
    def code(self):
        return (f"d, delta = p - y, {self.s.delta!r}\nad = np.abs(d)\n"
                "value = np.mean(np.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta)))\n"
                "return value, np.clip(d, -delta, delta) * (1.0 / d.size)")


@OPS.register(spec.BCE)
class BCE(LossOp):
    def value_and_grad(self, p, y):
        xp, log_min = self.xp, self.s.log_min
        log_p = xp.maximum(xp.log(p), log_min)
        log_q = xp.maximum(xp.log1p(-p), log_min)
        value = xp.mean((y - 1.0) * log_q - y * log_p)
        grad = (p - y) / xp.maximum((1.0 - p) * p, spec.BCE.grad_floor) * (1.0 / math.prod(p.shape))
        return value, grad

    @property
    def code(self):
        return (f"log_p = np.maximum(np.log(p), {self.s.log_min!r})  # the log clamp\n"
                f"log_q = np.maximum(np.log1p(-p), {self.s.log_min!r})\n"
                "value = np.mean((y - 1.0) * log_q - y * log_p)\n"
                f"floor = {spec.BCE.grad_floor!r}  # float32(1e-12), as torch's BCELoss floors p (1 - p)\n"
                "return value, (p - y) / np.maximum((1.0 - p) * p, floor) * (1.0 / p.size)")


@OPS.register(spec.BCELogits)
class BCELogits(LossOp):
    code = ("value = np.mean(np.maximum(p, 0.0) - p * y + np.log1p(np.exp(-np.abs(p))))\n"
            "return value, (1.0 / (1.0 + np.exp(-p)) - y) * (1.0 / p.size)")

    def value_and_grad(self, z, y):
        xp = self.xp
        value = xp.mean(xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z))))
        return value, (xp.sigmoid(z) - y) * (1.0 / math.prod(z.shape))


@OPS.register(spec.CrossEntropy)
class CrossEntropy(LossOp):
    """A mean over the rows (every position but the last axis) of the sum over the classes (last
    axis). y arrives one-hot (sparse labels are expanded once, when the data is loaded)."""

    def value_and_grad(self, p, y):
        xp = self.xp
        n = math.prod(p.shape[:-1])
        if self.s.from_logits:
            shifted = p - xp.amax(p, axis=-1, keepdims=True)
            e = xp.exp(shifted)
            total = xp.sum(e, axis=-1, keepdims=True)
            log_softmax = shifted - xp.log(total)
            value = -xp.sum(y * log_softmax) / n
            return value, (e / total - y) * (1.0 / n)
        log_p = xp.log(p)
        active = log_p > self.s.log_min
        value = -xp.sum(y * xp.where(active, log_p, self.s.log_min)) / n
        grad = xp.where(active, -y / xp.where(active, p, 1.0), 0.0) * (1.0 / n)
        return value, grad

    @property
    def code(self):
        rows = "n = p.size // p.shape[-1]  # rows: every position but the class axis\n"
        if self.s.from_logits:
            return (rows + "shifted = p - np.max(p, axis=-1, keepdims=True)\ne = np.exp(shifted)\n"
                    "total = np.sum(e, axis=-1, keepdims=True)\n"
                    "value = -np.sum(y * (shifted - np.log(total))) / n\n"
                    "return value, (e / total - y) * (1.0 / n)")
        return (rows + f"log_p = np.log(p)\nactive = log_p > {self.s.log_min!r}\n"
                f"value = -np.sum(y * np.where(active, log_p, {self.s.log_min!r})) / n\n"
                "return value, np.where(active, -y / np.where(active, p, 1.0), 0.0) * (1.0 / n)")


from crossnn_numpy import optimizers  # noqa: E402,F401  (registers the optimizer rules in OPS)
