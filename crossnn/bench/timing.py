"""Timing trainers the established way: the first step (which includes tracing or compiling) timed
on its own, warm-up steps excluded, the device synchronised before every clock read, several repeats
of enough steps to outlast timer noise, and the median with its interquartile range; trainers that
are compared take their repeats in turn (interleave)."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

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

    @property
    def quartiles(self) -> tuple[float, float] | None:
        """First and third quartile of the per-step times (None for fewer than 2 repeats)."""
        if len(self.per_step) < 2:
            return None
        q = statistics.quantiles(self.per_step, n=4, method="inclusive")
        return q[0], q[2]


def _timed(trainer: Trainer, batches: Sequence[np.ndarray]) -> float:
    trainer.synchronize()
    start = time.perf_counter()
    trainer.run(batches)
    trainer.synchronize()
    return time.perf_counter() - start


class Timer:
    """One trainer being timed. On creation: the first step, timed on its own, then warm-up for at
    least `warmup_seconds` (and 2 steps), which also sets how many steps a repeat takes to last
    `min_repeat_seconds`. Each repeat() then adds one timed repeat to `timing`."""

    def __init__(self, trainer: Trainer, batches: Sequence[np.ndarray], *, min_repeat_seconds: float = 0.2,
                 warmup_seconds: float = 0.1, max_steps: int = 2000):
        self.trainer = trainer
        self._cycle = itertools.cycle(batches)
        self.timing = Timing(first_step=_timed(trainer, self._take(1)))
        warm, spent = 0, 0.0
        while warm < 2 or spent < warmup_seconds:
            k = max(1, warm)
            spent += _timed(trainer, self._take(k))
            warm += k
            if warm >= max_steps:
                break
        self.timing.warmup_steps = warm
        estimate = spent / warm
        self.timing.steps_per_repeat = max(1, min(max_steps, math.ceil(min_repeat_seconds / max(estimate, 1e-9))))

    def _take(self, k: int) -> list[np.ndarray]:
        return [next(self._cycle) for _ in range(k)]

    def repeat(self) -> None:
        steps = self.timing.steps_per_repeat
        self.timing.per_step.append(_timed(self.trainer, self._take(steps)) / steps)


def interleave(timers: dict, repeats: int, between: Callable[[], None] | None = None) -> dict[object, Exception]:
    """Repeat round-robin: one repeat of every timer, `repeats` times over, so that whatever else
    the machine does during the measurement falls on all of them alike and their ratios hold.
    `between` (e.g. a calibration kernel) runs before every round and after the last. A timer whose
    trainer raises is dropped; returns those errors by key."""
    errors = {}
    for _ in range(repeats):
        if between:
            between()
        for key, timer in list(timers.items()):
            try:
                timer.repeat()
            except Exception as err:  # one failing trainer must not stop the others
                errors[key] = err
                del timers[key]
    if between:
        between()
    return errors
