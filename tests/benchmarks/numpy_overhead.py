"""How much does going through crossnn cost on the NumPy backend?

Times the circle net (2-5-1, sigmoid, BCE, SGD momentum 0.8, batch 100) trained by crossnn's NumPy
trainer and by a hand-written NumPy loop doing the same math, interleaved in one process, and prints
the ratio of median step times (target <= 1.2). Both start from the same parameters and must end
at the same parameters, so the comparison is like for like.

    python tests/benchmarks/numpy_overhead.py [--epochs 50] [--repeats 7]
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


def hand_written_epochs(params, x, y, epochs, batch=100, lr=0.5, momentum=0.8):
    """The tutorial loop: forward, BCE, explicit backward, momentum SGD, one slice per batch."""
    w1, b1, w2, b2 = (params[k].copy() for k in ("fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias"))
    weights = [w1, b1, w2, b2]
    buffers = [None] * 4
    losses = []
    for _ in range(epochs):
        for i in range(0, len(x) - batch + 1, batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            h = 1.0 / (1.0 + np.exp(-(xb @ w1 + b1)))
            p = 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))
            losses.append(np.mean((yb - 1.0) * np.maximum(np.log1p(-p), -100.0) - yb * np.maximum(np.log(p), -100.0)))
            dp = (p - yb) / np.maximum((1.0 - p) * p, 1e-12) * (1.0 / p.size)
            dz2 = dp * (1.0 - p) * p
            dh = dz2 @ w2.T
            dz1 = dh * (1.0 - h) * h
            grads = [xb.T @ dz1, dz1.sum(axis=0), h.T @ dz2, dz2.sum(axis=0)]
            for k, (w, g) in enumerate(zip(weights, grads)):
                if buffers[k] is None:
                    buffers[k] = g.copy()
                else:
                    buffers[k] *= momentum
                    buffers[k] += g
                w -= lr * buffers[k]
    return weights, losses


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

    crossnn_times, hand_times = [], []
    for _ in range(args.repeats):
        trainer = NumpyTrainer(experiment, params, data, "float64")
        start = time.perf_counter()
        trainer.run(batches)
        crossnn_times.append((time.perf_counter() - start) / steps)

        start = time.perf_counter()
        with np.errstate(over="ignore"):
            weights, _ = hand_written_epochs(params, data.x, data.y, args.epochs)
        hand_times.append((time.perf_counter() - start) / steps)

    final = trainer.parameters()
    diff = max(np.max(np.abs(final[k] - w)) for k, w in zip(("fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias"), weights))
    ours, hand = statistics.median(crossnn_times), statistics.median(hand_times)
    print(f"circle net, {steps} steps x {args.repeats} repeats, float64, NumPy {np.__version__}")
    print(f"  crossnn NumPy trainer : {ours * 1e6:8.1f} us/step")
    print(f"  hand-written NumPy    : {hand * 1e6:8.1f} us/step")
    print(f"  ratio crossnn / hand  : {ours / hand:8.3f}   (target <= 1.2)")
    print(f"  max |param difference|: {diff:.1e}")


if __name__ == "__main__":
    main()
