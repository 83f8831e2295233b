"""The data set of an experiment, generated or read once in NumPy and checked against the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossnn.errors import DataError
from crossnn.memory import check_data
from crossnn.rng import stream
from crossnn.spec import Experiment


@dataclass(frozen=True)
class Dataset:
    """x: float64 (N, *inputs). y: float64 (N, *outputs), or int64 class indices (N,) for sparse losses.
    The training samples; `validation` holds the samples a validation split keeps out of training."""

    x: np.ndarray
    y: np.ndarray
    validation: Dataset | None = None

    @property
    def n(self) -> int:
        return len(self.x)


def load_dataset(experiment: Experiment) -> Dataset:
    """Generate or read the data from the "data" stream of the seed, check it fits the model, and
    hold out the last `validation_split` of the samples (before any shuffling, as Keras does)."""
    check_data(experiment)  # a generator's arrays must fit in memory before it draws them
    x, y = experiment.data.arrays(stream(experiment.seed, "data"), experiment.base_dir)
    full = check_dataset(experiment, np.asarray(x), np.asarray(y))
    split = experiment.train.validation_split
    if not split:
        return full
    cut = int(full.n * (1.0 - split))
    if cut == full.n or cut == 0:
        raise DataError(f"train.validation_split: {split} of {full.n} samples leaves "
                        f"{'no validation' if cut == full.n else 'no training'} samples")
    return Dataset(full.x[:cut], full.y[:cut], Dataset(full.x[cut:], full.y[cut:]))


def check_dataset(experiment: Experiment, x: np.ndarray, y: np.ndarray) -> Dataset:
    """x as float64 (N, *model.input_shape) and y as float64 (N, *output shape), or int64 class
    indices (N,) for sparse cross-entropy; a DataError naming the field when they do not fit."""
    model, loss = experiment.model, experiment.loss
    want = model.input_shape
    if x.ndim == 1 and want == (1,):
        x = x.reshape(-1, 1)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataError(f"data.x: expected real numbers, got dtype {x.dtype}")
    if x.shape[1:] != want:
        described = (f"{x.shape[1]} feature column(s)" if x.ndim == 2 and len(want) == 1
                     else f"samples of shape {list(x.shape[1:])}")
        raise DataError(f"data.x: has {described} but model.inputs = {model.inputs}")
    if len(y) != len(x):
        raise DataError(f"data.y: has {len(y)} rows but data.x has {len(x)}")
    if len(x) == 0:
        raise DataError("data.x: no samples")
    _check_finite("data.x", x)
    for node in model.nodes:
        if node.layer.reads_ids:
            _check_ids(x, node.layer)
    if loss.sparse_targets:
        y = _class_indices(y, model.output_units)
    else:
        out = model.output_shape
        if y.ndim == 1 and out == (1,):
            y = y.reshape(-1, 1)
        if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
            raise DataError(f"data.y: expected real numbers, got shape {y.shape} dtype {y.dtype}")
        if y.shape[1:] != out:
            described = (f"{y.shape[1]} column(s)" if y.ndim == 2 and len(out) == 1
                         else f"samples of shape {list(y.shape[1:])}")
            shown = out[0] if len(out) == 1 else list(out)
            raise DataError(f"data.y: has {described} but the model outputs {shown} "
                            f"(layer '{model.layers[-1].name}')")
        _check_finite("data.y", y)
        y = y.astype(np.float64)
    return Dataset(np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y))


def _check_finite(field: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0]
        place = (f"row {where[0]}, column {where[1]}" if a.ndim == 2
                 else f"sample {where[0]}, index {tuple(int(i) for i in where[1:])}")
        raise DataError(f"{field}: value {a[tuple(where)]} at {place}: data must be finite")


def _check_ids(x: np.ndarray, layer) -> None:
    """The model input of an embedding layer holds whole numbers in [0, input_dim)."""
    if not np.all(x == np.round(x)):
        raise DataError(f"data.x: layer '{layer.name}' ({layer.kind}) reads integer ids, but x holds fractions")
    if x.min() < 0 or x.max() >= layer.input_dim:
        raise DataError(f"data.x: ids must lie in [0, {layer.input_dim - 1}] for layer '{layer.name}' "
                        f"(input_dim = {layer.input_dim}), got {x.min():g}..{x.max():g}")


def _class_indices(y: np.ndarray, classes: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"data.y: sparse cross-entropy wants class indices (N,) or (N, 1), got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or np.iscomplexobj(y):
        raise DataError(f"data.y: sparse cross-entropy wants integer class indices, got dtype {y.dtype}")
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise DataError("data.y: sparse cross-entropy wants integer class indices")
    labels = y.astype(np.int64)
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"data.y: class indices must lie in [0, {classes - 1}] for {classes} output units, "
                        f"got {labels.min()}..{labels.max()}")
    return labels
