"""Optimizers: torch.optim, whose updates are the spec's rules (crossnn.spec.optimizers), plus the
parts of a spec's step that torch.optim leaves to the training loop.

    sgd      torch.optim.SGD (heavy-ball or Nesterov momentum, dampening 0)
    adam     torch.optim.Adam (eps added to √v̂); decoupled decay: Adam(decoupled_weight_decay=True),
             which is torch.optim.AdamW's update
    adamw    torch.optim.AdamW
    rmsprop  torch.optim.RMSprop (eps outside the square root; centered, momentum)
    adagrad  torch.optim.Adagrad (lr_decay 0, initial_accumulator_value, eps outside the root)

Every step, in the spec's order (`Update.before_step`, then optimizer.step()):

1. clip_norm: torch.nn.utils.clip_grad_norm_(parameters, clip_norm); its 1e-6 is the spec's.
2. weight decay: kind "l2" is torch.optim's weight_decay (g ← g + wd · w inside the step); kind
   "decoupled" is AdamW's own, and for SGD, RMSprop and Adagrad, which have no decoupled option,
   p.mul_(1 - lr · wd) before optimizer.step().
3. the learning rate of the step (crossnn.schedule.StepClock) is written into every param group's
   "lr" before the step, as a hand-written schedule does (torch's StepLR / ExponentialLR stepped
   once per unit compute lr · gamma^k by repeated multiplication, which rounds differently).

Native flavour (crossnn.differences): "weight-decay" passes the spec's weight_decay to torch.optim's
weight_decay (L2) whatever its kind says, as torch users write it; AdamW keeps its decoupled decay.

User-defined optimizers: `register(SpecClass)` adds a factory for a spec class defined outside
crossnn; crossnn_numpy.optimizers.register adds the reference's rule.
"""

from __future__ import annotations

from typing import Callable

import torch

from crossnn import spec
from crossnn.errors import UnsupportedFeature


def _decay(s: spec.Optimizer, native: frozenset[str]) -> tuple[float, bool]:
    """(weight_decay for torch.optim, whether it is decoupled) for the built-in optimizers."""
    if "weight-decay" in native and not isinstance(s, spec.AdamW):
        return s.weight_decay, False
    return s.weight_decay, s.weight_decay_kind == "decoupled"


def _sgd(s: spec.SGD, params, native):
    wd, decoupled = _decay(s, native)
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                           weight_decay=0.0 if decoupled else wd), wd if decoupled else 0.0


def _adam(s: spec.Adam, params, native):
    wd, decoupled = _decay(s, native)
    if isinstance(s, spec.AdamW):
        return torch.optim.AdamW(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps, weight_decay=wd), 0.0
    return torch.optim.Adam(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps, weight_decay=wd,
                            decoupled_weight_decay=decoupled), 0.0


def _rmsprop(s: spec.RMSprop, params, native):
    wd, decoupled = _decay(s, native)
    return torch.optim.RMSprop(params, lr=s.lr, alpha=s.alpha, eps=s.eps, momentum=s.momentum, centered=s.centered,
                               weight_decay=0.0 if decoupled else wd), wd if decoupled else 0.0


def _adagrad(s: spec.Adagrad, params, native):
    wd, decoupled = _decay(s, native)
    return torch.optim.Adagrad(params, lr=s.lr, initial_accumulator_value=s.initial_accumulator, eps=s.eps,
                               weight_decay=0.0 if decoupled else wd), wd if decoupled else 0.0


#: built-ins: (spec, parameters, native) -> (torch optimizer, decoupled decay left to the loop)
BUILTIN: dict[type, Callable] = {spec.SGD: _sgd, spec.Adam: _adam, spec.AdamW: _adam, spec.RMSprop: _rmsprop,
                                 spec.Adagrad: _adagrad}
#: user-defined: (spec, parameters) -> torch optimizer implementing the update rule only
REGISTERED: dict[type, Callable] = {}


def register(spec_class: type[spec.Optimizer]):
    """Decorator: the torch optimizer of a user-defined optimizer spec class, without editing crossnn.

    The decorated callable (a function, or a torch.optim.Optimizer subclass with this signature) is
    called as ``factory(s, params)`` with the spec instance and the model's parameters, and returns a
    torch.optim.Optimizer that implements the spec's update rule (step 3 of crossnn.spec.optimizers)
    and reads the learning rate from ``group["lr"]`` (the trainer writes the scheduled rate there).
    The trainer does the rest of the spec's step: clip_norm, L2 (g ← g + wd · w) and decoupled decay.
    Keep per-parameter state in ``optimizer.state[p]`` under the names ``s.state_slots()`` and
    ``s.state_counters()`` give, so training state can be saved and resumed.

        @crossnn_torch.optimizers.register(MySGD)
        def my_sgd(s, params):
            return MySGDOptimizer(params, lr=s.lr, momentum=s.momentum)
    """
    def add(factory):
        REGISTERED[spec_class] = factory
        return factory
    return add


class Update:
    """A spec's update rule in torch: the torch.optim optimizer, and what the loop does before its
    step() (learning rate, clipping, and the weight decay torch.optim does not do)."""

    def __init__(self, s: spec.Optimizer, params, native: frozenset[str] = frozenset()):
        params = list(params)
        self.spec, self.params = s, params
        self.l2 = 0.0  # L2 the loop adds to the gradients (user-defined optimizers only)
        if type(s) in REGISTERED:
            self.optimizer = REGISTERED[type(s)](s, params)
            self.l2, self.decoupled = s.l2, s.decoupled
        elif type(s) in BUILTIN:
            self.optimizer, self.decoupled = BUILTIN[type(s)](s, params, native)
        else:
            raise UnsupportedFeature("torch", f"optimizer '{s.kind}'")
        self.clip_norm = s.clip_norm
        self.scheduled = s.schedule is not None
        self.current_lr = s.lr
        self.tensor_lr = False

    def use_tensor_lr(self, dtype) -> None:
        """Keep the learning rate as a 0-d tensor in every param group, as PyTorch's recipe for a
        compiled optimizer step with a schedule says (a Python float is baked into the compiled
        graph, and every new value would compile it again)."""
        for group in self.optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=dtype, device=self.params[0].device)
        self.tensor_lr = True

    def set_lr(self, lr: float) -> None:
        if lr == self.current_lr:
            return
        for group in self.optimizer.param_groups:
            if self.tensor_lr:
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self.current_lr = lr

    @torch.no_grad()
    def before_step(self, lr: float) -> None:
        """After backward(), before optimizer.step(): the step's learning rate, then clipping, then
        decay (spec steps 1 and 2 where torch.optim does not do them)."""
        self.set_lr(lr)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        if self.decoupled:
            for p in self.params:
                p.mul_(1.0 - lr * self.decoupled)
        if self.l2:
            for p in self.params:
                if p.grad is not None:
                    p.grad.add_(p, alpha=self.l2)
