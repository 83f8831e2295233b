"""The training step: the model graph compiled to a list of ops, a hand-written backward pass, and
the trainer the harness drives.

Program, the layers, losses and optimizers compute through an array namespace `xp` (the functions
listed in crossnn_numpy.xp), so they run unchanged on NumPy and, through crossnn_torch.xp, on torch
tensors. NumpyTrainer is the NumPy side of that: NumPy arrays in, NumPy arrays out."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from crossnn.backends import Trainer
from crossnn.checkpoint import TrainingState
from crossnn.data import Dataset
from crossnn.schedule import StepClock
from crossnn.spec import INPUT, Experiment

from crossnn_numpy import layers, losses, optimizers
from crossnn_numpy import xp as namespaces


class Program:
    """The model as ops in dependency order. Slot 0 holds the model input, slot k the output of op k."""

    def __init__(self, experiment: Experiment, names: list[str], xp):
        index = {name: i for i, name in enumerate(names)}
        slot = {INPUT: 0}
        self.ops = []
        for k, node in enumerate(experiment.model.nodes, start=1):
            inputs = tuple(slot[name] for name in node.inputs)
            self.ops.append((layers.layer(node, index, xp), inputs, k, any(i != 0 for i in inputs)))
            slot[node.name] = k
        self.output = slot[experiment.model.layers[-1].name]
        self.xp = xp
        self.dropout = {node.name: op for node, (op, *_) in zip(experiment.model.nodes, self.ops)
                        if isinstance(op, layers.Dropout)}

    def forward(self, values, x, masks=None):
        """The model output and the caches backward needs. masks: {dropout layer: mask} for a
        training step; without them (prediction) dropout passes its input through."""
        for name, op in self.dropout.items():
            op.mask = masks[name] if masks else None
        acts = [x] + [None] * len(self.ops)
        caches = []
        for op, inputs, out, _ in self.ops:
            acts[out], cache = op.forward(values, [acts[i] for i in inputs])
            caches.append(cache)
        return acts[self.output], caches

    def backward(self, values, caches, d_output, grads=None):
        """Parameter gradients, given dL/d(output), written into `grads` (arrays shaped like `values`;
        new ones when None) and returned; gradients of a value used twice are summed."""
        if grads is None:
            grads = [self.xp.zeros_like(v) for v in values]
        d_acts = [None] * (len(self.ops) + 1)
        d_acts[self.output] = d_output
        for (op, inputs, out, need), cache in zip(reversed(self.ops), reversed(caches)):
            d_inputs = op.backward(values, cache, d_acts[out], grads, need)
            for i, d in zip(inputs, d_inputs):
                if i:
                    d_acts[i] = d if d_acts[i] is None else d_acts[i] + d
        return grads


class TrainStep:
    """One training step of an experiment in the namespace `xp`: forward pass, loss and dL/d(output),
    backward pass, optimizer update. step(x, y) returns the loss before the update, a 0-d array of the
    namespace (it stays where the arrays are).

    The parameters live in one flat array and `values` are views of it in canonical order and layout
    (likewise the gradients, written in place by the backward pass), so the optimizer updates every
    parameter with a handful of whole-array operations instead of a handful per parameter. Each
    element sees the same arithmetic either way."""

    def __init__(self, experiment: Experiment, names: list[str], values: list, xp):
        """values: the starting parameters (arrays of the namespace, one dtype), copied in."""
        self.xp = xp
        self.program = Program(experiment, names, xp)
        self.loss = losses.loss(experiment.loss, xp)
        self.optimizer = optimizers.optimizer(experiment.optimizer, xp)
        self.trains = bool(values)  # a model may have no parameters at all
        self.flat = xp.concat([v.reshape(-1) for v in values], axis=0) if values else None
        self.flat_grad = xp.zeros_like(self.flat) if values else None
        self.values = _views(self.flat, values)
        self.grads = _views(self.flat_grad, values)
        self.state = self.optimizer.init([self.flat] if values else [])

    def __call__(self, x, y, lr: float, masks=None):
        """One step with learning rate `lr` and the step's dropout masks (arrays of the namespace)."""
        output, caches = self.program.forward(self.values, x, masks)
        loss, d_output = self.loss.value_and_grad(output, y)
        if self.trains:
            self.program.backward(self.values, caches, d_output, self.grads)
            self.optimizer.update([self.flat], [self.flat_grad], self.state, lr)
        return loss

    def export_state(self, names: list[str]) -> tuple[dict, dict]:
        """Optimizer slots per parameter name (views of the flat state arrays) and counters."""
        slots = {}
        for slot in self.optimizer.s.state_slots():
            (flat,) = self.state[slot] if self.trains else (None,)
            if flat is not None:
                slots[slot] = dict(zip(names, _views(flat, self.values)))
        return slots, {counter: self.state[counter] for counter in self.optimizer.s.state_counters()}

    def import_state(self, names: list[str], slots: dict, counters: dict, to_device) -> None:
        """Replace the optimizer state (per-parameter arrays, canonical layout) and counters."""
        for slot in self.optimizer.s.state_slots():
            if slot in slots and self.trains:
                self.state[slot] = [self.xp.concat([to_device(slots[slot][name]).reshape(-1) for name in names],
                                                   axis=0)]
        for counter in self.optimizer.s.state_counters():
            self.state[counter] = int(counters.get(counter, 0))


def _views(flat, like: list) -> list:
    """Consecutive pieces of the 1-D array `flat`, shaped like the arrays in `like`."""
    views, start = [], 0
    for v in like:
        size = math.prod(v.shape)
        views.append(flat[start:start + size].reshape(tuple(v.shape)))
        start += size
    return views


def contiguous_slices(batches: Sequence[np.ndarray]) -> list[slice] | None:
    """Each batch as a slice when every batch is a run of consecutive indices (the plan without
    shuffling), else None. A slice selects rows as a view, without the copy an index array costs;
    the rows, and so every result, are the same. One vectorised check for the whole list."""
    if not batches:
        return []
    flat = np.concatenate(batches)
    steps = np.diff(flat)
    ends = np.cumsum([len(b) for b in batches])[:-1]
    steps[ends - 1] = 1  # a new batch may start anywhere
    if not np.all(steps == 1):
        return None
    return [slice(int(b[0]), int(b[0]) + len(b)) for b in batches]


class NumpyTrainer(Trainer):
    """Trains with the NumPy namespace (crossnn_numpy.xp.numpy), or with CuPy's on a GPU. Sparse class
    labels become one-hot rows once; the data is copied to the device once. The trainer counts its
    steps: the step number fixes the learning rate and the dropout masks (crossnn.schedule.StepClock)."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, dtype: str,
                 gpu: int | None = None):
        self.gpu = gpu
        if gpu is None:
            self.xp = namespaces.numpy
            self.to_device, self.to_host = np.asarray, np.asarray
        else:
            import cupy

            cupy.cuda.Device(gpu).use()
            self.xp = namespaces.cupy_namespace()
            self.to_device, self.to_host, self.cupy = cupy.asarray, cupy.asnumpy, cupy
        self.names = list(params)
        self.train_step = TrainStep(experiment, self.names, [self.to_device(np.asarray(params[name], dtype=dtype))
                                                             for name in self.names], self.xp)
        self.values = self.train_step.values
        self.program = self.train_step.program
        self.dtype = dtype
        self.clock = StepClock(experiment, data.n)
        self.steps_done = 0
        y = data.y
        if experiment.loss.sparse_targets:
            y = np.eye(experiment.model.output_size)[y]
        self.x = self.to_device(data.x.astype(dtype))
        self.y = self.to_device(y.astype(dtype))

    def step(self, batch):
        step = self.steps_done
        masks = {name: self.to_device(m.astype(self.dtype)) for name, m in self.clock.masks(step, _rows(batch)).items()}
        loss = self.train_step(self.x[batch], self.y[batch], self.clock.lr(step), masks)
        self.steps_done += 1
        return loss

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        rows = contiguous_slices(batches) or [self.to_device(b) for b in batches]
        if self.gpu is not None:  # losses stay on the GPU until the span ends
            losses = [self.step(batch) for batch in rows]
            return self.to_host(self.cupy.stack(losses)).astype(np.float64) if losses else np.zeros(0)
        out = np.empty(len(batches))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
            for i, batch in enumerate(rows):
                out[i] = self.step(batch)
        return out

    def parameters(self):
        return {name: np.array(self.to_host(value), copy=True) for name, value in zip(self.names, self.values)}

    def state(self) -> TrainingState:
        slots, counters = self.train_step.export_state(self.names)
        return TrainingState(self.steps_done, self.parameters(),
                             {slot: {name: np.array(self.to_host(v)) for name, v in per.items()}
                              for slot, per in slots.items()}, counters)

    def load_state(self, state: TrainingState) -> None:
        for name, value in zip(self.names, self.values):
            value[...] = self.to_device(np.asarray(state.params[name], dtype=self.dtype))
        self.train_step.import_state(self.names, state.slots, state.counters,
                                   lambda a: self.to_device(np.asarray(a, dtype=self.dtype)))
        self.steps_done = state.step

    def predict(self, x):
        with np.errstate(over="ignore", under="ignore"):
            output, _ = self.program.forward(self.values, self.to_device(x.astype(self.dtype)))
        return np.asarray(self.to_host(output))

    def synchronize(self):
        if self.gpu is not None:
            self.cupy.cuda.Device(self.gpu).synchronize()

    def describe(self):
        where = "in NumPy" if self.gpu is None else f"in CuPy on GPU {self.gpu}"
        return f"hand-written forward and backward passes {where}"


def _rows(batch) -> int:
    """How many samples a batch selects (a slice or an index array)."""
    return batch.stop - batch.start if isinstance(batch, slice) else len(batch)
