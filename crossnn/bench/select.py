"""Which (backend, device, mode) combinations a benchmark runs, and why the others are skipped.

A GPU row runs only on a device the backend actually sees; otherwise it is skipped with a note —
never measured on the CPU under a GPU label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

#: spellings of the device kinds a user may ask for
DEVICE_KINDS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}


@dataclass(frozen=True)
class Offer:
    """What a backend can run: its devices (e.g. "cpu", "cuda:0", "gpu:0"), modes, and fast mode."""

    devices: tuple[str, ...]
    modes: tuple[str, ...]
    fast_mode: str | None = None


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
    step — and its fast mode); a list keeps the named modes a backend has.
    """
    targets, skipped = [], []
    for name, offer in offers.items():
        if modes is None and quick:
            chosen = [offer.modes[0]]
            if offer.fast_mode and offer.fast_mode != offer.modes[0]:
                chosen.append(offer.fast_mode)
        elif modes is None:
            chosen = list(offer.modes)
        else:
            chosen = [m for m in modes if m in offer.modes]
            if not chosen:
                skipped.append(Skipped(name, ",".join(devices), ",".join(modes),
                                       f"{name} has none of these modes (it has {', '.join(offer.modes)})"))
                continue
        for wanted in devices:
            kind = device_kind(wanted)
            if kind is None:
                raise ValueError(f"unknown device '{wanted}': use cpu or cuda")
            exact = [d for d in offer.devices if d == wanted]
            matching = exact or [d for d in offer.devices if device_kind(d) == kind]
            if not matching:
                for mode in chosen:
                    skipped.append(Skipped(name, wanted, mode, f"{name} sees no {kind.upper()} here "
                                                               f"(its devices: {', '.join(offer.devices)})"))
                continue
            for mode in chosen:
                targets.append(Target(name, matching[0], mode))
    return targets, skipped
