"""The Python front door, reading like the command line:

    import crossnn
    result = crossnn.run(crossnn.load_spec("circle"), backends="numpy,torch")
    result.passed                   # True when every run agrees with the NumPy float64 reference
    print(result.table())           # the tables `crossnn run circle --backends numpy,torch` prints
    result["torch"].losses          # one run's record, by backend or by label
    result.to_json()                # the document `crossnn run --json` writes

It is a front door over crossnn.harness.train and crossnn.parity.compare, not a second
implementation: the command line builds the same Result and prints its table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from crossnn.errors import DataError, SpecError
from crossnn.harness import RunRecord, RunResult, train
from crossnn.parity import Parity, Tolerance, compare, tolerance_for
from crossnn.results import Parities, by_record, result_json, run_text, shown_records
from crossnn.spec import Experiment

#: rows of runs a Result's repr lists before it says how many more there are
REPR_RUNS = 12


def load_spec(spec: str | os.PathLike) -> Experiment:
    """A spec file (a path, or any name ending in .toml), or the name of a built-in example
    (`crossnn list` shows them), as its frozen Experiment (a preset's values filled in)."""
    return read_spec(spec)[0]


def read_spec(spec: str | os.PathLike):
    """load_spec, and the values a preset filled in (crossnn.spec.presets.Fill)."""
    from crossnn import examples
    from crossnn.spec.toml import read_file

    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"load_spec: expected a spec file path or an example name, got {type(spec).__name__}")
    text, path = os.fspath(spec), Path(spec)
    if path.suffix == ".toml" or os.path.lexists(path):  # lexists: a broken link or a link loop is read, and said
        if not os.path.lexists(path):
            raise SpecError(f"no such spec file: {text}")
        return read_file(path)
    if text in examples.names():
        return read_file(examples.path(text))
    raise SpecError(f"'{text}' is neither a spec file nor an example; examples: {', '.join(examples.names())}")


def load_data(experiment: Experiment, where: str):
    """The experiment's data set; a data error names the spec (file or example) it came from."""
    from crossnn.data import load_dataset

    try:
        return load_dataset(experiment)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def compare_all(result: RunResult, rtol: float | None = None, atol: float | None = None) -> dict[int, Parity]:
    """Every record of `result` against the reference, keyed by id(record); rtol and atol replace the
    per-dtype, per-device defaults (crossnn.parity.tolerance_for) where given."""
    parities = {}
    for record in result.records:
        default = tolerance_for(record.spec.dtype, record.spec.device)
        tolerance = Tolerance(default.rtol if rtol is None else rtol, default.atol if atol is None else atol)
        parities[id(record)] = compare(result.reference, record, tolerance)
    return parities


class Result:
    """One experiment trained on several backends and compared with the NumPy float64 reference.

    passed          every run agrees with the reference and finished (`crossnn run` exits 0)
    table()         the run table, the parity table and the final parameters, as `crossnn run` prints them
    to_json()       the document `crossnn run --json` writes, as a dict
    result[key]     a run's RunRecord, by label ("torch float64 cpu eager") or by backend ("torch") when
                    that backend made one run; result.parity(key) is its Parity
    runs, labels    the records in table order (the reference first), and their labels
    notes           what the selection left out, and which backend ran which mode
    harness         the crossnn.harness.RunResult underneath (data, batch plan, initial parameters)
    """

    def __init__(self, harness: RunResult, parities: Parities, notes: Sequence[str] = ()):
        self.harness = harness
        self.parities = by_record(harness, parities)
        self.notes = list(notes)

    @property
    def experiment(self) -> Experiment:
        return self.harness.experiment

    @property
    def reference(self) -> RunRecord:
        return self.harness.reference

    @property
    def runs(self) -> list[RunRecord]:
        return shown_records(self.harness)

    @property
    def labels(self) -> list[str]:
        return [record.spec.label for record in self.runs]

    @property
    def passed(self) -> bool:
        return all(parity.passed for parity in self.parities.values())

    def __getitem__(self, key: str) -> RunRecord:
        runs = self.runs
        for record in runs:
            if record.spec.label == key:
                return record
        matches = [record for record in runs if record.spec.backend == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise KeyError(f"backend '{key}' made {len(matches)} runs; use a label: "
                           f"{', '.join(r.spec.label for r in matches)}")
        raise KeyError(f"no run '{key}'; runs: {', '.join(self.labels)}")

    def parity(self, key: str) -> Parity:
        """The parity of the run `key` (a label or a backend, as result[key]) against the reference."""
        record = self[key]
        if record is self.reference:
            raise KeyError(f"'{record.spec.label}' is the reference, not compared with itself")
        return self.parities[id(record)]

    def table(self) -> str:
        return run_text(self.harness, self.parities)

    def to_json(self, machine: dict | None = None) -> dict:
        """The `crossnn run --json` document; `machine` (crossnn.bench.machine.describe()) is measured
        here unless given. crossnn.files.json_text writes it as the command does (strict JSON)."""
        from crossnn.bench.machine import describe

        return result_json(self.harness, self.parities, describe() if machine is None else machine)

    def __repr__(self) -> str:
        compared = [r for r in self.harness.records if r is not self.reference]
        agree = sum(self.parities[id(r)].passed for r in compared)
        head = (f"<crossnn.Result {self.experiment.name}: {'PASS' if self.passed else 'FAIL'} "
                f"({agree} of {len(compared)} runs agree with {self.reference.spec.label}), "
                f"{self.harness.plan.steps} steps")
        rows = []
        for record in self.runs[:REPR_RUNS]:
            parity = self.parities.get(id(record))
            verdict = ("reference" if record is self.reference else
                       f"{'pass' if parity.passed else 'FAIL'}  max rel {parity.max_rel:.2e}")
            loss = f"final loss {record.losses[-1]:.6g}" if len(record.losses) else record.status
            rows.append(f"  {record.spec.label:<36} {verdict:<26} {loss}")
        if len(self.runs) > REPR_RUNS:
            rows.append(f"  ... {len(self.runs) - REPR_RUNS} more runs (result.labels lists them)")
        notes = [f"  note: {note}" for note in self.notes]
        tail = "  result.table() prints the tables; result[label or backend] is a run's record>"
        return "\n".join([head, *rows, *notes, tail])


def run(spec: Experiment | str | os.PathLike, *, backends: str | Sequence[str] | None = None,
        dtypes: str | Sequence[str] = "float64", devices: str | Sequence[str] = "cpu",
        modes: str | Sequence[str] | None = None, rtol: float | None = None, atol: float | None = None,
        threads: int | None = None, snapshot_every: int | None = None, progress: bool = False) -> Result:
    """Train `spec` (an Experiment, a spec file or an example name) on every backend × dtype × device ×
    mode and compare each run with the NumPy float64 reference, as `crossnn run` does.

    backends, dtypes, devices, modes: a list of names, or one string ("torch", or "numpy,torch" as on
    the command line). backends defaults to every available one (a backend whose framework fails to
    import is then left out, with a note), modes to each backend's default (see crossnn.selection for
    a list of modes). rtol/atol replace the per-dtype tolerances; threads sets every framework's
    intra-op threads for this process; snapshot_every compares parameters every N steps (default:
    about 500 snapshots); progress prints progress lines on stderr. Bad input raises one
    crossnn.CrossnnError (a SpecError, BackendError or DataError) naming the argument or field."""
    from crossnn.console import Progress
    from crossnn.selection import select_runs, start
    from crossnn.validate import check_count, check_tolerance

    experiment = spec if isinstance(spec, Experiment) else load_spec(spec)
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    threads, snapshot_every = check_count(threads, "threads"), check_count(snapshot_every, "snapshot_every")
    selection = select_runs(backends, dtypes, devices, modes)
    dataset = load_data(experiment, experiment.source or experiment.name)
    selection = start(selection)
    harness = train(experiment, selection.runs, snapshot_every=snapshot_every, dataset=dataset,
                    progress=Progress(enabled=progress), threads=threads)
    return Result(harness, compare_all(harness, rtol, atol), [*selection.notes, *harness.notes])
