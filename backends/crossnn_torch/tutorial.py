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

Sequences are written as PyTorch's word-language-model example writes them: nn.Embedding on int64
token ids, nn.LSTM (or nn.GRU, nn.RNN; batch_first, one layer) and LastOutput taking the last step's
output of its (output, state) tuple (or every step's), then nn.Linear. crossnn's (Keras') one bias of
a recurrent layer is loaded into bias_ih_l0 and bias_hh_l0 is zeroed and frozen, as a user porting
such a model writes it; GRU's gate blocks z, r, h are reordered to torch's r, z, n. nn.BatchNorm1d /
2d (momentum = 1 - the spec's) and nn.LayerNorm on the last axis where they compute the spec.

torch's fused paths: on the CPU, nn.LSTM / nn.GRU / nn.RNN run one C++ loop over time (aten's
recurrent layer, input products for all steps at once), and in float32 oneDNN's fused LSTM kernel
(torch.backends.mkldnn, training included), which rounds differently than the step-by-step formula
(within float32's tolerance; float64 has no oneDNN path). On a GPU the same modules call cuDNN's
fused RNN; crossnn's prepare() keeps TF32 off, and cuDNN's RNN backward is deterministic for a fixed
batch shape but not bitwise equal to the CPU's.

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


class LastOutput(nn.Module):
    """The output of nn.LSTM's (output, (h, c)) tuple: the last step's (N, hidden), or every step's."""

    def __init__(self, sequences=False):
        super().__init__()
        self.sequences = sequences

    def forward(self, result):
        output, _ = result
        return output if self.sequences else output[:, -1]


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
        elif isinstance(layer, spec.ActivationLayer):
            if isinstance(layer.activation, spec.Softmax) and len(shape) == 2:
                raise _unsupported(f"softmax layer '{node.name}' on sequences")
            modules += _activation(layer.activation)
        elif isinstance(layer, spec.Embedding):
            if len(shape) != 1:
                raise _unsupported(f"embedding '{node.name}' of ids shaped {list(shape)}")
            embedding = nn.Embedding(layer.input_dim, layer.output_dim, dtype=dtype, device=device)
            modules.append(embedding)
            params.append((f"{node.name}/embeddings", embedding.weight, None))
        elif isinstance(layer, (spec.LSTM, spec.GRU, spec.SimpleRNN)):
            modules += _recurrent(node, params, dtype, device)
        elif isinstance(layer, spec.BatchNorm):
            modules.append(_batch_norm(node, params, dtype, device))
        elif isinstance(layer, spec.LayerNorm) and layer.center and layer.scale and layer.axis == -1 \
                and len(shape) != 3:
            norm = nn.LayerNorm(shape[-1], eps=layer.epsilon, dtype=dtype, device=device)
            modules.append(norm)
            params += [(f"{node.name}/gamma", norm.weight, None), (f"{node.name}/beta", norm.bias, None)]
        else:
            raise _unsupported(f"layer '{node.name}' of type '{layer.kind}'")
        previous, shape = node.name, node.shape
    if previous != model.layers[-1].name:
        raise _unsupported("a graph model (the last layer listed is not the end of the chain)")
    if len(shape) != 1:
        raise _unsupported(f"a model whose output has {len(shape)} axes")
    return nn.Sequential(*modules), params


def _recurrent(node, params, dtype, device) -> list[nn.Module]:
    """nn.LSTM / nn.GRU / nn.RNN (batch_first) and LastOutput, for the activations torch's modules have."""
    layer, features = node.layer, node.input_shapes[0][1]
    acts = (type(layer.activation), type(getattr(layer, "recurrent_activation", spec.Sigmoid())))
    if isinstance(layer, spec.LSTM) and acts == (spec.Tanh, spec.Sigmoid):
        rnn = nn.LSTM(features, layer.units, batch_first=True, dtype=dtype, device=device)
    elif isinstance(layer, spec.GRU) and acts == (spec.Tanh, spec.Sigmoid) and layer.reset_after:
        rnn = nn.GRU(features, layer.units, batch_first=True, dtype=dtype, device=device)
    elif isinstance(layer, spec.SimpleRNN) and acts[0] in (spec.Tanh, spec.ReLU):
        rnn = nn.RNN(features, layer.units, nonlinearity="tanh" if acts[0] is spec.Tanh else "relu", batch_first=True,
                     dtype=dtype, device=device)
    else:
        raise _unsupported(f"{layer.kind} '{node.name}' as configured")
    gru = "gru-" if isinstance(layer, spec.GRU) else ""
    for short, weight in (("kernel", rnn.weight_ih_l0), ("recurrent_kernel", rnn.weight_hh_l0)):
        params.append((f"{node.name}/{short}", weight, gru + "gates"))
    params.append((f"{node.name}/bias", (rnn.bias_ih_l0, rnn.bias_hh_l0), gru + "bias"))
    if not gru:  # Keras' one bias: torch's second held at zero
        rnn.bias_hh_l0.requires_grad_(False)
    return [rnn, LastOutput(layer.return_sequences)]


def _batch_norm(node, params, dtype, device) -> nn.Module:
    """nn.BatchNorm1d / 2d with torch's momentum = 1 - the spec's, where torch computes the spec."""
    layer, shape = node.layer, node.input_shapes[0]
    if layer.running_variance != "unbiased" or not (layer.center and layer.scale) or layer.axis != -1 \
            or len(shape) == 2:
        raise _unsupported(f"batch_norm '{node.name}' as configured")
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    bn = cls(shape[-1], eps=layer.epsilon, momentum=1.0 - layer.momentum, dtype=dtype, device=device)
    params += [(f"{node.name}/gamma", bn.weight, None), (f"{node.name}/beta", bn.bias, None),
               (f"{node.name}/moving_mean", bn.running_mean, None), (f"{node.name}/moving_variance", bn.running_var,
                                                                      None)]
    return bn


def _gru_order(w: torch.Tensor) -> torch.Tensor:
    """Gate blocks z, r, h (Keras) <-> r, z, n (torch) along the last axis: swap the first two."""
    u = w.shape[-1] // 3
    return torch.cat([w[..., u:2 * u], w[..., :u], w[..., 2 * u:]], -1)


def _to_torch(value: torch.Tensor, kind):
    """A canonical value in torch's layout: permuted (kind: the axes), a recurrent kernel (gates
    reordered for a GRU, transposed), or a recurrent bias as (bias_ih, bias_hh): Keras' one bias and
    zeros, or a GRU's two rows."""
    if kind in ("gates", "gru-gates"):
        return (_gru_order(value) if kind == "gru-gates" else value).T
    if kind == "gru-bias":
        return _gru_order(value[0]), _gru_order(value[1])
    if kind == "bias":
        return value, torch.zeros_like(value)
    return value.permute(kind) if kind else value


def _to_canonical(value, kind) -> torch.Tensor:
    if kind in ("gates", "gru-gates"):
        return _gru_order(value.T) if kind == "gru-gates" else value.T
    if kind == "gru-bias":
        return torch.stack([_gru_order(value[0]), _gru_order(value[1])])
    if kind == "bias":
        return value[0] + value[1]
    return value.permute(tuple(int(i) for i in np.argsort(kind))) if kind else value


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
            for name, tensors, kind in self.params:
                native = _to_torch(torch.as_tensor(params[name]), kind)
                for tensor, value in zip(tensors if isinstance(tensors, tuple) else (tensors,),
                                         native if isinstance(native, tuple) else (native,)):
                    tensor.copy_(value)
        self.loss_fn = _loss(experiment.loss)
        self.optimizer = _optimizer(experiment.optimizer, self.model.parameters())
        self.ids = isinstance(experiment.model.layers[0], spec.Embedding)
        self.X = self._inputs(data.x)
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

    def _inputs(self, x):
        """Token ids as int64 (nn.Embedding's input), images as (N, C, H, W), else the values."""
        if self.ids:
            return torch.as_tensor(np.asarray(x), dtype=torch.int64, device=self.device)
        return torch.as_tensor(_nchw(np.asarray(x)), dtype=self.dtype, device=self.device)

    def parameters(self):
        out = {}
        for name, tensors, kind in self.params:  # back to crossnn's layout
            detached = tuple(t.detach() for t in tensors) if isinstance(tensors, tuple) else tensors.detach()
            value = _to_canonical(detached, kind)
            out[name] = np.array(value.cpu().numpy(), order="C", copy=True)
        return out

    def predict(self, x):
        self.model.eval()  # batch normalization with its running statistics
        try:
            with torch.no_grad():
                return self.model(self._inputs(x)).cpu().numpy()
        finally:
            self.model.train()

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self):
        return f"hand-written tutorial loop, torch {torch.__version__} on {self.device}"


def tutorial(experiment, params, data, *, dtype: str, device: str) -> TutorialTrainer:
    return TutorialTrainer(experiment, params, data, dtype=dtype, device=device)
