"""How fast is each TensorFlow mode, and the Keras tutorial loop, on one experiment?

Builds every mode of the TF backend (graph, eager, xla, epoch, xla-epoch) and the hand-written
Keras tutorial loop (Backend.tutorial) for each dtype, in one process, then times them interleaved:
in every round each trainer runs the same span of batches (`--span` steps; the last round's order
is reversed every other round), and the per-step median over rounds is reported with its ratio to
"graph", the tutorial-style per-step tf.function ("tutorial-eager-feed" is the tutorial loop
with its batches gathered eagerly, outside the tf.function). Building (tracing, the loop modes' first run and
XLA compilation) and the first span (graph / xla / tutorial compile on first call) are reported
separately and excluded from the per-step times.

    python tests/benchmarks/tensorflow_modes.py [--example circle] [--span 120] [--rounds 15]
    python tests/benchmarks/tensorflow_modes.py --example fcn-r-256 --span 4 --eager-span 4 --rounds 7 --dtypes float32

GFLOP/s counts the step's matrix-multiply FLOPs (crossnn.bench.flops); the peak is the best
Backend.matmul_gflops(2048) measured before and after the rounds, in the same process.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

try:
    import torch  # noqa: F401  (import order: torch before tensorflow)
except ImportError:
    pass

from crossnn import backends, examples
from crossnn.bench.flops import training_flops
from crossnn import spec as S
from crossnn.data import load_dataset
from crossnn.params import cast, initial_parameters
from crossnn.plan import BatchPlan

MODES = ("graph", "eager", "xla", "epoch", "xla-epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="circle")
    parser.add_argument("--span", type=int, default=120, help="steps per timed call of run()")
    parser.add_argument("--eager-span", type=int, default=24, help="steps per call in eager mode")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dtypes", default="float64,float32")
    args = parser.parse_args()

    if args.example.startswith("fcn-r-"):
        from crossnn.bench.suites import fcn_r_experiment

        experiment = fcn_r_experiment(int(args.example.rsplit("-", 1)[1]))
    else:
        experiment = S.load(examples.path(args.example))
    backend = backends.get("tensorflow")
    backend.prepare()
    data = load_dataset(experiment)
    plan = BatchPlan.for_experiment(experiment, data.n)
    print(f"{args.example}: {backend.runtime()}")

    trainers, firsts = {}, {}
    for dtype in args.dtypes.split(","):
        params = cast(initial_parameters(experiment), dtype)
        for mode in (*MODES, "tutorial", "tutorial-eager-feed"):
            start = time.perf_counter()
            if mode == "tutorial":
                trainer = backend.tutorial(experiment, params, data, dtype=dtype, device="cpu")
            elif mode == "tutorial-eager-feed":
                from crossnn_tensorflow.tutorial import KerasTutorialTrainer

                trainer = KerasTutorialTrainer(experiment, params, data, dtype=dtype, device="cpu", feed="eager")
            else:
                trainer = backend.build(experiment, params, data, dtype=dtype, device="cpu", mode=mode)
            build = time.perf_counter() - start
            start = time.perf_counter()
            trainer.run(plan.batches(0, 2))  # the first call: graph/xla/tutorial trace or compile here
            firsts[dtype, mode] = (build, time.perf_counter() - start)
            trainers[dtype, mode] = trainer

    peaks = {dtype: backend.matmul_gflops(2048, dtype, "cpu") for dtype in args.dtypes.split(",")}
    cycle = itertools.count(2)
    times = {key: [] for key in trainers}
    for r in range(args.rounds):
        order = list(trainers) if r % 2 == 0 else list(reversed(trainers))
        for key in order:
            span = args.eager_span if key[1] == "eager" else args.span
            first = next(cycle) * args.span % plan.steps
            batches = plan.batches(first, first + span) if first + span <= plan.steps else plan.batches(0, span)
            batches = [b for b in batches if len(b) == plan.batch_size]
            trainer = trainers[key]
            trainer.synchronize()
            start = time.perf_counter()
            trainer.run(batches)
            trainer.synchronize()
            times[key].append((time.perf_counter() - start) / span)

    peaks = {dtype: max(peak, backend.matmul_gflops(2048, dtype, "cpu")) for dtype, peak in peaks.items()}
    flops = training_flops(experiment.model, plan.batch_size)
    print(f"per step, median of {args.rounds} interleaved rounds of {args.span} steps (eager: {args.eager_span}); "
          f"build = construct (+ trace / loop modes' first run / XLA compile), first = first call of 2 steps")
    for dtype in args.dtypes.split(","):
        base = statistics.median(times[dtype, "graph"])
        print(f"  {dtype}: {flops / 1e9:.3g} GFLOP a step; tf.linalg.matmul 2048 peak {peaks[dtype]:.0f} GFLOP/s")
        for mode in (*MODES, "tutorial", "tutorial-eager-feed"):
            med = statistics.median(times[dtype, mode])
            q = np.percentile(times[dtype, mode], [25, 75])
            build, first = firsts[dtype, mode]
            print(f"  {dtype} {mode:19s} {med * 1e6:8.1f} us/step (IQR {q[0] * 1e6:7.1f}-{q[1] * 1e6:7.1f})  "
                  f"graph/this {base / med:6.2f}x  {flops / med / 1e9:7.1f} GFLOP/s ({flops / med / 1e9 / peaks[dtype]:4.0%})  "
                  f"build {build * 1e3:6.0f} ms  first {first * 1e3:6.0f} ms")


if __name__ == "__main__":
    main()
