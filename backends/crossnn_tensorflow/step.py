"""The training step and the trainer the harness drives.

The step is the TF tutorials' loop body: gather the batch, run the model under a tf.GradientTape,
take the gradients, apply the optimizer; it returns the loss before the update. The data lives on the
device in non-trainable tf.Variables (inputs to the graph, not constants baked into it); a step
receives only the indices of its batch.

A mode (MODES) decides how that Python function runs and how a span of steps is driven:

* "graph" wraps it in a tf.function traced once (the index tensor has a None batch dimension, so a
  short last batch does not retrace), "eager" runs it op by op, "xla" compiles the traced graph with
  XLA (jit_compile=True; XLA compiles once per batch shape). These call the step once per batch from
  Python and keep the losses on the device until the span ends, then copy them to the host in one
  transfer.
* "epoch" runs a whole span inside ONE tf.function: the span's batches become the rows of a
  [steps, batch] index tensor, and a tf.while_loop (parallel_iterations=1, so the updates of step i
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
modes are within ~10%. Measure with tests/benchmarks/tensorflow_modes.py.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import tensorflow as tf

from crossnn.backends import Trainer
from crossnn.data import Dataset
from crossnn.errors import BackendError, UnsupportedFeature
from crossnn.plan import BatchPlan
from crossnn.spec import Experiment

from crossnn_tensorflow import device as devices
from crossnn_tensorflow import layers, losses, optimizers

#: the batch's sample indices, any batch size
INDEX_SPEC = tf.TensorSpec(shape=[None], dtype=tf.int64, name="batch")
#: tf.function options of the compiled modes. AutoGraph is off: the step's Python `if`s test spec
#: values, never tensors, so there is nothing to convert, and skipping the conversion cuts the first
#: trace from ~170 ms to ~30 ms here (and tracing no longer reads the source files)
COMPILE = {"input_signature": [INDEX_SPEC], "autograph": False}
#: a span of batches of one size as the rows of one index tensor, and how many rows are real
SPAN_SPECS = [tf.TensorSpec(shape=[None, None], dtype=tf.int64, name="batches"),
              tf.TensorSpec(shape=[], dtype=tf.int32, name="count")]
#: rows of the index tensor of an XLA loop call (a fixed shape, so XLA compiles once per batch size).
#: A call costs ~0.1 ms here, so 128 rows amortise it to < 1 us a step; padding rows are never run
XLA_CHUNK = 128


class StepMode(ABC):
    """Drives `step(indices) -> loss` over a span of batches; subclasses say how the step is compiled
    and how the span is run (one call per batch here, one call per segment in the loop modes)."""

    description = ""
    traced = True
    #: what `trace` does, for describe()
    prepared = "traced"

    def __init__(self, step, loss_dtype, batch_sizes=()):
        """step: the Python training step; loss_dtype: its loss's dtype; batch_sizes: the batch sizes
        the plan will use (modes that compile per shape may prepare for them)."""
        self.loss_dtype = loss_dtype
        self.batch_sizes = tuple(batch_sizes)
        #: the callable the mode runs (the compiled step, or the compiled loop of the loop modes)
        self.step = self.compile(step)

    @abstractmethod
    def compile(self, step):
        """The callable that runs `step`."""

    def trace(self) -> None:
        """Build the graph now, without running a step (XLA still compiles on the first call)."""
        self.step.get_concrete_function()

    def run_span(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """The steps' losses, kept on the device until the last step, then copied in one transfer."""
        return tf.stack([self.step(tf.constant(batch, tf.int64)) for batch in batches]).numpy()


class GraphStep(StepMode):
    description = "tf.function graph step"

    def compile(self, step):
        return tf.function(step, **COMPILE)


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
        return tf.function(step, jit_compile=True, **COMPILE)


class LoopSpan(StepMode):
    """A span of batches of one size per call, looped over inside one tf.function."""

    description = "whole span in one tf.function (tf.while_loop over a [steps, batch] index tensor)"
    jit_compile = False
    #: rows of every call's index tensor (None: as many as the segment has)
    chunk: int | None = None

    def compile(self, step):
        loss_dtype = self.loss_dtype

        def loop(batches, count):
            """Steps on rows 0 .. count-1 of `batches`, in order; their losses (one per row of
            `batches`; rows from count on are never written and read back as 0)."""
            losses = tf.TensorArray(loss_dtype, size=tf.shape(batches)[0], element_shape=[])

            def body(i, losses):
                return i + 1, losses.write(i, step(tf.gather(batches, i)))

            _, losses = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), losses),
                                      parallel_iterations=1)
            return losses.stack()

        return tf.function(loop, input_signature=SPAN_SPECS, autograph=False, jit_compile=self.jit_compile)

    def trace(self) -> None:
        """Trace the loop, then run it with count 0 on each of the plan's batch sizes: this does the
        runtime's first-call work (graph optimisation; XLA compilation) without taking a step.
        Spans call the traced ConcreteFunction directly: the signature is fixed, so the tf.function's
        per-call argument binding and trace-cache lookup (~0.1 ms here) has nothing to decide."""
        self.call = self.step.get_concrete_function()
        for size in self.batch_sizes:
            self.call(tf.zeros([self.chunk or 1, size], tf.int64), tf.constant(0))

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

    def run_span(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        out = [(self.call(tf.constant(rows), tf.constant(count, tf.int32)), count)
               for rows, count in self.chunks(batches)]
        return np.concatenate([losses.numpy()[:count] for losses, count in out])


class XlaLoopSpan(LoopSpan):
    description = (f"whole span in one XLA-compiled tf.function (jit_compile=True; tf.while_loop over "
                   f"{XLA_CHUNK}-row index tensors)")
    jit_compile = True
    chunk = XLA_CHUNK
    prepared = "traced and XLA-compiled"


MODES = {"graph": GraphStep, "eager": EagerStep, "xla": XlaStep, "epoch": LoopSpan, "xla-epoch": XlaLoopSpan}
DTYPES = {"float32": tf.float32, "float64": tf.float64}


class TensorflowTrainer(Trainer):
    """An experiment lowered to a tf.Module, a loss function and a TF-op optimizer. Sparse class labels
    stay int64 indices (the sparse cross-entropy ops take them as they are)."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *,
                 dtype: str, device: str, mode: str):
        if mode not in MODES:
            raise BackendError(f"backend 'tensorflow' has no mode '{mode}'; it has {', '.join(MODES)}")
        if dtype not in DTYPES:
            raise UnsupportedFeature("tensorflow", f"dtype '{dtype}'")
        self.device = devices.resolve(device)
        self.dtype = DTYPES[dtype]
        self.loss_fn = losses.loss(experiment.loss)
        with tf.device(self.device):
            self.model = layers.Model(experiment, params, self.dtype)
            self.optimizer = optimizers.optimizer(experiment.optimizer, self.model.trainable)
            self.x = tf.Variable(data.x.astype(dtype), trainable=False, name="x")
            y = data.y if experiment.loss.sparse_targets else data.y.astype(dtype)
            self.y = tf.Variable(y, trainable=False, name="y")
        #: how many times the step's Python code ran to build a graph (eager: once per step)
        self.traces = 0
        plan = BatchPlan.for_experiment(experiment, data.n)
        sizes = sorted({stop - start for start, stop in plan.bounds}, reverse=True)
        self.mode = MODES[mode](self._train_step, self.dtype, sizes)
        start = time.perf_counter()
        with tf.device(self.device):
            self.mode.trace()
        self.trace_seconds = time.perf_counter() - start

    def _train_step(self, batch):
        """One update on the rows `batch`; returns the loss before it."""
        self.traces += 1
        with tf.device(self.device):
            x = tf.gather(self.x, batch)
            y = tf.gather(self.y, batch)
            with tf.GradientTape() as tape:
                loss = self.loss_fn(self.model(x), y)
            grads = tape.gradient(loss, self.model.trainable)
            self.optimizer.apply(grads, self.model.trainable)
            return loss

    def step(self, batch):
        return float(self.run([batch])[0])

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        if not batches:
            return np.zeros(0)
        with tf.device(self.device):
            return self.mode.run_span(batches).astype(np.float64)

    def parameters(self):
        return {name: np.array(var.numpy(), copy=True) for name, var in self.model.variables_by_name.items()}

    def predict(self, x):
        with tf.device(self.device):
            return self.model(tf.constant(x, self.dtype)).numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        traced = f", {self.mode.prepared} in {self.trace_seconds * 1e3:.0f} ms" if self.mode.traced else ""
        return (f"{self.mode.description} on {self.device} (TensorFlow {tf.__version__}, {devices.threads()}, "
                f"{devices.onednn()}){traced}; optimizer rules in TF ops, not keras.optimizers")
