"""crossnn: one neural-network experiment spec, lowered to several frameworks, trained in lockstep
from the same data, initial parameters and batch order, and compared step by step.

    import crossnn
    experiment = crossnn.load("examples/circle.toml")      # or crossnn.example("circle")
    result = crossnn.train(experiment, [crossnn.RunSpec("torch", "float64")])

The core imports only the standard library and NumPy; frameworks live in backend plugins.
"""

from __future__ import annotations

from crossnn.errors import BackendError, CrossnnError, DataError, SpecError, UnsupportedFeature
from crossnn.harness import RunRecord, RunResult, RunSpec, train
from crossnn.spec import Experiment, dumps, load, loads, save

__version__ = "0.1.0"


def example(name: str) -> Experiment:
    """A built-in experiment by name (see `crossnn list`)."""
    from crossnn import examples

    if name not in examples.names():
        raise SpecError(f"no example named '{name}'; examples: {', '.join(examples.names())}")
    return load(examples.path(name))


__all__ = [
    "BackendError", "CrossnnError", "DataError", "Experiment", "RunRecord", "RunResult", "RunSpec",
    "SpecError", "UnsupportedFeature", "dumps", "example", "load", "loads", "save", "train",
]
