"""Optimizers: the update rules of crossnn.spec.optimizers (PyTorch's and the papers'), written with
TF ops on tf.Variables, in PyTorch's operation order.

These are deliberately not keras.optimizers, whose formulas differ:
  * keras.optimizers.SGD with momentum keeps a velocity scaled by the learning rate,
    v ← μ v - lr g, w ← w + v, where the spec (torch.optim.SGD) keeps b ← μ b + g, w ← w - lr b:
    the same while lr is constant, up to rounding; different once lr changes.
  * keras.optimizers.Adam adds epsilon to the uncorrected √v (w ← w - lr_t m / (√v + ε) with
    lr_t = lr √(1-β₂ᵗ) / (1-β₁ᵗ)), i.e. in effect ε / √(1-β₂ᵗ) on √v̂; the spec adds ε to √v̂.
  * Keras keeps the learning rate in a variable of keras.backend.floatx() (float32 by default) and
    casts it to the parameter's dtype, so a float64 model trains with float32(lr).

Scalars (lr, momentum, bias corrections) are formed in float64 and cast once to the parameter dtype,
as PyTorch does with its Python-float hyperparameters.
"""

from __future__ import annotations

import tensorflow as tf

from crossnn import spec
from crossnn.errors import UnsupportedFeature


class SGD(tf.Module):
    """g ← g + weight_decay · w;  b ← μ b + g (b = g on the first step);  d = g + μ b (Nesterov) or b;
    w ← w - lr d.  The buffer b starts at zero, so μ · 0 + g = g gives the first step exactly.

    Without Nesterov this is exactly what TF's own fused training kernels compute, so they do it:
    ResourceApplyGradientDescent (w ← w - g · lr) and ResourceApplyMomentum (b ← b · μ + g,
    w ← w - b · lr), the kernels of TF's classic optimizers (tf.compat.v1.train, Keras 2). One
    in-place op per parameter instead of three to five, which saves a tenth of the step time on small
    models and a pass over the parameters on large ones. Nesterov's kernel computes
    w ← w - (g · lr + b · μ · lr), which rounds differently from w ← w - lr (g + μ b), so that
    case is written out."""

    def __init__(self, s: spec.SGD, variables):
        super().__init__()
        self.s = s
        self.buffers = [tf.Variable(tf.zeros_like(w), trainable=False) for w in variables] if s.momentum else []

    def apply(self, grads, variables):
        s = self.s
        for i, (w, g) in enumerate(zip(variables, grads)):
            if s.weight_decay:
                g = g + s.weight_decay * w
            lr = tf.constant(s.lr, w.dtype)
            if not s.momentum:
                tf.raw_ops.ResourceApplyGradientDescent(var=w.handle, alpha=lr, delta=g)
            elif not s.nesterov:
                tf.raw_ops.ResourceApplyMomentum(var=w.handle, accum=self.buffers[i].handle, lr=lr, grad=g,
                                                 momentum=tf.constant(s.momentum, w.dtype))
            else:
                b = self.buffers[i] * s.momentum + g
                self.buffers[i].assign(b)
                w.assign_sub(s.lr * (g + s.momentum * b))


class Adam(tf.Module):
    """g ← g + weight_decay · w;  m ← m + (1-β₁)(g - m);  v ← β₂ v + ((1-β₂) g) g;
    w ← w + (-lr / (1-β₁ᵗ)) m / (√v / √(1-β₂ᵗ) + eps), t counted in a variable from 1."""

    def __init__(self, s: spec.Adam, variables):
        super().__init__()
        self.s = s
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.exp_avg = [tf.Variable(tf.zeros_like(w), trainable=False) for w in variables]
        self.exp_avg_sq = [tf.Variable(tf.zeros_like(w), trainable=False) for w in variables]

    def apply(self, grads, variables):
        s = self.s
        t = tf.cast(self.step.assign_add(1), tf.float64)
        neg_step_size = -(s.lr / (1.0 - tf.pow(tf.constant(s.beta1, tf.float64), t)))
        correction2_sqrt = tf.sqrt(1.0 - tf.pow(tf.constant(s.beta2, tf.float64), t))
        for w, g, m, v in zip(variables, grads, self.exp_avg, self.exp_avg_sq):
            dtype = w.dtype
            if s.weight_decay:
                g = g + s.weight_decay * w
            m_t = m + (1.0 - s.beta1) * (g - m)
            v_t = v * s.beta2 + ((1.0 - s.beta2) * g) * g
            m.assign(m_t)
            v.assign(v_t)
            denom = tf.sqrt(v_t) / tf.cast(correction2_sqrt, dtype) + s.eps
            w.assign_add((tf.cast(neg_step_size, dtype) * m_t) / denom)


OPTIMIZERS = {spec.SGD: SGD, spec.Adam: Adam}


def optimizer(s: spec.Optimizer, variables):
    if type(s) not in OPTIMIZERS:
        raise UnsupportedFeature("tensorflow", f"optimizer '{s.kind}'")
    # optimizer options this lowering does not implement yet: refused, never silently ignored
    if getattr(s, "weight_decay_kind", None) == "decoupled" and s.weight_decay:
        raise UnsupportedFeature("tensorflow", "decoupled weight decay")
    if getattr(s, "clip_norm", None) is not None:
        raise UnsupportedFeature("tensorflow", "gradient clipping (clip_norm)")
    if getattr(s, "schedule", None) is not None:
        raise UnsupportedFeature("tensorflow", "a learning-rate schedule")
    return OPTIMIZERS[type(s)](s, variables)
