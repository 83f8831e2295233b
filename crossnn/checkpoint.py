"""Training state and neutral checkpoint files that any backend can resume from.

A checkpoint is a NumPy .npz archive holding:

    format                  "crossnn-checkpoint-1"
    spec                    the experiment's spec file text (TOML)
    spec_path               the absolute path of the spec file it was read from, when it was read from
                            one: relative data paths in the spec start from that file's folder, wherever
                            the checkpoint is read (without it: the checkpoint's folder)
    step                    steps completed (the position in the batch plan; the epoch and the
                            learning-rate schedule follow from it)
    param/<name>            parameters, canonical names and layout, float64
    slot/<slot>/<name>      optimizer state per parameter, canonical layout, float64
    counter/<name>          optimizer counters (e.g. Adam's step count)

Optimizer slots by optimizer (the names PyTorch's optimizers use):
    sgd       momentum_buffer (once a step with momentum has run)
    adam(w)   exp_avg, exp_avg_sq; counter step
    rmsprop   square_avg; momentum_buffer with momentum; grad_avg when centered; counter step
    adagrad   sum; counter step
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossnn.errors import CrossnnError
from crossnn.files import open_npz, write_npz_atomic
from crossnn.params import Params
from crossnn.spec import Experiment, dumps, loads

FORMAT = "crossnn-checkpoint-1"


class CheckpointError(CrossnnError):
    """A checkpoint that cannot be used: unreadable, truncated, incomplete, or for another spec."""


@dataclass
class TrainingState:
    """Everything needed to continue training exactly: steps done, parameters, optimizer state."""

    step: int
    params: Params
    slots: dict[str, Params] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def as_float64(self) -> TrainingState:
        def cast(group: Params) -> Params:
            return {name: np.array(value, dtype=np.float64) for name, value in group.items()}

        return TrainingState(self.step, cast(self.params), {k: cast(v) for k, v in self.slots.items()},
                             dict(self.counters))


def save_checkpoint(path: Path, experiment: Experiment, state: TrainingState) -> None:
    """Write the checkpoint completely or not at all."""
    arrays: dict[str, np.ndarray] = {"format": np.array(FORMAT), "spec": np.array(dumps(experiment)),
                                     "step": np.array(state.step, dtype=np.int64)}
    if experiment.source:
        arrays["spec_path"] = np.array(str(Path(experiment.source).resolve()))
    for name, value in state.params.items():
        arrays[f"param/{name}"] = np.asarray(value, dtype=np.float64)
    for slot, values in state.slots.items():
        for name, value in values.items():
            arrays[f"slot/{slot}/{name}"] = np.asarray(value, dtype=np.float64)
    for name, value in state.counters.items():
        arrays[f"counter/{name}"] = np.array(value, dtype=np.int64)
    write_npz_atomic(Path(path), arrays)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


#: what each key of a checkpoint holds: a NumPy dtype kind (U text, i/u integer, f float) and whether
#: it is a single value
_KINDS = {"format": ("U", True), "spec": ("U", True), "step": ("iu", True),
          "param/": ("fiu", False), "slot/": ("fiu", False), "counter/": ("iu", True)}
_KIND_NAMES = {"U": "text", "iu": "an integer", "fiu": "real numbers"}


def _first_difference(saved: Experiment, given: Experiment) -> str:
    """Where two specs first differ, as "<field>: <saved value> in the checkpoint, <given value> here"."""
    from crossnn.errors import join_path
    from crossnn.spec.base import to_plain

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in [*a, *(k for k in b if k not in a)]:
                found = walk(a.get(key), b.get(key), (*path, key))
                if found:
                    return found
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                found = walk(x, y, (*path, f"[{i}]"))
                if found:
                    return found
        elif a != b:
            return path, a, b
        return None

    found = walk(to_plain(saved), to_plain(given), ())
    if found is None:
        return "they differ"
    where, a, b = found
    return f"{join_path(where)}: {_short(a)} in the checkpoint, {_short(b)} here"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_types(path: Path, contents: dict) -> None:
    """Each key holds the kind of value the format says (see _KINDS)."""
    for key, value in contents.items():
        rule = next((r for prefix, r in _KINDS.items() if key == prefix or (prefix.endswith("/") and
                                                                            key.startswith(prefix))), None)
        if rule is None:
            continue
        kinds, single = rule
        if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds or (single and value.ndim != 0):
            got = (f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray)
                   else type(value).__name__)
            raise CheckpointError(f"{path}: {key} must hold {_KIND_NAMES[kinds]}{' (one value)' if single else ''}, "
                                  f"got {got}")


def load_checkpoint(path: Path, experiment: Experiment | None = None) -> tuple[Experiment, TrainingState]:
    """Read a checkpoint; with `experiment`, also check it belongs to that spec and fits its model."""
    path = Path(path)
    try:
        with open_npz(path) as archive:
            contents = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({err.strerror or err})") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(err)})") from None
    for key in ("format", "spec", "step"):
        if key not in contents:
            raise CheckpointError(f"{path}: missing key '{key}' (not a crossnn checkpoint, or damaged)")
    _check_types(path, contents)
    if str(contents["format"]) != FORMAT:
        raise CheckpointError(f"{path}: format '{contents['format']}', expected '{FORMAT}'")
    saved = loads(str(contents["spec"]), source=f"{path}:spec")
    if "spec_path" in contents:  # relative data paths start where the spec file was
        saved = dataclasses.replace(saved, source=str(contents["spec_path"]))
    if experiment is not None and saved != experiment:
        raise CheckpointError(f"{path}: saved for a different spec ('{saved.name}'; "
                              f"{_first_difference(saved, experiment)}); resume with the spec it was saved from")
    experiment = experiment or saved
    params = {key[len("param/"):]: value for key, value in contents.items() if key.startswith("param/")}
    expected = experiment.model.parameter_inits()
    missing = [name for name in expected if name not in params]
    if missing:
        raise CheckpointError(f"{path}: missing key 'param/{missing[0]}'")
    for name, p in expected.items():
        if params[name].shape != p.shape:
            raise CheckpointError(f"{path}: param/{name} has shape {params[name].shape}, the model needs {p.shape}")
    slots: dict[str, Params] = {}
    for key, value in contents.items():
        if key.startswith("slot/"):
            _, slot, name = key.split("/", 2)
            if name not in expected or value.shape != expected[name].shape:
                raise CheckpointError(f"{path}: {key} does not match the model's parameters")
            slots.setdefault(slot, {})[name] = value
    counters = {key[len("counter/"):]: int(value) for key, value in contents.items() if key.startswith("counter/")}
    step = int(contents["step"])
    if step < 0:
        raise CheckpointError(f"{path}: step {step} is negative")
    if step > 0:  # after a step the optimizer's state must be complete
        for slot in experiment.optimizer.state_slots():
            for name in expected:
                if name not in slots.get(slot, {}):
                    raise CheckpointError(f"{path}: missing key 'slot/{slot}/{name}'")
        for counter in experiment.optimizer.state_counters():
            if counter not in counters:
                raise CheckpointError(f"{path}: missing key 'counter/{counter}'")
    return experiment, TrainingState(step, params, slots, counters)
