"""Per-step facts every backend derives the same way: the epoch a step belongs to, its learning
rate, and its dropout masks (drawn in NumPy, one stream per layer and step, shared by all backends)."""

from __future__ import annotations

import numpy as np

from crossnn.plan import BatchPlan
from crossnn.rng import stream
from crossnn.spec import Dropout, Experiment


class StepClock:
    """Maps a 0-based global step to its epoch, learning rate and dropout masks."""

    def __init__(self, experiment: Experiment, n_samples: int):
        self.experiment = experiment
        self.steps_per_epoch = BatchPlan.for_experiment(experiment, n_samples).steps_per_epoch
        self.dropout = [(node.name, node.layer.rate, node.shape) for node in experiment.model.nodes
                        if isinstance(node.layer, Dropout)]

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def lr(self, step: int) -> float:
        return self.experiment.optimizer.lr_at(self.epoch(step), step)

    def masks(self, step: int, batch: int) -> dict[str, np.ndarray]:
        """{dropout layer: float64 (batch, *shape) of 0 or 1/(1 - rate)} for this step: one
        (batch, *shape) draw of uniforms u from stream(seed, "dropout", layer, step), in canonical
        (channels-last) layout, kept where u < 1 - rate."""
        out = {}
        for name, rate, shape in self.dropout:
            keep = stream(self.experiment.seed, "dropout", name, step).random((batch, *shape)) < 1.0 - rate
            out[name] = keep * (1.0 / (1.0 - rate))
        return out
