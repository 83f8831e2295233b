"""The training step and the trainer the harness drives.

A mode is a class that, given the trainer, is a callable step(x, y, lr, masks) -> the loss before the
update as a 0-d device tensor (lr: the step's learning rate, masks: its dropout masks as device
tensors in the mode's layout); it also says what the steps run inside (context()), where the
parameters are (parameters()), how to predict, how to export and import its training state, whether
it computes images channels-first (module modes) and whether it wants sparse labels as one-hot rows.
Adding a mode adds its class to MODES and its name to TorchBackend.modes (with a line in
TorchBackend.mode_notes), and nothing else. The trainer counts its steps: the step number fixes the
learning rate and the dropout masks (crossnn.schedule.StepClock), so a run can stop and resume. The
modes:

eager    the tutorial's loop on the nn.Module of crossnn_torch.ops: optimizer.zero_grad();
         loss_fn(model(x), y).backward(); the chain's loop stages (crossnn_torch.optimizers.Chain);
         optimizer.step()
compile  the same loop on torch.compile(model), with the optimizer step compiled too (PyTorch's recipe)
xp       no autograd, no nn.Module: the NumPy backend's pure training step (crossnn_numpy.step.TrainStep:
         hand-written forward and backward passes, loss gradient, optimizer chain) on torch tensors in
         crossnn's canonical layout, through the namespace crossnn_torch.xp, under torch.inference_mode()
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
from crossnn_torch import checkpoint, ops
from crossnn_torch import device as devices
from crossnn_torch.optimizers import Chain
from crossnn_torch.xp import onednn_namespace, onednn_unavailable, torch_namespace


def to_channels_first(x: np.ndarray) -> np.ndarray:
    """A canonical (N, H, W, C) batch of images as torch's contiguous (N, C, H, W); other ranks as they are."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


class EagerStep:
    """The tutorial's step: optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward();
    then the chain's loop stages (learning rate, clipping, decay) and optimizer.step(). Dropout
    modules get the step's masks before the forward pass."""

    description = "eager autograd, zero_grad / backward / optimizer.step"
    #: images as torch's (N, C, H, W) (x and dropout masks), converted once at the boundary
    channels_first = True
    #: sparse class labels as one-hot rows (the hand-written losses want them) instead of indices
    one_hot_targets = False
    #: dtype of torch's per-parameter "step" counters when a state is loaded (torch's own default)
    step_dtype = torch.float32

    def __init__(self, trainer: TorchTrainer):
        self.trainer = trainer
        experiment, native = trainer.experiment, trainer.native
        if "default-init" in native:  # torch's own init (nn.Linear, nn.Conv2d), seeded the way torch scripts seed it
            cuda = [trainer.device] if trainer.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(experiment.seed)
                built = ops.build_model(experiment.model, dtype=trainer.dtype, device=trainer.device, native=native)
        else:
            built = ops.build_model(experiment.model, dtype=trainer.dtype, device=trainer.device, native=native)
            checkpoint.load_variables(built, trainer.initial)
        self.built = built
        self.model, self.slots, self.dropouts = built.module, built.slots, built.dropouts
        self.ids = ops.ids_input(experiment.model)
        lowered = ops.loss(experiment.loss, native, experiment.model.output_shape)
        self.loss_fn = lowered.mod.build(trainer.dtype, trainer.device)
        self.class_indices = lowered.class_indices
        self.chain = Chain(experiment.optimizer, self.model.parameters(), native)
        self.optimizer = self.chain.optimizer

    def context(self):
        """What the steps run inside (entered once per run of steps)."""
        return contextlib.nullcontext()

    def __call__(self, x, y, lr, masks):
        for name, module in self.dropouts.items():
            module.mask = masks.get(name)
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.chain.before_step(lr)
        self.optimizer_step()
        return loss.detach()

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def parameters(self) -> dict[str, torch.Tensor]:
        """The current parameters and layer state, canonical names and layout."""
        return {name: slot.canonical() for name, slot in self.built.variables.items()}

    def predict(self, x):
        """The model in eval mode (dropout is the identity, BatchNorm uses its running statistics),
        without grad."""
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(x)
        finally:
            self.model.train()

    def export_state(self, steps: int) -> TrainingState:
        return checkpoint.training_state(steps, self.built, self.optimizer, self.trainer.experiment.optimizer)

    def import_state(self, state: TrainingState) -> None:
        checkpoint.load_variables(self.built, state.params, state.step)
        checkpoint.load_optimizer_state(self.optimizer, self.slots, self.trainer.experiment.optimizer, state,
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
        self.eager_model = self.model
        self.model = torch.compile(self.eager_model)
        self.dtype = trainer.dtype
        self.step_dtype = trainer.dtype
        for state in self.optimizer.state.values():  # Adagrad creates its state, "step" included, up front
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(self.step_dtype)
        if trainer.experiment.optimizer.schedule is not None:
            self.chain.lr.use_tensor_lr(self.optimizer, trainer.dtype, trainer.device)
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
        model = self.eager_model
        model.eval()
        try:
            with torch.no_grad():
                return model(x)
        finally:
            model.train()


class XpStep:
    """The NumPy backend's pure training step (crossnn_numpy.step.TrainStep) on torch tensors through
    crossnn_torch.xp, under torch.inference_mode(), in crossnn's canonical layout: no nn.Module, no
    permutations. The parameters are one flat tensor in canonical order, the optimizer state the
    chain's; each step returns new ones."""

    description = ("the NumPy backend's hand-written forward/backward/optimizer on torch tensors "
                   "(crossnn_torch.xp), inference_mode, no autograd")
    channels_first = False
    one_hot_targets = True
    #: the model input stays floats (the reference's embedding takes the ids as whole numbers)
    ids = False
    namespace = torch_namespace

    def __init__(self, trainer: TorchTrainer):
        if trainer.native:
            raise UnsupportedFeature("torch", f"the native flavour in the {trainer.mode} mode (it runs the NumPy "
                                              "backend's formulas); use eager or compile")
        self.trainer = trainer
        self.train_step = TrainStep(trainer.experiment, self.namespace)
        with torch.inference_mode():
            variables = {name: trainer.tensor(value) for name, value in trainer.initial.items()}
            self.flat = self.train_step.flatten(variables)
            self.state = self.train_step.init(self.flat, variables)

    def context(self):
        return torch.inference_mode()

    def __call__(self, x, y, lr, masks):
        loss, self.flat, self.state = self.train_step(self.flat, self.state, x, y, lr, masks)
        return loss

    def parameters(self):
        """Every variable (parameters, and the layers' state), canonical layout."""
        return self.train_step.variables(self.flat, self.state)

    def predict(self, x):
        with torch.inference_mode():
            return self.train_step.predict(self.flat, self.state, x)

    def export_state(self, steps: int) -> TrainingState:
        slots, counters = self.train_step.export_state(self.state)
        host = {slot: {name: checkpoint.canonical(v) for name, v in per.items()} for slot, per in slots.items()}
        params = {name: checkpoint.canonical(v) for name, v in self.parameters().items()}
        return TrainingState(steps, params, host, {name: int(v) for name, v in counters.items()})

    def import_state(self, state: TrainingState) -> None:
        with torch.inference_mode():
            self.flat = self.train_step.flatten({name: self.trainer.tensor(state.params[name])
                                                 for name in self.train_step.names})
            self.state = self.train_step.import_state(self.flat, state.params, state.slots, state.counters,
                                                      self.trainer.tensor)


class OneDnnStep(XpStep):
    """XpStep whose float32 matrix products (forward x·W, backward xᵀ·dz and dz·Wᵀ, the convolutions'
    im2col products) run on oneDNN's inner-product kernels inside PyTorch rather than MKL's sgemm
    (crossnn_torch.xp.onednn_namespace), all but products under crossnn_torch.xp.SMALL_PRODUCT
    multiply-adds: on a net as small as the circle's, every product stays torch.matmul and the step is
    the xp mode's. Same formulas, same order of operations elsewhere; oneDNN's products round
    differently, within the float32 tolerance. Float64 products stay torch.matmul, so float64 results
    equal the xp mode's."""

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
    """An experiment trained by one of the MODES. The data is on the device from the start (images
    permuted to (N, C, H, W) once for the module modes); a batch selects rows of it."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *,
                 dtype: str, device: str, mode: str, native: frozenset[str] = frozenset()):
        if mode not in MODES:
            raise BackendError(f"backend 'torch' has no mode '{mode}'; it has {', '.join(MODES)}")
        self.experiment, self.native, self.mode = experiment, frozenset(native), mode
        self.device = devices.resolve(device)
        self.dtype = getattr(torch, dtype)
        checkpoint.check_shapes(experiment, params)
        self.initial = params
        self.train_step = MODES[mode](self)
        self.clock = StepClock(experiment, data.n)
        self.steps_done = 0
        self.x = self._inputs(data.x)
        self.y = self._targets(data.y)

    def tensor(self, array) -> torch.Tensor:
        """A float array as a tensor of the run's dtype on its device (it may share the array's memory:
        nothing writes into it)."""
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def _layout(self, array: np.ndarray) -> np.ndarray:
        return to_channels_first(array) if self.train_step.channels_first else array

    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        """Model inputs on the device: int64 ids for a mode whose model reads ids (embedding), else
        values of the run's dtype in the mode's layout."""
        if self.train_step.ids:
            return torch.as_tensor(np.asarray(x), dtype=torch.int64, device=self.device)
        return self.tensor(self._layout(np.asarray(x)))

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        """The targets as the loss wants them: class indices (int64) for nn.CrossEntropyLoss with
        sparse labels, one-hot rows for every other loss of sparse labels, else the values."""
        if not self.experiment.loss.sparse_targets:
            return self.tensor(y)
        labels = torch.as_tensor(y, dtype=torch.int64, device=self.device)
        if getattr(self.train_step, "class_indices", False):
            return labels
        return torch.nn.functional.one_hot(labels, self.experiment.model.output_units).to(self.dtype)

    @property
    def model(self) -> torch.nn.Module:
        """The nn.Module (module modes: eager, compile)."""
        return self.train_step.model

    @property
    def loss_fn(self) -> torch.nn.Module:
        return self.train_step.loss_fn

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.train_step.optimizer

    def _masks(self, step: int, rows: int) -> dict[str, torch.Tensor]:
        """The dropout masks of a step, drawn by crossnn in NumPy, on the device in the run's dtype and
        the mode's layout."""
        return {name: self.tensor(self._layout(mask)) for name, mask in self.clock.masks(step, rows).items()}

    def parameters(self):
        """Canonical names and layout, as C-ordered NumPy copies."""
        return {name: checkpoint.canonical(value) for name, value in self.train_step.parameters().items()}

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
        dropout = bool(clock.dropout)
        losses = []
        with step.context():
            for batch, rows in zip(batches, self._selections(batches)):
                number = self.steps_done
                masks = self._masks(number, len(batch)) if dropout else {}
                losses.append(step(x[rows], y[rows], clock.lr(number), masks))
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
        """The model output for canonical x, in canonical layout."""
        output = self.train_step.predict(self._inputs(x))
        return output.cpu().numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        if isinstance(self.train_step, XpStep):
            return f"torch {torch.__version__} on {self.device}: {self.train_step.description}"
        model = getattr(self.train_step, "eager_model", self.model)
        kinds = sorted({type(m).__name__ for m in model.modules() if any(True for _ in m.parameters(recurse=False))})
        return (f"torch {torch.__version__} on {self.device}: {type(model).__name__} of "
                f"{', '.join(kinds) or 'modules without parameters'}, "
                f"{type(self.loss_fn).__name__}, torch.optim.{type(self.optimizer).__name__}; "
                f"{self.train_step.description}")
