"""Optimizers: the update rules, written out, and learning-rate schedules.

g is the loss gradient for parameter w, t the step count starting at 1, and every state buffer
starts at zero unless a field says otherwise. These are PyTorch's and the papers' rules; where
Keras computes something else the TensorFlow backend still implements these. Every step, in order:

1. clip:   with clip_norm set, every g ← g · min(1, clip_norm / (‖g‖ + 1e-6)), where ‖g‖ is the
           2-norm of all gradients together (torch.nn.utils.clip_grad_norm_; TF's
           clip_by_global_norm has no 1e-6).
2. decay:  weight_decay_kind = "l2":        g ← g + weight_decay · w     (torch's weight_decay)
           weight_decay_kind = "decoupled": w ← w · (1 - lr_t · weight_decay) before the update
                                            (AdamW's, and Keras' weight_decay for every optimizer)
3. update: the optimizer's rule below, with the scheduled learning rate lr_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from crossnn.spec.base import Spec, SpecError, finite, positive, require


@dataclass(frozen=True, kw_only=True)
class Schedule(Spec, family="schedule"):
    """The learning rate used at a step: lr_t = lr · factor(u), where u counts `unit`s (epochs or
    steps) completed before the step, from 0."""

    unit: Literal["epoch", "step"]

    def factor(self, u: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class StepDecay(Schedule, kind="step"):
    """factor(u) = gamma ^ floor(u / step_size) (torch's StepLR stepped once per unit)."""

    step_size: int
    gamma: float

    def validate(self):
        positive(self, "step_size", "gamma")
        finite(self, "gamma")

    def factor(self, u):
        return self.gamma ** (u // self.step_size)


@dataclass(frozen=True, kw_only=True)
class ExponentialDecay(Schedule, kind="exponential"):
    """factor(u) = gamma ^ u (torch's ExponentialLR stepped once per unit; Keras' ExponentialDecay
    with decay_rate = gamma, decay_steps = the steps in one unit and, for unit = "epoch",
    staircase=True)."""

    gamma: float

    def validate(self):
        positive(self, "gamma")
        finite(self, "gamma")

    def factor(self, u):
        return self.gamma ** u


@dataclass(frozen=True, kw_only=True)
class Optimizer(Spec, family="optimizer"):
    """An update rule. `lr` has no default here: the frameworks' defaults differ. A spec's preset
    (`defaults = "torch" | "keras"`, crossnn.spec.presets) fills its framework's, as it does every
    field below said to have no default; the values live in the differences catalog.
    weight_decay_kind must be given whenever weight_decay > 0: "weight decay" means L2 in torch's
    optimizers and decoupled decay in Keras'."""

    lr: float
    weight_decay: float = 0.0
    weight_decay_kind: Literal["l2", "decoupled"] | None = None
    clip_norm: float | None = None
    schedule: Schedule | None = None

    def validate(self):
        finite(self, "lr", "weight_decay")
        positive(self, "lr")
        require(self.weight_decay >= 0.0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.weight_decay == 0.0 or self.weight_decay_kind is not None, "weight_decay_kind",
                "is required when weight_decay > 0: \"l2\" (torch's meaning) or \"decoupled\" (Keras', AdamW's)")
        if self.clip_norm is not None:
            require(math.isfinite(self.clip_norm) and self.clip_norm > 0, "clip_norm",
                    f"must be a positive number, got {self.clip_norm}")

    def fields_dict(self):
        """File order: lr, the rule's own fields, then decay, clipping and schedule."""
        fields = super().fields_dict()
        shared = ("weight_decay", "weight_decay_kind", "clip_norm", "schedule")
        head = {"lr": fields.pop("lr")}
        tail = {k: fields.pop(k) for k in shared if k in fields}
        return {**head, **fields, **tail}

    def state_slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state buffers, as checkpoints store them (PyTorch's names)."""
        return ()

    def state_counters(self) -> tuple[str, ...]:
        """Names of the integer counters the rule keeps."""
        return ()

    def lr_at(self, epoch: int, step: int) -> float:
        """The learning rate of the step with this 0-based epoch and step index."""
        if self.schedule is None:
            return self.lr
        return self.lr * self.schedule.factor(epoch if self.schedule.unit == "epoch" else step)

    @property
    def l2(self) -> float:
        """The L2 coefficient added to gradients (0 unless weight_decay_kind is "l2")."""
        return self.weight_decay if self.weight_decay_kind == "l2" else 0.0

    @property
    def decoupled(self) -> float:
        """The decoupled decay coefficient (0 unless weight_decay_kind is "decoupled")."""
        return self.weight_decay if self.weight_decay_kind == "decoupled" else 0.0


def _unit_interval(spec, *names):
    for name in names:
        value = getattr(spec, name)
        require(0.0 <= value < 1.0, name, f"must be in [0, 1), got {value}")


@dataclass(frozen=True, kw_only=True)
class SGD(Optimizer, kind="sgd"):
    """Stochastic gradient descent with heavy-ball momentum (torch.optim.SGD):

        b ← momentum · b + g                (b = g on the first step)
        d ← g + momentum · b if nesterov else b      (d = g when momentum = 0)
        w ← w - lr_t · d

    Keras' SGD keeps v ← momentum · v - lr · g, w ← w + v instead: the same while lr is constant,
    different once it changes.
    """

    momentum: float = 0.0
    nesterov: bool = False

    def validate(self):
        super().validate()
        finite(self, "momentum")
        _unit_interval(self, "momentum")
        require(not self.nesterov or self.momentum > 0, "nesterov", "needs momentum > 0")

    def state_slots(self):
        return ("momentum_buffer",) if self.momentum else ()


@dataclass(frozen=True, kw_only=True)
class Adam(Optimizer, kind="adam"):
    """Adam (Kingma & Ba; torch.optim.Adam):

        m ← beta1 · m + (1 - beta1) · g
        v ← beta2 · v + (1 - beta2) · g²
        m̂ = m / (1 - beta1^t),  v̂ = v / (1 - beta2^t)
        w ← w - lr_t · m̂ / (√v̂ + eps)

    eps has no default: torch uses 1e-8 on √v̂, Keras 1e-7 added to √v before the bias correction
    (in effect 1e-7 / √(1 - beta2^t) here).
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float

    def validate(self):
        super().validate()
        finite(self, "beta1", "beta2", "eps")
        _unit_interval(self, "beta1", "beta2")
        positive(self, "eps")

    def state_slots(self):
        return ("exp_avg", "exp_avg_sq")

    def state_counters(self):
        return ("step",)


@dataclass(frozen=True, kw_only=True)
class AdamW(Adam, kind="adamw"):
    """Adam with decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW, keras AdamW):
    w ← w · (1 - lr_t · weight_decay), then the Adam update. weight_decay has no default (torch 0.01,
    Keras 0.004) and weight_decay_kind, if given, must be "decoupled"."""

    weight_decay: float = field()  # required: a bare annotation would inherit Optimizer's 0.0 as its default

    def validate(self):
        if self.weight_decay_kind is None:
            object.__setattr__(self, "weight_decay_kind", "decoupled")
        if self.weight_decay_kind != "decoupled":
            raise SpecError("adamw's weight decay is decoupled by definition; use adam for L2",
                            ("weight_decay_kind",))
        super().validate()


@dataclass(frozen=True, kw_only=True)
class RMSprop(Optimizer, kind="rmsprop"):
    """RMSprop (torch.optim.RMSprop):

        v ← alpha · v + (1 - alpha) · g²
        a = √(v - ḡ²) + eps with centered (ḡ ← alpha · ḡ + (1 - alpha) · g), else √v + eps
        with momentum: b ← momentum · b + g / a,  w ← w - lr_t · b
        without:       w ← w - lr_t · g / a

    alpha and eps have no defaults: torch uses alpha 0.99 and eps 1e-8 outside the square root,
    Keras rho 0.9 and epsilon 1e-7 inside it (g / √(v + eps)). Keras' momentum buffer holds
    lr · g / a, so it differs from this rule once lr changes.
    """

    alpha: float
    eps: float
    momentum: float = 0.0
    centered: bool = False

    def validate(self):
        super().validate()
        finite(self, "alpha", "eps", "momentum")
        _unit_interval(self, "alpha", "momentum")
        positive(self, "eps")

    def state_slots(self):
        return (("square_avg",) + (("momentum_buffer",) if self.momentum else ())
                + (("grad_avg",) if self.centered else ()))

    def state_counters(self):
        return ("step",)


@dataclass(frozen=True, kw_only=True)
class Adagrad(Optimizer, kind="adagrad"):
    """Adagrad (Duchi et al.; torch.optim.Adagrad with lr_decay 0):

        s ← s + g²        (s starts at initial_accumulator)
        w ← w - lr_t · g / (√s + eps)

    initial_accumulator and eps have no defaults: torch starts s at 0 and uses eps 1e-10 outside
    the square root, Keras starts at 0.1 with epsilon 1e-7 inside it.
    """

    initial_accumulator: float
    eps: float

    def validate(self):
        super().validate()
        finite(self, "initial_accumulator", "eps")
        require(self.initial_accumulator >= 0.0, "initial_accumulator",
                f"must be >= 0, got {self.initial_accumulator}")
        positive(self, "eps")

    def state_slots(self):
        return ("sum",)

    def state_counters(self):
        return ("step",)
