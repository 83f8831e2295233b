"""Initial values of every variable (the trained parameters and the layers' state, such as BatchNorm's
moving statistics): drawn once in NumPy float64, canonical layout, one stream per variable."""

from __future__ import annotations

import numpy as np

from crossnn.memory import check_parameters
from crossnn.rng import stream
from crossnn.spec import Experiment

Params = dict[str, np.ndarray]


def initial_parameters(experiment: Experiment) -> Params:
    """{"<layer>/<variable>": float64 array} in layer order (each layer's parameters, then its state), from
    the seed and the initializers."""
    check_parameters(experiment)  # they must fit in memory before they are drawn
    out = {}
    for name, p in experiment.model.variable_inits().items():
        value = p.init.sample(stream(experiment.seed, "init", name), p.shape, p.fan_in, p.fan_out)
        out[name] = np.ascontiguousarray(value, dtype=np.float64)
    return out


def cast(params: Params, dtype: str) -> Params:
    return {name: value.astype(dtype) for name, value in params.items()}
