"""Optimizers: the spec's update (crossnn.spec.optimizers) as one chain of stages on tf.Variables,
written once, in the order of the NumPy reference (crossnn_numpy.optimizers):

    clip by global norm  ->  L2 decay  ->  the rule  ->  decoupled decay  ->  learning rate

per parameter w with (clipped) gradient g: g ← g + l2·w; d = rule(g); w ← w + (-lr)·(d + wd·w).
The rule is the optimizer's entry in crossnn_tensorflow.ops.OPS (a Rule, below); each stage's
training code has its script text beside it, and script_code() assembles the emitted script's
optimizer from the same stages. Scalars (lr, bias corrections) are formed in float64 and cast once
to the parameters' dtype, as PyTorch does with its Python-float hyperparameters.

These are deliberately not keras.optimizers, whose formulas differ:
  * keras.optimizers.SGD with momentum keeps a velocity scaled by the learning rate,
    v ← μ v - lr g, w ← w + v, where the spec (torch.optim.SGD) keeps b ← μ b + g, w ← w - lr b:
    the same while lr is constant, up to rounding; different once lr changes (a schedule).
  * keras.optimizers.Adam adds epsilon to the uncorrected √v (w ← w - lr_t m / (√v + ε) with
    lr_t = lr √(1-β₂ᵗ) / (1-β₁ᵗ)), i.e. in effect ε / √(1-β₂ᵗ) on √v̂; the spec adds ε to √v̂.
  * keras.optimizers.RMSprop and Adagrad put epsilon inside the square root (g / √(v + ε)), the spec
    outside (g / (√v + ε)); Keras' Adagrad starts its accumulator at 0.1 by default (torch at 0).
  * Keras' weight_decay is always decoupled (w ← w - w · wd · lr, for every optimizer), where
    "weight decay" in torch's optimizers means L2; the spec says which (weight_decay_kind).
  * tf.clip_by_global_norm scales by clip_norm / max(‖g‖, clip_norm): no 1e-6 in the denominator,
    which torch.nn.utils.clip_grad_norm_ (the spec) adds.
  * Keras keeps the learning rate in a variable of keras.config.floatx() (float32 by default) and
    casts Python-float hyperparameters to the variable's dtype through a float32 tensor
    (ops.cast(0.9, "float64") = 0.8999999761581421).
Where one of TF's fused training kernels computes the rule and the learning-rate stage exactly, the
rule uses it (Rule.fused): ResourceApplyGradientDescent and ResourceApplyMomentum (SGD),
ResourceApplyAdagradV2 (epsilon outside the root, as the spec): one in-place op per parameter
instead of three to five.

The native flavour (`native` catalog entries, see crossnn_tensorflow.NATIVE_ENTRIES): a rule entry
names the catalog entry that swaps it for Keras' own optimizer (`native_entry`, `keras`; run by
KerasOptimizer), the clip stage uses tf.clip_by_global_norm under "clip-norm", and the decay stage
Keras' decoupled decay under "weight-decay".

Rule contract (OPS.register(SpecClass) on a Rule subclass adds one; its state lives in
`slot_variables` (one tf.Variable per parameter and slot, named as crossnn.checkpoint names them)
and `counter_variables` (int64), made from the spec's state_slots() / state_counters()):
  begin(dtype) -> scalars      once per step, before the parameters (advances the counters)
  direction(i, w, g, scalars)  -> d for parameter i (w its tf.Variable, g its gradient), updating
                               the rule's slots
  fused(i, w, g, lr) -> bool   optionally: w ← w - lr·d done by one TF kernel (asked only when no
                               decoupled decay follows the rule)
  initial(slot) -> float       a slot's starting value (0 unless overridden)
  code_begin(), code_direction() -> the same, as script lines: `state[slot][i]`, `counters[name]`,
                               `w`, `g`, `dtype` in scope; code_direction assigns `d`
"""

from __future__ import annotations

from crossnn import spec
from crossnn.errors import UnsupportedFeature

from crossnn_tensorflow import device as devices
from crossnn_tensorflow.ops import OPS

tf = devices.import_tensorflow()

#: added to the global norm before dividing, as torch.nn.utils.clip_grad_norm_ (and the spec) does
CLIP_EPS = 1e-6


class Rule(tf.Module):
    """The state and per-parameter direction of an update rule (see the module docstring)."""

    #: the catalog entry under which Keras' own optimizer replaces this rule (native flavour)
    native_entry: str | None = None

    def __init__(self, s: spec.Optimizer, variables):
        super().__init__()
        self.s = s
        self.slot_variables = {slot: [tf.Variable(tf.fill(tf.shape(w), tf.constant(self.initial(slot), w.dtype)),
                                                  trainable=False, name=slot) for w in variables]
                               for slot in s.state_slots()}
        self.counter_variables = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                                  for name in s.state_counters()}

    def initial(self, slot: str) -> float:
        return 0.0

    def initial_code(self, slot: str) -> str:
        return f"tf.fill(tf.shape(w), tf.constant({self.initial(slot)!r}, w.dtype))" if self.initial(slot) \
            else "tf.zeros_like(w)"

    def begin(self, dtype):
        for counter in self.counter_variables.values():
            counter.assign_add(1)
        return None

    def code_begin(self) -> list[str]:
        return [f'counters["{name}"].assign_add(1)' for name in self.counter_variables]

    def fused(self, i, w, g, lr) -> bool:
        return False

    def direction(self, i, w, g, scalars):
        raise NotImplementedError

    def code_direction(self) -> list[str]:
        raise UnsupportedFeature("tensorflow", f"optimizer '{self.s.kind}' in a script (its rule has no script text)")

    def reset(self) -> None:
        """State as before the first step."""
        for slot, buffers in self.slot_variables.items():
            for b in buffers:
                b.assign(tf.fill(tf.shape(b), tf.constant(self.initial(slot), b.dtype)))
        for counter in self.counter_variables.values():
            counter.assign(0)

    @staticmethod
    def keras(s, f64, options):
        """Keras' own optimizer for the native flavour (hyperparameters as np.float64 via f64)."""
        raise UnsupportedFeature("tensorflow", f"a Keras optimizer for '{s.kind}'")


@OPS.register(spec.SGD)
class SGD(Rule):
    """b ← μ b + g (b starts at 0, so b = g on the first step), d = g + μ b (Nesterov) or b; d = g
    without momentum. Without Nesterov and decoupled decay the whole step is one of TF's fused
    kernels, ResourceApplyGradientDescent (w ← w - g·lr) or ResourceApplyMomentum (b ← b·μ + g,
    w ← w - b·lr), the kernels of TF's classic optimizers. Nesterov's kernel computes
    w ← w - (g·lr + b·μ·lr), which rounds differently from w - lr (g + μ b), so it is written out."""

    native_entry = "momentum-sgd"

    def fused(self, i, w, g, lr):
        s = self.s
        if not s.momentum:
            tf.raw_ops.ResourceApplyGradientDescent(var=w.handle, alpha=lr, delta=g)
        elif not s.nesterov:
            tf.raw_ops.ResourceApplyMomentum(var=w.handle, accum=self.slot_variables["momentum_buffer"][i].handle,
                                             lr=lr, grad=g, momentum=tf.constant(s.momentum, w.dtype))
        else:
            return False
        return True

    def direction(self, i, w, g, scalars):
        mu = self.s.momentum
        if not mu:
            return g
        b = self.slot_variables["momentum_buffer"][i]
        b_t = mu * b + g
        b.assign(b_t)
        return g + mu * b_t if self.s.nesterov else b_t

    def code_direction(self):
        mu = self.s.momentum
        if not mu:
            return ["d = g"]
        return ['b = state["momentum_buffer"][i]', f"b_t = {mu!r} * b + g", "b.assign(b_t)",
                f"d = g + {mu!r} * b_t  # Nesterov" if self.s.nesterov else "d = b_t"]

    @staticmethod
    def keras(s, f64, options):
        import keras

        return keras.optimizers.SGD(learning_rate=f64(s.lr), momentum=f64(s.momentum), nesterov=s.nesterov,
                                    **options)


@OPS.register(spec.Adam, spec.AdamW)
class Adam(Rule):
    """m ← m + (1-β₁)(g - m), v ← β₂ v + ((1-β₂) g) g, d = (m / (1-β₁ᵗ)) / (√v / √(1-β₂ᵗ) + eps),
    t counted from 1. AdamW is this rule with the chain's decoupled decay."""

    native_entry = "adam-epsilon"

    def begin(self, dtype):
        s = self.s
        t = tf.cast(self.counter_variables["step"].assign_add(1), tf.float64)
        return (tf.cast(1.0 - tf.pow(tf.constant(s.beta1, tf.float64), t), dtype),
                tf.cast(tf.sqrt(1.0 - tf.pow(tf.constant(s.beta2, tf.float64), t)), dtype))

    def code_begin(self):
        s = self.s
        return ['t = tf.cast(counters["step"].assign_add(1), tf.float64)',
                f"c1 = tf.cast(1.0 - {s.beta1!r} ** t, dtype)  # m's bias correction 1 - beta1^t",
                f"c2 = tf.cast(tf.sqrt(1.0 - {s.beta2!r} ** t), dtype)  # sqrt(1 - beta2^t), v's"]

    def direction(self, i, w, g, scalars):
        s, (c1, c2) = self.s, scalars
        m, v = self.slot_variables["exp_avg"][i], self.slot_variables["exp_avg_sq"][i]
        m_t = m + (1.0 - s.beta1) * (g - m)
        v_t = s.beta2 * v + ((1.0 - s.beta2) * g) * g
        m.assign(m_t)
        v.assign(v_t)
        return (m_t / c1) / (tf.sqrt(v_t) / c2 + s.eps)

    def code_direction(self):
        s = self.s
        return ['m, v = state["exp_avg"][i], state["exp_avg_sq"][i]',
                f"m_t = m + (1.0 - {s.beta1!r}) * (g - m)", f"v_t = {s.beta2!r} * v + ((1.0 - {s.beta2!r}) * g) * g",
                "m.assign(m_t)", "v.assign(v_t)",
                f"d = (m_t / c1) / (tf.sqrt(v_t) / c2 + {s.eps!r})  # eps on sqrt(v_hat), not Keras' sqrt(v)"]

    @staticmethod
    def keras(s, f64, options):
        import keras

        return keras.optimizers.Adam(learning_rate=f64(s.lr), beta_1=f64(s.beta1), beta_2=f64(s.beta2),
                                     epsilon=f64(s.eps), **options)


@OPS.register(spec.RMSprop)
class RMSprop(Rule):
    """v ← α v + ((1-α) g) g; a = √(v - ḡ²) + eps (centered, ḡ ← ḡ + (1-α)(g - ḡ)) or √v + eps;
    with momentum b ← μ b + g / a, d = b; else d = g / a. Written out: TF's ResourceApplyRMSProp puts
    eps inside the root and lr inside the momentum buffer."""

    native_entry = "rmsprop"

    def direction(self, i, w, g, scalars):
        s, slots = self.s, self.slot_variables
        v = slots["square_avg"][i]
        v_t = s.alpha * v + ((1.0 - s.alpha) * g) * g
        v.assign(v_t)
        if s.centered:
            avg = slots["grad_avg"][i]
            avg_t = avg + (1.0 - s.alpha) * (g - avg)
            avg.assign(avg_t)
            a = tf.sqrt(v_t - avg_t * avg_t) + s.eps
        else:
            a = tf.sqrt(v_t) + s.eps
        if not s.momentum:
            return g / a
        b = slots["momentum_buffer"][i]
        b_t = s.momentum * b + g / a
        b.assign(b_t)
        return b_t

    def code_direction(self):
        s = self.s
        lines = ['v = state["square_avg"][i]', f"v_t = {s.alpha!r} * v + ((1.0 - {s.alpha!r}) * g) * g",
                 "v.assign(v_t)"]
        if s.centered:
            lines += ['avg = state["grad_avg"][i]', f"avg_t = avg + (1.0 - {s.alpha!r}) * (g - avg)",
                      "avg.assign(avg_t)",
                      f"a = tf.sqrt(v_t - avg_t * avg_t) + {s.eps!r}  # centered: the variance of g"]
        else:
            lines.append(f"a = tf.sqrt(v_t) + {s.eps!r}  # eps outside the root (Keras': inside)")
        if not s.momentum:
            return lines + ["d = g / a"]
        return lines + ['b = state["momentum_buffer"][i]', f"b_t = {s.momentum!r} * b + g / a", "b.assign(b_t)",
                        "d = b_t"]

    @staticmethod
    def keras(s, f64, options):
        import keras

        return keras.optimizers.RMSprop(learning_rate=f64(s.lr), rho=f64(s.alpha), momentum=f64(s.momentum),
                                        epsilon=f64(s.eps), centered=s.centered, **options)


@OPS.register(spec.Adagrad)
class Adagrad(Rule):
    """s ← s + g² (s starts at initial_accumulator), d = g / (√s + eps): with the learning rate,
    exactly TF's ResourceApplyAdagradV2 kernel (accum += g²; var -= g · lr / (√accum + ε)), which
    does it when no decoupled decay follows. Not keras.optimizers.Adagrad: ε inside the root, and
    its accumulator starts at 0.1 by default."""

    native_entry = "adagrad"

    def initial(self, slot):
        return self.s.initial_accumulator

    def fused(self, i, w, g, lr):
        tf.raw_ops.ResourceApplyAdagradV2(var=w.handle, accum=self.slot_variables["sum"][i].handle, lr=lr,
                                          epsilon=tf.constant(self.s.eps, w.dtype), grad=g)
        return True

    def direction(self, i, w, g, scalars):
        total = self.slot_variables["sum"][i]
        total_t = total + g * g
        total.assign(total_t)
        return g / (tf.sqrt(total_t) + self.s.eps)

    def code_direction(self):
        return ['total = state["sum"][i]', "total_t = total + g * g", "total.assign(total_t)",
                f"d = g / (tf.sqrt(total_t) + {self.s.eps!r})  # eps outside the root (Keras': inside)"]

    @staticmethod
    def keras(s, f64, options):
        import keras

        return keras.optimizers.Adagrad(learning_rate=f64(s.lr), epsilon=f64(s.eps),
                                        initial_accumulator_value=f64(s.initial_accumulator), **options)


# ---- the chain -------------------------------------------------------------------------------------


class Stages:
    """The chain's stages other than the rule, for a spec optimizer and the run's catalog entries:
    the clip (the spec's, or tf.clip_by_global_norm under "clip-norm") and the weight decay (the
    spec's kind, or Keras' decoupled decay, applied before the rule, under "weight-decay")."""

    def __init__(self, s: spec.Optimizer, native: frozenset[str]):
        self.s = s
        self.tf_clip = "clip-norm" in native
        #: "weight-decay" native: Keras' meaning, w ← w - w·wd·lr before the rule, whatever the spec's kind
        self.keras_decay = s.weight_decay if "weight-decay" in native else 0.0
        self.l2 = 0.0 if self.keras_decay else s.l2
        self.decoupled = 0.0 if self.keras_decay else s.decoupled

    def clip(self, grads):
        """g ← g · min(1, clip_norm / (‖g‖ + 1e-6)), ‖g‖ the 2-norm of all gradients together."""
        if self.s.clip_norm is None:
            return list(grads)
        if self.tf_clip:
            return tf.clip_by_global_norm(grads, self.s.clip_norm)[0]
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g in grads]))
        coef = tf.minimum(self.s.clip_norm / (norm + CLIP_EPS), 1.0)
        return [g * coef for g in grads]

    CLIP_CODE = '''def clip_by_global_norm(grads, clip_norm):
    """Every g <- g * min(1, clip_norm / (norm + 1e-6)), norm the 2-norm of all gradients together:
    torch's clip_grad_norm_, the spec's. tf.clip_by_global_norm has no 1e-6."""
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g in grads]))
    coef = tf.minimum(clip_norm / (norm + 1e-6), 1.0)
    return [g * coef for g in grads]
'''

    def decay(self, w, g, lr):
        """The gradient with L2 decay added; Keras' decay applied to w first under "weight-decay"."""
        if self.keras_decay:  # keras' _apply_weight_decay: w - w · wd · lr
            w.assign(w - w * tf.constant(self.keras_decay, w.dtype) * lr)
        return g + self.l2 * w if self.l2 else g


class Chain(tf.Module):
    """The spec's optimizer over `variables`: the stages above around the rule entry."""

    def __init__(self, s: spec.Optimizer, variables, native: frozenset[str] = frozenset()):
        super().__init__()
        self.s = s
        self.stages = Stages(s, native)
        entry = OPS.lookup(s)
        if not (isinstance(entry, type) and issubclass(entry, Rule)):
            raise TypeError(f"the TF lowering of optimizer '{s.kind}' must subclass crossnn_tensorflow.optimizers.Rule")
        self.rule = entry(s, variables)
        self.slot_variables = self.rule.slot_variables
        self.counter_variables = self.rule.counter_variables

    def apply(self, grads, variables, lr) -> None:
        """One step: grads in the order of variables; lr the step's float64 learning rate."""
        stages, rule = self.stages, self.rule
        dtype = variables[0].dtype
        lr = tf.cast(lr, dtype)
        scalars = rule.begin(dtype)
        for i, (w, g) in enumerate(zip(variables, stages.clip(grads))):
            g = stages.decay(w, g, lr)
            if not stages.decoupled and rule.fused(i, w, g, lr):
                continue
            d = rule.direction(i, w, g, scalars)
            if stages.decoupled:
                d = d + stages.decoupled * w
            w.assign_add(-lr * d)

    def reset(self) -> None:
        self.rule.reset()

def script_code(s: spec.Optimizer) -> str:
    """The emitted script's optimizer: the chain's stages around the rule entry's script text, with
    TF ops (a fused kernel written as the formula it computes)."""
    rule = OPS.lookup(s, "in a script")(s, [])
    slots = "".join(f'\n            "{slot}": [tf.Variable({rule.initial_code(slot)}) for w in variables],'
                    for slot in s.state_slots())
    counters = "".join(f'\n            "{name}": tf.Variable(0, dtype=tf.int64),' for name in s.state_counters())
    head = f"# ---- the optimizer: clip -> weight decay -> the {s.kind} rule -> learning rate, in TF ops ----\n"
    lines = []
    if s.clip_norm is not None:
        head += Stages.CLIP_CODE + "\n\n"
        lines.append(f"grads = clip_by_global_norm(grads, {s.clip_norm!r})")
    lines += ["dtype = variables[0].dtype", "lr = tf.cast(lr, dtype)",
              "state, counters = self.state, self.counters", *rule.code_begin(),
              "for i, (w, g) in enumerate(zip(variables, grads)):"]
    body = []
    if s.l2:
        body.append(f"g = g + {s.l2!r} * w  # L2: torch's weight_decay (Keras' weight_decay is decoupled)")
    body += rule.code_direction()
    if s.decoupled:
        body.append(f"d = d + {s.decoupled!r} * w  # decoupled decay: w (1 - lr wd) - lr d")
    body.append("w.assign_add(-lr * d)")
    apply = "\n".join(f"        {line}" for line in lines) + "\n" + "\n".join(f"            {line}" for line in body)
    return head + f'''class Optimizer(tf.Module):
    """The spec's {s.kind} with its weight decay and clipping, as crossnn.spec.optimizers writes them
    (PyTorch's formulas, not keras.optimizers': see crossnn_tensorflow.optimizers)."""

    def __init__(self, variables):
        super().__init__()
        # per-parameter state, under crossnn's checkpoint names, and the rule's counters
        self.state = {{{slots}
        }}
        self.counters = {{{counters}
        }}

    def apply(self, grads, variables, lr):
        """One update of every variable from its gradient, with this step's learning rate lr (float64)."""
{apply}
'''


# ---- the native flavour: Keras' own optimizers ---------------------------------------------------


class KerasOptimizer(tf.Module):
    """A keras.optimizers optimizer in place of the spec's rule (the native flavour; the rule entry's
    `keras`), with the spec's hyperparameters, built as a careful float64 Keras program builds it:
    keras.config.floatx() set to the run's dtype while it is made (Keras creates its learning-rate
    variable in floatx) and the hyperparameters handed over as np.float64. A Python float would be
    cast by Keras through a float32 tensor (update_step does ops.cast(self.momentum, variable.dtype);
    ops.cast(0.9, "float64") = 0.8999999761581421), a difference of its own that would blur the
    formula difference each native entry is about. The chain's clip and L2 / decoupled decay stages
    run first unless "clip-norm" or "weight-decay" are native too (then Keras' weight_decay is the
    optimizer's own). The step's learning rate is assigned to the optimizer's learning_rate each
    step, as a schedule would set it. Its state is Keras' own (e.g. SGD's velocity is -lr · b), so a
    native run exports no canonical training state."""

    def __init__(self, s: spec.Optimizer, variables, native: frozenset[str], dtype: str):
        super().__init__()
        import numpy as np

        self.s = s
        self.stages = Stages(s, native)
        options = {"weight_decay": np.float64(self.stages.keras_decay)} if self.stages.keras_decay else {}
        self.stages.keras_decay = 0.0  # Keras' optimizer applies it
        with devices.floatx(dtype):
            self.keras = OPS.lookup(s).keras(s, np.float64, options)
        self.keras.build(variables)  # its slot variables, made now, outside any tf.function
        self.lr_dtype = self.keras.learning_rate.dtype

    def apply(self, grads, variables, lr) -> None:
        stages = self.stages
        grads = stages.clip(grads)
        grads = [stages.decay(w, g, None) for w, g in zip(variables, grads)]
        if stages.decoupled:
            for w in variables:
                w.assign(w * tf.cast(1.0 - lr * stages.decoupled, w.dtype))
        self.keras.learning_rate = tf.cast(lr, self.lr_dtype)
        self.keras.apply_gradients(zip(grads, variables))

    def reset(self) -> None:
        raise UnsupportedFeature("tensorflow", "resuming a native run's Keras optimizer state")


def optimizer(s: spec.Optimizer, variables, native: frozenset[str] = frozenset(), dtype: str = "float32"):
    """The lowering of optimizer spec `s` over `variables`: the chain around the spec's rule, or
    Keras' own optimizer where `native` names the rule's catalog entry."""
    entry = OPS.lookup(s)
    if getattr(entry, "native_entry", None) in native:
        return KerasOptimizer(s, variables, native, dtype)
    return Chain(s, variables, native)
