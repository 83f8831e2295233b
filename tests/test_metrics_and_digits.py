"""Metrics per epoch with a validation split, and the real-data example: scikit-learn's digits on every
backend, with parity and test accuracy."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

import crossnn
from crossnn import spec as S
from crossnn.cli import main
from crossnn.data import load_dataset
from crossnn.harness import RunSpec, train
from crossnn.parity import compare

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="scikit-learn is not installed (pip install 'crossnn[digits]')")


@needs_sklearn
def test_digits_trains_to_high_test_accuracy_with_parity(backend_name):
    experiment = crossnn.example("digits")
    result = train(experiment, [RunSpec(backend_name, "float64"), RunSpec(backend_name, "float32")])
    record, single = result.records
    assert record.ok, record.message
    assert record.metrics["val_accuracy"] >= 0.95
    assert len(record.history["val_accuracy"]) == experiment.train.epochs
    assert compare(result.reference, record).max_rel <= 1e-9
    # float32 drifts (about 1e-4 after 1290 Adam steps) but stays inside its default bound.
    drift = compare(result.reference, single)
    assert drift.passed and 1e-6 < drift.max_rel < 1e-3, drift.max_rel
    assert single.metrics["val_accuracy"] >= 0.95


@needs_sklearn
def test_digits_split_and_shapes():
    data = load_dataset(crossnn.example("digits"))
    assert data.x.shape == (1347, 64) and data.validation.x.shape == (450, 64)
    assert data.y.dtype == np.int64 and set(np.unique(data.y)) == set(range(10))
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0


def test_metrics_history_in_the_json(tmp_path):
    e = dataclasses.replace(crossnn.example("circle"), train=S.Train(
        epochs=20, batch_size=100, validation_split=0.25, metrics=("accuracy", "mae")))
    spec = tmp_path / "c.toml"
    S.save(e, spec)
    out = tmp_path / "r.json"
    assert main(["run", str(spec), "--backends", "numpy", "--json", str(out), "--quiet"]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert set(run["history"]) == {"accuracy", "mae", "val_accuracy", "val_mae"}
    assert all(len(v) == 20 for v in run["history"].values())
    assert run["metrics"]["val_accuracy"] == run["history"]["val_accuracy"][-1]
    # accuracy by hand from the trained parameters
    data = load_dataset(e)
    p = {k: np.array(v) for k, v in run["final_params"].items()}
    h = 1 / (1 + np.exp(-(data.validation.x @ p["fc1/kernel"] + p["fc1/bias"])))
    out_ = 1 / (1 + np.exp(-(h @ p["fc2/kernel"] + p["fc2/bias"])))
    assert run["metrics"]["val_accuracy"] == pytest.approx(np.mean((out_ > 0.5) == (data.validation.y > 0.5)))
    assert run["metrics"]["val_mae"] == pytest.approx(np.mean(np.abs(out_ - data.validation.y)))


def test_validation_split_that_leaves_nothing_is_bad_input():
    e = dataclasses.replace(crossnn.example("linear-2x3"), train=S.Train(epochs=1, batch_size=2, validation_split=0.6))
    with pytest.raises(crossnn.DataError, match="leaves no training samples"):
        load_dataset(e)
