"""The machinery every spec class shares: kinds, typed fields, conversion and validation.

A spec family (layers, activations, losses, ...) is a frozen dataclass base declared with
``family=``; each member declares ``kind=`` and is found by that name in files::

    @dataclass(frozen=True, kw_only=True)
    class Dense(Layer, kind="dense"):
        units: int

Fields are converted and type-checked from their annotations on construction (so a spec built in
Python and one read from TOML go through the same checks; NumPy scalars and arrays are taken where
Python numbers and lists are, and stored as the Python values), then ``validate()`` checks values.
Errors are `SpecError`s naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from typing import Any, ClassVar, Literal, Union

import numpy as np

from crossnn.errors import SpecError


class Array(tuple):
    """Field type for inline numeric data: a rectangular nested tuple of numbers, of any rank. A NumPy
    array is taken as its nested lists (ndarray.tolist: Python floats and ints), so a spec built from
    arrays equals, hashes and saves like one read from a file."""


class Pair(tuple):
    """Field type for a (height, width) pair of positive integers; one integer n means (n, n)."""


class Spec:
    """Base of every spec class. Subclass with ``family=`` to start a family, ``kind=`` to join one."""

    family: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    tag: ClassVar[str] = "type"  # the key that names the kind in a file
    _kinds: ClassVar[dict[str, type[Spec]]]

    def __init_subclass__(cls, family: str | None = None, kind: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if family is not None:
            cls.family = family
            cls._kinds = {}
        if kind is not None:
            if kind in cls._kinds:
                raise TypeError(f"{cls.family} kind '{kind}' is already registered by {cls._kinds[kind].__qualname__}")
            cls.kind = kind
            cls._kinds[kind] = cls

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            try:
                converted = convert(value, hints[field.name])
            except SpecError as err:
                raise err.within(field.name) from None
            if converted is not value:
                object.__setattr__(self, field.name, converted)
        self.validate()

    def validate(self) -> None:
        """Check values beyond their types; raise `SpecError` naming the field."""

    # ---- families -----------------------------------------------------------------------------

    @classmethod
    def kinds(cls) -> dict[str, type[Spec]]:
        return dict(cls._kinds)

    @classmethod
    def lookup(cls, kind: str) -> type[Spec]:
        if kind not in cls._kinds:
            raise SpecError(f"unknown {cls.family} {cls.tag} '{kind}'{_suggest(kind, cls._kinds)}; "
                            f"known: {', '.join(sorted(cls._kinds))}", (cls.tag,))
        return cls._kinds[kind]

    @classmethod
    def from_value(cls, value: Any) -> Spec:
        """Build a member of this family from a kind name or a table with the tag key."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            member = cls.lookup(value)
            missing = [f.name for f in _required_fields(member)]
            if missing:
                raise SpecError(f"{cls.family} '{value}' needs {', '.join(missing)}: write it as a table, "
                                f"{{ {cls.tag} = \"{value}\", {missing[0]} = ... }}")
            return member()
        if isinstance(value, dict):
            if cls.tag not in value:
                raise SpecError(f"missing key '{cls.tag}' (the {cls.family} kind)")
            kind = value[cls.tag]
            if not isinstance(kind, str):
                raise SpecError(f"expected a string, got {_describe(kind)}", (cls.tag,))
            return cls.lookup(kind).from_fields({k: v for k, v in value.items() if k != cls.tag})
        raise SpecError(f"expected {article(cls.family)} {cls.family} name or table, got {_describe(value)}")

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Spec:
        """Construct from a field dictionary, with unknown and missing keys reported by name."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        member = f" for {cls.family} '{cls.kind}'" if cls.kind else ""  # sections (model, train) have no kind
        for key in fields:
            if key not in known:
                raise SpecError(f"unknown key '{key}'{member}{_suggest(key, known)}; "
                                f"expected: {', '.join(sorted(known))}")
        for field in _required_fields(cls):
            if field.name not in fields:
                raise SpecError(f"missing key '{field.name}'{member}")
        return cls(**fields)

    def to_value(self) -> str | dict[str, Any]:
        """The file form: the bare kind name when there are no fields, else a table."""
        fields = self.fields_dict()
        if not fields and not _required_fields(type(self)):
            return self.kind
        return {self.tag: self.kind, **fields}

    def fields_dict(self) -> dict[str, Any]:
        """Every field's file form (None values are left out: TOML has no null)."""
        out = {}
        for field in dataclasses.fields(self):
            value = to_plain(getattr(self, field.name))
            if value is not None:
                out[field.name] = value
        return out


def article(word: str) -> str:
    """'an' before a vowel, else 'a' (an activation, an embedding; a dense)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def short_text(plain: Any) -> str:
    """A value in file form (see to_plain) on one short line: true/false, a table as
    type(key=value, ...), anything else as str."""
    if isinstance(plain, bool):
        return str(plain).lower()
    if isinstance(plain, dict):
        return plain.get("type", "") + "(" + ", ".join(f"{k}={v}" for k, v in plain.items() if k != "type") + ")"
    return str(plain)


def to_plain(value: Any) -> Any:
    """A spec value in file form: specs become names or tables, tuples become lists."""
    if isinstance(value, Spec):
        return value.to_value()
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


# ---- conversion -------------------------------------------------------------------------------

def convert(value: Any, annotation: Any) -> Any:
    """Check `value` against a field annotation and return it in canonical form."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option)
            except SpecError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices or isinstance(value, bool):
            raise SpecError(f"expected one of {', '.join(repr(c) for c in choices)}, got {_describe(value)}")
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"expected a list, got {_describe(value)}")
        element = args[0]
        out = []
        for i, item in enumerate(value):
            try:
                out.append(convert(item, element))
            except SpecError as err:
                raise err.within(f"[{i}]") from None
        return tuple(out)
    if annotation is Array:
        return _convert_array(value)
    if annotation is Pair:
        return _convert_pair(value)
    if annotation is bool:
        if not _is_bool(value):
            raise SpecError(f"expected true or false, got {_describe(value)}")
        return bool(value)
    if annotation is int:
        if _is_bool(value) or not isinstance(value, numbers.Integral):
            raise SpecError(f"expected an integer, got {_describe(value)}")
        return int(value)
    if annotation is float:
        if _is_bool(value) or not isinstance(value, numbers.Real):
            raise SpecError(f"expected a number, got {_describe(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise SpecError(f"expected a string, got {_describe(value)}")
        return str(value)
    if isinstance(annotation, type) and issubclass(annotation, Spec):
        return annotation.from_value(value)
    raise TypeError(f"spec field annotation {annotation!r} is not supported")


def _is_bool(value: Any) -> bool:
    """True and False, and NumPy's np.True_ and np.False_."""
    return isinstance(value, (bool, np.bool_))


def _convert_array(value: Any) -> Array:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(f"expected a non-empty list of numbers or of rows, got {_describe(value)}")
    return Array(_rectangular(value, ""))


def _rectangular(value: Any, where: str) -> tuple:
    """A nested list of numbers as nested tuples, checked to be rectangular (every row of a level
    has the length and depth of the level's first row)."""
    if not all(isinstance(v, (list, tuple)) for v in value):
        return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(value))
    rows = []
    for i, row in enumerate(value):
        if len(row) != len(value[0]) or len(row) == 0:
            raise SpecError(f"row {where}[{i}] has {len(row)} values, row {where}[0] has {len(value[0])}")
        rows.append(_rectangular(row, f"{where}[{i}]"))
    depth = _depth(rows[0])
    for i, row in enumerate(rows):
        if _depth(row) != depth:
            raise SpecError(f"row {where}[{i}] is nested {_depth(row)} deep, row {where}[0] {depth} deep")
    return tuple(rows)


def _depth(value: Any) -> int:
    return 1 + _depth(value[0]) if isinstance(value, tuple) else 0


def _convert_pair(value: Any) -> Pair:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
        raise SpecError(f"expected an integer or a list of two integers [height, width], got {_describe(value)}")
    if min(value) <= 0:
        raise SpecError(f"must be positive, got {list(value)}")
    return Pair(value)


def _number(value: Any, where: str) -> int | float:
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise SpecError(f"expected a number, got {_describe(value)}", (where,))
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"value is {value}: data must be finite", (where,))
    return value


# ---- helpers for validate() -------------------------------------------------------------------

def require(condition: bool, field: str, message: str) -> None:
    """Raise a SpecError on `field` unless `condition` holds."""
    if not condition:
        raise SpecError(message, (field,))


def positive(spec: Spec, *names: str) -> None:
    for name in names:
        value = getattr(spec, name)
        require(value > 0, name, f"must be > 0, got {value}")


def finite(spec: Spec, *names: str) -> None:
    for name in names:
        value = getattr(spec, name)
        require(math.isfinite(value), name, f"must be finite, got {value}")


def _required_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING]


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string '{value}'"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = " ".join(repr(value).split())  # one line, however the value prints itself
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _suggest(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
