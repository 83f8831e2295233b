"""Optimizers as init/update pairs over a list of parameter arrays, updated in place, written against
the array namespace `xp` (crossnn_numpy.xp). The rules are those of crossnn.spec.optimizers, in
PyTorch's operation order. `grads` may be overwritten."""

from __future__ import annotations

import math

from crossnn import spec
from crossnn.errors import UnsupportedFeature


class SGD:
    """b ← μ b + g (b = g first), d = g + μ b (Nesterov) or b, w ← w - lr d; g includes L2 decay."""

    def __init__(self, s: spec.SGD, xp):
        self.s, self.xp = s, xp

    def init(self, params):
        return {"momentum_buffer": [None] * len(params)}

    def update(self, params, grads, state):
        s, buffers = self.s, state["momentum_buffer"]
        lr, mu = s.lr, s.momentum
        for i, (w, g) in enumerate(zip(params, grads)):
            if s.l2:
                g = g + s.l2 * w
            if mu:
                b = buffers[i]
                if b is None:
                    b = buffers[i] = self.xp.copy(g)
                else:
                    b *= mu
                    b += g
                g = g + mu * b if s.nesterov else b
            self.xp.subtract_scaled(w, lr, g)  # w -= lr * g


class Adam:
    """m ← m + (1-β₁)(g - m), v ← β₂ v + (1-β₂) g², w ← w - (lr / (1-β₁ᵗ)) m / (√v / √(1-β₂ᵗ) + eps)."""

    def __init__(self, s: spec.Adam, xp):
        self.s, self.xp = s, xp

    def init(self, params):
        zeros = self.xp.zeros_like
        return {"step": 0, "exp_avg": [zeros(w) for w in params], "exp_avg_sq": [zeros(w) for w in params]}

    def update(self, params, grads, state):
        s, xp = self.s, self.xp
        state["step"] += 1
        t = state["step"]
        step_size = s.lr / (1.0 - s.beta1 ** t)
        correction2_sqrt = math.sqrt(1.0 - s.beta2 ** t)
        for w, g, m, v in zip(params, grads, state["exp_avg"], state["exp_avg_sq"]):
            if s.l2:
                g = g + s.l2 * w
            m += (1.0 - s.beta1) * (g - m)
            v *= s.beta2
            v += ((1.0 - s.beta2) * g) * g
            denom = xp.sqrt(v) / correction2_sqrt + s.eps
            w += (-step_size * m) / denom


OPTIMIZERS = {spec.SGD: SGD, spec.Adam: Adam}


def unsupported_options(s: spec.Optimizer) -> list[str]:
    """The optimizer options these rules do not implement yet (L2 decay is implemented)."""
    return [name for name, used in (("decoupled weight decay", s.decoupled), ("clip_norm", s.clip_norm is not None),
                                    ("a learning-rate schedule", s.schedule is not None)) if used]


def optimizer(s: spec.Optimizer, xp):
    if type(s) not in OPTIMIZERS:
        raise UnsupportedFeature("numpy", f"optimizer '{s.kind}'")
    if unsupported_options(s):
        raise UnsupportedFeature("numpy", f"optimizer '{s.kind}' with {', '.join(unsupported_options(s))}")
    return OPTIMIZERS[type(s)](s, xp)
