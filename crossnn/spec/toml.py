"""Spec files: TOML read with the standard library, written by a small writer that keeps every
value exact (floats are written with repr, which round-trips), so spec -> file -> spec is lossless."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

from crossnn.errors import SpecError
from crossnn.spec.data import DataSource
from crossnn.spec.experiment import Experiment, Train
from crossnn.spec.losses import Loss
from crossnn.spec.model import Model
from crossnn.spec.optimizers import Optimizer

_SECTIONS = {"data": DataSource, "model": Model, "loss": Loss, "optimizer": Optimizer, "train": Train}
_TOP_KEYS = ("name", "seed")


def experiment_from_dict(table: dict[str, Any], source: str | None = None) -> Experiment:
    """Build an Experiment from the parsed file, reporting the first problem by key path."""
    try:
        known = set(_TOP_KEYS) | set(_SECTIONS)
        for key in table:
            if key not in known:
                raise SpecError(f"unknown top-level key '{key}'; expected: {', '.join(sorted(known))}")
        for key in (*_TOP_KEYS, *_SECTIONS):
            if key not in table:
                raise SpecError(f"missing key '{key}'")
        fields: dict[str, Any] = {"name": table["name"], "seed": table["seed"], "source": source}
        for key, family in _SECTIONS.items():
            value = table[key]
            if not isinstance(value, dict):
                raise SpecError(f"expected a table [{key}], got {type(value).__name__}", (key,))
            try:
                fields[key] = family.from_value(value) if family.family else family.from_fields(value)
            except SpecError as err:
                raise err.within(key) from None
        return Experiment(**fields)
    except SpecError as err:
        raise (err.in_file(source) if source else err) from None


def experiment_to_dict(experiment: Experiment) -> dict[str, Any]:
    """The file form: every field written out, defaults included."""
    out: dict[str, Any] = {"name": experiment.name, "seed": experiment.seed}
    for key in _SECTIONS:
        spec = getattr(experiment, key)
        value = spec.to_value() if spec.family else spec.fields_dict()
        out[key] = value if isinstance(value, dict) else {spec.tag: value}
    return out


def loads(text: str, source: str | None = None) -> Experiment:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"not valid TOML: {err}", source=source) from None
    except RecursionError:  # tomllib parses nested arrays and tables by recursion
        raise SpecError("not usable TOML: arrays or tables nested too deeply", source=source) from None
    return experiment_from_dict(table, source)


def load(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"cannot read spec file: {err.strerror or err}", source=str(path)) from None
    except UnicodeDecodeError as err:
        raise SpecError(f"not a TOML text file: byte {err.start} is not UTF-8", source=str(path)) from None
    return loads(text, str(path))


def dumps(experiment: Experiment) -> str:
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
