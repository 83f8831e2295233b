"""Optimizers as a chain of pure stages, written against the array namespace `xp`
(crossnn_numpy.xp), in the order of crossnn.spec.optimizers:

    clip by global norm  ->  L2 decay  ->  the rule  ->  decoupled decay  ->  learning rate

Every stage is an init/update pair over a list of arrays (the leaves; the trainers pass one flat array
holding every parameter): init(params) -> state, update(u, state, params, lr) -> (u, state), where
u is the running update, the gradients on entry. The chain's result is the step w ← w + u. Nothing
handed in is written to, so the chain runs under jax.jit as well as on NumPy.

The rule is the optimizer's own entry in the backend's registry (crossnn_numpy.ops.OPS), a Rule:
its state holds the per-parameter slots under the names checkpoints use (PyTorch's: momentum_buffer,
exp_avg, ...) plus its counters, and `code` gives the lines of the emitted script's update loop.
"""

from __future__ import annotations

from typing import NamedTuple

from crossnn import spec
from crossnn_numpy.ops import OPS

#: added to the global norm before dividing, as torch.nn.utils.clip_grad_norm_ does
CLIP_EPS = 1e-6


class Rule:
    """An update rule: state_slots zero arrays (or `initial`) and the counters at 0 to start;
    update(u, state, params) -> (the rule's direction d, state). The chain applies w ← w - lr·d.
    code(): the script lines that turn `u` (one parameter's update, `w` its value) into d, reading
    and writing state[slot][name]; the counters are advanced once per step before the loop."""

    def __init__(self, s: spec.Optimizer, xp):
        self.s, self.xp = s, xp

    def initial(self, slot: str, w):
        """A slot's value before the first step."""
        return self.xp.zeros_like(w)

    def initial_code(self, slot: str) -> str:
        """The same, as the script writes it (w: the parameter)."""
        return "np.zeros_like(w)"

    def init(self, params) -> dict:
        return {**{slot: [self.initial(slot, w) for w in params] for slot in self.s.state_slots()},
                **{counter: 0 for counter in self.s.state_counters()}}

    def update(self, u, state, params):
        raise NotImplementedError

    def code(self) -> list[str]:
        raise NotImplementedError


def _counted(state) -> tuple[dict, object]:
    """The state with its step count advanced, and the new count t."""
    t = state["step"] + 1
    return {**state, "step": t}, t


@OPS.register(spec.SGD)
class SGD(Rule):
    """b ← μ b + u (b starts at 0, so b = u on the first step, as torch's buffer), d = u + μ b
    (Nesterov) or b; d = u without momentum."""

    def update(self, u, state, params):
        mu = self.s.momentum
        if not mu:
            return u, state
        buffers = [mu * b + g for b, g in zip(state["momentum_buffer"], u)]
        d = [g + mu * b for g, b in zip(u, buffers)] if self.s.nesterov else buffers
        return d, {**state, "momentum_buffer": buffers}

    def code(self):
        mu = self.s.momentum
        if not mu:
            return []
        return [f'b = state["momentum_buffer"][name] = {mu!r} * state["momentum_buffer"][name] + u',
                f"u = u + {mu!r} * b" if self.s.nesterov else "u = b"]


@OPS.register(spec.Adam, spec.AdamW)
class Adam(Rule):
    """m ← m + (1-β₁)(u - m), v ← β₂ v + (1-β₂) u², d = (m / (1-β₁ᵗ)) / (√v / √(1-β₂ᵗ) + eps).
    AdamW is this rule with the chain's decoupled decay."""

    def update(self, u, state, params):
        s, xp = self.s, self.xp
        state, t = _counted(state)
        c1, c2 = 1.0 - s.beta1 ** t, (1.0 - s.beta2 ** t) ** 0.5
        m = [m + (1.0 - s.beta1) * (g - m) for m, g in zip(state["exp_avg"], u)]
        v = [s.beta2 * v + ((1.0 - s.beta2) * g) * g for v, g in zip(state["exp_avg_sq"], u)]
        d = [(mi / c1) / (xp.sqrt(vi) / c2 + s.eps) for mi, vi in zip(m, v)]
        return d, {**state, "exp_avg": m, "exp_avg_sq": v}

    def code(self):
        s = self.s
        m, v = 'state["exp_avg"][name]', 'state["exp_avg_sq"][name]'
        return [f"m = {m} = {m} + {1.0 - s.beta1!r} * (u - {m})",
                f"v = {v} = {s.beta2!r} * {v} + ({1.0 - s.beta2!r} * u) * u",
                f"u = (m / (1.0 - {s.beta1!r} ** t)) / (np.sqrt(v) / (1.0 - {s.beta2!r} ** t) ** 0.5 + {s.eps!r})"]


@OPS.register(spec.RMSprop)
class RMSprop(Rule):
    """v ← α v + (1-α) u²; a = √(v - ḡ²) + eps (centered, ḡ ← ḡ + (1-α)(u - ḡ)) or √v + eps;
    with momentum b ← μ b + u / a, d = b; else d = u / a."""

    def update(self, u, state, params):
        s, xp = self.s, self.xp
        state, _ = _counted(state)
        v = [s.alpha * v + ((1.0 - s.alpha) * g) * g for v, g in zip(state["square_avg"], u)]
        state = {**state, "square_avg": v}
        if s.centered:
            avg = [a + (1.0 - s.alpha) * (g - a) for a, g in zip(state["grad_avg"], u)]
            state["grad_avg"] = avg
            denom = [xp.sqrt(vi - ai * ai) + s.eps for vi, ai in zip(v, avg)]
        else:
            denom = [xp.sqrt(vi) + s.eps for vi in v]
        if not s.momentum:
            return [g / a for g, a in zip(u, denom)], state
        buffers = [s.momentum * b + g / a for b, g, a in zip(state["momentum_buffer"], u, denom)]
        return buffers, {**state, "momentum_buffer": buffers}

    def code(self):
        s = self.s
        v, avg, b = 'state["square_avg"][name]', 'state["grad_avg"][name]', 'state["momentum_buffer"][name]'
        lines = [f"v = {v} = {s.alpha!r} * {v} + ({1.0 - s.alpha!r} * u) * u"]
        if s.centered:
            lines += [f"avg = {avg} = {avg} + {1.0 - s.alpha!r} * (u - {avg})",
                      f"a = np.sqrt(v - avg * avg) + {s.eps!r}"]
        else:
            lines.append(f"a = np.sqrt(v) + {s.eps!r}")
        if s.momentum:
            return lines + [f"u = {b} = {s.momentum!r} * {b} + u / a"]
        return lines + ["u = u / a"]


@OPS.register(spec.Adagrad)
class Adagrad(Rule):
    """s ← s + u² (s starts at initial_accumulator), d = u / (√s + eps)."""

    def initial(self, slot, w):
        return self.xp.zeros_like(w) + self.s.initial_accumulator

    def initial_code(self, slot):
        return f"np.zeros_like(w) + {self.s.initial_accumulator!r}"

    def update(self, u, state, params):
        state, _ = _counted(state)
        total = [s + g * g for s, g in zip(state["sum"], u)]
        return [g / (self.xp.sqrt(s) + self.s.eps) for g, s in zip(u, total)], {**state, "sum": total}

    def code(self):
        return ['total = state["sum"][name] = state["sum"][name] + u * u', f"u = u / (np.sqrt(total) + {self.s.eps!r})"]


class Chain(NamedTuple):
    """The optimizer of a spec: clip, L2 decay, the rule, decoupled decay and the learning rate."""

    s: spec.Optimizer
    rule: Rule
    xp: object

    def init(self, params) -> dict:
        """The rule's state (slots and counters): the other stages keep none."""
        return self.rule.init(params)

    def update(self, grads, state, params, lr):
        """(updates u with w_new = w + u, new state) for gradients `grads` at learning rate lr."""
        s, xp = self.s, self.xp
        u = grads
        if s.clip_norm is not None:
            total = None
            for g in u:
                part = xp.sum(g * g)
                total = part if total is None else total + part
            coef = xp.minimum(s.clip_norm / (xp.sqrt(total) + CLIP_EPS), 1.0)
            u = [g * coef for g in u]
        if s.l2:
            u = [g + s.l2 * w for g, w in zip(u, params)]
        u, state = self.rule.update(u, state, params)
        if s.decoupled:
            u = [d + s.decoupled * w for d, w in zip(u, params)]
        return [(-lr) * d for d in u], state

    def code(self) -> str:
        """The emitted script's init_state(P) and update(P, G, state, lr)."""
        s = self.s
        slots = ", ".join(f'"{slot}": {{name: {self.rule.initial_code(slot)} for name, w in P.items() '
                          f'if name in TRAINED}}' for slot in s.state_slots())
        counters = ", ".join(f'"{c}": 0' for c in s.state_counters())
        lines = ["def init_state(P):",
                 '    """The optimizer state: per-parameter slots (PyTorch\'s names) and counters."""',
                 f"    return {{{', '.join(part for part in (slots, counters) if part)}}}", "", "",
                 "def update(P, G, state, lr):",
                 '    """One step of the parameters in TRAINED: clip, L2 decay, the rule, decoupled decay, the',
                 '    learning rate. Returns the new P."""']
        if s.clip_norm is not None:
            lines += ["    norm = np.sqrt(sum(np.sum(g * g) for g in G.values()))  # global norm, as clip_grad_norm_",
                      f"    coef = min({s.clip_norm!r} / (norm + {CLIP_EPS!r}), 1.0)"]
        for counter in s.state_counters():
            lines.append(f'    t = state["{counter}"] = state["{counter}"] + 1')
        lines += ["    new = dict(P)", "    for name in TRAINED:", "        w, u = P[name], G[name]"]
        if s.clip_norm is not None:
            lines.append("        u = u * coef")
        if s.l2:
            lines.append(f"        u = u + {s.l2!r} * w  # L2 weight decay")
        lines += [f"        {line}" for line in self.rule.code()]
        if s.decoupled:
            lines.append(f"        u = u + {s.decoupled!r} * w  # decoupled weight decay")
        lines += ["        new[name] = w + (-lr) * u", "    return new"]
        return "\n".join(lines) + "\n"


def chain(s: spec.Optimizer, xp) -> Chain:
    """The chain of the spec's optimizer, its rule from the registry."""
    return Chain(s, OPS.lookup(s)(s, xp), xp)
