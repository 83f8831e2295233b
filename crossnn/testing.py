"""Parity as assertions, for users' own test suites.

    from crossnn.testing import assert_parity
    assert_parity("tests/parity_mlp.toml", backends=["torch", "tensorflow"], dtypes=["float64"])
    assert_parity("circle", backends="numpy,torch", dtypes="float32")   # names as on the command line

A failure raises `ParityError` (an AssertionError) whose message names the run, the parameter, the
first step out of tolerance and the size of the difference. `assert_model_parity` does the same for
a model written in a framework (an nn.Sequential, a Keras model), starting from its own weights.
The pytest plugin (crossnn.pytest_plugin) turns spec files named parity_*.toml into test items
with the same messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from crossnn import backends as registry
from crossnn.api import compare_all, load_spec
from crossnn.harness import RunRecord, RunResult, train
from crossnn.parity import Parity
from crossnn.errors import BackendError
from crossnn.selection import API_OPTIONS, select_runs
from crossnn.spec import DataSource, Experiment, Loss, Model, Optimizer, Train
from crossnn.validate import check_count, check_tolerance


class ParityError(AssertionError):
    """A run disagrees with the NumPy float64 reference."""


def _experiment(spec: Experiment | str | Path) -> Experiment:
    return spec if isinstance(spec, Experiment) else load_spec(spec)


def failure_message(parity: Parity, record: RunRecord, snapshot_every: int) -> str:
    """One paragraph: which run, which parameter, which step, how far off, against which tolerance."""
    if not parity.complete:
        return f"{parity.label}: did not finish: {parity.note}"
    step = parity.first_fail_step
    worst = max((p for p in parity.params if p.first_fail_step == step), key=lambda p: p.max_abs)
    ref_note = f"(snapshots every {snapshot_every} steps; rerun with snapshot_every=1 to find the exact step)" \
        if snapshot_every > 1 else ""
    return (f"{parity.label}: parameter {worst.name} leaves tolerance at step {step}: "
            f"largest difference {worst.max_abs:.3e} (relative {worst.max_rel:.3e}, at step {worst.worst_step}); "
            f"rtol {parity.tolerance.rtol:g}, atol {parity.tolerance.atol:g} {ref_note}").rstrip()


Names = str | Iterable[str]


def check_parity(spec: Experiment | str | Path, backends: Names | None = None, dtypes: Names = ("float64",), *,
                 device: str = "cpu", rtol: float | None = None, atol: float | None = None,
                 snapshot_every: int | None = None, initial_params: Mapping[str, np.ndarray] | None = None,
                 threads: int | None = None) -> tuple[RunResult, list[Parity]]:
    """Train `spec` (an Experiment, a spec file or an example name) on the given backends (default:
    every available one) and compare each run with the NumPy float64 reference. backends and dtypes
    are lists of names or one string ("float32", "numpy,torch"). Returns the result and one Parity per
    record of result.records, in that order (crossnn.results.run_text prints them)."""
    experiment = _experiment(spec)
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    check_count(snapshot_every, "snapshot_every")
    check_count(threads, "threads")
    runs = select_runs(backends, dtypes, device, options={**API_OPTIONS, "devices": "device"}).runs
    result = train(experiment, runs, snapshot_every=snapshot_every, threads=threads,
                   initial_params=dict(initial_params) if initial_params is not None else None)
    parities = compare_all(result, rtol, atol)
    return result, [parities[id(record)] for record in result.records]


def assert_parity(spec: Experiment | str | Path, backends: Names | None = None, dtypes: Names = ("float64",),
                  **options) -> RunResult:
    """Raise ParityError unless every run agrees with the reference (see `check_parity`)."""
    result, parities = check_parity(spec, backends, dtypes, **options)
    failures = [failure_message(p, r, result.snapshot_every)
                for p, r in zip(parities, result.records) if not p.passed]
    if failures:
        raise ParityError("\n".join(failures))
    return result


def import_model(model) -> tuple[Model, dict[str, np.ndarray]]:
    """A framework model (an nn.Sequential, a Keras model, ...) as a spec Model and its current
    weights in canonical layout, read by whichever installed backend recognises it."""
    for entry in registry.discover().values():
        if entry.available:
            imported = entry.backend.import_model(model)
            if imported is not None:
                return imported
    raise BackendError(f"no installed backend can read a {type(model).__module__}.{type(model).__qualname__}")


def assert_model_parity(model, *, data: DataSource, loss: Loss, optimizer: Optimizer, train: Train, seed: int = 0,
                        backends: Names | None = None, dtypes: Names = ("float64",), **options) -> RunResult:
    """Your own model, from its current weights, trained by every backend with the given data, loss,
    optimizer and schedule: raise ParityError unless all agree with the reference."""
    spec_model, params = import_model(model)
    experiment = Experiment(name=type(model).__name__, seed=seed, data=data, model=spec_model, loss=loss,
                            optimizer=optimizer, train=train)
    return assert_parity(experiment, backends, dtypes, initial_params=params, **options)


def assert_params_match(spec: Experiment | str | Path, final_params: Mapping[str, np.ndarray], *,
                        initial_params: Mapping[str, np.ndarray] | None = None, rtol: float = 1e-9,
                        atol: float = 1e-12) -> None:
    """Check parameters trained by the user's own loop (canonical names and layout) against the
    reference trained from the same spec and initial parameters."""
    rtol, atol = check_tolerance(rtol, "rtol", required=True), check_tolerance(atol, "atol", required=True)
    experiment = _experiment(spec)
    result = train(experiment, [], initial_params=dict(initial_params) if initial_params is not None else None)
    reference = result.reference.final_params
    if set(reference) != set(final_params):
        raise ParityError(f"parameter names differ: expected {sorted(reference)}, got {sorted(final_params)}")
    for name, r in reference.items():
        a = np.asarray(final_params[name], dtype=np.float64)
        if a.shape != r.shape:
            raise ParityError(f"{name}: shape {a.shape}, expected {r.shape} (canonical layout)")
        diff = float(np.max(np.abs(a - r)))
        scale = float(np.max(np.abs(r)))
        if diff > atol + rtol * scale:
            raise ParityError(f"{name}: largest difference {diff:.3e} "
                              f"(relative {diff / scale if scale else float('inf'):.3e}) "
                              f"after {result.plan.steps} steps; rtol {rtol:g}, atol {atol:g}")
