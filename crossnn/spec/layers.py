"""Layers. A layer maps the outputs of the layers it names in `inputs` (or the previous layer,
or the model input) to one output of shape (N, size). Parameters are named "<layer>/<param>" and
kept in canonical layout: a Dense kernel is (in, out), so y = x @ W + b."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from crossnn.spec.activations import Activation, Linear
from crossnn.spec.base import Spec, SpecError, positive, require
from crossnn.spec.initializers import Initializer


class ParamInit(NamedTuple):
    """One parameter a layer owns: its short name, canonical shape, initializer and fans."""

    name: str
    shape: tuple[int, ...]
    init: Initializer
    fan_in: int
    fan_out: int


@dataclass(frozen=True, kw_only=True)
class Layer(Spec, family="layer"):
    """A node of the model graph.

    name:   unique within the model; generated as "<type><k>" (dense1, dense2, ...) when absent.
    inputs: names of other layers, or "input" for the model's input; default: the previous layer.
    """

    name: str | None = None
    inputs: tuple[str, ...] | None = None

    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1

    def validate(self):
        if self.name is not None:
            require(self.name != "" and "/" not in self.name and self.name != "input", "name",
                    f"'{self.name}' is not a usable layer name (non-empty, no '/', not 'input')")
        if self.inputs is not None:
            count = len(self.inputs)
            most = self.max_inputs
            if count < self.min_inputs or (most is not None and count > most):
                wanted = str(self.min_inputs) if most == self.min_inputs else (
                    f"at least {self.min_inputs}" if most is None else f"{self.min_inputs} to {most}")
                raise SpecError(f"a {self.kind} layer takes {wanted} input(s), got {count}", ("inputs",))

    def fields_dict(self) -> dict[str, Any]:
        fields = super().fields_dict()
        if "inputs" in fields:
            fields["inputs"] = fields.pop("inputs")  # written last, after the layer's own fields
        return fields

    def output_size(self, input_sizes: tuple[int, ...]) -> int:
        """Feature count of the output, given the feature counts of the inputs."""
        raise NotImplementedError

    def parameters(self, input_sizes: tuple[int, ...]) -> tuple[ParamInit, ...]:
        """The parameters this layer owns, in canonical layout."""
        return ()

    def matmul_flops(self, input_sizes: tuple[int, ...]) -> int:
        """Multiply-add FLOPs (2 per multiply-add) of the forward pass for one sample."""
        return 0


@dataclass(frozen=True, kw_only=True)
class Dense(Layer, kind="dense"):
    """y = activation(x @ kernel + bias); kernel (in, units), bias (units,).

    Initializers have no defaults: nn.Linear draws both from U(±1/√in) (fan_in_uniform),
    keras.layers.Dense uses glorot_uniform and zeros (a spec's preset fills its framework's).
    """

    units: int
    activation: Activation = Linear()
    use_bias: bool = True
    kernel_init: Initializer
    bias_init: Initializer

    def validate(self):
        super().validate()
        positive(self, "units")

    def output_size(self, input_sizes):
        return self.units

    def matmul_flops(self, input_sizes):
        return 2 * input_sizes[0] * self.units

    def parameters(self, input_sizes):
        (fan_in,) = input_sizes
        params = [ParamInit("kernel", (fan_in, self.units), self.kernel_init, fan_in, self.units)]
        if self.use_bias:
            params.append(ParamInit("bias", (self.units,), self.bias_init, fan_in, self.units))
        return tuple(params)


@dataclass(frozen=True, kw_only=True)
class ActivationLayer(Layer, kind="activation"):
    """y = activation(x), no parameters."""

    activation: Activation

    def output_size(self, input_sizes):
        return input_sizes[0]


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer, kind="dropout"):
    """Inverted dropout while training: y = x ⊙ m / (1 - rate), m ~ Bernoulli(1 - rate) per element;
    y = x when predicting. The masks are drawn once, in NumPy, from the seed's "dropout" stream
    (one stream per layer and step), and every backend uses the same ones, so parity holds."""

    rate: float

    def validate(self):
        super().validate()
        require(0.0 <= self.rate < 1.0, "rate", f"must be in [0, 1), got {self.rate}")

    def output_size(self, input_sizes):
        return input_sizes[0]


@dataclass(frozen=True, kw_only=True)
class Concatenate(Layer, kind="concatenate"):
    """y = [x_1, x_2, ...] joined along the feature axis, in the order of `inputs`."""

    min_inputs = 2
    max_inputs = None

    def validate(self):
        super().validate()
        require(self.inputs is not None, "inputs", "a concatenate layer must name its inputs")

    def output_size(self, input_sizes):
        return sum(input_sizes)
