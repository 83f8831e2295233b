"""The training loop as PyTorch's tutorials write it, by hand: the yardstick for crossnn's overhead.

It shares no code with the lowering (layers.py, losses.py, optimizers.py, step.py): the model is an
nn.Sequential of nn.Linear and activation modules read straight off the spec's chain of dense layers,
the loss is one of torch's loss modules, the optimizer torch.optim.SGD or Adam, and the loop is

    for rows in batches:
        xb, yb = X[rows], Y[rows]
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())   # kept on the device, stacked and copied to the host once per run

Only what a tutorial would write is covered: a chain of dense layers with torch's own activation
modules, and losses and optimizers that torch's built-ins compute exactly as the spec says. Anything
else (graphs, softplus, clamped BCE other than torch's -100, cross-entropy on probabilities) raises
UnsupportedFeature.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crossnn import spec
from crossnn.backends import Trainer
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT


def _unsupported(feature: str) -> UnsupportedFeature:
    return UnsupportedFeature("torch", f"{feature} in the hand-written tutorial loop")


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
        return [nn.Softmax(dim=1)]
    raise _unsupported(f"activation '{a.kind}'")


def _sequential(model: spec.Model, dtype, device) -> tuple[nn.Sequential, list[tuple[str, nn.Linear]]]:
    """nn.Sequential(nn.Linear, activation, nn.Linear, ...) and the named nn.Linear layers."""
    modules, linears, previous, width = [], [], INPUT, model.inputs
    for node in model.nodes:
        layer = node.layer
        if node.inputs != (previous,):
            raise _unsupported(f"a graph model (layer '{node.name}' reads {', '.join(node.inputs)})")
        if not isinstance(layer, spec.Dense):
            raise _unsupported(f"layer '{node.name}' of type '{layer.kind}'")
        linear = nn.Linear(width, layer.units, bias=layer.use_bias, dtype=dtype, device=device)
        modules += [linear, *_activation(layer.activation)]
        linears.append((node.name, linear))
        previous, width = node.name, layer.units
    if previous != model.layers[-1].name:
        raise _unsupported("a graph model (the last layer listed is not the end of the chain)")
    return nn.Sequential(*modules), linears


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


class TutorialTrainer(Trainer):
    def __init__(self, experiment, params, data, *, dtype: str, device: str):
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.model, self.linears = _sequential(experiment.model, self.dtype, self.device)
        with torch.no_grad():
            for name, linear in self.linears:
                linear.weight.copy_(torch.as_tensor(params[f"{name}/kernel"].T))
                if linear.bias is not None:
                    linear.bias.copy_(torch.as_tensor(params[f"{name}/bias"]))
        self.loss_fn = _loss(experiment.loss)
        self.optimizer = _optimizer(experiment.optimizer, self.model.parameters())
        self.X = torch.as_tensor(data.x, dtype=self.dtype, device=self.device)
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
        for name, linear in self.linears:
            out[f"{name}/kernel"] = linear.weight.detach().cpu().numpy().T.copy()
            if linear.bias is not None:
                out[f"{name}/bias"] = linear.bias.detach().cpu().numpy().copy()
        return out

    def predict(self, x):
        with torch.no_grad():
            return self.model(torch.as_tensor(x, dtype=self.dtype, device=self.device)).cpu().numpy()

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self):
        return f"hand-written tutorial loop, torch {torch.__version__} on {self.device}"


def tutorial(experiment, params, data, *, dtype: str, device: str) -> TutorialTrainer:
    return TutorialTrainer(experiment, params, data, dtype=dtype, device=device)
