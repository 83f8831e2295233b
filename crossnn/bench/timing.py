"""Timing one trainer the established way: the first step (which includes tracing or compiling)
timed on its own, warm-up steps excluded, the device synchronised before every clock read, several
repeats of enough steps to outlast timer noise, and the median with its interquartile range."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from crossnn.backends import Trainer
from crossnn.bench.machine import median_iqr


@dataclass
class Timing:
    first_step: float               # seconds of the first step (trace / compile / allocation)
    per_step: list[float] = field(default_factory=list)  # seconds per step, one value per repeat
    steps_per_repeat: int = 0
    warmup_steps: int = 0

    @property
    def median(self) -> float:
        return median_iqr(self.per_step)[0]

    @property
    def iqr(self) -> float:
        return median_iqr(self.per_step)[1]


def _timed(trainer: Trainer, batches: Sequence[np.ndarray]) -> float:
    trainer.synchronize()
    start = time.perf_counter()
    trainer.run(batches)
    trainer.synchronize()
    return time.perf_counter() - start


def measure(trainer: Trainer, batches: Sequence[np.ndarray], *, repeats: int = 5, min_repeat_seconds: float = 0.2,
            warmup_seconds: float = 0.1, max_steps: int = 2000) -> Timing:
    """Time `trainer` on cycles of `batches` (all the same size, so no shape change recompiles)."""
    cycle = itertools.cycle(batches)

    def take(k: int) -> list[np.ndarray]:
        return [next(cycle) for _ in range(k)]

    timing = Timing(first_step=_timed(trainer, take(1)))
    # warm up for at least `warmup_seconds` (and 2 steps), which also estimates the step time
    warm, spent = 0, 0.0
    while warm < 2 or spent < warmup_seconds:
        k = max(1, warm)
        spent += _timed(trainer, take(k))
        warm += k
        if warm >= max_steps:
            break
    timing.warmup_steps = warm
    estimate = spent / warm
    timing.steps_per_repeat = max(1, min(max_steps, math.ceil(min_repeat_seconds / max(estimate, 1e-9))))
    for _ in range(repeats):
        timing.per_step.append(_timed(trainer, take(timing.steps_per_repeat)) / timing.steps_per_repeat)
    return timing
