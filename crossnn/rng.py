"""Seeded random streams. Each purpose ("data", "init", "plan", ...) and key (a parameter name, an
epoch) gets its own independent NumPy generator derived from the experiment seed, so adding a
layer does not change another layer's initial values, and no framework's RNG is ever used."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, purpose: str, *keys: str | int) -> np.random.Generator:
    """Generator for (seed, purpose, keys): SeedSequence(seed, spawn_key=crc32 of each part)."""
    words = tuple(zlib.crc32(str(part).encode("utf-8")) for part in (purpose, *keys))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=words)))
