"""Property-based parity: hypothesis generates specs (depth, widths, activations, losses,
optimizers, batch sizes, shuffling) and every installed backend must agree with the NumPy
reference in float64 to 1e-9. 100 examples by default; more with --parity-examples N."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from crossnn import backends
from crossnn.harness import RunSpec, train
from crossnn.parity import compare
from tests.strategies import trainable_experiments


def test_all_backends_agree_in_float64(request):
    names = [name for name in backends.available() if not backends.get(name).reference]
    examples = request.config.getoption("--parity-examples")

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(trainable_experiments())
    def check(case):
        experiment, task = case
        runs = [RunSpec(name, "float64") for name in names]
        result = train(experiment, runs, snapshot_every=1)
        assert result.reference.ok, result.reference.message
        for record in result.records:
            parity = compare(result.reference, record)
            assert parity.passed, (f"{task}: {parity.label}: {parity.note or ''} max rel {parity.max_rel:.2e} "
                                   f"at step {parity.first_fail_step}")

    check()
