"""The training loop as the JAX and optax documentation write it, by hand: the yardstick for crossnn's
overhead and an independent oracle in tests.

It shares no code with the lowering (ops.py, optimizers.py, step.py, device.py): the parameters are a
list of (w, b) tuples read straight off the spec's chain of layers, the forward pass a loop over it
with jax.numpy and jax.lax (convolutions and pools with lax's own "SAME"/"VALID" padding strings,
not crossnn's window geometry), the loss written out, the optimizer optax.sgd or optax.adam, and

    @jax.jit
    def update(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for rows in batches:
        params, opt_state, loss = update(params, opt_state, X[rows], Y[rows])   # NumPy batches, as the
        losses.append(loss)                                                     # docs' data loaders give

with the losses kept on the device and copied to the host once per run. float64 is switched on
around the loop's calls with jax.enable_x64 (the docs set jax_enable_x64 globally; a yardstick in
crossnn's process must not), and matrix products run at "highest" precision, as crossnn's parity
runs do, so the two compare like for like on a GPU.

Covered: a chain of dense, conv2d, max_pool2d, avg_pool2d and flatten layers with linear, relu,
sigmoid, tanh or softmax activations; MSE, BCE with the log clamp at -100 (PyTorch's), or softmax
cross-entropy on logits (class indices or one-hot); optax.sgd (momentum, Nesterov) and optax.adam,
without decay, clipping or schedules. Anything else raises UnsupportedFeature.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from crossnn import spec
from crossnn.backends import Trainer
from crossnn.errors import UnsupportedFeature

ACTIVATIONS = {spec.Linear: lambda z: z, spec.ReLU: jax.nn.relu, spec.Sigmoid: jax.nn.sigmoid, spec.Tanh: jnp.tanh,
               spec.Softmax: jax.nn.softmax}
LAYERS = (spec.Dense, spec.Conv2D, spec.MaxPool2D, spec.AvgPool2D, spec.Flatten)


def _unsupported(feature: str) -> UnsupportedFeature:
    return UnsupportedFeature("jax", f"{feature} in the hand-written tutorial loop")


def _check(experiment) -> None:
    model, loss, opt = experiment.model, experiment.loss, experiment.optimizer
    previous = spec.INPUT
    for node in model.nodes:
        if node.inputs != (previous,) or not isinstance(node.layer, LAYERS):
            raise _unsupported(f"layer '{node.name}' ({node.layer.kind}; chains of dense/conv/pool/flatten only)")
        act = getattr(node.layer, "activation", spec.Linear())
        if type(act) not in ACTIVATIONS or not getattr(node.layer, "use_bias", True):
            raise _unsupported(f"layer '{node.name}' (activation {act.kind}, or no bias)")
        previous = node.name
    if not (isinstance(loss, spec.MSE) or (isinstance(loss, spec.BCE) and loss.log_min == -100.0)
            or (isinstance(loss, spec.CrossEntropy) and loss.from_logits)):
        raise _unsupported(f"loss '{loss.kind}'")
    if (type(opt) not in (spec.SGD, spec.Adam) or opt.weight_decay or opt.clip_norm is not None
            or opt.schedule is not None):
        raise _unsupported("optimizers other than SGD and Adam without decay, clipping or schedules")


def _device(name: str):
    kind, _, index = name.partition(":")
    if kind == "cpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[int(index or 0)]
    except (RuntimeError, IndexError, ValueError):
        raise _unsupported(f"device '{name}'") from None


class TutorialTrainer(Trainer):
    def __init__(self, experiment, params, data, *, dtype, device):
        _check(experiment)
        self.dtype, self.device = dtype, _device(device)
        self.layers = [node.layer for node in experiment.model.nodes]
        self.names = [[f"{layer.name}/kernel", f"{layer.name}/bias"] if isinstance(layer, (spec.Dense, spec.Conv2D))
                      else [] for layer in self.layers]
        loss, opt = experiment.loss, experiment.optimizer
        y = data.y
        self.labels = isinstance(loss, spec.CrossEntropy) and loss.sparse
        self.X = data.x.astype(dtype)
        self.Y = y.reshape(-1).astype(np.int32) if self.labels else y.astype(dtype)
        if isinstance(opt, spec.Adam):
            self.optimizer = optax.adam(opt.lr, b1=opt.beta1, b2=opt.beta2, eps=opt.eps)
        else:
            self.optimizer = optax.sgd(opt.lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
        loss_kind = type(loss)
        layers = self.layers

        def predict(params, x):
            for layer, p in zip(layers, params):
                if isinstance(layer, spec.Dense):
                    w, b = p
                    x = ACTIVATIONS[type(layer.activation)](x @ w + b)
                elif isinstance(layer, spec.Conv2D):
                    w, b = p
                    x = lax.conv_general_dilated(x, w, layer.strides, layer.padding.upper(),
                                                 rhs_dilation=layer.dilation,
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
                    x = ACTIVATIONS[type(layer.activation)](x + b)
                elif isinstance(layer, spec.MaxPool2D):
                    x = lax.reduce_window(x, -jnp.inf, lax.max, (1, *layer.pool_size, 1), (1, *layer.strides, 1),
                                          layer.padding.upper())
                elif isinstance(layer, spec.AvgPool2D):
                    window, strides = (1, *layer.pool_size, 1), (1, *layer.strides, 1)
                    total = lax.reduce_window(x, 0.0, lax.add, window, strides, layer.padding.upper())
                    if layer.count_padding:
                        x = total / (layer.pool_size[0] * layer.pool_size[1])
                    else:  # as flax.linen.avg_pool(count_include_pad=False)
                        ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
                        x = total / lax.reduce_window(ones, 0.0, lax.add, window, strides, layer.padding.upper())
                else:  # flatten
                    x = x.reshape((x.shape[0], -1))
            return x

        def loss_fn(params, x, y):
            p = predict(params, x)
            if loss_kind is spec.MSE:
                return jnp.mean((p - y) ** 2)
            if loss_kind is spec.BCE:
                return -jnp.mean(y * jnp.maximum(jnp.log(p), -100.0) + (1 - y) * jnp.maximum(jnp.log1p(-p), -100.0))
            if self.labels:
                return optax.softmax_cross_entropy_with_integer_labels(p, y).mean()
            return optax.softmax_cross_entropy(p, y).mean()

        optimizer = self.optimizer

        @jax.jit
        def update(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.update, self.predict_fn = update, jax.jit(predict)
        with self.scope():
            self.params = [tuple(jax.device_put(np.asarray(params[n], dtype), self.device) for n in names)
                           for names in self.names]
            self.opt_state = optimizer.init(self.params)

    def scope(self):
        stack = contextlib.ExitStack()
        stack.enter_context(jax.enable_x64(self.dtype == "float64"))
        stack.enter_context(jax.default_matmul_precision("highest"))
        stack.enter_context(jax.default_device(self.device))
        return stack

    def run(self, batches):
        with self.scope():
            losses = []
            for rows in batches:
                self.params, self.opt_state, loss = self.update(self.params, self.opt_state, self.X[rows],
                                                                self.Y[rows])
                losses.append(loss)
            return np.asarray(jnp.stack(losses), dtype=np.float64)

    def step(self, batch):
        return float(self.run([batch])[0])

    def parameters(self):
        with self.scope():
            return {name: np.array(value) for names, p in zip(self.names, self.params) for name, value in zip(names, p)}

    def predict(self, x):
        with self.scope():
            return np.asarray(self.predict_fn(self.params, x.astype(self.dtype)))

    def synchronize(self):
        jax.block_until_ready(self.params)

    def describe(self):
        return ("hand-written JAX loop: params as a list of (w, b), jax.value_and_grad, optax.sgd/adam, a jitted "
                "update per batch fed NumPy batches")
