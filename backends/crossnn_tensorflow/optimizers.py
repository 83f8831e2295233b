"""Optimizers: the update rules of crossnn.spec.optimizers (PyTorch's and the papers'), written with
TF ops on tf.Variables, in PyTorch's operation order (the NumPy reference's, crossnn_numpy.optimizers).

Every step, as the spec orders it: clip all gradients by their global norm (clip_norm), weight decay
(L2 added to the gradient, or decoupled: w ← w · (1 - lr_t · wd)), then the rule's update with the
step's learning rate lr_t (a float64 scalar tensor fed in per step, so schedules never retrace).

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
    (ops.cast(0.9, "float64") = 0.8999999761581421), so unless floatx is float64 and the
    hyperparameters are np.float64, a float64 model trains with float32 ones.
Where a TF kernel computes exactly the spec's rule it is used: ResourceApplyGradientDescent,
ResourceApplyMomentum (SGD) and ResourceApplyAdagradV2 (epsilon outside the root, as the spec).

Scalars (lr, bias corrections, decay factors) are formed in float64 and cast once to the parameter
dtype, as PyTorch does with its Python-float hyperparameters.

The native flavour (`native` catalog entries, see crossnn_tensorflow.NATIVE_ENTRIES) uses Keras'
optimizers instead (KerasOptimizer below) or TF's clip_by_global_norm.

State: every rule keeps its buffers in tf.Variables named as crossnn.checkpoint names them
(`slot_variables`, `counter_variables`), so a trainer can export and load them.

User-defined optimizers: subclass crossnn.spec.Optimizer (with a `kind`), then register a Rule:

    @crossnn_tensorflow.optimizers.register(MySignSGD)
    class SignSGD(crossnn_tensorflow.optimizers.Rule):
        def create(self, variables):             # make the state, e.g. self.slot("momentum_buffer", variables)
            pass
        def update(self, i, w, g, lr):           # w: tf.Variable, g: its (clipped, decayed) gradient,
            w.assign_sub(tf.cast(lr, w.dtype) * tf.sign(g))   # lr: the step's float64 learning rate
"""

from __future__ import annotations

import tensorflow as tf

from crossnn import spec
from crossnn.errors import UnsupportedFeature

from crossnn_tensorflow import device as devices

#: added to the global norm before dividing, as torch.nn.utils.clip_grad_norm_ (and the spec) does
CLIP_EPS = 1e-6


def clip_by_global_norm(grads, clip_norm: float):
    """g ← g · min(1, clip_norm / (‖g‖ + 1e-6)), ‖g‖ the 2-norm of all gradients together (the spec's
    clip; tf.clip_by_global_norm has no 1e-6). The norm and the factor are float64."""
    squares = [tf.cast(tf.reduce_sum(g * g), tf.float64) for g in grads]
    norm = tf.sqrt(tf.add_n(squares))
    coef = tf.minimum(tf.constant(1.0, tf.float64), clip_norm / (norm + CLIP_EPS))
    return [g * tf.cast(coef, g.dtype) for g in grads]


def _clip(grads, s: spec.Optimizer, native: frozenset[str]):
    if s.clip_norm is None:
        return list(grads)
    if "clip-norm" in native:
        return tf.clip_by_global_norm(grads, s.clip_norm)[0]
    return clip_by_global_norm(grads, s.clip_norm)


class Rule(tf.Module):
    """Shared steps of every rule: clip by global norm, then weight decay (L2 or decoupled), then
    `update` per parameter. Subclasses make their state in `create` (with `slot` and `counter`) and
    implement `update`."""

    def __init__(self, s: spec.Optimizer, variables, native: frozenset[str] = frozenset()):
        super().__init__()
        self.s = s
        self.native = frozenset(native)
        kind = s.weight_decay_kind
        #: "weight-decay" native: Keras' meaning, decoupled whatever the spec's kind, as Keras writes it
        self.keras_decay = "weight-decay" in self.native and bool(s.weight_decay)
        if self.keras_decay:
            kind = "decoupled"
        self.l2 = s.weight_decay if kind == "l2" else 0.0
        self.decoupled = s.weight_decay if kind == "decoupled" else 0.0
        #: canonical slot name (crossnn.checkpoint) -> one tf.Variable per parameter
        self.slot_variables: dict[str, list[tf.Variable]] = {}
        self.slot_initial: dict[str, float] = {}
        #: canonical counter name -> an int64 tf.Variable
        self.counter_variables: dict[str, tf.Variable] = {}
        self.create(variables)

    def slot(self, name: str, variables, initial: float = 0.0) -> list[tf.Variable]:
        """A state buffer per parameter, shaped like it, filled with `initial`."""
        self.slot_initial[name] = initial
        self.slot_variables[name] = [tf.Variable(tf.fill(tf.shape(w), tf.constant(initial, w.dtype)),
                                                 trainable=False, name=name) for w in variables]
        return self.slot_variables[name]

    def counter(self, name: str) -> tf.Variable:
        self.counter_variables[name] = tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
        return self.counter_variables[name]

    def reset(self) -> None:
        """State as before the first step."""
        for name, buffers in self.slot_variables.items():
            for b in buffers:
                b.assign(tf.fill(tf.shape(b), tf.constant(self.slot_initial[name], b.dtype)))
        for c in self.counter_variables.values():
            c.assign(0)

    def create(self, variables) -> None:
        """Make the rule's state (nothing by default)."""

    def apply(self, grads, variables, lr) -> None:
        """One step: grads in the order of variables; lr the step's float64 learning rate."""
        grads = _clip(grads, self.s, self.native)
        for i, (w, g) in enumerate(zip(variables, grads)):
            if self.decoupled:
                if self.keras_decay:  # keras' _apply_weight_decay: w - w · wd · lr
                    w.assign(w - w * tf.constant(self.decoupled, w.dtype) * tf.cast(lr, w.dtype))
                else:
                    w.assign(w * tf.cast(1.0 - lr * self.decoupled, w.dtype))
            if self.l2:
                g = g + self.l2 * w
            self.update(i, w, g, lr)

    def update(self, i: int, w: tf.Variable, g, lr) -> None:
        raise NotImplementedError


class SGD(Rule):
    """b ← μ b + g (b = g on the first step);  d = g + μ b (Nesterov) or b;  w ← w - lr d.  The buffer
    b starts at zero, so μ · 0 + g = g gives the first step exactly.

    Without Nesterov this is exactly what TF's own fused training kernels compute, so they do it:
    ResourceApplyGradientDescent (w ← w - g · lr) and ResourceApplyMomentum (b ← b · μ + g,
    w ← w - b · lr), the kernels of TF's classic optimizers (tf.compat.v1.train, Keras 2). One
    in-place op per parameter instead of three to five, which saves a tenth of the step time on small
    models and a pass over the parameters on large ones. Nesterov's kernel computes
    w ← w - (g · lr + b · μ · lr), which rounds differently from w ← w - lr (g + μ b), so that
    case is written out."""

    def create(self, variables):
        self.buffers = self.slot("momentum_buffer", variables) if self.s.momentum else []

    def update(self, i, w, g, lr):
        s = self.s
        lr = tf.cast(lr, w.dtype)
        if not s.momentum:
            tf.raw_ops.ResourceApplyGradientDescent(var=w.handle, alpha=lr, delta=g)
        elif not s.nesterov:
            tf.raw_ops.ResourceApplyMomentum(var=w.handle, accum=self.buffers[i].handle, lr=lr, grad=g,
                                             momentum=tf.constant(s.momentum, w.dtype))
        else:
            b = self.buffers[i] * s.momentum + g
            self.buffers[i].assign(b)
            w.assign_sub(lr * (g + s.momentum * b))


class Adam(Rule):
    """m ← m + (1-β₁)(g - m);  v ← β₂ v + ((1-β₂) g) g;
    w ← w + (-lr / (1-β₁ᵗ)) m / (√v / √(1-β₂ᵗ) + eps), t counted in a variable from 1.
    AdamW is this rule with decoupled decay (applied in Rule.apply)."""

    def create(self, variables):
        self.step = self.counter("step")
        self.exp_avg = self.slot("exp_avg", variables)
        self.exp_avg_sq = self.slot("exp_avg_sq", variables)

    def apply(self, grads, variables, lr):
        s = self.s
        t = tf.cast(self.step.assign_add(1), tf.float64)
        self.neg_step_size = -(lr / (1.0 - tf.pow(tf.constant(s.beta1, tf.float64), t)))
        self.correction2_sqrt = tf.sqrt(1.0 - tf.pow(tf.constant(s.beta2, tf.float64), t))
        super().apply(grads, variables, lr)

    def update(self, i, w, g, lr):
        s, m, v = self.s, self.exp_avg[i], self.exp_avg_sq[i]
        dtype = w.dtype
        m_t = m + (1.0 - s.beta1) * (g - m)
        v_t = v * s.beta2 + ((1.0 - s.beta2) * g) * g
        m.assign(m_t)
        v.assign(v_t)
        denom = tf.sqrt(v_t) / tf.cast(self.correction2_sqrt, dtype) + s.eps
        w.assign_add((tf.cast(self.neg_step_size, dtype) * m_t) / denom)


class RMSprop(Rule):
    """v ← α v + ((1-α) g) g;  a = √(v - ḡ²) + eps (centered, ḡ ← ḡ + (1-α)(g - ḡ)) or √v + eps;
    with momentum b ← μ b + g / a, w ← w - lr b; else w ← w + (-lr g) / a. Written out: TF's
    ResourceApplyRMSProp puts eps inside the root and lr inside the momentum buffer."""

    def create(self, variables):
        s = self.s
        self.step = self.counter("step")
        self.square_avg = self.slot("square_avg", variables)
        self.momentum_buffer = self.slot("momentum_buffer", variables) if s.momentum else []
        self.grad_avg = self.slot("grad_avg", variables) if s.centered else []

    def apply(self, grads, variables, lr):
        self.step.assign_add(1)
        super().apply(grads, variables, lr)

    def update(self, i, w, g, lr):
        s = self.s
        v = self.square_avg[i]
        v_t = v * s.alpha + ((1.0 - s.alpha) * g) * g
        v.assign(v_t)
        if s.centered:
            avg = self.grad_avg[i]
            avg_t = avg + (1.0 - s.alpha) * (g - avg)
            avg.assign(avg_t)
            a = tf.sqrt(v_t - avg_t * avg_t) + s.eps
        else:
            a = tf.sqrt(v_t) + s.eps
        lr = tf.cast(lr, w.dtype)
        if s.momentum:
            b = self.momentum_buffer[i]
            b_t = b * s.momentum + g / a
            b.assign(b_t)
            w.assign_sub(lr * b_t)
        else:
            w.assign_add((-lr * g) / a)


class Adagrad(Rule):
    """s ← s + g² (s starts at initial_accumulator), w ← w - lr g / (√s + eps): exactly TF's
    ResourceApplyAdagradV2 kernel (accum += g²; var -= g · lr / (√accum + ε)), which does it.
    Not keras.optimizers.Adagrad: ε inside the root, and its accumulator starts at 0.1 by default."""

    def create(self, variables):
        self.step = self.counter("step")
        self.sum = self.slot("sum", variables, self.s.initial_accumulator)

    def apply(self, grads, variables, lr):
        self.step.assign_add(1)
        super().apply(grads, variables, lr)

    def update(self, i, w, g, lr):
        tf.raw_ops.ResourceApplyAdagradV2(var=w.handle, accum=self.sum[i].handle, lr=tf.cast(lr, w.dtype),
                                          epsilon=tf.constant(self.s.eps, w.dtype), grad=g)


OPTIMIZERS = {spec.SGD: SGD, spec.Adam: Adam, spec.AdamW: Adam, spec.RMSprop: RMSprop, spec.Adagrad: Adagrad}


def register(spec_class: type[spec.Optimizer]):
    """Decorator: the TF rule (a Rule subclass, see the module docstring) of a user-defined optimizer
    spec class. Mirrors crossnn_numpy.optimizers.register; registering again replaces the rule."""
    if not (isinstance(spec_class, type) and issubclass(spec_class, spec.Optimizer)):
        raise TypeError(f"register() takes a crossnn.spec.Optimizer subclass, got {spec_class!r}")

    def add(rule: type[Rule]) -> type[Rule]:
        if not (isinstance(rule, type) and issubclass(rule, Rule)):
            raise TypeError(f"the TF lowering of optimizer '{spec_class.kind}' must subclass "
                            "crossnn_tensorflow.optimizers.Rule")
        OPTIMIZERS[spec_class] = rule
        return rule
    return add


# ---- the native flavour: Keras' own optimizers ---------------------------------------------------

#: catalog entry -> the spec optimizer classes it lowers with a keras.optimizers class
NATIVE_OPTIMIZERS = {"momentum-sgd": (spec.SGD,), "adam-epsilon": (spec.Adam, spec.AdamW),
                     "rmsprop": (spec.RMSprop,), "adagrad": (spec.Adagrad,)}


class KerasOptimizer(tf.Module):
    """A keras.optimizers optimizer in place of the spec's rule (the native flavour), with the spec's
    hyperparameters, built as a careful float64 Keras program builds it: keras.config.floatx() set to
    the run's dtype while it is made (Keras creates its learning-rate variable in floatx, float32 by
    default, and casts it to the parameters' dtype), and the hyperparameters handed over as
    np.float64. A Python float would be cast by Keras through a float32 tensor (update_step does
    ops.cast(self.momentum, variable.dtype); ops.cast(0.9, "float64") = 0.8999999761581421), so a
    float64 model would train with float32-rounded momentum, betas and weight decay: a difference of
    its own, which would blur the formula difference each native entry is about.
    The spec's clip and weight decay are applied to the gradients first unless "clip-norm" (then
    tf.clip_by_global_norm) or "weight-decay" (then the optimizer's own weight_decay, decoupled
    whatever the spec's kind) are native too. The step's learning rate is assigned to the optimizer's
    learning_rate each step, as a schedule would set it. Its state is Keras' own (e.g. SGD's velocity
    is -lr · b), so a native run exports no canonical training state."""

    def __init__(self, s: spec.Optimizer, variables, native: frozenset[str], dtype: str):
        super().__init__()
        import keras
        import numpy as np

        self.s, self.native = s, frozenset(native)
        keras_decay = "weight-decay" in self.native and bool(s.weight_decay)
        self.l2 = 0.0 if keras_decay or s.weight_decay_kind != "l2" else s.weight_decay
        self.decoupled = 0.0 if keras_decay or s.weight_decay_kind != "decoupled" else s.weight_decay
        f64 = np.float64
        options = {"weight_decay": f64(s.weight_decay)} if keras_decay else {}
        with devices.floatx(dtype):
            if isinstance(s, spec.SGD):
                self.keras = keras.optimizers.SGD(learning_rate=f64(s.lr), momentum=f64(s.momentum),
                                                  nesterov=s.nesterov, **options)
            elif isinstance(s, spec.Adam):  # AdamW too: its decay is the spec's, or Keras' with "weight-decay"
                self.keras = keras.optimizers.Adam(learning_rate=f64(s.lr), beta_1=f64(s.beta1), beta_2=f64(s.beta2),
                                                   epsilon=f64(s.eps), **options)
            elif isinstance(s, spec.RMSprop):
                self.keras = keras.optimizers.RMSprop(learning_rate=f64(s.lr), rho=f64(s.alpha),
                                                      momentum=f64(s.momentum), epsilon=f64(s.eps),
                                                      centered=s.centered, **options)
            elif isinstance(s, spec.Adagrad):
                self.keras = keras.optimizers.Adagrad(learning_rate=f64(s.lr), epsilon=f64(s.eps),
                                                      initial_accumulator_value=f64(s.initial_accumulator), **options)
            else:  # pragma: no cover - native_optimizer() only picks the classes above
                raise UnsupportedFeature("tensorflow", f"a Keras optimizer for '{s.kind}'")
        self.keras.build(variables)  # its slot variables, made now, outside any tf.function
        self.lr_dtype = self.keras.learning_rate.dtype
        self.slot_variables: dict[str, list[tf.Variable]] = {}
        self.counter_variables: dict[str, tf.Variable] = {}

    def apply(self, grads, variables, lr) -> None:
        grads = _clip(grads, self.s, self.native)
        if self.l2:
            grads = [g + self.l2 * w for g, w in zip(grads, variables)]
        if self.decoupled:
            for w in variables:
                w.assign(w * tf.cast(1.0 - lr * self.decoupled, w.dtype))
        self.keras.learning_rate = tf.cast(lr, self.lr_dtype)
        self.keras.apply_gradients(zip(grads, variables))

    def reset(self) -> None:
        raise UnsupportedFeature("tensorflow", "resuming a native run's Keras optimizer state")


def native_optimizer(s: spec.Optimizer, native: frozenset[str]) -> bool:
    """Whether `native` asks for a Keras optimizer in place of the spec's rule `s`."""
    return any(entry in native and type(s) in classes for entry, classes in NATIVE_OPTIMIZERS.items())


def optimizer(s: spec.Optimizer, variables, native: frozenset[str] = frozenset(), dtype: str = "float32"):
    """The lowering of optimizer spec `s` over `variables`: the spec's rule in TF ops, or the Keras
    optimizer where `native` names its catalog entry."""
    if native_optimizer(s, native):
        return KerasOptimizer(s, variables, native, dtype)
    if type(s) not in OPTIMIZERS:
        raise UnsupportedFeature("tensorflow", f"optimizer '{s.kind}'")
    return OPTIMIZERS[type(s)](s, variables, native)
