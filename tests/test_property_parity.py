"""Property-based parity: hypothesis generates specs (depth, widths, activations, dropout, losses,
optimizers, batch sizes, shuffling) and every installed backend must agree with the NumPy
reference in float64 to 1e-9. Every loss meets every optimizer: the examples are spread over the
7 x 6 (loss, optimizer) cells, at least 100 in all by default; more with --parity-examples N."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings

from crossnn import backends
from crossnn.harness import RunSpec, train
from crossnn.parity import compare
from tests.strategies import OPTIMIZER_KINDS, TASKS, trainable_experiments


@pytest.mark.parametrize("kind", OPTIMIZER_KINDS)
@pytest.mark.parametrize("task", TASKS)
def test_all_backends_agree_in_float64(request, task, kind):
    names = [name for name in backends.available() if not backends.get(name).reference]
    if not names:
        pytest.skip("no backend besides the NumPy reference is installed")
    examples = math.ceil(request.config.getoption("--parity-examples") / (len(TASKS) * len(OPTIMIZER_KINDS)))

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(trainable_experiments(task=task, kind=kind))
    def check(case):
        experiment, _ = case
        runs = [RunSpec(name, "float64") for name in names]
        result = train(experiment, runs, snapshot_every=1)
        assert result.reference.ok, result.reference.message
        for record in result.records:
            parity = compare(result.reference, record)
            assert parity.passed, (f"{task} / {kind}: {parity.label}: {parity.note or ''} max rel "
                                   f"{parity.max_rel:.2e} at step {parity.first_fail_step}")

    check()
