"""Which runs to make: backends, dtypes, devices and modes, given as lists or as comma-separated
strings, checked (before any framework is imported), and turned into the harness's RunSpecs.

The command line and the Python API share these checks (crossnn.validate). `options` names each
argument the way the caller's user wrote it (`--dtype` on the command line, `dtypes` in Python), so
an error names it.

Modes: without any, every backend runs its default mode. With a list, every backend runs each listed
mode it has; a backend the user named that has none of them is an error, and so is a listed mode that
no chosen backend has (a typo). When the backends were not named (every available one), a backend
with none of the listed modes is left out, with a note. The notes also say which backend runs which
mode. The NumPy float64 reference runs in any case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crossnn import backends as registry
from crossnn.errors import BackendError
from crossnn.harness import RunSpec
from crossnn.validate import check_devices, check_dtypes, name_list

#: argument names in the Python API (the command line passes its option names instead)
API_OPTIONS = {"backends": "backends", "dtypes": "dtypes", "devices": "devices", "modes": "modes"}


@dataclass
class Selection:
    """The runs to make, whether the user named the backends, and what to tell the user about the
    choice (backends left out, which backend runs which mode)."""

    runs: list[RunSpec]
    named: bool
    notes: list[str] = field(default_factory=list)

    @property
    def backends(self) -> list[str]:
        return list(dict.fromkeys(run.backend for run in self.runs))


def select_runs(backends=None, dtypes="float64", devices="cpu", modes=None, *, native: bool = False,
                options: dict[str, str] = API_OPTIONS) -> Selection:
    """Check every name and build the runs: dtype × backend × device × mode. Imports no framework;
    `start` does that. The reference backend runs on the CPU unless the user names it (its CPU float64
    run is the harness' reference in any case). `native`: every backend lowers
    the catalog entries it knows the framework's own way (the native flavour)."""
    requested = name_list(backends, options["backends"])
    for name in requested:
        registry.get(name, options["backends"])  # unknown, uninstalled or broken: one line saying why
    names = requested or registry.available()
    dtype_names = check_dtypes(dtypes, options["dtypes"])
    device_names = check_devices(devices, options["devices"])
    chosen, notes = _modes(names, name_list(modes, options["modes"]), bool(requested), options["modes"])
    runs: list[RunSpec] = []
    for dtype in dtype_names:
        for name, backend_modes in chosen.items():
            backend = registry.get(name)
            entries = frozenset(backend.native_entries) if native else frozenset()
            # unnamed, the reference backend stays on the CPU; named, it goes where the user sends it
            for device in ["cpu"] if backend.reference and name not in requested else device_names:
                for mode in backend_modes:
                    run = RunSpec(name, dtype, device, mode, entries)
                    if run not in runs:
                        runs.append(run)
    return Selection(runs, bool(requested), notes)


def _modes(names: list[str], modes: list[str], named: bool, option: str) -> tuple[dict[str, list], list[str]]:
    """backend -> the modes it runs (None: its default), and the notes about the choice."""
    if not modes:
        return {name: [None] for name in names}, []
    known = {mode for name in names for mode in registry.get(name).modes}
    for mode in modes:
        if mode not in known:
            raise BackendError(f"{option}: no chosen backend has mode '{mode}'; "
                               f"their modes: {', '.join(sorted(known))}")
    chosen, notes = {}, []
    for name in names:
        have = registry.get(name).modes
        listed = [mode for mode in modes if mode in have]
        if listed:
            chosen[name] = listed
        elif named:
            raise BackendError(f"{option}: backend '{name}' has none of the modes {', '.join(modes)}; "
                               f"its modes: {', '.join(have)}")
        else:
            notes.append(f"backend '{name}' left out: {option} names none of its modes ({', '.join(have)})")
    runs = "; ".join(f"{name} runs {', '.join(backend_modes)}" for name, backend_modes in chosen.items())
    notes.append(f"{option} {','.join(modes)}: {runs}")
    return chosen, notes


def start(selection: Selection, option_devices: str = "devices") -> Selection:
    """Import and configure the frameworks of the selection (crossnn.backends.prepare) and check each
    run's device. A framework that fails to import is an error when the user named its backend, and
    otherwise leaves that backend out, with a note."""
    failed = registry.prepare(selection.backends)
    if selection.named and failed:
        name, reason = next(iter(failed.items()))
        raise BackendError(f"backend '{name}' is unavailable: {reason}")
    notes = [*selection.notes, *(f"backend '{name}' left out: {reason}" for name, reason in failed.items())]
    runs = [run for run in selection.runs if run.backend not in failed]
    for run in runs:
        try:
            registry.get(run.backend).check_device(run.device)
        except BackendError as err:
            raise BackendError(f"{option_devices}: {err}") from None
    return Selection(runs, selection.named, notes)
