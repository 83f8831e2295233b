"""The array namespace of crossnn_numpy.xp on torch tensors: NumPy's names mapped to torch functions.

With it, the NumPy backend's pure training step (crossnn_numpy.step.TrainStep: ops, windows, losses,
optimizer chain) runs unchanged on torch tensors, on the CPU or a GPU, in crossnn's canonical
(channels-last) layout; that is the torch backend's "xp" mode. The differences from NumPy's names:

    maximum(x, c)  minimum(x, c)   torch.clamp_min / clamp_max (torch.maximum wants two tensors)
    sum mean amax argmax           dim= and keepdim= for NumPy's axis= and keepdims= (a tuple of axes too)
    erf                            torch.special.erf (NumPy has none; crossnn_numpy.xp brings its own)
    sigmoid                        torch.sigmoid: one kernel where 1 / (1 + exp(-x)) takes four (it may
                                   differ from that formula in the last bit)
    concat  stack                  torch.cat / torch.stack with dim=
    pad(x, widths, constant_values)  torch.nn.functional.pad, whose flat widths run from the last axis
                                   to the first: ((b0, a0), (b1, a1)) -> (b1, a1, b0, a0)
    as_index                       x.to(torch.int64)
    scatter_add(a, ids, rows)      a.index_add(0, ids, rows) (out of place)

The functions must be called under torch.no_grad() or torch.inference_mode(): the gradients are the
hand-written ones, autograd has nothing to record.

onednn_namespace is the same namespace with one change: float32 products on the CPU, all but the
smallest, go through the oneDNN library that ships inside PyTorch (torch.ops.mkldnn._linear_pointwise,
the inner-product kernel torch.compile's CPU code generator calls for nn.Linear) instead of
torch.matmul, which calls MKL's sgemm. On CPUs where MKL takes a slow code path (AMD's, for one)
oneDNN's kernels run about twice as fast. The operator is internal to PyTorch: where a build lacks it,
onednn_unavailable() says so. Float64 (oneDNN has no float64 kernels) and GPU products stay
torch.matmul.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch


def _sum(x, axis=None, keepdims=False):
    return torch.sum(x) if axis is None else torch.sum(x, dim=axis, keepdim=keepdims)


def _mean(x, axis=None):
    return torch.mean(x) if axis is None else torch.mean(x, dim=axis)


def _amax(x, axis, keepdims=False):
    return torch.amax(x, dim=axis, keepdim=keepdims)


def _argmax(x, axis):
    return torch.argmax(x, dim=axis)  # the first largest, as NumPy's


def _pad(x, widths, constant_values=0.0):
    """Constant padding; the axes at the front that stay unpadded are left out of torch's widths."""
    widths = [tuple(w) for w in widths]
    while widths and widths[0] == (0, 0):
        widths.pop(0)
    flat = [n for before_after in reversed(widths) for n in before_after]
    return torch.nn.functional.pad(x, flat, value=constant_values) if flat else x


def _concat(arrays, axis):
    return torch.cat(list(arrays), dim=axis)


def _stack(arrays, axis):
    return torch.stack(list(arrays), dim=axis)


def _as_index(x):
    return x.to(torch.int64)


def _scatter_add(a, ids, rows):
    return a.index_add(0, ids, rows)


@functools.cache
def linear_operator():
    """torch.ops.mkldnn._linear_pointwise, looked up once; None where this build has no oneDNN or no
    such operator."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def onednn_unavailable() -> str | None:
    """Why this torch build cannot run onednn_namespace's products, or None when it can."""
    if linear_operator() is None:
        return (f"torch {torch.__version__} has no oneDNN inner product (torch.backends.mkldnn, "
                "torch.ops.mkldnn._linear_pointwise)")
    return None


# Smaller products (n·k·m multiply-adds, 128³ = 2²¹) stay on torch.matmul: a oneDNN call costs about
# 14 µs whatever its size (it sets a primitive up each time), where MKL takes 2 µs on the circle net's
# products; from about 128³ on, oneDNN is faster (half MKL's time from 256³ on, measured here).
SMALL_PRODUCT = 1 << 21


def _onednn_matmul(a, b):
    """a @ b. float32 on the CPU: oneDNN's inner product, which computes x @ wᵀ for x (n, k) and
    w (m, k), called with x = a made contiguous (a copy only for the weight gradient's xᵀ, batch-sized:
    a strided x costs oneDNN up to half its speed) and w = bᵀ (a view, no copy). Otherwise (other
    dtypes and devices, products under SMALL_PRODUCT) torch.matmul."""
    if a.dtype != torch.float32 or a.device.type != "cpu" or a.shape[0] * a.shape[1] * b.shape[1] < SMALL_PRODUCT:
        return torch.matmul(a, b)
    return linear_operator()(a.contiguous(), b.t(), None, "none", [], "")


torch_namespace = SimpleNamespace(
    exp=torch.exp, log=torch.log, log1p=torch.log1p, tanh=torch.tanh, sqrt=torch.sqrt, abs=torch.abs,
    sign=torch.sign, erf=torch.special.erf, sigmoid=torch.sigmoid, maximum=torch.clamp_min, minimum=torch.clamp_max,
    clip=torch.clip, where=torch.where, matmul=torch.matmul, sum=_sum, mean=_mean, amax=_amax, argmax=_argmax,
    concat=_concat, stack=_stack, pad=_pad, zeros_like=torch.zeros_like, ones_like=torch.ones_like, as_index=_as_index,
    scatter_add=_scatter_add, name="torch",
)

onednn_namespace = SimpleNamespace(**{**vars(torch_namespace), "matmul": _onednn_matmul, "name": "torch-onednn"})
