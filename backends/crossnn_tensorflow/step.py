"""The training step and the trainer the harness drives.

The step is the TF tutorials' loop body: gather the batch, run the model under a tf.GradientTape,
take the gradients, apply the optimizer; it returns the loss before the update. The data lives on the
device in non-trainable tf.Variables (inputs to the graph, not constants baked into it); a step
receives only the indices of its batch.

A mode (MODES) decides how that Python function runs and how a span of steps is driven: "graph"
wraps it in a tf.function traced once (the index tensor has a None batch dimension, so a short last
batch does not retrace), "eager" runs it op by op, "xla" compiles the traced graph with XLA
(jit_compile=True; XLA compiles once per batch shape). All three call the step once per batch and
keep the losses on the device until the span ends, then copy them to the host in one transfer. A
mode that runs a whole span inside one tf.function is another subclass of StepMode whose `run_span`
loops over the span's indices in the graph.
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
from crossnn.spec import Experiment

from crossnn_tensorflow import device as devices
from crossnn_tensorflow import layers, losses, optimizers

#: the batch's sample indices, any batch size
INDEX_SPEC = tf.TensorSpec(shape=[None], dtype=tf.int64, name="batch")
#: tf.function options of the compiled modes. AutoGraph is off: the step's Python `if`s test spec
#: values, never tensors, so there is nothing to convert, and skipping the conversion cuts the first
#: trace from ~170 ms to ~30 ms here (and tracing no longer reads the source files)
COMPILE = {"input_signature": [INDEX_SPEC], "autograph": False}


class StepMode(ABC):
    """Runs `step(indices) -> loss` once per batch; subclasses say how the step is compiled."""

    description = ""
    traced = True

    def __init__(self, step):
        self.step = self.compile(step)

    @abstractmethod
    def compile(self, step):
        """The callable that runs `step`."""

    def trace(self) -> None:
        """Build the graph now, without running a step (XLA still compiles on the first call)."""
        self.step.get_concrete_function()

    def run_span(self, batches: Sequence[np.ndarray]):
        """The steps' losses as one device tensor."""
        return tf.stack([self.step(tf.constant(batch, tf.int64)) for batch in batches])


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


MODES = {"graph": GraphStep, "eager": EagerStep, "xla": XlaStep}
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
        self.mode = MODES[mode](self._train_step)
        start = time.perf_counter()
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
            return self.mode.run_span(batches).numpy().astype(np.float64)

    def parameters(self):
        return {name: np.array(var.numpy(), copy=True) for name, var in self.model.variables_by_name.items()}

    def predict(self, x):
        with tf.device(self.device):
            return self.model(tf.constant(x, self.dtype)).numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        traced = f", traced in {self.trace_seconds * 1e3:.0f} ms" if self.mode.traced else ""
        return (f"{self.mode.description} on {self.device} (TensorFlow {tf.__version__}, {devices.threads()}, "
                f"{devices.onednn()}){traced}; optimizer rules in TF ops, not keras.optimizers")
