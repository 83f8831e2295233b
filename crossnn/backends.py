"""The backend contract and the registry that finds backends through entry points.

A backend is a plugin: an installable package that declares, in its pyproject.toml,

    [project.entry-points."crossnn.backends"]
    mybackend = "my_package:MyBackend"

where MyBackend subclasses `Backend`. Loading the entry point must be cheap: import the framework
inside `build` and `devices(probe=True)`, not at module level, so `crossnn list` stays fast. The core
never branches on a backend's name; what differs is declared through the attributes below.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Iterable, Sequence

import numpy as np

from crossnn.checkpoint import TrainingState
from crossnn.data import Dataset
from crossnn.errors import BackendError, UnsupportedFeature
from crossnn.spec import Default, Experiment, Model

Params = dict[str, np.ndarray]
ENTRY_POINT_GROUP = "crossnn.backends"


class Trainer(ABC):
    """One lowering of one experiment, ready to train. It holds the data (sent to its device once),
    the parameters and the optimizer state; batches arrive as index arrays into that data."""

    @abstractmethod
    def step(self, batch: np.ndarray) -> float:
        """One training step on the samples `batch`; returns the loss before the update."""

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        """Several steps; returns their losses as float64. Backends override this to avoid a
        device-to-host copy per step."""
        return np.array([float(self.step(batch)) for batch in batches], dtype=np.float64)

    @abstractmethod
    def parameters(self) -> Params:
        """Current parameters, canonical names and layout, as NumPy arrays of the run's dtype."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model output for x (N, inputs), as a NumPy array."""

    def synchronize(self) -> None:
        """Block until queued device work is done (for timing)."""

    def state(self) -> TrainingState:
        """Steps done, parameters and optimizer state, canonical names and layout (see
        crossnn.checkpoint for the optimizer slot names)."""
        raise BackendError("this backend cannot export its training state")

    def load_state(self, state: TrainingState) -> None:
        """Continue from `state`: parameters, optimizer buffers and counters, steps done (which fix
        the learning-rate schedule and the dropout masks of the next steps). Copy what you load: the
        same state may be handed to other runs."""
        raise BackendError("this backend cannot resume from a training state")

    def describe(self) -> str:
        """A short text of how this lowering runs (shown in reports)."""
        return ""


class Backend(ABC):
    """A framework lowering. Subclasses set the class attributes and implement `build`."""

    name: ClassVar[str]
    #: the NumPy float64 run every other run is compared against
    reference: ClassVar[bool] = False
    #: modules that must be importable (checked cheaply, without importing them)
    requires: ClassVar[tuple[str, ...]] = ()
    #: distributions whose installed version is the framework version, first found wins
    distributions: ClassVar[tuple[str, ...]] = ()
    #: how to install what `requires`
    install_hint: ClassVar[str] = ""
    #: execution modes; the first is the default
    modes: ClassVar[tuple[str, ...]] = ("default",)
    #: one line per mode saying what it does (shown in benchmark reports)
    mode_notes: ClassVar[dict[str, str]] = {}
    #: the fastest honest modes (parity kept), best first: --quick benchmarks, beside the default, the
    #: first of them that runs on each device
    fast_modes: ClassVar[tuple[str, ...]] = ()
    #: modes that run on some device kinds only ("cpu", "gpu"); the others run on every device
    mode_device_kinds: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: catalog entries (crossnn.differences) this backend can lower the framework's native way
    #: instead of the spec's, with one line each on what the native lowering uses
    native_entries: ClassVar[dict[str, str]] = {}
    #: the framework's name in the catalog's tables (e.g. "PyTorch"); empty: the backend's name
    title: ClassVar[str] = ""
    #: this framework's side of catalog entries that do not state it (entry id -> formula or default),
    #: so a new backend adds its column to the catalog without editing crossnn.differences
    catalog_sides: ClassVar[dict[str, str]] = {}
    #: framework defaults this backend's preset(s) add to catalog entries (entry id -> Defaults, see
    #: crossnn.spec.presets), e.g. {"adam-epsilon": (Default(Adam, "eps", {"optax": 1e-8}),)}
    catalog_defaults: ClassVar[dict[str, tuple[Default, ...]]] = {}
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")
    #: backends are prepared in ascending order (torch must be imported before tensorflow)
    import_order: ClassVar[int] = 50

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here, or None. Does not import the framework."""
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                hint = f" ({self.install_hint})" if self.install_hint else ""
                return f"{module} is not installed{hint}"
        return None

    def version(self) -> str:
        for dist in self.distributions:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "unknown"

    def devices(self, probe: bool = False) -> tuple[str, ...]:
        """Device names ("cpu", "cuda:0", ...). Without `probe`, a cheap guess that imports nothing."""
        return ("cpu",)

    def check_device(self, device: str) -> None:
        """Raise a one-line BackendError unless this backend can train on `device` here (called after
        `prepare`, before any training)."""
        if device not in ("cpu", "cpu:0"):
            raise BackendError(f"backend '{self.name}' has no device '{device}'; it runs on the cpu")

    def prepare(self) -> None:
        """Import and configure the framework (threads, determinism). Called before any build, through
        crossnn.backends.prepare, which turns a failure here into an unavailable backend."""

    def threads(self) -> int | None:
        """The intra-op threads this framework uses in this process now (the threads one operation, a
        matrix product, may use), or None when unknown. Called after `prepare`; recorded per run."""
        return None

    def set_threads(self, n: int) -> None:
        """Use `n` intra-op threads from now on in this process (crossnn run --threads, crossnn.run's
        threads=). Called after `prepare`, before `build`. Raise a one-line BackendError when the
        framework cannot take that count now, or offers no way to set it."""
        raise BackendError(f"backend '{self.name}' cannot set its thread count")

    def mode_unavailable(self, mode: str) -> str | None:
        """Why `mode` cannot run with the installed framework (e.g. a kernel library this build
        lacks), or None. Called after `prepare`."""
        return None

    def runtime(self) -> dict[str, object]:
        """Settings that affect speed or numerics, for benchmark records (threads, TF32, ...).
        Called after `prepare`."""
        return {}

    def tutorial(self, experiment: Experiment, params: Params, data: Dataset, *, dtype: str,
                 device: str) -> Trainer:
        """The framework's own tutorial-style training loop for `experiment`, written by hand and
        sharing no code with the lowering: the yardstick crossnn's overhead is measured against.
        Covers the models benchmarks use (chains of dense layers); raises UnsupportedFeature for
        anything else."""
        raise UnsupportedFeature(self.name, "a hand-written reference loop")

    def matmul_gflops(self, n: int, dtype: str, device: str) -> float:
        """Best-of-5 GFLOP/s of this framework's n×n @ n×n matrix product on `device`, synchronised."""
        raise UnsupportedFeature(self.name, "a matmul benchmark")

    def import_model(self, model) -> tuple[Model, Params] | None:
        """A native model of this framework as (spec Model, canonical float64 parameters), or None
        when `model` is not one of this framework's models."""
        return None

    def facts(self) -> dict[str, object]:
        """Measured facts of the installed framework that catalog entries check (defaults, layouts,
        formulas run on fixed inputs), by the keys crossnn.differences documents. Imports the framework."""
        return {}

    def script(self, experiment: Experiment, params: Params, data: Dataset, side_file: str | None = None) -> str:
        """A standalone Python script that trains `experiment` in this framework the tutorial way from
        `params` and `data` and prints the final parameters as JSON, reproducing this backend's lowering.
        Assemble it from the registry entries' script text and crossnn.codegen's shared parts (data last;
        side_file: the name of the .npz beside the script that holds codegen.side_arrays, else the arrays
        are written into the script)."""
        raise UnsupportedFeature(self.name, "emitting a script")

    def export_native(self, experiment: Experiment, state: TrainingState, path) -> str:
        """Write `state` in the framework's own checkpoint format (layout converted); return what the
        file holds, in a few words (e.g. whether the optimizer state and step are in it)."""
        raise UnsupportedFeature(self.name, "native checkpoint export")

    def import_native(self, experiment: Experiment, path) -> TrainingState:
        """Read a checkpoint in the framework's own format back into a training state."""
        raise UnsupportedFeature(self.name, "native checkpoint import")

    @abstractmethod
    def build(self, experiment: Experiment, params: Params, data: Dataset, *,
              dtype: str, device: str, mode: str, native: frozenset[str] = frozenset()) -> Trainer:
        """A trainer for `experiment`, starting from `params` (canonical layout, already cast to
        `dtype`), training on `data` (float64; cast x and float targets to `dtype`). `native` names
        catalog entries to lower with the framework's own built-ins and defaults instead of the
        spec's formulas (the "native" flavour); entries the backend does not know are ignored."""


@dataclass(frozen=True)
class BackendEntry:
    """A discovered plugin: the backend, or the reason it cannot be used. `broken`: its framework is
    installed but failed to import or start (found by `prepare`)."""

    name: str
    backend: Backend | None
    reason: str | None
    broken: bool = False

    @property
    def available(self) -> bool:
        return self.backend is not None and self.reason is None


@lru_cache(maxsize=1)
def discover() -> dict[str, BackendEntry]:
    """Every plugin in the entry-point group, reference first, then by name. A plugin that fails to
    load is listed with its error; the others are unaffected."""
    entries = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
            backend = cls()
            if not isinstance(backend, Backend):
                raise TypeError(f"{ep.value} is not a crossnn Backend")
            entries.append(BackendEntry(ep.name, backend, backend.unavailable_reason()))
        except Exception as err:  # a broken plugin must not take the others down
            entries.append(BackendEntry(ep.name, None, f"plugin failed to load: {type(err).__name__}: {err}"))
    entries.sort(key=lambda e: (not (e.backend is not None and e.backend.reference), e.name))
    return {e.name: e for e in entries}


def get(name: str, option: str | None = None) -> Backend:
    """An available backend by name, or a BackendError saying why not (after `option: `, the argument
    the user named it in, when given)."""
    entries = discover()
    head = f"{option}: " if option else ""
    if name not in entries:
        raise BackendError(f"{head}unknown backend '{name}'; installed: {', '.join(entries) or 'none'}")
    entry = entries[name]
    if not entry.available:
        raise BackendError(f"{head}backend '{name}' is unavailable: {entry.reason}")
    return entry.backend  # type: ignore[return-value]


def prepare(names: Iterable[str]) -> dict[str, str]:
    """Import and configure the frameworks of the backends `names` (Backend.prepare), in import order.
    A backend whose framework fails there is unavailable from then on, with the reason (see get and
    available), and is not tried again. Returns the reasons of those among `names` that failed, now
    or before; unknown or uninstalled names raise BackendError."""
    entries = discover()
    chosen = {name: entries[name].backend if name in entries and entries[name].broken else get(name)
              for name in names}
    failed = {}
    for name, backend in sorted(chosen.items(), key=lambda item: item[1].import_order):
        if entries[name].broken:
            failed[name] = entries[name].reason
            continue
        try:
            backend.prepare()
        except Exception as err:  # a broken install must not take the other backends down
            failed[name] = _failure(backend, err)
            entries[name] = BackendEntry(name, backend, failed[name], broken=True)
    return failed


def _failure(backend: Backend, err: Exception) -> str:
    """One line on why `backend` could not be prepared: its framework failed to import (the error came
    from importing a module) or to start (configuring it)."""
    framework = backend.requires[0] if backend.requires else backend.name
    importing = isinstance(err, ImportError) or any(
        frame.f_code.co_name == "<module>" for frame, _ in traceback.walk_tb(err.__traceback__))
    return f"{framework} failed to {'import' if importing else 'start'}: {type(err).__name__}: {err}"


def available() -> list[str]:
    return [name for name, entry in discover().items() if entry.available]


def reference() -> Backend:
    for entry in discover().values():
        if entry.backend is not None and entry.backend.reference and entry.available:
            return entry.backend
    raise BackendError("no reference backend is installed (the numpy backend ships with crossnn)")
