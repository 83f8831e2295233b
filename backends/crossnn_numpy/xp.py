"""The array namespace the reference math is written against, and its NumPy implementation.

ops.py, windows.py, optimizers.py and step.py compute with arrays through a namespace `xp` and touch
nothing else of an array library. The math is pure: every function returns new arrays and never
writes into an array it was handed, so the same code trains on NumPy (this module's `numpy`), on
CuPy (`cupy_namespace()`), on torch tensors (crossnn_torch.xp) and under jax.jit on jax.numpy
(crossnn_jax.xp). The whole contract:

functions of the namespace (NumPy's meaning; `c`, `lo`, `hi` are Python floats)
    exp log log1p tanh sqrt abs sign erf    elementwise
    sigmoid                                 1 / (1 + exp(-x)), elementwise
    maximum(x, c)  minimum(x, c)            elementwise max / min with a scalar (or a 0-d array)
    clip(x, lo, hi)                         elementwise clamp into [lo, hi]
    where(cond, a, b)                       a, b arrays or Python floats
    matmul(a, b)                            a @ b (2-D; a or b may be a transposed view)
    sum(x, axis=None, keepdims=False)       sum of every element, or along axis (an int or a tuple)
    mean(x, axis=None)                      mean of every element (a 0-d array), or along axis
    amax(x, axis, keepdims=False)           largest value along axis (values only)
    argmax(x, axis)                         index of the first largest value along axis
    concat(arrays, axis)  stack(arrays, axis)
    pad(x, widths, constant_values=0.0)     constant padding, widths ((before, after) per axis)
    zeros_like(x)  ones_like(x)             new arrays shaped like x
    as_index(x)                             x (whole numbers) as an integer array, for indexing
    scatter_add(a, ids, rows)               a copy of a with rows[k] added to row ids[k] of it, for every
                                            k (repeated ids add up)
    name                                    the library's name, for messages

what the arrays themselves must do
    + - * / ** with arrays and Python floats, unary -, comparisons, @ (2-D), x.T (2-D), x.shape,
    x.reshape(shape) (with one -1 allowed), x[..., None], basic slicing with positive steps
    (x[:, a:b:s]), indexing by a tuple of slices, indexing rows by an integer array (table[ids]).

Anything beyond this list (erf on NumPy, torch's differently named functions) is the adapter's job.
The loss a step returns is a 0-d array of the namespace: it stays where the arrays are.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

#: the names every namespace provides
FUNCTIONS = ("exp", "log", "log1p", "tanh", "sqrt", "abs", "sign", "erf", "sigmoid", "maximum", "minimum", "clip",
             "where", "matmul", "sum", "mean", "amax", "argmax", "concat", "stack", "pad", "zeros_like", "ones_like",
             "as_index", "scatter_add")


def _sigmoid(z):
    """1 / (1 + exp(-z)), each operation written into one new array (no temporary per operation)."""
    s = np.negative(z, out=np.empty_like(z, dtype=np.result_type(z, 1.0)))
    np.exp(s, out=s)
    s += 1.0
    return np.reciprocal(s, out=s)


def _erf(z):
    """erf through the C library's erf, element by element (NumPy has none)."""
    return np.vectorize(math.erf, otypes=[np.float64])(z).astype(z.dtype, copy=False)


def _as_index(x):
    return np.asarray(x).astype(np.int64)


def _scatter_add(a, ids, rows):
    """np.add.at on a copy: the copy is the function's own, so writing into it keeps the math pure."""
    out = np.array(a, copy=True)
    np.add.at(out, ids, rows)
    return out


#: the NumPy namespace: NumPy's own functions, plus erf, sigmoid, as_index and scatter_add written in NumPy
numpy = SimpleNamespace(
    exp=np.exp, log=np.log, log1p=np.log1p, tanh=np.tanh, sqrt=np.sqrt, abs=np.abs, sign=np.sign, erf=_erf,
    sigmoid=_sigmoid, maximum=np.maximum, minimum=np.minimum, clip=np.clip, where=np.where, matmul=np.matmul,
    sum=np.sum, mean=np.mean, amax=np.amax, argmax=np.argmax, concat=getattr(np, "concat", np.concatenate),
    stack=np.stack, pad=np.pad, zeros_like=np.zeros_like, ones_like=np.ones_like, as_index=_as_index,
    scatter_add=_scatter_add, name="numpy",
)


def cupy_namespace():
    """The same names on CuPy arrays (a GPU): CuPy follows NumPy, so only erf (from
    cupyx.scipy.special) and the helpers differ."""
    import cupy
    import cupyx
    from cupyx.scipy.special import erf

    def sigmoid(z):
        return 1.0 / (1.0 + cupy.exp(-z))

    def scatter_add(a, ids, rows):
        out = a.copy()
        cupyx.scatter_add(out, ids, rows)
        return out

    return SimpleNamespace(
        exp=cupy.exp, log=cupy.log, log1p=cupy.log1p, tanh=cupy.tanh, sqrt=cupy.sqrt, abs=cupy.abs,
        sign=cupy.sign, erf=erf, sigmoid=sigmoid, maximum=cupy.maximum, minimum=cupy.minimum, clip=cupy.clip,
        where=cupy.where, matmul=cupy.matmul, sum=cupy.sum, mean=cupy.mean, amax=cupy.amax, argmax=cupy.argmax,
        concat=cupy.concatenate, stack=cupy.stack, pad=cupy.pad, zeros_like=cupy.zeros_like, ones_like=cupy.ones_like,
        as_index=lambda x: x.astype(cupy.int64), scatter_add=scatter_add, name="cupy",
    )
