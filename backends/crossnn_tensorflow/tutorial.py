"""The hand-written reference loop: an experiment trained the way TensorFlow/Keras tutorials write a
custom training loop ("Writing a training loop from scratch"), the yardstick for crossnn's overhead.

It shares no code with the lowering (layers.py, losses.py, optimizers.py, step.py): the model is a
keras.Sequential of keras.layers.Dense(units, activation=...) (and keras.layers.Activation), the
loss a keras.losses object, the optimizer keras.optimizers.SGD / Adam, and the step

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss_value = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss_value, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
        return loss_value

called once per batch on rows gathered from the data set kept on the device. The gather runs in the
graph too, as crossnn's step does it:

    @tf.function
    def train_batch(index):
        return train_step(tf.gather(x_all, index), tf.gather(y_all, index))

and the losses stay on the device until the span ends, as crossnn's do, so both loops do the same
work. (feed="eager" gathers outside the tf.function instead, the way a tf.data loop hands batches
to train_step: that costs two eager ops, ~0.1 ms a step here, which is feeding, not training.)

Keras' formulas differ slightly from the spec's, so its parameters are close to crossnn's but not
equal (measured on the circle net after its 12,000 steps: see tests/test_tensorflow_backend.py):
  * keras.optimizers.Adam adds epsilon to the uncorrected √v (in effect ε/√(1-β₂ᵗ) on √v̂), the spec
    to √v̂;
  * keras.optimizers.SGD's momentum keeps a velocity v ← μ v - lr g, the spec b ← μ b + g,
    w ← w - lr b: equal at a constant lr up to rounding;
  * keras.losses.BinaryCrossentropy recovers the logits behind a sigmoid (and clips p to
    [1e-7, 1 - 1e-7] otherwise), where the spec clamps log p at log_min; CategoricalCrossentropy on
    probabilities does the same behind a softmax (and rescales p to sum to 1 otherwise);
  * keras.activations.softplus and gelu are TF's ops (see layers.py for how they differ).
In float64 Keras' float variables (the learning rate) are created in keras.config.floatx(), which is
set to float64 while the model and optimizer are built, as a float64 Keras program would set it.

Covered: chains of Dense and Activation layers; mse, mae, huber, bce, bce_logits, cross_entropy;
sgd and adam at a constant learning rate, without weight decay or gradient clipping. Anything else
raises UnsupportedFeature.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import tensorflow as tf

from crossnn import spec
from crossnn.backends import Trainer
from crossnn.data import Dataset
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT, Experiment

from crossnn_tensorflow import device as devices


def _unsupported(feature: str) -> UnsupportedFeature:
    return UnsupportedFeature("tensorflow", f"{feature} in the hand-written Keras loop")


def _activation(s: spec.Activation):
    import keras

    names = {spec.Linear: "linear", spec.ReLU: "relu", spec.Sigmoid: "sigmoid", spec.Tanh: "tanh",
             spec.Softmax: "softmax", spec.Softplus: "softplus"}
    if type(s) in names:
        return names[type(s)]
    if isinstance(s, spec.GELU):
        return functools.partial(keras.activations.gelu, approximate=s.approximate == "tanh")
    if isinstance(s, spec.LeakyReLU):
        return functools.partial(keras.activations.leaky_relu, negative_slope=s.negative_slope)
    raise _unsupported(f"activation '{s.kind}'")


def _loss(s: spec.Loss):
    import keras

    if isinstance(s, spec.MSE):
        return keras.losses.MeanSquaredError()
    if isinstance(s, spec.MAE):
        return keras.losses.MeanAbsoluteError()
    if isinstance(s, spec.Huber):
        return keras.losses.Huber(delta=s.delta)
    if isinstance(s, spec.BCE):
        return keras.losses.BinaryCrossentropy(from_logits=False)
    if isinstance(s, spec.BCELogits):
        return keras.losses.BinaryCrossentropy(from_logits=True)
    if isinstance(s, spec.CrossEntropy):
        if s.sparse:
            return keras.losses.SparseCategoricalCrossentropy(from_logits=s.from_logits)
        return keras.losses.CategoricalCrossentropy(from_logits=s.from_logits)
    raise _unsupported(f"loss '{s.kind}'")


def _optimizer(s: spec.Optimizer):
    """Hyperparameters as np.float64: Keras casts a Python float through a float32 tensor
    (ops.cast(0.8, float64) = 0.800000011920929), a float64 one exactly."""
    import keras

    if getattr(s, "weight_decay", 0.0):
        raise _unsupported("weight decay")
    if getattr(s, "clip_norm", None) is not None:
        raise _unsupported("gradient clipping (clip_norm)")
    if getattr(s, "schedule", None) is not None:
        raise _unsupported("a learning-rate schedule")
    if isinstance(s, spec.SGD):
        return keras.optimizers.SGD(learning_rate=np.float64(s.lr), momentum=np.float64(s.momentum),
                                    nesterov=s.nesterov)
    if isinstance(s, spec.Adam):
        return keras.optimizers.Adam(learning_rate=np.float64(s.lr), beta_1=np.float64(s.beta1),
                                     beta_2=np.float64(s.beta2), epsilon=np.float64(s.eps))
    raise _unsupported(f"optimizer '{s.kind}'")


def _chain(model: spec.Model) -> list[spec.Layer]:
    """The layers, if they form a chain from the input to the output; else UnsupportedFeature."""
    previous = INPUT
    for node, layer in zip(model.nodes, model.layers):
        if node.layer is not layer or node.inputs != (previous,):
            raise _unsupported("a graph model (layer inputs other than the previous layer)")
        if not isinstance(layer, (spec.Dense, spec.ActivationLayer)):
            raise _unsupported(f"layer type '{layer.kind}'")
        previous = layer.name
    return list(model.layers)


class KerasTutorialTrainer(Trainer):
    """keras.Sequential + keras.losses + keras.optimizers, a @tf.function GradientTape train_step."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *,
                 dtype: str, device: str, feed: str = "graph"):
        import keras

        if feed not in ("graph", "eager"):
            raise ValueError(f"feed must be 'graph' or 'eager', got {feed!r}")
        self.feed = feed

        if dtype not in ("float32", "float64"):
            raise _unsupported(f"dtype '{dtype}'")
        chain = _chain(experiment.model)
        self.device = devices.resolve(device)
        self.dtype = dtype
        with tf.device(self.device), devices.floatx(dtype):
            self.dense = {}
            layers = [keras.Input(shape=(experiment.model.inputs,), dtype=dtype)]
            for layer in chain:
                if isinstance(layer, spec.Dense):
                    keras_layer = keras.layers.Dense(layer.units, activation=_activation(layer.activation),
                                                     use_bias=layer.use_bias, kernel_initializer="zeros",
                                                     bias_initializer="zeros", dtype=dtype)
                    self.dense[layer.name] = keras_layer
                else:
                    keras_layer = keras.layers.Activation(_activation(layer.activation), dtype=dtype)
                layers.append(keras_layer)
            self.model = keras.Sequential(layers)
            for name, keras_layer in self.dense.items():
                weights = [params[f"{name}/kernel"]] + ([params[f"{name}/bias"]] if keras_layer.use_bias else [])
                keras_layer.set_weights([np.asarray(w, dtype=dtype) for w in weights])
            self.loss_fn = _loss(experiment.loss)
            self.optimizer = _optimizer(experiment.optimizer)
            self.optimizer.build(self.model.trainable_weights)
            # the data set, once, on the device
            self.x = tf.identity(tf.constant(data.x.astype(dtype)))
            y = data.y if experiment.loss.sparse_targets else data.y.astype(dtype)
            self.y = tf.identity(tf.constant(y))

        model, loss_fn, optimizer = self.model, self.loss_fn, self.optimizer

        @tf.function
        def train_step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss_value = loss_fn(y, logits)
            grads = tape.gradient(loss_value, model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
            return loss_value

        x_all, y_all = self.x, self.y

        @tf.function
        def train_batch(index):
            return train_step(tf.gather(x_all, index), tf.gather(y_all, index))

        self.train_step = train_step
        self.train_batch = train_batch

    def step(self, batch):
        return float(self.run([batch])[0])

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        if not batches:
            return np.zeros(0)
        with tf.device(self.device):
            losses = []
            for batch in batches:
                index = tf.constant(batch)
                if self.feed == "graph":
                    losses.append(self.train_batch(index))
                else:
                    losses.append(self.train_step(tf.gather(self.x, index), tf.gather(self.y, index)))
            return tf.stack(losses).numpy().astype(np.float64)

    def parameters(self):
        out = {}
        for name, layer in self.dense.items():
            out[f"{name}/kernel"] = np.array(layer.kernel.numpy(), copy=True)
            if layer.use_bias:
                out[f"{name}/bias"] = np.array(layer.bias.numpy(), copy=True)
        return out

    def predict(self, x):
        with tf.device(self.device):
            return self.model(tf.constant(np.asarray(x, dtype=self.dtype)), training=False).numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        return (f"Keras tutorial loop: keras.Sequential, keras.losses.{type(self.loss_fn).__name__}, "
                f"keras.optimizers.{type(self.optimizer).__name__}, @tf.function GradientTape train_step, "
                f"batches gathered {'in the graph' if self.feed == 'graph' else 'eagerly'} on {self.device} "
                f"(TensorFlow {tf.__version__})")
