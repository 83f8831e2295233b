"""The model: the shape of its input and a list of layers forming a graph (a chain when no layer names
its inputs). The last layer listed is the output."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from crossnn.spec.base import Spec, SpecError, article, require
from crossnn.spec.layers import Layer, ParamInit, Shape

INPUT = "input"


class Node(NamedTuple):
    """A layer placed in the graph: its inputs resolved to names, the shapes of its inputs and output
    known (batch excluded, channels last)."""

    layer: Layer
    inputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    shape: Shape
    params: tuple[ParamInit, ...]
    state: tuple[ParamInit, ...] = ()

    @property
    def name(self) -> str:
        return self.layer.name  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class Model(Spec):
    """inputs: the shape of one input sample, channels last: a feature count (3), or a list
    ([8, 8, 1] is height, width, channels; [T, F] a sequence); layers: the graph, output last."""

    inputs: int | tuple[int, ...]
    layers: tuple[Layer, ...]

    def validate(self):
        require(len(self.input_shape) > 0 and all(n > 0 for n in self.input_shape), "inputs",
                f"must be a positive feature count or a list of positive sizes, got {self.inputs}")
        require(len(self.layers) > 0, "layers", "a model needs at least one layer")
        named = _with_names(self.layers)
        if named != self.layers:
            object.__setattr__(self, "layers", named)
        object.__setattr__(self, "_nodes", _resolve(self.input_shape, named))

    @property
    def input_shape(self) -> Shape:
        """The shape of one input sample: (inputs,) for a feature count."""
        return (self.inputs,) if isinstance(self.inputs, int) else tuple(self.inputs)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The layers in an order in which every layer comes after its inputs."""
        return self._nodes  # type: ignore[attr-defined]

    @property
    def output_shape(self) -> Shape:
        """The shape of one output sample."""
        return next(n.shape for n in self.nodes if n.name == self.layers[-1].name)

    @property
    def output_units(self) -> int:
        """The size of the output's last axis (the classes of a classifier)."""
        return self.output_shape[-1]

    def parameter_inits(self) -> dict[str, ParamInit]:
        """Every trained parameter by canonical name "<layer>/<param>", in layer order."""
        by_name = {node.name: node for node in self.nodes}
        return {f"{layer.name}/{p.name}": p for layer in self.layers for p in by_name[layer.name].params}

    def state_inits(self) -> dict[str, ParamInit]:
        """Every layer state the optimizer does not train (BatchNorm's moving statistics), by canonical
        name "<layer>/<state>", in layer order."""
        by_name = {node.name: node for node in self.nodes}
        return {f"{layer.name}/{p.name}": p for layer in self.layers for p in by_name[layer.name].state}

    def variable_inits(self) -> dict[str, ParamInit]:
        """Parameters and state together, in layer order (each layer's parameters, then its state): what
        initial values, snapshots, parity and checkpoints cover."""
        by_name = {node.name: node for node in self.nodes}
        return {f"{layer.name}/{p.name}": p for layer in self.layers
                for p in (*by_name[layer.name].params, *by_name[layer.name].state)}

    def parameter_count(self) -> int:
        total = 0
        for p in self.parameter_inits().values():
            count = 1
            for dim in p.shape:
                count *= dim
            total += count
        return total


def _with_names(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """Give unnamed layers the first free "<type><k>" name, counting per type from 1."""
    taken = {layer.name for layer in layers if layer.name is not None}
    counters: dict[str, int] = {}
    named = []
    for layer in layers:
        if layer.name is None:
            k = counters.get(layer.kind, 0)
            while True:
                k += 1
                candidate = f"{layer.kind}{k}"
                if candidate not in taken:
                    break
            counters[layer.kind] = k
            taken.add(candidate)
            layer = dataclasses.replace(layer, name=candidate)
        named.append(layer)
    return tuple(named)


def _resolve(input_shape: Shape, layers: tuple[Layer, ...]) -> tuple[Node, ...]:
    index = {}
    for i, layer in enumerate(layers):
        if layer.name in index:
            raise SpecError(f"duplicate layer name '{layer.name}' (also layers[{index[layer.name]}])",
                            (f"layers[{i}]", "name"))
        index[layer.name] = i

    wanted: dict[str, tuple[str, ...]] = {}
    for i, layer in enumerate(layers):
        names = layer.inputs if layer.inputs is not None else ((layers[i - 1].name,) if i else (INPUT,))
        for name in names:
            if name != INPUT and name not in index:
                raise SpecError(f"unknown input '{name}'; inputs name earlier layers or 'input'",
                                (f"layers[{i}]", "inputs"))
            if name == layer.name:
                raise SpecError(f"layer '{name}' names itself as an input", (f"layers[{i}]", "inputs"))
            if layer.reads_ids and name != INPUT:
                raise SpecError(f"{article(layer.kind)} {layer.kind} layer reads the model input (integer ids), "
                                f"not '{name}'",
                                (f"layers[{i}]", "inputs"))
        wanted[layer.name] = names

    shapes = {INPUT: input_shape}
    nodes: dict[str, Node] = {}
    state: dict[str, str] = {}

    def place(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            loop = trail[trail.index(name):] + (name,)
            raise SpecError(f"the layers form a cycle: {' -> '.join(loop)}",
                            (f"layers[{index[name]}]", "inputs"))
        state[name] = "open"
        for dep in wanted[name]:
            if dep != INPUT:
                place(dep, trail + (name,))
        layer = layers[index[name]]
        in_shapes = tuple(shapes[d] for d in wanted[name])
        try:
            shape = tuple(layer.output_shape(in_shapes))
            params, owned = layer.parameters(in_shapes), layer.state(in_shapes)
        except SpecError as err:
            raise err.within(f"layers[{index[name]}]") from None
        shapes[name] = shape
        nodes[name] = Node(layer, wanted[name], in_shapes, shape, params, owned)
        state[name] = "done"

    output = layers[-1].name
    place(output, ())
    unused = [layer.name for layer in layers if layer.name not in nodes]
    if unused:
        raise SpecError(f"layer '{unused[0]}' does not feed the output layer '{output}'",
                        (f"layers[{index[unused[0]]}]",))
    return tuple(nodes.values())
