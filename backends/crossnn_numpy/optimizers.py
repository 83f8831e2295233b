"""Optimizers as init/update pairs over a list of parameter arrays, updated in place, written against
the array namespace `xp` (crossnn_numpy.xp). The rules are those of crossnn.spec.optimizers, in
PyTorch's operation order; `lr` is the step's scheduled learning rate. `grads` may be overwritten.

State is a dict of slot name -> list of arrays (one per parameter array; None until created) plus
integer counters, named as crossnn.checkpoint names them, so it can be saved and restored.
"""

from __future__ import annotations

import math

from crossnn import spec
from crossnn.errors import UnsupportedFeature

#: added to the global norm before dividing, as torch.nn.utils.clip_grad_norm_ does
CLIP_EPS = 1e-6


class Rule:
    """Shared steps of every rule: clip by global norm, then weight decay (L2 or decoupled)."""

    def __init__(self, s: spec.Optimizer, xp):
        self.s, self.xp = s, xp

    def init(self, params):
        return {**{slot: [None] * len(params) for slot in self.s.state_slots()},
                **{counter: 0 for counter in self.s.state_counters()}}

    def update(self, params, grads, state, lr):
        s, xp = self.s, self.xp
        if s.clip_norm is not None:
            norm = math.sqrt(sum(float(xp.sum(g * g)) for g in grads))
            coef = min(1.0, s.clip_norm / (norm + CLIP_EPS))
            for g in grads:
                g *= coef
        for i, (w, g) in enumerate(zip(params, grads)):
            if s.decoupled:
                w *= 1.0 - lr * s.decoupled
            if s.l2:
                g = g + s.l2 * w
            self.apply(i, w, g, state, lr)

    def apply(self, i, w, g, state, lr):
        raise NotImplementedError


class SGD(Rule):
    """b ← μ b + g (b = g first), d = g + μ b (Nesterov) or b, w ← w - lr d."""

    def apply(self, i, w, g, state, lr):
        s = self.s
        if s.momentum:
            buffers = state["momentum_buffer"]
            b = buffers[i]
            if b is None:
                b = buffers[i] = self.xp.copy(g)
            else:
                b *= s.momentum
                b += g
            g = g + s.momentum * b if s.nesterov else b
        self.xp.subtract_scaled(w, lr, g)  # w -= lr * g


class Adam(Rule):
    """m ← m + (1-β₁)(g - m), v ← β₂ v + (1-β₂) g², w ← w - (lr / (1-β₁ᵗ)) m / (√v / √(1-β₂ᵗ) + eps).
    AdamW is this rule with decoupled decay (applied in Rule.update)."""

    def update(self, params, grads, state, lr):
        state["step"] += 1
        super().update(params, grads, state, lr)

    def apply(self, i, w, g, state, lr):
        s, xp = self.s, self.xp
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if m[i] is None:
            m[i], v[i] = xp.zeros_like(w), xp.zeros_like(w)
        step_size = lr / (1.0 - s.beta1 ** t)
        correction2_sqrt = math.sqrt(1.0 - s.beta2 ** t)
        m[i] += (1.0 - s.beta1) * (g - m[i])
        v[i] *= s.beta2
        v[i] += ((1.0 - s.beta2) * g) * g
        denom = xp.sqrt(v[i]) / correction2_sqrt + s.eps
        w += (-step_size * m[i]) / denom


class RMSprop(Rule):
    """v ← α v + (1-α) g²; a = √(v - ḡ²) + eps (centered, ḡ ← ḡ + (1-α)(g - ḡ)) or √v + eps;
    with momentum b ← μ b + g / a, w ← w - lr b; else w ← w - lr g / a."""

    def update(self, params, grads, state, lr):
        state["step"] += 1
        super().update(params, grads, state, lr)

    def apply(self, i, w, g, state, lr):
        s, xp = self.s, self.xp
        v = state["square_avg"]
        if v[i] is None:
            v[i] = xp.zeros_like(w)
        v[i] *= s.alpha
        v[i] += ((1.0 - s.alpha) * g) * g
        if s.centered:
            avg = state["grad_avg"]
            if avg[i] is None:
                avg[i] = xp.zeros_like(w)
            avg[i] += (1.0 - s.alpha) * (g - avg[i])
            a = xp.sqrt(v[i] - avg[i] * avg[i]) + s.eps
        else:
            a = xp.sqrt(v[i]) + s.eps
        if s.momentum:
            b = state["momentum_buffer"]
            if b[i] is None:
                b[i] = xp.zeros_like(w)
            b[i] *= s.momentum
            b[i] += g / a
            self.xp.subtract_scaled(w, lr, b[i])
        else:
            w += (-lr * g) / a


class Adagrad(Rule):
    """s ← s + g² (s starts at initial_accumulator), w ← w - lr g / (√s + eps)."""

    def update(self, params, grads, state, lr):
        state["step"] += 1
        super().update(params, grads, state, lr)

    def apply(self, i, w, g, state, lr):
        s, xp = self.s, self.xp
        total = state["sum"]
        if total[i] is None:
            total[i] = xp.zeros_like(w) + s.initial_accumulator
        total[i] += g * g
        w += (-lr * g) / (xp.sqrt(total[i]) + s.eps)


OPTIMIZERS = {spec.SGD: SGD, spec.Adam: Adam, spec.AdamW: Adam, spec.RMSprop: RMSprop, spec.Adagrad: Adagrad}


def register(spec_class: type[spec.Optimizer]):
    """Decorator: the NumPy rule (a Rule subclass) for a user-defined optimizer spec class."""
    def add(rule: type[Rule]) -> type[Rule]:
        OPTIMIZERS[spec_class] = rule
        return rule
    return add


def optimizer(s: spec.Optimizer, xp) -> Rule:
    if type(s) not in OPTIMIZERS:
        raise UnsupportedFeature("numpy", f"optimizer '{s.kind}'")
    return OPTIMIZERS[type(s)](s, xp)
