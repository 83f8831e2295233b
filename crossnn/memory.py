"""Sizes of an experiment's arrays, checked against the machine's memory before they are allocated.

Each check compares a lower bound — one float64 copy of the data set, of the parameters, of one
batch's activations, of the per-step losses a run records — with the machine's physical memory, and
refuses what cannot fit with one line naming the field that makes it large and the size, e.g.

    model.layers[0].units: 1000000000000 units make parameters of 24.0 TB (float64); this machine has 25.2 GB

instead of failing later with a MemoryError. Every element count of a node, an input or a parameter
goes through `elements`, the one place that knows how a size is written.
"""

from __future__ import annotations

import dataclasses
import math
import os

from crossnn.errors import SpecError

#: bytes of one float64 value: the reference's dtype, and the widest any run uses
FLOAT64 = 8


def elements(size: int | tuple[int, ...]) -> int:
    """Element count of a shape (of one sample at a node, or of a variable), or of a bare feature count."""
    return math.prod(size) if isinstance(size, tuple) else int(size)


def machine_memory() -> int | None:
    """Physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def human(nbytes: float) -> str:
    """A byte count in decimal units: 8.0 TB, 25.2 GB, 512 B."""
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def _check(nbytes: int, field: tuple[str, ...], what: str, source: str | None) -> None:
    """Raise a SpecError on `field` when `nbytes` exceed the machine's memory; `what` says what makes
    them, with {size} where the size goes."""
    memory = machine_memory()
    if memory is not None and nbytes > memory:
        raise SpecError(f"{what.format(size=human(nbytes))} (float64); this machine has {human(memory)}", field, source)


def _int_fields(spec) -> dict[str, int]:
    return {f.name: value for f in dataclasses.fields(spec)
            if isinstance(value := getattr(spec, f.name), int) and not isinstance(value, bool)}


def check_data(experiment) -> None:
    """The arrays a data generator will draw (DataSource.array_shapes), before it draws them; the
    generator's largest count is named."""
    nbytes = sum(elements(shape) for shape in experiment.data.array_shapes()) * FLOAT64
    counts = _int_fields(experiment.data)
    if counts:
        name = max(counts, key=counts.get)
        _check(nbytes, ("data", name), f"{counts[name]} {_NOUNS.get(name, name)} make data of {{size}}",
               experiment.source)


_NOUNS = {"n": "samples", "inputs": "input features", "outputs": "outputs", "classes": "classes",
          "length": "time steps per sequence", "size": "pixels per image side", "channels": "channels per pixel"}


def check_parameters(experiment) -> None:
    """The model's variables (parameters and layer state, one float64 copy), before they are drawn;
    the layer with the most is named, by its `units` when that is its largest dimension, else by the
    model input feeding it."""
    model = experiment.model
    per_node = {node.name: sum(elements(p.shape) for p in (*node.params, *node.state)) for node in model.nodes}
    nbytes = sum(per_node.values()) * FLOAT64
    name = max(per_node, key=per_node.get)
    index, node = _layer_index(model, name), next(n for n in model.nodes if n.name == name)
    units = getattr(node.layer, "units", None)
    if isinstance(units, int) and units >= max((elements(shape) for shape in node.input_shapes), default=0):
        field, what = ("model", f"layers[{index}]", "units"), f"{units} units make parameters of {{size}}"
    elif "input" in node.inputs:
        field, what = ("model", "inputs"), f"{model.inputs} inputs make parameters of {{size}}"
    else:
        field, what = ("model", f"layers[{index}]"), f"{per_node[name]} parameters make {{size}}"
    _check(nbytes, field, what, experiment.source)


def check_training(experiment, batch_size: int, steps: int) -> None:
    """One batch's activations (the input and every node's output for `batch_size` samples) and the
    losses of the `steps` steps a run records, before training starts."""
    model = experiment.model
    per_node = {node.name: elements(node.shape) for node in model.nodes}
    nbytes = batch_size * (elements(model.input_shape) + sum(per_node.values())) * FLOAT64
    name = max(per_node, key=per_node.get)
    _check(nbytes, ("model", f"layers[{_layer_index(model, name)}]"),
           f"{per_node[name]} outputs per sample in batches of {batch_size} make activations of {{size}}",
           experiment.source)
    _check(steps * FLOAT64, ("train", "epochs"),
           f"{experiment.train.epochs} epochs make {steps} steps, whose losses take {{size}}", experiment.source)


def _layer_index(model, name: str) -> int:
    return next(i for i, layer in enumerate(model.layers) if layer.name == name)
