"""The model as an nn.Module: nn.Linear and torch's activation modules, written the way PyTorch code
writes them. A chain of layers becomes an nn.Sequential; any other graph becomes a GraphNet whose
submodules carry the layer names and whose forward() follows the graph.

torch's formulas match the spec's (crossnn.spec.activations), derivatives at kinks included
(relu'(0) = 0, leaky_relu'(0) = negative_slope), except nn.Softplus, which returns z above its
threshold of 20; `Softplus` below computes the spec's formula instead (nn.Softplus() itself with the
native flavour "softplus-threshold").

Dropout is `Dropout` below: x * mask while training, with the step's mask drawn by crossnn
(crossnn.schedule.StepClock) and set by the trainer, so every backend drops the same units; the
identity in eval mode. nn.Dropout would draw its own masks from torch's RNG.

User-defined layers: `register(SpecClass)` adds the torch lowering of a layer spec class defined
outside crossnn (see its docstring); crossnn_numpy.layers.register adds the reference's.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

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


class Dropout(nn.Module):
    """Inverted dropout with crossnn's masks: y = x * mask in train mode (mask: the step's 0 or
    1/(1 - rate) per element, set by the trainer before each step), y = x in eval mode. The mask is a
    non-persistent buffer: it follows .to(), stays out of state_dict(), and torch.compile reads it as
    an input of the graph rather than a constant."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate
        self.register_buffer("mask", None, persistent=False)

    def extra_repr(self):
        return f"rate={self.rate}, masks from crossnn"

    def forward(self, x):
        if not self.training or self.mask is None:
            return x
        return x * self.mask


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


def activation(s: spec.Activation, native: frozenset[str] = frozenset()) -> nn.Module:
    """The module of activation `s`; with native "softplus-threshold", nn.Softplus() as torch users
    write it (beta 1, threshold 20: the identity above z = 20)."""
    if isinstance(s, spec.Softplus) and "softplus-threshold" in native:
        return nn.Softplus()
    if type(s) not in ACTIVATIONS:
        raise UnsupportedFeature("torch", f"activation '{s.kind}'")
    return ACTIVATIONS[type(s)](s)


class Slot(NamedTuple):
    """Where a canonical parameter lives: the nn.Parameter, and whether it is stored transposed
    (nn.Linear keeps its weight as (out, in); the canonical kernel is (in, out))."""

    parameter: nn.Parameter
    transposed: bool


def dense(node, factory, native=frozenset()) -> tuple[list[nn.Module], dict[str, Slot]]:
    """nn.Linear, then the activation module unless the activation is linear."""
    s = node.layer
    (fan_in,) = node.input_sizes
    linear = nn.Linear(fan_in, s.units, bias=s.use_bias, **factory)
    slots = {f"{node.name}/kernel": Slot(linear.weight, True)}
    if s.use_bias:
        slots[f"{node.name}/bias"] = Slot(linear.bias, False)
    act = [] if type(s.activation) is spec.Linear else [activation(s.activation, native)]
    return [linear, *act], slots


LAYERS: dict[type, Callable] = {
    spec.Dense: dense,
    spec.ActivationLayer: lambda node, factory, native=frozenset(): ([activation(node.layer.activation, native)], {}),
    spec.Concatenate: lambda node, factory, native=frozenset(): ([Concatenate()], {}),
    spec.Dropout: lambda node, factory, native=frozenset(): ([Dropout(node.layer.rate)], {}),
}


def register(spec_class: type[spec.Layer], params: dict[str, str] | None = None):
    """Decorator: the torch lowering of a user-defined layer spec class, without editing crossnn.

    The decorated callable (an nn.Module subclass, or a function returning a module) is called as
    ``factory(node, dtype=..., device=...)`` with the layer's crossnn.spec.Node (``node.layer`` is
    the spec, ``node.input_sizes`` the feature counts of its inputs) and must return an nn.Module
    whose forward takes the layer's inputs and returns its output. Its initial values do not
    matter: crossnn copies the spec's initial parameters in (unless the native flavour
    "default-init" keeps the module's own).

    params maps each canonical parameter short name (the names the spec's ``parameters()`` gives)
    to the module attribute holding it, with ".T" when the module stores the transpose of the
    canonical layout, e.g. ``{"kernel": "weight.T", "bias": "bias"}`` for an nn.Linear-style layer.
    Without it, every short name is an attribute of that name in canonical layout.

        @crossnn_torch.layers.register(MyLinear, params={"kernel": "weight.T", "bias": "bias"})
        class TorchMyLinear(nn.Module):
            def __init__(self, node, dtype=None, device=None): ...
    """
    def add(factory):
        def lower(node, factory_kwargs, native=frozenset()):
            module = factory(node, **factory_kwargs)
            slots = {}
            for p in node.params:
                where = (params or {}).get(p.name, p.name)
                attribute, transposed = (where[:-2], True) if where.endswith(".T") else (where, False)
                parameter = getattr(module, attribute, None)
                if not isinstance(parameter, nn.Parameter):
                    raise UnsupportedFeature("torch", f"layer '{node.name}' ({node.layer.kind}): its module has "
                                                      f"no nn.Parameter '{attribute}' for '{p.name}'")
                slots[f"{node.name}/{p.name}"] = Slot(parameter, transposed)
            return [module], slots

        LAYERS[spec_class] = lower
        return factory
    return add


def layer_modules(node, factory, native=frozenset()) -> tuple[list[nn.Module], dict[str, Slot]]:
    """The modules of one layer, in call order, and the slots of its parameters.
    factory: the dtype and device keywords for modules with parameters."""
    if type(node.layer) not in LAYERS:
        raise UnsupportedFeature("torch", f"layer type '{node.layer.kind}'")
    return LAYERS[type(node.layer)](node, factory, native)


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


class Built(NamedTuple):
    """A lowered model: the nn.Module, the slot of every canonical parameter (canonical order) and
    the Dropout module of every dropout layer (by layer name)."""

    module: nn.Module
    slots: dict[str, Slot]
    dropouts: dict[str, Dropout]


def build_model(model: spec.Model, *, dtype, device, native: frozenset[str] = frozenset()) -> Built:
    """The nn.Module for `model` (an nn.Sequential for a chain, else a GraphNet), created directly
    with `dtype` on `device`, with its parameter slots and dropout modules. `native`: the native
    flavour's entries (only "softplus-threshold" changes modules)."""
    factory = {"dtype": dtype, "device": device}
    slots: dict[str, Slot] = {}
    dropouts: dict[str, Dropout] = {}
    per_layer = []
    for node in model.nodes:
        modules, layer_slots = layer_modules(node, factory, native)
        per_layer.append((node, modules))
        slots.update(layer_slots)
        if isinstance(node.layer, spec.Dropout):
            dropouts[node.name] = modules[0]
    if is_chain(model):
        net: nn.Module = nn.Sequential(*(m for _, modules in per_layer for m in modules))
    else:
        net = GraphNet([(node.name, node.inputs, modules[0] if len(modules) == 1 else nn.Sequential(*modules))
                        for node, modules in per_layer], model.layers[-1].name)
    return Built(net, {name: slots[name] for name in model.parameter_inits()}, dropouts)


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
