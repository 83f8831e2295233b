"""Errors that reach the user as one line (the CLI prints them without a traceback)."""

from __future__ import annotations


class CrossnnError(Exception):
    """Base of every error crossnn reports to a user; its str() is one line."""


class SpecError(CrossnnError, ValueError):
    """A spec value is wrong. `path` names the field, e.g. ('model', 'layers[2]', 'units')."""

    def __init__(self, message: str, path: tuple[str, ...] = (), source: str | None = None):
        self.message = message
        self.path = tuple(path)
        self.source = source
        super().__init__(str(self))

    def within(self, *outer: str) -> "SpecError":
        """The same error seen from an enclosing field."""
        return SpecError(self.message, tuple(outer) + self.path, self.source)

    def in_file(self, source: str) -> "SpecError":
        return SpecError(self.message, self.path, source)

    def __str__(self) -> str:
        where = join_path(self.path)
        head = ": ".join(part for part in (self.source, where) if part)
        return f"{head}: {self.message}" if head else self.message


def join_path(path: tuple[str, ...]) -> str:
    """A key path as messages write it: ("model", "layers", "[0]", "units") -> model.layers[0].units."""
    out = ""
    for part in path:
        out += part if (not out or part.startswith("[")) else "." + part
    return out


class DataError(CrossnnError):
    """Data could not be read or does not fit the model."""


class OutputError(CrossnnError):
    """An output path cannot be written, or writing it would destroy something of the user's."""


class BackendError(CrossnnError):
    """A backend is unknown, unavailable, or cannot lower a feature of the spec."""


class UnsupportedFeature(BackendError):
    """A backend has no lowering for a spec feature."""

    def __init__(self, backend: str, feature: str):
        super().__init__(f"backend '{backend}' cannot lower {feature}")
        self.backend = backend
        self.feature = feature
