"""Checks of the tolerances, counts and names a user passes, shared by the command line, the Python
API (crossnn.testing, crossnn.harness.train, crossnn.parity.Tolerance) and the pytest plugin.

Each check takes the value and the name the user wrote it under (`--rtol` on the command line,
`rtol` in Python, `crossnn_rtol` in an ini file), returns the value in canonical form, and raises a
one-line CrossnnError naming that option. NumPy scalars are taken where the Python type is.
Imports nothing heavy at module level.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Iterable

from crossnn.errors import BackendError, SpecError

#: a device as the command line and the API take it: cpu, cuda or gpu, optionally with an index
DEVICE = re.compile(r"(cpu|cuda|gpu)(:\d+)?")


def check_tolerance(value, option: str, *, required: bool = False) -> float | None:
    """A finite number >= 0, or (unless `required`) None for the per-dtype default."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise SpecError(f"{option}: must be a finite number >= 0, got {_shown(value)}")
    return float(value)


def parse_tolerance(text: str, option: str) -> float | None:
    """A tolerance written as text (an ini file's value): '' is None, anything else check_tolerance's."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{option}: must be a finite number >= 0, got '{text}'") from None
    return check_tolerance(value, option)


def check_count(value, option: str) -> int | None:
    """None or an integer >= 1 (snapshot intervals, stop steps, threads, repeats, runs, workers)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SpecError(f"{option}: must be an integer >= 1, got {_shown(value)}")
    return int(value)


def name_list(value: str | Iterable[str] | None, option: str, *, what: str = "") -> list[str]:
    """Names as a list: a string is one name, or several separated by commas ("numpy,torch", as on
    the command line); a list or tuple is taken name by name. Each name once, in the order given.
    None is []; a value that names nothing ('', ',', []) is refused (`what` says what to name): leave
    the option out to get its default. A value that is not text is a TypeError."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(",")
    else:
        try:
            parts = list(value)
        except TypeError:
            raise TypeError(f"{option}: expected a name, names separated by commas, or a list of names, "
                            f"got {type(value).__name__} {value!r}") from None
        for part in parts:
            if not isinstance(part, str):
                raise TypeError(f"{option}: expected names (strings), got {type(part).__name__} {part!r}")
    names = list(dict.fromkeys(part.strip() for part in parts if part.strip()))
    if not names:
        if what:
            raise BackendError(f"{option}: name {what}")
        raise SpecError(f"{option}: names nothing (got {value!r}); leave it out for the default")
    return names


def check_dtypes(value, option: str = "dtypes") -> list[str]:
    """The dtypes named (each one parity has tolerances for), at least one."""
    from crossnn.parity import TOLERANCES

    known = " or ".join(sorted(TOLERANCES))
    dtypes = name_list(value, option, what=f"a dtype ({known})")
    for dtype in dtypes:
        if dtype not in TOLERANCES:
            raise BackendError(f"{option}: unknown dtype '{dtype}'; use {known}")
    return dtypes


def check_device(value, option: str = "device") -> str:
    """A device name: cpu, cuda or gpu, optionally followed by :N (cuda:1)."""
    if not isinstance(value, str) or not DEVICE.fullmatch(value.strip().lower()):
        raise BackendError(f"{option}: unknown device {value!r}; use cpu or cuda[:N]")
    return value.strip()


def check_devices(value, option: str = "devices") -> list[str]:
    """The devices named, each checked by check_device, at least one."""
    return [check_device(device, option) for device in name_list(value, option, what="a device (cpu or cuda[:N])")]


def _shown(value) -> str:
    """A value as an error message shows it: numbers as Python writes them, anything else with its type."""
    if isinstance(value, bool):
        return repr(value)
    if not isinstance(value, numbers.Real):
        return f"{type(value).__name__} {value!r}"
    return str(int(value)) if isinstance(value, numbers.Integral) else repr(float(value))
