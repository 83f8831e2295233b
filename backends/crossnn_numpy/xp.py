"""The array namespace the backend's math is written against, and its NumPy implementation.

layers.py, losses.py, optimizers.py and step.Program compute with arrays through a namespace `xp`
and touch nothing else of an array library, so the same code trains on NumPy (this module's
`numpy`), on torch tensors on the CPU or a GPU (crossnn_torch.xp), or on any library an adapter maps
onto these names. The whole contract:

functions of the namespace (NumPy's meaning; `c`, `lo`, `hi` are Python floats)
    exp log log1p tanh sqrt abs sign erf    elementwise
    sigmoid                                 1 / (1 + exp(-x)), elementwise
    maximum(x, c)                           elementwise max with a scalar
    clip(x, lo, hi)                         elementwise clamp into [lo, hi]
    where(cond, a, b)                       a, b arrays or Python floats
    matmul(a, b, out=None)                  a @ b (2-D; a or b may be a transposed view), written
                                            into out when given
    sum(x, axis=None, keepdims=False, out=None)
                                            sum of every element, or along axis (an int)
    mean(x)                                 mean of every element (a 0-d array)
    amax(x, axis, keepdims)                 largest value along axis (values only)
    concat(arrays, axis)
    zeros_like(x)  copy(x)                  new arrays
    subtract_scaled(w, c, d)                w -= c * d, in place (an adapter may fuse it into one pass)

what the arrays themselves must do
    + - * / with arrays and Python floats, unary -, comparisons, @ (2-D), in-place += -= *=
    (on arrays of the same shape), x.T (2-D), x.shape, x.reshape(shape), basic slicing x[a:b],
    x[:, a:b].

Anything beyond this list (erf on NumPy, torch's differently named reductions) is the adapter's job.
The loss a step returns is a 0-d array of the namespace: it stays where the arrays are.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

#: the names every namespace provides
FUNCTIONS = ("exp", "log", "log1p", "tanh", "sqrt", "abs", "sign", "erf", "sigmoid", "maximum", "clip", "where",
             "matmul", "sum", "mean", "amax", "concat", "zeros_like", "copy", "subtract_scaled")


def _sigmoid(z):
    """1 / (1 + exp(-z)), each operation written into one new array (no temporary per operation)."""
    s = np.negative(z, out=np.empty_like(z, dtype=np.result_type(z, 1.0)))
    np.exp(s, out=s)
    s += 1.0
    return np.reciprocal(s, out=s)


#: subtract_scaled works through w in pieces of this many elements (256 KiB of float64), so that its
#: temporary c·d stays in cache: twice as fast as one parameter-sized temporary on FCN-R's 14 M weights
PIECE = 1 << 15


def _subtract_scaled(w, c, d):
    """w -= c * d, the same arithmetic per element (c · d in c · d's own dtype), a cache-sized piece
    at a time."""
    if w.size <= PIECE or d.shape != w.shape or not (w.flags.c_contiguous and d.flags.c_contiguous):
        w -= c * d
        return
    flat_w, flat_d = w.reshape(-1), d.reshape(-1)
    scratch = np.empty(PIECE, dtype=np.result_type(d, c))
    for start in range(0, flat_w.size, PIECE):
        piece = flat_d[start:start + PIECE]
        scaled = np.multiply(piece, c, out=scratch[:piece.size])
        flat_w[start:start + PIECE] -= scaled


def _erf(z):
    """erf through the C library's erf, element by element (NumPy has none)."""
    return np.vectorize(math.erf, otypes=[np.float64])(z).astype(z.dtype, copy=False)


#: the NumPy namespace: NumPy's own functions, plus erf, sigmoid and subtract_scaled written in NumPy
numpy = SimpleNamespace(
    exp=np.exp, log=np.log, log1p=np.log1p, tanh=np.tanh, sqrt=np.sqrt, abs=np.abs, sign=np.sign, erf=_erf,
    sigmoid=_sigmoid, maximum=np.maximum, clip=np.clip, where=np.where, matmul=np.matmul, sum=np.sum, mean=np.mean,
    amax=np.amax, concat=getattr(np, "concat", np.concatenate), zeros_like=np.zeros_like, copy=np.copy,
    subtract_scaled=_subtract_scaled, name="numpy",
)


def cupy_namespace():
    """The same names on CuPy arrays (a GPU): CuPy follows NumPy, so only erf (from
    cupyx.scipy.special) and the helpers differ (plain formulas: a GPU has no cache to fit)."""
    import cupy
    from cupyx.scipy.special import erf

    def sigmoid(z):
        return 1.0 / (1.0 + cupy.exp(-z))

    def subtract_scaled(w, c, d):
        w -= c * d

    return SimpleNamespace(
        exp=cupy.exp, log=cupy.log, log1p=cupy.log1p, tanh=cupy.tanh, sqrt=cupy.sqrt, abs=cupy.abs,
        sign=cupy.sign, erf=erf, sigmoid=sigmoid, maximum=cupy.maximum, clip=cupy.clip, where=cupy.where,
        matmul=cupy.matmul, sum=cupy.sum, mean=cupy.mean, amax=cupy.amax, concat=cupy.concatenate,
        zeros_like=cupy.zeros_like, copy=cupy.copy, subtract_scaled=subtract_scaled, name="cupy",
    )
