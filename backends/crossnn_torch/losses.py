"""Losses as nn loss modules, the formulas of crossnn.spec.losses.

torch's built-ins are used where they compute the spec's formula and gradient: nn.MSELoss,
nn.L1Loss, nn.HuberLoss, nn.BCELoss (its log clamp is fixed at -100), nn.BCEWithLogitsLoss and
nn.CrossEntropyLoss (logits; class-index or one-hot targets). The rest are autograd Functions with
the spec's value and the reference backend's gradient.

Native flavour (crossnn.differences): "bce-clamp" takes nn.BCELoss whatever the spec's log_min
(torch clamps log p at -100); "cross-entropy-inputs" takes nn.CrossEntropyLoss on whatever the model
outputs, softmax probabilities included (the classic double softmax).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crossnn import spec
from crossnn.errors import UnsupportedFeature

#: the log clamp built into nn.BCELoss
TORCH_BCE_LOG_MIN = -100.0
#: floor of p (1 - p) in the BCE gradient: binary_cross_entropy_backward's float constant 1e-12
BCE_GRAD_FLOOR = spec.BCE.grad_floor


class ClampedBCEFunction(torch.autograd.Function):
    """L = mean((y - 1) max(log1p(-p), log_min) - y max(log p, log_min));
    dL/dp = (p - y) / max((1 - p) p, BCE_GRAD_FLOOR) / (N K), as torch computes it for its clamp of -100."""

    @staticmethod
    def forward(ctx, p, y, log_min):
        ctx.save_for_backward(p, y)
        log_p = torch.clamp_min(torch.log(p), log_min)
        log_q = torch.clamp_min(torch.log1p(-p), log_min)
        return torch.mean((y - 1.0) * log_q - y * log_p)

    @staticmethod
    def backward(ctx, grad):
        p, y = ctx.saved_tensors
        d = (p - y) / torch.clamp_min((1.0 - p) * p, BCE_GRAD_FLOOR) * (grad / p.numel())
        return d, None, None


# ClampedBCELoss and ProbabilityCrossEntropyLoss repeat the same small module on purpose: `crossnn code`
# copies each one's source into a standalone script (crossnn_torch.script), so neither may lean on a
# shared base class.
class ClampedBCELoss(nn.Module):
    """Binary cross-entropy on probabilities with the log clamp `log_min` (nn.BCELoss fixes it at -100)."""

    def __init__(self, log_min: float):
        super().__init__()
        self.log_min = log_min

    def extra_repr(self):
        return f"log_min={self.log_min}"

    def forward(self, p, y):
        return ClampedBCEFunction.apply(p, y, self.log_min)


class ProbabilityCrossEntropyFunction(torch.autograd.Function):
    """L = -Σ y max(log p, log_min) / N on class probabilities p and one-hot y;
    dL/dp = -y / p / N where log p > log_min, 0 where the clamp is active."""

    @staticmethod
    def forward(ctx, p, y, log_min):
        log_p = torch.log(p)
        active = log_p > log_min
        ctx.save_for_backward(p, y, active)
        return -torch.sum(y * torch.where(active, log_p, log_min)) / p.shape[0]

    @staticmethod
    def backward(ctx, grad):
        p, y, active = ctx.saved_tensors
        d = torch.where(active, -y / torch.where(active, p, 1.0), 0.0) * (grad / p.shape[0])
        return d, None, None


class ProbabilityCrossEntropyLoss(nn.Module):
    """Categorical cross-entropy on probabilities (nn.CrossEntropyLoss wants logits), log clamped."""

    def __init__(self, log_min: float):
        super().__init__()
        self.log_min = log_min

    def extra_repr(self):
        return f"log_min={self.log_min}"

    def forward(self, p, y):
        return ProbabilityCrossEntropyFunction.apply(p, y, self.log_min)


LOSSES = {
    spec.MSE: lambda s: nn.MSELoss(),
    spec.MAE: lambda s: nn.L1Loss(),
    spec.Huber: lambda s: nn.HuberLoss(delta=s.delta),
    spec.BCE: lambda s: nn.BCELoss() if s.log_min == TORCH_BCE_LOG_MIN else ClampedBCELoss(s.log_min),
    spec.BCELogits: lambda s: nn.BCEWithLogitsLoss(),
    spec.CrossEntropy: lambda s: nn.CrossEntropyLoss() if s.from_logits else ProbabilityCrossEntropyLoss(s.log_min),
}


def loss(s: spec.Loss, native: frozenset[str] = frozenset()) -> nn.Module:
    """The loss module for spec `s`, called as loss(model_output, targets(...)[batch])."""
    if isinstance(s, spec.BCE) and "bce-clamp" in native:
        return nn.BCELoss()
    if _takes_logits(s, native):
        return nn.CrossEntropyLoss()
    if type(s) not in LOSSES:
        raise UnsupportedFeature("torch", f"loss '{s.kind}'")
    return LOSSES[type(s)](s)


def _takes_logits(s: spec.Loss, native: frozenset[str]) -> bool:
    """Whether the lowering is nn.CrossEntropyLoss (on logits, or on anything with the native flavour)."""
    return isinstance(s, spec.CrossEntropy) and (s.from_logits or "cross-entropy-inputs" in native)


def targets(s: spec.Loss, y: np.ndarray, classes: int, *, dtype, device, one_hot: bool = False,
            native: frozenset[str] = frozenset()) -> torch.Tensor:
    """The data set's targets as the loss module wants them: class indices (int64) for
    nn.CrossEntropyLoss with sparse labels, one-hot rows for the probability cross-entropy (and for
    every sparse target when `one_hot`), else the values in `dtype`."""
    if s.sparse_targets:
        labels = torch.as_tensor(y, dtype=torch.int64, device=device)
        if _takes_logits(s, native) and not one_hot:
            return labels
        return nn.functional.one_hot(labels, classes).to(dtype)
    return torch.as_tensor(y, dtype=dtype, device=device)
