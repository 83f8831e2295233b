"""A run's results as terminal text and as JSON."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from crossnn.console import sci, table
from crossnn.harness import RunRecord, RunResult
from crossnn.parity import Parity
from crossnn.spec.toml import experiment_to_dict

#: A parameter tensor with more values than this prints as its first and last three.
PRINTED_VALUES = 24


Parities = Mapping[int, Parity] | Sequence[Parity]


def by_record(result: RunResult, parities: Parities) -> dict[int, Parity]:
    """Parities keyed by id(record): a mapping as given, or a list in the order of result.records
    (what crossnn.testing.check_parity returns)."""
    if isinstance(parities, Mapping):
        return dict(parities)
    parities = list(parities)
    if len(parities) != len(result.records):
        raise ValueError(f"{len(parities)} parities for {len(result.records)} runs: give one per record of "
                         "result.records, in that order, or a dict keyed by id(record)")
    return {id(record): parity for record, parity in zip(result.records, parities)}


def shown_records(result: RunResult) -> list[RunRecord]:
    """The records in table order: the reference first unless it was asked for among the runs."""
    if any(r is result.reference for r in result.records):
        return list(result.records)
    return [result.reference, *result.records]


def run_text(result: RunResult, parities: Parities) -> str:
    """The run table, the parity table and the reference's final parameters: what `crossnn run`
    prints for one experiment. `parities`: see by_record."""
    parities = by_record(result, parities)
    e, plan = result.experiment, result.plan
    lines = [f"{e.name}: {plan.steps} steps ({e.train.epochs} epochs x {plan.steps_per_epoch}), "
             f"{e.model.parameter_count()} parameters, snapshots every {result.snapshot_every} steps", ""]
    records = shown_records(result)
    rows = []
    for r in records:
        status = "reference" if r is result.reference else r.status
        if r.start_step:
            status += f" (resumed at step {r.start_step})"
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r.metrics.items()) or "-"
        rows.append((r.spec.label, r.version, r.steps_done, f"{r.train_seconds:.3f}",
                     f"{r.losses[-1]:.6g}" if len(r.losses) else "-", metrics, status))
    lines.append(table(("run", "version", "steps", "train s", "final loss", "metrics", "status"), rows))
    for r in records:
        if r.message:
            lines.append(f"  {r.spec.label}: {r.message}")

    compared = [(r, parities[id(r)]) for r in result.records if r is not result.reference]
    if compared:
        lines += ["", f"parity against {result.reference.spec.label} "
                      "(a snapshot passes when max|a - r| <= atol + rtol * max|r|):"]
        rows = []
        for r, p in compared:
            if not r.snapshots:
                rows.append((r.spec.label, "(all)", "-", "-", "-", f"{p.tolerance.rtol:g}/{p.tolerance.atol:g}",
                             "not run"))
                continue
            for pp in p.params:
                rows.append((r.spec.label, pp.name, sci(pp.max_abs), sci(pp.max_rel),
                             "-" if pp.first_fail_step is None else pp.first_fail_step,
                             f"{p.tolerance.rtol:g}/{p.tolerance.atol:g}",
                             "pass" if pp.first_fail_step is None else "FAIL"))
        lines.append(table(("run", "parameter", "max abs", "max rel", "first step out", "rtol/atol", "verdict"), rows))
        failed = [p for _, p in compared if not p.passed]
        for p in failed:
            if not p.complete:
                lines.append(f"  {p.label}: did not finish: {p.note}")
        lines.append("")
        lines.append(f"parity: {'PASS' if not failed else 'FAIL'} "
                     f"({len(compared) - len(failed)} of {len(compared)} runs agree)")
    params = result.reference.final_params
    elided = any(v.size > PRINTED_VALUES for v in params.values())
    lines += [
        "",
        f"final parameters ({result.reference.spec.label}"
        f"{'; tensors over ' + str(PRINTED_VALUES) + ' values shortened, all of them in --json' if elided else ''}):",
    ]
    lines.append(parameters_text(params))
    return "\n".join(lines)


def parameters_text(params) -> str:
    """One line per parameter, "  name (shape): values", a tensor over PRINTED_VALUES values shortened."""
    lines = []
    for name, value in params.items():
        text = np.array2string(value.ravel(), precision=8, max_line_width=100, threshold=PRINTED_VALUES, edgeitems=3)
        lines.append(f"  {name} {tuple(value.shape)}: {text}")
    return "\n".join(lines)


def _nested(params) -> dict[str, Any]:
    return {name: np.asarray(value).tolist() for name, value in params.items()}


def result_json(result: RunResult, parities: Parities, machine: dict) -> dict[str, Any]:
    """The run as a JSON document; `machine` is crossnn.bench.machine.describe() of the machine it ran on.
    threads: the intra-op thread count asked for (null: each framework's own); each run records the
    count its framework used."""
    import crossnn

    parities = by_record(result, parities)
    records = shown_records(result)
    runs = []
    for r in records:
        entry = {
            "backend": r.spec.backend, "dtype": r.spec.dtype, "device": r.spec.device, "mode": r.spec.mode,
            "label": r.spec.label, "version": r.version, "description": r.description,
            "status": r.status, "message": r.message, "steps": r.steps_done,
            "seconds": r.train_seconds, "build_seconds": r.build_seconds, "metrics": r.metrics,
            "history": r.history, "start_step": r.start_step, "threads": r.threads,
            "losses": r.losses.tolist(),
            "initial_params": _nested(r.snapshots.get(0, {})), "final_params": _nested(r.final_params),
            "reference": r is result.reference,
        }
        if r is not result.reference or id(r) in parities:
            entry["parity"] = parities[id(r)].to_json() if id(r) in parities else None
        runs.append(entry)
    compared = [parities[id(r)] for r in result.records if r is not result.reference and id(r) in parities]
    return {
        "crossnn_version": crossnn.__version__,
        "machine": machine,
        "experiment": experiment_to_dict(result.experiment),
        "dtypes": sorted({r.spec.dtype for r in result.records}),
        "steps": result.plan.steps, "snapshot_every": result.snapshot_every, "threads": result.threads,
        "reference": result.reference.spec.label,
        "runs": runs,
        "parity": {"passed": all(p.passed for p in compared), "runs_compared": len(compared),
                   "max_rel": max((p.max_rel for p in compared), default=0.0),
                   "max_abs": max((p.max_abs for p in compared), default=0.0)},
    }
