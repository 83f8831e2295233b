"""The array namespace of crossnn_numpy.xp on torch tensors: NumPy's names mapped to torch functions.

With it, the NumPy backend's hand-written forward pass, backward pass, losses and optimizer updates
(crossnn_numpy.layers / losses / optimizers / step.Program) run unchanged on torch tensors, on the
CPU or a GPU; that is the torch backend's "xp" mode. Most names mean the same in torch (which also
accepts NumPy's `axis` and `keepdims` keywords); the differences are:

    maximum(x, c)   torch.maximum wants two tensors; torch.clamp_min takes the Python float
    amax            torch.max(x, dim) returns (values, indices); torch.amax the values
    erf             torch.special.erf (NumPy has none; crossnn_numpy.xp brings its own)
    sigmoid         torch.sigmoid: one kernel where 1 / (1 + exp(-x)) takes four (it may differ from
                    that formula in the last bit)
    concat          torch.cat
    copy            torch.clone
    subtract_scaled w.sub_(d, alpha=c): one pass, no temporary (w -= c * d makes a parameter-sized one)

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


def _subtract_scaled(w, c, d):
    w.sub_(d, alpha=c)


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

# Products written into an existing array (the weight gradient, xᵀ·dz, into the gradient buffer) are
# computed this many output elements (1 MiB of float32) at a time, each piece copied while it is still
# in cache. On FCN-R's 2048x4096 layer, one 32 MiB product ran at half the speed of its 1 MiB pieces.
CHUNK_ELEMENTS = 1 << 18


def _onednn_matmul(a, b, out=None):
    """a @ b. float32 on the CPU: oneDNN's inner product, which computes x @ wᵀ for x (n, k) and
    w (m, k), called with x = a made contiguous (a copy only for the weight gradient's xᵀ, batch-sized:
    a strided x costs oneDNN up to half its speed) and w = bᵀ (a view, no copy); with `out`, in pieces
    of CHUNK_ELEMENTS rows' worth. Otherwise (other dtypes and devices, products under SMALL_PRODUCT)
    torch.matmul."""
    if a.dtype != torch.float32 or a.device.type != "cpu" or a.shape[0] * a.shape[1] * b.shape[1] < SMALL_PRODUCT:
        return torch.matmul(a, b, out=out)
    a, w = a.contiguous(), b.t()
    if out is None:
        return linear_operator()(a, w, None, "none", [], "")
    rows = max(1, CHUNK_ELEMENTS // w.shape[0])
    for start in range(0, a.shape[0], rows):
        out[start:start + rows].copy_(linear_operator()(a[start:start + rows], w, None, "none", [], ""))
    return out


torch_namespace = SimpleNamespace(
    exp=torch.exp, log=torch.log, log1p=torch.log1p, tanh=torch.tanh, sqrt=torch.sqrt, abs=torch.abs,
    sign=torch.sign, erf=torch.special.erf, sigmoid=torch.sigmoid, maximum=torch.clamp_min, clip=torch.clip,
    where=torch.where, matmul=torch.matmul, sum=torch.sum, mean=torch.mean, amax=torch.amax, concat=torch.cat,
    zeros_like=torch.zeros_like, copy=torch.clone, subtract_scaled=_subtract_scaled, name="torch",
)

onednn_namespace = SimpleNamespace(**{**vars(torch_namespace), "matmul": _onednn_matmul, "name": "torch-onednn"})
