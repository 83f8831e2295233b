"""pytest plugin: spec files named parity_*.toml in a test folder become parity test items, one per
backend and dtype, that fail with the parameter, the step and the size of the difference.

Settings (ini file or command line):
    crossnn_pattern   file-name pattern (default parity_*.toml)
    crossnn_backends  / --crossnn-backends  comma-separated (default: every installed backend)
    crossnn_dtypes    / --crossnn-dtypes    comma-separated (default: float64)
    crossnn_rtol, crossnn_atol             override the per-dtype tolerances

They are checked as the command line checks its options (crossnn.validate); a bad one, a spec that
does not load and data that do not fit the model are each a one-line collection error of the file.

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


def _settings(config) -> dict:
    """The plugin's settings, checked as the command line checks its options (crossnn.validate):
    backends (None: every installed one), dtypes, rtol and atol (None: the per-dtype default).
    Raises a one-line CrossnnError naming the option (and the ini file it came from)."""
    from crossnn.validate import check_dtypes, name_list, parse_tolerance

    def source(name: str) -> tuple[str, str]:
        """The value of setting `name` and how to name it: the command-line option, or the ini key."""
        given = config.getoption(f"--crossnn-{name}", None) if name in ("backends", "dtypes") else None
        if given is not None:
            return given, f"--crossnn-{name}"
        inifile = f" in {config.inipath.name}" if getattr(config, "inipath", None) else ""
        return config.getini(f"crossnn_{name}"), f"crossnn_{name}{inifile}"

    from crossnn import backends
    from crossnn.errors import BackendError

    backends_text, backends_option = source("backends")
    names = name_list(backends_text, backends_option) if backends_text.strip() else None
    installed = backends.discover()
    for name in names or ():  # an uninstalled framework's backend is skipped, an unknown name is a typo
        if name not in installed:
            raise BackendError(f"{backends_option}: unknown backend '{name}'; installed: {', '.join(installed)}")
    return {"backends": names,
            "dtypes": check_dtypes(*source("dtypes")),
            "rtol": parse_tolerance(*source("rtol")), "atol": parse_tolerance(*source("atol"))}


class SpecFileError(Exception):
    """A spec file that cannot be used (its spec or data, or a bad plugin setting): reported as its
    one-line message."""


class SpecFile(pytest.File):
    def collect(self):
        from crossnn import backends
        from crossnn.data import load_dataset
        from crossnn.errors import CrossnnError
        from crossnn.spec import load

        try:
            self.settings = _settings(self.config)
            self.experiment = load(self.path)
            self.dataset = load_dataset(self.experiment)
        except CrossnnError as err:
            message = str(err)
            raise SpecFileError(message if str(self.path) in message else f"{self.path}: {message}") from None
        self.result = None
        names = self.settings["backends"] or list(backends.discover())
        for dtype in self.settings["dtypes"]:
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

            self.result = train(self.experiment, [], dataset=self.dataset)
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

        entry = backends.discover()[self.backend]  # an unknown name is a collection error (_settings)
        if not entry.available:
            pytest.skip(f"backend '{self.backend}' unavailable: {entry.reason}")
        parent: SpecFile = self.parent  # type: ignore[assignment]
        ref = parent.reference()
        result = train(parent.experiment, [RunSpec(self.backend, self.dtype)], reference=ref.reference,
                       dataset=ref.dataset)
        (record,) = result.records
        default = tolerance_for(self.dtype, record.spec.device)
        rtol, atol = parent.settings["rtol"], parent.settings["atol"]
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
