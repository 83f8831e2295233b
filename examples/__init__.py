"""The built-in experiments, one spec file each; installed as `crossnn.examples`, so
`crossnn run circle` finds examples/circle.toml."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: the five tutorials crossnn grew from (`crossnn run seeds`, the bench suite "seeds")
SEEDS = ("adder", "line", "linear-2x3", "two-tower", "circle")


def names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def path(name: str) -> Path:
    return Path(str(resources.files(__name__) / f"{name}.toml"))
