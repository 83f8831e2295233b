"""The differences catalog: where PyTorch, TensorFlow/Keras and crossnn's spec differ, each entry with
its formulas, sources, a measured demonstration and the framework defaults it states
(crossnn.differences.catalog), and the tools that measure what an entry does to a given spec
(`crossnn diff`, `crossnn run --flavor native`).

Backends name the entries they can lower the framework's own way in `Backend.native_entries`, and may
add their framework's side and defaults to entries (`Backend.catalog_sides`, `catalog_defaults`):
`entries()` is the catalog with those merged in, and what every table and preset is made from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from crossnn import backends
from crossnn.differences.catalog import BY_ID, ENTRIES, Entry
from crossnn.differences.lab import Divergence, Finding, Lab, Unavailable
from crossnn.spec import Experiment

__all__ = ["BY_ID", "ENTRIES", "Entry", "Divergence", "Finding", "Lab", "Unavailable", "applicable", "entries",
           "measure", "native_ids", "presets_section", "readme_section", "side_titles"]


def entries() -> list[Entry]:
    """The catalog with every discovered backend's contributions merged in: its side of the entries
    that do not state one (Backend.catalog_sides) and its defaults (Backend.catalog_defaults)."""
    plugins = [found.backend for found in backends.discover().values() if found.backend is not None]
    merged = []
    for entry in ENTRIES:
        sides, defaults = dict(entry.sides), list(entry.defaults)
        for plugin in plugins:
            if entry.id in plugin.catalog_sides:
                sides.setdefault(plugin.name, plugin.catalog_sides[entry.id])
            defaults += plugin.catalog_defaults.get(entry.id, ())
        merged.append(dataclasses.replace(entry, sides=sides, defaults=tuple(defaults)))
    return merged


def side_titles(catalog: list[Entry]) -> dict[str, str]:
    """Every backend that has a side in `catalog`, in order of appearance -> its title (Backend.title)."""
    found = backends.discover()
    names = dict.fromkeys(name for entry in catalog for name in entry.sides)
    return {name: (found[name].backend.title if name in found and found[name].backend else "") or name
            for name in names}


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
    """The README's "What differs between the frameworks" table, generated from the catalog: one
    column per backend that has a side."""
    catalog = entries()
    titles = side_titles(catalog)
    header = ["difference", *titles.values(), "crossnn's spec"]
    lines = [_row(header), _row(["---"] * len(header))]
    for e in catalog:
        lines.append(_row([f"**{e.title}** (`{e.id}`)", *(e.sides.get(name, "—") for name in titles), e.spec]))
    return "\n".join(lines)


def presets_section() -> str:
    """The README's table of what each preset fills, generated from the catalog's defaults, with
    the notes on where a framework's own formula differs from the spec's."""
    from crossnn.spec.presets import presets, show

    known = presets()
    header = ["spec field", *(f'`defaults = "{name}"`' for name in known.names), "catalog entry"]
    lines, notes, written = [_row(header), _row(["---"] * len(header))], [], set()
    for entry_id, default in known.defaults:
        row = (default.spec, default.field, default.within, default.when.text if default.when else None)
        if row in written:  # another preset's Default of the same field (a backend's, merged in): one row
            notes += [f"- `{name}`, `{default.label}`: {note}." for name, note in default.notes.items()]
            continue
        written.add(row)
        candidates = known.candidates(default.spec, default.field, default.within)
        values = []
        for name in known.names:
            chosen = known.pick(candidates, name)
            values.append("none: required" if chosen is None else show(chosen[1].values[name]))
        lines.append(_row([_where(default, known), *values, f"`{entry_id}`"]))
        notes += [f"- `{name}`, `{default.label}`: {note}." for name, note in default.notes.items()]
    return "\n".join(lines + ([""] + notes if notes else []))


def _where(default, known) -> str:
    """A Default's row label: the field (with the kinds that inherit it), its context, its condition."""
    labels = [default.label]
    if default.spec.kind:  # a concrete class: its subclasses without a Default of their own take this one
        labels += [f"{kind}.{default.field}" for kind, cls in default.spec.kinds().items()
                   if cls is not default.spec and issubclass(cls, default.spec)
                   and known.candidates(cls, default.field, default.within)[0][1] is default]
    text = ", ".join(f"`{label}`" for label in labels)
    if default.within is not None:
        text += f" inside `{default.within.kind}` {default.within.family}s"
    if default.when is not None:
        text += f" when {default.when.text}"
    return text


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"
