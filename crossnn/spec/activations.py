"""Activation functions, applied elementwise (softmax: along the last axis).

Derivatives at kinks follow what PyTorch and TensorFlow both do, so gradients agree exactly:
relu'(0) = 0, leaky_relu'(0) = negative_slope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crossnn.spec.base import Spec, finite


@dataclass(frozen=True, kw_only=True)
class Activation(Spec, family="activation"):
    """An elementwise function f applied to a layer's pre-activation z."""


@dataclass(frozen=True, kw_only=True)
class Linear(Activation, kind="linear"):
    """f(z) = z."""


@dataclass(frozen=True, kw_only=True)
class ReLU(Activation, kind="relu"):
    """f(z) = max(z, 0); f'(0) = 0."""


@dataclass(frozen=True, kw_only=True)
class Sigmoid(Activation, kind="sigmoid"):
    """f(z) = 1 / (1 + exp(-z)); f' = f (1 - f)."""


@dataclass(frozen=True, kw_only=True)
class Tanh(Activation, kind="tanh"):
    """f(z) = tanh(z); f' = 1 - f²."""


@dataclass(frozen=True, kw_only=True)
class Softmax(Activation, kind="softmax"):
    """f(z)_i = exp(z_i - max z) / Σ_j exp(z_j - max z) over the last axis;
    the vector-Jacobian product is dz = f ⊙ (da - Σ_j da_j f_j)."""


@dataclass(frozen=True, kw_only=True)
class LeakyReLU(Activation, kind="leaky_relu"):
    """f(z) = z for z > 0, negative_slope · z otherwise; f'(0) = negative_slope.

    The slope has no default: PyTorch's is 0.01, keras.layers.LeakyReLU's 0.3 and
    keras.activations.leaky_relu's 0.2. tf.nn.leaky_relu takes alpha as a float32 op attribute,
    so in float64 a slope of 0.01 acts as 0.009999999776482582.
    """

    negative_slope: float

    def validate(self) -> None:
        finite(self, "negative_slope")


@dataclass(frozen=True, kw_only=True)
class Softplus(Activation, kind="softplus"):
    """f(z) = log(1 + exp(z)), computed as max(z, 0) + log1p(exp(-|z|)); f' = sigmoid(z).

    PyTorch's nn.Softplus switches to f(z) = z above z = 20 (its `threshold`); the spec does not.
    """


@dataclass(frozen=True, kw_only=True)
class GELU(Activation, kind="gelu"):
    """approximate = "none": f(z) = z Φ(z) = ½ z (1 + erf(z / √2));
    approximate = "tanh": f(z) = ½ z (1 + tanh(√(2/π) (z + 0.044715 z³))).

    No default: PyTorch's nn.GELU, tf.nn.gelu and keras.activations.gelu default to the exact form,
    keras.ops.gelu and jax.nn.gelu to the tanh form. tf.nn.gelu builds 1/√2 and
    0.044715 through float32 tensors, so in float64 it is ~5e-9 off this formula.
    """

    approximate: Literal["none", "tanh"]
