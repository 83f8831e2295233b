"""The training step and the trainer the harness drives.

A mode is a class that, given the trainer (model, loss module, optimizer, parameter slots), is a
callable step(x, y, lr, masks) -> the loss before the update as a 0-d device tensor (lr: the step's
learning rate, masks: its dropout masks as device tensors); it also says what the steps run inside
(context()), where the parameters are (parameters()), how to predict, how to export and import its
training state, and whether it wants sparse labels as one-hot rows. EagerStep has the defaults.
Adding a mode adds its class to MODES and its name to TorchBackend.modes (with a line in
TorchBackend.mode_notes), and nothing else. The trainer counts its steps: the step number fixes the
learning rate and the dropout masks (crossnn.schedule.StepClock), so a run can stop and resume. The
modes:

eager    the tutorial's loop: optimizer.zero_grad(); loss_fn(model(x), y).backward(); clipping and
         the decay torch.optim does not do (crossnn_torch.optimizers.Update); optimizer.step()
compile  the same loop on torch.compile(model), with the optimizer step compiled too (PyTorch's recipe)
xp       no autograd, no nn.Module: the NumPy backend's hand-written forward pass, backward pass, loss
         gradient and optimizer update (crossnn_numpy.step.TrainStep) run on torch tensors through
         the namespace adapter crossnn_torch.xp, under torch.inference_mode()
onednn   the xp step with float32 matrix products (all but small ones) through PyTorch's bundled
         oneDNN instead of MKL (crossnn_torch.xp.onednn_namespace); CPU only
"""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import numpy as np
import torch

from crossnn.backends import Trainer
from crossnn.checkpoint import TrainingState
from crossnn.data import Dataset
from crossnn.errors import BackendError, UnsupportedFeature
from crossnn.schedule import StepClock
from crossnn.spec import Experiment

from crossnn_numpy.step import TrainStep, contiguous_slices
from crossnn_torch import checkpoint
from crossnn_torch import device as devices
from crossnn_torch import layers, losses, optimizers
from crossnn_torch.xp import onednn_namespace, onednn_unavailable, torch_namespace


class EagerStep:
    """The tutorial's step: optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward();
    then the step's learning rate, clipping and decay (crossnn_torch.optimizers.Update.before_step)
    and optimizer.step(). Dropout modules get the step's masks before the forward pass."""

    description = "eager autograd, zero_grad / backward / optimizer.step"
    #: sparse class labels as one-hot rows (the hand-written losses want them) instead of indices
    one_hot_targets = False
    #: dtype of torch's per-parameter "step" counters when a state is loaded (torch's own default)
    step_dtype = torch.float32

    def __init__(self, trainer: TorchTrainer):
        self.trainer = trainer
        self.model, self.loss_fn, self.update = trainer.model, trainer.loss_fn, trainer.update
        self.optimizer = self.update.optimizer
        self.dropouts = trainer.dropouts

    def context(self):
        """What the steps run inside (entered once per run of steps)."""
        return contextlib.nullcontext()

    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        for name, module in self.dropouts.items():
            module.mask = masks[name]

    def __call__(self, x, y, lr, masks):
        if masks:
            self.set_masks(masks)
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.update.before_step(lr)
        self.optimizer_step()
        return loss.detach()

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def parameters(self) -> dict[str, torch.Tensor]:
        """The current parameters, canonical names and layout (views, possibly transposed)."""
        return {name: slot.parameter.detach().T if slot.transposed else slot.parameter.detach()
                for name, slot in self.trainer.slots.items()}

    def predict(self, x):
        """The model in eval mode (dropout is the identity), without grad."""
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(x)
        finally:
            self.model.train()

    def export_state(self, steps: int) -> TrainingState:
        return checkpoint.training_state(steps, self.trainer.slots, self.optimizer, self.trainer.experiment.optimizer)

    def import_state(self, state: TrainingState) -> None:
        checkpoint.load_parameters(self.trainer.slots, state.params)
        checkpoint.load_optimizer_state(self.optimizer, self.trainer.slots, self.trainer.experiment.optimizer, state,
                                        self.step_dtype)


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
    dtype set to the run's dtype, and the "step" counters Adagrad creates with the optimizer (in
    float32: its compiled step computes lr / (1 + (step - 1) · lr_decay) in the counter's dtype, a
    float32 learning rate, 1e-8 off) are cast to the run's dtype. With a learning-rate schedule the
    param groups' lr is a 0-d tensor, updated in place (PyTorch's recipe: a Python float would be
    compiled in as a constant, and every new value would compile the step again).

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
        self.step_dtype = trainer.dtype
        for state in self.optimizer.state.values():  # Adagrad creates its state, "step" included, up front
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(self.step_dtype)
        if self.update.scheduled:
            self.update.use_tensor_lr(trainer.dtype)
        optimizer = self.optimizer

        @torch.compile(fullgraph=False)
        def compiled_step():
            optimizer.step()

        self.compiled_step = compiled_step

    def optimizer_step(self) -> None:
        """The compiled optimizer.step(), with the run's dtype as torch's default (see above)."""
        default = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            self.compiled_step()
        finally:
            torch.set_default_dtype(default)

    def predict(self, x):
        model = self.trainer.model
        model.eval()
        try:
            with torch.no_grad():
                return model(x)
        finally:
            model.train()


class XpStep(EagerStep):
    """The NumPy backend's training step (crossnn_numpy.step.TrainStep: hand-written forward and
    backward passes, the loss and its gradient, the optimizer update in place) on torch tensors through
    crossnn_torch.xp, under torch.inference_mode(). It keeps its own parameters in canonical layout
    (kernels (in, out), contiguous), starting from the model's; the nn.Module is left as built."""

    description = ("the NumPy backend's hand-written forward/backward/optimizer on torch tensors "
                   "(crossnn_torch.xp), inference_mode, no autograd")
    one_hot_targets = True
    namespace = torch_namespace

    def __init__(self, trainer: TorchTrainer):
        super().__init__(trainer)
        names = list(trainer.slots)
        values = list(super().parameters().values())  # copied into the step's flat parameter array
        self.names = names
        self.train_step = TrainStep(trainer.experiment, names, values, self.namespace)

    def context(self):
        return torch.inference_mode()

    def __call__(self, x, y, lr, masks):
        return self.train_step(x, y, lr, masks)

    def parameters(self):
        return dict(zip(self.names, self.train_step.values))

    def predict(self, x):
        with torch.inference_mode():
            output, _ = self.train_step.program.forward(self.train_step.values, x)
        return output

    def export_state(self, steps: int) -> TrainingState:
        slots, counters = self.train_step.export_state(self.names)
        host = {slot: {name: checkpoint.canonical(v, False) for name, v in per.items()} for slot, per in slots.items()}
        params = {name: checkpoint.canonical(v, False) for name, v in self.parameters().items()}
        return TrainingState(steps, params, host, {name: int(v) for name, v in counters.items()})

    def import_state(self, state: TrainingState) -> None:
        trainer = self.trainer

        def to_device(array):
            return torch.as_tensor(np.asarray(array), dtype=trainer.dtype, device=trainer.device)

        with torch.inference_mode():
            for name, value in zip(self.names, self.train_step.values):
                value.copy_(to_device(state.params[name]))
            self.train_step.import_state(self.names, state.slots, state.counters, to_device)


class OneDnnStep(XpStep):
    """XpStep whose float32 matrix products (forward x·W, backward xᵀ·dz and dz·Wᵀ) run on oneDNN's
    inner-product kernels inside PyTorch rather than MKL's sgemm (crossnn_torch.xp.onednn_namespace),
    all but products under crossnn_torch.xp.SMALL_PRODUCT multiply-adds: on a net as small as the
    circle's, every product stays torch.matmul and the step is the xp mode's. Same formulas, same order
    of operations elsewhere; oneDNN's products round differently, within the float32 tolerance.
    Float64 products stay torch.matmul, so float64 results equal the xp mode's."""

    description = ("the xp step with float32 matmuls through PyTorch's bundled oneDNN "
                   "(torch.ops.mkldnn._linear_pointwise) instead of MKL, small ones left to torch.matmul")
    namespace = onednn_namespace

    def __init__(self, trainer: TorchTrainer):
        if trainer.device.type != "cpu":
            raise UnsupportedFeature("torch", f"the onednn mode on {trainer.device} (oneDNN runs on the CPU; "
                                              "the xp mode is the fast mode on a GPU)")
        reason = onednn_unavailable()
        if reason:
            raise BackendError(f"backend 'torch' cannot run the onednn mode: {reason}")
        super().__init__(trainer)


MODES = {"eager": EagerStep, "xp": XpStep, "compile": CompiledStep, "onednn": OneDnnStep}


class TorchTrainer(Trainer):
    """An experiment lowered to an nn.Module, a loss module and a torch.optim optimizer. The data is
    on the device from the start; a batch selects rows of it."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *,
                 dtype: str, device: str, mode: str, native: frozenset[str] = frozenset()):
        if mode not in MODES:
            raise BackendError(f"backend 'torch' has no mode '{mode}'; it has {', '.join(MODES)}")
        native = frozenset(native)
        if native and issubclass(MODES[mode], XpStep):
            raise UnsupportedFeature("torch", f"the native flavour in the {mode} mode (it runs the NumPy backend's "
                                              "formulas); use eager or compile")
        self.experiment, self.native = experiment, native
        self.device = devices.resolve(device)
        self.dtype = getattr(torch, dtype)
        if "default-init" in native:  # torch's own nn.Linear init, seeded the way torch scripts seed it
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(experiment.seed)
                built = layers.build_model(experiment.model, dtype=self.dtype, device=self.device, native=native)
        else:
            built = layers.build_model(experiment.model, dtype=self.dtype, device=self.device, native=native)
        self.model, self.slots, self.dropouts = built
        if "default-init" not in native:
            self._load(params)
        self.loss_fn = losses.loss(experiment.loss, native)
        self.update = optimizers.Update(experiment.optimizer, self.model.parameters(), native)
        self.optimizer = self.update.optimizer
        self.x = torch.as_tensor(data.x, dtype=self.dtype, device=self.device)
        self.y = losses.targets(experiment.loss, data.y, experiment.model.output_size, dtype=self.dtype,
                                device=self.device, one_hot=MODES[mode].one_hot_targets, native=native)
        self.clock = StepClock(experiment, data.n)
        self.steps_done = 0
        self.train_step = MODES[mode](self)

    def _load(self, params: dict[str, np.ndarray]) -> None:
        """Copy canonical parameters in, transposing kernels to nn.Linear's (out, in)."""
        for name, slot in self.slots.items():
            shape = tuple(slot.parameter.shape)
            canonical = shape[::-1] if slot.transposed else shape
            if params[name].shape != canonical:
                raise BackendError(f"parameter '{name}' has shape {params[name].shape}, the model expects {canonical}")
        checkpoint.load_parameters(self.slots, params)

    def _masks(self, step: int, rows: int) -> dict[str, torch.Tensor]:
        """The dropout masks of a step, drawn by crossnn in NumPy, on the device in the run's dtype."""
        if not self.dropouts:
            return {}
        return {name: torch.as_tensor(mask, dtype=self.dtype, device=self.device)
                for name, mask in self.clock.masks(step, rows).items()}

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
        return float(self.run([batch])[0])

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """The losses stay on the device, in one tensor copied to the host once at the end."""
        step, x, y, clock = self.train_step, self.x, self.y, self.clock
        losses = []
        with step.context():
            for batch, rows in zip(batches, self._selections(batches)):
                number = self.steps_done
                losses.append(step(x[rows], y[rows], clock.lr(number), self._masks(number, len(batch))))
                self.steps_done = number + 1
            out = torch.stack(losses) if losses else torch.zeros(0, dtype=self.dtype)
        return out.cpu().numpy().astype(np.float64)

    def state(self) -> TrainingState:
        """Steps done, parameters and optimizer state in canonical names and layout."""
        return self.train_step.export_state(self.steps_done)

    def load_state(self, state: TrainingState) -> None:
        """Parameters, optimizer buffers and counters from `state`; the next step is state.step."""
        self.train_step.import_state(state)
        self.steps_done = int(state.step)

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
