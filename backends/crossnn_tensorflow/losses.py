"""Losses: loss(p, y) -> the scalar mean of crossnn.spec.losses, written with TF ops.

The regression losses and cross-entropy from logits are plain TF code whose tape gradient is the
spec's. The others carry a tf.custom_gradient with the spec's gradient: BCE (the spec's log clamp
and PyTorch's gradient floor; Keras clips p instead), BCE on logits (sigmoid(z) - y, exactly 1/2 - y
at z = 0) and cross-entropy on probabilities (a clamped log whose tape gradient would be 0 · (1/0) =
NaN at p = 0).

`n` below is the element count, or the sample count for the cross-entropies. 1/n is formed in
float64 and then cast, as the NumPy reference and PyTorch do, so float32 runs round it once.

The native flavour lowers two catalog entries with Keras' own loss objects instead:
  * "bce-clamp": keras.losses.BinaryCrossentropy() on the probabilities. Keras clips p to
    [1e-7, 1 - 1e-7] (its epsilon) where the spec clamps log p at log_min; and Keras recovers the
    logits instead when p carries them. Under this entry the model's sigmoid is
    keras.activations.sigmoid (crossnn_tensorflow.layers), which tags its output with them, so a
    sigmoid output is scored on its logits and the clip runs only on probabilities from elsewhere.
  * "cross-entropy-inputs": keras.losses.CategoricalCrossentropy() /
    SparseCategoricalCrossentropy() with their default from_logits=False, whatever the spec's
    from_logits says: logits are then taken for probabilities (rescaled to sum to 1 and clipped to
    [1e-7, 1 - 1e-7]).
Keras computes a loss in its `dtype` (keras.config.floatx() by default, float32): the loss objects
are given the run's dtype, as a float64 Keras program sets floatx to float64.
"""

from __future__ import annotations

import tensorflow as tf

from crossnn import spec
from crossnn.errors import UnsupportedFeature


def _inverse_count(count, dtype):
    return tf.cast(1.0 / tf.cast(count, tf.float64), dtype)


def _mse(s):
    """mean((p - y)²); the tape gives (1/n) · 2 (p - y)."""
    return lambda p, y: tf.reduce_mean(tf.square(p - y))


def _mae(s):
    """mean(|p - y|); the tape gives (1/n) · sign(p - y), sign(0) = 0."""
    return lambda p, y: tf.reduce_mean(tf.abs(p - y))


def _huber(s: spec.Huber):
    """mean(½ d² where |d| < delta, else delta (|d| - ½ delta)); the tape gives clip(d, ±delta) / n
    (both branches are finite, so the untaken one contributes exact zeros)."""
    delta = s.delta

    def huber(p, y):
        d = p - y
        ad = tf.abs(d)
        return tf.reduce_mean(tf.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta)))

    return huber


def _bce(s: spec.BCE):
    """-mean(y max(log p, log_min) + (1 - y) max(log1p(-p), log_min)); gradient
    (p - y) / max(p (1 - p), grad_floor) / n, PyTorch's binary_cross_entropy_backward."""
    log_min, grad_floor = s.log_min, s.grad_floor

    @tf.custom_gradient
    def bce(p, y):
        log_p = tf.maximum(tf.math.log(p), log_min)
        log_q = tf.maximum(tf.math.log1p(-p), log_min)
        value = tf.reduce_mean((y - 1.0) * log_q - y * log_p)

        def grad(upstream):
            dp = (p - y) / tf.maximum((1.0 - p) * p, grad_floor) * _inverse_count(tf.size(p), p.dtype)
            return upstream * dp, None

        return value, grad

    return bce


def _bce_logits(s):
    """tf.nn.sigmoid_cross_entropy_with_logits (max(z, 0) - z y + log1p(exp(-|z|))), averaged;
    gradient (sigmoid(z) - y) / n."""

    @tf.custom_gradient
    def bce_logits(z, y):
        value = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))

        def grad(upstream):
            dz = (1.0 / (1.0 + tf.exp(-z)) - y) * _inverse_count(tf.size(z), z.dtype)
            return upstream * dz, None

        return value, grad

    return bce_logits


def _cross_entropy(s: spec.CrossEntropy):
    if s.from_logits:
        if s.sparse:
            def sparse_xent(z, labels):
                """mean_n of log Σ exp z_n - z_n[label]; the tape gives (softmax(z) - onehot) / N."""
                return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z))

            return sparse_xent

        def xent(z, y):
            """mean_n of -Σ_k y log_softmax(z); the tape gives (softmax(z) - y) / N."""
            return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z))

        return xent

    log_min = s.log_min
    sparse = s.sparse

    @tf.custom_gradient
    def xent_probabilities(p, y):
        """-Σ y max(log p, log_min) / N; gradient -y / p / N where log p > log_min, else 0."""
        if sparse:
            y = tf.one_hot(y, tf.shape(p)[1], dtype=p.dtype)
        log_p = tf.math.log(p)
        active = log_p > log_min
        value = -tf.reduce_sum(y * tf.where(active, log_p, log_min)) / tf.cast(tf.shape(p)[0], p.dtype)

        def grad(upstream):
            dp = tf.where(active, -y / tf.where(active, p, 1.0), 0.0) * _inverse_count(tf.shape(p)[0], p.dtype)
            return upstream * dp, None

        return value, grad

    return xent_probabilities


LOSSES = {spec.MSE: _mse, spec.MAE: _mae, spec.Huber: _huber, spec.BCE: _bce, spec.BCELogits: _bce_logits,
          spec.CrossEntropy: _cross_entropy}


def _keras_loss(keras_loss):
    """Our (p, y) argument order for a Keras loss object, which takes (y_true, y_pred)."""
    return lambda p, y: keras_loss(y, p)


def _native(s: spec.Loss, native: frozenset[str], dtype: str):
    """Keras' loss object for `s` where `native` names its catalog entry, else None."""
    import keras

    if "bce-clamp" in native and isinstance(s, spec.BCE):
        return _keras_loss(keras.losses.BinaryCrossentropy(dtype=dtype))
    if "cross-entropy-inputs" in native and isinstance(s, spec.CrossEntropy):
        cls = keras.losses.SparseCategoricalCrossentropy if s.sparse else keras.losses.CategoricalCrossentropy
        return _keras_loss(cls(dtype=dtype))  # from_logits=False, Keras' default
    return None


def loss(s: spec.Loss, native: frozenset[str] = frozenset(), dtype: str = "float32"):
    """loss(p, y) -> scalar for the loss spec `s`; Keras' loss object where `native` names its entry
    (computed in `dtype`)."""
    lowered = _native(s, native, dtype) if native else None
    if lowered is not None:
        return lowered
    if type(s) not in LOSSES:
        raise UnsupportedFeature("tensorflow", f"loss '{s.kind}'")
    return LOSSES[type(s)](s)
