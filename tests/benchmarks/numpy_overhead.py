"""How much does going through crossnn cost on the NumPy backend?

Times the circle net (2-5-1, sigmoid, BCE, SGD momentum 0.8, batch 100) trained by crossnn's NumPy
trainer and by the hand-written NumPy loop of crossnn_numpy.tutorial (no code shared with the
lowering), interleaved in one process, and prints the ratio of median step times (target <= 1.2).
Both start from the same parameters and must end at the same parameters.

    python tests/benchmarks/numpy_overhead.py [--epochs 50] [--repeats 7]

(`crossnn bench circle --backends numpy` measures the same ratio with the full benchmark method.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import crossnn
from crossnn.data import load_dataset
from crossnn.params import initial_parameters
from crossnn.plan import BatchPlan
from crossnn_numpy.step import NumpyTrainer
from crossnn_numpy.tutorial import TutorialTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    experiment = crossnn.example("circle")
    data = load_dataset(experiment)
    params = initial_parameters(experiment)
    plan = BatchPlan.for_experiment(experiment, data.n)
    steps = args.epochs * plan.steps_per_epoch
    batches = plan.batches(0, steps)

    times: dict[str, list[float]] = {"crossnn": [], "hand-written": []}
    final = {}
    for _ in range(args.repeats):
        for label, make in (("crossnn", NumpyTrainer), ("hand-written", TutorialTrainer)):
            trainer = make(experiment, params, data, "float64")
            start = time.perf_counter()
            trainer.run(batches)
            times[label].append((time.perf_counter() - start) / steps)
            final[label] = trainer.parameters()
    ours, hand = statistics.median(times["crossnn"]), statistics.median(times["hand-written"])
    diff = max(float(np.max(np.abs(final["crossnn"][k] - final["hand-written"][k]))) for k in final["crossnn"])
    print(f"circle net, {steps} steps x {args.repeats} repeats, float64, NumPy {np.__version__}")
    print(f"  crossnn NumPy trainer : {ours * 1e6:8.1f} us/step")
    print(f"  hand-written NumPy    : {hand * 1e6:8.1f} us/step")
    print(f"  ratio crossnn / hand  : {ours / hand:8.3f}   (target <= 1.2)")
    print(f"  max |param difference|: {diff:.1e}")


if __name__ == "__main__":
    main()
