"""Optimizers: torch.optim.SGD and torch.optim.Adam, whose updates are the spec's rules
(crossnn.spec.optimizers): SGD with heavy-ball or Nesterov momentum (dampening 0) and L2 weight
decay added to the gradient; Adam with L2 weight decay added to the gradient (not AdamW's
decoupled decay) and eps added to √v̂. Decoupled decay, gradient clipping and learning-rate
schedules are not lowered yet (UnsupportedFeature)."""

from __future__ import annotations

import torch

from crossnn import spec
from crossnn.errors import UnsupportedFeature

OPTIMIZERS = {
    spec.SGD: lambda s, params: torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                                                weight_decay=s.l2),
    spec.Adam: lambda s, params: torch.optim.Adam(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps,
                                                  weight_decay=s.l2),
}


def optimizer(s: spec.Optimizer, params) -> torch.optim.Optimizer:
    """The torch optimizer for spec `s` over the parameters `params`."""
    if type(s) not in OPTIMIZERS:
        raise UnsupportedFeature("torch", f"optimizer '{s.kind}'")
    unsupported = [name for name, used in (("decoupled weight decay", s.decoupled),
                                           ("clip_norm", s.clip_norm is not None),
                                           ("a learning-rate schedule", s.schedule is not None)) if used]
    if unsupported:
        raise UnsupportedFeature("torch", f"optimizer '{s.kind}' with {', '.join(unsupported)}")
    return OPTIMIZERS[type(s)](s, params)
