"""The hand-written reference loop: an experiment trained the way TensorFlow/Keras tutorials write a
custom training loop ("Writing a training loop from scratch"), the yardstick for crossnn's overhead.

It shares no code with the lowering (ops.py, optimizers.py, step.py): the model is a keras.Sequential
of keras.layers (Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Reshape,
Dense, Activation, BatchNormalization, LayerNormalization, Embedding, SimpleRNN, LSTM, GRU), the
loss a keras.losses object, the optimizer keras.optimizers.SGD or the spec's Adam written as a Keras
optimizer (SpecAdam, after Keras' guide to custom optimizers), and the step

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

The optimizers compute the spec's formulas: keras.optimizers.SGD's momentum keeps a velocity
v ← μ v - lr g, w ← w + v, which is the spec's b ← μ b + g, w ← w - lr b (v = -lr b) at the constant
learning rate this loop supports, up to rounding; keras.optimizers.Adam adds epsilon to the
uncorrected √v, so Adam is SpecAdam, the paper's (and torch's) formula. Other small differences:
  * keras.losses.BinaryCrossentropy recovers the logits behind a sigmoid (and clips p to
    [1e-7, 1 - 1e-7] otherwise), where the spec clamps log p at log_min; CategoricalCrossentropy on
    probabilities does the same behind a softmax (and rescales p to sum to 1 otherwise);
  * keras.activations.softplus and gelu are TF's ops (see ops.py for how they differ).
In float64 Keras' float variables (the learning rate) are created in keras.config.floatx(), which is
set to float64 while the model and optimizer are built, as a float64 Keras program would set it.

The DLBench LSTM case (the lstm-r benchmark suite: embedding -> LSTM -> dense on token ids, softmax
cross-entropy, SGD) is keras.layers.Embedding -> keras.layers.LSTM -> keras.layers.Dense here, as
Keras' guides write it. keras.layers.LSTM and GRU compute the spec's formulas (gates i, f, c, o and
z, r, h; GRU's two reset_after forms), one x_t @ kernel per step inside Keras' RNN loop (a
tf.while_loop on the CPU), where the lowering takes x @ kernel for all steps in one product before its
unrolled loop: the same sums, rounded in another order. Keras' Embedding hands the optimizer the
rows' gradient as tf.IndexedSlices, which keras.optimizers.SGD applies sparsely (scatter_sub).

The fast mode of Keras' recurrent layers is cuDNN: on a GPU, with activation tanh, recurrent
activation sigmoid, use_bias, unroll=False (and reset_after=True for GRU), keras.layers.LSTM/GRU run
the whole sequence as one fused kernel (tf.raw_ops.CudnnRNNV3; keras/src/backend/tensorflow/rnn.py)
instead of the per-step loop. The model is the same; what changes is the arithmetic: cuDNN computes
the gates in its own blocking and order (its bias is Keras' bias plus a zero input bias, cuDNN's
two-bias form), and its float32 matrix products may use TF32 tensor-core math on Ampere and later
GPUs (TF's tensor_float_32 setting, which crossnn turns off for parity; TF32 keeps 10 bits of the
mantissa), so results move by rounding, or by TF32's much coarser rounding; on the CPU, or with any
other activation, Keras uses the loop. There is no GPU in crossnn's CI, so crossnn measures the CPU path only.

Covered: chains of conv2d, max/avg pooling (average pooling that counts padding only with 'valid'
padding: Keras' AveragePooling2D leaves padding out), global average pooling, flatten, reshape,
dense, activation, batch_norm (running_variance "biased", Keras' only one), layer_norm, embedding,
simple_rnn, lstm and gru layers; mse, mae, huber, bce, bce_logits, cross_entropy; sgd (momentum,
Nesterov) and adam at a constant learning rate, without weight decay or gradient clipping;
float32 and float64. Anything else raises UnsupportedFeature.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from crossnn import spec
from crossnn.backends import Trainer
from crossnn.data import Dataset
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT, Experiment

from crossnn_tensorflow import device as devices

tf = devices.import_tensorflow()


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


def _spec_adam():
    """Adam as Kingma & Ba (Algorithm 1) and torch.optim.Adam write it, as a Keras optimizer following
    Keras' guide to custom optimizers (build + update_step): m ← m + (1-β₁)(g - m),
    v ← β₂ v + ((1-β₂) g) g, w ← w - lr (m / (1-β₁ᵗ)) / (√v / √(1-β₂ᵗ) + ε). keras.optimizers.Adam adds
    ε to the uncorrected √v instead (in effect ε/√(1-β₂ᵗ) on √v̂)."""
    import keras

    class SpecAdam(keras.optimizers.Optimizer):
        def __init__(self, learning_rate, beta_1, beta_2, epsilon, name="spec_adam", **kwargs):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
            self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

        def build(self, variables):
            if self.built:
                return
            super().build(variables)
            self.m = [self.add_variable_from_reference(v, "m") for v in variables]
            self.v = [self.add_variable_from_reference(v, "v") for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            ops = keras.ops
            gradient = tf.convert_to_tensor(gradient)  # an Embedding's tf.IndexedSlices: dense moments need all rows
            lr = ops.cast(learning_rate, variable.dtype)
            t = ops.cast(self.iterations + 1, variable.dtype)
            index = self._get_variable_index(variable)
            m, v = self.m[index], self.v[index]
            self.assign(m, m + (1.0 - self.beta_1) * (gradient - m))
            self.assign(v, self.beta_2 * v + ((1.0 - self.beta_2) * gradient) * gradient)
            m_hat = m / (1.0 - ops.power(self.beta_1, t))
            self.assign_sub(variable, lr * (m_hat / (ops.sqrt(v) / ops.sqrt(1.0 - ops.power(self.beta_2, t))
                                                     + self.epsilon)))

    return SpecAdam


def _optimizer(s: spec.Optimizer):
    """keras.optimizers.SGD (its momentum is the spec's at a constant lr) or SpecAdam. The learning
    rate and SGD's momentum as np.float64: Keras casts a Python float through a float32 tensor
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
        return _spec_adam()(learning_rate=np.float64(s.lr), beta_1=s.beta1, beta_2=s.beta2, epsilon=s.eps)
    raise _unsupported(f"optimizer '{s.kind}'")


def _keras_layer(layer: spec.Layer, dtype: str):
    """The keras.layers layer a tutorial writes for a spec layer (weights set later)."""
    import keras

    zeros = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
    if isinstance(layer, spec.Dense):
        return keras.layers.Dense(layer.units, activation=_activation(layer.activation), use_bias=layer.use_bias,
                                  dtype=dtype, **zeros)
    if isinstance(layer, spec.Conv2D):
        if max(layer.strides) > 1 and max(layer.dilation) > 1:
            raise _unsupported("conv2d with strides > 1 and dilation > 1 (Keras' Conv2D refuses them)")
        return keras.layers.Conv2D(layer.filters, tuple(layer.kernel_size), strides=tuple(layer.strides),
                                   padding=layer.padding, dilation_rate=tuple(layer.dilation),
                                   activation=_activation(layer.activation), use_bias=layer.use_bias, dtype=dtype,
                                   **zeros)
    if isinstance(layer, spec.MaxPool2D):
        return keras.layers.MaxPooling2D(tuple(layer.pool_size), strides=tuple(layer.strides), padding=layer.padding,
                                         dtype=dtype)
    if isinstance(layer, spec.AvgPool2D):
        if layer.count_padding and layer.padding == "same":
            raise _unsupported("avg_pool2d counting 'same' padding (Keras' AveragePooling2D leaves it out)")
        return keras.layers.AveragePooling2D(tuple(layer.pool_size), strides=tuple(layer.strides),
                                             padding=layer.padding, dtype=dtype)
    if isinstance(layer, spec.GlobalAvgPool2D):
        return keras.layers.GlobalAveragePooling2D(dtype=dtype)
    if isinstance(layer, spec.Flatten):
        return keras.layers.Flatten(dtype=dtype)
    if isinstance(layer, spec.Reshape):
        return keras.layers.Reshape(tuple(layer.shape), dtype=dtype)
    if isinstance(layer, spec.ActivationLayer):
        return keras.layers.Activation(_activation(layer.activation), dtype=dtype)
    if isinstance(layer, spec.BatchNorm):
        if layer.running_variance != "biased":
            raise _unsupported("batch_norm with an unbiased running variance (Keras' BatchNormalization keeps the "
                               "biased one)")
        return keras.layers.BatchNormalization(axis=layer.axis, momentum=layer.momentum, epsilon=layer.epsilon,
                                               center=layer.center, scale=layer.scale, dtype=dtype)
    if isinstance(layer, spec.LayerNorm):
        return keras.layers.LayerNormalization(axis=layer.axis, epsilon=layer.epsilon, center=layer.center,
                                               scale=layer.scale, dtype=dtype)
    if isinstance(layer, spec.Embedding):
        return keras.layers.Embedding(layer.input_dim, layer.output_dim, embeddings_initializer="zeros", dtype=dtype)
    recurrent = {spec.SimpleRNN: keras.layers.SimpleRNN, spec.LSTM: keras.layers.LSTM, spec.GRU: keras.layers.GRU}
    if type(layer) in recurrent:
        options = {"recurrent_activation": _activation(layer.recurrent_activation)} \
            if hasattr(layer, "recurrent_activation") else {}
        if isinstance(layer, spec.GRU):
            options["reset_after"] = layer.reset_after
        return recurrent[type(layer)](layer.units, activation=_activation(layer.activation),
                                      return_sequences=layer.return_sequences, dtype=dtype,
                                      recurrent_initializer="zeros", **zeros, **options)
    raise _unsupported(f"layer type '{layer.kind}'")


def _chain(model: spec.Model) -> list:
    """The nodes, if they form a chain from the input to the output; else UnsupportedFeature."""
    previous = INPUT
    for node, layer in zip(model.nodes, model.layers):
        if node.layer is not layer or node.inputs != (previous,):
            raise _unsupported("a graph model (layer inputs other than the previous layer)")
        previous = layer.name
    return list(model.nodes)


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
        nodes = _chain(experiment.model)
        self.device = devices.resolve(device)
        self.dtype = dtype
        with tf.device(self.device), devices.floatx(dtype):
            #: the keras layers holding weights, with their canonical names in Keras' order (the
            #: parameters, then a BatchNormalization's moving statistics)
            self.weighted = []
            layers = [keras.Input(shape=experiment.model.input_shape, dtype=dtype)]
            for node in nodes:
                layers.append(_keras_layer(node.layer, dtype))
                if node.params or node.state:
                    self.weighted.append((layers[-1], [f"{node.name}/{p.name}" for p in (*node.params, *node.state)]))
            self.model = keras.Sequential(layers)
            for keras_layer, names in self.weighted:
                keras_layer.set_weights([np.asarray(params[name], dtype=dtype) for name in names])
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
        return {name: np.array(value, copy=True) for layer, names in self.weighted
                for name, value in zip(names, layer.get_weights())}

    def predict(self, x):
        with tf.device(self.device):
            return self.model(tf.constant(np.asarray(x, dtype=self.dtype)), training=False).numpy()

    def synchronize(self):
        devices.synchronize(self.device)

    def describe(self):
        return (f"Keras tutorial loop: keras.Sequential, keras.losses.{type(self.loss_fn).__name__}, "
                f"{type(self.optimizer).__name__} (a keras optimizer), @tf.function GradientTape train_step, "
                f"batches gathered {'in the graph' if self.feed == 'graph' else 'eagerly'} on {self.device} "
                f"(TensorFlow {tf.__version__})")
