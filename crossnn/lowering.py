"""The lowering registry each backend keeps: spec class -> the entry that lowers it.

A backend has ONE registry (its `OPS`). The entry for a spec class — a layer, an activation, a loss
or an optimizer rule — holds everything the backend does with that class: the code that trains it
and the text its emitted script uses, side by side, so adding a layer to a backend is adding one
entry. What an entry looks like is the backend's own contract (its ops module documents it); the
registry only stores and finds entries, and says which backend lacks what:

    OPS = Registry("numpy")

    @OPS.register(spec.Dense)
    class Dense: ...

    OPS.lookup(layer_spec)        # the entry, or UnsupportedFeature("numpy", "layer 'conv3d'")

User code registers its own spec classes the same way (examples/custom_layer.py).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from crossnn.errors import UnsupportedFeature
from crossnn.spec.base import Spec

Entry = TypeVar("Entry")


class Registry:
    """Entries by exact spec class (a subclass of a registered class is not covered: its math may
    differ, so it needs its own entry)."""

    def __init__(self, backend: str):
        self.backend = backend
        self._entries: dict[type, Any] = {}

    def register(self, *spec_classes: type[Spec]) -> Callable[[Entry], Entry]:
        """Decorator: the entry for `spec_classes` (registering a class again replaces its entry)."""
        for cls in spec_classes:
            if not (isinstance(cls, type) and issubclass(cls, Spec) and cls.kind):
                raise TypeError(f"register() takes crossnn spec classes with a kind, got {cls!r}")

        def add(entry: Entry) -> Entry:
            for cls in spec_classes:
                self._entries[cls] = entry
            return entry
        return add

    def __contains__(self, spec_class: type) -> bool:
        return spec_class in self._entries

    def lookup(self, spec: Spec, purpose: str = "") -> Any:
        """The entry for `spec`'s class; UnsupportedFeature naming the family and kind otherwise.
        purpose: what the entry is wanted for, for the message (e.g. "in a script")."""
        entry = self._entries.get(type(spec))
        if entry is None:
            raise UnsupportedFeature(self.backend, f"{spec.family} '{spec.kind}'" + (f" {purpose}" if purpose else ""))
        return entry

    def kinds(self, family: str) -> list[str]:
        """The kinds of one family (layer, activation, loss, optimizer) this backend lowers."""
        return sorted(cls.kind for cls in self._entries if cls.family == family)
