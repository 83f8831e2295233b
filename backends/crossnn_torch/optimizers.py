"""The optimizer of a spec as a chain, in crossnn.spec.optimizers' order

    clip by global norm  ->  weight decay  ->  the rule  ->  learning rate

written as a PyTorch training loop writes it: after loss.backward(), the loop sets the step's learning
rate, clips, adds the decay torch.optim does not, and calls optimizer.step(). The rule is a
torch.optim optimizer wherever one computes the spec's formula; it comes from the spec class's entry
in the registry (crossnn_torch.ops.OPS), a function rule(s, native) -> Rule:

    sgd      torch.optim.SGD (heavy-ball or Nesterov momentum, dampening 0)
    adam     torch.optim.Adam (eps added to √v̂); decoupled decay: Adam(decoupled_weight_decay=True),
             which is torch.optim.AdamW's update
    adamw    torch.optim.AdamW
    rmsprop  torch.optim.RMSprop (eps outside the square root; centered, momentum)
    adagrad  torch.optim.Adagrad (lr_decay 0, initial_accumulator_value, eps outside the root)

A Rule names the torch.optim class, its options, and which decays (`handles`: "l2", "decoupled") it
applies itself; the chain adds a loop stage for the others. Every stage holds its training code
(apply) and the loop lines an emitted script uses (code) side by side:

    LearningRate  the step's rate (crossnn.schedule.StepClock) written into every param group before
                  the step, as a hand-written schedule does (torch's StepLR / ExponentialLR compute
                  lr · gamma^k by repeated multiplication, which rounds differently)
    Clip          torch.nn.utils.clip_grad_norm_ (its 1e-6 is the spec's)
    L2            g ← g + l2 · w, for a rule whose optimizer has no weight_decay (user-defined ones)
    Decoupled     w ← w (1 - lr · wd) before the step, for SGD, RMSprop and Adagrad, which have no
                  decoupled option
    the rule      optimizer.step()

Native flavour (crossnn.differences): "weight-decay" passes the spec's weight_decay to torch.optim's
weight_decay (L2) whatever its kind says, as torch users write it; AdamW keeps its decoupled decay.

A user-defined optimizer registers a rule: OPS.register(MySpec)(lambda s, native: Rule(MyOptimizer,
{"lr": s.lr, ...})), a torch.optim.Optimizer that implements the update rule only, reads the learning
rate from group["lr"], and keeps per-parameter state in optimizer.state[p] under the names
s.state_slots() and s.state_counters() give (so training state can be saved and resumed).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from crossnn import spec
from crossnn.errors import UnsupportedFeature
from crossnn_torch.ops import OPS, literal


class Rule(NamedTuple):
    """An update rule: torch.optim class `cls` with `options`, applying the decays in `handles` itself."""

    cls: type
    options: dict[str, Any]
    handles: frozenset[str] = frozenset()

    def build(self, params) -> torch.optim.Optimizer:
        return self.cls(params, **self.options)

    def code(self) -> str:
        """The line creating `optimizer` in a script."""
        if self.cls.__module__.split(".")[:2] != ["torch", "optim"]:
            raise UnsupportedFeature("torch", f"optimizer {self.cls.__qualname__} (defined outside torch.optim) in "
                                              "a script")
        options = "".join(f", {k}={literal(v)}" for k, v in self.options.items())
        return f"optimizer = torch.optim.{self.cls.__name__}(model.parameters(){options})"


def _l2(s: spec.Optimizer, native) -> tuple[float, frozenset[str]]:
    """torch.optim's weight_decay for a rule that has L2 only, and what it handles: with native
    "weight-decay", any decay as L2."""
    if "weight-decay" in native:
        return s.weight_decay, frozenset({"l2", "decoupled"})
    return s.l2, frozenset({"l2"})


@OPS.register(spec.SGD)
def sgd(s: spec.SGD, native) -> Rule:
    wd, handles = _l2(s, native)
    return Rule(torch.optim.SGD, {"lr": s.lr, "momentum": s.momentum, "nesterov": s.nesterov, "weight_decay": wd},
                handles)


@OPS.register(spec.Adam, spec.AdamW)
def adam(s: spec.Adam, native) -> Rule:
    both = frozenset({"l2", "decoupled"})
    options = {"lr": s.lr, "betas": (s.beta1, s.beta2), "eps": s.eps, "weight_decay": s.weight_decay}
    if isinstance(s, spec.AdamW):
        return Rule(torch.optim.AdamW, options, both)
    if s.weight_decay_kind == "decoupled" and "weight-decay" not in native:
        options["decoupled_weight_decay"] = True
    return Rule(torch.optim.Adam, options, both)


@OPS.register(spec.RMSprop)
def rmsprop(s: spec.RMSprop, native) -> Rule:
    wd, handles = _l2(s, native)
    return Rule(torch.optim.RMSprop, {"lr": s.lr, "alpha": s.alpha, "eps": s.eps, "momentum": s.momentum,
                                      "centered": s.centered, "weight_decay": wd}, handles)


@OPS.register(spec.Adagrad)
def adagrad(s: spec.Adagrad, native) -> Rule:
    wd, handles = _l2(s, native)
    return Rule(torch.optim.Adagrad, {"lr": s.lr, "initial_accumulator_value": s.initial_accumulator, "eps": s.eps,
                                      "weight_decay": wd}, handles)


# ---- the loop stages ---------------------------------------------------------------------------------


class LearningRate:
    """The scheduled rate written into every param group (only when it changes). With tensor_lr the
    groups hold a 0-d tensor updated in place (PyTorch's recipe for a compiled optimizer step: a
    Python float would be compiled in as a constant)."""

    def __init__(self, s: spec.Optimizer):
        self.current = s.lr
        self.tensor = False

    def use_tensor_lr(self, optimizer, dtype, device) -> None:
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=dtype, device=device)
        self.tensor = True

    def apply(self, optimizer, params, lr: float) -> None:
        if lr == self.current:
            return
        for group in optimizer.param_groups:
            if self.tensor:
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self.current = lr

    @staticmethod
    def code() -> list[str]:
        return ["for group in optimizer.param_groups:  # the schedule, written by hand", '    group["lr"] = lr']


class Clip:
    def __init__(self, s: spec.Optimizer):
        self.norm = s.clip_norm

    def apply(self, optimizer, params, lr):
        torch.nn.utils.clip_grad_norm_(params, self.norm)

    def code(self):
        return [f"nn.utils.clip_grad_norm_(model.parameters(), max_norm={self.norm!r})  # one norm for all"]


class L2:
    def __init__(self, s: spec.Optimizer):
        self.l2 = s.l2

    def apply(self, optimizer, params, lr):
        for p in params:
            if p.grad is not None:
                p.grad.add_(p, alpha=self.l2)

    def code(self):
        return ["with torch.no_grad():  # L2 weight decay: g + l2 w",
                "    for p in model.parameters():", f"        p.grad.add_(p, alpha={self.l2!r})"]


class Decoupled:
    def __init__(self, s: spec.Optimizer):
        self.decay = s.decoupled

    def apply(self, optimizer, params, lr):
        for p in params:
            p.mul_(1.0 - lr * self.decay)

    def code(self):
        return ["with torch.no_grad():  # decoupled weight decay: torch.optim's class has no such option",
                "    for p in model.parameters():", f"        p.mul_(1.0 - lr * {self.decay!r})"]


class Chain:
    """A spec's optimizer over `params`: the torch.optim optimizer of its rule, and the loop stages
    before optimizer.step(). Without params (a script's text only) there is no optimizer."""

    def __init__(self, s: spec.Optimizer, params=None, native=frozenset()):
        self.spec = s
        self.params = list(params) if params is not None else []
        self.rule = OPS.lookup(s)(s, frozenset(native))
        self.optimizer = self.rule.build(self.params) if params is not None else None
        self.lr = LearningRate(s)
        self.stages = [stage for stage, wanted in (
            (Clip(s), s.clip_norm is not None),
            (L2(s), bool(s.l2) and "l2" not in self.rule.handles),
            (Decoupled(s), bool(s.decoupled) and "decoupled" not in self.rule.handles)) if wanted]

    @torch.no_grad()
    def before_step(self, lr: float) -> None:
        """After backward(), before optimizer.step(): the step's learning rate, then the stages."""
        self.lr.apply(self.optimizer, self.params, lr)
        for stage in self.stages:
            stage.apply(self.optimizer, self.params, lr)

    def needs_lr(self) -> bool:
        """Whether the script's loop needs the step's learning rate (a schedule or decoupled decay)."""
        return self.spec.schedule is not None or any(isinstance(stage, Decoupled) for stage in self.stages)

    def code(self) -> tuple[str, list[str]]:
        """(the line creating the optimizer, the loop lines between loss.backward() and
        optimizer.step(), unindented)."""
        lines = self.lr.code() if self.spec.schedule is not None else []
        for stage in self.stages:
            lines += stage.code()
        return self.rule.code(), lines
