"""Layers and activations with hand-written forward and backward passes.

All math goes through the array namespace `xp` and uses only the names listed in crossnn_numpy.xp
(NumPy's crossnn_numpy.xp.numpy here; crossnn_torch.xp runs the same code on torch tensors). Each
backward mirrors the operation order PyTorch's kernels use, so float64 results agree to the last bits
where possible.
"""

from __future__ import annotations

import itertools
import math

from crossnn import spec
from crossnn.errors import UnsupportedFeature

# ---- activations: forward(z) -> a and backward(z, a, da) -> dz --------------------------------


class Identity:
    def __init__(self, s, xp):
        pass

    def forward(self, z):
        return z

    def backward(self, z, a, da):
        return da


class Sigmoid:
    def __init__(self, s, xp):
        self.xp = xp

    def forward(self, z):
        return self.xp.sigmoid(z)

    def backward(self, z, a, da):
        """da · (1 - a) · a, in that order (PyTorch's), in one new array instead of three."""
        dz = 1.0 - a
        dz *= da
        dz *= a
        return dz


class Tanh:
    def __init__(self, s, xp):
        self.xp = xp

    def forward(self, z):
        return self.xp.tanh(z)

    def backward(self, z, a, da):
        return da * (1.0 - a * a)


class ReLU:
    def __init__(self, s, xp):
        self.xp = xp

    def forward(self, z):
        return self.xp.maximum(z, 0.0)

    def backward(self, z, a, da):
        return self.xp.where(z > 0, da, 0.0)


class LeakyReLU:
    def __init__(self, s: spec.LeakyReLU, xp):
        self.xp, self.slope = xp, s.negative_slope

    def forward(self, z):
        return self.xp.where(z > 0, z, z * self.slope)

    def backward(self, z, a, da):
        return self.xp.where(z > 0, da, da * self.slope)


class Softplus:
    def __init__(self, s, xp):
        self.xp = xp

    def forward(self, z):
        xp = self.xp
        return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))

    def backward(self, z, a, da):
        return da * self.xp.sigmoid(z)


class Softmax:
    def __init__(self, s, xp):
        self.xp = xp

    def forward(self, z):
        xp = self.xp
        e = xp.exp(z - xp.amax(z, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def backward(self, z, a, da):
        return a * (da - self.xp.sum(da * a, axis=-1, keepdims=True))


class GELU:
    """Exact: Φ via erf; tanh form: PyTorch's gelu(approximate='tanh') derivative."""

    SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
    INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

    def __init__(self, s: spec.GELU, xp):
        self.xp, self.exact = xp, s.approximate == "none"

    def forward(self, z):
        if self.exact:
            return z * 0.5 * (1.0 + self.xp.erf(z * math.sqrt(0.5)))
        inner = self.SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        return 0.5 * z * (1.0 + self.xp.tanh(inner))

    def backward(self, z, a, da):
        xp = self.xp
        if self.exact:
            cdf = 0.5 * (1.0 + self.xp.erf(z * math.sqrt(0.5)))
            pdf = xp.exp(-0.5 * z * z) * self.INV_SQRT_2PI
            return da * (cdf + z * pdf)
        inner = self.SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        t = xp.tanh(inner)
        d_inner = self.SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * z * z)
        return da * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * d_inner)


ACTIVATIONS = {
    spec.Linear: Identity, spec.Sigmoid: Sigmoid, spec.Tanh: Tanh, spec.ReLU: ReLU,
    spec.LeakyReLU: LeakyReLU, spec.Softplus: Softplus, spec.Softmax: Softmax, spec.GELU: GELU,
}


def activation(s: spec.Activation, xp):
    if type(s) not in ACTIVATIONS:
        raise UnsupportedFeature("numpy", f"activation '{s.kind}'")
    return ACTIVATIONS[type(s)](s, xp)


# ---- layers: forward(params, inputs) -> (output, cache); backward(...) -> input gradients ---------
# backward(values, cache, d_output, grads, need_input_grads) writes the gradient of each parameter it
# owns into grads[i], an array of the parameter's shape, in place (out=); it returns the gradients of
# its inputs (None where need_input_grads is false: nothing upstream has parameters).


class Dense:
    """z = x @ W + b, a = f(z). Gradients: dz = f'(z) ⊙ da, dW = xᵀ dz, db = Σ_n dz, dx = dz Wᵀ."""

    def __init__(self, node, index, xp):
        self.kernel = index[f"{node.name}/kernel"]
        self.bias = index.get(f"{node.name}/bias")
        self.act = activation(node.layer.activation, xp)
        self.identity = isinstance(self.act, Identity)
        self.xp = xp

    def forward(self, values, inputs):
        x = inputs[0]
        z = self.xp.matmul(x, values[self.kernel])
        if self.bias is not None:
            z += values[self.bias]
        a = z if self.identity else self.act.forward(z)
        return a, (x, z, a)

    def backward(self, values, cache, da, grads, need_input_grads):
        x, z, a = cache
        dz = da if self.identity else self.act.backward(z, a, da)
        self.xp.matmul(x.T, dz, out=grads[self.kernel])
        if self.bias is not None:
            self.xp.sum(dz, axis=0, out=grads[self.bias])
        return (self.xp.matmul(dz, values[self.kernel].T),) if need_input_grads else (None,)


class ActivationLayer:
    def __init__(self, node, index, xp):
        self.act = activation(node.layer.activation, xp)

    def forward(self, values, inputs):
        z = inputs[0]
        a = self.act.forward(z)
        return a, (z, a)

    def backward(self, values, cache, da, grads, need_input_grads):
        z, a = cache
        return (self.act.backward(z, a, da),)


class Dropout:
    """y = x ⊙ m while training, with m the step's mask (0 or 1/(1 - rate), drawn by crossnn's
    StepClock); y = x when predicting (no mask). Gradient: dx = dy ⊙ m."""

    def __init__(self, node, index, xp):
        self.mask = None  # set by Program.forward for each training step

    def forward(self, values, inputs):
        mask = self.mask
        return (inputs[0] if mask is None else inputs[0] * mask), mask

    def backward(self, values, mask, da, grads, need_input_grads):
        return (da if mask is None else da * mask,)


class Concatenate:
    def __init__(self, node, index, xp):
        self.concat = xp.concat
        self.edges = tuple(itertools.accumulate(node.input_sizes, initial=0))

    def forward(self, values, inputs):
        return self.concat(inputs, axis=1), None

    def backward(self, values, cache, da, grads, need_input_grads):
        return tuple(da[:, lo:hi] for lo, hi in zip(self.edges[:-1], self.edges[1:]))


LAYERS = {spec.Dense: Dense, spec.ActivationLayer: ActivationLayer, spec.Concatenate: Concatenate,
          spec.Dropout: Dropout}


def register(spec_class: type[spec.Layer]):
    """Decorator: the NumPy op (a class with the constructor, forward and backward of the ops above)
    for a user-defined layer spec class."""
    def add(op):
        LAYERS[spec_class] = op
        return op
    return add


def layer(node, index, xp):
    if type(node.layer) not in LAYERS:
        raise UnsupportedFeature("numpy", f"layer type '{node.layer.kind}'")
    return LAYERS[type(node.layer)](node, index, xp)
