"""Optimizers: the update rules, written out. g is the loss gradient for parameter w, t the step
count starting at 1, and every state buffer starts at zero. These are PyTorch's and the papers'
rules; where Keras computes something else the TensorFlow backend still implements these."""

from __future__ import annotations

from dataclasses import dataclass

from crossnn.spec.base import Spec, finite, positive, require


@dataclass(frozen=True, kw_only=True)
class Optimizer(Spec, family="optimizer"):
    """An update rule. `lr` has no default anywhere: the frameworks' defaults differ."""

    lr: float

    def validate(self):
        finite(self, "lr")
        positive(self, "lr")


@dataclass(frozen=True, kw_only=True)
class SGD(Optimizer, kind="sgd"):
    """Stochastic gradient descent with heavy-ball momentum and L2 weight decay (torch.optim.SGD):

        g ← g + weight_decay · w
        b ← momentum · b + g                (b = g on the first step)
        d ← g + momentum · b if nesterov else b      (d = g when momentum = 0)
        w ← w - lr · d

    Keras' SGD keeps v ← momentum · v - lr · g instead: the same while lr is constant, different
    once lr changes.
    """

    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def validate(self):
        super().validate()
        finite(self, "momentum", "weight_decay")
        require(0.0 <= self.momentum < 1.0, "momentum", f"must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0.0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(not self.nesterov or self.momentum > 0, "nesterov", "needs momentum > 0")


@dataclass(frozen=True, kw_only=True)
class Adam(Optimizer, kind="adam"):
    """Adam (Kingma & Ba; torch.optim.Adam), with optional L2 weight decay:

        g ← g + weight_decay · w
        m ← beta1 · m + (1 - beta1) · g
        v ← beta2 · v + (1 - beta2) · g²
        m̂ = m / (1 - beta1^t),  v̂ = v / (1 - beta2^t)
        w ← w - lr · m̂ / (√v̂ + eps)

    eps has no default: torch uses 1e-8 on √v̂, Keras 1e-7 added to √v before the bias correction
    (in effect 1e-7 / √(1 - beta2^t) here).
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float
    weight_decay: float = 0.0

    def validate(self):
        super().validate()
        finite(self, "beta1", "beta2", "eps", "weight_decay")
        require(0.0 <= self.beta1 < 1.0, "beta1", f"must be in [0, 1), got {self.beta1}")
        require(0.0 <= self.beta2 < 1.0, "beta2", f"must be in [0, 1), got {self.beta2}")
        positive(self, "eps")
        require(self.weight_decay >= 0.0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
