"""The optimizer of a spec as ONE optax chain, in the order of crossnn.spec.optimizers:

    clip by global norm  ->  L2 decay  ->  the rule  ->  decoupled decay  ->  learning rate

The first four are optax GradientTransformations chained with optax.chain; they turn the gradients
into the rule's direction d. The learning rate is the last stage, applied by Chain.apply as
w ← w + (-lr_t)·d (optax.apply_updates), with lr_t the step's scheduled rate fed in as an argument
(crossnn's StepClock computes it): a value, not a constant compiled into the step, so a schedule never
recompiles and a resumed run needs no schedule counter.

optax computes the spec's formula for most stages and is used as is (each checked against optax's
source):
    L2 / decoupled decay   optax.add_decayed_weights: u + λ·w (before the rule: L2; after: decoupled)
    SGD momentum           optax.trace(decay=μ, nesterov): b ← u + μ·b (zero start, so b = u on the
                           first step, as torch's buffer), d = b, or u + μ·b with nesterov
    Adam, AdamW            optax.scale_by_adam(b1, b2, eps, eps_root=0) computes the spec's Adam:
                           d = m̂ / (√v̂ + eps), eps on √v̂ after the bias correction, as torch (not
                           Keras' placement); scale_by_adam_expm1 is that formula with the bias
                           correction 1 - βᵗ taken accurately in float32 too (see there)
    RMSprop                optax.scale_by_rms(decay=α, eps, eps_in_sqrt=False): d = u / (√v + eps);
                           centered: optax.scale_by_stddev(..., eps_in_sqrt=False): u / (√(v - ḡ²) + eps);
                           momentum: optax.trace(decay=μ) after it (b ← u/a + μ·b, lr outside b)
Where optax computes something else, the spec's formula is written with jax ops here:
    clip                   clip_by_global_norm_plus_eps: u·min(1, c / (‖u‖ + 1e-6)) (torch's
                           clip_grad_norm_); optax.clip_by_global_norm has no 1e-6 and leaves u
                           unchanged below c (it is the native flavour's "clip-norm")
    Adagrad                scale_by_adagrad: d = u / (√s + eps); optax.scale_by_rss divides by
                           √(s + eps) (eps inside the root, as Keras; native "adagrad")
optax's own defaults put eps inside the root for RMSprop too (optax.rmsprop's eps_in_sqrt=True):
that is the native flavour's "rmsprop".

Rules are entries of the registry (crossnn_jax.ops.OPS): rule(s, native) -> [Stage, ...]. A Stage
names its transformation function and arguments once; the trainer calls it and the emitted script
writes the same call (`code`). Its `slots` and `counters` say which field of its optax state holds
which piece of crossnn's optimizer state (checkpoints: crossnn.checkpoint's names, torch's), e.g.
scale_by_adam's mu is exp_avg. RMSprop and Adagrad keep a step counter as torch does (count_steps).
"""

from __future__ import annotations

import inspect
import math
import textwrap
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from crossnn import spec
from crossnn_jax.ops import OPS

#: added to the global norm before dividing, as torch.nn.utils.clip_grad_norm_ does
CLIP_EPS = 1e-6


# ---- the spec's stages that optax has no transformation for (scripts carry their source) ---------


def clip_by_global_norm_plus_eps(max_norm):
    """u ← u · min(1, max_norm / (‖u‖ + 1e-6)), ‖u‖ the 2-norm of all gradients together (the spec's
    and torch.nn.utils.clip_grad_norm_'s clip; optax.clip_by_global_norm has no 1e-6)."""

    def update_fn(updates, state, params=None):
        coef = jnp.minimum(max_norm / (optax.tree.norm(updates) + 1e-6), 1.0)
        return jax.tree.map(lambda u: u * coef, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_by_adagrad(initial_accumulator_value, eps):
    """s ← s + u² (s starts at initial_accumulator_value), d = u / (√s + eps): the spec's and torch's
    Adagrad. optax.scale_by_rss computes u / √(s + eps) instead (and 0 where s = 0)."""

    def init_fn(params):
        return optax.ScaleByRssState(jax.tree.map(lambda w: jnp.full_like(w, initial_accumulator_value), params))

    def update_fn(updates, state, params=None):
        total = jax.tree.map(lambda s, u: s + u * u, state.sum_of_squares, updates)
        return jax.tree.map(lambda u, s: u / (jnp.sqrt(s) + eps), updates, total), optax.ScaleByRssState(total)

    return optax.GradientTransformation(init_fn, update_fn)


class StepCount(NamedTuple):
    count: jax.Array  # int32 scalar: the optimizer steps taken


def count_steps():
    """Counts the optimizer's steps and changes nothing (RMSprop and Adagrad keep a "step" counter
    in their state, as torch's do)."""

    def update_fn(updates, state, params=None):
        return updates, StepCount(state.count + 1)

    return optax.GradientTransformation(lambda params: StepCount(jnp.zeros([], jnp.int32)), update_fn)


def scale_by_adam_expm1(b1, b2, eps):
    """optax.scale_by_adam(b1, b2, eps, eps_root=0) with its bias corrections 1 - βᵗ computed as
    -expm1(t · log β) from log β in float64: m ← (1-β₁)·u + β₁·m, v ← (1-β₂)·u² + β₂·v,
    d = (m / (1-β₁ᵗ)) / (√(v / (1-β₂ᵗ)) + eps), in optax's order, with optax's state (ScaleByAdamState).
    optax computes βᵗ in the parameters' dtype from β rounded to it: in float32, 1 - 0.999 comes out
    1.3e-5 off, every update moves by ~1e-5, and digits-cnn ends 5.8e-2 from float64 where NumPy,
    torch and TF stay within 1e-4 (measured); in float64 the two agree to the last bits."""
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init_fn(params):
        return optax.ScaleByAdamState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                                      jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        mu = jax.tree.map(lambda u, m: (1 - b1) * u + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda u, v: (1 - b2) * (u * u) + b2 * v, updates, state.nu)
        count = state.count + 1
        c1, c2 = -jnp.expm1(count * log_b1), -jnp.expm1(count * log_b2)
        direction = jax.tree.map(lambda m, v: (m / c1.astype(m.dtype)) / (jnp.sqrt(v / c2.astype(v.dtype)) + eps),
                                 mu, nu)
        return direction, optax.ScaleByAdamState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


#: the script helpers this module provides, by name: their source
SCRIPT_HELPERS = {
    "clip_by_global_norm_plus_eps": textwrap.dedent(inspect.getsource(clip_by_global_norm_plus_eps)),
    "scale_by_adagrad": textwrap.dedent(inspect.getsource(scale_by_adagrad)),
    "scale_by_adam_expm1": textwrap.dedent(inspect.getsource(scale_by_adam_expm1)),
    "count_steps": (textwrap.dedent(inspect.getsource(StepCount)) + "\n\n"
                    + textwrap.dedent(inspect.getsource(count_steps))),
}


# ---- stages -------------------------------------------------------------------------------------------


class Stage(NamedTuple):
    """One GradientTransformation of the chain: fn(**kwargs). slots / counters: (crossnn name, field
    of the stage's optax state) pairs; note: a comment for the script."""

    fn: Callable
    kwargs: dict
    slots: tuple[tuple[str, str], ...] = ()
    counters: tuple[tuple[str, str], ...] = ()
    note: str = ""

    def build(self) -> optax.GradientTransformation:
        return self.fn(**self.kwargs)

    @property
    def helper(self) -> str | None:
        """The script helper this stage calls, or None for one of optax's own."""
        return None if getattr(optax, self.fn.__name__, None) is self.fn else self.fn.__name__

    def code(self) -> str:
        name = self.fn.__name__ if self.helper else f"optax.{self.fn.__name__}"
        args = ", ".join(f"{key}={value!r}" for key, value in self.kwargs.items())
        return f"{name}({args}),{'  # ' + self.note if self.note else ''}"


def _trace(momentum: float, nesterov: bool = False) -> Stage:
    return Stage(optax.trace, {"decay": momentum, "nesterov": nesterov}, slots=(("momentum_buffer", "trace"),))


@OPS.register(spec.SGD)
def sgd(s: spec.SGD, native):
    """optax.trace(decay=momentum, nesterov) with momentum; nothing without (d = u)."""
    return [_trace(s.momentum, s.nesterov)] if s.momentum else []


@OPS.register(spec.Adam, spec.AdamW)
def adam(s: spec.Adam, native):
    """scale_by_adam_expm1: optax.scale_by_adam's formula, the spec's Adam, with accurate float32 bias
    corrections (AdamW is this rule with the chain's decoupled decay)."""
    return [Stage(scale_by_adam_expm1, {"b1": s.beta1, "b2": s.beta2, "eps": s.eps},
                  slots=(("exp_avg", "mu"), ("exp_avg_sq", "nu")), counters=(("step", "count"),))]


@OPS.register(spec.RMSprop)
def rmsprop(s: spec.RMSprop, native):
    """optax.scale_by_rms / scale_by_stddev (centered) with eps outside the root (eps_in_sqrt=False;
    native "rmsprop": optax's default, inside), then optax.trace for momentum."""
    inside = "rmsprop" in native
    note = "optax's default: eps inside the square root" if inside else "eps outside the square root, as the spec"
    options = {"decay": s.alpha, "eps": s.eps, "eps_in_sqrt": inside}
    if s.centered:
        scale = Stage(optax.scale_by_stddev, options, slots=(("square_avg", "nu"), ("grad_avg", "mu")), note=note)
    else:
        scale = Stage(optax.scale_by_rms, options, slots=(("square_avg", "nu"),), note=note)
    steps = Stage(count_steps, {}, counters=(("step", "count"),))
    return [steps, scale] + ([_trace(s.momentum)] if s.momentum else [])


@OPS.register(spec.Adagrad)
def adagrad(s: spec.Adagrad, native):
    """scale_by_adagrad (the spec's, eps outside the root); native "adagrad": optax.scale_by_rss."""
    steps = Stage(count_steps, {}, counters=(("step", "count"),))
    options = {"initial_accumulator_value": s.initial_accumulator, "eps": s.eps}
    if "adagrad" in native:
        return [steps, Stage(optax.scale_by_rss, options, slots=(("sum", "sum_of_squares"),),
                             note="optax's: u / sqrt(s + eps), eps inside the square root")]
    return [steps, Stage(scale_by_adagrad, options, slots=(("sum", "sum_of_squares"),))]


# ---- the chain ------------------------------------------------------------------------------------------


class Chain:
    """The spec's optimizer: `stages` (clip, L2 decay, the rule, decoupled decay) as one optax.chain
    (`transform`), then the learning rate (apply). Its state is optax.chain's: a tuple with one state
    per stage."""

    def __init__(self, s: spec.Optimizer, native=frozenset()):
        self.s = s
        stages = []
        if s.clip_norm is not None:
            if "clip-norm" in native:
                stages.append(Stage(optax.clip_by_global_norm, {"max_norm": s.clip_norm},
                                    note="optax's: no 1e-6, unchanged below max_norm"))
            else:
                stages.append(Stage(clip_by_global_norm_plus_eps, {"max_norm": s.clip_norm}))
        if s.l2:
            stages.append(Stage(optax.add_decayed_weights, {"weight_decay": s.l2}, note="L2 weight decay"))
        stages += OPS.lookup(s)(s, native)
        if s.decoupled:
            stages.append(Stage(optax.add_decayed_weights, {"weight_decay": s.decoupled},
                                note="decoupled weight decay"))
        self.stages = stages
        # plain SGD has no stage before the learning rate: optax.chain() needs at least one
        self.transform = optax.chain(*(stage.build() for stage in stages)) if stages else optax.identity()

    def init(self, params):
        return self.transform.init(params)

    def update(self, grads, state, params):
        """(the direction d, new state) for gradients `grads`."""
        return self.transform.update(grads, state, params)

    @staticmethod
    def apply(params, direction, lr):
        """The learning-rate stage: w ← w + (-lr)·d."""
        return optax.apply_updates(params, jax.tree.map(lambda d: (-lr) * d, direction))

    def export(self, state) -> tuple[dict[str, dict], dict[str, int]]:
        """crossnn's optimizer state from the chain's: {slot: {parameter name: array}} and {counter: int}."""
        slots, counters = {}, {}
        for stage, part in zip(self.stages, state):
            slots.update({slot: dict(getattr(part, field)) for slot, field in stage.slots})
            counters.update({counter: int(getattr(part, field)) for counter, field in stage.counters})
        return slots, counters

    def restore(self, state, slots: dict, counters: dict, to_array):
        """The chain's state `state` with the slots and counters crossnn's state holds (to_array makes
        one of the run's arrays from a NumPy one); what `slots` lacks keeps its value in `state`."""
        parts = []
        for stage, part in zip(self.stages, state):
            changes = {field: {name: to_array(slots[slot][name]) for name in getattr(part, field)}
                       for slot, field in stage.slots if slot in slots}
            changes.update({field: jnp.asarray(int(counters[counter]), jnp.int32)
                            for counter, field in stage.counters if counter in counters})
            parts.append(part._replace(**changes) if changes else part)
        return tuple(parts)

    @property
    def helpers(self) -> list[str]:
        return [stage.helper for stage in self.stages if stage.helper]

    def code(self) -> str:
        """The script's optimizer: the same chain, written out."""
        lines = ["# clip -> weight decay -> rule -> decoupled decay; the learning rate is applied by the step",
                 "optimizer = optax.chain("]
        if not self.stages:
            return ("# plain SGD: no stage before the learning rate, which the step applies\n"
                    "optimizer = optax.identity()\n")
        lines += [f"    {stage.code()}" for stage in self.stages]
        return "\n".join(lines) + "\n)\n"
