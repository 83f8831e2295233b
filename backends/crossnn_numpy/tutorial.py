"""The hand-written NumPy training loop, written the way a NumPy tutorial writes it: weight and bias
arrays in a list, a forward pass that keeps its activations, the chain rule by hand, and the
optimizer update in place. It shares no code with crossnn's lowering; benchmarks time crossnn
against it.

It covers what benchmark models use: a chain of dense layers with linear, sigmoid, tanh or relu
activations; MSE, BCE (log clamp -100) or softmax cross-entropy on logits; SGD (momentum) and Adam.
"""

from __future__ import annotations

import math

import numpy as np

from crossnn import spec
from crossnn.backends import Trainer
from crossnn.errors import UnsupportedFeature

ACTIVATIONS = {
    # name: (f(z), f'(z) expressed through a = f(z))
    spec.Linear: (lambda z: z, None),
    spec.Sigmoid: (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda a: (1.0 - a) * a),
    spec.Tanh: (np.tanh, lambda a: 1.0 - a * a),
    spec.ReLU: (lambda z: np.maximum(z, 0.0), lambda a: a > 0),
}


class TutorialTrainer(Trainer):
    def __init__(self, experiment, params, data, dtype):
        model, loss, opt = experiment.model, experiment.loss, experiment.optimizer
        chain = [node.layer for node in model.nodes]
        if any(not isinstance(layer, spec.Dense) for layer in chain) or list(model.layers) != chain or any(
                node.inputs != ((model.nodes[i - 1].name,) if i else (spec.INPUT,))
                for i, node in enumerate(model.nodes)):
            raise UnsupportedFeature("numpy", "models other than a chain of dense layers")
        for layer in chain:
            if type(layer.activation) not in ACTIVATIONS or not layer.use_bias:
                raise UnsupportedFeature("numpy", f"layer {layer.name} (activation {layer.activation.kind}, "
                                                  f"use_bias {layer.use_bias})")
        self.loss_kind = type(loss)
        if not (isinstance(loss, (spec.MSE, spec.BCE)) or (isinstance(loss, spec.CrossEntropy) and loss.from_logits)):
            raise UnsupportedFeature("numpy", f"loss {loss.kind}")
        if isinstance(loss, spec.BCE) and loss.log_min != -100.0:
            raise UnsupportedFeature("numpy", "a BCE clamp other than -100")
        if (isinstance(opt, spec.SGD) and (opt.nesterov or opt.weight_decay)
                or isinstance(opt, spec.Adam) and opt.weight_decay):
            raise UnsupportedFeature("numpy", "nesterov or weight decay")
        self.layers = chain
        self.acts = [ACTIVATIONS[type(layer.activation)] for layer in chain]
        self.W = [np.array(params[f"{layer.name}/kernel"], dtype=dtype) for layer in chain]
        self.b = [np.array(params[f"{layer.name}/bias"], dtype=dtype) for layer in chain]
        self.opt = opt
        self.state = [None] * (2 * len(chain))
        self.m = [np.zeros_like(w) for w in self.W + self.b] if isinstance(opt, spec.Adam) else None
        self.v = [np.zeros_like(w) for w in self.W + self.b] if isinstance(opt, spec.Adam) else None
        self.t = 0
        self.X = data.x.astype(dtype)
        y = data.y
        if isinstance(loss, spec.CrossEntropy) and loss.sparse:
            y = np.eye(model.output_size)[y]
        self.Y = y.astype(dtype)

    def forward(self, x):
        outs = [x]
        for W, b, (f, _) in zip(self.W, self.b, self.acts):
            outs.append(f(outs[-1] @ W + b))
        return outs

    def step(self, batch):
        x, y = self.X[batch], self.Y[batch]
        outs = self.forward(x)
        p = outs[-1]
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
        grads_W, grads_b = [], []
        for i in reversed(range(len(self.W))):
            df = self.acts[i][1]
            if df is not None:
                d = d * df(outs[i + 1])
            grads_W.insert(0, outs[i].T @ d)
            grads_b.insert(0, d.sum(axis=0))
            if i:
                d = d @ self.W[i].T
        self.update(self.W + self.b, grads_W + grads_b)
        return loss

    def update(self, params, grads):
        opt = self.opt
        if isinstance(opt, spec.SGD):
            for k, (w, g) in enumerate(zip(params, grads)):
                if opt.momentum:
                    if self.state[k] is None:
                        self.state[k] = g.copy()
                    else:
                        self.state[k] = opt.momentum * self.state[k] + g
                    g = self.state[k]
                w -= opt.lr * g
            return
        self.t += 1
        c1, c2 = 1.0 - opt.beta1 ** self.t, math.sqrt(1.0 - opt.beta2 ** self.t)
        for w, g, m, v in zip(params, grads, self.m, self.v):
            m += (1.0 - opt.beta1) * (g - m)
            v *= opt.beta2
            v += (1.0 - opt.beta2) * g * g
            w -= (opt.lr / c1) * m / (np.sqrt(v) / c2 + opt.eps)

    def run(self, batches):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return np.array([self.step(b) for b in batches], dtype=np.float64)

    def parameters(self):
        out = {}
        for layer, W, b in zip(self.layers, self.W, self.b):
            out[f"{layer.name}/kernel"], out[f"{layer.name}/bias"] = W.copy(), b.copy()
        return out

    def predict(self, x):
        with np.errstate(over="ignore"):
            return self.forward(x.astype(self.X.dtype))[-1]

    def describe(self):
        return "hand-written NumPy loop: list of weights, explicit chain rule, in-place updates"
