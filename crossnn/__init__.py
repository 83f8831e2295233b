"""crossnn: one neural-network experiment spec, lowered to PyTorch, TensorFlow and NumPy (and any
backend plugin), trained in lockstep from the same data, initial parameters and batch order, and
compared step by step with a NumPy float64 reference.

    import crossnn
    result = crossnn.run(crossnn.load_spec("circle"), backends="numpy,torch")
    result.passed              # every run agrees with the reference
    print(result.table())      # the run and parity tables, as `crossnn run` prints them
    result["torch"].losses     # one run's record: losses, snapshots, metrics, timings
    result.to_json()           # the document `crossnn run --json` writes

The front door: load_spec (a spec file or an example name), run (returns a Result), and the spec
itself: Experiment and the dataclasses of crossnn.spec, with load / loads / save / dumps for TOML.
Beneath it: crossnn.harness.train (RunSpec, RunResult, RunRecord), crossnn.parity, and
crossnn.testing (assert_parity for test suites). Errors a user can cause are CrossnnError
subclasses (SpecError, DataError, BackendError) with a one-line message naming the field.

The core imports only the standard library and NumPy; frameworks live in backend plugins.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crossnn.errors import BackendError, CrossnnError, DataError, SpecError, UnsupportedFeature

if TYPE_CHECKING:
    from crossnn.api import Result, load_spec, run  # noqa: F401
    from crossnn.harness import RunRecord, RunResult, RunSpec, train  # noqa: F401
    from crossnn.spec import Experiment, dumps, load, loads, save  # noqa: F401

__version__ = "0.1.0"

#: names this package offers from its modules, imported on first use (PEP 562), so that importing a
#: light module such as crossnn.cli (the command's entry point) loads neither NumPy nor the harness
_LAZY = {"Result": "crossnn.api", "load_spec": "crossnn.api", "run": "crossnn.api",
         "RunRecord": "crossnn.harness", "RunResult": "crossnn.harness", "RunSpec": "crossnn.harness",
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
    "BackendError", "CrossnnError", "DataError", "Experiment", "Result", "RunRecord", "RunResult", "RunSpec",
    "SpecError", "UnsupportedFeature", "dumps", "example", "load", "load_spec", "loads", "run", "save", "train",
]
