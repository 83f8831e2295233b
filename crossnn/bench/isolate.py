"""Each backend benchmarked in a process of its own.

Frameworks loaded side by side slow each other down: after TensorFlow has run one matmul in a
process, the thread pools it leaves behind cost torch's oneDNN products about 40% on this 2-core
machine (72 against 110 ms per FCN-R step). So run_isolated starts one fresh Python process per
backend (multiprocessing's spawn: nothing inherited but the job), runs run_in_process there for that
backend alone — its hand-written loop included, so ratios stay within one process — and merges the
results. Frameworks that are installed but not benchmarked get a process too, which only measures
their matmul peak: the machine's peak is the best of every installed library, whichever backends a
run times. A process that dies (a crashing framework) becomes a failure row, not a lost benchmark.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from typing import Callable, Sequence

from crossnn import backends
from crossnn.bench.runner import BenchResult, Failure, Progress, measure_peaks, offers, peak_key, run_in_process
from crossnn.bench.select import select
from crossnn.bench.suites import Case


def run_isolated(cases: Sequence[Case], names: Sequence[str], devices: Sequence[str], dtypes: Sequence[str], *,
                 modes: Sequence[str] | None, quick: bool, repeats: int, min_repeat_seconds: float,
                 say: Progress, after_case: Callable[[BenchResult], None] | None) -> BenchResult:
    order = sorted(names, key=lambda n: backends.get(n).import_order)
    done: list[BenchResult] = []
    for name in order:
        say(f"{name}: timed in a process of its own")

        def partial(result: BenchResult) -> None:
            if after_case:
                after_case(merge(done + [result]))

        outcome = in_child(run_in_process, (cases, [name], devices, dtypes),
                           dict(modes=modes, quick=quick, repeats=repeats, min_repeat_seconds=min_repeat_seconds),
                           say, partial)
        if isinstance(outcome, BenchResult):
            done.append(outcome)
        else:
            done.append(_crashed(name, cases, devices, dtypes, outcome))
        if after_case:
            after_case(merge(done))
    extra = {}
    for name in sorted(set(backends.available()) - set(names), key=lambda n: backends.get(n).import_order):
        say(f"{name}: matmul peak only, in a process of its own")
        sources = in_child(peaks_of, (name, devices, dtypes), {}, say, None)
        if isinstance(sources, dict):
            extra[name] = sources
        else:
            say(f"  {name}: no peak measured ({sources})")
    return merge(done, extra)


def peaks_of(name: str, devices: Sequence[str], dtypes: Sequence[str], *, say: Progress) -> dict[str, dict[str, float]]:
    """The matmul peak of one backend (and NumPy) on the requested devices."""
    backends.get(name).prepare()
    targets, _ = select(offers([name]), devices)
    return measure_peaks(targets, dtypes, say)


def merge(parts: Sequence[BenchResult], extra_peaks: dict[str, dict] | None = None) -> BenchResult:
    """One result from per-backend results: rows, skips, failures and settings side by side; the
    peak of each device and dtype the best any framework reached; every row's share of it redone."""
    if not parts:
        raise ValueError("nothing to merge")
    sources: dict[str, dict[str, float]] = {}
    for per in [p.peak_sources for p in parts] + list((extra_peaks or {}).values()):
        for key, by_framework in per.items():
            for framework, gflops in by_framework.items():
                sources.setdefault(key, {})[framework] = max(gflops, sources.get(key, {}).get(framework, 0.0))
    peaks = {key: max(per.values()) for key, per in sources.items()}
    rows = []
    for part in parts:
        for row in part.rows:
            peak = peaks.get(peak_key(row.device, row.dtype), row.peak_gflops)
            rows.append(replace(row, peak_gflops=peak, percent_of_peak=100 * row.gflops / peak if peak else None))
    first = parts[0]
    return BenchResult(machine=first.machine, runtimes={k: v for p in parts for k, v in p.runtimes.items()},
                       peaks=peaks, peak_sources=sources, rows=rows,
                       skipped=[s for p in parts for s in p.skipped], failures=[f for p in parts for f in p.failures],
                       mode_notes={k: v for p in parts for k, v in p.mode_notes.items()},
                       backends={k: v for p in parts for k, v in p.backends.items()},
                       settings={**next((p.settings for p in parts if p.settings), {}), "isolated": True})


def _crashed(name, cases, devices, dtypes, reason: str) -> BenchResult:
    """What is left of a backend whose process died: one failure per case and dtype."""
    from crossnn.bench import machine

    failures = [Failure(c.suite, c.label, name, ",".join(devices), "*", dtype, reason)
                for c in cases for dtype in dtypes]
    return BenchResult(machine=machine.describe(), runtimes={}, peaks={}, peak_sources={}, failures=failures)


def in_child(function, args: tuple, kwargs: dict, say: Progress, partial: Callable | None):
    """function(*args, say=..., [after_case=...], **kwargs) in a spawned process. Its progress lines
    reach `say` as they come, each partial result reaches `partial`. Returns the function's result,
    or a one-line reason (str) when the process raised or died."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, args, kwargs, partial is not None), daemon=True)
    process.start()
    sender.close()
    outcome: object = None
    while True:
        try:
            kind, payload = receiver.recv()
        except EOFError:
            break
        if kind == "say":
            say(payload)
        elif kind == "partial" and partial:
            partial(payload)
        else:
            outcome = payload if kind == "done" else f"the benchmark process raised {payload}"
    process.join()
    if outcome is None:
        return f"the benchmark process exited with code {process.exitcode} before it finished"
    return outcome


def _child(sender, function, args, kwargs, wants_partials) -> None:
    def say(text: str) -> None:
        sender.send(("say", text))

    extra = {"after_case": lambda result: sender.send(("partial", result))} if wants_partials else {}
    try:
        result = function(*args, say=say, **kwargs, **extra)
    except BaseException as err:  # reported to the parent as one line, the process then ends
        sender.send(("error", f"{type(err).__name__}: {err}"))
    else:
        sender.send(("done", result))
    finally:
        sender.close()
