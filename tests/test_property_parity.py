"""Property-based parity: hypothesis generates specs (depth, widths, activations, dropout, losses,
optimizers, batch sizes, shuffling) and every installed backend must agree with the NumPy
reference in float64 to 1e-9. Every loss meets every optimizer: the examples are spread over the
7 x 6 (loss, optimizer) cells, at least 42 in all by default (CI's slow run: 200); more with --parity-examples N."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings

from crossnn import backends
from crossnn.harness import RunSpec, train
from crossnn.parity import compare
from tests.strategies import (
    OPTIMIZER_KINDS, TASKS, trainable_conv_experiments, trainable_experiments,
    trainable_state_and_sequence_experiments,
)


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


def test_all_backends_agree_on_convolutional_specs(request):
    """Conv2D with kernels 1-5, strides 1-3, dilations 1-2, 'same' and 'valid', odd and even input
    sizes, max and avg pooling with and without count_padding: every installed backend agrees with
    the reference at every step. A third as many examples as --parity-examples (at least 10)."""
    names = [name for name in backends.available() if not backends.get(name).reference]
    if not names:
        pytest.skip("no backend besides the NumPy reference is installed")

    @settings(max_examples=max(10, request.config.getoption("--parity-examples") // 3), deadline=None,
              derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
    @given(trainable_conv_experiments())
    def check(experiment):
        result = train(experiment, [RunSpec(name, "float64") for name in names], snapshot_every=1)
        assert result.reference.ok, result.reference.message
        for record in result.records:
            parity = compare(result.reference, record)
            layers = ", ".join(f"{layer.kind} {layer.fields_dict()}" for layer in experiment.model.layers[:2])
            assert parity.passed, (f"{parity.label} on {experiment.model.input_shape}: {layers}: max rel "
                                   f"{parity.max_rel:.2e} at step {parity.first_fail_step}")

    check()


def test_all_backends_agree_on_normalization_and_sequence_specs(request):
    """batch_norm (momentum, epsilon, running variance, center, scale, vectors or images, axis), layer_norm,
    embedding and simple_rnn / lstm / gru with their options: every installed backend agrees with the
    reference at every step, moving statistics included. A third as many examples as
    --parity-examples (at least 10)."""
    names = [name for name in backends.available() if not backends.get(name).reference]
    if not names:
        pytest.skip("no backend besides the NumPy reference is installed")

    @settings(max_examples=max(10, request.config.getoption("--parity-examples") // 3), deadline=None,
              derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
    @given(trainable_state_and_sequence_experiments())
    def check(experiment):
        result = train(experiment, [RunSpec(name, "float64") for name in names], snapshot_every=1)
        assert result.reference.ok, result.reference.message
        for record in result.records:
            parity = compare(result.reference, record)
            layers = ", ".join(f"{layer.kind} {layer.fields_dict()}" for layer in experiment.model.layers[:3])
            assert parity.passed, (f"{parity.label}: {layers}: max rel {parity.max_rel:.2e} at step "
                                   f"{parity.first_fail_step}")

    check()
