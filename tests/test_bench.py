"""Benchmark machinery: device/mode selection (GPU rows are skipped, never faked), FLOP counting,
the timing method, and a quick end-to-end bench + report on the NumPy backend."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import crossnn
from crossnn.bench.flops import training_flops
from crossnn.bench.isolate import in_child, merge
from crossnn.bench.runner import BenchResult, Row, mark_busy
from crossnn.bench.machine import median_iqr
from crossnn.bench.select import Offer, Skipped, Target, select
from crossnn.bench.suites import fcn_r_experiment
from crossnn.bench.timing import Timer, interleave
from crossnn.cli import main

CPU_ONLY = {"numpy": Offer(("cpu",), ("default",)), "torch": Offer(("cpu",), ("eager", "xp", "compile"), ("xp",))}
WITH_GPU = {"torch": Offer(("cpu", "cuda:0"), ("eager", "xp"), ("xp",)),
            "tensorflow": Offer(("cpu", "gpu:0"), ("graph",))}
#: a CPU-only fast mode preferred where it runs, like torch's onednn
CPU_ONLY_MODE = {"torch": Offer(("cpu", "cuda:0"), ("eager", "xp", "onednn"), ("onednn", "xp"), {"onednn": ("cpu",)})}


def test_gpu_rows_are_skipped_with_a_note_when_no_gpu_is_seen():
    targets, skipped = select(CPU_ONLY, ["cpu", "cuda"], quick=True)
    assert targets == [Target("numpy", "cpu", "default"), Target("torch", "cpu", "eager"), Target("torch", "cpu", "xp")]
    assert skipped == [Skipped("numpy", "cuda", "default", "numpy sees no GPU here (its devices: cpu)"),
                       Skipped("torch", "cuda", "eager", "torch sees no GPU here (its devices: cpu)"),
                       Skipped("torch", "cuda", "xp", "torch sees no GPU here (its devices: cpu)")]


def test_cuda_and_gpu_spellings_select_each_frameworks_gpu():
    targets, skipped = select(WITH_GPU, ["cuda"])
    assert targets == [Target("torch", "cuda:0", "eager"), Target("torch", "cuda:0", "xp"),
                       Target("tensorflow", "gpu:0", "graph")]
    assert skipped == []
    assert select(WITH_GPU, ["gpu:0"])[0][-1] == Target("tensorflow", "gpu:0", "graph")


def test_quick_takes_the_first_fast_mode_that_runs_on_each_device_and_skips_cpu_only_modes_on_a_gpu():
    targets, skipped = select(CPU_ONLY_MODE, ["cpu", "cuda"], quick=True)
    assert targets == [Target("torch", "cpu", "eager"), Target("torch", "cpu", "onednn"),
                       Target("torch", "cuda:0", "eager"), Target("torch", "cuda:0", "xp")]
    assert skipped == []
    targets, skipped = select(CPU_ONLY_MODE, ["cuda"])
    assert targets == [Target("torch", "cuda:0", "eager"), Target("torch", "cuda:0", "xp")]
    assert skipped == [Skipped("torch", "cuda", "onednn", "torch's onednn mode runs on CPU only")]


def test_a_mode_the_installed_framework_cannot_run_is_skipped_and_quick_falls_back_to_the_next_fast_mode():
    offer = CPU_ONLY_MODE["torch"]
    lacking = {"torch": Offer(offer.devices, offer.modes, offer.fast_modes, offer.mode_device_kinds,
                              {"onednn": "this torch has no oneDNN"})}
    targets, skipped = select(lacking, ["cpu"], quick=True)
    assert targets == [Target("torch", "cpu", "eager"), Target("torch", "cpu", "xp")] and skipped == []
    targets, skipped = select(lacking, ["cpu"])
    assert [t.mode for t in targets] == ["eager", "xp"]
    assert skipped == [Skipped("torch", "cpu", "onednn",
                               "torch's onednn mode is unavailable: this torch has no oneDNN")]


def test_mode_selection():
    targets, skipped = select(CPU_ONLY, ["cpu"])
    assert [t.mode for t in targets] == ["default", "eager", "xp", "compile"]  # every mode by default
    targets, skipped = select(CPU_ONLY, ["cpu"], modes=["xp"])
    assert targets == [Target("torch", "cpu", "xp")]
    assert skipped[0].backend == "numpy" and "none of these modes" in skipped[0].reason
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select(CPU_ONLY, ["tpu"])


def test_training_flops_of_fcn_r():
    # 784-2048-4096-1024-10, batch 256: first layer forward + weight gradient, the rest also input gradients
    sizes = [(784, 2048), (2048, 4096), (4096, 1024), (1024, 10)]
    expected = 256 * sum(2 * a * b * (2 if i == 0 else 3) for i, (a, b) in enumerate(sizes))
    assert training_flops(fcn_r_experiment(256).model, 256) == expected


def test_median_and_iqr():
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 2.0)
    assert median_iqr([5.0]) == (5.0, 0.0)


class _CountingTrainer:
    """Stands in for a trainer: counts steps and synchronisations."""

    def __init__(self):
        self.steps, self.syncs = 0, 0

    def run(self, batches):
        self.steps += len(batches)
        return np.zeros(len(batches))

    def synchronize(self):
        self.syncs += 1


def test_timing_separates_the_first_step_and_repeats():
    trainer = _CountingTrainer()
    timer = Timer(trainer, [np.arange(4)], min_repeat_seconds=0.0, warmup_seconds=0.0)
    interleave({"only": timer}, repeats=5)
    timing = timer.timing
    assert len(timing.per_step) == 5 and timing.steps_per_repeat >= 1
    assert trainer.steps == 1 + timing.warmup_steps + 5 * timing.steps_per_repeat
    assert trainer.syncs == 2 * (1 + 2 + 5)  # before and after every timed call (2 warm-up calls here)


def test_interleaved_repeats_take_turns_and_drop_a_trainer_that_fails():
    log = []

    class Logging(_CountingTrainer):
        def __init__(self, name, fail_at=None):
            super().__init__()
            self.name, self.fail_at = name, fail_at

        def run(self, batches):
            log.append(self.name)
            if self.steps == self.fail_at:
                raise RuntimeError("out of memory")
            return super().run(batches)

    timers = {name: Timer(Logging(name, fail_at), [np.arange(4)], min_repeat_seconds=0.0, warmup_seconds=0.0)
              for name, fail_at in (("a", None), ("b", None), ("c", 3 + 1))}
    log.clear()  # first steps and warm-up (3 steps in 2 calls each) done
    errors = interleave(timers, repeats=3)
    assert log == ["a", "b", "c", "a", "b", "c", "a", "b"]  # c failed in its second repeat
    assert list(errors) == ["c"] and "out of memory" in str(errors["c"])
    assert list(timers) == ["a", "b"] and all(len(t.timing.per_step) == 3 for t in timers.values())


def test_quick_bench_and_report_on_numpy(tmp_path, capsys):
    bench_json = tmp_path / "bench.json"
    assert main(["bench", "seeds", "--backends", "numpy", "--quick", "--repeats", "5", "--json", str(bench_json)]) == 0
    text = capsys.readouterr().out
    assert "seeds/circle" in text and "tutorial" in text
    doc = json.loads(bench_json.read_text())
    circle = [r for r in doc["rows"] if r["case"] == "circle"]
    assert {r["mode"] for r in circle} == {"tutorial", "default"}
    lowered = next(r for r in circle if r["mode"] == "default")
    assert lowered["repeats"] == 5 and lowered["seconds_per_step"] > 0 and 0 < lowered["ratio_to_tutorial"] < 5
    assert lowered["gflops"] == pytest.approx(lowered["flops_per_step"] / lowered["seconds_per_step"] / 1e9)
    assert doc["peaks"]["cpu float32"] > 1.0 and doc["machine"]["logical_cores"] >= 1
    # numpy was timed in a process of its own, its peak measured in turn with every case
    assert doc["settings"]["isolated"] is True
    assert set(doc["peak_sources"]["cpu float32"]) == {"numpy"}
    # the share is of the peak measured in turn with the row, which the peak table's best includes
    assert lowered["percent_of_peak"] == pytest.approx(100 * lowered["gflops"] / lowered["peak_gflops"])
    assert lowered["peak_gflops"] <= doc["peaks"]["cpu float32"] and lowered["own_peak_gflops"] > 1.0

    assert main(["report", "linear-2x3", "--backends", "numpy", "--bench", str(bench_json), "--name", "t",
                 "--out", str(tmp_path / "reports")]) == 0
    folder = tmp_path / "reports" / "t"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "bench.json", "crossnn-manifest.txt", "loss_linear-2x3.png", "overhead.png",
                     "parity_linear-2x3.png", "run_linear-2x3.json"]
    readme = (folder / "README.md").read_text()
    assert "## Parity: linear-2x3" in readme and "### Checks" in readme and "GPU rows skipped, not faked" in readme
    assert 'so no "x tutorial": two-tower (numpy).' in readme  # the hand-written loops are chains only
    assert all((folder / n).read_bytes()[:4] == b"\x89PNG" for n in names if n.endswith(".png"))


def test_a_case_that_cannot_be_set_up_costs_only_its_own_rows():
    """A case whose data cannot be drawn (here: more than the machine's memory) becomes failure rows
    for each backend and device, with the reason; the other cases of the same process keep theirs."""
    from crossnn import spec as S
    from crossnn.bench.runner import run_in_process
    from crossnn.bench.suites import Case

    good = crossnn.load_spec("circle")
    huge = dataclasses.replace(good, data=S.DataSource.kinds()["circle"](n=10**13))
    lines = []
    result = run_in_process([Case("t", "huge", huge), Case("t", "good", good)], ["numpy"], ["cpu"], ["float64"],
                            quick=True, repeats=2, min_repeat_seconds=0.01, say=lines.append, peak_matrix=64)
    assert [(f.case, f.backend, f.device, f.mode) for f in result.failures] == [("huge", "numpy", "cpu", "every mode")]
    assert "data.n: 10000000000000 samples make data of" in result.failures[0].reason
    assert any(line.startswith("[1/2] t huge float64: not run: SpecError") for line in lines)
    assert {(r.case, r.mode) for r in result.rows} == {("good", "tutorial"), ("good", "default")}


def test_report_refuses_a_file_that_is_not_a_bench_result(tmp_path, capsys):
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"rows": []}))
    assert main(["report", "--bench", str(other), "--out", str(tmp_path)]) == 2
    assert "is not a `crossnn bench --json` file" in capsys.readouterr().err
    assert not (tmp_path / "latest").exists()


def _row(backend, gflops, own):
    return Row(suite="s", case="c", backend=backend, version="1", mode="m", device="cpu", device_name="cpu",
               dtype="float32", parameters=1, batch_size=1, flops_per_step=1, seconds_per_step=1.0, iqr_seconds=0.0,
               repeats=5, steps_per_repeat=1, build_seconds=0.0, first_step_seconds=0.0, samples_per_second=1.0,
               gflops=gflops, peak_gflops=own, percent_of_peak=100 * gflops / own, own_peak_gflops=own,
               percent_of_own_peak=100 * gflops / own)


def test_merge_takes_the_best_peak_of_every_process_for_the_table_and_keeps_each_rows_in_turn_share():
    a = BenchResult(machine={}, runtimes={"a": {}}, peaks={"cpu float32": 200.0},
                    peak_sources={"cpu float32": {"numpy": 190.0, "a": 200.0}}, rows=[_row("a", 150.0, 200.0)])
    b = BenchResult(machine={}, runtimes={"b": {}}, peaks={"cpu float32": 210.0},
                    peak_sources={"cpu float32": {"numpy": 210.0, "b": 100.0}}, rows=[_row("b", 90.0, 100.0)])
    merged = merge([a, b])
    assert merged.peak_sources == {"cpu float32": {"numpy": 210.0, "a": 200.0, "b": 100.0}}
    assert merged.peaks == {"cpu float32": 210.0}
    # the best peak was measured in another process at another moment: no row's share is of it
    assert [(r.backend, r.percent_of_peak, r.percent_of_own_peak) for r in merged.rows] == [("a", 75.0, 75.0),
                                                                                         ("b", 90.0, 90.0)]
    assert set(merged.runtimes) == {"a", "b"}


def test_a_child_process_reports_progress_and_its_error_as_one_line():
    from crossnn.bench.runner import run_in_process
    from crossnn.bench.suites import cases_for

    said = []
    job = (cases_for(["linear-2x3"], quick=True), ["numpy"], ["cpu"], ["float64"])
    options = dict(quick=True, repeats=2, min_repeat_seconds=0.01, peak_matrix=64)
    outcome = in_child(run_in_process, job, options, said.append, None)
    assert isinstance(outcome, BenchResult) and {r.mode for r in outcome.rows} == {"tutorial", "default"}
    assert any("numpy cpu default" in line and "us/step" in line for line in said)
    outcome = in_child(run_in_process, (job[0], ["no-such-backend"], *job[2:]), options, said.append, None)
    assert outcome.startswith("the benchmark process raised") and "no-such-backend" in outcome


def test_checks_compare_each_backends_best_fcn_r_mode_with_the_machine_peak_and_name_a_pinned_blas():
    from dataclasses import asdict

    from crossnn.report.markdown import _checks

    rows = [asdict(_row("a", 300.0, 400.0)), asdict(_row("a", 100.0, 400.0)), asdict(_row("b", 200.0, 220.0)),
            asdict(_row("b", 210.0, 220.0))]  # b's hand-written loop is faster, but it is not crossnn's
    for row, mode in zip(rows, ("fast", "slow", "default", "tutorial")):
        row.update(suite="fcn-r", case="batch 256", mode=mode, percent_of_peak=100 * row["gflops"] / 400.0)
    bench = {"rows": rows, "machine": {"env": {"OPENBLAS_CORETYPE": "Haswell"}},
             "backends": {"a": {"default_mode": "slow", "fast_modes": ["fast"], "reference": False},
                          "b": {"default_mode": "default", "fast_modes": [], "reference": True}}}
    lines = _checks(bench)
    text = "\n".join(lines)
    assert "- pass: FCN-R batch 256 float32 a: best mode 'fast' at 75.0% of the machine's matmul peak" in text
    assert "- FAIL: FCN-R batch 256 float32 b: best mode 'default' at 50.0%" in text
    assert any("OPENBLAS_CORETYPE=Haswell" in line for line in lines)
    bench["machine"]["env"] = {}
    assert not any("OPENBLAS_CORETYPE" in line for line in _checks(bench))


def test_rows_timed_on_a_busy_machine_are_flagged():
    """A row whose IQR is above a quarter of its median gets a '!' and a note saying to rerun it."""
    from crossnn.bench.report_table import bench_table

    quiet, busy = _row("a", 1.0, 2.0), dataclasses.replace(_row("b", 1.0, 2.0), iqr_seconds=0.5)
    mark_busy([quiet, busy])
    machine = {"cpu": "test cpu", "logical_cores": 2, "memory_gib": 1.0, "gpus": []}
    text = bench_table(BenchResult(machine=machine, runtimes={}, peaks={"cpu float32": 2.0}, peak_sources={},
                                   rows=[quiet, busy]))
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("s/c ")}
    assert "1,000,000.0 !" in rows["b"] and "!" not in rows["a"]
    assert busy.busy == ["IQR: 50% of the median (bound 25%)"] and quiet.busy == []
    assert "! 1 row(s) timed while the machine was busy, marked by IQR (1 row)" in text
    assert "x tutorial '-': no hand-written loop to compare with for s/c (a), s/c (b)" in text  # mode "m" only
