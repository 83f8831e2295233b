"""Benchmark results as terminal tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crossnn.bench import machine, steadiness
from crossnn.bench.runner import ABOVE_PEAK_SHORT, BenchResult, percent_text
from crossnn.console import table


def without_tutorial(rows: Iterable[Mapping]) -> list[tuple[str, str, str]]:
    """(suite, case, backend) of the lowered rows that have no hand-written loop of their framework,
    device and dtype to compare with (rows as dicts: a bench file's, or vars(Row))."""
    rows = list(rows)
    timed = {(r["suite"], r["case"], r["backend"], r["device"], r["dtype"]) for r in rows if r["mode"] == "tutorial"}
    return sorted({(r["suite"], r["case"], r["backend"]) for r in rows if r["mode"] != "tutorial"
                   and (r["suite"], r["case"], r["backend"], r["device"], r["dtype"]) not in timed})


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def bench_table(result: BenchResult) -> str:
    machines = result.machines or {machine.kind(result.machine): result.machine}
    lines = [f"machine: {kind}" for kind in machines]
    lines += ["matmul peak (GFLOP/s, best framework, measured in turn with the cases): "
              + ", ".join(f"{k} {v:.0f}" for k, v in result.peaks.items()), ""]
    several_workers = len({r.worker for r in result.rows}) > 1
    rows, busy = [], 0
    for r in result.rows:
        flag = " !" if r.busy else ""
        busy += bool(flag)
        rows.append((f"{r.suite}/{r.case}", r.backend, r.device, r.mode, r.dtype, r.batch_size,
                     _us(r.seconds_per_step) + flag, _us(r.iqr_seconds), f"{r.samples_per_second:,.0f}",
                     f"{r.gflops:.2f}",
                     percent_text(r.percent_of_peak, r.above_peak, short=True),
                     percent_text(r.percent_of_own_peak, r.above_own_peak, short=True),
                     "-" if r.ratio_to_tutorial is None else f"{r.ratio_to_tutorial:.3f}",
                     f"{r.first_step_seconds:.3f}") + ((r.worker,) if several_workers else ()))
    headers = ("case", "backend", "device", "mode", "dtype", "batch", "us/step", "IQR us", "samples/s", "GFLOP/s",
               "% peak", "% own", "x tutorial", "first step s") + (("worker",) if several_workers else ())
    lines.append(table(headers, rows, indent=""))
    untutored = [f"{suite}/{case} ({backend})" for suite, case, backend in without_tutorial(map(vars, result.rows))]
    if untutored:
        lines.append("x tutorial '-': no hand-written loop to compare with for " + ", ".join(untutored)
                     + " (that framework's hand-written loop does not cover the model; the progress lines name the "
                       "layer)")
    if any(r.above_peak or r.above_own_peak for r in result.rows):
        lines.append(f"{ABOVE_PEAK_SHORT}: the row ran faster than the matmul peak measured in turn with it, so that "
                     "peak was measured low (at a busier moment) and gives no percentage")
    if busy:
        lines.append(f"! {busy} row(s) timed while the machine was busy, marked by "
                     + steadiness.summary(map(vars, result.rows)) + " (bounds: calibration kernel "
                     f"+{steadiness.CALIBRATION_BOUND:.0%}, other processes {steadiness.OTHERS_BOUND:.0%} of the "
                     f"cores' time, steal {steadiness.STEAL_BOUND:.0%}, IQR {steadiness.NOISY_IQR:.0%} of the median); "
                     "rerun them on a quiet machine before trusting them")
    retried = [r for r in result.rows if r.attempt > 1]
    if retried:
        lines.append(f"{len(retried)} row(s) retried after the worker running them died: "
                     + ", ".join(sorted({f"{r.suite}/{r.case} {r.backend}" for r in retried})))
    for s in result.skipped:
        lines.append(f"skipped: {s.backend} {s.device} {s.mode}: {s.reason}")
    for f in result.failures:
        lines.append(f"not timed: {f.suite}/{f.case} {f.backend} {f.device} {f.mode} {f.dtype}: {f.reason}")
    return "\n".join(lines)
