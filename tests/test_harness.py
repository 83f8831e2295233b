"""The harness and parity bookkeeping, with stand-in backends that misbehave on purpose."""

from __future__ import annotations

import os
import subprocess
import sys

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


class _UnimportableBackend(NumpyBackend):
    """A backend whose framework is installed but raises while being imported (a broken shared
    library); counts how often it is asked to prepare."""

    name = "unimportable"
    reference = False
    requires = ("crossnn_test_broken_framework",)
    prepared = 0

    def prepare(self):
        type(self).prepared += 1
        import crossnn_test_broken_framework  # noqa: F401


class _MisconfiguredBackend(NumpyBackend):
    """A backend whose framework imports but refuses to be configured."""

    name = "misconfigured"
    reference = False
    requires = ()

    def prepare(self):
        raise RuntimeError("deterministic algorithms are not supported here")


@pytest.fixture
def broken_backends(monkeypatch, tmp_path):
    (tmp_path / "crossnn_test_broken_framework.py").write_text(
        "raise ImportError('libbroken.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = dict(backends.discover())
    for cls in (_UnimportableBackend, _MisconfiguredBackend):
        entries[cls.name] = BackendEntry(cls.name, cls(), None)
    monkeypatch.setattr(backends, "discover", lambda: entries)
    monkeypatch.setattr(_UnimportableBackend, "prepared", 0)


def test_a_framework_that_fails_to_import_fails_its_runs_and_the_others_finish(broken_backends):
    e = crossnn.example("linear-2x3")
    runs = [RunSpec("numpy", "float32"), RunSpec("unimportable", "float64"), RunSpec("misconfigured", "float64")]
    result = train(e, runs)
    f32, unimportable, misconfigured = result.records
    assert f32.ok and f32.steps_done == 100
    assert unimportable.status == "error" and not unimportable.snapshots
    assert unimportable.message == ("crossnn_test_broken_framework failed to import: ImportError: libbroken.so: "
                                    "cannot open shared object file")
    assert misconfigured.message == ("misconfigured failed to start: RuntimeError: deterministic algorithms are not "
                                      "supported here")
    assert not compare(result.reference, unimportable).passed
    # from then on both are unavailable, with the reason, and are not imported again
    assert "unimportable" not in backends.available() and "misconfigured" not in backends.available()
    with pytest.raises(crossnn.BackendError, match="backend 'unimportable' is unavailable: "
                                                   "crossnn_test_broken_framework failed to import: ImportError"):
        backends.get("unimportable")
    (again,) = train(e, [RunSpec("unimportable", "float64")]).records
    assert again.message == unimportable.message and _UnimportableBackend.prepared == 1


def test_prepare_imports_in_import_order_and_names_the_failures(broken_backends, monkeypatch):
    order = []
    for name in ("numpy", "unimportable"):
        backend = backends.get(name)
        monkeypatch.setattr(backend, "import_order", {"numpy": 90, "unimportable": 5}[name])
        real = backend.prepare
        monkeypatch.setattr(backend, "prepare", lambda name=name, real=real: (order.append(name), real()))
    failed = backends.prepare(["numpy", "unimportable"])
    assert order == ["unimportable", "numpy"]
    assert list(failed) == ["unimportable"] and "failed to import: ImportError: libbroken.so" in failed["unimportable"]
    with pytest.raises(crossnn.BackendError, match="unknown backend 'mxnet'"):
        backends.prepare(["mxnet"])


FAKE_TORCH_RUN = """
import crossnn
from crossnn import backends
from crossnn.harness import RunSpec, train
records = train(crossnn.example("linear-2x3"), [RunSpec("numpy", "float32"), RunSpec("torch", "float64")]).records
for r in records:
    print(r.spec.label, "|", r.status, "|", r.message)
print("available:", ",".join(backends.available()))
"""


def test_a_broken_torch_install_fails_the_torch_run_only(tmp_path):
    """`import torch` raising (a missing libtorch) fails the torch run with the reason; the crossnn_torch
    plugin itself still loads and the NumPy runs finish."""
    if "torch" not in backends.discover():
        pytest.skip("the crossnn_torch plugin is not installed")
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        'raise ImportError("libtorch_cpu.so: cannot open shared object file")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", FAKE_TORCH_RUN], env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "numpy float32 cpu default | ok | "
    assert lines[1] == ("torch float64 cpu eager | error | torch failed to import: ImportError: libtorch_cpu.so: "
                        "cannot open shared object file")
    assert lines[2].startswith("available: numpy") and "torch" not in lines[2]


def test_bench_records_a_backend_whose_framework_fails_to_import(broken_backends):
    """Timed in this process, the broken backend becomes a failure row per case with the reason; the
    others are timed as usual."""
    from crossnn.bench.runner import run_in_process
    from crossnn.bench.suites import cases_for

    result = run_in_process(cases_for(["adder"], True), ["numpy", "unimportable"], ["cpu"], ["float32"],
                            quick=True, repeats=1, min_repeat_seconds=0.0, say=lambda text: None)
    assert {r.backend for r in result.rows} == {"numpy"}
    (failure,) = result.failures
    assert (failure.backend, failure.case, failure.mode) == ("unimportable", "adder", "every mode")
    assert failure.reason.startswith("crossnn_test_broken_framework failed to import: ImportError")
