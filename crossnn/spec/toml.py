"""Spec files: TOML read with the standard library's tomllib (Python 3.11+; on 3.10 its original, the
tomli package, which the install pulls in there), written by a small writer that keeps every
value exact (floats are written with repr, which round-trips), so spec -> file -> spec is lossless.

A file may start with `defaults = "torch"` (or "keras"): the fields it leaves out take that
framework's defaults (crossnn.spec.presets). What is written is always the resolved form: every
value in place and no `defaults` key."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, before it joined the standard library
    import tomli as tomllib

from crossnn.errors import SpecError
from crossnn.spec.data import DataSource
from crossnn.spec.experiment import Experiment, Train
from crossnn.spec.losses import Loss
from crossnn.spec.model import Model
from crossnn.spec.optimizers import Optimizer
from crossnn.spec.presets import FILE_HINT, Fill, Resolver

_SECTIONS = {"data": DataSource, "model": Model, "loss": Loss, "optimizer": Optimizer, "train": Train}
_TOP_KEYS = ("name", "seed")
PRESET_KEY = "defaults"


def experiment_from_dict(table: dict[str, Any], source: str | None = None, defaults: str | None = None,
                         hint: str = FILE_HINT) -> Experiment:
    """Build an Experiment from the parsed file, reporting the first problem by key path. Fields the
    table leaves out come from the preset its `defaults` key names, else from `defaults`
    (crossnn.spec.presets)."""
    return read_table(table, source, defaults, hint)[0]


def read_table(table: dict[str, Any], source: str | None = None, defaults: str | None = None,
               hint: str = FILE_HINT) -> tuple[Experiment, tuple[Fill, ...]]:
    """experiment_from_dict, and the values the preset filled in."""
    try:
        known = {*_TOP_KEYS, *_SECTIONS, PRESET_KEY}
        for key in table:
            if key not in known:
                raise SpecError(f"unknown top-level key '{key}'; expected: {', '.join(sorted(known))}")
        preset = table.get(PRESET_KEY, defaults)
        if PRESET_KEY in table and defaults is not None and table[PRESET_KEY] != defaults:
            raise SpecError(f"the spec says '{table[PRESET_KEY]}', the caller '{defaults}'", (PRESET_KEY,))
        resolver = Resolver(preset, hint)
        for key in (*_TOP_KEYS, *_SECTIONS):
            if key not in table:
                raise SpecError(f"missing key '{key}'")
        fields: dict[str, Any] = {"name": table["name"], "seed": table["seed"], "source": source}
        for key, family in _SECTIONS.items():
            value = table[key]
            if not isinstance(value, dict):
                raise SpecError(f"expected a table [{key}], got {type(value).__name__}", (key,))
            value = resolver.value(value, family, (key,), None)
            try:
                fields[key] = family.from_value(value) if family.family else family.from_fields(value)
            except SpecError as err:
                raise err.within(key) from None
        return Experiment(**fields), tuple(resolver.fills)
    except SpecError as err:
        raise (err.in_file(source) if source else err) from None


def experiment_to_dict(experiment: Experiment) -> dict[str, Any]:
    """The file form: every field written out, defaults included, no preset (the resolved form)."""
    out: dict[str, Any] = {"name": experiment.name, "seed": experiment.seed}
    for key in _SECTIONS:
        spec = getattr(experiment, key)
        value = spec.to_value() if spec.family else spec.fields_dict()
        out[key] = value if isinstance(value, dict) else {spec.tag: value}
    return out


def loads(text: str, source: str | None = None, defaults: str | None = None) -> Experiment:
    """A spec from TOML text; `defaults` is the preset for a text without a `defaults` key."""
    return read(text, source, defaults)[0]


def read(text: str, source: str | None = None, defaults: str | None = None) -> tuple[Experiment, tuple[Fill, ...]]:
    """loads, and the values its preset filled in."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"not valid TOML: {err}", source=source) from None
    except RecursionError:  # tomllib parses nested arrays and tables by recursion
        raise SpecError("not usable TOML: arrays or tables nested too deeply", source=source) from None
    return read_table(table, source, defaults)


def read_file(path: str | Path, defaults: str | None = None) -> tuple[Experiment, tuple[Fill, ...]]:
    """load, and the values its preset filled in."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"cannot read spec file: {err.strerror or err}", source=str(path)) from None
    except UnicodeDecodeError as err:
        raise SpecError(f"not a TOML text file: byte {err.start} is not UTF-8", source=str(path)) from None
    return read(text, str(path), defaults)


def load(path: str | Path, defaults: str | None = None) -> Experiment:
    return read_file(path, defaults)[0]


def dumps(experiment: Experiment) -> str:
    """The resolved file form: every value written out, no `defaults` key."""
    return write_toml(experiment_to_dict(experiment))


def save(experiment: Experiment, path: str | Path) -> None:
    """Write the spec file completely or not at all."""
    from crossnn.files import write_text_atomic

    write_text_atomic(Path(path), dumps(experiment))


# ---- writer -------------------------------------------------------------------------------------

def write_toml(document: dict[str, Any]) -> str:
    """TOML for a document of scalars, arrays and tables: top-level tables become [sections],
    arrays of tables [[sections]], and anything nested deeper is written inline."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in document.items() if not _is_section(v)]
    for key, value in document.items():
        if isinstance(value, dict):
            lines += ["", f"[{_key(key)}]"]
            lines += _section_body(value, _key(key))
        elif _is_section(value):
            for item in value:
                lines += ["", f"[[{_key(key)}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _section_body(table: dict[str, Any], prefix: str) -> list[str]:
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not _is_table_array(v)]
    for key, value in table.items():
        if _is_table_array(value):
            for item in value:
                lines += ["", f"[[{prefix}.{_key(key)}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return lines


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_section(value: Any) -> bool:
    return isinstance(value, dict) or _is_table_array(value)


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.match(key) else _string(key)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters (U+0000-001F, U+007F) escaped."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
