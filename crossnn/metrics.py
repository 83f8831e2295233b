"""Metrics computed in NumPy from a model's outputs, the same way for every backend."""

from __future__ import annotations

import numpy as np

from crossnn.spec import Loss


def accuracy(loss: Loss, output: np.ndarray, y: np.ndarray) -> float | None:
    """Fraction of predictions right, read from the output the way the loss defines it: probability
    > 0.5, logit > 0, or argmax over the classes, the last axis (one prediction per sample, or per
    time step or pixel of an output with more axes). None for regression losses."""
    output = np.asarray(output, dtype=np.float64)
    if loss.outputs in ("probability", "logit"):
        threshold = 0.5 if loss.outputs == "probability" else 0.0
        return float(np.mean((output > threshold) == (y > 0.5)))
    if loss.outputs in ("class_probabilities", "class_logits"):
        truth = y if loss.sparse_targets else np.argmax(y, axis=-1)
        return float(np.mean(np.argmax(output, axis=-1) == truth))
    return None


def mae(output: np.ndarray, y: np.ndarray) -> float | None:
    """mean |output - y| (None for class-index targets)."""
    output = np.asarray(output, dtype=np.float64)
    if y.ndim != 2 or y.shape != output.shape:
        return None
    return float(np.mean(np.abs(output - y)))


def metric_values(loss: Loss, names, output: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The named metrics that apply to this loss and data."""
    found = {"accuracy": accuracy(loss, output, y) if "accuracy" in names else None,
             "mae": mae(output, y) if "mae" in names else None}
    return {name: value for name, value in found.items() if value is not None}
