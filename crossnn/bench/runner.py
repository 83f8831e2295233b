"""Run a benchmark: every case × dtype × (backend, device, mode), plus each framework's hand-written
tutorial loop on the same case, the machine's matmul peak, and the settings that explain the numbers.

One row per timed trainer. Rows of the tutorial loops have mode "tutorial"; every other row carries
the ratio of its step time to the tutorial loop of the same framework, device, dtype and case,
measured in the same run: all trainers of a framework and device are built and warmed up first, then
take their repeats in turn (crossnn.bench.timing.interleave).

The matmul peak a row is a percentage of is measured in turn with it: on the CPU, NumPy's n×n product
in the row's dtype takes a turn in every round of repeats (the best of them counts), and the
framework's own n×n product (Backend.matmul_gflops) is measured in the same group, just before the
rounds. A row faster than that peak (a peak measured at a busier moment, or shapes that suit the
BLAS better than n×n) has no percentage: `above_peak` says so. The calibration kernel and CPU
accounting of crossnn.bench.steadiness watch every group; rows are marked busy at the end.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

import crossnn
from crossnn import backends
from crossnn.bench import machine, steadiness
from crossnn.bench.flops import training_flops
from crossnn.bench.select import Offer, Skipped, device_kind, select
from crossnn.bench.suites import Case
from crossnn.bench.timing import Timer, interleave
from crossnn.data import load_dataset
from crossnn.errors import BackendError, CrossnnError, UnsupportedFeature
from crossnn.params import cast, initial_parameters
from crossnn.plan import BatchPlan

TUTORIAL = "tutorial"
#: matrix size of the peak measurement
PEAK_N = 2048


@dataclass
class Row:
    suite: str
    case: str
    backend: str
    version: str
    mode: str
    device: str
    device_name: str
    dtype: str
    parameters: int
    batch_size: int
    flops_per_step: int
    seconds_per_step: float
    iqr_seconds: float
    repeats: int
    steps_per_repeat: int
    build_seconds: float
    first_step_seconds: float
    samples_per_second: float
    gflops: float
    peak_gflops: float | None
    percent_of_peak: float | None
    own_peak_gflops: float | None  # this framework's own n×n matmul on the device, same run
    percent_of_own_peak: float | None
    ratio_to_tutorial: float | None = None
    description: str = ""
    q1_seconds: float | None = None     # quartiles of the per-repeat step times
    q3_seconds: float | None = None
    above_peak: bool = False            # faster than the peak measured in turn: no percentage
    above_own_peak: bool = False
    #: where it ran: host name, cores the timing process could use, machine kind (machine.kind),
    #: executor worker ("local" for this machine's processes), attempt (2: retried after a worker died)
    host: str = ""
    cpus: int = 0
    machine: str = ""
    worker: str = "local"
    attempt: int = 1
    #: the machine's steadiness while the row's group was timed (crossnn.bench.steadiness)
    calibration_seconds: list[float] = field(default_factory=list)
    others_cpu: float | None = None
    steal: float | None = None
    load_average: float | None = None
    calibration_drift: float | None = None  # slowest calibration / best on its host and cores - 1
    busy: list[str] = field(default_factory=list)  # why it cannot be trusted as a quiet machine's number


@dataclass
class Failure:
    suite: str
    case: str
    backend: str
    device: str
    mode: str
    dtype: str
    reason: str
    worker: str = "local"
    attempt: int = 1


@dataclass
class BenchResult:
    machine: dict
    runtimes: dict[str, dict]
    peaks: dict[str, float]                     # "device dtype" -> best GFLOP/s of any framework
    peak_sources: dict[str, dict[str, float]]   # "device dtype" -> framework -> GFLOP/s
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    mode_notes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: per backend: its default (tutorial-style) mode, its fast mode, whether it is the reference
    backends: dict[str, dict] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    #: every machine rows were timed on, by machine kind (machine.kind): its description
    machines: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"crossnn_version": crossnn.__version__, "kind": "crossnn-bench", "machine": self.machine,
                "machines": self.machines or {machine.kind(self.machine): self.machine},
                "runtimes": self.runtimes, "peaks": self.peaks, "peak_sources": self.peak_sources,
                "settings": self.settings, "mode_notes": self.mode_notes, "backends": self.backends,
                "rows": [asdict(r) for r in self.rows], "skipped": [asdict(s) for s in self.skipped],
                "failures": [asdict(f) for f in self.failures]}


Progress = Callable[[str], None]


def offers(names: Sequence[str], probe: bool = True) -> dict[str, Offer]:
    out = {}
    for name in names:
        b = backends.get(name)
        unavailable = {mode: why for mode in b.modes if (why := b.mode_unavailable(mode))}
        out[name] = Offer(tuple(b.devices(probe=probe)), tuple(b.modes), tuple(b.fast_modes),
                          dict(b.mode_device_kinds), unavailable)
    return out


def device_name(device: str, info: dict) -> str:
    if device_kind(device) == "cpu":
        return info["cpu"]
    index = int(device.split(":")[1]) if ":" in device else 0
    gpus = info.get("gpus") or []
    return gpus[index] if index < len(gpus) else device


def peak_key(device: str, dtype: str) -> str:
    """The key of a peak in BenchResult.peaks: "cpu float32", "cuda:0 float32", ..."""
    return f"{'cpu' if device_kind(device) == 'cpu' else device} {dtype}"


#: the executors a benchmark runs on (crossnn bench --executor)
EXECUTORS = ("local", "dask", "dask=ADDRESS")


def parse_executor(text: str) -> tuple[str, str | None]:
    """("local", None), ("dask", None) for a LocalCluster here, or ("dask", address)."""
    kind, sep, address = text.strip().partition("=")
    address = address.strip()
    if kind == "local" and not sep:
        return "local", None
    if kind == "dask" and (address or not sep):
        return "dask", address or None
    raise BackendError(f"--executor: use {', '.join(EXECUTORS)} (e.g. dask=tcp://10.0.0.5:8786), got '{text}'")


def run_bench(cases: Sequence[Case], names: Sequence[str], devices: Sequence[str], dtypes: Sequence[str], *,
              modes: Sequence[str] | None = None, quick: bool = False, repeats: int = 5,
              min_repeat_seconds: float = 0.2, say: Progress = print,
              after_case: Callable[[BenchResult], None] | None = None, isolate: bool = True,
              executor: object = "local", dask_workers: int = 1, peak_matrix: int = PEAK_N) -> BenchResult:
    """Time every case; `after_case` sees the result so far after each case (e.g. to save it, so an
    interrupted benchmark keeps what it measured).

    executor: "local" (default): with `isolate`, each backend is timed in a fresh process of its own
    and the machine's peak is measured with every available framework (crossnn.bench.isolate);
    otherwise all in this process. "dask", "dask=ADDRESS" or a distributed.Client: the jobs run on a
    Dask cluster (crossnn.bench.dask_executor): a LocalCluster of `dask_workers` workers here, the
    scheduler at ADDRESS, or the client's cluster. peak_matrix: n of the n×n matmul peaks (2048)."""
    options = dict(modes=modes, quick=quick, repeats=repeats, min_repeat_seconds=min_repeat_seconds,
                   peak_matrix=peak_matrix)
    kind, address = parse_executor(executor) if isinstance(executor, str) else ("dask", executor)
    if kind == "dask":
        if not isolate:
            raise BackendError("--in-process: the dask executor always times each job in a process of its own")
        if address is not None and dask_workers != 1:
            raise BackendError("--dask-workers: sizes the LocalCluster of --executor dask, not a cluster of yours")
        try:
            from crossnn.bench.dask_executor import run_on_dask
        except ImportError as err:
            raise BackendError(f"--executor dask needs dask[distributed] (pip install 'crossnn[dask]'): "
                               f"{err}") from None
        return run_on_dask(cases, names, devices, dtypes, executor=address, workers=dask_workers, say=say,
                           after_case=after_case, options=options)
    if dask_workers != 1:
        raise BackendError("--dask-workers: goes with --executor dask")
    if isolate:
        from crossnn.bench.isolate import run_isolated

        return run_isolated(cases, names, devices, dtypes, say=say, after_case=after_case, **options)
    return run_in_process(cases, names, devices, dtypes, say=say, after_case=after_case, **options)


def run_in_process(cases: Sequence[Case], names: Sequence[str], devices: Sequence[str], dtypes: Sequence[str], *,
                   modes: Sequence[str] | None = None, quick: bool = False, repeats: int = 5,
                   min_repeat_seconds: float = 0.2, say: Progress = print,
                   after_case: Callable[[BenchResult], None] | None = None, peak_matrix: int = PEAK_N) -> BenchResult:
    """run_bench's work in this process: every backend in `names` loaded side by side (one whose
    framework fails to import is left out, with the reason). peak_matrix: n of the n×n matmul peaks
    measured in turn with the cases."""
    failed = backends.prepare(names)
    for name, reason in failed.items():
        say(f"  {name} left out: {reason}")
    names = [name for name in names if name not in failed]
    targets, skipped = select(offers(names), devices, modes, quick)
    info = machine.describe()
    result = BenchResult(machine=info, runtimes={n: backends.get(n).runtime() for n in names},
                         peaks={}, peak_sources={}, skipped=skipped, machines={machine.kind(info): info},
                         mode_notes={n: dict(backends.get(n).mode_notes) for n in names},
                         backends={n: {"default_mode": backends.get(n).modes[0],
                                       "fast_modes": list(backends.get(n).fast_modes),
                                       "reference": backends.get(n).reference} for n in names},
                         settings={"repeats": repeats, "min_repeat_seconds": min_repeat_seconds, "quick": quick,
                                   "devices": list(devices), "dtypes": list(dtypes), "peak_matrix": peak_matrix,
                                   "calibration_matrix": steadiness.CALIBRATION_N, "isolated": False})
    for s in skipped:
        say(f"  skipped {s.backend} {s.device} {s.mode}: {s.reason}")
    result.failures += [Failure(case.suite, case.label, name, device, "every mode", dtype, reason)
                        for name, reason in failed.items() for case in cases for device in devices for dtype in dtypes]

    groups: dict[tuple[str, str], list[str]] = {}
    for target in sorted(targets, key=lambda t: (t.backend, t.device)):
        groups.setdefault((target.backend, target.device), []).append(target.mode)
    total = len(cases) * len(dtypes)
    for k, (case, dtype) in enumerate(((c, d) for c in cases for d in dtypes), start=1):
        experiment = case.experiment
        try:
            data = load_dataset(experiment)
            params = cast(initial_parameters(experiment), dtype)
        except Exception as err:  # a case that cannot be set up costs its own rows, not the others'
            reason = f"{type(err).__name__}: {err}"
            say(f"[{k}/{total}] {case.suite} {case.label} {dtype}: not run: {reason}")
            result.failures += [Failure(case.suite, case.label, name, device, "every mode", dtype, reason)
                                for name, device in groups]
            continue
        plan = BatchPlan.for_experiment(experiment, data.n)
        epoch = plan.batches(0, plan.steps_per_epoch)
        batches = [b for b in epoch if len(b) == plan.batch_size] or epoch
        flops = training_flops(experiment.model, plan.batch_size)
        say(f"[{k}/{total}] {case.suite} {case.label} {dtype}: {experiment.model.parameter_count():,} parameters, "
            f"batch {plan.batch_size}, {flops / 1e9:.3g} GFLOP per step")
        for (backend_name, device), modes in groups.items():
            say(f"    {backend_name} {device}: first step and warm-up of {', '.join([TUTORIAL, *modes])}")
            timers, builds = {}, {}
            for mode in [TUTORIAL, *modes]:
                started = _start(case, backend_name, device, mode, dtype, params, data, batches, result,
                                 min_repeat_seconds, say)
                if started is not None:
                    timers[mode], builds[mode] = started
            if not timers:
                continue
            say(f"    {backend_name} {device}: {repeats} repeats of each, taken in turn with the matmul peak")
            monitor = steadiness.Monitor()
            monitor.calibrate()
            own = _own_peak(backend_name, device, dtype, peak_matrix, say)
            numpy_peak = PeakKernel(dtype, peak_matrix) if device_kind(device) == "cpu" else None
            turns = {**timers, **({_PEAK: numpy_peak} if numpy_peak else {})}
            for mode, err in interleave(turns, repeats, between=monitor.calibrate).items():
                if mode == _PEAK:
                    numpy_peak = None
                    say(f"    numpy matmul peak not measured: {type(err).__name__}: {err}")
                else:
                    _failed(case, backend_name, device, mode, dtype, err, result, say)
            group = monitor.finish()
            peaks = {"numpy": numpy_peak.gflops if numpy_peak else None, backend_name: own}
            sources = result.peak_sources.setdefault(peak_key(device, dtype), {})
            for framework, gflops in peaks.items():
                if gflops:
                    sources[framework] = max(gflops, sources.get(framework, 0.0))
            result.peaks = {key: max(per.values()) for key, per in result.peak_sources.items() if per}
            rows = {mode: _row(case, backend_name, device, mode, dtype, batches, flops, timer, builds[mode],
                               info, peaks, group) for mode, timer in timers.items() if mode in turns}
            tutorial = rows.get(TUTORIAL)
            for mode, row in rows.items():
                if tutorial is not None and mode != TUTORIAL:
                    row.ratio_to_tutorial = row.seconds_per_step / tutorial.seconds_per_step
                result.rows.append(row)
            mark_busy(result.rows)
            for row in rows.values():
                say(_row_line(row))
        if after_case:
            after_case(result)
    return result


#: the key of the NumPy peak kernel among the timers of a group
_PEAK = "matmul peak"


class PeakKernel:
    """NumPy's PEAK_N × PEAK_N matmul in one dtype, one timed product per round of repeats (after
    an untimed first one): the CPU's peak measured in turn with the case it is compared with."""

    def __init__(self, dtype: str, n: int = PEAK_N):
        rng = np.random.default_rng(0)
        self.a, self.b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
        self.out = np.empty((n, n), dtype=dtype)
        self.flops = 2 * n**3
        self.best = float("inf")
        np.matmul(self.a, self.b, out=self.out)

    def repeat(self) -> None:
        start = time.perf_counter()
        np.matmul(self.a, self.b, out=self.out)
        self.best = min(self.best, time.perf_counter() - start)

    @property
    def gflops(self) -> float | None:
        return self.flops / self.best / 1e9 if self.best < float("inf") else None


def _own_peak(backend_name: str, device: str, dtype: str, n: int, say: Progress) -> float | None:
    """The framework's own n×n matmul on the device, GFLOP/s (None when it has no such benchmark)."""
    try:
        return backends.get(backend_name).matmul_gflops(n, dtype, device)
    except UnsupportedFeature:
        return None
    except Exception as err:  # a failing peak must not lose the rows
        say(f"    {backend_name} {device}: own matmul peak not measured: {type(err).__name__}: {err}")
        return None


def mark_busy(rows: Sequence[Row]) -> None:
    """Set every row's busy reasons and calibration drift against the best calibration of its host
    and cores among `rows` (crossnn.bench.steadiness)."""
    dicts = [vars(row) for row in rows]
    best = steadiness.best_calibrations(dicts)
    for row, as_dict in zip(rows, dicts):
        fastest = best.get(steadiness.calibration_key(as_dict))
        row.calibration_drift = (max(row.calibration_seconds) / fastest - 1
                                 if row.calibration_seconds and fastest else None)
        row.busy = steadiness.busy_reasons(as_dict, fastest)


def _start(case, backend_name, device, mode, dtype, params, data, batches, result, min_repeat_seconds,
           say) -> tuple[Timer, float] | None:
    """Build a trainer for the target (the tutorial loop for mode TUTORIAL), time its first step and
    warm it up: (its Timer, build seconds), or None when it cannot run (a failure is recorded; a
    missing hand-written loop is only reported)."""
    backend = backends.get(backend_name)
    try:
        start = time.perf_counter()
        if mode == TUTORIAL:
            trainer = backend.tutorial(case.experiment, params, data, dtype=dtype, device=device)
        else:
            trainer = backend.build(case.experiment, params, data, dtype=dtype, device=device, mode=mode)
        trainer.synchronize()
        build = time.perf_counter() - start
        return Timer(trainer, batches, min_repeat_seconds=min_repeat_seconds), build
    except Exception as err:  # a failing target must not stop the others
        if mode == TUTORIAL and isinstance(err, UnsupportedFeature):
            say(f"    {backend_name + ' ' + device + ' ' + mode:<34} no hand-written loop for {err.feature}")
        else:
            _failed(case, backend_name, device, mode, dtype, err, result, say)
        return None


def _failed(case, backend_name, device, mode, dtype, err, result, say) -> None:
    label = f"{backend_name} {device} {mode}"
    if isinstance(err, UnsupportedFeature):
        result.failures.append(Failure(case.suite, case.label, backend_name, device, mode, dtype, str(err)))
        say(f"    {label:<34} not timed: {err}")
        return
    reason = f"{type(err).__name__}: {err}"
    result.failures.append(Failure(case.suite, case.label, backend_name, device, mode, dtype, reason))
    say(f"    {label:<34} FAILED: {reason}")
    if not isinstance(err, CrossnnError):
        say("".join(traceback.format_exception(err, limit=-3)))  # the innermost frames: where it raised


def share_of_peak(gflops: float, peak: float | None) -> tuple[float | None, bool]:
    """(percentage of `peak`, above): the percentage when gflops <= peak; (None, True) when the row
    beat the peak, which then was measured low and is no yardstick; (None, False) without a peak."""
    if not peak:
        return None, False
    if gflops > peak:
        return None, True
    return 100 * gflops / peak, False


def _row(case, backend_name, device, mode, dtype, batches, flops, timer: Timer, build: float, info,
         peaks: dict[str, float | None], group: steadiness.Steadiness) -> Row:
    backend, timing = backends.get(backend_name), timer.timing
    own = peaks.get(backend_name)
    peak = max((g for g in peaks.values() if g), default=None)
    seconds = timing.median
    gflops = flops / seconds / 1e9
    percent, above = share_of_peak(gflops, peak)
    own_percent, above_own = share_of_peak(gflops, own)
    quartiles = timing.quartiles
    return Row(suite=case.suite, case=case.label, backend=backend_name, version=backend.version(), mode=mode,
               device=device, device_name=device_name(device, info), dtype=dtype,
               parameters=case.experiment.model.parameter_count(), batch_size=len(batches[0]),
               flops_per_step=flops, seconds_per_step=seconds, iqr_seconds=timing.iqr, repeats=len(timing.per_step),
               steps_per_repeat=timing.steps_per_repeat, build_seconds=build, first_step_seconds=timing.first_step,
               samples_per_second=len(batches[0]) / seconds, gflops=gflops, peak_gflops=peak,
               percent_of_peak=percent, own_peak_gflops=own, percent_of_own_peak=own_percent,
               description=timer.trainer.describe(), q1_seconds=quartiles[0] if quartiles else None,
               q3_seconds=quartiles[1] if quartiles else None, above_peak=above, above_own_peak=above_own,
               host=info.get("host", ""), cpus=group.cpus, machine=machine.kind(info),
               calibration_seconds=list(group.calibration_seconds), others_cpu=group.others_cpu,
               steal=group.steal, load_average=group.load_average)


#: how a share of a peak the row beat is printed (never a percentage above 100)
ABOVE_PEAK = ">=100% (beat the peak it is compared with: that peak was measured low)"
ABOVE_PEAK_SHORT = ">=100*"


def percent_text(percent: float | None, above: bool, short: bool = False) -> str:
    """A share of a peak as printed, never above 100%: "12.3%", or for a row that beat its peak
    ABOVE_PEAK; short (table cells under a "%" heading): "12.3", or ABOVE_PEAK_SHORT."""
    if above:
        return ABOVE_PEAK_SHORT if short else ABOVE_PEAK
    if percent is None:
        return "-"
    return f"{percent:.1f}" if short else f"{percent:.1f}%"


def _row_line(row: Row) -> str:
    """The progress line of a row: its time, its share of its framework's own matmul, measured in
    turn with it, and the busy mark it has so far."""
    label = f"{row.backend} {row.device} {row.mode}"
    own = ("faster than its own matmul, measured in turn (no percentage)" if row.above_own_peak
           else f"{row.percent_of_own_peak:5.1f}% of {row.backend}'s matmul")
    peak_text = f", {own}" if row.own_peak_gflops else ""
    ratio = f"; {row.ratio_to_tutorial:.3f} x the hand-written loop" if row.ratio_to_tutorial is not None else ""
    busy = f" ! busy: {'; '.join(row.busy)}" if row.busy else ""
    return (f"    {label:<34} {row.seconds_per_step * 1e6:11.1f} us/step (IQR {row.iqr_seconds * 1e6:.1f}), "
            f"{row.gflops:8.2f} GFLOP/s{peak_text}; first step {row.first_step_seconds:.3f} s, "
            f"build {row.build_seconds:.3f} s{ratio}{busy}")
