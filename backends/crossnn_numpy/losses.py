"""Losses: value_and_grad(p, y) -> (L, dL/dp), the formulas of crossnn.spec.losses, written against the
array namespace `xp` (crossnn_numpy.xp). L is a 0-d array of the namespace (it stays on the device)."""

from __future__ import annotations

import math

from crossnn import spec
from crossnn.errors import UnsupportedFeature


class MSE:
    def __init__(self, s, xp):
        self.xp = xp

    def value_and_grad(self, p, y):
        d = p - y
        return self.xp.mean(d * d), (2.0 / math.prod(d.shape)) * d


class MAE:
    def __init__(self, s, xp):
        self.xp = xp

    def value_and_grad(self, p, y):
        d = p - y
        return self.xp.mean(self.xp.abs(d)), self.xp.sign(d) * (1.0 / math.prod(d.shape))


class Huber:
    def __init__(self, s: spec.Huber, xp):
        self.xp, self.delta = xp, s.delta

    def value_and_grad(self, p, y):
        xp, delta = self.xp, self.delta
        d = p - y
        ad = xp.abs(d)
        value = xp.mean(xp.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta)))
        return value, xp.clip(d, -delta, delta) * (1.0 / math.prod(d.shape))


class BCE:
    def __init__(self, s: spec.BCE, xp):
        self.xp, self.log_min = xp, s.log_min

    def value_and_grad(self, p, y):
        xp = self.xp
        log_p = xp.maximum(xp.log(p), self.log_min)
        log_q = xp.maximum(xp.log1p(-p), self.log_min)
        value = xp.mean((y - 1.0) * log_q - y * log_p)
        grad = (p - y) / xp.maximum((1.0 - p) * p, spec.BCE.grad_floor) * (1.0 / math.prod(p.shape))
        return value, grad


class BCELogits:
    def __init__(self, s, xp):
        self.xp = xp

    def value_and_grad(self, z, y):
        xp = self.xp
        value = xp.mean(xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z))))
        return value, (xp.sigmoid(z) - y) * (1.0 / math.prod(z.shape))


class CrossEntropy:
    """y arrives one-hot (sparse labels are expanded once, when the data is loaded)."""

    def __init__(self, s: spec.CrossEntropy, xp):
        self.xp, self.from_logits, self.log_min = xp, s.from_logits, s.log_min

    def value_and_grad(self, p, y):
        xp = self.xp
        n = p.shape[0]
        if self.from_logits:
            shifted = p - xp.amax(p, axis=1, keepdims=True)
            e = xp.exp(shifted)
            total = xp.sum(e, axis=1, keepdims=True)
            log_softmax = shifted - xp.log(total)
            value = -xp.sum(y * log_softmax) / n
            return value, (e / total - y) * (1.0 / n)
        log_p = xp.log(p)
        active = log_p > self.log_min
        value = -xp.sum(y * xp.where(active, log_p, self.log_min)) / n
        grad = xp.where(active, -y / xp.where(active, p, 1.0), 0.0) * (1.0 / n)
        return value, grad


LOSSES = {spec.MSE: MSE, spec.MAE: MAE, spec.Huber: Huber, spec.BCE: BCE, spec.BCELogits: BCELogits,
          spec.CrossEntropy: CrossEntropy}


def loss(s: spec.Loss, xp):
    if type(s) not in LOSSES:
        raise UnsupportedFeature("numpy", f"loss '{s.kind}'")
    return LOSSES[type(s)](s, xp)
