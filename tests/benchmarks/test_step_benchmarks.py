"""pytest-benchmark suite: training steps of every backend's tutorial-style and fast modes.

Opt-in timing: `pytest tests/benchmarks --benchmark-enable --benchmark-json=bench.json`, then
`crossnn report --pytest-benchmark bench.json`. In the default test run pytest-benchmark is disabled
(pyproject's addopts), so each benchmark body runs once as a smoke test.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossnn
from crossnn import backends
from crossnn.bench.runner import offers
from crossnn.bench.select import select
from crossnn.bench.suites import fcn_r_experiment
from crossnn.data import load_dataset
from crossnn.params import cast, initial_parameters
from crossnn.plan import BatchPlan


def _targets():
    params = []
    for name, entry in backends.discover().items():
        if not entry.available:
            params.append(pytest.param(name, "-", marks=pytest.mark.skip(reason=f"backend '{name}' unavailable: "
                                                                                f"{entry.reason}"), id=name))
            continue
        entry.backend.prepare()
        targets, _ = select(offers([name]), ["cpu"], quick=True)  # what `crossnn bench --quick` times
        for target in targets:
            params.append(pytest.param(name, target.mode, id=f"{name}-{target.mode}"))
    return params


def _time_span(benchmark, experiment, backend_name, mode, steps):
    data = load_dataset(experiment)
    params = cast(initial_parameters(experiment), "float32")
    plan = BatchPlan.for_experiment(experiment, data.n)
    batches = plan.batches(0, steps)
    backend = backends.get(backend_name)
    backend.prepare()
    trainer = backend.build(experiment, params, data, dtype="float32", device="cpu", mode=mode)
    trainer.run(batches)  # first call: tracing / compiling stays out of the timing
    benchmark.extra_info.update(backend=backend_name, mode=mode, dtype="float32", device="cpu", steps=steps,
                                case=experiment.name, version=backend.version())

    def span():
        losses = trainer.run(batches)
        trainer.synchronize()
        return losses

    losses = benchmark(span)
    assert np.all(np.isfinite(losses)) and len(losses) == steps


@pytest.mark.parametrize("backend_name, mode", _targets())
def test_circle_epoch(benchmark, backend_name, mode):
    """One epoch (12 steps of 100 samples) of the circle net."""
    _time_span(benchmark, crossnn.example("circle"), backend_name, mode, steps=12)


@pytest.mark.parametrize("backend_name, mode", _targets())
def test_fcn_r_batch_256_step(benchmark, backend_name, mode):
    """One training step of FCN-R (784-2048-4096-1024-10) on 256 samples."""
    _time_span(benchmark, fcn_r_experiment(256), backend_name, mode, steps=1)
