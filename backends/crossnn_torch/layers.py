"""The model as an nn.Module: nn.Linear and torch's activation modules, written the way PyTorch code
writes them. A chain of layers becomes an nn.Sequential; any other graph becomes a GraphNet whose
submodules carry the layer names and whose forward() follows the graph.

torch's formulas match the spec's (crossnn.spec.activations), derivatives at kinks included
(relu'(0) = 0, leaky_relu'(0) = negative_slope), except nn.Softplus, which returns z above its
threshold of 20; `Softplus` below computes the spec's formula instead.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from crossnn import spec
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT


class SoftplusFunction(torch.autograd.Function):
    """f(z) = max(z, 0) + log1p(exp(-|z|)); df/dz = sigmoid(z) exactly (1/2 at z = 0)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.clamp_min(z, 0.0) + torch.log1p(torch.exp(-torch.abs(z)))

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * torch.sigmoid(z)


class Softplus(nn.Module):
    """log(1 + exp(z)) without nn.Softplus' switch to the identity above z = 20."""

    def forward(self, z):
        return SoftplusFunction.apply(z)


class Concatenate(nn.Module):
    """torch.cat of the inputs along the feature axis."""

    def forward(self, *inputs):
        return torch.cat(inputs, dim=1)


ACTIVATIONS = {
    spec.Linear: lambda s: nn.Identity(),
    spec.Sigmoid: lambda s: nn.Sigmoid(),
    spec.Tanh: lambda s: nn.Tanh(),
    spec.ReLU: lambda s: nn.ReLU(),
    spec.LeakyReLU: lambda s: nn.LeakyReLU(negative_slope=s.negative_slope),
    spec.Softplus: lambda s: Softplus(),
    spec.Softmax: lambda s: nn.Softmax(dim=-1),
    spec.GELU: lambda s: nn.GELU(approximate=s.approximate),
}


def activation(s: spec.Activation) -> nn.Module:
    if type(s) not in ACTIVATIONS:
        raise UnsupportedFeature("torch", f"activation '{s.kind}'")
    return ACTIVATIONS[type(s)](s)


class Slot(NamedTuple):
    """Where a canonical parameter lives: the nn.Parameter, and whether it is stored transposed
    (nn.Linear keeps its weight as (out, in); the canonical kernel is (in, out))."""

    parameter: nn.Parameter
    transposed: bool


def dense(node, factory) -> tuple[list[nn.Module], dict[str, Slot]]:
    """nn.Linear, then the activation module unless the activation is linear."""
    s = node.layer
    (fan_in,) = node.input_sizes
    linear = nn.Linear(fan_in, s.units, bias=s.use_bias, **factory)
    slots = {f"{node.name}/kernel": Slot(linear.weight, True)}
    if s.use_bias:
        slots[f"{node.name}/bias"] = Slot(linear.bias, False)
    act = [] if type(s.activation) is spec.Linear else [activation(s.activation)]
    return [linear, *act], slots


LAYERS = {
    spec.Dense: dense,
    spec.ActivationLayer: lambda node, factory: ([activation(node.layer.activation)], {}),
    spec.Concatenate: lambda node, factory: ([Concatenate()], {}),
}


def layer_modules(node, factory) -> tuple[list[nn.Module], dict[str, Slot]]:
    """The modules of one layer, in call order, and the slots of its parameters.
    factory: the dtype and device keywords for modules with parameters."""
    if type(node.layer) not in LAYERS:
        raise UnsupportedFeature("torch", f"layer type '{node.layer.kind}'")
    return LAYERS[type(node.layer)](node, factory)


class GraphNet(nn.Module):
    """A model graph: one submodule per layer, named after it; forward() evaluates the layers in
    dependency order, each on the outputs of the layers it names."""

    def __init__(self, layers: list[tuple[str, tuple[str, ...], nn.Module]], output: str):
        """layers: (name, input names, module) in dependency order; output: the output layer."""
        super().__init__()
        self.output = output
        self.wiring: list[tuple[str, str, tuple[str, ...]]] = []  # (attribute, layer, inputs)
        for name, inputs, module in layers:
            attribute = self._attribute_for(name)
            self.add_module(attribute, module)
            self.wiring.append((attribute, name, inputs))

    def _attribute_for(self, name: str) -> str:
        """The layer name, made a legal and unused submodule name ('.' is not allowed)."""
        attribute = name.replace(".", "_")
        while hasattr(self, attribute):
            attribute += "_"
        return attribute

    def forward(self, x):
        outputs = {INPUT: x}
        for attribute, name, inputs in self.wiring:
            outputs[name] = getattr(self, attribute)(*(outputs[i] for i in inputs))
        return outputs[self.output]


def is_chain(model: spec.Model) -> bool:
    """Every layer reads the one before it (the first reads the input) and the last is the output."""
    previous = INPUT
    for node in model.nodes:
        if node.inputs != (previous,):
            return False
        previous = node.name
    return previous == model.layers[-1].name


def build_model(model: spec.Model, *, dtype, device) -> tuple[nn.Module, dict[str, Slot]]:
    """The nn.Module for `model` (an nn.Sequential for a chain, else a GraphNet), created directly
    with `dtype` on `device`, and the slot of every canonical parameter, in canonical order."""
    factory = {"dtype": dtype, "device": device}
    slots: dict[str, Slot] = {}
    per_layer = []
    for node in model.nodes:
        modules, layer_slots = layer_modules(node, factory)
        per_layer.append((node, modules))
        slots.update(layer_slots)
    if is_chain(model):
        net: nn.Module = nn.Sequential(*(m for _, modules in per_layer for m in modules))
    else:
        net = GraphNet([(node.name, node.inputs, modules[0] if len(modules) == 1 else nn.Sequential(*modules))
                        for node, modules in per_layer], model.layers[-1].name)
    return net, {name: slots[name] for name in model.parameter_inits()}


# ---- reading a user's nn.Sequential back into a spec ------------------------------------------------

def _imported_activation(module: nn.Module) -> spec.Activation | None:
    if isinstance(module, nn.Sigmoid):
        return spec.Sigmoid()
    if isinstance(module, nn.Tanh):
        return spec.Tanh()
    if isinstance(module, nn.ReLU):
        return spec.ReLU()
    if isinstance(module, nn.LeakyReLU):
        return spec.LeakyReLU(negative_slope=module.negative_slope)
    if isinstance(module, nn.GELU):
        return spec.GELU(approximate=module.approximate)
    if isinstance(module, nn.Softmax) and module.dim in (-1, 1):
        return spec.Softmax()
    if isinstance(module, (nn.Identity, Softplus)):
        return spec.Linear() if isinstance(module, nn.Identity) else spec.Softplus()
    return None


def import_sequential(module: nn.Module):
    """(spec Model, canonical float64 parameters) for an nn.Sequential of nn.Linear and activation
    modules. Layers keep the Sequential's child names ("0", "1", ...); an activation right after a
    Linear becomes that Dense layer's activation. The initializers recorded are nn.Linear's default
    (fan_in_uniform); the actual starting values are the module's, returned as the parameters."""
    if not isinstance(module, nn.Sequential):
        raise UnsupportedFeature("torch", f"importing a {type(module).__name__} (only nn.Sequential of nn.Linear "
                                          "and activation modules)")
    layers: list[spec.Layer] = []
    params = {}
    inputs = None
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            inputs = inputs or child.in_features
            layers.append(spec.Dense(name=name, units=child.out_features, use_bias=child.bias is not None,
                                     kernel_init=spec.FanInUniform(), bias_init=spec.FanInUniform()))
            params[f"{name}/kernel"] = child.weight.detach().cpu().double().numpy().T.copy()
            if child.bias is not None:
                params[f"{name}/bias"] = child.bias.detach().cpu().double().numpy().copy()
            continue
        act = _imported_activation(child)
        if act is None:
            raise UnsupportedFeature("torch", f"importing module {name} ({type(child).__name__})")
        last = layers[-1] if layers else None
        if isinstance(last, spec.Dense) and isinstance(last.activation, spec.Linear):
            layers[-1] = spec.Dense(name=last.name, units=last.units, activation=act, use_bias=last.use_bias,
                                    kernel_init=last.kernel_init, bias_init=last.bias_init)
        elif layers:
            layers.append(spec.ActivationLayer(name=name, activation=act))
        else:
            raise UnsupportedFeature("torch", "importing an nn.Sequential that does not start with nn.Linear")
    if inputs is None:
        raise UnsupportedFeature("torch", "importing an nn.Sequential without nn.Linear layers")
    return spec.Model(inputs=inputs, layers=tuple(layers)), params
