"""The batch plan: which sample indices every training step uses, computed once for all backends."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from crossnn.rng import stream
from crossnn.spec import Experiment


class BatchPlan:
    """Steps are numbered from 0. Epoch e visits arange(N), or a permutation drawn from the stream
    ("plan", e) when shuffling, cut into batches of batch_size (the short last one kept unless
    drop_last). Nothing is materialised beyond one epoch's order: a step's batch is computed when
    asked for, so a plan of 10^12 epochs costs no more than one of 1."""

    def __init__(self, n_samples: int, batch_size: int, epochs: int, shuffle: bool, drop_last: bool, seed: int):
        self.n_samples = n_samples
        self.batch_size = min(batch_size, n_samples)
        self.epochs = epochs
        self.shuffle = shuffle
        self.seed = seed
        full, rest = divmod(n_samples, self.batch_size)
        kept_rest = rest if rest and not drop_last else 0
        self.steps_per_epoch = full + (1 if kept_rest else 0)
        self.steps = self.steps_per_epoch * epochs
        #: the distinct batch sizes, largest first
        self.batch_sizes = [self.batch_size] + ([kept_rest] if kept_rest else [])

    @classmethod
    def for_experiment(cls, experiment: Experiment, n_samples: int) -> BatchPlan:
        t = experiment.train
        return cls(n_samples, t.batch_size, t.epochs, t.shuffle, t.drop_last, experiment.seed)

    @lru_cache(maxsize=2)
    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_samples)
        return stream(self.seed, "plan", epoch).permutation(self.n_samples)

    def batch(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        start = k * self.batch_size
        return self.epoch_order(epoch)[start:start + self.batch_size]  # the last batch may be shorter

    def batches(self, start: int, stop: int) -> list[np.ndarray]:
        """Index arrays of steps [start, stop)."""
        return [self.batch(step) for step in range(start, stop)]

    def spans(self, every: int) -> Iterator[tuple[int, int]]:
        """[start, stop) ranges of `every` steps covering the plan (the last may be shorter), made one at a time."""
        return ((s, min(s + every, self.steps)) for s in range(0, self.steps, every))


def default_snapshot_every(steps: int, snapshots: int = 500) -> int:
    """Snapshot interval giving at most about `snapshots` snapshots."""
    return max(1, math.ceil(steps / snapshots))
