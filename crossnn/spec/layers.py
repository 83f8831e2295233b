"""Layers. A layer maps the outputs of the layers it names in `inputs` (or the previous layer, or the
model input) to one output. Every value has a shape without the batch axis, channels last: (features,)
for vectors, (H, W, C) for images, (T, F) for sequences. Parameters are named "<layer>/<param>" and
kept in canonical layout (TensorFlow's): a Dense kernel is (in, out), so y = x @ W + b; a Conv2D
kernel is (kh, kw, in, out).

Geometry of 2-D windows (conv2d and the pooling layers), per spatial axis of size n, with window k,
stride s and dilation d (span e = (k - 1)·d + 1):

    padding = "valid":  out = floor((n - e) / s) + 1, no padding (needs n >= e)
    padding = "same":   out = ceil(n / s), total padding p = max((out - 1)·s + e - n, 0), of which
                        floor(p / 2) goes before and the rest after (TensorFlow's rule: the extra
                        row or column goes at the bottom or right). PyTorch's padding="same" agrees
                        at stride 1 but refuses stride > 1, and the symmetric padding = k // 2 that
                        PyTorch code writes instead starts the windows a row earlier where p is odd
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from crossnn.spec.activations import Activation, Linear, Sigmoid, Tanh
from crossnn.spec.base import Pair, Spec, SpecError, article, finite, positive, require
from crossnn.spec.initializers import Initializer, Ones, Zeros

Shape = tuple[int, ...]


class ParamInit(NamedTuple):
    """One parameter a layer owns: its short name, canonical shape, initializer and fans."""

    name: str
    shape: Shape
    init: Initializer
    fan_in: int
    fan_out: int


@dataclass(frozen=True, kw_only=True)
class Layer(Spec, family="layer"):
    """A node of the model graph.

    name:   unique within the model; generated as "<type><k>" (dense1, dense2, ...) when absent.
    inputs: names of other layers, or "input" for the model's input; default: the previous layer.
    """

    name: str | None = None
    inputs: tuple[str, ...] | None = None

    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    #: the layer reads integer ids, so its input must be the model input (data.x holds the ids)
    reads_ids: ClassVar[bool] = False

    def validate(self):
        if self.name is not None:
            require(self.name != "" and "/" not in self.name and self.name != "input", "name",
                    f"'{self.name}' is not a usable layer name (non-empty, no '/', not 'input')")
        if self.inputs is not None:
            count = len(self.inputs)
            most = self.max_inputs
            if count < self.min_inputs or (most is not None and count > most):
                wanted = str(self.min_inputs) if most == self.min_inputs else (
                    f"at least {self.min_inputs}" if most is None else f"{self.min_inputs} to {most}")
                raise SpecError(f"{article(self.kind)} {self.kind} layer takes {wanted} input(s), got {count}",
                                ("inputs",))

    def fields_dict(self) -> dict[str, Any]:
        fields = super().fields_dict()
        if "inputs" in fields:
            fields["inputs"] = fields.pop("inputs")  # written last, after the layer's own fields
        return fields

    def output_shape(self, input_shapes: tuple[Shape, ...]) -> Shape:
        """Shape of the output (batch excluded), given the shapes of the inputs; a SpecError when the
        inputs do not fit the layer."""
        raise NotImplementedError

    def parameters(self, input_shapes: tuple[Shape, ...]) -> tuple[ParamInit, ...]:
        """The parameters this layer owns, in canonical layout."""
        return ()

    def state(self, input_shapes: tuple[Shape, ...]) -> tuple[ParamInit, ...]:
        """The state this layer owns that training updates but the optimizer does not (BatchNorm's
        moving statistics): named, initialized, compared and checkpointed like parameters."""
        return ()

    def matmul_flops(self, input_shapes: tuple[Shape, ...]) -> int:
        """Multiply-add FLOPs (2 per multiply-add) of the forward pass for one sample."""
        return 0

    def batch_problem(self, input_shapes: tuple[Shape, ...], rows: int) -> str | None:
        """Why a training batch of `rows` samples cannot go through this layer, or None."""
        return None


def _rank(shape: Shape, rank: int, what: str) -> None:
    if len(shape) != rank:
        raise SpecError(f"needs an input of rank {rank} ({what}), got shape {list(shape)}", ("inputs",))


@dataclass(frozen=True, kw_only=True)
class Dense(Layer, kind="dense"):
    """y = activation(x @ kernel + bias) over the last axis; kernel (in, units), bias (units,).
    An input (..., in) gives (..., units), as keras.layers.Dense and nn.Linear do.

    Initializers have no defaults: nn.Linear draws both from U(±1/√in) (fan_in_uniform),
    keras.layers.Dense uses glorot_uniform and zeros (a spec's preset fills its framework's).
    """

    units: int
    activation: Activation = Linear()
    use_bias: bool = True
    kernel_init: Initializer
    bias_init: Initializer

    def validate(self):
        super().validate()
        positive(self, "units")

    def output_shape(self, input_shapes):
        return input_shapes[0][:-1] + (self.units,)

    def matmul_flops(self, input_shapes):
        return 2 * math.prod(input_shapes[0]) * self.units

    def parameters(self, input_shapes):
        fan_in = input_shapes[0][-1]
        params = [ParamInit("kernel", (fan_in, self.units), self.kernel_init.for_units(self.units), fan_in,
                            self.units)]
        if self.use_bias:
            params.append(ParamInit("bias", (self.units,), self.bias_init.for_units(self.units), fan_in, self.units))
        return tuple(params)


@dataclass(frozen=True, kw_only=True)
class ActivationLayer(Layer, kind="activation"):
    """y = activation(x), no parameters (softmax over the last axis)."""

    activation: Activation

    def output_shape(self, input_shapes):
        return input_shapes[0]


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer, kind="dropout"):
    """Inverted dropout while training: y = x ⊙ m / (1 - rate), m ~ Bernoulli(1 - rate) per element
    of the whole (batch, *shape) tensor; y = x when predicting. The masks are drawn once, in NumPy,
    from the seed's "dropout" stream (one stream per layer and step), and every backend uses the
    same ones, so parity holds."""

    rate: float

    def validate(self):
        super().validate()
        require(0.0 <= self.rate < 1.0, "rate", f"must be in [0, 1), got {self.rate}")

    def output_shape(self, input_shapes):
        return input_shapes[0]


def merge_axis(axis: int, rank: int) -> int:
    """The index into a node's shape (batch excluded) of a merge axis counted over the whole tensor
    (batch = axis 0, as Keras counts it); negative axes count from the end."""
    index = axis - 1 if axis > 0 else rank + axis
    if axis == 0 or not 0 <= index < rank:
        raise SpecError(f"must name a non-batch axis of a rank-{rank + 1} tensor (1..{rank} or -{rank}..-1), "
                        f"got {axis}", ("axis",))
    return index


@dataclass(frozen=True, kw_only=True)
class Concatenate(Layer, kind="concatenate"):
    """y = [x_1, x_2, ...] joined along `axis`, in the order of `inputs`. The axis counts over the
    whole tensor, batch included (axis 0, which cannot be joined), as Keras' does: -1 is the last
    (features, or channels of an image)."""

    axis: int = -1

    min_inputs = 2
    max_inputs = None

    def validate(self):
        super().validate()
        require(self.inputs is not None, "inputs", "a concatenate layer must name its inputs")

    def output_shape(self, input_shapes):
        ranks = {len(s) for s in input_shapes}
        if len(ranks) != 1:
            raise SpecError(f"inputs of different ranks cannot be joined: {[list(s) for s in input_shapes]}",
                            ("inputs",))
        index = merge_axis(self.axis, ranks.pop())
        first = input_shapes[0]
        for shape in input_shapes[1:]:
            if shape[:index] + shape[index + 1:] != first[:index] + first[index + 1:]:
                raise SpecError(f"input shapes {[list(s) for s in input_shapes]} differ outside axis {self.axis}",
                                ("inputs",))
        return first[:index] + (sum(s[index] for s in input_shapes),) + first[index + 1:]


@dataclass(frozen=True, kw_only=True)
class Add(Layer, kind="add"):
    """y = x_1 + x_2 + ..., elementwise; the inputs have one shape (the join of a residual block)."""

    min_inputs = 2
    max_inputs = None

    def validate(self):
        super().validate()
        require(self.inputs is not None, "inputs", "an add layer must name its inputs")

    def output_shape(self, input_shapes):
        if len(set(input_shapes)) != 1:
            raise SpecError(f"inputs of an add layer need one shape, got {[list(s) for s in input_shapes]}",
                            ("inputs",))
        return input_shapes[0]


# ---- 2-D windows: convolution and pooling --------------------------------------------------------


def window_padding(size: int, window: int, stride: int, dilation: int, padding: str,
                   field: str = "kernel_size") -> tuple[int, int, int]:
    """(output size, padding before, padding after) along one spatial axis (see the module docstring);
    a SpecError on `field` when a 'valid' window does not fit."""
    span = (window - 1) * dilation + 1
    if padding == "valid":
        if size < span:
            raise SpecError(f"a window spanning {span} does not fit an input of size {size} with padding "
                            "'valid'", (field,))
        return (size - span) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2, total - total // 2


class Window(NamedTuple):
    """A 2-D window's geometry on one input: output size and the padding of each side."""

    out_h: int
    out_w: int
    top: int
    bottom: int
    left: int
    right: int

    @property
    def symmetric(self) -> bool:
        return self.top == self.bottom and self.left == self.right


def window_geometry(layer, input_shape: Shape) -> Window:
    """The geometry of a conv2d or pooling layer's window on an (H, W, C) input."""
    (kh, kw), (sh, sw), (dh, dw) = layer.window_size, layer.strides, getattr(layer, "dilation", (1, 1))
    out_h, top, bottom = window_padding(input_shape[0], kh, sh, dh, layer.padding, layer.window_field)
    out_w, left, right = window_padding(input_shape[1], kw, sw, dw, layer.padding, layer.window_field)
    return Window(out_h, out_w, top, bottom, left, right)


@dataclass(frozen=True, kw_only=True)
class Conv2D(Layer, kind="conv2d"):
    """2-D cross-correlation over (H, W, C) inputs (no kernel flip, as every framework computes it):

        z[i, j, o] = Σ_{a, b, c} xp[i·sh + a·dh, j·sw + b·dw, c] · kernel[a, b, c, o] + bias[o]
        y = activation(z)

    where xp is x padded as `padding` says (see the module docstring). kernel (kh, kw, in, out),
    bias (out,). The initializers' fans count the receptive field: fan_in = kh·kw·in,
    fan_out = kh·kw·out (torch's and Keras' rule). PyTorch keeps the kernel as (out, in, kh, kw)
    and images as (N, C, H, W); its backend converts at its boundary.
    """

    filters: int
    kernel_size: Pair
    strides: Pair = (1, 1)
    padding: Literal["valid", "same"]
    dilation: Pair = (1, 1)
    activation: Activation = Linear()
    use_bias: bool = True
    kernel_init: Initializer
    bias_init: Initializer

    def validate(self):
        super().validate()
        positive(self, "filters")

    #: the field that sizes the window (errors name it)
    window_field: ClassVar[str] = "kernel_size"

    @property
    def window_size(self):
        return self.kernel_size

    def output_shape(self, input_shapes):
        _rank(input_shapes[0], 3, "height, width, channels")
        w = window_geometry(self, input_shapes[0])
        return (w.out_h, w.out_w, self.filters)

    def parameters(self, input_shapes):
        (kh, kw), channels = self.kernel_size, input_shapes[0][2]
        fan_in, fan_out = kh * kw * channels, kh * kw * self.filters
        params = [ParamInit("kernel", (kh, kw, channels, self.filters), self.kernel_init.for_units(self.filters),
                            fan_in, fan_out)]
        if self.use_bias:
            params.append(ParamInit("bias", (self.filters,), self.bias_init.for_units(self.filters), fan_in, fan_out))
        return tuple(params)

    def matmul_flops(self, input_shapes):
        out = self.output_shape(input_shapes)
        return 2 * out[0] * out[1] * self.kernel_size[0] * self.kernel_size[1] * input_shapes[0][2] * self.filters


@dataclass(frozen=True, kw_only=True)
class _Pool2D(Layer):
    """Shared fields of the 2-D pooling layers. strides default to pool_size (both frameworks' default)
    and are written out when saved."""

    pool_size: Pair
    strides: Pair | None = None
    padding: Literal["valid", "same"] = "valid"

    def validate(self):
        super().validate()
        if self.strides is None:
            object.__setattr__(self, "strides", self.pool_size)

    #: the field that sizes the window (errors name it)
    window_field: ClassVar[str] = "pool_size"

    @property
    def window_size(self):
        return self.pool_size

    def output_shape(self, input_shapes):
        _rank(input_shapes[0], 3, "height, width, channels")
        w = window_geometry(self, input_shapes[0])
        return (w.out_h, w.out_w, input_shapes[0][2])


@dataclass(frozen=True, kw_only=True)
class MaxPool2D(_Pool2D, kind="max_pool2d"):
    """y[i, j, c] = max over the window at (i·sh, j·sw) of x[., ., c]; padded positions never win
    (they count as -∞). The gradient goes to the first maximum of each window in row-major order."""


@dataclass(frozen=True, kw_only=True)
class AvgPool2D(_Pool2D, kind="avg_pool2d"):
    """y[i, j, c] = (Σ over the window's positions inside the input of x[., ., c]) / divisor, where the
    divisor is kh·kw with count_padding = true (PyTorch's default, count_include_pad=True) and the
    number of positions inside the input with count_padding = false (TensorFlow's and Keras' rule).
    The two agree without padding."""

    count_padding: bool


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool2D(Layer, kind="global_avg_pool2d"):
    """y[c] = mean over (H, W) of x[., ., c]: (H, W, C) -> (C,)."""

    def output_shape(self, input_shapes):
        _rank(input_shapes[0], 3, "height, width, channels")
        return (input_shapes[0][2],)


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer, kind="flatten"):
    """y = x reshaped to (prod(shape),) in row-major order of the canonical shape: (H, W, C) images
    flatten channel-fastest, as Keras does. PyTorch's nn.Flatten on its (C, H, W) tensors gives
    another order; its backend permutes to (H, W, C) first."""

    def output_shape(self, input_shapes):
        return (math.prod(input_shapes[0]),)


@dataclass(frozen=True, kw_only=True)
class Reshape(Layer, kind="reshape"):
    """y = x reshaped to `shape` (batch excluded), row-major over the canonical layout; one entry may
    be -1 (the size that makes the element counts equal)."""

    shape: tuple[int, ...]

    def validate(self):
        super().validate()
        require(len(self.shape) > 0, "shape", "must have at least one axis")
        require(all(n > 0 or n == -1 for n in self.shape) and list(self.shape).count(-1) <= 1, "shape",
                f"takes positive sizes and at most one -1, got {list(self.shape)}")

    def output_shape(self, input_shapes):
        total = math.prod(input_shapes[0])
        known = math.prod(n for n in self.shape if n != -1)
        if -1 in self.shape:
            if total % known:
                raise SpecError(f"cannot reshape {list(input_shapes[0])} ({total} values) to {list(self.shape)}",
                                ("shape",))
            return tuple(total // known if n == -1 else n for n in self.shape)
        if known != total:
            raise SpecError(f"cannot reshape {list(input_shapes[0])} ({total} values) to {list(self.shape)} "
                            f"({known} values)", ("shape",))
        return self.shape


# ---- normalization --------------------------------------------------------------------------------


def _norm_axis(layer, shape: Shape) -> int:
    """The index into a node's shape of a normalization layer's axis (counted over the whole tensor,
    batch = 0, as for the merge layers)."""
    try:
        return merge_axis(layer.axis, len(shape))
    except SpecError as err:
        raise SpecError(err.message, ("axis",)) from None


@dataclass(frozen=True, kw_only=True)
class BatchNorm(Layer, kind="batch_norm"):
    """Batch normalization over every axis but `axis` (the channels), with μ, σ² the batch's mean and
    biased variance of each channel:

        training:   y = gamma · (x - μ) / √(σ² + epsilon) + beta
                    moving_mean     ← momentum · moving_mean     + (1 - momentum) · μ
                    moving_variance ← momentum · moving_variance + (1 - momentum) · v,
                    v = σ² (running_variance = "biased", Keras) or σ² · m / (m - 1) over the m values
                    averaged (running_variance = "unbiased", PyTorch, which still normalizes with σ²)
        predicting: y = gamma · (x - moving_mean) / √(moving_variance + epsilon) + beta

    momentum is Keras' (PyTorch's momentum is 1 - this one); no defaults: Keras uses 0.99 and epsilon
    1e-3, PyTorch 0.9 (its 0.1) and 1e-5. gamma (scale) and beta (center) are parameters, the moving
    statistics state (crossnn.spec.layers.Layer.state)."""

    axis: int = -1
    momentum: float
    epsilon: float
    running_variance: Literal["biased", "unbiased"]
    center: bool = True
    scale: bool = True
    gamma_init: Initializer = Ones()
    beta_init: Initializer = Zeros()
    moving_mean_init: Initializer = Zeros()
    moving_variance_init: Initializer = Ones()

    def validate(self):
        super().validate()
        finite(self, "momentum", "epsilon")
        require(0.0 <= self.momentum < 1.0, "momentum", f"must be in [0, 1), got {self.momentum}")
        positive(self, "epsilon")

    def output_shape(self, input_shapes):
        _norm_axis(self, input_shapes[0])
        return input_shapes[0]

    def batch_problem(self, input_shapes, rows):
        """The batch statistics need two values per channel: the variance of one value is 0 (and its
        unbiased form divides by 0), and PyTorch refuses to train on one."""
        shape = input_shapes[0]
        values = rows * math.prod(shape) // shape[_norm_axis(self, shape)]
        if values < 2:
            return (f"a batch of {rows} sample(s) gives layer '{self.name}' (batch_norm) {values} value per channel; "
                    "batch statistics need at least 2 (PyTorch refuses training on one)")
        return None

    def parameters(self, input_shapes):
        channels = input_shapes[0][_norm_axis(self, input_shapes[0])]
        params = []
        if self.scale:
            params.append(ParamInit("gamma", (channels,), self.gamma_init, channels, channels))
        if self.center:
            params.append(ParamInit("beta", (channels,), self.beta_init, channels, channels))
        return tuple(params)

    def state(self, input_shapes):
        channels = input_shapes[0][_norm_axis(self, input_shapes[0])]
        return (ParamInit("moving_mean", (channels,), self.moving_mean_init, channels, channels),
                ParamInit("moving_variance", (channels,), self.moving_variance_init, channels, channels))


@dataclass(frozen=True, kw_only=True)
class LayerNorm(Layer, kind="layer_norm"):
    """Normalization of each sample over `axis` (the last, features or channels), with μ, σ² that
    axis's mean and biased variance: y = gamma · (x - μ) / √(σ² + epsilon) + beta, the same in
    training and prediction. epsilon has no default: Keras uses 1e-3, PyTorch 1e-5."""

    axis: int = -1
    epsilon: float
    center: bool = True
    scale: bool = True
    gamma_init: Initializer = Ones()
    beta_init: Initializer = Zeros()

    def validate(self):
        super().validate()
        finite(self, "epsilon")
        positive(self, "epsilon")

    def output_shape(self, input_shapes):
        _norm_axis(self, input_shapes[0])
        return input_shapes[0]

    def parameters(self, input_shapes):
        size = input_shapes[0][_norm_axis(self, input_shapes[0])]
        params = []
        if self.scale:
            params.append(ParamInit("gamma", (size,), self.gamma_init, size, size))
        if self.center:
            params.append(ParamInit("beta", (size,), self.beta_init, size, size))
        return tuple(params)


# ---- sequences ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Embedding(Layer, kind="embedding"):
    """y[..., :] = embeddings[x[...]]: integer ids (the input's values, any shape, e.g. [T]) to rows of
    the table embeddings (input_dim, output_dim); an id outside [0, input_dim) is an error. The input
    is the model input (ids stored as numbers in data.x). No default initializer: PyTorch draws
    N(0, 1), Keras U(±0.05)."""

    input_dim: int
    output_dim: int
    embeddings_init: Initializer

    reads_ids = True

    def validate(self):
        super().validate()
        positive(self, "input_dim", "output_dim")

    def output_shape(self, input_shapes):
        return input_shapes[0] + (self.output_dim,)

    def parameters(self, input_shapes):
        return (ParamInit("embeddings", (self.input_dim, self.output_dim),
                          self.embeddings_init.for_units(self.output_dim), self.input_dim, self.output_dim),)

    def matmul_flops(self, input_shapes):
        return 0


@dataclass(frozen=True, kw_only=True)
class _Recurrent(Layer):
    """A recurrent layer over (T, F) sequences, run from a zero state, left to right.

    kernel (F, G·units), recurrent_kernel (units, G·units) and bias hold the G gates side by side in
    the order the layer names (Keras' layout). return_sequences: the output is every step's hidden
    state (T, units), else the last one (units,). Initializers have no defaults: Keras uses
    glorot_uniform, orthogonal and zeros, PyTorch U(±1/√units) for all (units_uniform)."""

    units: int
    return_sequences: bool = False
    activation: Activation = Tanh()
    kernel_init: Initializer
    recurrent_init: Initializer
    bias_init: Initializer

    gates: ClassVar[int] = 1

    def validate(self):
        super().validate()
        positive(self, "units")

    def output_shape(self, input_shapes):
        _rank(input_shapes[0], 2, "timesteps, features")
        steps = input_shapes[0][0]
        return (steps, self.units) if self.return_sequences else (self.units,)

    def bias_shape(self) -> Shape:
        return (self.gates * self.units,)

    def bias_initializer(self) -> Initializer:
        return self.bias_init.for_units(self.units)

    def parameters(self, input_shapes):
        features, width = input_shapes[0][1], self.gates * self.units
        return (ParamInit("kernel", (features, width), self.kernel_init.for_units(self.units), features, width),
                ParamInit("recurrent_kernel", (self.units, width), self.recurrent_init.for_units(self.units),
                          self.units, width),
                ParamInit("bias", self.bias_shape(), self.bias_initializer(), self.units, width))

    def matmul_flops(self, input_shapes):
        steps, features = input_shapes[0]
        return 2 * steps * (features + self.units) * self.gates * self.units


@dataclass(frozen=True, kw_only=True)
class SimpleRNN(_Recurrent, kind="simple_rnn"):
    """h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias) (keras.layers.SimpleRNN; nn.RNN
    keeps two biases whose sum is this one)."""


@dataclass(frozen=True, kw_only=True)
class LSTM(_Recurrent, kind="lstm"):
    """Gates i, f, c, o (that order, Keras' and PyTorch's), with z = x_t @ kernel + h_{t-1} @
    recurrent_kernel + bias split into four:

        i = ρ(z_i), f = ρ(z_f), g = activation(z_c), o = ρ(z_o)    (ρ = recurrent_activation)
        c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ activation(c_t)

    unit_forget_bias: the forget gate's bias starts at 1 (bias_init for the rest): Keras' default,
    which PyTorch does not have, so the spec has no default. PyTorch keeps two biases (b_ih, b_hh)
    whose sum is this bias."""

    recurrent_activation: Activation = Sigmoid()
    unit_forget_bias: bool

    gates = 4

    def bias_initializer(self):
        base = self.bias_init.for_units(self.units)
        return _ForgetGateOnes(base=base, units=self.units) if self.unit_forget_bias else base


@dataclass(frozen=True, kw_only=True)
class _ForgetGateOnes(Initializer):
    """An LSTM bias drawn by `base` with the forget gate's slice [units, 2·units) set to 1 (Keras'
    unit_forget_bias). Built by LSTM for its bias; not a kind of its own in spec files."""

    base: Initializer
    units: int

    def sample(self, rng, shape, fan_in, fan_out):
        value = np.array(self.base.sample(rng, shape, fan_in, fan_out), dtype=np.float64)
        value[self.units:2 * self.units] = 1.0
        return value

    def describe(self):
        return f"{self.base.describe()} with the forget gate's {self.units} at 1 (unit_forget_bias)"


@dataclass(frozen=True, kw_only=True)
class GRU(_Recurrent, kind="gru"):
    """Gates z, r, h (that order, Keras'; PyTorch's is r, z, n), with x-parts a = x_t @ kernel and
    h-parts b = h_{t-1} @ recurrent_kernel split into three:

        reset_after = true  (bias (2, 3u): input row b_x, recurrent row b_h; PyTorch's and Keras'
                             default, cuDNN's form):
            z = ρ(a_z + b_x,z + b_z + b_h,z), r = ρ(a_r + b_x,r + b_r + b_h,r),
            h~ = activation(a_h + b_x,h + r ⊙ (b_h + b_h,h))
        reset_after = false (bias (3u,)):
            z = ρ(a_z + b_z + bias_z), r = ρ(a_r + b_r + bias_r),
            h~ = activation(a_h + (r ⊙ h_{t-1}) @ recurrent_kernel_h + bias_h)
        h_t = z ⊙ h_{t-1} + (1 - z) ⊙ h~

    (ρ = recurrent_activation). reset_after has no default in the spec: both frameworks' default is
    true, but Keras 2 defaulted to false and nn.GRU cannot do false."""

    recurrent_activation: Activation = Sigmoid()
    reset_after: bool

    gates = 3

    def bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)
