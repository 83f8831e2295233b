"""Benchmark results as terminal tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crossnn.bench.runner import BenchResult
from crossnn.console import table


#: a row whose IQR exceeds this fraction of its median was disturbed while it was timed
NOISY_IQR = 0.25


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
    m = result.machine
    lines = [f"machine: {m['cpu']}, {m['logical_cores']} logical cores, "
             f"{m['memory_gib']:.0f} GiB" + (f", GPU {', '.join(m['gpus'])}" if m["gpus"] else ", no GPU"),
             "matmul peak (GFLOP/s, best framework): " + ", ".join(f"{k} {v:.0f}" for k, v in result.peaks.items()), ""]
    rows, noisy = [], 0
    for r in result.rows:
        flag = " !" if r.iqr_seconds > NOISY_IQR * r.seconds_per_step else ""
        noisy += bool(flag)
        rows.append((f"{r.suite}/{r.case}", r.backend, r.device, r.mode, r.dtype, r.batch_size, _us(r.seconds_per_step),
                     _us(r.iqr_seconds) + flag, f"{r.samples_per_second:,.0f}", f"{r.gflops:.2f}",
                     "-" if r.percent_of_peak is None else f"{r.percent_of_peak:.1f}",
                     "-" if r.percent_of_own_peak is None else f"{r.percent_of_own_peak:.1f}",
                     "-" if r.ratio_to_tutorial is None else f"{r.ratio_to_tutorial:.3f}",
                     f"{r.first_step_seconds:.3f}"))
    lines.append(table(("case", "backend", "device", "mode", "dtype", "batch", "us/step", "IQR us", "samples/s",
                        "GFLOP/s", "% peak", "% own", "x tutorial", "first step s"), rows, indent=""))
    untutored = [f"{suite}/{case} ({backend})" for suite, case, backend in without_tutorial(map(vars, result.rows))]
    if untutored:
        lines.append("x tutorial '-': no hand-written loop to compare with for " + ", ".join(untutored)
                     + " (the tutorial loops cover chains of dense layers)")
    if noisy:
        lines.append(f"! {noisy} row(s) with an IQR above {NOISY_IQR:.0%} of the median: the machine was busy while "
                     "they were timed; rerun them on a quiet machine before trusting them")
    for s in result.skipped:
        lines.append(f"skipped: {s.backend} {s.device} {s.mode}: {s.reason}")
    for f in result.failures:
        lines.append(f"not timed: {f.suite}/{f.case} {f.backend} {f.device} {f.mode} {f.dtype}: {f.reason}")
    return "\n".join(lines)
