"""The training step: the model graph compiled to a list of ops, a hand-written backward pass, and
the trainer the harness drives."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from crossnn.backends import Trainer
from crossnn.data import Dataset
from crossnn.spec import INPUT, Experiment

from crossnn_numpy import layers, losses, optimizers


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
        self.n_params = len(names)

    def forward(self, values, x):
        acts = [x] + [None] * len(self.ops)
        caches = []
        for op, inputs, out, _ in self.ops:
            acts[out], cache = op.forward(values, [acts[i] for i in inputs])
            caches.append(cache)
        return acts[self.output], caches

    def backward(self, values, caches, d_output):
        """Parameter gradients, given dL/d(output); gradients of a value used twice are summed."""
        grads = [None] * self.n_params
        d_acts = [None] * (len(self.ops) + 1)
        d_acts[self.output] = d_output
        for (op, inputs, out, need), cache in zip(reversed(self.ops), reversed(caches)):
            d_inputs = op.backward(values, cache, d_acts[out], grads, need)
            for i, d in zip(inputs, d_inputs):
                if i:
                    d_acts[i] = d if d_acts[i] is None else d_acts[i] + d
        return grads


class NumpyTrainer(Trainer):
    """Trains with the array namespace `xp` (NumPy). Sparse class labels become one-hot rows once."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, dtype: str, xp=np):
        self.xp = xp
        self.names = list(params)
        self.values = [xp.asarray(np.array(params[name], dtype=dtype)) for name in self.names]
        self.program = Program(experiment, self.names, xp)
        self.loss = losses.loss(experiment.loss, xp)
        self.optimizer = optimizers.optimizer(experiment.optimizer, xp)
        self.state = self.optimizer.init(self.values)
        self.dtype = dtype
        self.x = xp.asarray(data.x.astype(dtype))
        y = data.y
        if experiment.loss.sparse_targets:
            y = np.eye(experiment.model.output_size)[y]
        self.y = xp.asarray(y.astype(dtype))

    def step(self, batch):
        values = self.values
        x, y = self.x[batch], self.y[batch]
        output, caches = self.program.forward(values, x)
        loss, d_output = self.loss.value_and_grad(output, y)
        grads = self.program.backward(values, caches, d_output)
        self.optimizer.update(values, grads, self.state)
        return loss

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty(len(batches))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
            for i, batch in enumerate(batches):
                out[i] = self.step(batch)
        return out

    def parameters(self):
        return {name: np.array(value, copy=True) for name, value in zip(self.names, self.values)}

    def predict(self, x):
        with np.errstate(over="ignore", under="ignore"):
            output, _ = self.program.forward(self.values, self.xp.asarray(x.astype(self.dtype)))
        return np.asarray(output)

    def describe(self):
        return "hand-written forward and backward passes in NumPy"
