"""Report and bench output a new user found wrong (issue 12, item 4): each test failed before its fix."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from crossnn.bench.report_table import bench_table
from crossnn.bench.runner import BenchResult, Row, mark_busy, percent_text, share_of_peak
from crossnn.report import ReportInputs
from crossnn.report.markdown import _checks, readme

MACHINE = {"host": "box", "cpu": "Test CPU", "logical_cores": 2, "memory_gib": 16.0, "gpus": [],
           "platform": "Linux-6.1", "python": "3.11.7", "numpy": "2.4.6",
           "numpy_blas_threads": {"openblas (/x)": 2}, "env": {}}


def _row(**changes) -> dict:
    row = Row(suite="seeds", case="circle", backend="a", version="1", mode="default", device="cpu",
              device_name="Test CPU", dtype="float32", parameters=21, batch_size=100, flops_per_step=10_000,
              seconds_per_step=100e-6, iqr_seconds=1e-6, repeats=5, steps_per_repeat=10, build_seconds=0.0,
              first_step_seconds=0.0, samples_per_second=1e6, gflops=0.1, peak_gflops=100.0, percent_of_peak=0.1,
              own_peak_gflops=100.0, percent_of_own_peak=0.1, calibration_seconds=[1e-3, 1e-3])
    return {**dataclasses.asdict(row), **changes}


def _bench(rows: list[dict], **facts) -> dict:
    return {"kind": "crossnn-bench", "machine": MACHINE, "runtimes": {}, "peaks": {"cpu float32": 100.0},
            "peak_sources": {"cpu float32": {"numpy": 100.0}}, "settings": {}, "mode_notes": {}, "rows": rows,
            "skipped": [], "failures": [],
            "backends": facts or {"a": {"default_mode": "default", "fast_modes": ["fast"], "reference": False}}}


def _run_doc(machine: dict) -> dict:
    return {"experiment": {"name": "linear-2x3"}, "steps": 1, "snapshot_every": 1, "reference": "numpy",
            "machine": machine, "runs": [{"label": "numpy float64 cpu default", "backend": "numpy", "version": "2",
                                          "reference": True, "steps": 1, "seconds": 0.1, "metrics": {},
                                          "losses": [1.0]}]}


def _readme(bench=None, runs=()) -> str:
    return readme(ReportInputs("t", "crossnn report", list(runs), bench), [])


def test_a_parity_run_made_here_is_not_called_another_machines_when_only_the_blas_thread_pools_differ():
    here = {**MACHINE, "numpy_blas_threads": {"openblas (/x)": 2, "mkl (/torch/lib)": 2}}  # torch loaded beside
    text = _readme(_bench([_row()]), [_run_doc(here)])
    assert "made on another machine" not in text
    elsewhere = {**MACHINE, "cpu": "Other CPU", "host": "far"}
    text = _readme(_bench([_row()]), [_run_doc(elsewhere)])
    assert "parity runs made on another machine: linear-2x3: Other CPU" in text


def test_rows_flagged_busy_in_the_terminal_are_flagged_in_the_report_with_what_marked_them():
    busy = _row(mode="fast", busy=["other processes: 45% of its cores' time (bound 10%)"])
    old_style = {k: v for k, v in _row(mode="slow", iqr_seconds=60e-6).items() if k != "busy"}  # a file from before
    quiet = _row(mode="tutorial")
    text = _readme(_bench([busy, old_style, quiet]))
    table_rows = {line.split(" | ")[2]: line for line in text.splitlines() if line.startswith("| circle |")}
    assert "100.0 **!**" in table_rows["fast"] and "100.0 **!**" in table_rows["slow"]
    assert "!" not in table_rows["tutorial"]
    assert "**!** 2 row(s) timed while the machine was busy, marked by other processes (1 row), IQR (1 row)" in text
    # the terminal flags the same rows
    rows = [Row(**{k: v for k, v in r.items()}) for r in (busy, quiet)]
    terminal = bench_table(BenchResult(machine=MACHINE, runtimes={}, peaks={}, peak_sources={}, rows=rows))
    flagged = [line.split()[3] for line in terminal.splitlines() if line.startswith("seeds/circle") and " ! " in line]
    assert flagged == ["fast"]


def test_no_share_of_a_peak_is_ever_shown_above_100_percent():
    assert share_of_peak(150.0, 100.0) == (None, True) and share_of_peak(50.0, 100.0) == (50.0, False)
    for gflops in (1.0, 99.9, 100.0, 100.1, 1e6):
        percent, above = share_of_peak(gflops, 100.0)
        shown = percent_text(percent, above)
        assert above == (gflops > 100.0) and (above or float(shown.rstrip("%")) <= 100.0)
    # a file written before the flag existed, with the 122% a new user saw
    fast = _row(suite="fcn-r", case="batch 256", mode="fast", gflops=123.4, percent_of_peak=122.0,
                percent_of_own_peak=122.0)
    text = _readme(_bench([fast]))
    assert "122.0" not in text and "≥100\\*" in text
    assert ("- inconclusive (the row beat the peak it is compared with: that peak was measured low): "
            "FCN-R batch 256 float32 a: best mode 'fast' at >=100% (beat the peak it is compared with") in text
    row = Row(**{**fast, "percent_of_peak": None, "percent_of_own_peak": None, "above_peak": True,
                 "above_own_peak": True})
    terminal = bench_table(BenchResult(machine=MACHINE, runtimes={}, peaks={}, peak_sources={}, rows=[row]))
    assert "122.0" not in terminal and ">=100*" in terminal


def test_a_fastest_mode_that_is_slower_than_the_hand_written_loop_is_not_called_faster():
    tutorial, slower = _row(mode="tutorial", seconds_per_step=100.0e-6), _row(mode="fast", seconds_per_step=100.4e-6)
    text = "\n".join(_checks(_bench([tutorial, slower])))
    assert "fastest mode 'fast' 100.4 µs/step, 1.004× slower than the hand-written tutorial loop (100.0 µs)" in text
    assert "faster than the hand-written" not in text and "- FAIL: circle a float32" in text
    faster = _row(mode="fast", seconds_per_step=40e-6)
    assert "2.500× faster than the hand-written" in "\n".join(_checks(_bench([tutorial, faster])))


def test_checks_made_from_rows_timed_on_a_busy_machine_are_inconclusive():
    tutorial = _row(mode="tutorial", seconds_per_step=100e-6)
    lowered = _row(seconds_per_step=300e-6, ratio_to_tutorial=3.0,
                   busy=["calibration: the kernel ran up to 80% slower than its best in this run (bound 20%)"])
    text = "\n".join(_checks(_bench([tutorial, lowered], a={"default_mode": "default", "fast_modes": [],
                                                               "reference": False})))
    assert ("- inconclusive (machine busy): seeds/circle a default float32: 3.000 × the hand-written loop "
            "(target ≤ 1.1) (marked by calibration)") in text
    assert "FAIL" not in text


def test_report_keeps_tensorflows_start_up_lines_off_the_terminal_in_its_benchmark_processes(tmp_path):
    """`crossnn report` imports TF through crossnn's quiet import for its parity runs (which sets
    TF_CPP_MIN_LOG_LEVEL), then times each backend in a process of its own: TF's C++ notices must
    stay quiet there too. The parent's TF is a stand-in module (only the environment the quiet
    import leaves behind matters, and the real import takes seconds); the child imports the real one."""
    pytest.importorskip("tensorflow")
    (tmp_path / "tensorflow.py").write_text("")
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from crossnn_tensorflow.device import import_tensorflow
        assert import_tensorflow().__file__.startswith({str(tmp_path)!r})
        sys.path.pop(0)
        from crossnn.bench.isolate import in_child
        from crossnn.bench.runner import run_in_process
        from crossnn.bench.suites import cases_for
        job = (cases_for(["linear-2x3"], quick=True), ["tensorflow"], ["cpu"], ["float32"])
        result = in_child(run_in_process, job, dict(modes=["graph"], repeats=1, min_repeat_seconds=0.01,
                                                    peak_matrix=64), lambda line: None, None)
        print(sorted({{row.mode for row in result.rows}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "CROSSNN_TF"))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "['graph', 'tutorial']" in done.stdout
    assert "oneDNN custom operations" not in done.stderr and "absl::InitializeLog" not in done.stderr, done.stderr


def test_metric_figure_draws_identical_curves_once_with_every_run_named():
    from crossnn.report.figures import metric_curves_figure

    same = {"accuracy": [0.5, 0.8, 0.9], "val_accuracy": [0.4, 0.7, 0.85]}
    labels = [f"{b} {d} cpu" for b in ("numpy", "torch", "tensorflow") for d in ("float64", "float32")]
    fig = metric_curves_figure("digits", {label: same for label in labels})
    legend = [t.get_text().replace("\n", " ") for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == 2 and len(fig.axes[0].get_lines()) == 2
    assert legend[0].startswith("6 runs: numpy float64 cpu") and legend[0].endswith("(training)")
    assert legend[1].endswith("(validation)")
    apart = {**{label: same for label in labels[:5]}, labels[5]: {"accuracy": [0.5, 0.6, 0.7],
                                                                  "val_accuracy": [0.4, 0.7, 0.85]}}
    legend = [t.get_text() for t in metric_curves_figure("digits", apart).axes[0].get_legend().get_texts()]
    assert len(legend) == 3 and legend[1] == "tensorflow float32 cpu (training)"


def test_step_time_figure_draws_the_interquartile_range_of_every_point():
    from matplotlib.container import ErrorbarContainer

    from crossnn.report.figures import step_time_figure

    rows = [_row(suite="mlp-width", parameters=p, seconds_per_step=s, iqr_seconds=0.2 * s, q1_seconds=0.9 * s,
                 q3_seconds=1.1 * s) for p, s in ((100, 1e-3), (1000, 2e-3))]
    rows.append({k: v for k, v in _row(suite="mlp-width", mode="tutorial", parameters=100, seconds_per_step=1e-3,
                                       iqr_seconds=4e-4).items() if not k.startswith("q")})  # an old file's row
    rows.append({**rows[-1], "parameters": 1000})
    fig = step_time_figure("t", rows, "parameters", "parameters")
    bars = {c.get_label(): c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)}
    assert set(bars) == {"a cpu default float32", "a cpu tutorial float32"}
    segments = bars["a cpu default float32"].lines[2][0].get_segments()
    assert [tuple(seg[:, 1]) for seg in segments] == [pytest.approx((0.9, 1.1)), pytest.approx((1.8, 2.2))]
    old = bars["a cpu tutorial float32"].lines[2][0].get_segments()[0][:, 1]
    assert tuple(old) == pytest.approx((0.8, 1.2))  # median ± IQR/2 where the quartiles were not recorded


def test_overhead_figure_states_its_colour_rule_in_the_legend():
    from crossnn.report.figures import overhead_figure

    rows = [_row(mode=m, ratio_to_tutorial=r) for m, r in (("a", 0.9), ("b", 1.0), ("c", 1.05), ("d", 1.2))]
    ax = overhead_figure(rows).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "green: ratio ≤ 1.00 (as fast as the hand-written loop, or faster)",
        "orange: 1.00 < ratio ≤ 1.10 (slower by at most 10%)",
        "red: ratio > 1.10 (slower by more than 10%)"]
    from matplotlib.colors import to_hex

    assert [to_hex(p.get_facecolor()) for p in ax.patches[:4]] == [to_hex(c) for c in (
        "tab:green", "tab:green", "tab:orange", "tab:red")]


def test_busy_marks_use_the_best_calibration_of_the_same_host_and_cores():
    quiet = Row(**_row(mode="q", calibration_seconds=[1.0e-3, 1.1e-3]))
    drifted = Row(**_row(mode="d", calibration_seconds=[1.0e-3, 1.5e-3]))
    other_host = Row(**_row(mode="o", host="far", calibration_seconds=[2.0e-3, 2.1e-3]))
    mark_busy([quiet, drifted, other_host])
    assert quiet.busy == [] and other_host.busy == []
    assert drifted.busy == ["calibration: the kernel ran up to 50% slower than its best in this run (bound 20%)"]
    assert drifted.calibration_drift == pytest.approx(0.5)


def test_a_grid_report_has_a_section_per_machine_kind_and_a_crossover_per_cpu_gpu_pair():
    cpu_box, gpu_box = "Test CPU, 2 logical cores, 16 GiB, no GPU", "Big CPU, 64 logical cores, 512 GiB, GPU H200"
    rows = []
    for batch, cpu_seconds, gpu_seconds in ((32, 1e-3, 4e-3), (256, 8e-3, 5e-3), (1024, 32e-3, 6e-3)):
        common = dict(suite="fcn-r", case=f"batch {batch}", batch_size=batch, mode="eager")
        rows.append(_row(**common, seconds_per_step=cpu_seconds, machine=cpu_box, worker="0@small"))
        rows.append(_row(**common, seconds_per_step=cpu_seconds / 4, machine=gpu_box, worker="1@big"))
        rows.append(_row(**common, seconds_per_step=gpu_seconds, device="cuda:0", device_name="H200",
                         machine=gpu_box, worker="1@big"))
    text = _readme(_bench(rows))
    assert f"### Machine: {cpu_box}" in text and f"### Machine: {gpu_box}" in text and "Workers: 0@small." in text
    crossover = [line for line in text.splitlines() if line.startswith("| fcn-r | H200 vs ")]
    assert crossover == [  # CPU time / GPU time: (1/4 ms, 2, 8) / (4, 5, 6) and (1, 8, 32) / (4, 5, 6)
        f"| fcn-r | H200 vs {gpu_box} | a eager float32 | GPU faster from batch 1,024 | 0.06 0.40 1.33 |",
        f"| fcn-r | H200 vs {cpu_box} | a eager float32 | GPU faster from batch 256 | 0.25 1.60 5.33 |"]
