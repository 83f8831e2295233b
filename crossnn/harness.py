"""Train one experiment on several backends from the same data, initial parameters and batch plan,
recording per-step losses and parameter snapshots. A backend that fails or produces NaN/Inf stops
with its step reported; the other runs go on."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from crossnn import backends
from crossnn.data import Dataset, load_dataset
from crossnn.errors import BackendError, CrossnnError, DataError
from crossnn.metrics import accuracy
from crossnn.params import Params, cast, initial_parameters
from crossnn.plan import BatchPlan, default_snapshot_every
from crossnn.spec import Experiment

Progress = Callable[["RunRecord", int, int], None]


@dataclass(frozen=True)
class RunSpec:
    """One lowering to run: backend, dtype, device and mode (None: the backend's default)."""

    backend: str
    dtype: str = "float64"
    device: str = "cpu"
    mode: str | None = None

    @property
    def label(self) -> str:
        return " ".join(part for part in (self.backend, self.dtype, self.device, self.mode) if part)


@dataclass
class RunRecord:
    """What one run produced. status: "ok", "nonfinite" (stopped at the step named in message) or
    "error". snapshots maps a step count to the parameters after that many updates (0 = initial)."""

    spec: RunSpec
    version: str = ""
    description: str = ""
    status: str = "ok"
    message: str = ""
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    snapshots: dict[int, Params] = field(default_factory=dict)
    build_seconds: float = 0.0
    train_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    traceback: str = ""

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    @property
    def final_params(self) -> Params:
        return self.snapshots[max(self.snapshots)] if self.snapshots else {}

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class RunResult:
    experiment: Experiment
    dataset: Dataset
    plan: BatchPlan
    initial_params: Params
    snapshot_every: int
    reference: RunRecord
    records: list[RunRecord]  # the runs asked for, in order (the reference run among them if asked)


def reference_spec() -> RunSpec:
    return RunSpec(backends.reference().name, "float64", "cpu", None)


def train(experiment: Experiment, runs: Sequence[RunSpec], *, snapshot_every: int | None = None,
          progress: Progress | None = None, dataset: Dataset | None = None,
          initial_params: Params | None = None, reference: RunRecord | None = None) -> RunResult:
    """Run every RunSpec (plus the NumPy float64 reference, always) and return all records.

    initial_params replaces the spec's initializers (e.g. weights taken from a user's model);
    reference reuses a reference run made earlier with the same arguments.
    """
    dataset = dataset if dataset is not None else load_dataset(experiment)
    params0 = initial_parameters(experiment)
    if initial_params is not None:
        params0 = _checked_override(params0, initial_params)
    plan = BatchPlan.for_experiment(experiment, dataset.n)
    every = snapshot_every or default_snapshot_every(plan.steps)

    resolved = [_resolve(spec) for spec in runs]
    ref_spec = _resolve(reference_spec())
    for name in sorted({s.backend for s in [ref_spec, *resolved]}, key=lambda n: backends.get(n).import_order):
        backends.get(name).prepare()

    ref_record = reference or run_one(experiment, ref_spec, params0, dataset, plan, every, progress)
    records = [ref_record if spec == ref_spec else run_one(experiment, spec, params0, dataset, plan, every, progress)
               for spec in resolved]
    return RunResult(experiment, dataset, plan, params0, every, ref_record, records)


def _checked_override(expected: Params, given: Params) -> Params:
    if set(given) != set(expected):
        missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        raise DataError(f"initial parameters do not match the model: missing {missing or 'none'}, "
                        f"unexpected {extra or 'none'}")
    out = {}
    for name, value in expected.items():
        array = np.asarray(given[name], dtype=np.float64)
        if array.shape != value.shape:
            raise DataError(f"initial parameter {name}: shape {array.shape}, the model needs {value.shape}")
        out[name] = array
    return out


def _resolve(spec: RunSpec) -> RunSpec:
    """Check the backend, dtype and mode exist; fill in the default mode."""
    backend = backends.get(spec.backend)
    if spec.dtype not in backend.dtypes:
        raise BackendError(f"backend '{spec.backend}' has no dtype '{spec.dtype}'; it has {', '.join(backend.dtypes)}")
    mode = spec.mode or backend.modes[0]
    if mode not in backend.modes:
        raise BackendError(f"backend '{spec.backend}' has no mode '{mode}'; it has {', '.join(backend.modes)}")
    return RunSpec(spec.backend, spec.dtype, spec.device, mode)


def run_one(experiment: Experiment, spec: RunSpec, params0: Params, dataset: Dataset, plan: BatchPlan,
            every: int, progress: Progress | None = None) -> RunRecord:
    backend = backends.get(spec.backend)
    record = RunRecord(spec, version=backend.version())
    losses: list[np.ndarray] = []
    try:
        start = time.perf_counter()
        trainer = backend.build(experiment, cast(params0, spec.dtype), dataset, dtype=spec.dtype, device=spec.device,
                                mode=spec.mode or backend.modes[0])
        trainer.synchronize()
        record.build_seconds = time.perf_counter() - start
        record.description = trainer.describe()
        record.snapshots[0] = _float64(trainer.parameters())
        for first, stop in plan.spans(every):
            start = time.perf_counter()
            span_losses = trainer.run(plan.batches(first, stop))
            trainer.synchronize()
            record.train_seconds += time.perf_counter() - start
            losses.append(np.asarray(span_losses, dtype=np.float64))
            bad = np.flatnonzero(~np.isfinite(losses[-1]))
            if bad.size:
                step = first + int(bad[0])
                record.status, record.message = "nonfinite", f"loss is {losses[-1][bad[0]]} at step {step}; stopped"
                losses[-1] = losses[-1][: bad[0] + 1]
                break
            params = _float64(trainer.parameters())
            broken = next((name for name, value in params.items() if not np.all(np.isfinite(value))), None)
            if broken:
                record.status, record.message = "nonfinite", f"{broken} is not finite after step {stop - 1}; stopped"
                break
            record.snapshots[stop] = params
            if progress:
                record.losses = np.concatenate(losses)
                progress(record, stop, plan.steps)
        if record.ok:
            output = np.asarray(trainer.predict(dataset.x.astype(spec.dtype)))
            acc = accuracy(experiment.loss, output, dataset.y)
            if acc is not None:
                record.metrics["accuracy"] = acc
    except CrossnnError as err:
        record.status, record.message = "error", str(err)
    except Exception as err:  # a backend's own failure: keep it, keep going with the others
        record.status, record.message = "error", f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc()
    record.losses = np.concatenate(losses) if losses else np.zeros(0)
    return record


def _float64(params: Params) -> Params:
    return {name: np.array(value, dtype=np.float64) for name, value in params.items()}
