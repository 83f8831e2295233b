"""pytest plugin: spec files named parity_*.toml in a test folder become parity test items, one per
backend and dtype, that fail with the parameter, the step and the size of the difference.

Settings (ini file or command line):
    crossnn_pattern   file-name pattern (default parity_*.toml)
    crossnn_backends  / --crossnn-backends  comma-separated (default: every installed backend)
    crossnn_dtypes    / --crossnn-dtypes    comma-separated (default: float64)
    crossnn_rtol, crossnn_atol             override the per-dtype tolerances

The plugin is registered through the pytest11 entry point and imports nothing heavy until a
matching file is collected.
"""

from __future__ import annotations

import fnmatch

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("crossnn", "crossnn parity specs")
    group.addoption("--crossnn-backends", help="backends for parity_*.toml items (comma-separated)")
    group.addoption("--crossnn-dtypes", help="dtypes for parity_*.toml items (comma-separated)")
    parser.addini("crossnn_pattern", "file-name pattern of parity spec files", default="parity_*.toml")
    parser.addini("crossnn_backends", "backends for parity spec items (comma-separated)", default="")
    parser.addini("crossnn_dtypes", "dtypes for parity spec items (comma-separated)", default="float64")
    parser.addini("crossnn_rtol", "relative tolerance override", default="")
    parser.addini("crossnn_atol", "absolute tolerance override", default="")


def pytest_collect_file(file_path, parent):
    if fnmatch.fnmatch(file_path.name, parent.config.getini("crossnn_pattern")):
        return SpecFile.from_parent(parent, path=file_path)
    return None


def _setting(config, name: str) -> list[str]:
    text = config.getoption(f"--crossnn-{name}") or config.getini(f"crossnn_{name}")
    return [part.strip() for part in text.split(",") if part.strip()]


def _float(config, name: str) -> float | None:
    text = config.getini(name).strip()
    return float(text) if text else None


class SpecFileError(Exception):
    """A spec file that cannot be read: reported as its one-line message."""


class SpecFile(pytest.File):
    def collect(self):
        from crossnn import backends
        from crossnn.errors import CrossnnError
        from crossnn.spec import load

        try:
            self.experiment = load(self.path)
        except CrossnnError as err:
            raise SpecFileError(str(err)) from None
        self.result = None
        names = _setting(self.config, "backends") or list(backends.discover())
        for dtype in _setting(self.config, "dtypes"):
            for name in names:
                yield ParityItem.from_parent(self, name=f"{name}-{dtype}", backend=name, dtype=dtype)

    def repr_failure(self, excinfo):
        if excinfo.errisinstance(SpecFileError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reference(self):
        """The NumPy float64 reference run, made once per file and shared by its items."""
        if self.result is None:
            from crossnn.harness import train

            self.result = train(self.experiment, [])
        return self.result


class ParityFailure(Exception):
    """A run that disagrees with the reference; its message is the whole report."""


class ParityItem(pytest.Item):
    def __init__(self, *, backend: str, dtype: str, **kwargs):
        super().__init__(**kwargs)
        self.backend, self.dtype = backend, dtype

    def runtest(self):
        from crossnn import backends
        from crossnn.harness import RunSpec, train
        from crossnn.parity import Tolerance, compare, tolerance_for
        from crossnn.testing import failure_message

        entry = backends.discover().get(self.backend)
        if entry is None:
            raise ParityFailure(f"unknown backend '{self.backend}'; installed: {', '.join(backends.discover())}")
        if not entry.available:
            pytest.skip(f"backend '{self.backend}' unavailable: {entry.reason}")
        parent: SpecFile = self.parent  # type: ignore[assignment]
        ref = parent.reference()
        result = train(parent.experiment, [RunSpec(self.backend, self.dtype)], reference=ref.reference,
                       dataset=ref.dataset)
        (record,) = result.records
        default = tolerance_for(self.dtype, record.spec.device)
        rtol, atol = _float(self.config, "crossnn_rtol"), _float(self.config, "crossnn_atol")
        tol = Tolerance(default.rtol if rtol is None else rtol, default.atol if atol is None else atol)
        parity = compare(result.reference, record, tol)
        if not parity.passed:
            raise ParityFailure(failure_message(parity, record, result.snapshot_every))

    def repr_failure(self, excinfo):
        if excinfo.errisinstance(ParityFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"parity {self.path.name}::{self.name}"
