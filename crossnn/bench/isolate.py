"""Each backend benchmarked in a process of its own.

Frameworks loaded side by side slow each other down: after TensorFlow has run one matmul in a
process, the thread pools it leaves behind cost torch's oneDNN products about 40% on this 2-core
machine (72 against 110 ms per FCN-R step). So run_isolated starts one fresh Python process per
backend (nothing inherited but the job and the environment), runs run_in_process there for that
backend alone — its hand-written loop included, so ratios stay within one process — and merges the
results. The children are plain subprocesses of `sys.executable`, so a daemonic process (a Dask
worker: crossnn.bench.dask_executor) can start them too.

Each row's matmul peak is measured in turn with it, in its own process (crossnn.bench.runner).
A process that dies (a crashing framework) becomes a failure row, not a lost benchmark.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import Callable, Sequence

from crossnn import backends
from crossnn.bench.runner import BenchResult, Failure, Progress, mark_busy, run_in_process
from crossnn.bench.suites import Case


def run_isolated(cases: Sequence[Case], names: Sequence[str], devices: Sequence[str], dtypes: Sequence[str], *,
                 say: Progress, after_case: Callable[[BenchResult], None] | None, **options) -> BenchResult:
    """run_in_process(..., **options) for each backend in a fresh process; results merged."""
    order = sorted(names, key=lambda n: backends.get(n).import_order)
    done: list[BenchResult] = []
    for name in order:
        say(f"{name}: timed in a process of its own")

        def partial(result: BenchResult) -> None:
            if after_case:
                after_case(merge(done + [result]))

        outcome = in_child(run_in_process, (cases, [name], devices, dtypes), options, say, partial)
        if isinstance(outcome, BenchResult):
            done.append(outcome)
        else:
            done.append(_crashed(name, cases, devices, dtypes, outcome))
        if after_case:
            after_case(merge(done))
    return merge(done)


def merge(parts: Sequence[BenchResult]) -> BenchResult:
    """One result from per-process (or per-task) results: rows, skips, failures, machines and settings
    side by side; the peak table the best any framework reached per device and dtype. Each row keeps
    the peak measured in turn with it; busy marks are redone against the best calibration of each
    host in the whole run."""
    if not parts:
        raise ValueError("nothing to merge")
    sources: dict[str, dict[str, float]] = {}
    for per in [p.peak_sources for p in parts]:
        for key, by_framework in per.items():
            for framework, gflops in by_framework.items():
                sources.setdefault(key, {})[framework] = max(gflops, sources.get(key, {}).get(framework, 0.0))
    peaks = {key: max(per.values()) for key, per in sources.items() if per}
    rows = [replace(row) for part in parts for row in part.rows]
    mark_busy(rows)
    first = parts[0]
    return BenchResult(machine=first.machine, runtimes={k: v for p in parts for k, v in p.runtimes.items()},
                       peaks=peaks, peak_sources=sources, rows=rows,
                       skipped=list(dict.fromkeys(s for p in parts for s in p.skipped)),
                       failures=[f for p in parts for f in p.failures],
                       mode_notes={k: v for p in parts for k, v in p.mode_notes.items()},
                       backends={k: v for p in parts for k, v in p.backends.items()},
                       settings={**next((p.settings for p in parts if p.settings), {}), "isolated": True},
                       machines={k: v for p in parts for k, v in p.machines.items()})


def _crashed(name, cases, devices, dtypes, reason: str) -> BenchResult:
    """What is left of a backend whose process died: one failure per case and dtype."""
    from crossnn.bench import machine

    failures = [Failure(c.suite, c.label, name, ",".join(devices), "*", dtype, reason)
                for c in cases for dtype in dtypes]
    return BenchResult(machine=machine.describe(), runtimes={}, peaks={}, peak_sources={}, failures=failures)


#: what a child process runs first: pin itself to the CPUs it was given (before NumPy or any framework
#: starts its thread pools, which size themselves by the CPUs they may use), then read its job
_CHILD_BOOT = ("import os, sys\n"
               "cpus = os.environ.pop('CROSSNN_BENCH_CPUS', '')\n"
               "if cpus and hasattr(os, 'sched_setaffinity'):\n"
               "    os.sched_setaffinity(0, [int(c) for c in cpus.split(',')])\n"
               "from crossnn.bench.isolate import child_main\n"
               "child_main(int(sys.argv[1]))\n")


def in_child(function, args: tuple, kwargs: dict, say: Progress, partial: Callable | None,
             cpus: Sequence[int] | None = None):
    """function(*args, say=..., [after_case=...], **kwargs) in a fresh Python process (pinned to
    `cpus` when given). Its progress lines reach `say` as they come, each partial result reaches
    `partial`. Returns the function's result, or a one-line reason (str) when the process raised
    or died.

    The child is a plain subprocess (not multiprocessing), so this works inside a daemonic process
    such as a Dask worker; the job goes to it pickled on its standard input and the messages come
    back pickled on a pipe of their own, so whatever a framework prints cannot corrupt them. The
    child ends itself when this process dies (it watches its parent)."""
    reader, writer = os.pipe()
    env = dict(os.environ)
    if cpus:
        env["CROSSNN_BENCH_CPUS"] = ",".join(str(c) for c in cpus)
    try:
        process = subprocess.Popen([sys.executable, "-c", _CHILD_BOOT, str(writer)], stdin=subprocess.PIPE,
                                   pass_fds=(writer,), env=env)
    finally:
        os.close(writer)
    outcome: object = None
    with os.fdopen(reader, "rb") as messages:
        try:
            pickle.dump((function, args, kwargs, partial is not None), process.stdin)
            process.stdin.close()
        except (BrokenPipeError, pickle.PicklingError) as err:
            outcome = f"the benchmark process could not be given its job: {type(err).__name__}: {err}"
        while True:
            try:
                kind, payload = pickle.load(messages)
            except (EOFError, pickle.UnpicklingError):
                break
            if kind == "say":
                say(payload)
            elif kind == "partial" and partial:
                partial(payload)
            elif outcome is None:
                outcome = payload if kind == "done" else f"the benchmark process raised {payload}"
    process.wait()
    if outcome is None:
        return f"the benchmark process exited with code {process.returncode} before it finished"
    return outcome


def child_main(fd: int) -> None:
    """The child's side of in_child: run the job read from standard input, send its messages to `fd`."""
    parent = os.getppid()

    def watch_parent() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:  # the parent died (e.g. a Dask worker was killed): stop too
                os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    with os.fdopen(fd, "wb") as sender:
        def send(message) -> None:
            try:
                pickle.dump(message, sender)
                sender.flush()
            except BrokenPipeError:  # nobody is listening any more: end without a word
                os._exit(1)

        function, args, kwargs, wants_partials = pickle.load(sys.stdin.buffer)
        extra = {"after_case": lambda result: send(("partial", result))} if wants_partials else {}
        try:
            result = function(*args, say=lambda text: send(("say", text)), **kwargs, **extra)
        except BaseException as err:  # reported to the parent as one line, the process then ends
            send(("error", f"{type(err).__name__}: {err}"))
        else:
            send(("done", result))
