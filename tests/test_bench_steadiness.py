"""Honest timing on a shared machine: rows timed while other processes take the CPU are marked busy,
their checks are inconclusive, and rows timed on a quiet machine are not marked.

This machine is shared (other work may run at any time), so the quiet half cannot assume quiet: it
measures the machine's load itself, independently of crossnn's code (the CPU time every other process
took on every CPU, from /proc/stat, over the same rounds of repeats), and checks that crossnn's marks
agree with it: no mark at all when the machine was clearly quiet (others under half of OTHERS_BOUND),
marked by other processes when it was clearly busy (above twice the bound). It tries up to three
times to get a clear answer and needs one; on a quiet machine that answer is the quiet half.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from crossnn import example
from crossnn.bench import steadiness
from crossnn.bench.runner import run_in_process
from crossnn.bench.suites import Case
from crossnn.report.markdown import _checks

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")

HOG = "import time\nend = time.time() + float(__import__('sys').argv[1])\nwhile time.time() < end:\n    pass\n"


def _bench(say=lambda line: None):
    """The circle case on NumPy, its default mode and hand-written loop taking turns (a few seconds; small
    matmul peaks, which this test does not look at)."""
    result = run_in_process([Case("seeds", "circle", example("circle"))], ["numpy"], ["cpu"], ["float32"], quick=True,
                            repeats=5, min_repeat_seconds=0.05, say=say, peak_matrix=256)
    return {"rows": [asdict(r) for r in result.rows], "machine": result.machine,
            "backends": {"numpy": {"default_mode": "default", "fast_modes": [], "reference": True}}}


def _machine_busy_seconds() -> tuple[float, float]:
    """(wall clock, CPU seconds every process but this one has used on every CPU), read independently."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0] != "cpu":
            user, nice, system, _, _, irq, softirq = map(int, parts[1:8])
            busy += user + nice + system + irq + softirq
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK") - sum(os.times()[:2])


def test_unit_bounds_mark_each_kind_of_disturbance():
    quiet = {"calibration_seconds": [1.0, 1.19], "others_cpu": 0.09, "steal": 0.04, "seconds_per_step": 1.0,
             "iqr_seconds": 0.25}
    assert steadiness.busy_reasons(quiet, 1.0) == []
    busy = {"calibration_seconds": [1.0, 1.3], "others_cpu": 0.5, "steal": 0.06, "seconds_per_step": 1.0,
            "iqr_seconds": 0.3}
    assert [r.split(":")[0] for r in steadiness.busy_reasons(busy, 1.0)] == ["calibration", "other processes",
                                                                             "steal", "IQR"]


def test_a_cpu_hog_next_to_the_benchmark_marks_its_rows_and_makes_its_checks_inconclusive():
    hogs = [subprocess.Popen([sys.executable, "-c", HOG, "20"]) for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(0.3)  # the hogs are running
        bench = _bench()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    rows = bench["rows"]
    assert {r["mode"] for r in rows} == {"tutorial", "default"}
    for r in rows:
        assert r["others_cpu"] > steadiness.OTHERS_BOUND, r
        assert any(reason.startswith("other processes:") for reason in r["busy"]), r["busy"]
    check = next(line for line in _checks(bench) if "seeds/circle numpy default" in line)
    assert check.startswith(f"- {steadiness.INCONCLUSIVE}: seeds/circle numpy default float32:"), check


def test_marks_agree_with_the_load_measured_independently_and_a_quiet_machine_leaves_rows_unmarked():
    clear = []
    for _ in range(3):
        windows = []

        def watch(line: str) -> None:  # the group's rounds start after this line and end before its rows
            if "repeats of each" in line:
                windows.append([_machine_busy_seconds()])
            elif " us/step " in line and len(windows[-1]) == 1:
                windows[-1].append(_machine_busy_seconds())

        bench = _bench(watch)
        (start_wall, start_busy), (end_wall, end_busy) = windows[0]
        others = (end_busy - start_busy) / ((end_wall - start_wall) * (os.cpu_count() or 1))
        if others < steadiness.OTHERS_BOUND / 2 or others > 2 * steadiness.OTHERS_BOUND:
            clear.append((others, bench["rows"]))
            break
    assert clear, "the machine's load stayed too close to the bound to tell in three tries"
    for others, rows in clear:
        for r in rows:
            if others < steadiness.OTHERS_BOUND / 2:
                assert r["busy"] == [], (others, r["busy"], r["calibration_seconds"])
            else:
                assert any(reason.startswith("other processes:") for reason in r["busy"]), (others, r["others_cpu"])
