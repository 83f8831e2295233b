"""Initializers: how each parameter's initial value is drawn, once, in NumPy float64.

Every initializer gets the parameter's shape and its layer's fan_in and fan_out (for a Dense layer,
inputs and units; a bias uses its layer's fans, as PyTorch's nn.Linear does).
The variance-scaling family follows Keras' definition: with n = fan_in, fan_out or their mean
(at least 1),

    uniform:          U(-√(3 s / n), +√(3 s / n))
    normal:           N(0, s / n)
    truncated_normal: N(0, σ²) cut at ±2σ, σ = √(s / n) / 0.87962566103423978
                      (the factor restores the variance the cut removes)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from crossnn.spec.base import Spec, SpecError, finite, positive, require, short_text, to_plain


@dataclass(frozen=True, kw_only=True)
class Initializer(Spec, family="initializer"):
    """Draws an initial parameter value."""

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
        raise NotImplementedError

    def for_units(self, units: int) -> Initializer:
        """This initializer for a layer whose output (hidden state) has `units` units; only initializers
        defined by the units differ (units_uniform)."""
        return self

    def describe(self) -> str:
        """One short line for `crossnn show`: kind, or kind(field=value, ...)."""
        return short_text(to_plain(self))


@dataclass(frozen=True, kw_only=True)
class Zeros(Initializer, kind="zeros"):
    """w = 0."""

    def sample(self, rng, shape, fan_in, fan_out):
        return np.zeros(shape)


@dataclass(frozen=True, kw_only=True)
class Ones(Initializer, kind="ones"):
    """w = 1."""

    def sample(self, rng, shape, fan_in, fan_out):
        return np.ones(shape)


@dataclass(frozen=True, kw_only=True)
class Constant(Initializer, kind="constant"):
    """w = value."""

    value: float

    def validate(self):
        finite(self, "value")

    def sample(self, rng, shape, fan_in, fan_out):
        return np.full(shape, self.value)


@dataclass(frozen=True, kw_only=True)
class Uniform(Initializer, kind="uniform"):
    """w ~ U(low, high). No defaults: Keras' RandomUniform is (-0.05, 0.05), torch.nn.init.uniform_ (0, 1)."""

    low: float
    high: float

    def validate(self):
        finite(self, "low", "high")
        require(self.low < self.high, "high", f"must be greater than low ({self.low}), got {self.high}")

    def sample(self, rng, shape, fan_in, fan_out):
        return rng.uniform(self.low, self.high, size=shape)


@dataclass(frozen=True, kw_only=True)
class Normal(Initializer, kind="normal"):
    """w ~ N(mean, stddev²). No defaults: Keras' RandomNormal uses stddev 0.05, torch.nn.init.normal_ 1."""

    mean: float
    stddev: float

    def validate(self):
        finite(self, "mean", "stddev")
        positive(self, "stddev")

    def sample(self, rng, shape, fan_in, fan_out):
        return rng.normal(self.mean, self.stddev, size=shape)


@dataclass(frozen=True, kw_only=True)
class TruncatedNormal(Initializer, kind="truncated_normal"):
    """w ~ N(mean, stddev²), values further than 2·stddev from the mean drawn again
    (tf.random.truncated_normal and Keras' TruncatedNormal; torch's trunc_normal_ cuts at absolute bounds)."""

    mean: float
    stddev: float

    def validate(self):
        finite(self, "mean", "stddev")
        positive(self, "stddev")

    def sample(self, rng, shape, fan_in, fan_out):
        return _truncated_normal(rng, self.mean, self.stddev, shape)


@dataclass(frozen=True, kw_only=True)
class VarianceScaling(Initializer, kind="variance_scaling"):
    """The general form behind the named fan-based initializers (see the module docstring)."""

    scale: float
    mode: Literal["fan_in", "fan_out", "fan_avg"]
    distribution: Literal["uniform", "normal", "truncated_normal"]

    def validate(self):
        finite(self, "scale")
        positive(self, "scale")

    def sample(self, rng, shape, fan_in, fan_out):
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, size=shape)
        if self.distribution == "normal":
            return rng.normal(0.0, math.sqrt(variance), size=shape)
        return _truncated_normal(rng, 0.0, math.sqrt(variance) / 0.87962566103423978, shape)


@dataclass(frozen=True, kw_only=True)
class _FanScaled(Initializer):
    """A fixed member of the variance-scaling family, known by its own name."""

    rule: ClassVar[VarianceScaling]

    def sample(self, rng, shape, fan_in, fan_out):
        return self.rule.sample(rng, shape, fan_in, fan_out)


@dataclass(frozen=True, kw_only=True)
class GlorotUniform(_FanScaled, kind="glorot_uniform"):
    """w ~ U(±√(6 / (fan_in + fan_out))): Keras' Dense default and torch's xavier_uniform_."""

    rule = VarianceScaling(scale=1.0, mode="fan_avg", distribution="uniform")


@dataclass(frozen=True, kw_only=True)
class GlorotNormal(_FanScaled, kind="glorot_normal"):
    """w ~ N(0, 2 / (fan_in + fan_out)) untruncated, as torch's xavier_normal_
    (Keras' GlorotNormal truncates: write variance_scaling with truncated_normal for that)."""

    rule = VarianceScaling(scale=1.0, mode="fan_avg", distribution="normal")


@dataclass(frozen=True, kw_only=True)
class HeUniform(_FanScaled, kind="he_uniform"):
    """w ~ U(±√(6 / fan_in)): Keras' HeUniform and torch's kaiming_uniform_(nonlinearity="relu")."""

    rule = VarianceScaling(scale=2.0, mode="fan_in", distribution="uniform")


@dataclass(frozen=True, kw_only=True)
class HeNormal(_FanScaled, kind="he_normal"):
    """w ~ N(0, 2 / fan_in) untruncated, as torch's kaiming_normal_ (Keras' HeNormal truncates)."""

    rule = VarianceScaling(scale=2.0, mode="fan_in", distribution="normal")


@dataclass(frozen=True, kw_only=True)
class LecunUniform(_FanScaled, kind="lecun_uniform"):
    """w ~ U(±√(3 / fan_in)), variance 1 / fan_in: Keras' LecunUniform."""

    rule = VarianceScaling(scale=1.0, mode="fan_in", distribution="uniform")


@dataclass(frozen=True, kw_only=True)
class LecunNormal(_FanScaled, kind="lecun_normal"):
    """w ~ N(0, 1 / fan_in) untruncated (Keras' LecunNormal truncates)."""

    rule = VarianceScaling(scale=1.0, mode="fan_in", distribution="normal")


@dataclass(frozen=True, kw_only=True)
class FanInUniform(_FanScaled, kind="fan_in_uniform"):
    """w ~ U(±1 / √fan_in): PyTorch nn.Linear's default for its weight and its bias (kaiming_uniform_
    with a = √5). Variance 1 / (3 fan_in), a third of lecun_uniform's, with which it is often confused."""

    rule = VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def _truncated_normal(rng: np.random.Generator, mean: float, stddev: float, shape) -> np.ndarray:
    out = rng.normal(0.0, 1.0, size=shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
        bad = np.abs(out) > 2.0
    return mean + stddev * out


@dataclass(frozen=True, kw_only=True)
class Orthogonal(Initializer, kind="orthogonal"):
    """w = gain · Q, Q an orthogonal matrix from the QR decomposition of a standard normal matrix of the
    parameter's 2-D shape (rows = all axes but the last), signs fixed by R's diagonal: Keras' Orthogonal
    and torch's orthogonal_ (Keras' default recurrent_initializer)."""

    gain: float = 1.0

    def validate(self):
        finite(self, "gain")
        positive(self, "gain")

    def sample(self, rng, shape, fan_in, fan_out):
        rows, cols = math.prod(shape[:-1]) if len(shape) > 1 else 1, shape[-1]
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)


@dataclass(frozen=True, kw_only=True)
class UnitsUniform(Initializer, kind="units_uniform"):
    """w ~ U(±1/√units), units the width of the layer's output (the hidden state of a recurrent layer):
    PyTorch's default for every weight and bias of nn.RNN, nn.LSTM and nn.GRU, whose input kernels'
    fans would give other bounds. The layers that know their units bind it (Initializer.for_units)."""

    def for_units(self, units):
        bound = 1.0 / math.sqrt(units)
        return Uniform(low=-bound, high=bound)

    def sample(self, rng, shape, fan_in, fan_out):
        raise SpecError("units_uniform applies to layers with units (dense, conv2d, the recurrent layers)")
