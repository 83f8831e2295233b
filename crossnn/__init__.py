"""crossnn: one neural-network experiment spec, lowered to several frameworks, trained in lockstep
from the same data, initial parameters and batch order, and compared step by step.

    import crossnn
    experiment = crossnn.load("examples/circle.toml")      # or crossnn.example("circle")
    result = crossnn.train(experiment, [crossnn.RunSpec("torch", "float64")])

The core imports only the standard library and NumPy; frameworks live in backend plugins.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crossnn.errors import BackendError, CrossnnError, DataError, SpecError, UnsupportedFeature

if TYPE_CHECKING:
    from crossnn.harness import RunRecord, RunResult, RunSpec, train  # noqa: F401
    from crossnn.spec import Experiment, dumps, load, loads, save  # noqa: F401

__version__ = "0.1.0"

#: names this package offers from its modules, imported on first use (PEP 562), so that importing a
#: light module such as crossnn.cli (the command's entry point) loads neither NumPy nor the harness
_LAZY = {"RunRecord": "crossnn.harness", "RunResult": "crossnn.harness", "RunSpec": "crossnn.harness",
         "train": "crossnn.harness", "Experiment": "crossnn.spec", "dumps": "crossnn.spec", "load": "crossnn.spec",
         "loads": "crossnn.spec", "save": "crossnn.spec"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crossnn' has no attribute '{name}'")


def example(name: str) -> Experiment:
    """A built-in experiment by name (see `crossnn list`)."""
    from crossnn import examples
    from crossnn.spec import load

    if name not in examples.names():
        raise SpecError(f"no example named '{name}'; examples: {', '.join(examples.names())}")
    return load(examples.path(name))


__all__ = [
    "BackendError", "CrossnnError", "DataError", "Experiment", "RunRecord", "RunResult", "RunSpec",
    "SpecError", "UnsupportedFeature", "dumps", "example", "load", "loads", "save", "train",
]
