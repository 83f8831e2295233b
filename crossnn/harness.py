"""Train one experiment on several backends from the same data, initial parameters and batch plan,
recording per-step losses and parameter snapshots. A backend that fails or produces NaN/Inf stops
with its step reported; the other runs go on."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from crossnn import backends
from crossnn.data import Dataset, load_dataset
from crossnn.errors import BackendError, CrossnnError, DataError, SpecError
from crossnn.checkpoint import TrainingState
from crossnn.memory import check_parameters, check_training
from crossnn.metrics import metric_values
from crossnn.params import Params, cast, initial_parameters
from crossnn.plan import BatchPlan, default_snapshot_every
from crossnn.spec import Experiment
from crossnn.validate import check_count

Progress = Callable[["RunRecord", int, int], None]


@dataclass(frozen=True)
class RunSpec:
    """One lowering to run: backend, dtype, device and mode (None: the backend's default); `native`
    names catalog entries lowered the framework's own way instead of the spec's (crossnn.differences)."""

    backend: str
    dtype: str = "float64"
    device: str = "cpu"
    mode: str | None = None
    native: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        flavor = "native" if self.native else None
        return " ".join(part for part in (self.backend, self.dtype, self.device, self.mode, flavor) if part)


@dataclass(repr=False)
class RunRecord:
    """What one run produced. status: "ok", "nonfinite" (stopped at the step named in message) or
    "error". snapshots maps a step count to the parameters after that many updates (0 = initial).
    threads: the framework's intra-op threads during the run (None: unknown)."""

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
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch metrics
    start_step: int = 0  # losses[i] belongs to step start_step + i
    end_step: int | None = None  # the step count the run was asked to reach
    final_state: TrainingState | None = None
    traceback: str = ""
    threads: int | None = None

    def __repr__(self) -> str:
        loss = f", final loss {self.losses[-1]:.6g}" if len(self.losses) else ""
        message = f": {self.message}" if self.message else ""
        values = sum(v.size for v in self.final_params.values())
        return (f"<RunRecord {self.spec.label}: {self.status}{message}, {self.steps_done} steps{loss}, "
                f"{len(self.final_params)} tensors of {values} values, {len(self.snapshots)} snapshots>")

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    @property
    def final_params(self) -> Params:
        return self.snapshots[max(self.snapshots)] if self.snapshots else {}

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(repr=False)
class RunResult:
    """Every run of one experiment. threads: the intra-op thread count the runs were asked to use
    (None: each framework's own)."""

    experiment: Experiment
    dataset: Dataset
    plan: BatchPlan
    initial_params: Params
    snapshot_every: int
    reference: RunRecord
    records: list[RunRecord]  # the runs asked for, in order (the reference run among them if asked)
    threads: int | None = None
    notes: list[str] = field(default_factory=list)  # what the user should know about how the runs were made

    def __repr__(self) -> str:
        return (f"<RunResult {self.experiment.name}: {len(self.records)} run(s) "
                f"({', '.join(r.spec.label for r in self.records) or 'none'}) against {self.reference.spec.label}, "
                f"{self.plan.steps} steps, snapshots every {self.snapshot_every}>")


def reference_spec() -> RunSpec:
    return RunSpec(backends.reference().name, "float64", "cpu", None)


def train(experiment: Experiment, runs: Sequence[RunSpec], *, snapshot_every: int | None = None,
          progress: Progress | None = None, dataset: Dataset | None = None,
          initial_params: Params | None = None, reference: RunRecord | None = None,
          resume: TrainingState | None = None, stop_after: int | None = None,
          threads: int | None = None, threads_option: str = "threads") -> RunResult:
    """Run every RunSpec (plus the NumPy float64 reference, always: from step 0, or from `resume` when
    the reference does not reach that state) and return all records.

    initial_params replaces the spec's initializers (e.g. weights taken from a user's model);
    reference reuses a reference run made earlier with the same arguments; resume starts the
    requested runs from a saved training state; stop_after ends every run, the reference included,
    after that many steps in all (the requested runs' final state is kept in RunRecord.final_state);
    threads sets every framework's intra-op threads (Backend.set_threads) before training (a backend
    that cannot is an error naming `threads_option`, the argument as the caller's user wrote it). The runs
    of a backend whose framework fails to import or start (backends.prepare) get an "error" record
    saying why; the others go on. Counts are checked (crossnn.validate) and the run's arrays must fit
    in memory (crossnn.memory) before anything is built.
    """
    check_count(snapshot_every, "snapshot_every")
    check_count(stop_after, "stop_after")
    check_count(threads, "threads")
    dataset = dataset if dataset is not None else load_dataset(experiment)
    plan = BatchPlan.for_experiment(experiment, dataset.n)
    check_stop(stop_after, plan.steps, resume.step if resume is not None else None, "stop_after")
    _check_batches(experiment, plan)
    check_parameters(experiment)
    check_training(experiment, plan.batch_size, (stop_after or plan.steps) - (resume.step if resume else 0))
    params0 = initial_parameters(experiment)
    if initial_params is not None:
        params0 = _checked_override(params0, initial_params)
    every = snapshot_every or default_snapshot_every(plan.steps)

    ref_spec = reference_spec()
    failed = backends.prepare({ref_spec.backend, *(spec.backend for spec in runs)})  # frameworks that fail to load
    if ref_spec.backend in failed:
        raise BackendError(f"the reference backend '{ref_spec.backend}' is unavailable: {failed[ref_spec.backend]}")
    ref_spec, *resolved = [_resolve(spec) for spec in [ref_spec, *runs]]
    if threads is not None:
        for name in sorted({ref_spec.backend, *(spec.backend for spec in resolved)} - set(failed)):
            try:
                backends.get(name).set_threads(threads)
            except BackendError as err:
                raise BackendError(f"{threads_option}: {err}") from None

    # the reference stops where the other runs stop, and snapshots where they start, so parity sees those states
    marks = frozenset({resume.step} if resume is not None else ())
    notes = []

    def from_start():
        return run_one(experiment, ref_spec, params0, dataset, plan, every, progress, stop_after=stop_after,
                       marks=marks)

    ref_record = reference
    if reference is None and resume is not None:
        # the reference's state at the checkpoint's step: the initial parameters at step 0 (no training)
        ref_record = None if resume.step == 0 else from_start()
        at = params0 if ref_record is None else ref_record.snapshots.get(resume.step)
        off = _off_reference(at, resume) if at is not None else None
        if off:  # e.g. a user's own weights imported at step 0, or a float32 state: compare what follows it
            notes.append(f"the checkpoint's state at step {resume.step} is not the reference's ({off}): the "
                         f"reference resumes from the checkpoint too, and parity covers the steps after it")
            ref_record = run_one(experiment, ref_spec, params0, dataset, plan, every, progress, resume=resume,
                                 stop_after=stop_after)
    ref_record = ref_record or from_start()
    start = resume.step if resume is not None else 0
    records = [_not_run(spec, failed[spec.backend]) if spec.backend in failed else
               ref_record if spec == ref_spec and ref_record.start_step == start else
               run_one(experiment, spec, params0, dataset, plan, every, progress, resume=resume, stop_after=stop_after)
               for spec in resolved]
    return RunResult(experiment, dataset, plan, params0, every, ref_record, records, threads, notes)


def _off_reference(at: Params, resume: TrainingState) -> str | None:
    """The first parameter of a checkpoint farther than the float64 tolerance from the reference's own
    state at the checkpoint's step ("<name> max abs <d>"), or None when they agree (a checkpoint of
    this spec's run: the reference from step 0 then checks that resuming equals never stopping)."""
    from crossnn.parity import difference, tolerance_for  # parity reads harness' records

    tol = tolerance_for("float64", "cpu")
    for name, value in resume.params.items():
        if name in at:
            diff, scale = difference(np.asarray(value, dtype=np.float64), np.asarray(at[name], dtype=np.float64))
            if tol.exceeded(diff, scale):
                return f"{name} max abs {diff:.1e}"
    return None


def check_stop(stop_after: int | None, steps: int, resume_step: int | None, option: str) -> None:
    """A checkpoint's step lies in the plan, and a stop step in 1..steps after it; the error names
    `option` (--stop-after on the command line, stop_after in Python)."""
    if resume_step is not None and not 0 <= resume_step <= steps:
        raise DataError(f"the checkpoint is at step {resume_step}, outside this plan's {steps} steps")
    if stop_after is not None and not 0 < stop_after <= steps:
        raise DataError(f"{option}: must be in 1..{steps} (the plan's steps), got {stop_after}")
    if stop_after is not None and resume_step is not None and stop_after <= resume_step:
        raise DataError(f"{option}: must be > {resume_step}, the checkpoint's step, got {stop_after}")


def _check_batches(experiment: Experiment, plan: BatchPlan) -> None:
    """Every layer can train on the plan's smallest batch (batch_norm needs two values per channel)."""
    rows = min(plan.batch_sizes)
    for node in experiment.model.nodes:
        problem = node.layer.batch_problem(node.input_shapes, rows)
        if problem:
            fix = "set drop_last = true or choose another batch_size" if rows < plan.batch_size else \
                "choose a larger batch_size"
            raise SpecError(f"{problem}; {fix}", ("train", "batch_size"), experiment.source)


def _not_run(spec: RunSpec, reason: str) -> RunRecord:
    """The record of a run whose backend's framework failed to import or start."""
    return RunRecord(spec, version=backends.discover()[spec.backend].backend.version(), status="error",
                     message=reason)


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
    """Check the dtype and mode exist (the backend is known: backends.prepare checked it); fill in the
    default mode."""
    backend = backends.discover()[spec.backend].backend
    if spec.dtype not in backend.dtypes:
        raise BackendError(f"backend '{spec.backend}' has no dtype '{spec.dtype}'; it has {', '.join(backend.dtypes)}")
    mode = spec.mode or backend.modes[0]
    if mode not in backend.modes:
        raise BackendError(f"backend '{spec.backend}' has no mode '{mode}'; it has {', '.join(backend.modes)}")
    native = frozenset(spec.native) & frozenset(backend.native_entries)
    return RunSpec(spec.backend, spec.dtype, spec.device, mode, native)


#: the most steps handed to a trainer at once, so that the batch index arrays held at a time stay bounded
MAX_STEPS_PER_CALL = 4096


def _boundaries(plan: BatchPlan, start: int, stop: int, every: int, per_epoch: bool,
                marks: frozenset[int]) -> Iterator[tuple[int, int]]:
    """Spans [a, b) from start to stop, in order, that end at every snapshot step (multiples of
    `every`, and `marks`), with per_epoch at every epoch end, and at least every MAX_STEPS_PER_CALL
    steps. Made one at a time: a plan of 10^12 steps costs nothing until it is trained."""
    a = start
    while a < stop:
        b = min(stop, (a // every + 1) * every, a + MAX_STEPS_PER_CALL, *(m for m in marks if m > a))
        if per_epoch:
            b = min(b, (a // plan.steps_per_epoch + 1) * plan.steps_per_epoch)
        yield a, b
        a = b


def run_one(experiment: Experiment, spec: RunSpec, params0: Params, dataset: Dataset, plan: BatchPlan,
            every: int, progress: Progress | None = None, *, resume: TrainingState | None = None,
            stop_after: int | None = None, marks: frozenset[int] = frozenset()) -> RunRecord:
    """Train one run from params0 (or from `resume`) to the plan's end (or `stop_after`), snapshotting
    every `every` steps, at the steps in `marks`, and at its first and last step."""
    backend = backends.get(spec.backend)
    record = RunRecord(spec, version=backend.version())
    losses: list[np.ndarray] = []
    start_step = resume.step if resume is not None else 0
    stop_step = stop_after if stop_after is not None else plan.steps
    record.start_step, record.end_step = start_step, stop_step
    track = bool(experiment.train.metrics)
    try:
        start = time.perf_counter()
        initial = resume.params if resume is not None else params0
        options = {"native": spec.native} if spec.native else {}
        trainer = backend.build(experiment, cast(initial, spec.dtype), dataset, dtype=spec.dtype, device=spec.device,
                                mode=spec.mode or backend.modes[0], **options)
        if resume is not None:
            trainer.load_state(resume.as_float64())  # a copy: backends may update what they load in place
        trainer.synchronize()
        record.build_seconds = time.perf_counter() - start
        record.description, record.threads = trainer.describe(), backend.threads()
        record.snapshots[start_step] = _float64(trainer.parameters())
        for first, stop in _boundaries(plan, start_step, stop_step, every, track, marks):
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
            if stop % every == 0 or stop == stop_step or stop in marks:
                record.snapshots[stop] = params
            if track and stop % plan.steps_per_epoch == 0:
                for name, value in evaluate(experiment, trainer, dataset, spec.dtype).items():
                    record.history.setdefault(name, []).append(value)
            if progress:
                record.losses = np.concatenate(losses)
                progress(record, stop, stop_step)
        if record.ok:
            record.metrics.update(evaluate(experiment, trainer, dataset, spec.dtype, final=True))
            if stop_after is not None:
                record.final_state = trainer.state().as_float64()
    except CrossnnError as err:
        record.status, record.message = "error", str(err)
    except Exception as err:  # a backend's own failure: keep it, keep going with the others
        record.status, record.message = "error", f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc()
    record.losses = np.concatenate(losses) if losses else np.zeros(0)
    return record


def evaluate(experiment: Experiment, trainer, dataset: Dataset, dtype: str, final: bool = False) -> dict[str, float]:
    """The spec's metrics on the training samples and, as val_<metric>, on the validation samples.
    With final, accuracy is always included for classification losses."""
    names = set(experiment.train.metrics) | ({"accuracy"} if final else set())
    out = {}
    for prefix, part in (("", dataset), ("val_", dataset.validation)):
        if part is None:
            continue
        values = metric_values(experiment.loss, sorted(names), np.asarray(trainer.predict(part.x.astype(dtype))),
                               part.y)
        out.update({prefix + name: value for name, value in values.items()})
    return out


def _float64(params: Params) -> Params:
    return {name: np.array(value, dtype=np.float64) for name, value in params.items()}
