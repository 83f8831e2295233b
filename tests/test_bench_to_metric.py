"""`crossnn bench --to-metric METRIC=VALUE SPEC`: time to a held-out metric over several data orders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossnn import backends, example
from crossnn.bench.to_metric import Run, epoch_checks, parse_target, summarise
from crossnn.cli import main
from crossnn.data import load_dataset
from crossnn.errors import SpecError
from crossnn.metrics import accuracy
from crossnn.params import initial_parameters
from crossnn.plan import BatchPlan


@pytest.mark.parametrize("text, message", [
    ("accuracy", "--to-metric: write METRIC=VALUE (e.g. accuracy=0.97), got 'accuracy'"),
    ("mae=0.1", "--to-metric: 'mae' is not a metric of digits's loss (CrossEntropy); use accuracy"),
    ("accuracy=high", "--to-metric: 'high' is not a number"),
    ("accuracy=1.5", "--to-metric: accuracy must be in (0, 1], got 1.5"),
    ("accuracy=0", "--to-metric: accuracy must be in (0, 1], got 0"),
    ("accuracy=nan", "--to-metric: accuracy must be in (0, 1], got nan")])
def test_the_target_is_checked_against_the_specs_loss(text, message):
    with pytest.raises(SpecError) as caught:
        parse_target(text, example("digits"))
    assert str(caught.value) == message


def test_a_target_needs_held_out_samples_and_a_regression_loss_takes_mae():
    with pytest.raises(SpecError, match="circle holds no samples out; set \\[train\\] validation_split"):
        parse_target("accuracy=0.9", example("circle"))
    with pytest.raises(SpecError, match="mae must be above 0, got -1"):
        parse_target("mae=-1", example("adder"))


@pytest.mark.parametrize("argv, message", [
    (["seeds"], "--to-metric: name one spec file or example (not a suite)"),
    (["digits", "--runs", "0"], "--runs: must be an integer >= 1, got 0"),
    (["digits", "--quick"], "--quick: does not go with --to-metric"),
    (["digits", "--executor", "dask"], "--to-metric: runs on the local executor"),
    (["digits", "--dtype", "float16"], "--dtype: unknown dtype 'float16'")])
def test_bad_to_metric_options_are_one_line_exit_2(argv, message, capsys):
    assert main(["bench", "--to-metric", "accuracy=0.9", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _run(backend, mode, dtype, order, epochs, seconds):
    return Run(backend, mode, dtype, "cpu", order, epochs=epochs, seconds=seconds,
               status="ok" if epochs else "not reached")


def test_the_fastest_and_slowest_runs_are_dropped_and_the_rest_averaged():
    runs = [_run("a", "m", "float64", order, epochs, seconds)
            for order, (epochs, seconds) in enumerate([(3, 1.0), (4, 5.0), (2, 2.0), (None, 0.1), (5, 3.0)])]
    (s,) = summarise(runs)
    assert (s.reached, s.kept) == (4, 2)  # 1.0 and 5.0 dropped, 2.0 and 3.0 kept
    assert s.seconds_mean == pytest.approx(2.5) and s.seconds_spread == pytest.approx(1.0)
    assert (s.epochs_mean, s.epochs_spread, s.epochs_by_order) == (3.5, 3, [3, 4, 2, None, 5])


def test_equal_epochs_are_checked_in_float64_and_only_shown_in_float32():
    runs = [_run("a", "m", dtype, 0, 3, 1.0) for dtype in ("float64", "float32")]
    runs += [_run("b", "m", dtype, 0, 4, 1.0) for dtype in ("float64", "float32")]
    checks = epoch_checks(summarise(runs))
    assert checks[0] == ("FAIL", "float64: the same math took different epochs: order 0: a m 3, b m 4")
    assert checks[1][0] == "shown" and "not checked: float32 rounding" in checks[1][1]


def _epochs_to(target: float, order: int) -> int | None:
    """An independent reference: the NumPy backend trained epoch by epoch on data order `order`,
    held-out accuracy computed here."""
    experiment = example("digits")
    data, params = load_dataset(experiment), initial_parameters(experiment)
    t = experiment.train
    plan = BatchPlan(data.n, t.batch_size, t.epochs, t.shuffle, t.drop_last, experiment.seed + order)
    trainer = backends.get("numpy").build(experiment, params, data, dtype="float64", device="cpu", mode="default")
    for epoch in range(plan.epochs):
        trainer.run(plan.batches(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch))
        if accuracy(experiment.loss, np.asarray(trainer.predict(data.validation.x)), data.validation.y) >= target:
            return epoch + 1
    return None


def test_time_to_accuracy_on_digits_reports_seconds_and_equal_epochs_per_backend_in_float64(tmp_path, capsys):
    out = tmp_path / "ttm.json"
    assert main(["bench", "--to-metric", "accuracy=0.93", "digits", "--backends", "numpy,torch",
                 "--modes", "default,xp", "--runs", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["kind"] == "crossnn-to-metric" and doc["target"]["metric"] == "accuracy"
    summaries = {(s["backend"], s["mode"]): s for s in doc["summaries"]}
    assert set(summaries) == {("numpy", "default"), ("torch", "xp")}
    reference = [_epochs_to(0.93, order) for order in range(3)]
    assert len(set(reference)) > 1  # the data orders differ, so the per-order check is a real one
    for s in summaries.values():
        assert s["dtype"] == "float64" and s["reached"] == 3 and s["kept"] == 1
        assert s["epochs_by_order"] == reference and s["seconds_mean"] > 0
    assert doc["checks"] == [{"verdict": "pass", "text": "float64: numpy default, torch xp reached the target at "
                                                         "the same epoch for each of the 3 data orders"}]
    assert "check: pass: float64" in text and "epochs per data order" in text
    assert all(r["calibration_seconds"] and r["host"] for r in doc["runs"])
