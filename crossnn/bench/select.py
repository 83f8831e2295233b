"""Which (backend, device, mode) combinations a benchmark runs, and why the others are skipped.

A GPU row runs only on a device the backend actually sees; otherwise it is skipped with a note —
never measured on the CPU under a GPU label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

#: spellings of the device kinds a user may ask for
DEVICE_KINDS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}


@dataclass(frozen=True)
class Offer:
    """What a backend can run: its devices (e.g. "cpu", "cuda:0", "gpu:0"), its modes, its fast modes
    (best first), the device kinds of the modes that do not run everywhere, and why a mode cannot run
    with the installed framework at all."""

    devices: tuple[str, ...]
    modes: tuple[str, ...]
    fast_modes: tuple[str, ...] = ()
    mode_device_kinds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unavailable_modes: Mapping[str, str] = field(default_factory=dict)

    def why_not(self, name: str, mode: str, kind: str) -> str | None:
        """Why `mode` cannot run on a device of `kind`, or None when it can."""
        if mode in self.unavailable_modes:
            return f"{name}'s {mode} mode is unavailable: {self.unavailable_modes[mode]}"
        kinds = self.mode_device_kinds.get(mode, (kind,))
        if kind not in kinds:
            return f"{name}'s {mode} mode runs on {' and '.join(kinds).upper()} only"
        return None


@dataclass(frozen=True)
class Target:
    backend: str
    device: str
    mode: str


@dataclass(frozen=True)
class Skipped:
    backend: str
    device: str
    mode: str
    reason: str


def device_kind(device: str) -> str | None:
    return DEVICE_KINDS.get(device.split(":")[0].strip().lower())


def select(offers: Mapping[str, Offer], devices: Sequence[str], modes: Sequence[str] | None = None,
           quick: bool = False) -> tuple[list[Target], list[Skipped]]:
    """Targets for every backend in `offers` × requested device kind × mode.

    modes: None means every mode of each backend (or, with quick, its first — the tutorial-style
    step — and the first of its fast modes that runs on the device); a list keeps the named modes a
    backend has. A mode that does not run on a device kind, or not with the installed framework, is
    skipped with a note.
    """
    targets, skipped = [], []
    for name, offer in offers.items():
        if modes is not None and not any(m in offer.modes for m in modes):
            skipped.append(Skipped(name, ",".join(devices), ",".join(modes),
                                   f"{name} has none of these modes (it has {', '.join(offer.modes)})"))
            continue
        for wanted in devices:
            kind = device_kind(wanted)
            if kind is None:
                raise ValueError(f"unknown device '{wanted}': use cpu or cuda")
            exact = [d for d in offer.devices if d == wanted]
            matching = exact or [d for d in offer.devices if device_kind(d) == kind]
            chosen = _modes_for(name, offer, kind, modes, quick)
            if not matching:
                for mode in chosen:
                    skipped.append(Skipped(name, wanted, mode, f"{name} sees no {kind.upper()} here "
                                                               f"(its devices: {', '.join(offer.devices)})"))
                continue
            for mode in chosen:
                reason = offer.why_not(name, mode, kind)
                if reason is None:
                    targets.append(Target(name, matching[0], mode))
                else:
                    skipped.append(Skipped(name, wanted, mode, reason))
    return targets, skipped


def _modes_for(name: str, offer: Offer, kind: str, modes: Sequence[str] | None, quick: bool) -> list[str]:
    if modes is not None:
        return [m for m in modes if m in offer.modes]
    if not quick:
        return list(offer.modes)
    fast = next((m for m in offer.fast_modes if offer.why_not(name, m, kind) is None), None)
    return list(dict.fromkeys([offer.modes[0]] + ([fast] if fast else [])))
