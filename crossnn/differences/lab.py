"""Measuring differences: the installed frameworks' facts, runs of a spec with chosen catalog entries
lowered the framework's own way ("native") against the NumPy float64 reference, and the reference's
own runs and predictions of two specs that differ as two frameworks do."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from crossnn import backends
from crossnn.data import load_dataset
from crossnn.harness import RunRecord, RunResult, RunSpec, train
from crossnn.parity import compare
from crossnn.spec import Experiment


@dataclass
class Finding:
    """One measured statement and whether it holds as the catalog documents it; `values` are the
    measured numbers side by side (label -> value), for the report's bar charts."""

    text: str
    holds: bool
    values: dict[str, float] = field(default_factory=dict)


class Unavailable(Exception):
    """The framework a demonstration needs is not installed."""


@dataclass
class Divergence:
    """How far a run drifts from the reference: the largest relative parameter difference over the
    run, the final one, and the per-snapshot curve (for plots)."""

    label: str
    max_rel: float
    final_rel: float
    first_step_over_1e9: int | None
    curve: list[tuple[int, float]]
    record: RunRecord
    result: RunResult


class Lab:
    """Runs demonstrations, caching each framework's facts."""

    def __init__(self):
        self._facts: dict[str, dict] = {}
        self.history: list[Divergence] = []  # every run made, in order (the report plots them)

    def facts(self, backend: str) -> dict:
        entry = backends.discover().get(backend)
        if entry is not None and entry.available and backends.prepare([backend]):
            entry = backends.discover()[backend]  # its framework failed to import: unavailable now, with why
        if entry is None or not entry.available:
            raise Unavailable(f"{backend} is not available ({entry.reason if entry else 'not installed'})")
        if backend not in self._facts:
            self._facts[backend] = entry.backend.facts()
        return self._facts[backend]

    @cached_property
    def available(self) -> set[str]:
        return set(backends.available())

    def lowering(self, entry_id: str) -> list[str]:
        """The available backends that can lower a catalog entry natively."""
        return [name for name in backends.available() if entry_id in backends.get(name).native_entries]

    def need(self, *names: str) -> None:
        missing = [n for n in names if n not in self.available]
        if missing:
            raise Unavailable(f"needs {', '.join(missing)}, which is not installed")

    def run(self, experiment: Experiment, backend: str, native: frozenset[str] = frozenset(),
            dtype: str = "float64", snapshot_every: int | None = 1, caption: str = "") -> Divergence:
        """Train `experiment` on `backend` with `native` entries lowered natively; compare with the
        reference at every step (or every `snapshot_every`; None: the harness default). `caption`
        tells this run from others of the same entry in its label."""
        self.need(backend)
        result = train(experiment, [RunSpec(backend, dtype, native=native)], snapshot_every=snapshot_every)
        (record,) = result.records
        if not record.ok:
            raise RuntimeError(f"{record.spec.label}: {record.message}")
        parity = compare(result.reference, record)
        last = max(record.snapshots)
        ref, got = result.reference.snapshots[last], record.snapshots[last]
        final = max(float(np.max(np.abs(got[k] - ref[k]))) / max(float(np.max(np.abs(ref[k]))), 1e-300)
                    for k in ref)
        over = next((step for step, rel in parity.curve if rel > 1e-9), None)
        used = record.spec.native  # the entries the backend actually lowers natively
        label = record.spec.label + (f" ({', '.join(sorted(used))})" if used else " (spec)") + (
            f": {caption}" if caption else "")
        divergence = Divergence(label, parity.max_rel, final, over, parity.curve, record, result)
        self.history.append(divergence)
        return divergence

    def reference(self, experiment: Experiment) -> RunRecord:
        """`experiment` trained on the reference (NumPy float64) alone; not kept in `history`."""
        return train(experiment, []).reference

    def apart(self, first: Experiment, second: Experiment, caption: str) -> Divergence:
        """Train two specs whose variables have the same names and shapes (so the same start, from
        the same seed) on the reference (NumPy float64) and measure how far the second drifts from
        the first at every step. As for `run`, result.reference is the baseline (the first spec's
        run) and record the run compared (the second's); kept in `history` under `caption`."""
        result, other = (train(e, [], snapshot_every=1) for e in (first, second))
        base, record = result.reference, other.reference
        parity = compare(base, record)
        last = max(record.snapshots)
        final = max(_relative(record.snapshots[last][k], base.snapshots[last][k]) for k in base.snapshots[last])
        over = next((step for step, rel in parity.curve if rel > 1e-9), None)
        divergence = Divergence(caption, parity.max_rel, final, over, parity.curve, record, result)
        self.history.append(divergence)
        return divergence

    def predict(self, experiment: Experiment, variables: dict[str, np.ndarray], x=None) -> np.ndarray:
        """The reference model's output (inference mode) for x (default: the spec's data) with these
        variables (parameters and layer state, by name)."""
        reference = backends.reference()
        dataset = load_dataset(experiment)
        model = reference.build(experiment, {k: np.asarray(v, dtype=np.float64) for k, v in variables.items()},
                                dataset, dtype="float64", device="cpu", mode=reference.modes[0])
        return np.asarray(model.predict(dataset.x if x is None else np.asarray(x, dtype=np.float64)))


def _relative(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (0 where both are all zero)."""
    diff, scale = float(np.max(np.abs(got - ref))), float(np.max(np.abs(ref)))
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
