"""The training step and the trainer the harness drives.

A mode is a class that, given the trainer (model, loss module, optimizer, parameter slots), returns
a callable step(x, y) -> the loss before the update as a 0-d device tensor. Adding a mode
(torch.compile, an explicit backward pass) adds its class to MODES and its name to
TorchBackend.modes, and nothing else.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from crossnn.backends import Trainer
from crossnn.data import Dataset
from crossnn.errors import BackendError
from crossnn.spec import Experiment

from crossnn_torch import device as devices
from crossnn_torch import layers, losses, optimizers


class EagerStep:
    """The tutorial's step: optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward();
    optimizer.step()."""

    description = "eager autograd, zero_grad / backward / optimizer.step"

    def __init__(self, trainer: TorchTrainer):
        self.model, self.loss_fn, self.optimizer = trainer.model, trainer.loss_fn, trainer.optimizer

    def __call__(self, x, y):
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


MODES = {"eager": EagerStep}


class TorchTrainer(Trainer):
    """An experiment lowered to an nn.Module, a loss module and a torch.optim optimizer. The data is
    on the device from the start; a batch selects rows of it."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *,
                 dtype: str, device: str, mode: str):
        if mode not in MODES:
            raise BackendError(f"backend 'torch' has no mode '{mode}'; it has {', '.join(MODES)}")
        self.device = devices.resolve(device)
        self.dtype = getattr(torch, dtype)
        self.model, self.slots = layers.build_model(experiment.model, dtype=self.dtype, device=self.device)
        self._load(params)
        self.loss_fn = losses.loss(experiment.loss)
        self.optimizer = optimizers.optimizer(experiment.optimizer, self.model.parameters())
        self.x = torch.as_tensor(data.x, dtype=self.dtype, device=self.device)
        self.y = losses.targets(experiment.loss, data.y, experiment.model.output_size,
                                dtype=self.dtype, device=self.device)
        self.train_step = MODES[mode](self)

    def _load(self, params: dict[str, np.ndarray]) -> None:
        """Copy canonical parameters in, transposing kernels to nn.Linear's (out, in)."""
        with torch.no_grad():
            for name, slot in self.slots.items():
                value, shape = params[name], tuple(slot.parameter.shape)
                canonical = shape[::-1] if slot.transposed else shape
                if value.shape != canonical:
                    raise BackendError(f"parameter '{name}' has shape {value.shape}, the model expects {canonical}")
                slot.parameter.copy_(torch.as_tensor(value.T if slot.transposed else value))

    def parameters(self):
        """Canonical names and layout: kernels transposed back to (in, out)."""
        out = {}
        for name, slot in self.slots.items():
            value = slot.parameter.detach().cpu().numpy()
            out[name] = np.array(value.T if slot.transposed else value, order="C")
        return out

    def _selections(self, batches: Sequence[np.ndarray]) -> list:
        """What selects each batch's rows: a slice (a view, like the tutorial's X[i:i + bs]) when
        every batch is a run of consecutive indices, else index tensors sent in one copy."""
        if all(np.all(np.diff(b) == 1) for b in batches):
            return [slice(int(b[0]), int(b[0]) + len(b)) for b in batches]
        flat = torch.as_tensor(np.concatenate(batches), device=self.device)
        return list(torch.split(flat, [len(b) for b in batches]))

    def step(self, batch):
        (rows,) = self._selections([batch])
        return float(self.train_step(self.x[rows], self.y[rows]))

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """The losses go into one device tensor, copied to the host once at the end."""
        out = torch.empty(len(batches), dtype=self.dtype, device=self.device)
        for i, rows in enumerate(self._selections(batches)):
            out[i] = self.train_step(self.x[rows], self.y[rows])
        return out.cpu().numpy().astype(np.float64)

    def predict(self, x):
        with torch.no_grad():
            return self.model(torch.as_tensor(x, dtype=self.dtype, device=self.device)).cpu().numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        return (f"torch {torch.__version__} on {self.device}: {type(self.model).__name__} of nn.Linear, "
                f"{type(self.loss_fn).__name__}, torch.optim.{type(self.optimizer).__name__}; "
                f"{self.train_step.description}")
