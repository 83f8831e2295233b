"""Measured facts of the installed TensorFlow/Keras, the ones the catalog of framework differences
(crossnn.differences) checks: defaults read from signatures and objects, and formulas run on fixed
inputs. Every value is plain Python (JSON-serialisable)."""

from __future__ import annotations

import os
import json
import math
import subprocess
import sys

import tensorflow as tf

_FRESH = r"""
import json, math, os, sys
import numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
import keras
out = {"tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled())}
tf.random.set_seed(0)
out["random_seed0"] = tf.random.uniform([3], dtype=tf.float64).numpy().tolist()
keras.utils.set_random_seed(0)
dense = keras.layers.Dense(50)
dense.build((None, 100))
out["dense_init"] = {"kernel_max_abs": float(abs(dense.kernel.numpy()).max()), "glorot_limit": math.sqrt(6 / 150),
                     "bias_all_zero": bool((dense.bias.numpy() == 0).all())}
conv = keras.layers.Conv2D(16, (3, 3))
conv.build((None, 10, 10, 8))
out["conv_init"] = {"kernel_max_abs": float(abs(conv.kernel.numpy()).max()),
                    "glorot_limit": math.sqrt(6 / (3 * 3 * 8 + 3 * 3 * 16)),
                    "glorot_limit_without_receptive_field": math.sqrt(6 / (8 + 16)),
                    "bias_all_zero": bool((conv.bias.numpy() == 0).all())}
embedding = keras.layers.Embedding(1000, 100, dtype="float64")
embedding.build((None, 5))
table = embedding.embeddings.numpy()
out["embedding_init"] = {"std": float(table.std()), "max_abs": float(abs(table).max())}
lstm = keras.layers.LSTM(16, dtype="float64")
lstm.build((None, 5, 8))
kernel, recurrent, _ = (w.numpy() for w in lstm.weights)
out["recurrent_init"] = {"kernel_max_abs": float(abs(kernel).max()), "glorot_limit": math.sqrt(6 / (8 + 64)),
                         "recurrent_orthogonality_error": float(abs(recurrent @ recurrent.T - np.eye(16)).max())}
print(json.dumps(out))
"""


def _fresh_facts() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"measuring TensorFlow in a fresh process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _default(function, name):
    import inspect

    return inspect.signature(function).parameters[name].default


def _cnn_facts(keras) -> dict[str, object]:
    """Keras' convolution and pooling, measured on inputs that show what they do."""
    import numpy as np

    out: dict[str, object] = {}
    conv = keras.layers.Conv2D(3, (4, 5))
    conv.build((None, 8, 8, 2))
    out["conv_kernel_shape"] = [int(d) for d in conv.kernel.shape]  # (kh, kw, in, out)

    # 'same' at stride 2 on 8 rows with a 3-row window: a kernel that reads each window's first row,
    # on an input whose row i holds i + 1 (0 would be a padded row), tells where the windows start
    rows = keras.layers.Conv2D(1, (3, 1), strides=(2, 1), padding="same", use_bias=False,
                               kernel_initializer=keras.initializers.Constant([[[[1.0]]], [[[0.0]]], [[[0.0]]]]))
    first = rows(tf.reshape(tf.range(1.0, 9.0), (1, 8, 1, 1)))
    out["same_stride2_window_starts"] = [int(round(v)) - 1 for v in first.numpy().ravel()]

    # AveragePooling2D(2, 2, 'same') on a 3x3 input: the windows of the last row and column reach into
    # the padding; each divisor is the window's sum over the input over the pooled value
    x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    pooled = keras.layers.AveragePooling2D(2, strides=2, padding="same")(tf.constant(x)).numpy()[0, :, :, 0]
    sums = np.array([[x[0, i:i + 2, j:j + 2, 0].sum() for j in (0, 2)] for i in (0, 2)])
    out["avg_pool_same_divisors"] = (sums / pooled).round(12).tolist()

    # Flatten on NHWC (1, 2, 3, 2) holding 0..11 in row-major order
    out["flatten_order"] = [int(v) for v in keras.layers.Flatten()(tf.reshape(tf.range(12.0), (1, 2, 3, 2)))
                            .numpy().ravel()]
    return out


def _sequence_facts(keras) -> dict[str, object]:
    """Keras' LayerNormalization epsilon, LSTM forget-gate bias and GRU form, measured on inputs that
    show them (float64 layers)."""
    import numpy as np

    out: dict[str, object] = {}
    # a row whose biased variance is 1e-4: y_0 = -0.01 / √(1e-4 + epsilon), so epsilon = (0.01 / y_0)² - 1e-4
    y0 = float(keras.layers.LayerNormalization(dtype="float64")(tf.constant([[0.0, 0.02]], tf.float64))[0, 0])
    out["layernorm_epsilon"] = float(f"{(0.01 / y0) ** 2 - 1e-4:.12g}")

    lstm = keras.layers.LSTM(4, dtype="float64")
    lstm.build((None, 3, 2))
    out["lstm_unit_forget_bias"] = {"default": bool(lstm.get_config()["unit_forget_bias"]),
                                    "bias_per_gate": lstm.weights[2].numpy().reshape(4, 4).mean(axis=1).tolist()}

    gru = keras.layers.GRU(3, dtype="float64")
    gru.build((None, 4, 2))
    out["gru"] = {"reset_after_default": bool(gru.reset_after), "bias_shape": [int(d) for d in gru.weights[2].shape],
                  "gate_order": _gru_gate_order(keras, np)}
    return out


def _gru_gate_order(keras, np) -> list[str]:
    """keras.layers.GRU(1) from h = 0.5 on x = 0 with zero weights: z = r = 1/2 and h~ = 0 give
    h' = 0.25; a saturated z keeps h (0.5), a saturated candidate gives 0.25 + 0.5 = 0.75, a saturated
    r changes nothing (it multiplies h @ R_h + b_h = 0). Each bias block named by its effect."""
    gru = keras.layers.GRU(1, dtype="float64")
    gru.build((None, 1, 1))
    names = []
    for block in range(3):
        bias = np.zeros((2, 3))
        bias[0, block] = 30.0
        gru.set_weights([np.zeros((1, 3)), np.zeros((1, 3)), bias])
        state = [tf.fill((1, 1), tf.constant(0.5, tf.float64))]
        h = float(gru(tf.zeros((1, 1, 1), tf.float64), initial_state=state)[0, 0])
        names.append({0.5: "z", 0.75: "h", 0.25: "r"}.get(round(h, 6), f"? ({h})"))
    return names


def facts() -> dict[str, object]:
    """Measured facts of the installed TensorFlow/Keras (keys: see the TensorflowBackend.facts doc)."""
    import keras

    fresh = _fresh_facts()
    out: dict[str, object] = {}

    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    out["dense_kernel_shape"] = [int(d) for d in dense.kernel.shape]
    out["dense_init"] = fresh["dense_init"]

    opt = keras.optimizers
    out["default_lr"] = {name: float(_default(getattr(opt, name), "learning_rate"))
                         for name in ("SGD", "Adam", "RMSprop", "Adagrad")}
    out["adam_eps"] = float(_default(opt.Adam, "epsilon"))
    out["rmsprop_defaults"] = {"rho": float(_default(opt.RMSprop, "rho")),
                               "epsilon": float(_default(opt.RMSprop, "epsilon"))}
    out["adagrad_defaults"] = {"initial_accumulator_value": float(_default(opt.Adagrad, "initial_accumulator_value")),
                               "epsilon": float(_default(opt.Adagrad, "epsilon"))}

    w = tf.Variable(1.0)
    adam = opt.Adam(learning_rate=0.1, weight_decay=0.1)
    adam.apply_gradients([(tf.constant(0.0), w)])
    out["adam_weight_decay_step"] = float(w.numpy())

    w = tf.Variable(1.0)
    sgd = opt.SGD(learning_rate=0.1, momentum=0.9)
    sgd.apply_gradients([(tf.constant(2.0), w)])
    first = {"w": float(w.numpy()), "velocity": float(sgd.momentums[0].numpy())}
    sgd.learning_rate = 0.01
    sgd.apply_gradients([(tf.constant(2.0), w)])
    out["momentum_first_step"] = {**first, "w2": float(w.numpy())}

    losses = keras.losses
    out["bce_p0_y1"] = float(losses.BinaryCrossentropy()(tf.constant([[1.0]]), tf.constant([[0.0]])))
    out["bce_logit_input"] = float(losses.BinaryCrossentropy()(tf.constant([[1.0]]),
                                                                keras.activations.sigmoid(tf.constant([[-50.0]]))))
    one_hot, z = tf.one_hot([0], 3), tf.constant([[2.0, 1.0, 0.1]])
    out["ce_default_from_logits"] = bool(losses.CategoricalCrossentropy().get_config()["from_logits"])
    out["ce_on_logits_as_probabilities"] = float(losses.CategoricalCrossentropy()(one_hot, z))
    out["ce_on_logits"] = float(losses.CategoricalCrossentropy(from_logits=True)(one_hot, z))
    y, p = tf.constant([[0.0, 0.0], [0.0, 0.0]]), tf.constant([[1.0, 2.0], [3.0, 4.0]])
    out["mse_sum"] = float(losses.MeanSquaredError(reduction="sum")(y, p))
    out["mse_mean"] = float(losses.MeanSquaredError()(y, p))
    out["mse_broadcast"] = {"value": float(losses.MeanSquaredError()(tf.constant([1.0, 2.0, 3.0]),
                                                                      tf.constant([[1.0], [2.0], [3.0]]))),
                            "correct": 0.0}

    out["leaky_relu_default"] = {"layer": float(keras.layers.LeakyReLU().negative_slope),
                                 "activation": float(_default(keras.activations.leaky_relu, "negative_slope"))}
    out["leaky_relu_float64"] = float(tf.nn.leaky_relu(tf.constant(-1.0, tf.float64), alpha=0.01))
    out["gelu_default"] = {"activations": bool(_default(keras.activations.gelu, "approximate")),
                           "ops": bool(_default(keras.ops.gelu, "approximate"))}
    exact = 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))
    out["gelu_float64_error"] = abs(float(tf.nn.gelu(tf.constant(1.0, tf.float64))) - exact)
    out["softplus_25"] = {"tf": float(tf.math.softplus(tf.constant(25.0, tf.float64))),
                          "exact": math.log1p(math.exp(25.0))}

    bn = keras.layers.BatchNormalization()
    bn(tf.constant([[1.0, 2.0], [3.0, 5.0], [6.0, 11.0]]), training=True)
    out["batchnorm"] = {"momentum": float(bn.momentum), "epsilon": float(bn.epsilon),
                        "moving_mean": [float(v) for v in bn.moving_mean.numpy()],
                        "moving_variance": [float(v) for v in bn.moving_variance.numpy()]}

    out.update(_cnn_facts(keras))
    out["conv_init"] = fresh["conv_init"]
    out.update(_sequence_facts(keras))
    out["embedding_init"] = fresh["embedding_init"]
    out["recurrent_init"] = fresh["recurrent_init"]

    out["tf32"] = fresh["tf32"]
    out["random_seed0"] = fresh["random_seed0"]
    out["clip_at_max_norm"] = [float(v) for v in tf.clip_by_global_norm([tf.constant([3.0, 4.0])], 5.0)[0][0].numpy()]
    return out
