"""Time to a metric (the MLPerf / DAWNBench measure): `crossnn bench --to-metric accuracy=0.97 SPEC`.

Each backend × mode × dtype trains the spec until its held-out metric (the validation split's),
evaluated at every epoch end, first reaches the target, for at most the spec's epochs. `runs` runs
use different data orders: run r draws its batch plan from the seed `spec.seed + r` (run 0 is the
spec's own order); the data, the validation split and the initial parameters stay the spec's, so
the runs of one order are the same computation on every backend. Of the runs that reached the
target, the fastest and the slowest (by seconds) are dropped when at least three reached, and the
mean and spread (max − min) of the rest are reported in training seconds and in epochs. Training
seconds are the steps only, the device synchronised at every epoch end; building the trainer and
evaluating are timed apart.

Backends whose math is the same take the same number of epochs for the same data order. In float64
parity holds to about 1e-12, so this is checked: for every data order, every backend and mode must
reach the target at the same epoch (or all miss it). In float32 rounding may move a crossing by an
epoch, so the epochs are shown, not checked.

Each backend runs in a fresh process of its own (as `crossnn bench` does), and its modes take their
runs in turn (order 0 of every mode, then order 1, ...), so a disturbance of the machine falls on all
of them alike; the machine's steadiness around every run is measured (crossnn.bench.steadiness) and
a run timed on a busy machine is marked.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import crossnn
from crossnn import backends
from crossnn.bench import machine, steadiness
from crossnn.bench.runner import Progress, offers
from crossnn.bench.select import select
from crossnn.data import load_dataset
from crossnn.errors import SpecError
from crossnn.metrics import metric_values
from crossnn.params import cast, initial_parameters
from crossnn.plan import BatchPlan
from crossnn.spec import Experiment

#: runs per backend × mode by default (MLPerf's count for small benchmarks)
RUNS = 5
#: dtypes in which equal epochs across backends is checked, not only shown
CHECKED_DTYPES = ("float64",)


@dataclass(frozen=True)
class MetricTarget:
    """A metric and the value it must reach: at least `value` when higher is better, at most otherwise."""

    metric: str
    value: float
    higher_is_better: bool

    def reached(self, value: float) -> bool:
        return value >= self.value if self.higher_is_better else value <= self.value

    def __str__(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.value:g}"


def known_metrics(experiment: Experiment) -> dict[str, tuple[bool, float, float]]:
    """The metrics a target may name for this spec's loss: name -> (higher is better, lowest and
    highest value a target may have)."""
    if experiment.loss.outputs == "value":
        return {"mae": (False, 0.0, math.inf)}
    return {"accuracy": (True, 0.0, 1.0)}


def parse_target(text: str, experiment: Experiment) -> MetricTarget:
    """METRIC=VALUE, checked against the spec: a metric its loss has, a value in that metric's range
    (accuracy in (0, 1], mae > 0), and held-out samples to measure it on."""
    name, sep, number = text.partition("=")
    name, number = name.strip(), number.strip()
    known = known_metrics(experiment)
    if not sep or not name or not number:
        raise SpecError(f"--to-metric: write METRIC=VALUE (e.g. {next(iter(known))}=0.97), got '{text}'")
    if name not in known:
        raise SpecError(f"--to-metric: '{name}' is not a metric of {experiment.name}'s loss "
                        f"({type(experiment.loss).__name__}); use {', '.join(known)}")
    try:
        value = float(number)
    except ValueError:
        raise SpecError(f"--to-metric: '{number}' is not a number") from None
    higher, low, high = known[name]
    if not (math.isfinite(value) and low < value <= high):
        bounds = f"in ({low:g}, {high:g}]" if math.isfinite(high) else f"above {low:g}"
        raise SpecError(f"--to-metric: {name} must be {bounds}, got {number}")
    if not experiment.train.validation_split:
        raise SpecError(f"--to-metric: {experiment.name} holds no samples out; set [train] validation_split "
                        "so the metric is measured on data the model does not train on")
    return MetricTarget(name, value, higher)


@dataclass
class Run:
    """One training run to the target. epochs: the epoch at whose end the target was first reached
    (None: not within the spec's epochs, or failed); seconds: training seconds up to then."""

    backend: str
    mode: str
    dtype: str
    device: str
    order: int
    version: str = ""
    epochs: int | None = None
    seconds: float = 0.0
    build_seconds: float = 0.0
    eval_seconds: float = 0.0
    last_value: float | None = None
    status: str = "ok"           # ok | not reached | error
    message: str = ""
    calibration_seconds: list[float] = field(default_factory=list)
    others_cpu: float | None = None
    steal: float | None = None
    host: str = ""
    cpus: int = 0
    busy: list[str] = field(default_factory=list)


def train_to_target(experiment: Experiment, target: MetricTarget, backend_name: str, mode: str, dtype: str,
                    device: str, order: int, data, params) -> Run:
    """Train from `params` on the batch plan of data order `order` until the held-out metric reaches
    the target at an epoch end, or the spec's epochs run out."""
    backend = backends.get(backend_name)
    run = Run(backend_name, mode, dtype, device, order, version=backend.version())
    t = experiment.train
    plan = BatchPlan(data.n, t.batch_size, t.epochs, t.shuffle, t.drop_last, experiment.seed + order)
    held_out = data.validation
    try:
        start = time.perf_counter()
        trainer = backend.build(experiment, cast(params, dtype), data, dtype=dtype, device=device, mode=mode)
        trainer.synchronize()
        run.build_seconds = time.perf_counter() - start
        for epoch in range(plan.epochs):
            start = time.perf_counter()
            trainer.run(plan.batches(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch))
            trainer.synchronize()
            run.seconds += time.perf_counter() - start
            start = time.perf_counter()
            output = trainer.predict(held_out.x.astype(dtype))
            run.last_value = metric_values(experiment.loss, [target.metric], output, held_out.y).get(target.metric)
            run.eval_seconds += time.perf_counter() - start
            if run.last_value is not None and target.reached(run.last_value):
                run.epochs = epoch + 1
                return run
        run.status, run.message = "not reached", f"{target.metric} {run.last_value:.4g} after {plan.epochs} epochs"
    except Exception as err:  # a failing backend must not stop the others
        run.status, run.message = "error", f"{type(err).__name__}: {err}"
    return run


def run_backend(experiment: Experiment, target: MetricTarget, backend_name: str, modes: Sequence[str] | None,
                dtypes: Sequence[str], device: str, runs: int, *, say: Progress) -> list[Run]:
    """Every run of one backend (in the calling process): its modes (default: the tutorial-style one
    and its fast one for the device) take their runs in turn, data order by data order."""
    failed = backends.prepare([backend_name])
    if failed:
        return [Run(backend_name, "every mode", dtype, device, order, status="error", message=failed[backend_name])
                for dtype in dtypes for order in range(runs)]
    targets, skipped = select(offers([backend_name]), [device], modes, quick=modes is None)
    for s in skipped:
        say(f"  skipped {s.backend} {s.device} {s.mode}: {s.reason}")
    data, params = load_dataset(experiment), initial_parameters(experiment)
    host = machine.describe()["host"]
    out = []
    for dtype in dtypes:
        for order in range(runs):
            for t in targets:
                monitor = steadiness.Monitor()
                monitor.calibrate()
                run = train_to_target(experiment, target, backend_name, t.mode, dtype, t.device, order, data, params)
                monitor.calibrate()
                measured = monitor.finish()
                run.calibration_seconds, run.others_cpu, run.steal = (measured.calibration_seconds,
                                                                      measured.others_cpu, measured.steal)
                run.host, run.cpus = host, measured.cpus
                out.append(run)
                reached = f"epoch {run.epochs}, {run.seconds:.3f} s" if run.epochs else run.message
                say(f"  {backend_name} {t.mode} {dtype} order {order}: {reached}")
    return out


@dataclass
class Summary:
    """The runs of one backend × mode × dtype: how many reached the target, and the mean and spread
    (max - min) of seconds and epochs over the kept runs (fastest and slowest dropped when >= 3 reached)."""

    backend: str
    mode: str
    dtype: str
    runs: int
    reached: int
    kept: int
    seconds_mean: float | None
    seconds_spread: float | None
    epochs_mean: float | None
    epochs_spread: int | None
    epochs_by_order: list[int | None]
    busy: bool


def summarise(runs: Sequence[Run]) -> list[Summary]:
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.backend, run.mode, run.dtype), []).append(run)
    out = []
    for (backend, mode, dtype), members in groups.items():
        members = sorted(members, key=lambda r: r.order)
        reached = sorted((r for r in members if r.epochs is not None), key=lambda r: r.seconds)
        kept = reached[1:-1] if len(reached) >= 3 else reached
        seconds = [r.seconds for r in kept]
        epochs = [r.epochs for r in kept]
        out.append(Summary(backend, mode, dtype, len(members), len(reached), len(kept),
                           sum(seconds) / len(seconds) if kept else None, max(seconds) - min(seconds) if kept else None,
                           sum(epochs) / len(epochs) if kept else None, max(epochs) - min(epochs) if kept else None,
                           [r.epochs for r in members], any(r.busy for r in kept)))
    return out


def epoch_checks(summaries: Sequence[Summary]) -> list[tuple[str, str]]:
    """(verdict, text) per dtype: in CHECKED_DTYPES "pass" when every backend × mode reached the target at
    the same epoch for every data order, else "FAIL" naming the differences; otherwise "shown"."""
    out = []
    for dtype in dict.fromkeys(s.dtype for s in summaries):
        members = [s for s in summaries if s.dtype == dtype]
        if len(members) < 2:
            continue
        orders = max(len(s.epochs_by_order) for s in members)
        differing = []
        for order in range(orders):
            seen = {f"{s.backend} {s.mode}": (s.epochs_by_order[order] if order < len(s.epochs_by_order) else None)
                    for s in members}
            if len(set(seen.values())) > 1:
                differing.append(f"order {order}: " + ", ".join(f"{k} {v if v is not None else '-'}"
                                                                for k, v in seen.items()))
        names = ", ".join(f"{s.backend} {s.mode}" for s in members)
        if dtype not in CHECKED_DTYPES:
            out.append(("shown", f"{dtype}: epochs " + ("equal" if not differing else "differ: " + "; ".join(differing))
                        + f" across {names} (not checked: {dtype} rounding may move a crossing by an epoch)"))
        elif differing:
            out.append(("FAIL", f"{dtype}: the same math took different epochs: " + "; ".join(differing)))
        else:
            out.append(("pass", f"{dtype}: {names} reached the target at the same epoch for each of the "
                                f"{orders} data orders"))
    return out


@dataclass
class ToMetricResult:
    experiment: str
    target: MetricTarget
    runs: list[Run]
    machine: dict
    runs_per_mode: int

    @property
    def summaries(self) -> list[Summary]:
        return summarise(self.runs)

    @property
    def checks(self) -> list[tuple[str, str]]:
        return epoch_checks(self.summaries)

    @property
    def passed(self) -> bool:
        return all(verdict != "FAIL" for verdict, _ in self.checks)

    def to_json(self) -> dict:
        return {"crossnn_version": crossnn.__version__, "kind": "crossnn-to-metric", "experiment": self.experiment,
                "target": {"metric": self.target.metric, "value": self.target.value,
                           "higher_is_better": self.target.higher_is_better},
                "runs_per_mode": self.runs_per_mode, "machine": self.machine,
                "summaries": [asdict(s) for s in self.summaries],
                "checks": [{"verdict": v, "text": t} for v, t in self.checks], "runs": [asdict(r) for r in self.runs]}


def time_to_metric(experiment: Experiment, target: MetricTarget | str, names: Sequence[str], dtypes: Sequence[str],
                   *, modes: Sequence[str] | None = None, runs: int = RUNS, device: str = "cpu",
                   say: Progress = print, isolate: bool = True) -> ToMetricResult:
    """Time to `target` (a MetricTarget or "METRIC=VALUE") for every backend in `names` × mode × dtype,
    `runs` data orders each; each backend in a fresh process unless not `isolate`."""
    from crossnn.bench.isolate import in_child

    if isinstance(target, str):
        target = parse_target(target, experiment)
    if runs < 1:
        raise SpecError(f"--runs: must be >= 1, got {runs}")
    say(f"{experiment.name}: time to {target} on the held-out samples, {runs} data orders per backend and mode")
    out: list[Run] = []
    for name in sorted(names, key=lambda n: backends.get(n).import_order):
        args = (experiment, target, name, modes, dtypes, device, runs)
        if not isolate:
            out += run_backend(*args, say=say)
            continue
        say(f"{name}: in a process of its own")
        outcome = in_child(run_backend, args, {}, say, None)
        out += outcome if isinstance(outcome, list) else [
            Run(name, "every mode", dtype, device, order, status="error", message=outcome)
            for dtype in dtypes for order in range(runs)]
    best = steadiness.best_calibrations(asdict(r) for r in out)
    for run in out:
        if run.status == "ok":
            run.busy = steadiness.busy_reasons(asdict(run), best.get(steadiness.calibration_key(asdict(run))))
    return ToMetricResult(experiment.name, target, out, machine.describe(), runs)


def to_metric_table(result: ToMetricResult) -> str:
    """The summary table, the runs that did not reach the target, and the epoch checks."""
    from crossnn.console import table

    def number(value, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [(s.backend, s.mode, s.dtype, f"{s.reached}/{s.runs}", s.kept,
             number(s.seconds_mean, 3) + (" !" if s.busy else ""), number(s.seconds_spread, 3),
             number(s.epochs_mean, 1), "-" if s.epochs_spread is None else s.epochs_spread,
             " ".join("-" if e is None else str(e) for e in s.epochs_by_order)) for s in result.summaries]
    lines = [f"{result.experiment}: time to {result.target} (held-out samples, evaluated at every epoch end); "
             f"{result.runs_per_mode} data orders each, the fastest and slowest dropped when at least 3 reached it",
             table(("backend", "mode", "dtype", "reached", "kept", "seconds (mean)", "spread s", "epochs (mean)",
                    "spread", "epochs per data order"), rows),
             "seconds: training steps only (device synchronised; a jit mode's first step compiles, so its "
             "compilation counts, as it does for a user), not evaluation; spread: max - min of the kept runs"]
    if any(s.busy for s in result.summaries):
        lines.append("! kept runs timed while the machine was busy, marked by "
                     + steadiness.summary((asdict(r) for r in result.runs), "run")
                     + ": as a speed comparison their seconds are " + steadiness.INCONCLUSIVE)
    for run in result.runs:
        if run.status == "error":
            lines.append(f"failed: {run.backend} {run.mode} {run.dtype} order {run.order}: {run.message}")
    lines += [f"check: {verdict}: {text}" for verdict, text in result.checks]
    return "\n".join(lines)
