"""The training step and the trainer the harness drives.

The step is the TF tutorials' loop body: gather the batch, run the model under a tf.GradientTape,
take the gradients, apply the optimizer; it returns the loss before the update. Layer state
(batch_norm's moving statistics) lives in non-trainable tf.Variables that the model assigns in the
same step (training=True), so every mode, the loops included, moves it step by step in order. The data lives on the
device in non-trainable tf.Variables (inputs to the graph, not constants baked into it); a step
receives the indices of its batch, its learning rate (a float64 scalar) and one dropout mask per
dropout layer ([batch, *shape] of the run's dtype, channels last). The trainer counts its steps: the step number fixes
the learning rate and the masks (crossnn.schedule.StepClock, shared with every backend), which are
computed in NumPy and fed in as tensors, so neither a schedule nor dropout ever retraces.

A mode (MODES) decides how that Python function runs and how a span of steps is driven:

* "graph" wraps it in a tf.function traced once (the index tensor has a None batch dimension, so a
  short last batch does not retrace), "eager" runs it op by op, "xla" compiles the traced graph with
  XLA (jit_compile=True; XLA compiles once per batch shape). These call the step once per batch from
  Python and keep the losses on the device until the span ends, then copy them to the host in one
  transfer.
* "epoch" runs a whole span inside ONE tf.function: the span's batches become the rows of a
  [steps, batch] index tensor (with a [steps] learning-rate vector and [steps, batch, *shape] masks
  beside it), and a tf.while_loop (parallel_iterations=1, so the updates of step i
  finish before step i + 1 reads the variables) calls the same step once per row, writing the losses
  into a TensorArray. The signature has None for both dimensions, so it is traced once for every
  span. Consecutive batches of one size form one call; a span that crosses a short last batch is cut
  there (e.g. 4, 4, 2, 4, 4 -> [4, 4], [2], [4, 4]), so the short batch runs as a one-row loop.
* "xla-epoch" is the same loop compiled by XLA. XLA compiles once per concrete input shape, so the
  index tensor always has XLA_CHUNK rows (a longer segment is cut into chunks, a shorter one padded)
  and the loop runs only the `count` real rows: one compilation per batch size, whatever the span
  lengths. Both loop modes run (and so compile) themselves at build on the batch sizes of the
  experiment's plan, with count 0, which touches no variable, and then call the traced
  ConcreteFunction directly. Each call's losses come back in one transfer.

The loop modes run the very same step: "epoch" gives the graph mode's bits (the circle run's
12,000 steps included), "xla-epoch" stays within rounding of "xla". On the circle net they are
~5x and ~20x faster per step than "graph" (spans of 120 steps; the per-call cost, ~0.1-0.3 ms,
shrinks the gain for short spans); on large models the step's matmuls dominate and all compiled
modes are within ~10%. Measure with `crossnn bench`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Sequence

import re

import numpy as np

from crossnn import codegen
from crossnn.backends import Trainer
from crossnn.checkpoint import TrainingState
from crossnn.data import Dataset
from crossnn.errors import BackendError, UnsupportedFeature
from crossnn.plan import BatchPlan
from crossnn.schedule import StepClock
from crossnn.spec import INPUT, Experiment

from crossnn_tensorflow import device as devices
from crossnn_tensorflow import ops, optimizers

tf = devices.import_tensorflow()

#: the batch's sample indices, any batch size
INDEX_SPEC = tf.TensorSpec(shape=[None], dtype=tf.int64, name="batch")
#: the step's learning rate, float64 whatever the run's dtype (the rules cast it once, as PyTorch
#: casts its Python-float lr)
LR_SPEC = tf.TensorSpec(shape=[], dtype=tf.float64, name="lr")
#: tf.function options of the compiled modes. AutoGraph is off: the step's Python `if`s test spec
#: values, never tensors, so there is nothing to convert, and skipping the conversion cuts the first
#: trace from ~170 ms to ~30 ms here (and tracing no longer reads the source files)
COMPILE = {"autograph": False}
#: rows of the index tensor of an XLA loop call (a fixed shape, so XLA compiles once per batch size).
#: A call costs ~0.1 ms here, so 128 rows amortise it to < 1 us a step; padding rows are never run
XLA_CHUNK = 128


def step_signature(dtype, dropout) -> list[tf.TensorSpec]:
    """batch indices, lr, and a [batch, *shape] mask per dropout layer (name, shape)."""
    return [INDEX_SPEC, LR_SPEC] + [tf.TensorSpec(shape=[None, *shape], dtype=dtype, name=f"mask{k}")
                                    for k, (_, shape) in enumerate(dropout)]


def span_signature(dtype, dropout) -> list[tf.TensorSpec]:
    """A span of batches of one size as the rows of one index tensor, how many rows are real, their
    learning rates, and a [steps, batch, *shape] mask tensor per dropout layer."""
    return ([tf.TensorSpec(shape=[None, None], dtype=tf.int64, name="batches"),
             tf.TensorSpec(shape=[], dtype=tf.int32, name="count"),
             tf.TensorSpec(shape=[None], dtype=tf.float64, name="lrs")]
            + [tf.TensorSpec(shape=[None, None, *shape], dtype=dtype, name=f"masks{k}")
               for k, (_, shape) in enumerate(dropout)])


class StepMode(ABC):
    """Drives `step(indices, lr, *masks) -> loss` over a span of batches; subclasses say how the step
    is compiled and how the span is run (one call per batch here, one call per segment in the loop
    modes)."""

    description = ""
    traced = True
    #: what `trace` does, for describe()
    prepared = "traced"

    def __init__(self, step, loss_dtype, batch_sizes=(), dropout=()):
        """step: the Python training step, step(indices, lr, *masks) -> loss; loss_dtype: its loss's
        dtype (the run's); batch_sizes: the batch sizes the plan will use (modes that compile per
        shape may prepare for them); dropout: (layer, shape) of each dropout layer, in feed order."""
        self.loss_dtype = loss_dtype
        self.batch_sizes = tuple(batch_sizes)
        self.dropout = tuple(dropout)
        self.signature = step_signature(loss_dtype, self.dropout)
        #: the callable the mode runs (the compiled step, or the compiled loop of the loop modes)
        self.step = self.compile(step)
        #: what a span calls: the step, or its traced ConcreteFunction once `trace` has run
        self.call = self.step

    @abstractmethod
    def compile(self, step):
        """The callable that runs `step`."""

    def trace(self) -> None:
        """Build the graph now, without running a step (XLA still compiles on the first call). Steps
        then call the traced ConcreteFunction directly: the signature is fixed, so the tf.function's
        per-call argument matching (about 0.1 ms of Python here) has nothing to decide."""
        self.call = self.step.get_concrete_function()

    def run_span(self, batches: Sequence[np.ndarray], lrs: np.ndarray, masks: Sequence[tuple]) -> np.ndarray:
        """The steps' losses, kept on the device until the last step, then copied in one transfer.
        lrs: each step's learning rate; masks: each step's tuple of dropout masks."""
        dtype, call = self.loss_dtype, self.call
        return tf.stack([call(tf.constant(batch, tf.int64), tf.constant(lr, tf.float64),
                              *[tf.constant(m, dtype) for m in step_masks])
                         for batch, lr, step_masks in zip(batches, lrs, masks)]).numpy()


class GraphStep(StepMode):
    description = "tf.function graph step"

    def compile(self, step):
        return tf.function(step, input_signature=self.signature, **COMPILE)


class EagerStep(StepMode):
    description = "eager step, op by op"
    traced = False

    def compile(self, step):
        return step

    def trace(self) -> None:
        pass


class XlaStep(StepMode):
    description = "tf.function(jit_compile=True) XLA step"

    def compile(self, step):
        return tf.function(step, input_signature=self.signature, jit_compile=True, **COMPILE)


class LoopSpan(StepMode):
    """A span of batches of one size per call, looped over inside one tf.function."""

    description = "whole span in one tf.function (tf.while_loop over a [steps, batch] index tensor)"
    jit_compile = False
    #: rows of every call's index tensor (None: as many as the segment has)
    chunk: int | None = None

    def compile(self, step):
        loss_dtype = self.loss_dtype

        def loop(batches, count, lrs, *masks):
            """Steps on rows 0 .. count-1 of `batches` (with row i of `lrs` and of each mask tensor),
            in order; their losses (one per row of `batches`; rows from count on are never written
            and read back as 0)."""
            losses = tf.TensorArray(loss_dtype, size=tf.shape(batches)[0], element_shape=[])

            def body(i, losses):
                loss = step(tf.gather(batches, i), tf.gather(lrs, i), *[tf.gather(m, i) for m in masks])
                return i + 1, losses.write(i, loss)

            _, losses = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), losses),
                                      parallel_iterations=1)
            return losses.stack()

        return tf.function(loop, input_signature=span_signature(loss_dtype, self.dropout), autograph=False,
                           jit_compile=self.jit_compile)

    def trace(self) -> None:
        """Trace the loop, then run it with count 0 on each of the plan's batch sizes: this does the
        runtime's first-call work (graph optimisation; XLA compilation) without taking a step.
        Spans call the traced ConcreteFunction directly: the signature is fixed, so the tf.function's
        per-call argument binding and trace-cache lookup (~0.1 ms here) has nothing to decide."""
        self.call = self.step.get_concrete_function()
        rows = self.chunk or 1
        for size in self.batch_sizes:
            self.call(tf.zeros([rows, size], tf.int64), tf.constant(0), tf.zeros([rows], tf.float64),
                      *[tf.zeros([rows, size, *shape], self.loss_dtype) for _, shape in self.dropout])

    def chunks(self, batches: Sequence[np.ndarray]):
        """(index array, real rows) per call: consecutive batches of one size, in chunks."""
        start = 0
        while start < len(batches):
            size = len(batches[start])
            limit = len(batches) if self.chunk is None else min(len(batches), start + self.chunk)
            stop = start + 1
            while stop < limit and len(batches[stop]) == size:
                stop += 1
            rows = np.stack([np.asarray(b, dtype=np.int64) for b in batches[start:stop]])
            count = len(rows)
            if self.chunk is not None and count < self.chunk:
                rows = np.concatenate([rows, np.zeros((self.chunk - count, size), np.int64)])
            yield rows, count
            start = stop

    def run_span(self, batches: Sequence[np.ndarray], lrs: np.ndarray, masks: Sequence[tuple]) -> np.ndarray:
        out, start = [], 0
        dtype = self.loss_dtype.as_numpy_dtype
        for rows, count in self.chunks(batches):
            pad = len(rows) - count  # XLA chunks: rows past `count` are padding, never run
            step_lrs = np.concatenate([lrs[start:start + count], np.zeros(pad)])
            step_masks = []
            for k in range(len(self.dropout)):
                stacked = np.stack([masks[j][k] for j in range(start, start + count)]).astype(dtype)
                if pad:
                    stacked = np.concatenate([stacked, np.zeros((pad,) + stacked.shape[1:], dtype)])
                step_masks.append(tf.constant(stacked))
            out.append((self.call(tf.constant(rows), tf.constant(count, tf.int32), tf.constant(step_lrs, tf.float64),
                                  *step_masks), count))
            start += count
        return np.concatenate([losses.numpy()[:count] for losses, count in out])


class XlaLoopSpan(LoopSpan):
    description = (f"whole span in one XLA-compiled tf.function (jit_compile=True; tf.while_loop over "
                   f"{XLA_CHUNK}-row index tensors)")
    jit_compile = True
    chunk = XLA_CHUNK
    prepared = "traced and XLA-compiled"


class Model(tf.Module):
    """The spec's layer graph: one tf.Variable per variable (`variables_by_name`, canonical names:
    the parameters, then layer state such as BatchNorm's moving statistics, non-trainable), the
    parameters in the spec's order in `trainable` (the order the optimizer walks), and one registry
    entry (crossnn_tensorflow.ops) per layer, called in graph order."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], dtype, native=frozenset()):
        super().__init__()
        trained = list(experiment.model.parameter_inits())
        names = trained + list(experiment.model.state_inits())
        self.variables_by_name = {name: tf.Variable(tf.constant(params[name], dtype), name=_variable_name(name),
                                                    trainable=name in trained)
                                  for name in names}
        self.trainable = [self.variables_by_name[name] for name in trained]
        self.layers = []
        for node in experiment.model.nodes:
            own = {p.name: self.variables_by_name[f"{node.name}/{p.name}"] for p in (*node.params, *node.state)}
            op = ops.layer(node, own, native)
            self.layers.append((node.name, node.inputs, op, getattr(op, "stateful", False)))
        self.output = experiment.model.layers[-1].name
        #: (layer, shape) of the dropout layers, in graph order: the order their masks are fed in
        self.dropout = [(name, shape) for name, shape, _ in codegen.dropout_layers(experiment)]

    def __call__(self, x, masks=None, training=False):
        """The model output; masks: {dropout layer: its mask} for a training step, None to predict;
        training: stateful layers (batch_norm) use the batch's statistics and move their state, else
        they use their state."""
        values = {INPUT: x}
        for name, inputs, op, stateful in self.layers:
            args = ([values[i] for i in inputs], masks.get(name) if masks else None)
            values[name] = op(*args, training) if stateful else op(*args)
        return values[self.output]


def dense(gradient):
    """A gradient as a dense tensor: the tape gives an embedding's as tf.IndexedSlices (the rows read),
    which the optimizer's arithmetic does not take; converting sums each id's rows."""
    return tf.convert_to_tensor(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient


def _variable_name(name: str) -> str:
    """A TF-legal variable name for a canonical parameter name (layer names may hold any character)."""
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)


MODES = {"graph": GraphStep, "eager": EagerStep, "xla": XlaStep, "epoch": LoopSpan, "xla-epoch": XlaLoopSpan}
DTYPES = {"float32": tf.float32, "float64": tf.float64}


class TensorflowTrainer(Trainer):
    """An experiment lowered to a tf.Module, a loss function and a TF-op optimizer. Sparse class labels
    stay int64 indices (the sparse cross-entropy ops take them as they are). `native` names catalog
    entries lowered with TF/Keras' own built-ins instead of the spec's formulas (see
    crossnn_tensorflow.NATIVE_ENTRIES)."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *,
                 dtype: str, device: str, mode: str, native: frozenset[str] = frozenset()):
        if mode not in MODES:
            raise BackendError(f"backend 'tensorflow' has no mode '{mode}'; it has {', '.join(MODES)}")
        if dtype not in DTYPES:
            raise UnsupportedFeature("tensorflow", f"dtype '{dtype}'")
        self.device = devices.resolve(device)
        self.dtype = DTYPES[dtype]
        self.native = frozenset(native)
        if "default-init" in self.native:
            from crossnn_tensorflow.checkpoint import keras_initial_parameters

            params = keras_initial_parameters(experiment, params, dtype)
        self.loss_fn = ops.loss(experiment.loss, self.native, dtype)
        #: the trained parameters' canonical names, in the order of the optimizer's slots
        self.parameter_names = list(experiment.model.parameter_inits())
        with tf.device(self.device):
            self.model = Model(experiment, params, self.dtype, self.native)
            self.optimizer = optimizers.optimizer(experiment.optimizer, self.model.trainable, self.native, dtype)
            self.x = tf.Variable(data.x.astype(dtype), trainable=False, name="x")
            y = data.y if experiment.loss.sparse_targets else data.y.astype(dtype)
            self.y = tf.Variable(y, trainable=False, name="y")
        #: steps taken since the start of the plan (fixes the next step's learning rate and masks)
        self.steps_done = 0
        self.clock = StepClock(experiment, data.n)
        self.dropout = self.model.dropout
        #: how many times the step's Python code ran to build a graph (eager: once per step)
        self.traces = 0
        plan = BatchPlan.for_experiment(experiment, data.n)
        self.mode = MODES[mode](self._train_step, self.dtype, plan.batch_sizes, self.dropout)
        start = time.perf_counter()
        with tf.device(self.device):
            self.mode.trace()
        self.trace_seconds = time.perf_counter() - start

    def _train_step(self, batch, lr, *masks):
        """One update on the rows `batch` with learning rate `lr` and the dropout masks (in the order
        of self.dropout); returns the loss before it."""
        self.traces += 1
        with tf.device(self.device):
            x = tf.gather(self.x, batch)
            y = tf.gather(self.y, batch)
            feed = {name: mask for (name, _), mask in zip(self.dropout, masks)}
            with tf.GradientTape() as tape:
                loss = self.loss_fn(self.model(x, feed, training=True), y)
            grads = [dense(g) for g in tape.gradient(loss, self.model.trainable)]
            self.optimizer.apply(grads, self.model.trainable, lr)
            return loss

    def _schedule(self, batches: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple]]:
        """The learning rates and dropout masks of the next len(batches) steps."""
        first = self.steps_done
        lrs = np.array([self.clock.lr(first + k) for k in range(len(batches))], dtype=np.float64)
        if not self.dropout:
            return lrs, [()] * len(batches)
        masks = []
        for k, batch in enumerate(batches):
            drawn = self.clock.masks(first + k, len(batch))
            masks.append(tuple(drawn[name] for name, _ in self.dropout))
        return lrs, masks

    def step(self, batch):
        return float(self.run([batch])[0])

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        if not batches:
            return np.zeros(0)
        lrs, masks = self._schedule(batches)
        with tf.device(self.device):
            losses = self.mode.run_span(batches, lrs, masks).astype(np.float64)
        self.steps_done += len(batches)
        return losses

    def parameters(self):
        return {name: np.array(var.numpy(), copy=True) for name, var in self.model.variables_by_name.items()}

    def state(self) -> TrainingState:
        """Steps done, parameters, and the optimizer's buffers and counters under crossnn.checkpoint's
        names (none before the first step, as the NumPy reference). A native run with a Keras
        optimizer keeps Keras' own state, which has no canonical form: BackendError."""
        opt = self.optimizer
        if isinstance(opt, optimizers.KerasOptimizer):
            raise BackendError("a native run's Keras optimizer keeps Keras' own state (e.g. SGD's velocity is "
                               "-lr * momentum_buffer): it has no canonical training state")
        names = self.parameter_names
        slots = {} if self.steps_done == 0 else {
            slot: {name: np.array(v.numpy(), copy=True) for name, v in zip(names, buffers)}
            for slot, buffers in opt.slot_variables.items()}
        counters = {name: int(v.numpy()) for name, v in opt.counter_variables.items()}
        return TrainingState(self.steps_done, self.parameters(), slots, counters)

    def load_state(self, state: TrainingState) -> None:
        """Continue from `state` (canonical names and layout, any float dtype): parameters, optimizer
        buffers (reset to their start where the state has none) and counters, steps done. The
        variables are assigned in place, so the traced step is reused."""
        opt = self.optimizer
        if isinstance(opt, optimizers.KerasOptimizer):
            opt.reset()  # raises: Keras' state is not canonical
        missing = [name for name in self.model.variables_by_name if name not in state.params]
        if missing:
            raise BackendError(f"the training state has no parameter '{missing[0]}'")
        dtype = self.dtype.as_numpy_dtype
        for name, var in self.model.variables_by_name.items():
            var.assign(np.asarray(state.params[name], dtype=dtype))
        opt.reset()
        for slot, buffers in opt.slot_variables.items():
            if slot in state.slots:
                for name, b in zip(self.parameter_names, buffers):
                    b.assign(np.asarray(state.slots[slot][name], dtype=dtype))
        for name, var in opt.counter_variables.items():
            var.assign(int(state.counters.get(name, 0)))
        self.steps_done = int(state.step)

    def predict(self, x):
        with tf.device(self.device):
            return self.model(tf.constant(x, self.dtype)).numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        traced = f", {self.mode.prepared} in {self.trace_seconds * 1e3:.0f} ms" if self.mode.traced else ""
        rules = ("optimizer rules in TF ops, not keras.optimizers"
                 if not isinstance(self.optimizer, optimizers.KerasOptimizer)
                 else f"keras.optimizers.{type(self.optimizer.keras).__name__}")
        native = f"; native: {', '.join(sorted(self.native))}" if self.native else ""
        return (f"{self.mode.description} on {self.device} (TensorFlow {tf.__version__}, {devices.threads()}, "
                f"{devices.onednn()}){traced}; {rules}{native}")
