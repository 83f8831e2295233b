"""The array namespace of crossnn_numpy.xp on jax.numpy: with it the NumPy backend's pure training
step (crossnn_numpy.step.TrainStep: ops, windows, losses, optimizer chain) runs unchanged on jax
arrays and compiles under jax.jit (the jax backend's "xp" mode).

jax.numpy follows NumPy's names and signatures for nearly the whole contract (sum/mean/amax with
axis tuples and keepdims, argmax's first maximum, pad(x, widths, constant_values=...), clip(x, lo,
hi), where with Python floats); the differences:

    erf        jax.scipy.special.erf (NumPy has none; crossnn_numpy.xp brings its own)
    sigmoid    jax.nn.sigmoid (lax.logistic: one operation where 1 / (1 + exp(-x)) takes three; it
               may differ from that formula in the last bit)
    concat     jnp.concatenate
    as_index   x.astype(int32)
    scatter_add(a, ids, rows)   a.at[ids].add(rows): a new array, as jax's updates always are

The arrays are immutable, which the pure reference math never needs to change: it writes into no
array it was handed.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

jax_namespace = SimpleNamespace(
    exp=jnp.exp, log=jnp.log, log1p=jnp.log1p, tanh=jnp.tanh, sqrt=jnp.sqrt, abs=jnp.abs, sign=jnp.sign, erf=erf,
    sigmoid=jax.nn.sigmoid, maximum=jnp.maximum, minimum=jnp.minimum, clip=jnp.clip, where=jnp.where,
    matmul=jnp.matmul, sum=jnp.sum, mean=jnp.mean, amax=jnp.max, argmax=jnp.argmax, concat=jnp.concatenate,
    stack=jnp.stack, pad=jnp.pad, zeros_like=jnp.zeros_like, ones_like=jnp.ones_like,
    as_index=lambda x: x.astype(jnp.int32), scatter_add=lambda a, ids, rows: a.at[ids].add(rows), name="jax",
)
