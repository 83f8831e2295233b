"""The harness and parity bookkeeping, with stand-in backends that misbehave on purpose."""

from __future__ import annotations

import numpy as np
import pytest

import crossnn
from crossnn import backends
from crossnn.backends import BackendEntry
from crossnn.harness import RunRecord, RunSpec, train
from crossnn.parity import Tolerance, compare
from crossnn_numpy import NumpyBackend
from crossnn_numpy.step import NumpyTrainer


class _PoisonedTrainer(NumpyTrainer):
    """The NumPy trainer, except that the loss turns NaN at step `poison_step`."""

    poison_step = 7

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def step(self, batch):
        loss = super().step(batch)
        self.steps += 1
        return float("nan") if self.steps - 1 == self.poison_step else loss


class _PoisonedBackend(NumpyBackend):
    name = "poisoned"
    reference = False

    def build(self, experiment, params, data, *, dtype, device, mode):
        return _PoisonedTrainer(experiment, params, data, dtype)


class _CrashingBackend(NumpyBackend):
    name = "crashing"
    reference = False

    def build(self, experiment, params, data, *, dtype, device, mode):
        raise RuntimeError("device lost")


@pytest.fixture
def fake_backends(monkeypatch):
    entries = dict(backends.discover())
    for cls in (_PoisonedBackend, _CrashingBackend):
        entries[cls.name] = BackendEntry(cls.name, cls(), None)
    monkeypatch.setattr(backends, "discover", lambda: entries)


def test_nan_stops_one_backend_and_the_others_finish(fake_backends):
    e = crossnn.example("circle")
    result = train(e, [RunSpec("numpy", "float32"), RunSpec("poisoned", "float64"), RunSpec("crashing", "float64")],
                   snapshot_every=5)
    f32, poisoned, crashed = result.records
    assert poisoned.status == "nonfinite" and "at step 7" in poisoned.message
    assert poisoned.steps_done == 8 and np.isnan(poisoned.losses[-1])
    assert max(poisoned.snapshots) == 5  # the snapshot after the poisoned span is not kept
    assert crashed.status == "error" and crashed.message == "RuntimeError: device lost"
    assert f32.ok and f32.steps_done == 12_000 and result.reference.steps_done == 12_000
    parity = compare(result.reference, poisoned)
    assert not parity.passed and not parity.complete and "step 7" in parity.note
    # up to the failure the poisoned run is the reference itself
    assert parity.max_abs == 0.0


def test_snapshots_cover_initial_every_n_and_final():
    result = train(crossnn.example("linear-2x3"), [RunSpec("numpy", "float64")], snapshot_every=30)
    assert sorted(result.reference.snapshots) == [0, 30, 60, 90, 100]
    assert np.array_equal(result.reference.snapshots[0]["fc/kernel"], np.zeros((3, 1)))


def _record(label_dtype, snaps, losses):
    record = RunRecord(RunSpec("x", label_dtype))
    record.snapshots = {step: {"w": np.array(v, dtype=float)} for step, v in snaps.items()}
    record.losses = np.array(losses, dtype=float)
    return record


def test_parity_numbers_by_hand():
    ref = _record("float64", {0: [1.0, -2.0], 10: [2.0, -4.0], 20: [0.5, 1.0]}, [1.0, 2.0])
    run = _record("float64", {0: [1.0, -2.0], 10: [2.0, -4.0 + 1e-6], 20: [0.5 + 3e-3, 1.0]}, [1.0, 2.5])
    p = compare(ref, run, Tolerance(rtol=1e-3, atol=0.0))
    (w,) = p.params
    assert w.max_abs == pytest.approx(3e-3) and w.worst_step == 20
    assert w.max_rel == pytest.approx(3e-3 / 1.0)          # scale at step 20 is max|r| = 1
    assert w.first_fail_step == 20                          # 1e-6 <= 1e-3 * 4 at step 10, 3e-3 > 1e-3 at 20
    assert p.curve == [(0, 0.0), (10, pytest.approx(1e-6 / 4)), (20, pytest.approx(3e-3))]
    assert p.loss_max_abs == pytest.approx(0.5)
    assert not p.passed
    assert compare(ref, run, Tolerance(rtol=1e-2, atol=0.0)).passed


def test_backend_requirements_are_checked_without_importing():
    class Needy(NumpyBackend):
        requires = ("a_module_that_does_not_exist_anywhere",)
        install_hint = "pip install it"

    assert Needy().unavailable_reason() == "a_module_that_does_not_exist_anywhere is not installed (pip install it)"
    assert NumpyBackend().unavailable_reason() is None
