"""The differences catalog: where PyTorch, TensorFlow/Keras and crossnn's spec differ, each entry with
its formulas, sources and a measured demonstration (crossnn.differences.catalog), and the tools that
measure what an entry does to a given spec (`crossnn diff`, `crossnn run --flavor native`).

Backends name the entries they can lower the framework's own way in `Backend.native_entries`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from crossnn import backends
from crossnn.differences.catalog import BY_ID, ENTRIES, Entry
from crossnn.differences.lab import Divergence, Finding, Lab, Unavailable
from crossnn.spec import Experiment

__all__ = ["BY_ID", "ENTRIES", "Entry", "Divergence", "Finding", "Lab", "Unavailable", "applicable",
           "measure", "native_ids", "readme_section"]


def native_ids(backend: str) -> frozenset[str]:
    """The catalog entries `backend` can lower natively."""
    return frozenset(backends.get(backend).native_entries)


def applicable(experiment: Experiment) -> list[Entry]:
    return [entry for entry in ENTRIES if entry.applies(experiment)]


@dataclass
class EntryEffect:
    """What one entry, lowered natively on one backend, does to a spec."""

    entry: Entry
    backend: str
    native: str            # what the backend's native lowering uses (its native_entries line)
    divergence: Divergence


def measure(experiment: Experiment, names: list[str], lab: Lab | None = None, dtype: str = "float64",
            entries: list[Entry] | None = None, snapshot_every: int | None = None,
            say: Callable[[str], None] = lambda text: None) -> list[EntryEffect]:
    """For each applicable entry and each backend that lowers it natively, train with only that entry
    native and measure the divergence from the reference; `say` hears which run starts."""
    lab = lab or Lab()
    effects = []
    for entry in entries if entries is not None else applicable(experiment):
        for name in names:
            notes = backends.get(name).native_entries
            if entry.id in notes:
                say(f"measuring {entry.id} lowered natively by {name}")
                divergence = lab.run(experiment, name, frozenset({entry.id}), dtype, snapshot_every=snapshot_every)
                effects.append(EntryEffect(entry, name, notes[entry.id], divergence))
    return effects


def readme_section() -> str:
    """The README's "What differs between the frameworks" table, generated from the catalog."""
    lines = ["| difference | PyTorch | Keras / TensorFlow | crossnn's spec |", "| --- | --- | --- | --- |"]
    for e in ENTRIES:
        lines.append(f"| **{e.title}** (`{e.id}`) | {e.torch} | {e.keras} | {e.crossnn} |")
    return "\n".join(lines)
