"""Losses. p is the model output, y the target, both (N, K); every loss is a mean over all N·K
elements (or over the N samples for the cross-entropies, which sum over classes first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from crossnn.spec.base import Spec, finite, positive, require


@dataclass(frozen=True, kw_only=True)
class Loss(Spec, family="loss"):
    """A scalar objective L(p, y), reduced by the mean.

    `outputs` says what the model output means, which decides how accuracy is read from it:
    "value" (regression), "probability" or "logit" (binary), "class_probabilities" or
    "class_logits" (categorical).
    """

    outputs: ClassVar[str] = "value"
    sparse_targets: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True)
class MSE(Loss, kind="mse"):
    """L = mean((p - y)²); dL/dp = 2 (p - y) / (N K)."""


@dataclass(frozen=True, kw_only=True)
class MAE(Loss, kind="mae"):
    """L = mean(|p - y|); dL/dp = sign(p - y) / (N K), with sign(0) = 0."""


@dataclass(frozen=True, kw_only=True)
class Huber(Loss, kind="huber"):
    """With d = p - y: ½ d² where |d| <= delta, delta (|d| - ½ delta) elsewhere; mean over elements.
    dL/dp = clip(d, -delta, delta) / (N K). (torch.nn.HuberLoss and keras.losses.Huber; Keras'
    default delta is 1.0 like torch's, but torch's SmoothL1Loss divides by beta.)"""

    delta: float

    def validate(self):
        finite(self, "delta")
        positive(self, "delta")


@dataclass(frozen=True, kw_only=True)
class BCE(Loss, kind="bce"):
    """Binary cross-entropy on probabilities p in [0, 1]:

        L     = -mean(y · max(log p, log_min) + (1 - y) · max(log1p(-p), log_min))
        dL/dp = (p - y) / max(p (1 - p), grad_floor) / (N K)

    The clamp keeps L finite when p reaches 0 or 1 (in float32 a sigmoid rounds to 1 from z ≈ 17 and
    to 0 only near z ≈ -104). The gradient is that of the unclamped form with its denominator
    floored, so it stays finite at p = 0 or 1 (autograd through the clamped logs would give
    0 · ∞ = NaN there); this is what PyTorch's BCELoss computes, with log_min = -100 and a floor that
    is the float32 constant 1e-12 (grad_floor, 9.999999960041972e-13 in float64). Keras instead clips
    p to [1e-7, 1 - 1e-7] and, after a sigmoid, recovers the logits.
    """

    outputs: ClassVar[str] = "probability"
    grad_floor: ClassVar[float] = 9.999999960041972e-13
    log_min: float

    def validate(self):
        finite(self, "log_min")
        require(self.log_min < 0, "log_min", f"must be negative, got {self.log_min}")


@dataclass(frozen=True, kw_only=True)
class BCELogits(Loss, kind="bce_logits"):
    """Binary cross-entropy on logits z, in the stable form
        L = mean(max(z, 0) - z y + log1p(exp(-|z|)));  dL/dz = (sigmoid(z) - y) / (N K)."""

    outputs: ClassVar[str] = "logit"


@dataclass(frozen=True, kw_only=True)
class CrossEntropy(Loss, kind="cross_entropy"):
    """Categorical cross-entropy, a mean over the N samples of a sum over the K classes.

    from_logits = true:  L = -mean_n Σ_k y_nk log_softmax(z_n)_k,  dL/dz = (softmax(z) - y) / N
    from_logits = false: L = -mean_n Σ_k y_nk max(log p_nk, log_min) on probabilities p,
                         dL/dp = -y / p / N where log p > log_min, else 0
                         (log_min required then; Keras instead rescales p to sum to 1 and clips it)
    sparse = true: y holds class indices (N,) or (N, 1) instead of one-hot rows.
    """

    from_logits: bool
    sparse: bool
    log_min: float | None = None

    def validate(self):
        if self.from_logits:
            require(self.log_min is None, "log_min", "applies only with from_logits = false")
        else:
            require(self.log_min is not None, "log_min",
                    "is required with from_logits = false (the clamp of log p, e.g. -100)")
            finite(self, "log_min")
            require(self.log_min < 0, "log_min", f"must be negative, got {self.log_min}")

    @property
    def outputs(self) -> str:  # type: ignore[override]
        return "class_logits" if self.from_logits else "class_probabilities"

    @property
    def sparse_targets(self) -> bool:  # type: ignore[override]
        return self.sparse
