"""Metrics computed in NumPy from a model's outputs, the same way for every backend."""

from __future__ import annotations

import numpy as np

from crossnn.spec import Loss


def accuracy(loss: Loss, output: np.ndarray, y: np.ndarray) -> float | None:
    """Fraction of samples classified right, read from the output the way the loss defines it:
    probability > 0.5, logit > 0, or argmax over classes. None for regression losses."""
    output = np.asarray(output, dtype=np.float64)
    if loss.outputs in ("probability", "logit"):
        threshold = 0.5 if loss.outputs == "probability" else 0.0
        return float(np.mean((output > threshold) == (y > 0.5)))
    if loss.outputs in ("class_probabilities", "class_logits"):
        truth = y if loss.sparse_targets else np.argmax(y, axis=1)
        return float(np.mean(np.argmax(output, axis=1) == truth))
    return None
