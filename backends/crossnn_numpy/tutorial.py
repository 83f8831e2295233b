"""The hand-written NumPy training loop, written the way a NumPy tutorial writes it: a list of layers,
each with its weights, a forward pass that keeps what it needs, the chain rule by hand, convolutions
as im2col over np.lib.stride_tricks.sliding_window_view with col2im by in-place strided adds, and
the optimizer update in place. It shares no code with crossnn's lowering; benchmarks time crossnn
against it.

It covers what benchmark models use: a chain of dense, conv2d, max_pool2d, avg_pool2d and flatten
layers with linear, sigmoid, tanh or relu activations; MSE, BCE (log clamp -100) or softmax
cross-entropy on logits; SGD (momentum) and Adam.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from crossnn import spec
from crossnn.backends import Trainer
from crossnn.errors import UnsupportedFeature
from crossnn.spec.layers import window_geometry

ACTIVATIONS = {
    # name: (f(z), f'(z) expressed through a = f(z))
    spec.Linear: (lambda z: z, None),
    spec.Sigmoid: (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda a: (1.0 - a) * a),
    spec.Tanh: (np.tanh, lambda a: 1.0 - a * a),
    spec.ReLU: (lambda z: np.maximum(z, 0.0), lambda a: a > 0),
}


def windows_of(x, layer, g):
    """The (N, Ho, Wo, C, kh, kw) windows of the padded input, a strided view (no copy)."""
    (kh, kw), (sh, sw), (dh, dw) = layer.window_size, layer.strides, getattr(layer, "dilation", (1, 1))
    fill = -np.inf if isinstance(layer, spec.MaxPool2D) else 0.0
    x = np.pad(x, ((0, 0), (g.top, g.bottom), (g.left, g.right), (0, 0)), constant_values=fill)
    view = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    return view[:, ::sh, ::sw, :, ::dh, ::dw][:, :g.out_h, :g.out_w], x.shape


def col2im(d_windows, padded_shape, layer, g):
    """The gradient of the input from the gradient of its windows (N, Ho, Wo, C, kh, kw): every
    window element added back where it was read, then the padding cut off."""
    (kh, kw), (sh, sw), (dh, dw) = layer.window_size, layer.strides, getattr(layer, "dilation", (1, 1))
    dx = np.zeros(padded_shape, dtype=d_windows.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i * dh:i * dh + (g.out_h - 1) * sh + 1:sh, j * dw:j * dw + (g.out_w - 1) * sw + 1:sw] += \
                d_windows[..., i, j]
    return dx[:, g.top:padded_shape[1] - g.bottom, g.left:padded_shape[2] - g.right]


class TutorialTrainer(Trainer):
    def __init__(self, experiment, params, data, dtype):
        model, loss, opt = experiment.model, experiment.loss, experiment.optimizer
        chain = [node.layer for node in model.nodes]
        if list(model.layers) != chain or any(
                node.inputs != ((model.nodes[i - 1].name,) if i else (spec.INPUT,))
                for i, node in enumerate(model.nodes)):
            raise UnsupportedFeature("numpy", "models other than a chain of layers")
        for layer in chain:
            if not isinstance(layer, (spec.Dense, spec.Conv2D, spec.MaxPool2D, spec.AvgPool2D, spec.Flatten)):
                raise UnsupportedFeature("numpy", f"layer {layer.name} ({layer.kind})")
            act = getattr(layer, "activation", spec.Linear())
            if type(act) not in ACTIVATIONS or not getattr(layer, "use_bias", True):
                raise UnsupportedFeature("numpy", f"layer {layer.name} (activation {act.kind}, no bias)")
        self.loss_kind = type(loss)
        if not (isinstance(loss, (spec.MSE, spec.BCE)) or (isinstance(loss, spec.CrossEntropy) and loss.from_logits)):
            raise UnsupportedFeature("numpy", f"loss {loss.kind}")
        if isinstance(loss, spec.BCE) and loss.log_min != -100.0:
            raise UnsupportedFeature("numpy", "a BCE clamp other than -100")
        if (not isinstance(opt, (spec.SGD, spec.Adam)) or isinstance(opt, spec.AdamW) or opt.weight_decay
                or opt.clip_norm is not None or opt.schedule is not None or getattr(opt, "nesterov", False)):
            raise UnsupportedFeature("numpy", "optimizers other than SGD (momentum) and Adam without extras")
        self.nodes = list(model.nodes)
        self.geometry = [window_geometry(n.layer, n.input_shapes[0]) if hasattr(n.layer, "window_size") else None
                         for n in self.nodes]
        self.acts = [ACTIVATIONS[type(getattr(n.layer, "activation", spec.Linear()))] for n in self.nodes]
        self.names = [name for name in params]
        self.params = [np.array(params[name], dtype=dtype) for name in self.names]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.opt = opt
        self.buffers = [None] * len(self.params)
        self.m = [np.zeros_like(w) for w in self.params] if isinstance(opt, spec.Adam) else None
        self.v = [np.zeros_like(w) for w in self.params] if isinstance(opt, spec.Adam) else None
        self.t = 0
        self.X = data.x.astype(dtype)
        y = data.y
        if isinstance(loss, spec.CrossEntropy) and loss.sparse:
            y = np.eye(model.output_units)[y]
        self.Y = y.astype(dtype)

    def W(self, node, name):
        return self.params[self.index[f"{node.name}/{name}"]]

    def forward(self, x):
        """The output and, per layer, what its backward pass needs."""
        saved = []
        for node, g, (f, _) in zip(self.nodes, self.geometry, self.acts):
            layer = node.layer
            if isinstance(layer, spec.Dense):
                saved.append(x)
                x = f(x @ self.W(node, "kernel") + self.W(node, "bias"))
            elif isinstance(layer, spec.Conv2D):
                win, padded = windows_of(x, layer, g)
                kh, kw, c, o = self.W(node, "kernel").shape
                cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c)  # im2col: a copy
                saved.append((cols, padded))
                z = cols @ self.W(node, "kernel").reshape(-1, o) + self.W(node, "bias")
                x = f(z.reshape(x.shape[0], g.out_h, g.out_w, o))
            elif isinstance(layer, spec.MaxPool2D):
                win, padded = windows_of(x, layer, g)
                flat = win.reshape(*win.shape[:4], -1)
                arg = flat.argmax(axis=-1)
                saved.append((arg, padded))
                x = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
            elif isinstance(layer, spec.AvgPool2D):
                win, padded = windows_of(x, layer, g)
                count = win.shape[-1] * win.shape[-2]
                if layer.count_padding:
                    divisor = count
                else:  # how many window positions lie inside the input
                    ones = windows_of(np.ones((1, *x.shape[1:3], 1)), layer, g)[0]
                    divisor = ones.sum(axis=(-1, -2))
                saved.append((divisor, padded, win.shape))
                x = win.sum(axis=(-1, -2)) / divisor
            else:  # flatten
                saved.append(x.shape)
                x = x.reshape(x.shape[0], -1)
            saved.append(x)
        return x, saved

    def step(self, batch):
        x, y = self.X[batch], self.Y[batch]
        p, saved = self.forward(x)
        if self.loss_kind is spec.MSE:
            loss = np.mean((p - y) ** 2)
            d = 2.0 * (p - y) / p.size
        elif self.loss_kind is spec.BCE:
            loss = np.mean((y - 1.0) * np.maximum(np.log1p(-p), -100.0) - y * np.maximum(np.log(p), -100.0))
            d = (p - y) / np.maximum((1.0 - p) * p, 1e-12) / p.size
        else:  # softmax cross-entropy on logits
            e = np.exp(p - p.max(axis=1, keepdims=True))
            s = e / e.sum(axis=1, keepdims=True)
            loss = -np.sum(y * np.log(s)) / len(p)
            d = (s - y) / len(p)
        grads = [None] * len(self.params)
        for k in reversed(range(len(self.nodes))):
            node, g, (_, df) = self.nodes[k], self.geometry[k], self.acts[k]
            layer, inp, out = node.layer, saved[2 * k], saved[2 * k + 1]
            if df is not None:
                d = d * df(out)
            first = k == 0
            if isinstance(layer, spec.Dense):
                grads[self.index[f"{node.name}/kernel"]] = inp.T @ d
                grads[self.index[f"{node.name}/bias"]] = d.sum(axis=0)
                d = None if first else d @ self.W(node, "kernel").T
            elif isinstance(layer, spec.Conv2D):
                cols, padded = inp
                kernel = self.W(node, "kernel")
                kh, kw, c, o = kernel.shape
                d2 = d.reshape(-1, o)
                grads[self.index[f"{node.name}/kernel"]] = (cols.T @ d2).reshape(kernel.shape)
                grads[self.index[f"{node.name}/bias"]] = d2.sum(axis=0)
                if not first:
                    dwin = (d2 @ kernel.reshape(-1, o).T).reshape(*d.shape[:3], kh, kw, c).transpose(0, 1, 2, 5, 3, 4)
                    d = col2im(dwin, padded, layer, g)
            elif isinstance(layer, spec.MaxPool2D):
                arg, padded = inp
                kh, kw = layer.pool_size
                dwin = np.zeros((*d.shape, kh * kw), dtype=d.dtype)
                np.put_along_axis(dwin, arg[..., None], d[..., None], axis=-1)
                d = col2im(dwin.reshape(*d.shape, kh, kw), padded, layer, g)
            elif isinstance(layer, spec.AvgPool2D):
                divisor, padded, shape = inp
                share = d / divisor
                d = col2im(np.broadcast_to(share[..., None, None], shape), padded, layer, g)
            else:  # flatten
                d = d.reshape(inp)
        self.update(grads)
        return loss

    def update(self, grads):
        opt = self.opt
        if isinstance(opt, spec.SGD):
            for k, (w, g) in enumerate(zip(self.params, grads)):
                if opt.momentum:
                    if self.buffers[k] is None:
                        self.buffers[k] = g.copy()
                    else:
                        self.buffers[k] = opt.momentum * self.buffers[k] + g
                    g = self.buffers[k]
                w -= opt.lr * g
            return
        self.t += 1
        c1, c2 = 1.0 - opt.beta1 ** self.t, math.sqrt(1.0 - opt.beta2 ** self.t)
        for w, g, m, v in zip(self.params, grads, self.m, self.v):
            m += (1.0 - opt.beta1) * (g - m)
            v *= opt.beta2
            v += (1.0 - opt.beta2) * g * g
            w -= (opt.lr / c1) * m / (np.sqrt(v) / c2 + opt.eps)

    def run(self, batches):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return np.array([self.step(b) for b in batches], dtype=np.float64)

    def parameters(self):
        return {name: w.copy() for name, w in zip(self.names, self.params)}

    def predict(self, x):
        with np.errstate(over="ignore"):
            return self.forward(x.astype(self.X.dtype))[0]

    def describe(self):
        return ("hand-written NumPy loop: list of layers, explicit chain rule, im2col / col2im convolutions, "
                "in-place updates")
