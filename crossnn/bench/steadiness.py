"""How steady the machine was while a benchmark was timed, measured during the run.

The spread across repeats alone misses a steady load: a machine that is busy the whole time slows
every repeat alike and keeps the IQR small. So every timed group (one case, dtype, backend and
device: its modes and hand-written loop taking their repeats in turn) also records

- a fixed calibration kernel (a float64 NumPy matmul of CALIBRATION_N × CALIBRATION_N matrices, best
  of 3) timed before the first round of repeats, between rounds and after the last. It is the same
  work in every process and every run, so it is slower whenever the machine gives the benchmark less
  of its cores;
- the CPU time other processes took on the cores this process may run on (from /proc/stat's
  per-CPU counters, minus this process's own CPU time) and the CPU steal time (a hypervisor running
  other guests), both as a share of those cores' time over the rounds;
- the one-minute load average (recorded; it counts the benchmark's own threads too, so it marks
  nothing by itself).

A row is marked busy (`!` in the terminal, the JSON's `busy` reasons, the report) when any of these
exceeds its bound: calibration drift (its slowest calibration against the fastest one seen on the
same host with the same cores in the whole run) above CALIBRATION_BOUND; other processes above
OTHERS_BOUND; steal above STEAL_BOUND; or its IQR above NOISY_IQR of its median. Without /proc
(not Linux) only the calibration and the IQR mark rows.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

#: matrix size of the calibration kernel (float64; about 3 ms on one modern core)
CALIBRATION_N = 512
#: a row is busy when its slowest calibration took more than this much longer than the best one
CALIBRATION_BOUND = 0.20
#: ... when other processes used more than this share of the time of the cores it ran on
OTHERS_BOUND = 0.10
#: ... when the hypervisor stole more than this share of those cores' time
STEAL_BOUND = 0.05
#: ... when the interquartile range of its repeats exceeds this fraction of their median
NOISY_IQR = 0.25
#: the verdict of a target check made from rows marked busy
INCONCLUSIVE = "inconclusive (machine busy)"

_CALIBRATION_MATRICES = None


def calibrate() -> float:
    """Seconds of the calibration kernel: the best of 3 products of two fixed 512 × 512 float64
    matrices (best of 3, so a single timer tick or page fault does not count as a busy machine)."""
    global _CALIBRATION_MATRICES
    if _CALIBRATION_MATRICES is None:
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((CALIBRATION_N, CALIBRATION_N)) for _ in range(2))
        _CALIBRATION_MATRICES = a, b, np.empty_like(a)
    a, b, out = _CALIBRATION_MATRICES
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return best


def cpus() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class CpuTimes:
    """Counters at one moment: wall clock, busy and steal seconds summed over this process's CPUs
    (None without /proc/stat), and this process's own CPU seconds."""

    wall: float
    busy: float | None
    steal: float | None
    own: float


def cpu_times(which: Iterable[int]) -> CpuTimes:
    wall, own = time.perf_counter(), sum(os.times()[:2])
    wanted = {f"cpu{i}" for i in which}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return CpuTimes(wall, None, None, own)
    tick = os.sysconf("SC_CLK_TCK")
    busy = steal = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            # user nice system idle iowait irq softirq steal ...: busy is everything but idle, iowait, steal
            values = [int(v) for v in parts[1:9]]
            busy += values[0] + values[1] + values[2] + values[5] + values[6]
            steal += values[7]
    return CpuTimes(wall, busy / tick, steal / tick, own)


@dataclass
class Steadiness:
    """What a timed group measured about the machine (see the module docstring)."""

    calibration_seconds: list[float] = field(default_factory=list)
    others_cpu: float | None = None     # share of the cores' time other processes used
    steal: float | None = None          # share of the cores' time stolen by the hypervisor
    load_average: float | None = None   # one-minute load average at the end
    cpus: int = 0                       # how many cores this process could run on


class Monitor:
    """Watches one timed group: call `calibrate()` before the first round, between rounds and after
    the last, then `finish()` for the Steadiness of the group."""

    def __init__(self):
        self.cpus = cpus()
        self.steadiness = Steadiness(cpus=len(self.cpus))
        self._start: CpuTimes | None = None

    def calibrate(self) -> None:
        self.steadiness.calibration_seconds.append(calibrate())
        if self._start is None:
            self._start = cpu_times(self.cpus)

    def finish(self) -> Steadiness:
        end, start, s = cpu_times(self.cpus), self._start, self.steadiness
        if start is not None and start.busy is not None and end.busy is not None:
            capacity = (end.wall - start.wall) * len(self.cpus)
            if capacity > 0:
                others = (end.busy - start.busy) - (end.own - start.own)
                s.others_cpu = min(1.0, max(0.0, others / capacity))
                s.steal = min(1.0, max(0.0, (end.steal - start.steal) / capacity))
        if hasattr(os, "getloadavg"):
            s.load_average = os.getloadavg()[0]
        return s


def busy_reasons(row: dict, best_calibration: float | None) -> list[str]:
    """Why a row (as a dict: a bench file's, or vars(Row)) cannot be trusted as a quiet machine's
    number, each reason "<what>: <measured> (bound ...)"; [] when it can. best_calibration: the
    fastest calibration on its host and cores in the run."""
    reasons = []
    samples = row.get("calibration_seconds") or []
    if samples and best_calibration:
        drift = max(samples) / best_calibration - 1
        if drift > CALIBRATION_BOUND:
            reasons.append(f"calibration: the kernel ran up to {drift:.0%} slower than its best in this run "
                           f"(bound {CALIBRATION_BOUND:.0%})")
    if (row.get("others_cpu") or 0.0) > OTHERS_BOUND:
        reasons.append(f"other processes: {row['others_cpu']:.0%} of its cores' time (bound {OTHERS_BOUND:.0%})")
    if (row.get("steal") or 0.0) > STEAL_BOUND:
        reasons.append(f"steal: {row['steal']:.0%} of its cores' time (bound {STEAL_BOUND:.0%})")
    median, iqr = row.get("seconds_per_step"), row.get("iqr_seconds")
    if median and iqr is not None and iqr > NOISY_IQR * median:
        reasons.append(f"IQR: {iqr / median:.0%} of the median (bound {NOISY_IQR:.0%})")
    return reasons


def summary(rows: Iterable[dict], noun: str = "row") -> str:
    """What marked the busy rows (or runs), by kind: "other processes (3 rows), calibration (1 row)"."""
    counts: dict[str, int] = {}
    for row in rows:
        for reason in row.get("busy") or []:
            what = reason.split(":")[0]
            counts[what] = counts.get(what, 0) + 1
    return ", ".join(f"{what} ({n} {noun}{'s' if n > 1 else ''})" for what, n in counts.items())


def calibration_key(row: dict) -> tuple:
    """Rows whose calibrations are comparable: same host, same number of cores."""
    return row.get("host", ""), row.get("cpus", 0)


def best_calibrations(rows: Iterable[dict]) -> dict[tuple, float]:
    """The fastest calibration per calibration_key over rows."""
    best: dict[tuple, float] = {}
    for row in rows:
        samples = row.get("calibration_seconds") or []
        if samples:
            key = calibration_key(row)
            best[key] = min(min(samples), best.get(key, float("inf")))
    return best


def mark(rows: list[dict]) -> list[list[str]]:
    """busy_reasons of every row, each against the best calibration of its host and cores."""
    best = best_calibrations(rows)
    return [busy_reasons(row, best.get(calibration_key(row))) for row in rows]
