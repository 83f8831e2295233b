"""Training state in canonical form (crossnn.checkpoint.TrainingState), torch's own checkpoint format,
and a user's nn.Sequential read back into a spec: the conversions between torch's layout and the
canonical one, at this boundary only.

Every variable's torch layout is its slot's (crossnn_torch.ops.Slot): an nn.Linear weight is
(out, in) against the canonical (in, out) kernel, an nn.Conv2d weight (out, in, kh, kw) against
(kh, kw, in, out), an nn.GRU weight_ih_l0 (3u, in) with gates r, z, n against the (in, 3u) kernel
with gates z, r, h, a recurrent bias two tensors (bias_ih_l0, bias_hh_l0) against one. Layer state
(BatchNorm's moving statistics) is the modules' buffers (running_mean, running_var), part of the
training state's params like the parameters. torch keeps optimizer state per parameter in
optimizer.state[p] under the names crossnn's checkpoints use (momentum_buffer, exp_avg, exp_avg_sq,
square_avg, grad_avg, sum, and the counter "step" as a 0-d tensor), in the parameter's own layout, so
the buffers follow their parameter's conversion (a frozen part, the held-at-zero bias_hh_l0 of an
LSTM, has none). Loading goes through optimizer.load_state_dict, as torch users restore an optimizer.

The native file is what PyTorch tutorials save (e.g. "Saving and loading" in seed 004):

    torch.save({"info": str, "date": str, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "step": int}, path)

`step` is the number of training steps done (the position in crossnn's batch plan). The date is
an ISO 8601 string rather than a datetime object: since torch 2.6 torch.load defaults to
weights_only=True, which refuses a pickled datetime, so a plain torch.load(path) reads this file.
Files that hold a datetime (as the seed's code writes them) are read too.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from crossnn import spec
from crossnn.checkpoint import CheckpointError, TrainingState
from crossnn.errors import BackendError, UnsupportedFeature
from crossnn.files import write_bytes_atomic
from crossnn.spec import Experiment
from crossnn.spec.layers import merge_axis, window_geometry

from crossnn_torch import ops
from crossnn_torch.optimizers import Chain


def canonical(tensor: torch.Tensor) -> np.ndarray:
    """A C-ordered NumPy copy of a tensor already in canonical layout."""
    return np.array(tensor.detach().cpu().numpy(), order="C", copy=True)


def check_shapes(experiment: Experiment, params: dict[str, np.ndarray]) -> None:
    """A BackendError unless `params` holds every parameter of the model in its canonical shape."""
    for name, init in experiment.model.parameter_inits().items():
        if name not in params:
            raise BackendError(f"no initial value for parameter '{name}'")
        if tuple(np.shape(params[name])) != tuple(init.shape):
            raise BackendError(f"parameter '{name}' has shape {np.shape(params[name])}, the model expects "
                               f"{tuple(init.shape)}")


def _ordered(optimizer: torch.optim.Optimizer) -> dict:
    """{parameter: its index in optimizer.state_dict()} (torch numbers them across param groups)."""
    return {p: i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}


def training_state(step: int, built: ops.Built, optimizer: torch.optim.Optimizer, s: spec.Optimizer) -> TrainingState:
    """The canonical state of a model's variables (parameters and layer state) and `optimizer`, after
    `step` steps."""
    params = {name: canonical(slot.canonical()) for name, slot in built.variables.items()}
    buffers: dict[str, dict[str, np.ndarray]] = {}
    counters: dict[str, int] = {name: 0 for name in s.state_counters()}
    for name, slot in built.slots.items():
        held = [optimizer.state.get(t, {}) if trains else {} for t, trains in zip(slot.tensors, slot.trains)]
        for key in s.state_slots():
            if all(entry.get(key) is not None for entry, trains in zip(held, slot.trains) if trains):
                buffers.setdefault(key, {})[name] = canonical(slot.canonical([entry.get(key) for entry in held]))
        for key in s.state_counters():
            for entry in held:
                if key in entry:
                    counters[key] = int(float(entry[key]))
    return TrainingState(int(step), params, buffers, counters)


def _native(slot: ops.Slot, value) -> tuple[torch.Tensor, ...]:
    """A canonical array in the slot's torch layout, as new tensors (one per part)."""
    return tuple(t.clone() for t in slot.native(torch.as_tensor(np.asarray(value))))


def load_variables(built: ops.Built, params: dict[str, np.ndarray], step: int = 0) -> None:
    """Copy canonical parameters and layer state into the model, in each slot's torch layout; the
    BatchNorm modules' num_batches_tracked becomes `step` (one training forward pass per step)."""
    with torch.no_grad():
        for name, slot in built.variables.items():
            value = np.asarray(params[name])
            expected = tuple(slot.canonical().shape)
            if value.shape != expected:
                raise CheckpointError(f"variable '{name}' has shape {value.shape}, the model expects {expected}")
            for tensor, part in zip(slot.tensors, _native(slot, value)):
                tensor.copy_(part)
        for module in built.module.modules():
            if isinstance(getattr(module, "num_batches_tracked", None), torch.Tensor):
                module.num_batches_tracked.fill_(int(step))


def load_optimizer_state(optimizer: torch.optim.Optimizer, slots: dict[str, ops.Slot], s: spec.Optimizer,
                         state: TrainingState, step_dtype=torch.float32) -> None:
    """Put the canonical optimizer state into `optimizer` through its load_state_dict. A parameter
    gets an entry when its buffers are complete (a momentum buffer or Adam's moments exist only
    after a first step); otherwise torch creates them on the next step, as for a fresh optimizer."""
    index = _ordered(optimizer)
    saved = optimizer.state_dict()
    entries = dict(saved["state"])
    required = s.state_slots()
    for name, slot in slots.items():
        # copies: torch updates its state in place, and the caller's arrays must stay as they are
        per_part = {key: _native(slot, values[name]) for key, values in state.slots.items()
                    if name in values and key in required}
        if not required or len(per_part) < len(required):
            if state.step > 0 and required:
                missing = [key for key in required if key not in per_part]
                raise CheckpointError(f"the training state has no optimizer slot '{missing[0]}' for '{name}' "
                                      f"after {state.step} steps")
            continue
        for k, (tensor, trains) in enumerate(zip(slot.tensors, slot.trains)):
            if not trains:
                continue
            entry = {key: values[k] for key, values in per_part.items()}
            for key in s.state_counters():
                entry[key] = torch.tensor(float(state.counters.get(key, 0)), dtype=step_dtype)
            entries[index[tensor]] = entry
    saved["state"] = entries
    optimizer.load_state_dict(saved)


# ---- torch's own checkpoint file ------------------------------------------------------------------


def _lowering(experiment: Experiment) -> tuple[ops.Built, Chain]:
    """A float64 CPU model and optimizer for `experiment`, as the trainer builds them."""
    built = ops.build_model(experiment.model, dtype=torch.float64, device=torch.device("cpu"))
    return built, Chain(experiment.optimizer, built.module.parameters())


def _next_lr(experiment: Experiment, step: int) -> float:
    """The learning rate of the step after `step` steps (the spec's lr without a schedule)."""
    s = experiment.optimizer
    if s.schedule is None:
        return s.lr
    from crossnn.data import load_dataset
    from crossnn.schedule import StepClock

    return StepClock(experiment, load_dataset(experiment).n).lr(step)


def export_native(experiment: Experiment, state: TrainingState, path) -> None:
    """Write `state` as torch.save({"info", "date", "model", "optimizer", "step"}), completely or not
    at all. The param groups hold the learning rate of the next step."""
    built, chain = _lowering(experiment)
    load_variables(built, state.params, state.step)
    load_optimizer_state(chain.optimizer, built.slots, experiment.optimizer, state)
    chain.lr.apply(chain.optimizer, chain.params, _next_lr(experiment, state.step))
    payload = {
        "info": f"crossnn experiment '{experiment.name}': {type(built.module).__name__} state_dict and "
                f"torch.optim.{type(chain.optimizer).__name__} state_dict after {state.step} steps",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": built.module.state_dict(),
        "optimizer": chain.optimizer.state_dict(),
        "step": int(state.step),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def _read(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals([datetime.datetime]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as err:  # torch raises many kinds for a file that is not its format
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: holds a {type(payload).__name__}, expected the dict torch.save wrote "
                              "({'model', 'optimizer', 'step', ...})")
    for key in ("model", "optimizer", "step"):
        if key not in payload:
            raise CheckpointError(f"{path}: missing key '{key}' (not a crossnn torch checkpoint, or damaged)")
    return payload


def import_native(experiment: Experiment, path) -> TrainingState:
    """Read a file export_native wrote (or one a hand-written loop saved the same way for a model of
    the same structure) back into a canonical training state."""
    path = Path(path)
    payload = _read(path)
    built, chain = _lowering(experiment)
    optimizer = chain.optimizer
    model_state, expected = payload["model"], built.module.state_dict()
    if not isinstance(model_state, dict):
        raise CheckpointError(f"{path}: 'model' is a {type(model_state).__name__}, expected a state_dict")
    missing = [key for key in expected if key not in model_state]
    extra = [key for key in model_state if key not in expected]
    if missing or extra:
        raise CheckpointError(f"{path}: 'model' does not fit the model of '{experiment.name}' (missing "
                              f"{', '.join(missing) or 'nothing'}; unexpected {', '.join(extra) or 'nothing'})")
    for key, value in expected.items():
        got = model_state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"{path}: model '{key}' has shape {shape}, the model of '{experiment.name}' "
                                  f"needs {tuple(value.shape)}")
    built.module.load_state_dict(model_state)
    opt_state = payload["optimizer"]
    ours = optimizer.state_dict()
    if (not isinstance(opt_state, dict) or not isinstance(opt_state.get("param_groups"), list)
            or not isinstance(opt_state.get("state"), dict)):
        raise CheckpointError(f"{path}: 'optimizer' is not a torch.optim state_dict")
    theirs = [sorted(k for k in g if k != "params") for g in opt_state["param_groups"]]
    if theirs != [sorted(k for k in g if k != "params") for g in ours["param_groups"]] or \
            [len(g["params"]) for g in opt_state["param_groups"]] != [len(g["params"]) for g in ours["param_groups"]]:
        raise CheckpointError(f"{path}: 'optimizer' is not the state of torch.optim."
                              f"{type(optimizer).__name__} over this model's parameters")
    shapes = [tuple(p.shape) for g in optimizer.param_groups for p in g["params"]]
    for i, entry in opt_state["state"].items():
        for key, value in entry.items():
            if key not in experiment.optimizer.state_counters() and isinstance(value, torch.Tensor) \
                    and tuple(value.shape) != shapes[i]:
                raise CheckpointError(f"{path}: optimizer state {key} of parameter {i} has shape "
                                      f"{tuple(value.shape)}, the parameter is {shapes[i]}")
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise CheckpointError(f"{path}: 'optimizer' does not load ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    step = payload["step"]
    if isinstance(step, torch.Tensor):
        step = int(step.item())
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: 'step' must be a non-negative integer, got {step!r}")
    frozen = [t for slot in built.slots.values() for t, trains in zip(slot.tensors, slot.trains) if not trains]
    if any(optimizer.state.get(t) for t in frozen):
        raise CheckpointError(f"{path}: the optimizer state trains a bias crossnn holds at 0 (an RNN's bias_hh_l0: "
                              "crossnn's one bias is bias_ih_l0 + bias_hh_l0, trained as bias_ih_l0)")
    state = training_state(step, built, optimizer, experiment.optimizer)
    if step > 0:
        for key in experiment.optimizer.state_slots():
            absent = [name for name in built.slots if name not in state.slots.get(key, {})]
            if absent:
                raise CheckpointError(f"{path}: the optimizer state has no '{key}' for '{absent[0]}' after "
                                      f"{step} steps")
    return state


# ---- a user's nn.Sequential as a spec -------------------------------------------------------------------


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.array(tensor.detach().cpu().double().numpy(), order="C", copy=True)


class SequentialReader:
    """Reads an nn.Sequential child by child, keeping the canonical shape of the value so far and what
    the torch tensor holds beyond it: a flatten of an NCHW image whose (C, H, W) order the next
    nn.Linear's weight columns must be reordered from (`flattened`), the (N, C, 1, 1) tensor of a
    global average pool that an nn.Flatten must follow (`pooled`), an nn.ZeroPad2d that the next
    nn.Conv2d must turn into 'same' padding (`pad`), a recurrent module whose (output, state) tuple
    the next child, crossnn's RecurrentOutput, must reduce to a tensor (`recurrent`). Activations
    after a layer without one become its activation. The initializers recorded are torch's defaults
    (fan_in_uniform, kaiming_uniform with a = √5, N(0, 1) for nn.Embedding, units_uniform for the
    recurrent modules); the starting values are the module's (BatchNorm's running statistics
    among them), returned as the parameters."""

    def __init__(self, inputs):
        self.shape = tuple(inputs) if isinstance(inputs, (tuple, list)) else ((inputs,) if inputs else None)
        self.layers: list[spec.Layer] = []
        self.params: dict[str, np.ndarray] = {}
        self.flattened: tuple[int, int, int] | None = None
        self.pooled = False
        self.pad: tuple[int, int, int, int] | None = None
        self.recurrent: tuple[str, nn.RNNBase] | None = None
        self.readers = {nn.Linear: self.linear, nn.Conv2d: self.conv, nn.MaxPool2d: self.max_pool,
                        nn.AvgPool2d: self.avg_pool, nn.AdaptiveAvgPool2d: self.global_pool, nn.Flatten: self.flatten,
                        nn.Dropout: self.dropout, nn.ZeroPad2d: self.zero_pad, nn.BatchNorm1d: self.batch_norm,
                        nn.BatchNorm2d: self.batch_norm, nn.LayerNorm: self.layer_norm, nn.Embedding: self.embedding,
                        nn.RNN: self.recurrent_module, nn.LSTM: self.recurrent_module, nn.GRU: self.recurrent_module,
                        ops.RecurrentOutput: self.recurrent_output}

    def refuse(self, name: str, child, why: str) -> UnsupportedFeature:
        return UnsupportedFeature("torch", f"importing module {name} ({type(child).__name__}): {why}")

    def read(self, module: nn.Sequential) -> tuple[spec.Model, dict[str, np.ndarray]]:
        children = list(module.named_children())
        first = next((child for _, child in children if isinstance(child, (nn.Linear, nn.Conv2d))), None)
        if self.shape is None:
            if not isinstance(first, nn.Linear) or (children and isinstance(children[0][1], nn.Embedding)):
                raise UnsupportedFeature("torch", "importing an nn.Sequential that does not start with nn.Linear "
                                                  "without its input shape (inputs=[H, W, C]), or the shape of "
                                                  "its ids ([T]) for an nn.Embedding")
            self.shape = (first.in_features,)
        inputs = self.shape
        for name, child in children:
            if self.recurrent is not None and not isinstance(child, ops.RecurrentOutput):
                raise self.refuse(*self.recurrent, RECURRENT_TUPLE)
            if isinstance(child, nn.Embedding) and self.layers:
                raise self.refuse(name, child, "an embedding reads the model input (ids): it must come first")
            if self.pooled and not isinstance(child, nn.Flatten):
                raise self.refuse(name, child, "an nn.AdaptiveAvgPool2d(1) must be followed by nn.Flatten")
            if self.pad is not None and not isinstance(child, nn.Conv2d):
                raise self.refuse(name, child, "an nn.ZeroPad2d must be followed by the nn.Conv2d it pads")
            reader = self.readers.get(type(child))
            if reader is not None:
                reader(name, child)
            else:
                self.activation(name, child)
        last = children[-1] if children else ("", module)
        if self.recurrent is not None:
            raise self.refuse(*self.recurrent, RECURRENT_TUPLE)
        if self.flattened is not None or self.pooled or self.pad is not None:
            raise self.refuse(*last, "the model ends before the layer that its flatten, pool or pad feeds")
        if not self.layers:
            raise UnsupportedFeature("torch", "importing an nn.Sequential without layers")
        return spec.Model(inputs=inputs[0] if len(inputs) == 1 else list(inputs), layers=tuple(self.layers)), \
            self.params

    def add(self, layer: spec.Layer) -> None:
        shape = layer.output_shape((self.shape,))
        self.layers.append(layer)
        self.shape = tuple(shape)

    def linear(self, name, child: nn.Linear):
        if ops.image(self.shape):
            raise self.refuse(name, child, "nn.Linear on an (N, C, H, W) tensor acts on the width; flatten first")
        if self.shape[-1] != child.in_features:
            raise self.refuse(name, child, f"takes {child.in_features} features, the input has {self.shape[-1]}")
        weight = child.weight.detach()
        if self.flattened is not None:  # the columns follow nn.Flatten's (C, H, W) order; crossnn's is (H, W, C)
            c, h, w = self.flattened
            kernel = weight.reshape(child.out_features, c, h, w).permute(2, 3, 1, 0).reshape(h * w * c, -1)
            self.flattened = None
        else:
            kernel = ops.LINEAR_WEIGHT.canonical(weight)
        self.add(spec.Dense(name=name, units=child.out_features, use_bias=child.bias is not None,
                            kernel_init=spec.FanInUniform(), bias_init=spec.FanInUniform()))
        self.params[f"{name}/kernel"] = _numpy(kernel)
        if child.bias is not None:
            self.params[f"{name}/bias"] = _numpy(child.bias)

    def _padding(self, name, child, layer, padding, pads=None) -> str:
        """'valid' or 'same' for torch's padding (with an nn.ZeroPad2d's (left, right, top, bottom) pads
        before it), when it is crossnn's rule for `layer` (the spec layer, 'same' padded); else
        UnsupportedFeature."""
        if isinstance(padding, str):
            if padding == "valid" or (padding == "same" and all(s == 1 for s in layer.strides)):
                return padding  # torch's 'same' (stride 1) puts an odd extra pixel after, as crossnn's rule does
            padding = (0, 0)
        ph, pw = _pair(padding)
        if pads is None and (ph, pw) == (0, 0):
            return "valid"
        if pads is not None and (ph, pw) != (0, 0):
            raise self.refuse(name, child, "padded twice (nn.ZeroPad2d and its own padding)")
        wanted = (pads[2], pads[3], pads[0], pads[1]) if pads is not None else (ph, ph, pw, pw)
        g = window_geometry(layer, self.shape)
        if (g.top, g.bottom, g.left, g.right) != wanted:
            raise self.refuse(name, child, f"padding (top, bottom, left, right) {wanted} on a {list(self.shape[:2])} "
                                           f"input is neither 'valid' nor crossnn's 'same' "
                                           f"({(g.top, g.bottom, g.left, g.right)})")
        return "same"

    def _check_window(self, name, child) -> None:
        if not ops.image(self.shape):
            raise self.refuse(name, child, f"needs an image input, got shape {list(self.shape)}")
        if getattr(child, "ceil_mode", False):
            raise self.refuse(name, child, "ceil_mode=True has no crossnn equivalent")

    def conv(self, name, child: nn.Conv2d):
        self._check_window(name, child)
        if child.groups != 1 or child.padding_mode != "zeros" or child.in_channels != self.shape[2]:
            raise self.refuse(name, child, f"needs groups=1, padding_mode='zeros' and {self.shape[2]} input channels")
        layer = spec.Conv2D(name=name, filters=child.out_channels, kernel_size=_pair(child.kernel_size),
                            strides=_pair(child.stride), padding="same", dilation=_pair(child.dilation),
                            use_bias=child.bias is not None, kernel_init=spec.FanInUniform(),
                            bias_init=spec.FanInUniform())
        padding = self._padding(name, child, layer, child.padding, self.pad)
        self.pad = None
        self.add(dataclasses.replace(layer, padding=padding))
        self.params[f"{name}/kernel"] = _numpy(ops.CONV_WEIGHT.canonical(child.weight.detach()))
        if child.bias is not None:
            self.params[f"{name}/bias"] = _numpy(child.bias)

    def _pool(self, name, child, cls, **fields):
        """The spec pooling layer of an nn.MaxPool2d or nn.AvgPool2d."""
        self._check_window(name, child)
        stride = child.stride if child.stride is not None else child.kernel_size
        layer = cls(name=name, pool_size=_pair(child.kernel_size), strides=_pair(stride), padding="same", **fields)
        self.add(dataclasses.replace(layer, padding=self._padding(name, child, layer, child.padding)))

    def max_pool(self, name, child: nn.MaxPool2d):
        if _pair(child.dilation) != (1, 1) or child.return_indices:
            raise self.refuse(name, child, "dilation and return_indices have no crossnn equivalent")
        self._pool(name, child, spec.MaxPool2D)

    def avg_pool(self, name, child: nn.AvgPool2d):
        if child.divisor_override is not None:
            raise self.refuse(name, child, "divisor_override has no crossnn equivalent")
        self._pool(name, child, spec.AvgPool2D, count_padding=bool(child.count_include_pad))

    def global_pool(self, name, child: nn.AdaptiveAvgPool2d):
        if _pair(child.output_size) != (1, 1) or not ops.image(self.shape):
            raise self.refuse(name, child, "only an output size of 1 on an image is a global average pool")
        self.add(spec.GlobalAvgPool2D(name=name))
        self.pooled = True

    def flatten(self, name, child: nn.Flatten):
        if (child.start_dim, child.end_dim) != (1, -1):
            raise self.refuse(name, child, "only start_dim=1, end_dim=-1")
        if self.pooled:  # (N, C, 1, 1) -> (N, C): crossnn's global pool already gave (C,)
            self.pooled = False
            return
        if ops.image(self.shape):
            h, w, c = self.shape
            self.flattened = (c, h, w)
        self.add(spec.Flatten(name=name))

    def dropout(self, name, child: nn.Dropout):
        self.add(spec.Dropout(name=name, rate=float(child.p)))  # trained with crossnn's masks, not torch's RNG

    def zero_pad(self, name, child: nn.ZeroPad2d):
        self.pad = tuple(child.padding)

    def _normalized(self, name, child) -> None:
        if self.flattened is not None:
            raise self.refuse(name, child, "normalizes features in nn.Flatten's (C, H, W) order; crossnn flattens "
                                           "(H, W, C): put it before the flatten")

    def batch_norm(self, name, child: nn.BatchNorm1d | nn.BatchNorm2d):
        """dim 1 of torch's tensor: an image's channels (axis -1), the features of (N, F) (-1), the
        first axis of (N, T, F) (axis 1). momentum 1 - torch's; torch's running variance is unbiased."""
        self._normalized(name, child)
        if child.momentum is None or not child.track_running_stats:
            raise self.refuse(name, child, "momentum=None (a cumulative average) or track_running_stats=False has "
                                           "no crossnn equivalent")
        two_d = isinstance(child, nn.BatchNorm2d)
        if two_d != ops.image(self.shape) or len(self.shape) > 2 + two_d:
            raise self.refuse(name, child, f"does not take a tensor of canonical shape {list(self.shape)}")
        axis = -1 if two_d or len(self.shape) == 1 else 1
        channels = self.shape[merge_axis(axis, len(self.shape))]
        if child.num_features != channels:
            raise self.refuse(name, child, f"has {child.num_features} features, the input {channels}")
        self.add(spec.BatchNorm(name=name, axis=axis, momentum=1.0 - child.momentum, epsilon=child.eps,
                                running_variance="unbiased", center=child.bias is not None,
                                scale=child.weight is not None))
        self._affine(name, child)
        self.params[f"{name}/moving_mean"] = _numpy(child.running_mean)
        self.params[f"{name}/moving_variance"] = _numpy(child.running_var)

    def _affine(self, name, child) -> None:
        if child.weight is not None:
            self.params[f"{name}/gamma"] = _numpy(child.weight)
        if child.bias is not None:
            self.params[f"{name}/beta"] = _numpy(child.bias)

    def layer_norm(self, name, child: nn.LayerNorm):
        """Over torch's last axis: an image's width (axis 2), else the canonical last axis."""
        self._normalized(name, child)
        size = self.shape[1] if ops.image(self.shape) else self.shape[-1]
        if tuple(child.normalized_shape) != (size,):
            raise self.refuse(name, child, f"normalizes over {list(child.normalized_shape)}; crossnn's layer_norm "
                                           f"takes one axis, the last torch axis here ({size})")
        self.add(spec.LayerNorm(name=name, axis=2 if ops.image(self.shape) else -1, epsilon=child.eps,
                                center=child.bias is not None, scale=child.weight is not None))
        self._affine(name, child)

    def embedding(self, name, child: nn.Embedding):
        if len(self.shape) != 1:
            raise self.refuse(name, child, f"takes ids of shape [T]; got inputs {list(self.shape)}")
        if child.padding_idx is not None or child.max_norm is not None or child.scale_grad_by_freq or child.sparse:
            raise self.refuse(name, child, "padding_idx, max_norm, scale_grad_by_freq and sparse have no crossnn "
                                           "equivalent")
        self.add(spec.Embedding(name=name, input_dim=child.num_embeddings, output_dim=child.embedding_dim,
                                embeddings_init=spec.Normal(mean=0.0, stddev=1.0)))
        self.params[f"{name}/embeddings"] = _numpy(child.weight)

    def recurrent_module(self, name, child: nn.RNNBase):
        """Kept until the RecurrentOutput after it says whether the layer returns sequences."""
        if len(self.shape) != 2 or child.input_size != self.shape[1]:
            raise self.refuse(name, child, f"takes {child.input_size} features per step; the input is "
                                           f"{list(self.shape)}")
        if child.num_layers != 1 or child.bidirectional or not child.batch_first or not child.bias \
                or getattr(child, "proj_size", 0):
            raise self.refuse(name, child, "crossnn's recurrent layers are one layer, one direction, batch_first, "
                                           "with biases and no projection")
        self.recurrent = (name, child)

    def recurrent_output(self, name, child: ops.RecurrentOutput):
        if self.recurrent is None:
            raise self.refuse(name, child, "must follow nn.RNN, nn.LSTM or nn.GRU")
        layer_name, module = self.recurrent
        self.recurrent = None
        units = spec.UnitsUniform()
        fields = dict(name=layer_name, units=module.hidden_size, return_sequences=bool(child.sequences),
                      kernel_init=units, recurrent_init=units, bias_init=units)
        if isinstance(module, nn.LSTM):
            layer, entry = spec.LSTM(unit_forget_bias=False, **fields), ops.LSTMLayer  # torch has no such option
        elif isinstance(module, nn.GRU):
            layer, entry = spec.GRU(reset_after=True, **fields), ops.GRULayer
        else:
            act = {"tanh": spec.Tanh(), "relu": spec.ReLU()}[module.nonlinearity]
            layer, entry = spec.SimpleRNN(activation=act, **fields), ops.SimpleRNNLayer
        self.add(layer)
        for short, place in entry.params(SimpleNamespace(layer=layer)).items():  # the lowering's own layouts
            natives = [getattr(module, a).detach() for a in place.attributes]
            self.params[f"{layer_name}/{short}"] = _numpy(place.layout.canonical(natives[0] if len(natives) == 1
                                                                                 else tuple(natives)))

    def activation(self, name, child):
        act = _imported_activation(child, ops.channel_dim(self.shape), len(self.shape) + 1)
        if act is None:
            raise self.refuse(name, child, "no crossnn equivalent")
        last = self.layers[-1] if self.layers else None
        if isinstance(last, (spec.Dense, spec.Conv2D)) and type(last.activation) is spec.Linear:
            self.layers[-1] = dataclasses.replace(last, activation=act)
        else:
            self.add(spec.ActivationLayer(name=name, activation=act))


def _imported_activation(module: nn.Module, dim: int, rank: int) -> spec.Activation | None:
    """The spec activation of a torch activation module (softmax: over the canonical last axis, torch
    axis `dim` of a rank-`rank` tensor), or None."""
    simple = {nn.Sigmoid: spec.Sigmoid, nn.Tanh: spec.Tanh, nn.ReLU: spec.ReLU, nn.Identity: spec.Linear,
              ops.Softplus: spec.Softplus}
    if type(module) in simple:
        return simple[type(module)]()
    if isinstance(module, nn.LeakyReLU):
        return spec.LeakyReLU(negative_slope=module.negative_slope)
    if isinstance(module, nn.GELU):
        return spec.GELU(approximate=module.approximate)
    if isinstance(module, nn.Softmax) and module.dim is not None and module.dim % rank == dim % rank:
        return spec.Softmax()
    return None


RECURRENT_TUPLE = ("torch's recurrent modules return an (output, state) tuple, which the next child of an "
                   "nn.Sequential cannot take: follow it with crossnn_torch.ops.RecurrentOutput(sequences=...), "
                   "as crossnn's own models do")


def import_sequential(module: nn.Module, inputs=None) -> tuple[spec.Model, dict[str, np.ndarray]]:
    """(spec Model, canonical float64 variables) for an nn.Sequential of nn.Linear, nn.Conv2d (after
    an optional nn.ZeroPad2d), nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d(1), nn.Flatten,
    nn.Dropout, nn.BatchNorm1d / 2d (their running statistics as the layer state), nn.LayerNorm (one
    axis), nn.Embedding (first, on ids of shape [T]), nn.RNN / nn.LSTM / nn.GRU (one layer,
    batch_first) each followed by crossnn_torch.ops.RecurrentOutput, and activation modules. A bare
    recurrent module is refused: its (output, state) tuple does not run in an nn.Sequential, and what a
    user's own module takes from it is code crossnn cannot read. Layers keep the Sequential's child
    names ("0", "1", ...).
    inputs: the canonical input shape ([H, W, C] for images; for a model that starts with nn.Linear,
    its in_features by default). The spec computes the module's function: an nn.Linear after the
    flatten of an image gets its weight columns reordered to crossnn's (H, W, C) order."""
    if not isinstance(module, nn.Sequential):
        raise UnsupportedFeature("torch", f"importing a {type(module).__name__} (only an nn.Sequential of layers "
                                          "and activation modules)")
    return SequentialReader(inputs).read(module)
