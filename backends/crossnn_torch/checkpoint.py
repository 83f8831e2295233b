"""Training state in canonical form (crossnn.checkpoint.TrainingState) and torch's own checkpoint
format, converted at this boundary only.

torch keeps optimizer state per parameter in optimizer.state[p] under the names crossnn's
checkpoints use (momentum_buffer, exp_avg, exp_avg_sq, square_avg, grad_avg, sum, and the counter
"step" as a 0-d tensor), in the parameter's own layout: an nn.Linear weight and its buffers are
(out, in), the canonical kernel (in, out). Loading goes through optimizer.load_state_dict, as torch
users restore an optimizer.

The native file is what PyTorch tutorials save (e.g. "Saving and loading" in seed 004):

    torch.save({"info": str, "date": str, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "step": int}, path)

`step` is the number of training steps done (the position in crossnn's batch plan). The date is
an ISO 8601 string rather than a datetime object: since torch 2.6 torch.load defaults to
weights_only=True, which refuses a pickled datetime, so a plain torch.load(path) reads this file.
Files that hold a datetime (as the seed's code writes them) are read too.
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import numpy as np
import torch

from crossnn import spec
from crossnn.checkpoint import CheckpointError, TrainingState
from crossnn.files import write_bytes_atomic
from crossnn.spec import Experiment

from crossnn_torch import layers, optimizers


def canonical(tensor: torch.Tensor, transposed: bool) -> np.ndarray:
    """A C-ordered NumPy copy in canonical layout."""
    value = tensor.detach().cpu()
    return np.array((value.T if transposed else value).numpy(), order="C", copy=True)


def _ordered(optimizer: torch.optim.Optimizer) -> dict:
    """{parameter: its index in optimizer.state_dict()} (torch numbers them across param groups)."""
    return {p: i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}


def training_state(step: int, slots: dict[str, layers.Slot], optimizer: torch.optim.Optimizer,
                   s: spec.Optimizer) -> TrainingState:
    """The canonical state of a model's parameters (`slots`) and `optimizer`, after `step` steps."""
    params = {name: canonical(slot.parameter, slot.transposed) for name, slot in slots.items()}
    buffers: dict[str, dict[str, np.ndarray]] = {}
    counters: dict[str, int] = {name: 0 for name in s.state_counters()}
    for name, slot in slots.items():
        held = optimizer.state.get(slot.parameter, {})
        for key in s.state_slots():
            if held.get(key) is not None:
                buffers.setdefault(key, {})[name] = canonical(held[key], slot.transposed)
        for key in s.state_counters():
            if key in held:
                counters[key] = int(float(held[key]))
    return TrainingState(int(step), params, buffers, counters)


def load_parameters(slots: dict[str, layers.Slot], params: dict[str, np.ndarray]) -> None:
    """Copy canonical parameters into the model, transposing kernels to nn.Linear's (out, in)."""
    with torch.no_grad():
        for name, slot in slots.items():
            value, shape = np.asarray(params[name]), tuple(slot.parameter.shape)
            canonical_shape = shape[::-1] if slot.transposed else shape
            if value.shape != canonical_shape:
                raise CheckpointError(f"parameter '{name}' has shape {value.shape}, the model expects "
                                      f"{canonical_shape}")
            slot.parameter.copy_(torch.as_tensor(value.T if slot.transposed else value))


def load_optimizer_state(optimizer: torch.optim.Optimizer, slots: dict[str, layers.Slot], s: spec.Optimizer,
                         state: TrainingState, step_dtype=torch.float32) -> None:
    """Put the canonical optimizer state into `optimizer` through its load_state_dict. A parameter
    gets an entry when its buffers are complete (a momentum buffer or Adam's moments exist only
    after a first step); otherwise torch creates them on the next step, as for a fresh optimizer."""
    index = _ordered(optimizer)
    saved = optimizer.state_dict()
    entries = dict(saved["state"])
    required = s.state_slots()
    for name, slot in slots.items():
        # copies: torch updates its state in place, and the caller's arrays must stay as they are
        entry = {key: torch.tensor(np.asarray(values[name]).T if slot.transposed else np.asarray(values[name]))
                 for key, values in state.slots.items() if name in values and key in required}
        if not required or len(entry) < len(required):
            if state.step > 0 and required:
                missing = [key for key in required if key not in entry]
                raise CheckpointError(f"the training state has no optimizer slot '{missing[0]}' for '{name}' "
                                      f"after {state.step} steps")
            continue
        for key in s.state_counters():
            entry[key] = torch.tensor(float(state.counters.get(key, 0)), dtype=step_dtype)
        entries[index[slot.parameter]] = entry
    saved["state"] = entries
    optimizer.load_state_dict(saved)


# ---- torch's own checkpoint file ------------------------------------------------------------------


def _lowering(experiment: Experiment):
    """A float64 CPU model and optimizer for `experiment`, as the trainer builds them."""
    built = layers.build_model(experiment.model, dtype=torch.float64, device=torch.device("cpu"))
    update = optimizers.Update(experiment.optimizer, built.module.parameters())
    return built, update


def _next_lr(experiment: Experiment, step: int) -> float:
    """The learning rate of the step after `step` steps (the spec's lr without a schedule)."""
    s = experiment.optimizer
    if s.schedule is None:
        return s.lr
    from crossnn.data import load_dataset
    from crossnn.schedule import StepClock

    return StepClock(experiment, load_dataset(experiment).n).lr(step)


def export_native(experiment: Experiment, state: TrainingState, path) -> None:
    """Write `state` as torch.save({"info", "date", "model", "optimizer", "step"}), completely or not
    at all. The param groups hold the learning rate of the next step."""
    built, update = _lowering(experiment)
    load_parameters(built.slots, state.params)
    load_optimizer_state(update.optimizer, built.slots, experiment.optimizer, state)
    update.set_lr(_next_lr(experiment, state.step))
    payload = {
        "info": f"crossnn experiment '{experiment.name}': {type(built.module).__name__} state_dict and "
                f"torch.optim.{type(update.optimizer).__name__} state_dict after {state.step} steps",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": built.module.state_dict(),
        "optimizer": update.optimizer.state_dict(),
        "step": int(state.step),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def _read(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals([datetime.datetime]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as err:  # torch raises many kinds for a file that is not its format
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: holds a {type(payload).__name__}, expected the dict torch.save wrote "
                              "({'model', 'optimizer', 'step', ...})")
    for key in ("model", "optimizer", "step"):
        if key not in payload:
            raise CheckpointError(f"{path}: missing key '{key}' (not a crossnn torch checkpoint, or damaged)")
    return payload


def import_native(experiment: Experiment, path) -> TrainingState:
    """Read a file export_native wrote (or one a hand-written loop saved the same way for a model of
    the same structure) back into a canonical training state."""
    path = Path(path)
    payload = _read(path)
    built, update = _lowering(experiment)
    model_state, expected = payload["model"], built.module.state_dict()
    if not isinstance(model_state, dict):
        raise CheckpointError(f"{path}: 'model' is a {type(model_state).__name__}, expected a state_dict")
    missing = [key for key in expected if key not in model_state]
    extra = [key for key in model_state if key not in expected]
    if missing or extra:
        raise CheckpointError(f"{path}: 'model' does not fit the model of '{experiment.name}' (missing "
                              f"{', '.join(missing) or 'nothing'}; unexpected {', '.join(extra) or 'nothing'})")
    for key, value in expected.items():
        got = model_state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"{path}: model '{key}' has shape {shape}, the model of '{experiment.name}' "
                                  f"needs {tuple(value.shape)}")
    built.module.load_state_dict(model_state)
    opt_state = payload["optimizer"]
    ours = update.optimizer.state_dict()
    if (not isinstance(opt_state, dict) or not isinstance(opt_state.get("param_groups"), list)
            or not isinstance(opt_state.get("state"), dict)):
        raise CheckpointError(f"{path}: 'optimizer' is not a torch.optim state_dict")
    theirs = [sorted(k for k in g if k != "params") for g in opt_state["param_groups"]]
    if theirs != [sorted(k for k in g if k != "params") for g in ours["param_groups"]] or \
            [len(g["params"]) for g in opt_state["param_groups"]] != [len(g["params"]) for g in ours["param_groups"]]:
        raise CheckpointError(f"{path}: 'optimizer' is not the state of torch.optim."
                              f"{type(update.optimizer).__name__} over this model's parameters")
    shapes = [tuple(p.shape) for g in update.optimizer.param_groups for p in g["params"]]
    for i, entry in opt_state["state"].items():
        for key, value in entry.items():
            if key not in experiment.optimizer.state_counters() and isinstance(value, torch.Tensor) \
                    and tuple(value.shape) != shapes[i]:
                raise CheckpointError(f"{path}: optimizer state {key} of parameter {i} has shape "
                                      f"{tuple(value.shape)}, the parameter is {shapes[i]}")
    try:
        update.optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise CheckpointError(f"{path}: 'optimizer' does not load ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    step = payload["step"]
    if isinstance(step, torch.Tensor):
        step = int(step.item())
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: 'step' must be a non-negative integer, got {step!r}")
    state = training_state(step, built.slots, update.optimizer, experiment.optimizer)
    if step > 0:
        for key in experiment.optimizer.state_slots():
            absent = [name for name in built.slots if name not in state.slots.get(key, {})]
            if absent:
                raise CheckpointError(f"{path}: the optimizer state has no '{key}' for '{absent[0]}' after "
                                      f"{step} steps")
    return state
