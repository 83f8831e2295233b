"""Presets: `defaults = "torch" | "keras"` fills every hyperparameter a spec leaves out with that
framework's default.

The values are not stated here. Each lives in the differences catalog (crossnn.differences), on the
entry that explains where the frameworks disagree, as a `Default`:

    Default(S.Adam, "eps", {"torch": 1e-8, "keras": 1e-7})

A backend plugin may contribute more (`Backend.catalog_defaults`, entry id -> Defaults), which is how
a new framework brings a preset of its own. Resolution works on the file form (the parsed TOML
table, or the keyword arguments of `make`) before any dataclass is built:

- a preset fills only fields the spec leaves open: fields without a dataclass default, and fields
  that are required only in some cases (`when`, e.g. weight_decay_kind once weight_decay > 0);
- a Default for a class also serves its subclasses (AdamW takes Adam's unless it has its own), and
  one `within` a containing class (LeakyReLU's slope inside an activation layer) comes before one
  without;
- without a preset, a field some preset could fill is an error that names it and the presets'
  values; fields no preset knows keep the plain "missing key" error.

A new layer declares its defaults by adding Defaults to the catalog entry that documents them, e.g.
for a Conv2D spec class: Default(Conv2D, "kernel_init", {"torch": FanInUniform(), "keras":
GlorotUniform()}) on "default-init" (its fans already count the receptive field), Default(AvgPool2D,
"count_padding", {"torch": True, "keras": False}) on the entry for pooling. Values are spec values in
the spec's convention (an Initializer instance, a float, a string), not a framework's argument where
the two differ (a BatchNorm momentum the spec defines as Keras' weight of the old average takes
torch's momentum=0.1 as 0.9); the tests check each value against the installed frameworks.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crossnn.errors import SpecError, join_path
from crossnn.spec.base import Spec, _required_fields, _type_hints, to_plain

#: how a user sets a preset, for the error messages of files and of Python code
FILE_HINT = "set defaults = {choices} at the top of the file"
PYTHON_HINT = "pass defaults={choices}"


@dataclass(frozen=True)
class Condition:
    """When a preset fills a field that is required only in some cases: `test` of the value the spec
    gives `field` (absent: None), described by `text`."""

    field: str
    test: Callable[[Any], bool]
    text: str

    def holds(self, fields: Mapping[str, Any]) -> bool:
        try:
            return bool(self.test(fields.get(self.field)))
        except TypeError:  # a value of the wrong type: construction reports it
            return False


@dataclass(frozen=True)
class Default:
    """One framework default as data: preset name -> the value of `field` of spec class `spec`.

    within: only where the value sits in a field of this class (more specific than one without).
    when:   for a field that has a dataclass default but is required in some cases.
    notes:  preset -> what the framework computes differently from the spec's formula with this value.
    """

    spec: type[Spec]
    field: str
    values: Mapping[str, Any]
    within: type[Spec] | None = None
    when: Condition | None = None
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.field not in {f.name for f in dataclasses.fields(self.spec) if f.init}:
            raise TypeError(f"Default: {self.spec.__name__} has no field '{self.field}'")
        if self.field not in {f.name for f in _required_fields(self.spec)} and self.when is None:
            raise TypeError(f"Default: {self.spec.__name__}.{self.field} has a default in the spec; a preset fills "
                            "only fields the spec leaves open (or give `when`)")

    @property
    def label(self) -> str:
        """Where the value goes, as a reader of spec files says it: "adam.eps", "dense.kernel_init"."""
        owner = self.spec.kind or self.spec.family or self.spec.__name__.lower()
        return f"{owner}.{self.field}"


@dataclass(frozen=True)
class Fill:
    """A value a preset wrote into a spec: its key path, the preset, the value, the catalog entry."""

    path: str
    preset: str
    value: Any
    entry: str
    note: str | None


class Presets:
    """Every Default, from the catalog and the installed backends, indexed by (spec class, field)."""

    def __init__(self, defaults: list[tuple[str, Default]]):
        self.defaults = defaults
        self._by_field: dict[tuple[type, str], list[tuple[str, Default]]] = {}
        for entry_id, default in defaults:
            self._by_field.setdefault((default.spec, default.field), []).append((entry_id, default))
        self.names = tuple(dict.fromkeys(name for _, d in defaults for name in d.values))

    def candidates(self, cls: type, name: str, within: type | None) -> list[tuple[str, Default]]:
        """The Defaults that may fill `cls.name` inside a `within`, most specific first."""
        out = []
        for klass in cls.__mro__:
            found = self._by_field.get((klass, name), [])
            out += [d for d in found if d[1].within is not None and within is not None
                    and issubclass(within, d[1].within)]
            out += [d for d in found if d[1].within is None]
        return out

    def pick(self, candidates: list[tuple[str, Default]], preset: str) -> tuple[str, Default] | None:
        return next((c for c in candidates if preset in c[1].values), None)


def presets() -> Presets:
    """The presets as the catalog (and every installed backend's contributions) state them."""
    from crossnn.differences import entries  # the catalog is the one place each default is stated

    return Presets([(entry.id, default) for entry in entries() for default in entry.defaults])


def check_name(preset: Any, known: Presets) -> str:
    if not isinstance(preset, str):
        raise SpecError(f"expected a preset name (a string), got {type(preset).__name__}", ("defaults",))
    if preset not in known.names:
        raise SpecError(f"unknown preset '{preset}'; presets: {', '.join(known.names)}", ("defaults",))
    return preset


class Resolver:
    """Fills one spec's missing fields from a preset (or explains, per field, which presets would)."""

    def __init__(self, preset: str | None, hint: str = FILE_HINT, known: Presets | None = None):
        self.known = known or presets()
        self.preset = None if preset is None else check_name(preset, self.known)
        self.hint = hint
        self.fills: list[Fill] = []

    def fields(self, cls: type[Spec], given: Mapping[str, Any], path: tuple[str, ...] = (),
               within: type | None = None, bare: str | None = None) -> dict[str, Any]:
        """`given` (the file form of a `cls`, without its type key) with the preset's values added."""
        out = dict(given)
        hints = _type_hints(cls)
        required = {f.name for f in _required_fields(cls)}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            here = path + (f.name,)
            if f.name in out:
                out[f.name] = self.value(out[f.name], hints[f.name], here, cls)
                continue
            candidates = [c for c in self.known.candidates(cls, f.name, within)
                          if f.name in required or (c[1].when is not None and c[1].when.holds(out))]
            if not candidates:
                continue  # nothing to fill; the dataclass default or construction's "missing key" speaks
            chosen = self.known.pick(candidates, self.preset) if self.preset else None
            if chosen is None:
                raise SpecError(self._missing(candidates, cls, f.name, bare), here)
            entry_id, default = chosen
            out[f.name] = to_plain(default.values[self.preset])
            self.fills.append(Fill(join_path(here), self.preset, default.values[self.preset], entry_id,
                                   default.notes.get(self.preset)))
        return out

    def value(self, value: Any, annotation: Any, path: tuple[str, ...], within: type | None) -> Any:
        """A field's file form with the preset's values added wherever it holds specs."""
        origin = typing.get_origin(annotation)
        if origin is tuple and isinstance(value, (list, tuple)):
            (element, *_) = typing.get_args(annotation)
            return [self.value(v, element, path + (f"[{i}]",), within) for i, v in enumerate(value)]
        kind = next((t for t in _options(annotation) if isinstance(t, type) and issubclass(t, Spec)), None)
        if kind is None:
            return value
        if not kind.family:  # a section (model, train): a plain table of fields
            return self.fields(kind, value, path, within) if isinstance(value, dict) else value
        if isinstance(value, str) and value in kind.kinds():
            filled = self.fields(kind.kinds()[value], {}, path, within, bare=value)
            return {kind.tag: value, **filled} if filled else value
        if isinstance(value, dict) and isinstance(value.get(kind.tag), str) and value[kind.tag] in kind.kinds():
            member = kind.kinds()[value[kind.tag]]
            rest = {k: v for k, v in value.items() if k != kind.tag}
            return {kind.tag: value[kind.tag], **self.fields(member, rest, path, within)}
        return value  # a spec instance, or something construction will report

    def _missing(self, candidates, cls, name: str, bare: str | None) -> str:
        uses, lacking = [], []
        for preset in self.known.names:
            chosen = self.known.pick(candidates, preset)
            if chosen is None:
                lacking.append(preset)
            else:
                value = chosen[1].values[preset]
                uses.append((preset, value))
        said = ", ".join(f"{p}{' uses' if i == 0 else ''} {show(v)}" for i, (p, v) in enumerate(uses))
        if lacking:
            said += f"; {' and '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} none"
        choices = " or ".join(f'"{p}"' for p, _ in uses)
        write = f"write {{ {cls.tag} = \"{bare}\", {name} = ... }}" if bare else "write it"
        if self.preset:  # the chosen preset is among those that have none
            return f"missing ({said}; {write})"
        return f"missing ({said}; {write}, or {self.hint.format(choices=choices)})"


def show(value: Any) -> str:
    """A preset value as a message shows it, in the file's (TOML's) words: 1e-8, fan_in_uniform, "l2",
    true, { type = "normal", mean = 0.0, stddev = 1.0 }."""
    plain = to_plain(value)
    if isinstance(value, Spec) and isinstance(plain, str):
        return plain
    if isinstance(plain, dict):
        return "{ " + ", ".join(f"{key} = {show(item)}" for key, item in plain.items()) + " }"
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), repr(plain))
    if isinstance(plain, str):
        return f'"{plain}"'
    return str(plain)


def make(cls: type[Spec], /, *, defaults: str | None = None, **fields: Any) -> Spec:
    """A spec object from keyword fields, the fields left out taken from the preset `defaults`
    ("torch", "keras"): `make(S.Dense, units=5, defaults="torch")`. Nested specs may be given as
    objects, names or tables; the preset fills those given as names or tables too. Without a preset a
    missing field is a SpecError that names it (the dataclass alone raises a bare TypeError)."""
    resolver = Resolver(defaults, PYTHON_HINT)
    if cls.family and not cls.kind:
        return cls.from_value(resolver.value(fields, cls, (), None))
    return cls.from_fields(resolver.fields(cls, fields))


def _options(annotation: Any) -> tuple[Any, ...]:
    args = typing.get_args(annotation)
    return args if args and typing.get_origin(annotation) is not tuple else (annotation,)
