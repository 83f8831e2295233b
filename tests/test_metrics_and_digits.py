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
from crossnn.metrics import accuracy, mae, metric_values
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
    if record is not result.reference:  # the NumPy float64 run is the reference itself
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


def test_binary_accuracy_from_probabilities_and_from_logits_by_hand():
    """Probabilities count as class 1 above 0.5 and logits above 0 (both strictly). With targets 1, 0, 0, 1, 0,
    the probabilities predict 1, 0, 1, 0, 0 (0.5 itself is 0): 3 of 5 right; the logits predict the same,
    where a 0.5 threshold would turn the logit 0.3 into a right 0 (4 of 5)."""
    y = np.array([[1.0], [0.0], [0.0], [1.0], [0.0]])
    probabilities = np.array([[0.9], [0.4], [0.6], [0.5], [0.1]])
    assert accuracy(S.BCE(log_min=-100.0), probabilities, y) == 0.6
    logits = np.array([[2.0], [-1.0], [0.3], [0.0], [-3.0]])
    assert accuracy(S.BCELogits(), logits, y) == 0.6


def test_categorical_accuracy_from_one_hot_and_sparse_targets_by_hand():
    """The predicted class is the argmax of each row, logits or probabilities alike: 1, 0, 1, 2 against the
    true classes 1, 0, 0, 2, given as one-hot rows or as indices: 3 of 4 right."""
    labels = np.array([1, 0, 0, 2])
    one_hot = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    logits = np.array([[1.0, 3.0, 2.0], [0.5, 0.1, -1.0], [2.0, 2.5, -3.0], [0.0, 0.0, 1.0]])
    probabilities = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.45, 0.5, 0.05], [0.1, 0.1, 0.8]])
    assert accuracy(S.CrossEntropy(from_logits=True, sparse=False), logits, one_hot) == 0.75
    assert accuracy(S.CrossEntropy(from_logits=False, sparse=False, log_min=-100.0), probabilities, one_hot) == 0.75
    assert accuracy(S.CrossEntropy(from_logits=True, sparse=True), logits, labels) == 0.75
    assert accuracy(S.MSE(), logits, one_hot) is None
    # a sequence output (N, T, classes): one prediction per time step, the classes on the last axis; as two
    # samples of two steps the same four rows are still 3 of 4 right (argmax over the time axis gave 5/6)
    assert accuracy(S.CrossEntropy(from_logits=True, sparse=False), logits.reshape(2, 2, 3),
                    one_hot.reshape(2, 2, 3)) == 0.75


def test_mae_and_the_metrics_that_apply_by_hand():
    """mean |output - y| over every element: (0.5 + 0 + 1 + 1.5) / 4 = 0.75; none for class indices or a
    shape mismatch. metric_values keeps the named metrics that apply: a regression loss has no accuracy;
    with logits the four positive outputs all say 1, against targets 0, 1, 1, 1: 0.75."""
    output, y = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.5, 2.0], [2.0, 5.5]])
    assert mae(output, y) == 0.75
    assert mae(output, np.array([0, 1])) is None and mae(output, y[:, :1]) is None
    assert metric_values(S.MSE(), ("accuracy", "mae"), output, y) == {"mae": 0.75}
    assert metric_values(S.BCELogits(), ("accuracy",), output, (y > 1.8).astype(float)) == {"accuracy": 0.75}
