"""The training loop as PyTorch's tutorials write it, by hand: the yardstick for crossnn's overhead.

It shares no code with the lowering (ops.py, optimizers.py, step.py): the model is an nn.Sequential
read straight off the spec's chain of layers — nn.Conv2d (after nn.ZeroPad2d where 'same' padding is
asymmetric), nn.MaxPool2d (after nn.ConstantPad2d(-inf) then), nn.AvgPool2d, a permute to
channels-last and nn.Flatten, nn.Linear and torch's activation modules — the loss is one of torch's
loss modules, the optimizer torch.optim.SGD or Adam, the images are permuted to (N, C, H, W) once,
and the loop is

    for rows in batches:
        xb, yb = X[rows], Y[rows]
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())   # kept on the device, stacked and copied to the host once per run

Only what a tutorial would write is covered: a chain of those layers, and losses and optimizers that
torch's built-ins compute exactly as the spec says. Anything else (graphs, softplus, clamped BCE other
than torch's -100, cross-entropy on probabilities) raises UnsupportedFeature. Average pooling that
divides by the in-input count with asymmetric padding (TensorFlow's 'same') is written out as a PyTorch
user ports it (AvgPoolSame). The padding is the spec's: crossnn.spec's
window_geometry (the spec's definition, not the lowering) gives each side's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crossnn import spec
from crossnn.backends import Trainer
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT
from crossnn.spec.layers import window_geometry


def _unsupported(feature: str) -> UnsupportedFeature:
    return UnsupportedFeature("torch", f"{feature} in the hand-written tutorial loop")


class Permute(nn.Module):
    """x.permute(dims): (N, C, H, W) -> (N, H, W, C) before flatten, so the next layer sees crossnn's order."""

    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class AvgPoolSame(nn.Module):
    """TensorFlow's 'same' average pooling as a PyTorch user ports it: the window sums of the
    zero-padded input (F.pad with the extra row/column after, avg_pool2d with divisor_override=1) over
    the number of each window's positions inside the input, counted once on an image of ones."""

    def __init__(self, kernel_size, stride, pad, size, dtype=None, device=None):
        super().__init__()
        self.kernel_size, self.stride, self.pad = kernel_size, stride, pad
        ones = nn.functional.pad(torch.ones(1, 1, *size, dtype=dtype, device=device), pad)
        self.register_buffer("count", nn.functional.avg_pool2d(ones, kernel_size, stride, divisor_override=1))

    def forward(self, x):
        x = nn.functional.pad(x, self.pad)
        return nn.functional.avg_pool2d(x, self.kernel_size, self.stride, divisor_override=1) / self.count


def _activation(a: spec.Activation) -> list[nn.Module]:
    if isinstance(a, spec.Linear):
        return []
    if isinstance(a, spec.Sigmoid):
        return [nn.Sigmoid()]
    if isinstance(a, spec.Tanh):
        return [nn.Tanh()]
    if isinstance(a, spec.ReLU):
        return [nn.ReLU()]
    if isinstance(a, spec.LeakyReLU):
        return [nn.LeakyReLU(a.negative_slope)]
    if isinstance(a, spec.GELU):
        return [nn.GELU(approximate=a.approximate)]
    if isinstance(a, spec.Softmax):
        return [nn.Softmax(dim=1)]  # the features of (N, F), the channels of (N, C, H, W)
    raise _unsupported(f"activation '{a.kind}'")


def _padding(layer, shape):
    """(padding for the torch module, an explicit pad (left, right, top, bottom) before it or None)."""
    g = window_geometry(layer, shape)
    if g.top == g.bottom and g.left == g.right:
        return (g.top, g.left), None
    return (0, 0), (g.left, g.right, g.top, g.bottom)


def _sequential(model: spec.Model, dtype, device):
    """nn.Sequential of the chain, and (canonical name, parameter, permutation from canonical) of
    every parameter."""
    modules, params, previous, shape = [], [], INPUT, model.input_shape
    for node in model.nodes:
        layer = node.layer
        if node.inputs != (previous,):
            raise _unsupported(f"a graph model (layer '{node.name}' reads {', '.join(node.inputs)})")
        if isinstance(layer, spec.Dense):
            if len(shape) != 1:
                raise _unsupported(f"dense layer '{node.name}' on a {len(shape)}-axis input")
            linear = nn.Linear(shape[0], layer.units, bias=layer.use_bias, dtype=dtype, device=device)
            modules += [linear, *_activation(layer.activation)]
            params.append((f"{node.name}/kernel", linear.weight, (1, 0)))
            if layer.use_bias:
                params.append((f"{node.name}/bias", linear.bias, None))
        elif isinstance(layer, spec.Conv2D):
            padding, pad = _padding(layer, shape)
            conv = nn.Conv2d(shape[2], layer.filters, tuple(layer.kernel_size), stride=tuple(layer.strides),
                             padding=padding, dilation=tuple(layer.dilation), bias=layer.use_bias, dtype=dtype,
                             device=device)
            modules += [*([nn.ZeroPad2d(pad)] if pad else []), conv, *_activation(layer.activation)]
            params.append((f"{node.name}/kernel", conv.weight, (3, 2, 0, 1)))  # (kh, kw, in, out) -> (out, in, kh, kw)
            if layer.use_bias:
                params.append((f"{node.name}/bias", conv.bias, None))
        elif isinstance(layer, spec.MaxPool2D):
            padding, pad = _padding(layer, shape)
            pool = nn.MaxPool2d(tuple(layer.pool_size), stride=tuple(layer.strides), padding=padding)
            modules += [*([nn.ConstantPad2d(pad, float("-inf"))] if pad else []), pool]
        elif isinstance(layer, spec.AvgPool2D):
            padding, pad = _padding(layer, shape)
            if pad and not layer.count_padding:
                modules.append(AvgPoolSame(tuple(layer.pool_size), tuple(layer.strides), pad, shape[:2], dtype=dtype,
                                           device=device))
            else:
                pool = nn.AvgPool2d(tuple(layer.pool_size), stride=tuple(layer.strides), padding=padding,
                                    count_include_pad=layer.count_padding)
                modules += [*([nn.ZeroPad2d(pad)] if pad else []), pool]
        elif isinstance(layer, spec.Flatten):
            modules += [Permute(0, 2, 3, 1), nn.Flatten()] if len(shape) == 3 else [nn.Flatten()]
        else:
            raise _unsupported(f"layer '{node.name}' of type '{layer.kind}'")
        previous, shape = node.name, node.shape
    if previous != model.layers[-1].name:
        raise _unsupported("a graph model (the last layer listed is not the end of the chain)")
    if len(shape) != 1:
        raise _unsupported(f"a model whose output has {len(shape)} axes")
    return nn.Sequential(*modules), params


def _loss(s: spec.Loss) -> nn.Module:
    if isinstance(s, spec.MSE):
        return nn.MSELoss()
    if isinstance(s, spec.MAE):
        return nn.L1Loss()
    if isinstance(s, spec.Huber):
        return nn.HuberLoss(delta=s.delta)
    if isinstance(s, spec.BCE) and s.log_min == -100.0:
        return nn.BCELoss()
    if isinstance(s, spec.BCELogits):
        return nn.BCEWithLogitsLoss()
    if isinstance(s, spec.CrossEntropy) and s.from_logits:
        return nn.CrossEntropyLoss()
    raise _unsupported(f"loss '{s.kind}' as configured")


def _optimizer(s: spec.Optimizer, params) -> torch.optim.Optimizer:
    if s.decoupled or s.clip_norm is not None or s.schedule is not None:
        raise _unsupported(f"optimizer '{s.kind}' with decoupled decay, clipping or a schedule")
    if isinstance(s, spec.SGD):
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                               weight_decay=s.l2)
    if isinstance(s, spec.Adam):
        return torch.optim.Adam(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps, weight_decay=s.l2)
    raise _unsupported(f"optimizer '{s.kind}'")


def _nchw(x: np.ndarray) -> np.ndarray:
    """Images (N, H, W, C) as torch's (N, C, H, W)."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


class TutorialTrainer(Trainer):
    def __init__(self, experiment, params, data, *, dtype: str, device: str):
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.model, self.params = _sequential(experiment.model, self.dtype, self.device)
        with torch.no_grad():
            for name, parameter, dims in self.params:
                value = torch.as_tensor(params[name])
                parameter.copy_(value.permute(dims) if dims else value)
        self.loss_fn = _loss(experiment.loss)
        self.optimizer = _optimizer(experiment.optimizer, self.model.parameters())
        self.X = torch.as_tensor(_nchw(data.x), dtype=self.dtype, device=self.device)
        if experiment.loss.sparse_targets:  # class indices, what nn.CrossEntropyLoss takes
            self.Y = torch.as_tensor(data.y, dtype=torch.int64, device=self.device)
        else:
            self.Y = torch.as_tensor(data.y, dtype=self.dtype, device=self.device)

    def _rows(self, batches):
        """Slices (X[i:i + bs], as tutorials write it) for consecutive indices, else index tensors."""
        if all(len(b) and b[-1] - b[0] == len(b) - 1 and np.all(np.diff(b) == 1) for b in batches):
            return [slice(int(b[0]), int(b[-1]) + 1) for b in batches]
        return [torch.as_tensor(b, device=self.device) for b in batches]

    def run(self, batches):
        model, loss_fn, optimizer, X, Y = self.model, self.loss_fn, self.optimizer, self.X, self.Y
        losses = []
        for rows in self._rows(batches):
            xb, yb = X[rows], Y[rows]
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses).cpu().numpy().astype(np.float64)

    def step(self, batch):
        return float(self.run([batch])[0])

    def parameters(self):
        out = {}
        for name, parameter, dims in self.params:
            value = parameter.detach()
            if dims:  # back to crossnn's layout: the inverse permutation
                value = value.permute(tuple(int(i) for i in np.argsort(dims)))
            out[name] = np.array(value.cpu().numpy(), order="C", copy=True)
        return out

    def predict(self, x):
        with torch.no_grad():
            return self.model(torch.as_tensor(_nchw(np.asarray(x)), dtype=self.dtype, device=self.device)).cpu().numpy()

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self):
        return f"hand-written tutorial loop, torch {torch.__version__} on {self.device}"


def tutorial(experiment, params, data, *, dtype: str, device: str) -> TutorialTrainer:
    return TutorialTrainer(experiment, params, data, dtype=dtype, device=device)
