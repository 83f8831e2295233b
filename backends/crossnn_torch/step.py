"""The training step and the trainer the harness drives.

A mode is a class that, given the trainer (model, loss module, optimizer, parameter slots), is a
callable step(x, y) -> the loss before the update as a 0-d device tensor; it also says what the steps
run inside (context()), where the parameters are (parameters()), how to predict, and whether it wants
sparse labels as one-hot rows. EagerStep has the defaults. Adding a mode adds its class to MODES and
its name to TorchBackend.modes (with a line in TorchBackend.mode_notes), and nothing else. The modes:

eager    the tutorial's loop: optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
compile  the same loop on torch.compile(model), with the optimizer step compiled too (PyTorch's recipe)
xp       no autograd, no nn.Module: the NumPy backend's hand-written forward pass, backward pass, loss
         gradient and optimizer update (crossnn_numpy.step.TrainStep) run on torch tensors through
         the namespace adapter crossnn_torch.xp, under torch.inference_mode()
"""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import numpy as np
import torch

from crossnn.backends import Trainer
from crossnn.data import Dataset
from crossnn.errors import BackendError
from crossnn.spec import Experiment

from crossnn_numpy.step import TrainStep, contiguous_slices
from crossnn_torch import device as devices
from crossnn_torch import layers, losses, optimizers
from crossnn_torch.xp import torch_namespace


class EagerStep:
    """The tutorial's step: optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward();
    optimizer.step()."""

    description = "eager autograd, zero_grad / backward / optimizer.step"
    #: sparse class labels as one-hot rows (the hand-written losses want them) instead of indices
    one_hot_targets = False

    def __init__(self, trainer: TorchTrainer):
        self.trainer = trainer
        self.model, self.loss_fn, self.optimizer = trainer.model, trainer.loss_fn, trainer.optimizer

    def context(self):
        """What the steps run inside (entered once per run of steps)."""
        return contextlib.nullcontext()

    def __call__(self, x, y):
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def parameters(self) -> dict[str, torch.Tensor]:
        """The current parameters, canonical names and layout (views, possibly transposed)."""
        return {name: slot.parameter.detach().T if slot.transposed else slot.parameter.detach()
                for name, slot in self.trainer.slots.items()}

    def predict(self, x):
        with torch.no_grad():
            return self.model(x)


def _quiet_profiler_note() -> None:
    """Dynamo notes, as a warning, that it skips the profiler hook of optimizer.step when compiling it
    ("Profiler record function ... will be ignored"): expected, harmless, and printed into every run."""
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    if not any(isinstance(f, _ProfilerNoteFilter) for f in logger.filters):
        logger.addFilter(_ProfilerNoteFilter())


class _ProfilerNoteFilter(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("Profiler record function")


class CompiledStep(EagerStep):
    """The tutorial's step on torch.compile(model), with optimizer.step compiled as in PyTorch's
    "compiling the optimizer" recipe. Compilation happens during the first steps (and again when the
    batch shape changes, e.g. a short last batch); its time is part of those steps.

    The compiled optimizer keeps its scalar state (Adam's step count, and with it the bias
    corrections) in tensors of torch's default dtype, float32, where the eager optimizer uses Python
    floats; that alone moves a float64 Adam run by about 1e-6. So the step runs with the default
    dtype set to the run's dtype.

    Dynamo keeps at most `recompile_limit` (8) compiled versions of one function and then falls back
    to eager, silently but for a warning. Every trainer of this mode compiles the same functions again
    (its own model and optimizer, dtype, batch shapes), so a process that builds several would soon
    train eagerly under the name "compile"; the limit is raised to RECOMPILE_LIMIT. predict() uses the
    uncompiled model (the same parameters): it runs without grad, which would be one more version."""

    RECOMPILE_LIMIT = 256

    description = "torch.compile(model) (inductor), loss module, backward, torch.compile'd optimizer.step"

    def __init__(self, trainer: TorchTrainer):
        super().__init__(trainer)
        import torch._dynamo

        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # before 2.6
        setattr(config, name, max(getattr(config, name), self.RECOMPILE_LIMIT))
        if hasattr(config, "accumulated_recompile_limit"):
            config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * self.RECOMPILE_LIMIT)
        _quiet_profiler_note()
        self.model = torch.compile(trainer.model)
        self.dtype = trainer.dtype
        optimizer = self.optimizer

        @torch.compile(fullgraph=False)
        def optimizer_step():
            optimizer.step()

        self.optimizer_step = optimizer_step

    def __call__(self, x, y):
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        default = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            self.optimizer_step()
        finally:
            torch.set_default_dtype(default)
        return loss.detach()

    def predict(self, x):
        with torch.no_grad():
            return self.trainer.model(x)


class XpStep(EagerStep):
    """The NumPy backend's training step (crossnn_numpy.step.TrainStep: hand-written forward and
    backward passes, the loss and its gradient, the optimizer update in place) on torch tensors through
    crossnn_torch.xp, under torch.inference_mode(). It keeps its own parameters in canonical layout
    (kernels (in, out), contiguous), starting from the model's; the nn.Module is left as built."""

    description = ("the NumPy backend's hand-written forward/backward/optimizer on torch tensors "
                   "(crossnn_torch.xp), inference_mode, no autograd")
    one_hot_targets = True

    def __init__(self, trainer: TorchTrainer):
        super().__init__(trainer)
        names = list(trainer.slots)
        values = list(super().parameters().values())  # copied into the step's flat parameter array
        self.names = names
        self.train_step = TrainStep(trainer.experiment, names, values, torch_namespace)

    def context(self):
        return torch.inference_mode()

    def __call__(self, x, y):
        return self.train_step(x, y)

    def parameters(self):
        return dict(zip(self.names, self.train_step.values))

    def predict(self, x):
        with torch.inference_mode():
            output, _ = self.train_step.program.forward(self.train_step.values, x)
        return output


MODES = {"eager": EagerStep, "xp": XpStep, "compile": CompiledStep}


class TorchTrainer(Trainer):
    """An experiment lowered to an nn.Module, a loss module and a torch.optim optimizer. The data is
    on the device from the start; a batch selects rows of it."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *,
                 dtype: str, device: str, mode: str):
        if mode not in MODES:
            raise BackendError(f"backend 'torch' has no mode '{mode}'; it has {', '.join(MODES)}")
        self.experiment = experiment
        self.device = devices.resolve(device)
        self.dtype = getattr(torch, dtype)
        self.model, self.slots = layers.build_model(experiment.model, dtype=self.dtype, device=self.device)
        self._load(params)
        self.loss_fn = losses.loss(experiment.loss)
        self.optimizer = optimizers.optimizer(experiment.optimizer, self.model.parameters())
        self.x = torch.as_tensor(data.x, dtype=self.dtype, device=self.device)
        self.y = losses.targets(experiment.loss, data.y, experiment.model.output_size, dtype=self.dtype,
                                device=self.device, one_hot=MODES[mode].one_hot_targets)
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
        """Canonical names and layout: kernels transposed back to (in, out), as C-ordered copies."""
        return {name: np.array(value.cpu().numpy(), order="C", copy=True)
                for name, value in self.train_step.parameters().items()}

    def _selections(self, batches: Sequence[np.ndarray]) -> list:
        """What selects each batch's rows: a slice (a view, like the tutorial's X[i:i + bs]) when
        every batch is a run of consecutive indices, else index tensors sent in one copy."""
        slices = contiguous_slices(batches)
        if slices is not None:
            return slices
        flat = torch.as_tensor(np.concatenate(batches), device=self.device)
        return list(torch.split(flat, [len(b) for b in batches]))

    def step(self, batch):
        (rows,) = self._selections([batch])
        with self.train_step.context():
            return float(self.train_step(self.x[rows], self.y[rows]))

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """The losses stay on the device, in one tensor copied to the host once at the end."""
        step, x, y = self.train_step, self.x, self.y
        losses = []
        with step.context():
            for rows in self._selections(batches):
                losses.append(step(x[rows], y[rows]))
            out = torch.stack(losses) if losses else torch.zeros(0, dtype=self.dtype)
        return out.cpu().numpy().astype(np.float64)

    def predict(self, x):
        output = self.train_step.predict(torch.as_tensor(x, dtype=self.dtype, device=self.device))
        return output.cpu().numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        if isinstance(self.train_step, XpStep):
            return f"torch {torch.__version__} on {self.device}: {self.train_step.description}"
        return (f"torch {torch.__version__} on {self.device}: {type(self.model).__name__} of nn.Linear, "
                f"{type(self.loss_fn).__name__}, torch.optim.{type(self.optimizer).__name__}; "
                f"{self.train_step.description}")
