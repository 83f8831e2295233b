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
layout (nn.Linear weight (out, in), nn.Conv2d weight (out, in, kh, kw), nn.LSTM's weight_ih_l0 (4u, in));
a layout (`Permuted`, `Gates`) says how each maps to the canonical one, for loading, checkpoints and
scripts. A model whose input feeds layers that read integer ids (embedding) gets x as int64 ids.

The recurrent layers are nn.RNN / nn.LSTM / nn.GRU (batch_first, one layer) wherever those compute
the spec's formula (tanh and sigmoid; GRU with reset_after), followed by `RecurrentOutput` (torch's
modules return (output, state) tuples); other activations and GRU's reset-before form are crossnn's
`Recurrent`, the same cell written with torch ops and a loop over time, with torch's parameter names
and gate order. The canonical single bias of simple_rnn, lstm and the reset-before gru is torch's
bias_ih_l0 + bias_hh_l0: bias_ih_l0 holds it and bias_hh_l0 is held at 0, frozen (requires_grad
False), so the sum trains as one bias (two trained biases would take two optimizer steps).

'same' padding is crossnn's (TensorFlow's) rule from crossnn.spec.layers.window_geometry: symmetric
padding goes into nn.Conv2d / nn.MaxPool2d / nn.AvgPool2d(padding=(ph, pw)); an asymmetric one (the
extra row or column after) is an nn.ZeroPad2d (nn.ConstantPad2d with -inf for max pooling) before the
window (nn.Conv2d(padding='same') refuses stride > 1 and puts the extra pixel first).

Entry contracts (`OPS.register(SpecClass)` adds one; examples/custom_layer.py shows a user's):

activation  act(s, native, dim) -> Mod: the activation's module; dim is the tensor axis of the
            canonical last axis (1 for NCHW images, -1 otherwise), for softmax.
layer       a class with modules(node, native) -> [Mod, ...], the modules in call order (taking the
            layer's inputs in torch layout, returning its output in torch layout; merge layers take
            several inputs), params(node) -> {short name: Param(module index, attribute, layout)}
            saying where each canonical parameter lives, and state(node) -> the same for the layer's
            state (crossnn.spec.Layer.state: BatchNorm's moving statistics, torch buffers) (LayerOp
            has the defaults). A module with state updates it in train mode (the training step) and
            reads it in eval mode (predict).
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
    if isinstance(value, Mod):
        return value.code()
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
        kwargs = {k: v.build(dtype, device) if isinstance(v, Mod) else v for k, v in (self.kwargs or {}).items()}
        return self.cls(*self.args, **kwargs, **extra)

    def nested(self) -> list[Mod]:
        """This Mod and the Mods among its arguments (a recurrent cell's activation modules)."""
        return [self, *(m for v in (self.kwargs or {}).values() if isinstance(v, Mod) for m in v.nested())]

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


class Gates(NamedTuple):
    """How a recurrent layer's canonical parameter (Keras' layout: the gates' blocks side by side along
    the last axis, in the spec's gate order) relates to PyTorch's:

    order      native gate block k is canonical block order[k]: GRU (1, 0, 2), torch's r, z, n being
               the canonical z, r, h's blocks 1, 0, 2; LSTM (0, 1, 2, 3), i, f, g, o in both
    transpose  kernel (in, G·u) -> weight_ih_l0 (G·u, in), recurrent_kernel (u, G·u) -> weight_hh_l0
    split      None: one tensor. "rows": the (2, G·u) bias of a GRU with reset_after, row 0 ->
               bias_ih_l0, row 1 -> bias_hh_l0. "sum": the one canonical (G·u,) bias is bias_ih_l0 +
               bias_hh_l0; it is loaded as (bias, 0) and bias_hh_l0 is frozen (the `frozen` parts),
               so the sum trains as one bias.

    native(canonical) gives a tensor, or a tuple of the split parts; canonical(native) takes the same;
    native_code / canonical_code are the same conversions as script source (None: a part that is zeros)."""

    order: tuple[int, ...]
    transpose: bool = False
    split: str | None = None

    @property
    def frozen(self) -> tuple[bool, ...]:
        """Per native part: held constant (requires_grad False)."""
        return {None: (False,), "rows": (False, False), "sum": (False, True)}[self.split]

    @property
    def inverse(self) -> tuple[int, ...]:
        return tuple(sorted(range(len(self.order)), key=self.order.__getitem__))

    @staticmethod
    def _blocks(tensor: torch.Tensor, order) -> torch.Tensor:
        """The gate blocks of the last axis in `order`."""
        if list(order) == sorted(order):
            return tensor
        return tensor.unflatten(-1, (len(order), -1))[..., list(order), :].flatten(-2)

    @staticmethod
    def _blocks_code(expr: str, order) -> str:
        if list(order) == sorted(order):
            return expr
        return f"{expr}.unflatten(-1, ({len(order)}, -1))[..., {list(order)}, :].flatten(-2)"

    def native(self, canonical: torch.Tensor):
        if self.split == "rows":
            return self._blocks(canonical[0], self.order), self._blocks(canonical[1], self.order)
        weight = self._blocks(canonical, self.order)
        if self.split == "sum":
            return weight, torch.zeros_like(weight)
        return weight.T if self.transpose else weight

    def canonical(self, native) -> torch.Tensor:
        if self.split == "rows":
            return torch.stack([self._blocks(native[0], self.inverse), self._blocks(native[1], self.inverse)])
        if self.split == "sum":
            return self._blocks(native[0] + native[1], self.inverse)
        return self._blocks(native.T if self.transpose else native, self.inverse)

    def native_code(self, expr: str):
        if self.split == "rows":
            return self._blocks_code(f"{expr}[0]", self.order), self._blocks_code(f"{expr}[1]", self.order)
        weight = self._blocks_code(expr, self.order)
        if self.split == "sum":
            return weight, None  # None: zeros
        return f"{weight}.T" if self.transpose else weight

    def canonical_code(self, native) -> str:
        if self.split == "rows":
            return f"torch.stack([{self._blocks_code(native[0], self.inverse)}, " \
                   f"{self._blocks_code(native[1], self.inverse)}])"
        if self.split == "sum":
            return self._blocks_code(f"({native[0]} + {native[1]})", self.inverse)
        return self._blocks_code(f"{native}.T" if self.transpose else native, self.inverse)


def parts(value) -> tuple:
    """A layout's native side as a tuple (one tensor or expression, or the parts of a split)."""
    return value if isinstance(value, tuple) else (value,)


class Param(NamedTuple):
    """Where a canonical parameter (or layer state) lives: module `module` of the layer's modules,
    its attribute `attribute` (a tuple of attributes where the layout splits it), stored in `layout`."""

    module: int
    attribute: str | tuple[str, ...]
    layout: Any = AS_IS

    @property
    def attributes(self) -> tuple[str, ...]:
        return parts(self.attribute)


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


class MoveAxis(nn.Module):
    """x.movedim(source, destination): a normalization axis to where torch's module wants it (dim 1 for
    nn.BatchNorm, the last for nn.LayerNorm) and back."""

    def __init__(self, source, destination):
        super().__init__()
        self.source, self.destination = source, destination

    def extra_repr(self):
        return f"source={self.source}, destination={self.destination}"

    def forward(self, x):
        return x.movedim(self.source, self.destination)


class BatchNorm(nn.Module):
    """Batch normalization over dim 1 (the channels) of an (N, C, ...) tensor, for what nn.BatchNorm1d /
    2d cannot be told: a biased running variance (Keras' rule; torch keeps the unbiased one) or beta
    without gamma. Training: nn.functional.batch_norm with the batch's mean μ and biased variance σ²
    (which torch normalizes with in either case), and the running statistics moved here:

        running_mean <- (1 - momentum) running_mean + momentum μ
        running_var  <- (1 - momentum) running_var + momentum v,  v = σ², or σ² m / (m - 1) if unbiased

    over the m values per channel (momentum in torch's convention: 1 - Keras'). Eval mode: the running
    statistics. Parameters and buffers carry nn.BatchNorm's names, so its state_dict reads like one."""

    def __init__(self, num_features, eps, momentum, unbiased, scale, center, dtype=None, device=None):
        super().__init__()
        self.eps, self.momentum, self.unbiased = eps, momentum, unbiased
        factory = {"dtype": dtype, "device": device}
        self.register_parameter("weight", nn.Parameter(torch.ones(num_features, **factory)) if scale else None)
        self.register_parameter("bias", nn.Parameter(torch.zeros(num_features, **factory)) if center else None)
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    def extra_repr(self):
        return f"eps={self.eps}, momentum={self.momentum}, unbiased={self.unbiased}"

    def forward(self, x):
        if not self.training:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False,
                                            0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], correction=0)
            if self.unbiased:
                count = x.numel() // x.shape[1]
                var = var * (count / (count - 1))
            self.running_mean.copy_((1.0 - self.momentum) * self.running_mean + self.momentum * mean)
            self.running_var.copy_((1.0 - self.momentum) * self.running_var + self.momentum * var)
            self.num_batches_tracked.add_(1)
        return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class LayerNormNoScale(nn.Module):
    """Layer normalization over the last axis with beta (bias) but no gamma: nn.LayerNorm's affine has
    a weight whenever it has a bias."""

    def __init__(self, size, eps, dtype=None, device=None):
        super().__init__()
        self.size, self.eps = size, eps
        self.bias = nn.Parameter(torch.zeros(size, dtype=dtype, device=device))

    def extra_repr(self):
        return f"size={self.size}, eps={self.eps}"

    def forward(self, x):
        return nn.functional.layer_norm(x, (self.size,), None, self.bias, self.eps)


class RecurrentOutput(nn.Module):
    """The output of a recurrent module's (output, state) tuple: every step's hidden state (N, T, u)
    with sequences, else the last step's (N, u)."""

    def __init__(self, sequences):
        super().__init__()
        self.sequences = sequences

    def extra_repr(self):
        return f"sequences={self.sequences}"

    def forward(self, result):
        output = result[0]
        return output if self.sequences else output[:, -1]


class Recurrent(nn.Module):
    """One recurrent layer over batch-first (N, T, F) sequences, written with torch ops and a loop over
    time, for what nn.RNN / nn.LSTM / nn.GRU do not compute: other activations, and the GRU whose reset
    gate acts before the recurrent product (reset_after = false). With a = x W_ihᵀ + b_ih (every step
    at once) and b = h W_hhᵀ + b_hh, from h = c = 0:

        rnn               h = activation(a + b)
        lstm              i, f, g, o = a + b in four; c = ρ(f) c + ρ(i) activation(g); h = ρ(o) activation(c)
        gru               r, z, n of a and b; r = ρ(a_r + b_r), z = ρ(a_z + b_z);
                          n = activation(a_n + r b_n); h = z h + (1 - z) n
        gru_reset_before  the same with n = activation(a_n + (r h) W_hnᵀ + b_hn)

    (ρ = recurrent_activation). The parameters are named, shaped and ordered as torch's modules keep
    them (weight_ih_l0 (G·u, F), weight_hh_l0 (G·u, u), bias_ih_l0, bias_hh_l0 (G·u,); gates LSTM i, f,
    g, o, GRU r, z, n) and drawn as theirs, U(±1/√u). Returns (output (N, T, u), last h) as they do."""

    GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}

    def __init__(self, cell, input_size, hidden_size, activation, recurrent_activation=None, dtype=None,
                 device=None):
        super().__init__()
        self.cell, self.hidden_size = cell, hidden_size
        width = self.GATES[cell] * hidden_size
        factory = {"dtype": dtype, "device": device}
        self.weight_ih_l0 = nn.Parameter(torch.empty(width, input_size, **factory))
        self.weight_hh_l0 = nn.Parameter(torch.empty(width, hidden_size, **factory))
        self.bias_ih_l0 = nn.Parameter(torch.empty(width, **factory))
        self.bias_hh_l0 = nn.Parameter(torch.empty(width, **factory))
        self.activation, self.recurrent_activation = activation, recurrent_activation
        bound = 1.0 / math.sqrt(hidden_size)
        for weight in (self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0):
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self):
        return f"cell={self.cell!r}, hidden_size={self.hidden_size}"

    def forward(self, x):
        act, rec, u = self.activation, self.recurrent_activation, self.hidden_size
        w_hh, b_hh = self.weight_hh_l0, self.bias_hh_l0
        if self.cell == "gru_reset_before":  # the r and z rows act on h; the n rows on r h
            w_hh, b_hh = w_hh[:2 * u], b_hh[:2 * u]
        a = nn.functional.linear(x, self.weight_ih_l0, self.bias_ih_l0)
        h = c = x.new_zeros(x.shape[0], u)
        outputs = []
        for t in range(x.shape[1]):
            b = nn.functional.linear(h, w_hh, b_hh)
            if self.cell == "rnn":
                h = act(a[:, t] + b)
            elif self.cell == "lstm":
                i, f, g, o = (a[:, t] + b).chunk(4, 1)
                c = rec(f) * c + rec(i) * act(g)
                h = rec(o) * act(c)
            else:
                a_r, a_z, a_n = a[:, t].chunk(3, 1)
                r, z = rec(a_r + b[:, :u]), rec(a_z + b[:, u:2 * u])
                if self.cell == "gru":
                    n = act(a_n + r * b[:, 2 * u:])
                else:
                    n = act(a_n + nn.functional.linear(r * h, self.weight_hh_l0[2 * u:], self.bias_hh_l0[2 * u:]))
                h = z * h + (1.0 - z) * n
            outputs.append(h)
        return torch.stack(outputs, 1), h


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

    @staticmethod
    def state(node) -> dict[str, Param]:
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


# ---- normalization -----------------------------------------------------------------------------------


def _moved(mod: Mod, dim: int, rank: int, wanted: int) -> list[Mod]:
    """`mod` on a tensor whose axis `dim` must be at `wanted` (counted from the end when negative):
    between MoveAxis modules where it is elsewhere."""
    if dim % rank == wanted % rank:
        return [mod]
    return [Mod(MoveAxis, (dim, wanted)), mod, Mod(MoveAxis, (wanted, dim))]


def _norm_place(node, wanted: int) -> tuple[int, int, int]:
    """(torch dim of a normalization layer's axis, torch rank, index of the torch module in its
    modules) for a module that wants the axis at `wanted`."""
    dim, rank = _torch_axis(node.layer.axis, node.shape), len(node.shape) + 1
    return dim, rank, 0 if dim % rank == wanted % rank else 1


def _affine(node, k: int) -> dict[str, Param]:
    s = node.layer
    return {**({"gamma": Param(k, "weight")} if s.scale else {}), **({"beta": Param(k, "bias")} if s.center else {})}


@OPS.register(spec.BatchNorm)
class BatchNormLayer(LayerOp):
    """nn.BatchNorm1d / 2d / 3d (momentum = 1 - the spec's, eps = epsilon, affine = scale, bias = center)
    where it computes the spec: an unbiased running variance, and gamma wherever beta; otherwise
    crossnn's BatchNorm (nn.functional.batch_norm, the running statistics moved by the spec's rule).
    The axis goes to dim 1 (MoveAxis) where it is elsewhere, e.g. the features of (N, T, F) sequences;
    an image's channels are dim 1 already. The moving statistics are the module's running_mean and
    running_var buffers."""

    NATIVE = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}

    @classmethod
    def modules(cls, node, native):
        s = node.layer
        dim, rank, _ = _norm_place(node, 1)
        channels = node.shape[merge_axis(s.axis, len(node.shape))]
        momentum = 1.0 - s.momentum
        note = f"{node.name}: torch's momentum = 1 - {s.momentum!r}"
        if s.running_variance == "unbiased" and (s.scale or not s.center) and rank in cls.NATIVE:
            bias = {"bias": False} if s.scale and not s.center else {}
            bn = Mod(cls.NATIVE[rank], (channels,), {"eps": s.epsilon, "momentum": momentum, "affine": s.scale, **bias},
                     factory=True, note=note)
        else:
            why = "a biased running variance" if s.running_variance == "biased" else "beta without gamma"
            bn = Mod(BatchNorm, (channels,), {"eps": s.epsilon, "momentum": momentum,
                                              "unbiased": s.running_variance == "unbiased", "scale": s.scale,
                                              "center": s.center}, factory=True, note=f"{note}; {why}")
        return _moved(bn, dim, rank, 1)

    @staticmethod
    def params(node):
        return _affine(node, _norm_place(node, 1)[2])

    @staticmethod
    def state(node):
        k = _norm_place(node, 1)[2]
        return {"moving_mean": Param(k, "running_mean"), "moving_variance": Param(k, "running_var")}


@OPS.register(spec.LayerNorm)
class LayerNormLayer(LayerOp):
    """nn.LayerNorm((size,), eps, elementwise_affine = scale or center, bias = center) over the last
    axis, or LayerNormNoScale for beta without gamma; the axis goes last (MoveAxis) where it is
    elsewhere, e.g. an image's channels (dim 1 of NCHW)."""

    @staticmethod
    def modules(node, native):
        s = node.layer
        dim, rank, _ = _norm_place(node, -1)
        size = node.shape[merge_axis(s.axis, len(node.shape))]
        if s.center and not s.scale:
            norm = Mod(LayerNormNoScale, (size, s.epsilon), factory=True, note=f"{node.name}: beta without gamma")
        else:
            options = {"eps": s.epsilon, "elementwise_affine": s.scale, **({"bias": False} if s.scale and not s.center
                                                                              else {})}
            norm = Mod(nn.LayerNorm, ((size,),), options, factory=True, note=node.name)
        return _moved(norm, dim, rank, -1)

    @staticmethod
    def params(node):
        return _affine(node, _norm_place(node, -1)[2])


# ---- sequences -----------------------------------------------------------------------------------------


@OPS.register(spec.Embedding)
class EmbeddingLayer(LayerOp):
    """nn.Embedding on int64 ids (the trainer converts the model input at its boundary); an output of
    rank 3 (ids of shape [H, W]) is an image: ChannelsFirst after."""

    @staticmethod
    def modules(node, native):
        s = node.layer
        embedding = Mod(nn.Embedding, (s.input_dim, s.output_dim), factory=True,
                        note=f"{node.name}: ids {list(node.input_shapes[0])} -> {list(node.shape)}")
        return [embedding, Mod(ChannelsFirst)] if image(node.shape) else [embedding]

    @staticmethod
    def params(node):
        return {"embeddings": Param(0, "weight")}


class RecurrentLayer(LayerOp):
    """torch's module (nn.RNN, nn.LSTM, nn.GRU; batch_first, one layer) where it computes the spec's
    formula, else crossnn's Recurrent; then RecurrentOutput. Kernels are torch's weights with the
    gate blocks in torch's order, transposed; the bias is split (see Gates)."""

    cell = ""
    torch_module: type = nn.Module
    order: tuple[int, ...] = ()

    @classmethod
    def native_options(cls, s) -> dict | None:
        """The torch module's options when it computes the spec's formula, else None."""
        return {} if (type(s.activation), type(s.recurrent_activation)) == (spec.Tanh, spec.Sigmoid) else None

    @classmethod
    def split(cls, s) -> str:
        return "sum"

    @classmethod
    def modules(cls, node, native):
        s = node.layer
        features = node.input_shapes[0][1]
        note = f"{node.name}: {list(node.input_shapes[0])} -> {list(node.shape)}"
        options = cls.native_options(s)
        if options is not None:
            module = Mod(cls.torch_module, (features, s.units), {**options, "batch_first": True}, factory=True,
                         note=note)
        else:
            acts = {"activation": activation(s.activation, native)}
            if hasattr(s, "recurrent_activation"):
                acts["recurrent_activation"] = activation(s.recurrent_activation, native)
            cell = cls.cell if not isinstance(s, spec.GRU) or s.reset_after else "gru_reset_before"
            module = Mod(Recurrent, (cell, features, s.units), acts, factory=True, note=note)
        which = "every step's output" if s.return_sequences else "the last step's output"
        return [module, Mod(RecurrentOutput, kwargs={"sequences": s.return_sequences}, note=which)]

    @classmethod
    def params(cls, node):
        return {"kernel": Param(0, "weight_ih_l0", Gates(cls.order, transpose=True)),
                "recurrent_kernel": Param(0, "weight_hh_l0", Gates(cls.order, transpose=True)),
                "bias": Param(0, ("bias_ih_l0", "bias_hh_l0"), Gates(cls.order, split=cls.split(node.layer)))}


@OPS.register(spec.SimpleRNN)
class SimpleRNNLayer(RecurrentLayer):
    cell, torch_module, order = "rnn", nn.RNN, (0,)

    @classmethod
    def native_options(cls, s):
        kinds = {spec.Tanh: "tanh", spec.ReLU: "relu"}
        return {"nonlinearity": kinds[type(s.activation)]} if type(s.activation) in kinds else None


@OPS.register(spec.LSTM)
class LSTMLayer(RecurrentLayer):
    cell, torch_module, order = "lstm", nn.LSTM, (0, 1, 2, 3)


@OPS.register(spec.GRU)
class GRULayer(RecurrentLayer):
    """nn.GRU is the reset-after form; reset_after = false is crossnn's Recurrent."""

    cell, torch_module, order = "gru", nn.GRU, (1, 0, 2)

    @classmethod
    def native_options(cls, s):
        return super().native_options(s) if s.reset_after else None

    @classmethod
    def split(cls, s):
        return "rows" if s.reset_after else "sum"


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
    """Where a canonical variable lives in a built model: its torch tensors (an nn.Parameter, a buffer
    for layer state, or the parts a split layout names) and their layout."""

    tensors: tuple[torch.Tensor, ...]
    layout: Any

    @property
    def trains(self) -> tuple[bool, ...]:
        """Per tensor: whether the optimizer updates it (not a frozen part, not a buffer)."""
        return tuple(isinstance(t, nn.Parameter) and t.requires_grad for t in self.tensors)

    def canonical(self, natives=None) -> torch.Tensor:
        """The canonical value of the slot's tensors (detached), or of `natives` in their layout (an
        optimizer buffer per part; None for a part without one, a frozen part: zeros)."""
        natives = [t.detach() for t in self.tensors] if natives is None else \
            [torch.zeros_like(t) if n is None else n for n, t in zip(natives, self.tensors)]
        return self.layout.canonical(natives[0] if len(natives) == 1 else tuple(natives))

    def native(self, canonical: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A canonical value in the slot's layout, one tensor per part."""
        return parts(self.layout.native(canonical))


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


def layer_mods(model: spec.Model, native=frozenset()) -> list[tuple[Any, list[Mod], dict[str, Param],
                                                                    dict[str, Param]]]:
    """(node, its modules, its parameters' places, its state's places) of every layer, in graph order."""
    out = []
    for node in model.nodes:
        entry = OPS.lookup(node.layer)
        state = getattr(entry, "state", LayerOp.state)  # a user's entry may leave it out
        out.append((node, entry.modules(node, native), entry.params(node), state(node)))
    return out


def ids_input(model: spec.Model) -> bool:
    """Whether the model input holds integer ids (the layers reading it read ids: embedding), which
    the module modes take as int64; UnsupportedFeature when some of its readers read ids and others
    numbers."""
    readers = [node.layer.reads_ids for node in model.nodes if INPUT in node.inputs]
    if any(readers) and not all(readers):
        raise UnsupportedFeature("torch", "a model input read both as integer ids (embedding) and as numbers")
    return any(readers)


class Built(NamedTuple):
    """A lowered model: the nn.Module, the slot of every canonical parameter, of every layer state and
    of both together (`variables`, each layer's parameters then its state), in canonical order, and the
    Dropout module of every dropout layer (by layer name)."""

    module: nn.Module
    slots: dict[str, Slot]
    state: dict[str, Slot]
    variables: dict[str, Slot]
    dropouts: dict[str, Dropout]


def _slot(node, short: str, where: Param, modules: list[nn.Module], is_state: bool) -> Slot:
    """The tensors a Param names on the built modules (buffers for state, nn.Parameters otherwise);
    the layout's frozen parts stop requiring grad."""
    tensors = []
    frozen = getattr(where.layout, "frozen", (False,) * len(where.attributes))
    for attribute, held in zip(where.attributes, frozen):
        tensor = getattr(modules[where.module], attribute, None)
        wanted = torch.Tensor if is_state else nn.Parameter
        if not isinstance(tensor, wanted) or (is_state and isinstance(tensor, nn.Parameter)):
            what = "buffer" if is_state else "nn.Parameter"
            raise UnsupportedFeature("torch", f"layer '{node.name}' ({node.layer.kind}): its module has no "
                                              f"{what} '{attribute}' for '{short}'")
        if held:
            tensor.requires_grad_(False)
        tensors.append(tensor)
    return Slot(tuple(tensors), where.layout)


def build_model(model: spec.Model, *, dtype, device, native=frozenset()) -> Built:
    """The nn.Module for `model`: an nn.Sequential for a chain, else a GraphNet; ChannelsLast at the
    end when the output is an image."""
    slots: dict[str, Slot] = {}
    state: dict[str, Slot] = {}
    dropouts: dict[str, Dropout] = {}
    per_layer = []
    for node, mods, params, owned in layer_mods(model, native):
        modules = [m.build(dtype, device) for m in mods]
        per_layer.append((node, modules))
        for short, where in params.items():
            slots[f"{node.name}/{short}"] = _slot(node, short, where, modules, False)
        for short, where in owned.items():
            state[f"{node.name}/{short}"] = _slot(node, short, where, modules, True)
        dropouts.update({node.name: m for m in modules if isinstance(m, Dropout)})
    last = ChannelsLast() if image(model.output_shape) else None
    if is_chain(model):
        net: nn.Module = nn.Sequential(*(m for _, modules in per_layer for m in modules), *([last] if last else []))
    else:
        net = GraphNet([(node.name, node.inputs, modules[0] if len(modules) == 1 else nn.Sequential(*modules))
                        for node, modules in per_layer], model.layers[-1].name, last)
    every = {**slots, **state}
    return Built(net, {name: slots[name] for name in model.parameter_inits()},
                 {name: state[name] for name in model.state_inits()},
                 {name: every[name] for name in model.variable_inits()}, dropouts)


from crossnn_torch import optimizers  # noqa: E402,F401  (registers the optimizer rules in OPS)
