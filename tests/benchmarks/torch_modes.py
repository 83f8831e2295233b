"""How fast is each torch mode, against the hand-written tutorial loop, in one process?

Trains the circle net (2-5-1, sigmoid, BCE, SGD momentum 0.8, batch 100) with crossnn's torch
lowering in each mode (eager, xp, compile) and with the hand-written tutorial loop
(TorchBackend.tutorial), interleaved: every repeat runs each trainer for the same span of steps,
in rotating order, and the median time per step is reported with its ratio to the tutorial loop and
to eager. Warm-up (and torch.compile's compilation, timed separately) is excluded.

    python tests/benchmarks/torch_modes.py [--dtype float64] [--threads 1] [--steps 240] [--repeats 9]
        [--modes eager,xp,compile] [--example circle] [--device cpu]

--example takes a seed example's name or fcn-r:BATCH (the FCN-R benchmark net, 784-2048-4096-1024-10,
e.g. fcn-r:256 --dtype float32 --steps 5 --repeats 5); the achieved GFLOP/s of each run is printed
beside torch's measured matmul peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import crossnn
from crossnn import backends
from crossnn.data import load_dataset
from crossnn.params import cast, initial_parameters
from crossnn.plan import BatchPlan


def experiment_for(name: str):
    if name.startswith("fcn-r:"):
        from crossnn.bench.suites import fcn_r_experiment

        return fcn_r_experiment(int(name.split(":")[1]))
    return crossnn.example(name)


def matmul_flops_per_step(experiment, batch: int) -> int:
    from crossnn.bench.flops import training_flops

    return training_flops(experiment.model, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="circle")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=240, help="steps per timed span")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--modes", default="eager,xp,compile")
    args = parser.parse_args()

    backend = backends.get("torch")
    backend.prepare()
    if args.threads:
        torch.set_num_threads(args.threads)
    experiment = experiment_for(args.example)
    data = load_dataset(experiment)
    plan = BatchPlan.for_experiment(experiment, data.n)
    params = cast(initial_parameters(experiment), args.dtype)
    batches = plan.batches(0, args.steps)
    flops = matmul_flops_per_step(experiment, plan.batch_size)
    peak = backend.matmul_gflops(2048, args.dtype, args.device)

    kw = dict(dtype=args.dtype, device=args.device)
    trainers = {"tutorial": backend.tutorial(experiment, params, data, **kw)}
    for mode in args.modes.split(","):
        trainers[mode] = backend.build(experiment, params, data, mode=mode, **kw)

    warm = {}
    for name, trainer in trainers.items():
        start = time.perf_counter()
        trainer.run(plan.batches(0, min(2 * plan.steps_per_epoch, args.steps)))  # compilation, allocator
        trainer.synchronize()
        warm[name] = time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in trainers}
    order = list(trainers)
    for r in range(args.repeats):
        for name in order[r % len(order):] + order[:r % len(order)]:
            trainer = trainers[name]
            start = time.perf_counter()
            trainer.run(batches)
            trainer.synchronize()
            times[name].append((time.perf_counter() - start) / len(batches))

    runtime = backend.runtime()
    print(f"{args.example}, {args.dtype}, {args.device}, torch {torch.__version__}, "
          f"{runtime['intra_op_threads']} intra-op thread(s); {args.steps} steps x {args.repeats} repeats, interleaved;"
          f" matmul peak {peak:.1f} GFLOP/s")
    tutorial = statistics.median(times["tutorial"])
    eager = statistics.median(times["eager"]) if "eager" in times else None
    print(f"  {'run':10s} {'us/step':>11s} {'spread':>17s} {'/tutorial':>10s} {'eager/this':>11s} {'warm-up s':>10s}"
          f" {'% of peak':>10s}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e6:.0f}-{max(values) * 1e6:.0f}"
        speedup = f"{eager / median:11.2f}" if eager else " " * 11
        print(f"  {name:10s} {median * 1e6:11.1f} {spread:>17s} {median / tutorial:10.3f} {speedup} {warm[name]:10.2f}"
              f" {100 * flops / median / 1e9 / peak:10.1f}")
    reference = trainers["tutorial"].parameters()
    for name, trainer in trainers.items():
        got = trainer.parameters()
        diff = max(float(np.max(np.abs(got[k] - reference[k]))) for k in reference)
        print(f"  {name:10s} max |param - tutorial's| after the same steps: {diff:.1e}")


if __name__ == "__main__":
    main()
