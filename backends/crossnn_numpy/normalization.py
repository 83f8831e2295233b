"""Batch and layer normalization, forward and backward, written against the array namespace `xp`
(crossnn_numpy.xp) as pure functions (see crossnn.spec.BatchNorm and LayerNorm for the math).
Emitted NumPy scripts carry these functions' source and call them with `np`.

`reduce` is the tuple of axes a statistic is taken over (statistics keep those axes, with size 1) and
`shape` the shape gamma, beta and the moving statistics take to broadcast against x.
"""

from __future__ import annotations


def normalize_forward(xp, x, gamma, beta, reduce, shape, epsilon):
    """y = gamma · (x - μ) / √(σ² + epsilon) + beta with μ, σ² (biased) over `reduce`; returns
    (y, x̂, 1/√(σ² + epsilon), μ, σ²)."""
    count = _count(x, reduce)
    mean = xp.sum(x, axis=reduce, keepdims=True) / count
    centered = x - mean
    var = xp.sum(centered * centered, axis=reduce, keepdims=True) / count
    inv = 1.0 / xp.sqrt(var + epsilon)
    xhat = centered * inv
    y = xhat if gamma is None else xhat * gamma.reshape(shape)
    return (y if beta is None else y + beta.reshape(shape)), xhat, inv, mean, var


def normalize_backward(xp, dy, xhat, inv, gamma, reduce, shape):
    """(dx, dgamma, dbeta) of normalize_forward, the statistics differentiated too:
    dx = inv · (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)) over `reduce`, dx̂ = dy · gamma."""
    dxhat = dy if gamma is None else dy * gamma.reshape(shape)
    count = _count(dy, reduce)
    mean_d = xp.sum(dxhat, axis=reduce, keepdims=True) / count
    mean_dx = xp.sum(dxhat * xhat, axis=reduce, keepdims=True) / count
    dx = inv * (dxhat - mean_d - xhat * mean_dx)
    return dx, xp.sum(dy * xhat, axis=reduce), xp.sum(dy, axis=reduce)


def _count(x, reduce) -> int:
    """How many values each statistic averages."""
    count = 1
    for axis in reduce:
        count *= x.shape[axis]
    return count


def batch_norm_moving(mean, var, moving_mean, moving_variance, momentum, count, unbiased):
    """The moving statistics after a training step: momentum · moving + (1 - momentum) · batch, the
    batch variance scaled by count / (count - 1) when the running variance is unbiased."""
    if unbiased:
        var = var * (count / (count - 1))
    return (momentum * moving_mean + (1.0 - momentum) * mean.reshape(moving_mean.shape),
            momentum * moving_variance + (1.0 - momentum) * var.reshape(moving_variance.shape))


def batch_norm_inference(x, gamma, beta, moving_mean, moving_variance, shape, epsilon, xp):
    """y = gamma · (x - moving_mean) / √(moving_variance + epsilon) + beta."""
    y = (x - moving_mean.reshape(shape)) / xp.sqrt(moving_variance.reshape(shape) + epsilon)
    y = y if gamma is None else y * gamma.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)
