"""Run a benchmark: every case × dtype × (backend, device, mode), plus each framework's hand-written
tutorial loop on the same case, the machine's matmul peak, and the settings that explain the numbers.

One row per timed trainer. Rows of the tutorial loops have mode "tutorial"; every other row carries
the ratio of its step time to the tutorial loop of the same framework, device, dtype and case,
measured in the same run: all trainers of a framework and device are built and warmed up first, then
take their repeats in turn (crossnn.bench.timing.interleave).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import crossnn
from crossnn import backends
from crossnn.bench import machine
from crossnn.bench.flops import training_flops
from crossnn.bench.select import Offer, Skipped, Target, device_kind, select
from crossnn.bench.suites import Case
from crossnn.bench.timing import Timer, interleave
from crossnn.data import load_dataset
from crossnn.errors import CrossnnError, UnsupportedFeature
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


@dataclass
class Failure:
    suite: str
    case: str
    backend: str
    device: str
    mode: str
    dtype: str
    reason: str


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

    def to_json(self) -> dict:
        return {"crossnn_version": crossnn.__version__, "kind": "crossnn-bench", "machine": self.machine,
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


def measure_peaks(targets: Sequence[Target], dtypes: Sequence[str], say: Progress) -> dict[str, dict[str, float]]:
    """GFLOP/s of an n×n matmul per device and dtype, by NumPy and by every framework benchmarked."""
    sources: dict[str, dict[str, float]] = {}
    pairs = sorted({(t.backend, t.device) for t in targets})
    for dtype in dtypes:
        sources.setdefault(f"cpu {dtype}", {})["numpy"] = machine.numpy_matmul_gflops(dtype, PEAK_N)
        for name, device in pairs:
            key = peak_key(device, dtype)
            if name in sources.get(key, {}):
                continue
            try:
                sources.setdefault(key, {})[name] = backends.get(name).matmul_gflops(PEAK_N, dtype, device)
            except UnsupportedFeature:
                continue
        say(f"  matmul peak {dtype}: " + "; ".join(
            f"{key.split()[0]} {fw} {g:.0f}" for key, per in sources.items() if key.endswith(dtype)
            for fw, g in per.items())
            + " GFLOP/s")
    return sources


def run_bench(cases: Sequence[Case], names: Sequence[str], devices: Sequence[str], dtypes: Sequence[str], *,
              modes: Sequence[str] | None = None, quick: bool = False, repeats: int = 5,
              min_repeat_seconds: float = 0.2, say: Progress = print,
              after_case: Callable[[BenchResult], None] | None = None, isolate: bool = True) -> BenchResult:
    """Time every case; `after_case` sees the result so far after each case (e.g. to save it, so an
    interrupted benchmark keeps what it measured). With `isolate`, each backend is timed in a fresh
    process of its own and the machine's peak is measured with every available framework
    (crossnn.bench.isolate); otherwise all in this process."""
    if isolate:
        from crossnn.bench.isolate import run_isolated

        return run_isolated(cases, names, devices, dtypes, modes=modes, quick=quick, repeats=repeats,
                            min_repeat_seconds=min_repeat_seconds, say=say, after_case=after_case)
    return run_in_process(cases, names, devices, dtypes, modes=modes, quick=quick, repeats=repeats,
                          min_repeat_seconds=min_repeat_seconds, say=say, after_case=after_case)


def run_in_process(cases: Sequence[Case], names: Sequence[str], devices: Sequence[str], dtypes: Sequence[str], *,
                   modes: Sequence[str] | None = None, quick: bool = False, repeats: int = 5,
                   min_repeat_seconds: float = 0.2, say: Progress = print,
                   after_case: Callable[[BenchResult], None] | None = None) -> BenchResult:
    """run_bench's work in this process: every backend in `names` loaded side by side (one whose
    framework fails to import is left out, with the reason)."""
    failed = backends.prepare(names)
    for name, reason in failed.items():
        say(f"  {name} left out: {reason}")
    names = [name for name in names if name not in failed]
    targets, skipped = select(offers(names), devices, modes, quick)
    info = machine.describe()
    sources = measure_peaks(targets, dtypes, say)
    result = BenchResult(machine=info, runtimes={n: backends.get(n).runtime() for n in names},
                         peaks={key: max(per.values()) for key, per in sources.items()}, peak_sources=sources,
                         skipped=skipped,
                         mode_notes={n: dict(backends.get(n).mode_notes) for n in names},
                         backends={n: {"default_mode": backends.get(n).modes[0],
                                       "fast_modes": list(backends.get(n).fast_modes),
                                       "reference": backends.get(n).reference} for n in names},
                         settings={"repeats": repeats, "min_repeat_seconds": min_repeat_seconds, "quick": quick,
                                   "devices": list(devices), "dtypes": list(dtypes), "peak_matrix": PEAK_N,
                                   "isolated": False})
    for s in skipped:
        say(f"  skipped {s.backend} {s.device} {s.mode}: {s.reason}")
    result.failures += [Failure(case.suite, case.label, name, device, "every mode", dtype, reason)
                        for name, reason in failed.items() for case in cases for device in devices for dtype in dtypes]

    total = len(cases) * len(dtypes)
    for k, (case, dtype) in enumerate(((c, d) for c in cases for d in dtypes), start=1):
        experiment = case.experiment
        data = load_dataset(experiment)
        params = cast(initial_parameters(experiment), dtype)
        plan = BatchPlan.for_experiment(experiment, data.n)
        epoch = plan.batches(0, plan.steps_per_epoch)
        batches = [b for b in epoch if len(b) == plan.batch_size] or epoch
        flops = training_flops(experiment.model, plan.batch_size)
        say(f"[{k}/{total}] {case.suite} {case.label} {dtype}: {experiment.model.parameter_count():,} parameters, "
            f"batch {plan.batch_size}, {flops / 1e9:.3g} GFLOP per step")
        groups: dict[tuple[str, str], list[str]] = {}
        for target in sorted(targets, key=lambda t: (t.backend, t.device)):
            groups.setdefault((target.backend, target.device), []).append(target.mode)
        for (backend_name, device), modes in groups.items():
            say(f"    {backend_name} {device}: first step and warm-up of {', '.join([TUTORIAL, *modes])}")
            timers, builds = {}, {}
            for mode in [TUTORIAL, *modes]:
                started = _start(case, backend_name, device, mode, dtype, params, data, batches, result,
                                 min_repeat_seconds, say)
                if started is not None:
                    timers[mode], builds[mode] = started
            if timers:
                say(f"    {backend_name} {device}: {repeats} repeats of each, taken in turn")
            for mode, err in interleave(timers, repeats).items():
                _failed(case, backend_name, device, mode, dtype, err, result, say)
            rows = {mode: _row(case, backend_name, device, mode, dtype, batches, flops, timer, builds[mode],
                               result, info) for mode, timer in timers.items()}
            tutorial = rows.get(TUTORIAL)
            for mode, row in rows.items():
                if tutorial is not None and mode != TUTORIAL:
                    row.ratio_to_tutorial = row.seconds_per_step / tutorial.seconds_per_step
                result.rows.append(row)
                say(_row_line(row))
        if after_case:
            after_case(result)
    return result


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


def _row(case, backend_name, device, mode, dtype, batches, flops, timer: Timer, build: float, result,
         info) -> Row:
    backend, timing = backends.get(backend_name), timer.timing
    key = peak_key(device, dtype)
    peak = result.peaks.get(key)
    own = result.peak_sources.get(key, {}).get(backend_name)
    seconds = timing.median
    gflops = flops / seconds / 1e9
    return Row(suite=case.suite, case=case.label, backend=backend_name, version=backend.version(), mode=mode,
               device=device, device_name=device_name(device, info), dtype=dtype,
               parameters=case.experiment.model.parameter_count(), batch_size=len(batches[0]),
               flops_per_step=flops, seconds_per_step=seconds, iqr_seconds=timing.iqr, repeats=len(timing.per_step),
               steps_per_repeat=timing.steps_per_repeat, build_seconds=build, first_step_seconds=timing.first_step,
               samples_per_second=len(batches[0]) / seconds, gflops=gflops, peak_gflops=peak,
               percent_of_peak=100 * gflops / peak if peak else None, own_peak_gflops=own,
               percent_of_own_peak=100 * gflops / own if own else None, description=timer.trainer.describe())


def _row_line(row: Row) -> str:
    """The progress line of a row. The machine's peak is only known once every framework has been
    measured: the share of this framework's own matmul is the number that is final here."""
    label = f"{row.backend} {row.device} {row.mode}"
    peak_text = (f", {row.percent_of_own_peak:5.1f}% of {row.backend}'s matmul"
                 if row.percent_of_own_peak is not None else "")
    ratio = f"; {row.ratio_to_tutorial:.3f} x the hand-written loop" if row.ratio_to_tutorial is not None else ""
    return (f"    {label:<34} {row.seconds_per_step * 1e6:11.1f} us/step (IQR {row.iqr_seconds * 1e6:.1f}), "
            f"{row.gflops:8.2f} GFLOP/s{peak_text}; first step {row.first_step_seconds:.3f} s, "
            f"build {row.build_seconds:.3f} s{ratio}")
