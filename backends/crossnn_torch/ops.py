"""The PyTorch backend's lowering registry: one entry per activation, layer, loss and optimizer rule
(rules: crossnn_torch.optimizers), each describing the torch modules that compute it. A module is
described ONCE, as a `Mod` (class, arguments): the trainer builds it, the emitted script writes the
same call (crossnn_torch.script), so the two cannot drift apart; crossnn's own small modules (below)
travel into scripts as their source.

Layout. torch computes images as (N, C, H, W); crossnn's canonical layout is channels-last. Inside
the model a node of rank 3 (H, W, C) is an NCHW tensor, every other node has its canonical layout.
The conversions happen at the boundary only: the trainer permutes x to NCHW once when it loads the
data, and dropout masks when it sets them; layers that depend on the order (flatten, reshape, dense
on an image, concatenate's axis, softmax's axis) handle it in their modules; a 4-D model output is
permuted back to channels-last (`ChannelsLast`) before the loss. Parameters are kept in torch's
layout (nn.Linear weight (out, in), nn.Conv2d weight (out, in, kh, kw)); a `Permuted` layout says how
each maps to the canonical one, for loading, checkpoints and scripts.

'same' padding is crossnn's (TensorFlow's) rule from crossnn.spec.layers.window_geometry: symmetric
padding goes into nn.Conv2d / nn.MaxPool2d / nn.AvgPool2d(padding=(ph, pw)); an asymmetric one (the
extra row or column after) is an nn.ZeroPad2d (nn.ConstantPad2d with -inf for max pooling) before the
window (nn.Conv2d(padding='same') refuses stride > 1 and puts the extra pixel first).

Entry contracts (`OPS.register(SpecClass)` adds one; examples/custom_layer.py shows a user's):

activation  act(s, native, dim) -> Mod: the activation's module; dim is the tensor axis of the
            canonical last axis (1 for NCHW images, -1 otherwise), for softmax.
layer       a class with modules(node, native) -> [Mod, ...], the modules in call order (taking the
            layer's inputs in torch layout, returning its output in torch layout; merge layers take
            several inputs), and params(node) -> {short name: Param(module index, attribute, layout)}
            saying where each canonical parameter lives (LayerOp has the defaults).
loss        loss(s, native, shape) -> LossMod(mod, class_indices): the loss module, called as
            mod(output, targets) on the canonical output of `shape` (batch excluded), and whether its
            sparse targets stay class indices (else one-hot rows).
rule        rule(s, native) -> Rule(torch.optim class, options, handles): see crossnn_torch.optimizers.
`native` is the set of native-flavour entries the run asked for (crossnn.differences).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

from crossnn import spec
from crossnn.errors import UnsupportedFeature
from crossnn.lowering import Registry
from crossnn.spec import INPUT
from crossnn.spec.layers import merge_axis, window_geometry

OPS = Registry("torch")


# ---- describing modules and parameters -----------------------------------------------------------


def literal(value) -> str:
    """Python source for an argument (infinities and NaN have no literal)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, tuple):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


class Mod(NamedTuple):
    """One nn.Module of a lowering: its class and arguments. build() makes it (modules with
    parameters, `factory`, also get dtype= and device=); code() is the same call as script source:
    nn.Conv2d(1, 8, (3, 3), stride=(1, 1), ...) for torch's classes, or the class name for crossnn's
    own (whose source the script carries)."""

    cls: type
    args: tuple = ()
    kwargs: dict[str, Any] | None = None
    factory: bool = False
    note: str = ""

    def build(self, dtype, device) -> nn.Module:
        extra = {"dtype": dtype, "device": device} if self.factory else {}
        return self.cls(*self.args, **(self.kwargs or {}), **extra)

    def code(self) -> str:
        if self.cls.__module__.startswith("torch.nn"):
            name = f"nn.{self.cls.__name__}"
        elif self.cls.__module__ == __name__:
            name = self.cls.__name__
        else:
            raise UnsupportedFeature("torch", f"module {self.cls.__qualname__} (defined outside crossnn) in a script")
        args = [literal(a) for a in self.args] + [f"{k}={literal(v)}" for k, v in (self.kwargs or {}).items()]
        return f"{name}({', '.join(args)})"


class Permuted(NamedTuple):
    """How a parameter's torch layout relates to its canonical one: native = canonical.permute(axes)
    (axes None: the same layout). nn.Linear's weight is (1, 0) of the (in, out) kernel, nn.Conv2d's
    (3, 2, 0, 1) of the (kh, kw, in, out) kernel. A layout that is no permutation (issue 15's GRU gate
    order) provides the same four methods."""

    axes: tuple[int, ...] | None = None

    @property
    def inverse(self) -> tuple[int, ...]:
        return tuple(sorted(range(len(self.axes)), key=self.axes.__getitem__))

    def native(self, canonical: torch.Tensor) -> torch.Tensor:
        return canonical if self.axes is None else canonical.permute(self.axes)

    def canonical(self, native: torch.Tensor) -> torch.Tensor:
        return native if self.axes is None else native.permute(self.inverse)

    def native_code(self, expr: str) -> str:
        return expr if self.axes is None else f"{expr}.permute{self.axes}"

    def canonical_code(self, expr: str) -> str:
        return expr if self.axes is None else f"{expr}.permute{self.inverse}"


AS_IS = Permuted()
LINEAR_WEIGHT = Permuted((1, 0))  # (in, out) kernel -> nn.Linear's (out, in)
CONV_WEIGHT = Permuted((3, 2, 0, 1))  # (kh, kw, in, out) kernel -> nn.Conv2d's (out, in, kh, kw)


class Param(NamedTuple):
    """Where a canonical parameter lives: module `module` of the layer's modules, its attribute
    `attribute`, stored in `layout`."""

    module: int
    attribute: str
    layout: Permuted = AS_IS


def image(shape) -> bool:
    """Whether a node of this canonical shape (batch excluded) is an image: an NCHW tensor in torch."""
    return len(shape) == 3


def channel_dim(shape) -> int:
    """The torch axis of the canonical last axis (channels, features, classes)."""
    return 1 if image(shape) else -1


# ---- crossnn's own modules (each self-contained: scripts carry their source) -----------------------


class SoftplusFunction(torch.autograd.Function):
    """f(z) = max(z, 0) + log1p(exp(-|z|)); df/dz = sigmoid(z) exactly (1/2 at z = 0)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.clamp_min(z, 0.0) + torch.log1p(torch.exp(-torch.abs(z)))

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * torch.sigmoid(z)


class Softplus(nn.Module):
    """log(1 + exp(z)) without nn.Softplus' switch to the identity above z = 20."""

    def forward(self, z):
        return SoftplusFunction.apply(z)


class Dropout(nn.Module):
    """Inverted dropout with crossnn's masks: y = x * mask in train mode (mask: the step's 0 or
    1/(1 - rate) per element, in the tensor's layout, set before each step), y = x in eval mode.
    nn.Dropout would draw its own masks from torch's RNG. The mask is a non-persistent buffer: it
    follows .to(), stays out of state_dict(), and torch.compile reads it as an input of the graph."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate
        self.register_buffer("mask", None, persistent=False)

    def extra_repr(self):
        return f"rate={self.rate}, masks from crossnn"

    def forward(self, x):
        if not self.training or self.mask is None:
            return x
        return x * self.mask


class ChannelsLast(nn.Module):
    """(N, C, H, W) -> (N, H, W, C): crossnn's canonical image layout (before a flatten, a dense
    layer on an image, and the model's output)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class ChannelsFirst(nn.Module):
    """(N, H, W, C) -> (N, C, H, W): back to torch's image layout."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class Concatenate(nn.Module):
    """torch.cat of the inputs along `dim`."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def extra_repr(self):
        return f"dim={self.dim}"

    def forward(self, *inputs):
        return torch.cat(inputs, dim=self.dim)


class Add(nn.Module):
    """The sum of the inputs (the join of a residual block)."""

    def forward(self, *inputs):
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        return total


class Reshape(nn.Module):
    """x reshaped to `shape` (batch excluded) in crossnn's channels-last order: an image input is
    permuted to (N, H, W, C) first, an image output back to (N, C, H, W)."""

    def __init__(self, shape, image_in, image_out):
        super().__init__()
        self.shape, self.image_in, self.image_out = tuple(shape), image_in, image_out

    def extra_repr(self):
        return f"shape={self.shape}"

    def forward(self, x):
        if self.image_in:
            x = x.permute(0, 2, 3, 1)
        x = x.reshape(x.shape[0], *self.shape)
        return x.permute(0, 3, 1, 2) if self.image_out else x


class GlobalAvgPool(nn.Module):
    """The mean over height and width: (N, C, H, W) -> (N, C). (nn.AdaptiveAvgPool2d(1) computes the
    same, but its CUDA backward is refused under torch.use_deterministic_algorithms.)"""

    def forward(self, x):
        return torch.mean(x, dim=(2, 3))


class AvgPoolInside(nn.Module):
    """Average pooling over a zero-padded input that divides each window sum by the number of the
    window's positions inside the input: TensorFlow's 'same' average pooling, which nn.AvgPool2d's
    count_include_pad=False gives only for symmetric padding. pads = (left, right, top, bottom); size
    = the input's (H, W). The window sums are avg_pool2d's with divisor_override=1."""

    def __init__(self, kernel_size, stride, pads, size, dtype=None, device=None):
        super().__init__()
        self.kernel_size, self.stride, self.pads = kernel_size, stride, pads
        ones = torch.ones(1, 1, *size, dtype=dtype, device=device)
        count = nn.functional.avg_pool2d(nn.functional.pad(ones, pads), kernel_size, stride, divisor_override=1)
        self.register_buffer("count", count, persistent=False)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pads={self.pads}"

    def forward(self, x):
        total = nn.functional.avg_pool2d(nn.functional.pad(x, self.pads), self.kernel_size, self.stride,
                                         divisor_override=1)
        return total / self.count


#: crossnn's modules a script's copy of another one needs beside it
SCRIPT_NEEDS = {Softplus: (SoftplusFunction,)}


# ---- activations: act(s, native, dim) -> Mod ------------------------------------------------------


@OPS.register(spec.Linear)
def identity(s, native, dim):
    return Mod(nn.Identity)


OPS.register(spec.Sigmoid)(lambda s, native, dim: Mod(nn.Sigmoid))
OPS.register(spec.Tanh)(lambda s, native, dim: Mod(nn.Tanh))
OPS.register(spec.ReLU)(lambda s, native, dim: Mod(nn.ReLU))
OPS.register(spec.LeakyReLU)(lambda s, native, dim: Mod(nn.LeakyReLU, kwargs={"negative_slope": s.negative_slope}))
OPS.register(spec.GELU)(lambda s, native, dim: Mod(nn.GELU, kwargs={"approximate": s.approximate}))
OPS.register(spec.Softmax)(lambda s, native, dim: Mod(nn.Softmax, kwargs={"dim": dim}))


@OPS.register(spec.Softplus)
def softplus(s, native, dim):
    """The spec's formula (Softplus above); nn.Softplus() itself with native "softplus-threshold"
    (beta 1, threshold 20: the identity above z = 20)."""
    return Mod(nn.Softplus) if "softplus-threshold" in native else Mod(Softplus)


def activation(s: spec.Activation, native=frozenset(), dim: int = -1) -> Mod:
    return OPS.lookup(s)(s, native, dim)


def _then(act: spec.Activation, native, dim) -> list[Mod]:
    """The activation's module after a layer, none for the linear activation."""
    return [] if type(act) is spec.Linear else [activation(act, native, dim)]


# ---- layers ----------------------------------------------------------------------------------------


class LayerOp:
    """Defaults of a layer entry: no parameters."""

    @staticmethod
    def modules(node, native) -> list[Mod]:
        raise NotImplementedError

    @staticmethod
    def params(node) -> dict[str, Param]:
        return {}


@OPS.register(spec.Dense)
class Dense(LayerOp):
    """nn.Linear then the activation; on an image, between ChannelsLast and ChannelsFirst (nn.Linear
    works on the last axis, the channels)."""

    @staticmethod
    def _on_image(node) -> bool:
        return image(node.input_shapes[0])

    @classmethod
    def modules(cls, node, native):
        s = node.layer
        fan_in = node.input_shapes[0][-1]
        linear = Mod(nn.Linear, (fan_in, s.units), {"bias": s.use_bias}, factory=True,
                     note=f"{node.name}: {fan_in} -> {s.units}")
        if cls._on_image(node):
            return [Mod(ChannelsLast), linear, *_then(s.activation, native, -1), Mod(ChannelsFirst)]
        return [linear, *_then(s.activation, native, -1)]

    @classmethod
    def params(cls, node):
        k = 1 if cls._on_image(node) else 0
        out = {"kernel": Param(k, "weight", LINEAR_WEIGHT)}
        if node.layer.use_bias:
            out["bias"] = Param(k, "bias")
        return out


@OPS.register(spec.ActivationLayer)
class ActivationLayer(LayerOp):
    @staticmethod
    def modules(node, native):
        return [activation(node.layer.activation, native, channel_dim(node.shape))]


@OPS.register(spec.Dropout)
class DropoutLayer(LayerOp):
    @staticmethod
    def modules(node, native):
        return [Mod(Dropout, kwargs={"rate": node.layer.rate}, note=f"{node.name}: crossnn's masks")]


def _torch_axis(axis: int, shape) -> int:
    """The torch tensor axis of a merge axis counted over the canonical tensor (batch = 0)."""
    canonical = merge_axis(axis, len(shape)) + 1
    return {1: 2, 2: 3, 3: 1}[canonical] if image(shape) else canonical


@OPS.register(spec.Concatenate)
class ConcatenateLayer(LayerOp):
    @staticmethod
    def modules(node, native):
        return [Mod(Concatenate, kwargs={"dim": _torch_axis(node.layer.axis, node.shape)})]


@OPS.register(spec.Add)
class AddLayer(LayerOp):
    @staticmethod
    def modules(node, native):
        return [Mod(Add)]


def _pads(g) -> tuple[int, int, int, int]:
    """The (left, right, top, bottom) of a window geometry: nn.functional.pad's order."""
    return (g.left, g.right, g.top, g.bottom)


@OPS.register(spec.Conv2D)
class Conv2D(LayerOp):
    """nn.Conv2d (after nn.ZeroPad2d when the padding is asymmetric), then the activation."""

    @staticmethod
    def modules(node, native):
        s = node.layer
        g = window_geometry(s, node.input_shapes[0])
        channels = node.input_shapes[0][2]
        pad = [] if g.symmetric else [Mod(nn.ZeroPad2d, (_pads(g),), note="'same': the extra row/column after")]
        conv = Mod(nn.Conv2d, (channels, s.filters, tuple(s.kernel_size)),
                   {"stride": tuple(s.strides), "padding": (g.top, g.left) if g.symmetric else (0, 0),
                    "dilation": tuple(s.dilation), "bias": s.use_bias}, factory=True,
                   note=f"{node.name}: {list(node.input_shapes[0])} -> {list(node.shape)}")
        return [*pad, conv, *_then(s.activation, native, 1)]

    @staticmethod
    def params(node):
        k = 0 if window_geometry(node.layer, node.input_shapes[0]).symmetric else 1
        out = {"kernel": Param(k, "weight", CONV_WEIGHT)}
        if node.layer.use_bias:
            out["bias"] = Param(k, "bias")
        return out


@OPS.register(spec.MaxPool2D)
class MaxPool2D(LayerOp):
    """nn.MaxPool2d (its padding counts as -inf), after nn.ConstantPad2d(-inf) when asymmetric."""

    @staticmethod
    def modules(node, native):
        s = node.layer
        g = window_geometry(s, node.input_shapes[0])
        size, stride = (tuple(s.pool_size),), {"stride": tuple(s.strides)}
        if g.symmetric:
            return [Mod(nn.MaxPool2d, size, {**stride, "padding": (g.top, g.left)}, note=node.name)]
        return [Mod(nn.ConstantPad2d, (_pads(g), -math.inf), note="'same': padding never wins"),
                Mod(nn.MaxPool2d, size, stride, note=node.name)]


@OPS.register(spec.AvgPool2D)
class AvgPool2D(LayerOp):
    """nn.AvgPool2d(count_include_pad=count_padding) for symmetric padding; asymmetric: nn.ZeroPad2d
    then nn.AvgPool2d (divides by kh·kw), or AvgPoolInside without count_padding."""

    @staticmethod
    def modules(node, native):
        s = node.layer
        g = window_geometry(s, node.input_shapes[0])
        size, stride = (tuple(s.pool_size),), {"stride": tuple(s.strides)}
        if g.symmetric:
            options = {**stride, "padding": (g.top, g.left), "count_include_pad": s.count_padding}
            return [Mod(nn.AvgPool2d, size, options, note=node.name)]
        if s.count_padding:
            return [Mod(nn.ZeroPad2d, (_pads(g),), note="'same': the extra row/column after"),
                    Mod(nn.AvgPool2d, size, stride, note=node.name)]
        return [Mod(AvgPoolInside, (*size, tuple(s.strides), _pads(g), tuple(node.input_shapes[0][:2])), factory=True,
                    note=f"{node.name}: divides by the positions inside the input")]


@OPS.register(spec.GlobalAvgPool2D)
class GlobalAvgPool2D(LayerOp):
    @staticmethod
    def modules(node, native):
        return [Mod(GlobalAvgPool, note=node.name)]


@OPS.register(spec.Flatten)
class Flatten(LayerOp):
    """nn.Flatten, after ChannelsLast on an image: crossnn flattens (H, W, C) channel-fastest, and
    nn.Flatten of the (C, H, W) tensor would feed the next layer another order."""

    @staticmethod
    def modules(node, native):
        flatten = Mod(nn.Flatten, note=f"{node.name}: {list(node.input_shapes[0])} -> {list(node.shape)}")
        return [Mod(ChannelsLast), flatten] if image(node.input_shapes[0]) else [flatten]


@OPS.register(spec.Reshape)
class ReshapeLayer(LayerOp):
    @staticmethod
    def modules(node, native):
        return [Mod(Reshape, (tuple(node.shape), image(node.input_shapes[0]), image(node.shape)), note=node.name)]


# ---- losses: loss(s, native, shape) -> LossMod ----------------------------------------------------------

#: the log clamp built into nn.BCELoss
TORCH_BCE_LOG_MIN = -100.0


class LossMod(NamedTuple):
    """A loss lowering: the module, and whether sparse targets stay class indices (else one-hot)."""

    mod: Mod
    class_indices: bool = False


class ClampedBCEFunction(torch.autograd.Function):
    """L = mean((y - 1) max(log1p(-p), log_min) - y max(log p, log_min));
    dL/dp = (p - y) / max((1 - p) p, GRAD_FLOOR) / numel, as torch computes it for its clamp of -100."""

    #: floor of p (1 - p): binary_cross_entropy_backward's float constant 1e-12 (crossnn.spec.BCE.grad_floor)
    GRAD_FLOOR = 9.999999960041972e-13

    @staticmethod
    def forward(ctx, p, y, log_min):
        ctx.save_for_backward(p, y)
        log_p = torch.clamp_min(torch.log(p), log_min)
        log_q = torch.clamp_min(torch.log1p(-p), log_min)
        return torch.mean((y - 1.0) * log_q - y * log_p)

    @staticmethod
    def backward(ctx, grad):
        p, y = ctx.saved_tensors
        d = (p - y) / torch.clamp_min((1.0 - p) * p, ClampedBCEFunction.GRAD_FLOOR) * (grad / p.numel())
        return d, None, None


# ClampedBCELoss and ProbabilityCrossEntropyLoss repeat the same small module on purpose: scripts carry
# each one's source, so neither may lean on a shared base class.
class ClampedBCELoss(nn.Module):
    """Binary cross-entropy on probabilities with the log clamp `log_min` (nn.BCELoss fixes it at -100)."""

    def __init__(self, log_min):
        super().__init__()
        self.log_min = log_min

    def extra_repr(self):
        return f"log_min={self.log_min}"

    def forward(self, p, y):
        return ClampedBCEFunction.apply(p, y, self.log_min)


class ProbabilityCrossEntropyFunction(torch.autograd.Function):
    """L = -Σ y max(log p, log_min) / rows on class probabilities p and one-hot y (classes on the last
    axis, rows = every other position); dL/dp = -y / p / rows where log p > log_min, else 0."""

    @staticmethod
    def forward(ctx, p, y, log_min):
        log_p = torch.log(p)
        active = log_p > log_min
        ctx.save_for_backward(p, y, active)
        return -torch.sum(y * torch.where(active, log_p, log_min)) / (p.numel() // p.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        p, y, active = ctx.saved_tensors
        d = torch.where(active, -y / torch.where(active, p, 1.0), 0.0) * (grad / (p.numel() // p.shape[-1]))
        return d, None, None


class ProbabilityCrossEntropyLoss(nn.Module):
    """Categorical cross-entropy on probabilities (nn.CrossEntropyLoss wants logits), log clamped."""

    def __init__(self, log_min):
        super().__init__()
        self.log_min = log_min

    def extra_repr(self):
        return f"log_min={self.log_min}"

    def forward(self, p, y):
        return ProbabilityCrossEntropyFunction.apply(p, y, self.log_min)


class ClassesLastCrossEntropyLoss(nn.CrossEntropyLoss):
    """nn.CrossEntropyLoss on (N, ..., classes) logits and one-hot targets: torch wants the classes
    at axis 1."""

    def forward(self, z, y):
        return super().forward(z.movedim(-1, 1), y.movedim(-1, 1))


SCRIPT_NEEDS.update({ClampedBCELoss: (ClampedBCEFunction,),
                     ProbabilityCrossEntropyLoss: (ProbabilityCrossEntropyFunction,)})

OPS.register(spec.MSE)(lambda s, native, shape: LossMod(Mod(nn.MSELoss)))
OPS.register(spec.MAE)(lambda s, native, shape: LossMod(Mod(nn.L1Loss)))
OPS.register(spec.Huber)(lambda s, native, shape: LossMod(Mod(nn.HuberLoss, kwargs={"delta": s.delta})))
OPS.register(spec.BCELogits)(lambda s, native, shape: LossMod(Mod(nn.BCEWithLogitsLoss,
                                                                  note="sigmoid and BCE in one, on the logits")))


@OPS.register(spec.BCE)
def bce(s, native, shape):
    """nn.BCELoss where its clamp of -100 is the spec's (or with native "bce-clamp"), else ClampedBCELoss."""
    if s.log_min == TORCH_BCE_LOG_MIN or "bce-clamp" in native:
        return LossMod(Mod(nn.BCELoss, note="clamps log p and log(1 - p) at -100"))
    return LossMod(Mod(ClampedBCELoss, kwargs={"log_min": s.log_min},
                       note=f"nn.BCELoss clamps the logs at -100, the spec at {s.log_min!r}"))


@OPS.register(spec.CrossEntropy)
def cross_entropy(s, native, shape):
    """nn.CrossEntropyLoss on logits (or on anything with native "cross-entropy-inputs": softmax
    probabilities included, the classic double softmax), class-index targets when sparse;
    ProbabilityCrossEntropyLoss on probabilities."""
    if s.from_logits or "cross-entropy-inputs" in native:
        if len(shape) > 1:
            return LossMod(Mod(ClassesLastCrossEntropyLoss, note="classes on the last axis"))
        return LossMod(Mod(nn.CrossEntropyLoss, note="log-softmax and NLL in one, on the logits"), s.sparse)
    return LossMod(Mod(ProbabilityCrossEntropyLoss, kwargs={"log_min": s.log_min},
                       note="-log p on probabilities, clamped"))


def loss(s: spec.Loss, native=frozenset(), shape=(1,)) -> LossMod:
    return OPS.lookup(s)(s, native, tuple(shape))


# ---- the model: the entries' modules assembled ------------------------------------------------------


class Slot(NamedTuple):
    """Where a canonical parameter lives in a built model: the nn.Parameter and its layout."""

    parameter: nn.Parameter
    layout: Permuted


class GraphNet(nn.Module):
    """A model graph: one submodule per layer, named after it; forward() evaluates the layers in
    dependency order, each on the outputs of the layers it names."""

    def __init__(self, layers: list[tuple[str, tuple[str, ...], nn.Module]], output: str, last: nn.Module | None):
        """layers: (name, input names, module) in dependency order; output: the output layer; last: a
        module applied to the output (the permutation back to channels-last), or None."""
        super().__init__()
        self.output = output
        self.wiring: list[tuple[str, str, tuple[str, ...]]] = []  # (attribute, layer, inputs)
        for name, inputs, module in layers:
            attribute = self.attribute_for(name)
            self.add_module(attribute, module)
            self.wiring.append((attribute, name, inputs))
        self.last = last

    def attribute_for(self, name: str) -> str:
        """The layer name, made a legal and unused submodule name ('.' is not allowed)."""
        attribute = name.replace(".", "_")
        while hasattr(self, attribute) or attribute == "last":
            attribute += "_"
        return attribute

    def forward(self, x):
        outputs = {INPUT: x}
        for attribute, name, inputs in self.wiring:
            outputs[name] = getattr(self, attribute)(*(outputs[i] for i in inputs))
        out = outputs[self.output]
        return out if self.last is None else self.last(out)


def is_chain(model: spec.Model) -> bool:
    """Every layer reads the one before it (the first reads the input) and the last is the output."""
    previous = INPUT
    for node in model.nodes:
        if node.inputs != (previous,):
            return False
        previous = node.name
    return previous == model.layers[-1].name


def layer_mods(model: spec.Model, native=frozenset()) -> list[tuple[Any, list[Mod], dict[str, Param]]]:
    """(node, its modules, its parameters' places) of every layer, in graph order."""
    out = []
    for node in model.nodes:
        entry = OPS.lookup(node.layer)
        out.append((node, entry.modules(node, native), entry.params(node)))
    return out


class Built(NamedTuple):
    """A lowered model: the nn.Module, the slot of every canonical parameter (canonical order) and
    the Dropout module of every dropout layer (by layer name)."""

    module: nn.Module
    slots: dict[str, Slot]
    dropouts: dict[str, Dropout]


def build_model(model: spec.Model, *, dtype, device, native=frozenset()) -> Built:
    """The nn.Module for `model`: an nn.Sequential for a chain, else a GraphNet; ChannelsLast at the
    end when the output is an image."""
    slots: dict[str, Slot] = {}
    dropouts: dict[str, Dropout] = {}
    per_layer = []
    for node, mods, params in layer_mods(model, native):
        modules = [m.build(dtype, device) for m in mods]
        per_layer.append((node, modules))
        for short, where in params.items():
            parameter = getattr(modules[where.module], where.attribute, None)
            if not isinstance(parameter, nn.Parameter):
                raise UnsupportedFeature("torch", f"layer '{node.name}' ({node.layer.kind}): its module has no "
                                                  f"nn.Parameter '{where.attribute}' for '{short}'")
            slots[f"{node.name}/{short}"] = Slot(parameter, where.layout)
        dropouts.update({node.name: m for m in modules if isinstance(m, Dropout)})
    last = ChannelsLast() if image(model.output_shape) else None
    if is_chain(model):
        net: nn.Module = nn.Sequential(*(m for _, modules in per_layer for m in modules), *([last] if last else []))
    else:
        net = GraphNet([(node.name, node.inputs, modules[0] if len(modules) == 1 else nn.Sequential(*modules))
                        for node, modules in per_layer], model.layers[-1].name, last)
    return Built(net, {name: slots[name] for name in model.parameter_inits()}, dropouts)


from crossnn_torch import optimizers  # noqa: E402,F401  (registers the optimizer rules in OPS)
