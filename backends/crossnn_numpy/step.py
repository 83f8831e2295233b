"""The training step: the model graph compiled to a list of ops, a hand-written backward pass, and
the trainer the harness drives.

Program, TrainStep, the ops and the optimizer chain compute through an array namespace `xp` (the
functions listed in crossnn_numpy.xp) and are pure, so they run unchanged on NumPy, CuPy, torch
tensors (crossnn_torch.xp) and jax.numpy under jax.jit. NumpyTrainer is the NumPy (or CuPy) side of
that: NumPy arrays in, NumPy arrays out."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from crossnn.backends import Trainer
from crossnn.checkpoint import TrainingState
from crossnn.data import Dataset
from crossnn.schedule import StepClock
from crossnn.spec import INPUT, Experiment

from crossnn_numpy import ops
from crossnn_numpy import xp as namespaces
from crossnn_numpy.optimizers import chain


class Program:
    """The model as ops in dependency order. Slot 0 holds the model input, slot k the output of op k."""

    def __init__(self, experiment: Experiment, xp):
        slot = {INPUT: 0}
        trains = {INPUT: False}  # does this value depend on a parameter?
        self.ops = []
        for k, node in enumerate(experiment.model.nodes, start=1):
            inputs = tuple(slot[name] for name in node.inputs)
            names = {p.name: f"{node.name}/{p.name}" for p in (*node.params, *node.state)}
            need = tuple(trains[name] for name in node.inputs)
            self.ops.append((node.name, ops.layer(node, xp), inputs, k, names, need))
            slot[node.name] = k
            trains[node.name] = bool(node.params) or any(need)
        self.output = slot[experiment.model.layers[-1].name]

    def forward(self, values: dict, x, masks: dict | None = None, training: bool = False):
        """The model output and the caches backward needs. values: canonical name -> array (parameters
        and state); masks: {dropout layer: mask} for a training step (dropout passes its input through
        without one); training: stateful layers (batch_norm) use the batch's statistics, else their state."""
        acts = [x] + [None] * len(self.ops)
        caches = []
        for name, op, inputs, out, names, _ in self.ops:
            p = {short: values[full] for short, full in names.items()}
            args = [p, [acts[i] for i in inputs], masks.get(name) if masks else None]
            acts[out], cache = op.forward(*args, training) if op.stateful else op.forward(*args)
            caches.append(cache)
        return acts[self.output], caches

    def state_updates(self, values: dict, caches) -> dict:
        """{canonical name: new value} of every layer state after a training forward pass."""
        out = {}
        for (name, op, _, _, names, _), cache in zip(self.ops, caches):
            if op.stateful:
                p = {short: values[full] for short, full in names.items()}
                out.update({names[short]: value for short, value in op.updated_state(p, cache).items()})
        return out

    def backward(self, values: dict, caches, d_output) -> dict:
        """{canonical name: dL/dw} of every trained parameter, given dL/d(output); gradients of a value
        used twice are summed."""
        grads = {}
        d_acts = [None] * (len(self.ops) + 1)
        d_acts[self.output] = d_output
        for (name, op, inputs, out, names, need), cache in zip(reversed(self.ops), reversed(caches)):
            if d_acts[out] is None:  # nothing at or above this layer has parameters: no gradient reaches it
                continue
            p = {short: values[full] for short, full in names.items()}
            d_inputs, d_params = op.backward(p, cache, d_acts[out], need)
            grads.update({names[short]: g for short, g in d_params.items()})
            for i, d, needed in zip(inputs, d_inputs, need):
                if needed:
                    d_acts[i] = d if d_acts[i] is None else d_acts[i] + d
        return grads


class TrainStep:
    """One training step of an experiment as a pure function of arrays of the namespace `xp`:
    forward pass, loss and dL/d(output), backward pass, optimizer chain, new layer state.

    The trained parameters travel as one flat array in canonical order (views give each its canonical
    shape) and the gradients are gathered into one, so the optimizer updates every parameter with a
    handful of whole-array operations instead of a handful per parameter. Each element sees the same
    arithmetic either way. The state dict holds the optimizer's state (its slots, as flat arrays, and
    counters) and, under "layers", the layers' own state by canonical name (BatchNorm's moving
    statistics)."""

    def __init__(self, experiment: Experiment, xp):
        self.xp = xp
        self.program = Program(experiment, xp)
        self.loss = ops.loss(experiment.loss, xp)
        self.chain = chain(experiment.optimizer, xp)
        inits = experiment.model.parameter_inits()
        self.names = list(inits)
        self.shapes = [tuple(p.shape) for p in inits.values()]
        self.state_names = list(experiment.model.state_inits())

    def unflatten(self, flat) -> dict:
        """{canonical name: view of flat in the parameter's shape}."""
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = flat[start:start + size].reshape(shape)
            start += size
        return out

    def flatten(self, values: dict):
        """One flat array of the trained parameters in `values`, canonical order (None for a model
        without parameters)."""
        if not self.names:
            return None
        return self.xp.concat([values[name].reshape(-1) for name in self.names], axis=0)

    def init(self, flat, layers: dict | None = None) -> dict:
        """The step's state for the flat parameters: the optimizer's, and the layers' state `layers`
        (canonical name -> array; required when the model has state)."""
        return {**self.chain.init([flat] if flat is not None else []),
                "layers": {name: layers[name] for name in self.state_names} if self.state_names else {}}

    def variables(self, flat, state: dict) -> dict:
        """Every variable by canonical name: the parameters (views of flat) and the layers' state."""
        return {**(self.unflatten(flat) if flat is not None else {}), **state["layers"]}

    def __call__(self, flat, state, x, y, lr, masks=None):
        """(loss before the update, new flat parameters, new state) for one batch at learning rate lr
        with the step's dropout masks."""
        loss, update, state = self.updates(flat, state, x, y, lr, masks)
        return loss, (flat if update is None else flat + update), state

    def updates(self, flat, state, x, y, lr, masks=None):
        """(loss, the update u of the flat parameters (w_new = w + u; None without parameters), new
        state): __call__ without applying u, for a trainer that owns its parameters' memory and adds
        u in place (NumPy: one array allocation less per step)."""
        values = self.variables(flat, state)
        output, caches = self.program.forward(values, x, masks, training=True)
        loss, d_output = self.loss.value_and_grad(output, y)
        layers = self.program.state_updates(values, caches)
        if flat is None:
            return loss, None, {**state, "layers": layers}
        grads = self.flatten(self.program.backward(values, caches, d_output))
        (update,), optimizer_state = self.chain.update([grads], {k: v for k, v in state.items() if k != "layers"},
                                                       [flat], lr)
        return loss, update, {**optimizer_state, "layers": layers}

    def predict(self, flat, state, x):
        """The model output for x, in inference mode (moving statistics, no dropout)."""
        return self.program.forward(self.variables(flat, state), x)[0]

    def export_state(self, state: dict) -> tuple[dict, dict]:
        """Optimizer slots per parameter name (views of the flat slot arrays) and counters."""
        slots = {slot: self.unflatten(state[slot][0]) for slot in self.chain.s.state_slots() if self.names}
        return slots, {counter: state[counter] for counter in self.chain.s.state_counters()}

    def import_state(self, flat, variables: dict, slots: dict, counters: dict, to_device) -> dict:
        """The step's state from a training state's variables (the layers' state among them), optimizer
        slots (per parameter, canonical layout) and counters; slots the state does not hold keep their
        initial values."""
        state = self.init(flat, {name: to_device(variables[name]) for name in self.state_names})
        for slot in self.chain.s.state_slots():
            if slot in slots and self.names:
                state[slot] = [self.flatten({name: to_device(slots[slot][name]) for name in self.names})]
        for counter in self.chain.s.state_counters():
            state[counter] = int(counters.get(counter, 0))
        return state


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
        self.dtype = dtype
        self.train_step = TrainStep(experiment, self.xp)
        variables = {name: self._device(value) for name, value in params.items()}
        self.flat = self.train_step.flatten(variables)
        self.opt_state = self.train_step.init(self.flat, variables)
        self.clock = StepClock(experiment, data.n)
        self.steps_done = 0
        y = data.y
        if experiment.loss.sparse_targets:
            y = np.eye(experiment.model.output_units)[y]
        self.x = self.to_device(data.x.astype(dtype))
        self.y = self.to_device(y.astype(dtype))

    def _device(self, array):
        return self.to_device(np.asarray(array, dtype=self.dtype))

    def step(self, batch):
        step = self.steps_done
        masks = {name: self._device(m) for name, m in self.clock.masks(step, _rows(batch)).items()}
        loss, update, self.opt_state = self.train_step.updates(self.flat, self.opt_state, self.x[batch],
                                                               self.y[batch], self.clock.lr(step), masks)
        if update is not None:
            self.flat += update  # the trainer's own array: nothing else holds it once the step is done
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
        return {name: np.array(self.to_host(value), copy=True)
                for name, value in self.train_step.variables(self.flat, self.opt_state).items()}

    def state(self) -> TrainingState:
        slots, counters = self.train_step.export_state(self.opt_state)
        return TrainingState(self.steps_done, self.parameters(),
                             {slot: {name: np.array(self.to_host(v)) for name, v in per.items()}
                              for slot, per in slots.items()}, {k: int(v) for k, v in counters.items()})

    def load_state(self, state: TrainingState) -> None:
        self.flat = self.train_step.flatten({name: self._device(value) for name, value in state.params.items()})
        self.opt_state = self.train_step.import_state(self.flat, state.params, state.slots, state.counters,
                                                      self._device)
        self.steps_done = state.step

    def predict(self, x):
        with np.errstate(over="ignore", under="ignore"):
            output = self.train_step.predict(self.flat, self.opt_state, self._device(x))
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
