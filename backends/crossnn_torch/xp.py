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
"""

from __future__ import annotations

from types import SimpleNamespace

import torch


def _subtract_scaled(w, c, d):
    w.sub_(d, alpha=c)


torch_namespace = SimpleNamespace(
    exp=torch.exp, log=torch.log, log1p=torch.log1p, tanh=torch.tanh, sqrt=torch.sqrt, abs=torch.abs,
    sign=torch.sign, erf=torch.special.erf, sigmoid=torch.sigmoid, maximum=torch.clamp_min, clip=torch.clip,
    where=torch.where, matmul=torch.matmul, sum=torch.sum, mean=torch.mean, amax=torch.amax, concat=torch.cat,
    zeros_like=torch.zeros_like, copy=torch.clone, subtract_scaled=_subtract_scaled, name="torch",
)
