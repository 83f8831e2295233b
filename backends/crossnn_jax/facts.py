"""Measured facts of the installed jax and optax for the catalog of framework differences
(crossnn.differences), and the catalog's JAX side.

facts() runs the frameworks on fixed inputs and reads defaults from signatures; every value is plain
Python (JSON-serialisable). Nothing global changes: float64 measurements run inside jax.enable_x64,
and the defaults a fresh process starts with (x64 off) are read in one (X64_PROBE). jax and optax are
imported by the functions that measure, so reading CATALOG_SIDES imports neither.

CATALOG_SIDES is what JAX (with optax, and Flax where JAX itself has no layers) does for each catalog
entry, one line per entry id, in the catalog's wording; entries marked new are proposed additions.
CATALOG_DEFAULTS is the "jax" preset (`defaults = "jax"`): the defaults of jax.nn and optax, and
Flax's initializers (jax.nn.initializers.lecun_normal, zeros), as crossnn.spec.presets Defaults by
catalog entry, in the spec's convention; only values the installed jax and optax can confirm. Both are plain data that
import no jax, in the shape of Backend.catalog_sides and Backend.catalog_defaults. JaxBackend.catalog_sides is
CATALOG_SIDES; CATALOG_DEFAULTS is not enabled as JaxBackend.catalog_defaults yet: it leaves Flax's layer
defaults out (Flax is not a dependency), so `defaults = "jax"` would be a partial preset, and every "missing"
message would list it. tests/test_jax_backend.py enables it in a test and checks it against optax and jax.nn.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys

from crossnn import spec as S
from crossnn.spec.presets import Condition, Default

#: run in a fresh interpreter: jax's dtype defaults before anything switches x64 on
X64_PROBE = """
import json, warnings
import numpy as np
import jax, jax.numpy as jnp
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    given = jnp.asarray(np.array([1.0], dtype=np.float64))
print(json.dumps({"enable_x64": bool(jax.config.jax_enable_x64), "default_float": str(jnp.array(1.0).dtype),
                  "float64_input_becomes": str(given.dtype), "float64_input_warned": bool(caught),
                  "zeros": str(jnp.zeros(1).dtype)}))
"""

CATALOG_SIDES = {
    "weight-layout": "no layer objects in JAX itself: parameters are arrays in a pytree; flax.linen.Dense keeps its "
                     "kernel (in, out) and computes x @ kernel + bias, as Keras; lax.conv_general_dilated takes any "
                     "layout through dimension_numbers (its default is NCHW / OIHW; Flax uses NHWC / HWIO)",
    "default-init": "flax.linen.Dense and Conv: kernel lecun_normal (truncated normal, variance 1/fan_in), bias zeros; "
                    "drawn from an explicit jax.random key",
    "momentum-sgd": "optax.sgd(momentum): optax.trace b ← g + μ·b, w ← w − lr·b (PyTorch's rule: lr outside the "
                    "buffer)",
    "adam-epsilon": "optax.adam: w ← w − lr·m̂/(√(v̂ + eps_root) + eps), eps 1e-8 on √v̂ after the bias correction "
                    "(PyTorch's placement), eps_root 0",
    "weight-decay": "optax.adamw: decoupled, w ← w − lr·(u + λ·w), weight_decay 1e-4 by default; L2 is "
                    "optax.add_decayed_weights placed before the rule",
    "rmsprop": "optax.rmsprop: decay 0.9, eps 1e-8 inside the square root (eps_in_sqrt=True: g/√(v + eps)); momentum "
               "is optax.trace after the scaling, lr outside the buffer",
    "adagrad": "optax.adagrad: initial_accumulator_value 0.1, eps 1e-7 inside the square root (g/√(s + eps))",
    "bce-clamp": "optax.losses.sigmoid_binary_cross_entropy takes logits only (log_sigmoid, no clamp); there is no "
                 "BCE on probabilities to clamp",
    "cross-entropy-inputs": "optax.losses.softmax_cross_entropy(logits, labels) and _with_integer_labels take logits, "
                            "as PyTorch",
    "loss-reduction": "optax losses return one value per example (no reduction: the caller takes the mean); "
                      "optax.l2_loss is ½(p − y)²",
    "target-broadcasting": "jax.numpy broadcasts (N, 1) − (N,) to (N, N) silently, with no warning",
    "default-learning-rates": "optax's optimizers require learning_rate (no default)",
    "leaky-relu-slope": "jax.nn.leaky_relu: negative_slope 0.01; where(x >= 0, ...), so its gradient at 0 is 1",
    "gelu-approximation": "jax.nn.gelu: approximate=True (the tanh form) by default",
    "softplus-threshold": "jax.nn.softplus = logaddexp(x, 0): no threshold, the exact formula",
    "batchnorm": "flax.linen.BatchNorm: momentum 0.99 (Keras' convention: the old average's weight), epsilon 1e-5, "
                 "biased variance (use_fast_variance: E[x²] − E[x]²)",
    "tf32": "jax_default_matmul_precision unset ('default'): float32 matmuls and convolutions on NVIDIA GPUs may run "
            "in TF32; jax.default_matmul_precision('highest') (or precision=lax.Precision.HIGHEST) for full float32",
    "random-streams": "jax.random: explicit keys (jax.random.key(seed), split for each use); the same key gives the "
                      "same numbers and there is no global seed",
    "clip-norm": "optax.clip_by_global_norm: g unchanged while ‖g‖ < max_norm, else g·max_norm/‖g‖; no 1e-6 (as TF)",
    "same-padding": "lax 'SAME' (conv_general_dilated, reduce_window): TensorFlow's rule at any stride, the extra "
                    "row/column after",
    "torch-same-stride": "lax's 'SAME' pads at any stride, as TensorFlow; explicit (before, after) pairs take any "
                         "padding",
    "flatten-order": "no flatten layer in JAX: x.reshape(n, -1) of NHWC arrays (Flax's layout) is channel-fastest, "
                     "as Keras",
    "avg-pool-padding": "flax.linen.avg_pool: count_include_pad=True by default (divides by the window size, as "
                        "PyTorch); lax.reduce_window gives the sums only",
    "conv-kernel-layout": "lax.conv_general_dilated reads the layout from dimension_numbers (default NCHW / OIHW, as "
                          "PyTorch); flax.linen.Conv keeps (kh, kw, in, out) on NHWC inputs, as Keras",
    "layernorm-epsilon": "flax.linen.LayerNorm: epsilon 1e-6, under the square root of the biased variance",
    "embedding-init": "flax.linen.Embed: N(0, 1/features) (variance_scaling(1, 'fan_in', 'normal', out_axis=0))",
    "recurrent-init": "flax.linen.LSTMCell / GRUCell: input kernels lecun_normal, recurrent kernels orthogonal, "
                      "biases zeros (one Dense per gate)",
    "lstm-forget-bias": "flax.linen.LSTMCell: every bias starts at 0 (no forget-gate offset)",
    "gru-gates": "flax.linen.GRUCell: one Dense per gate (r, z, n), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)): "
                 "PyTorch's reset-after form",
    # proposed new entries
    "float32-bias-correction": "(new) optax.scale_by_adam in float32 takes 1 − βᵗ from β rounded to float32: "
                               "1 − 0.999 is 1.3e-5 off at t = 1 (torch and NumPy take βᵗ in float64)",
    "float64-default": "(new) jax_enable_x64 is off by default: jnp.array(1.0) is float32 and a float64 NumPy "
                       "array becomes float32 silently; jax.enable_x64() switches float64 on (crossnn scopes it to "
                       "each JAX run)",
}


_IN_THE_ROOT = "optax divides by sqrt(v + eps) (eps inside the root); `crossnn run --flavor native` trains optax's own"

CATALOG_DEFAULTS = {
    "default-init": tuple(Default(layer, field, {"jax": value}) for layer in (S.Dense, S.Conv2D) for field, value in (
        ("kernel_init", S.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")),
        ("bias_init", S.Zeros()))),  # Flax's lecun_normal (truncated) and zeros
    "adam-epsilon": (Default(S.Adam, "eps", {"jax": 1e-8}),),
    "weight-decay": (Default(S.AdamW, "weight_decay", {"jax": 1e-4}),  # optax.adamw: decoupled
                     Default(S.AdamW, "weight_decay_kind", {"jax": "decoupled"},
                             when=Condition("weight_decay", lambda value: value is not None and value > 0,
                                            "weight_decay > 0"))),
    "rmsprop": (Default(S.RMSprop, "alpha", {"jax": 0.9}),
                Default(S.RMSprop, "eps", {"jax": 1e-8}, notes={"jax": _IN_THE_ROOT})),
    "adagrad": (Default(S.Adagrad, "initial_accumulator", {"jax": 0.1}),
                Default(S.Adagrad, "eps", {"jax": 1e-7}, notes={"jax": _IN_THE_ROOT})),
    "cross-entropy-inputs": (Default(S.CrossEntropy, "from_logits", {"jax": True}),),
    "leaky-relu-slope": (Default(S.LeakyReLU, "negative_slope", {"jax": 0.01}, notes={
        "jax": "jax.nn.leaky_relu's gradient at 0 is 1, not the slope"}),),
    "gelu-approximation": (Default(S.GELU, "approximate", {"jax": "tanh"}),),
    # flax.linen.Embed's variance_scaling(1, "fan_in", "normal", out_axis=0): variance 1/features
    "embedding-init": (Default(S.Embedding, "embeddings_init", {"jax": S.VarianceScaling(
        scale=1.0, mode="fan_out", distribution="normal")}),),
}


def _default(fn, name):
    """The signature default of `name` in fn, or None where the argument is required."""
    default = inspect.signature(fn).parameters[name].default
    return None if default is inspect.Parameter.empty else default


def _one_step(optimizer, w0: float, grads: list[float]) -> list[float]:
    """w after one optimizer step per gradient in `grads`, from w0 (float64)."""
    import jax.numpy as jnp
    import optax

    w = jnp.array([w0])
    state = optimizer.init(w)
    for g in grads:
        updates, state = optimizer.update(jnp.array([g]), state, w)
        w = optax.apply_updates(w, updates)
    return [float(v) for v in w]


def _adam() -> dict:
    """One optax.adam step (lr 0.1, eps 1e-3, g = 1e-3 from w = 1) against eps's two placements."""
    import optax

    lr, eps, g, b2 = 0.1, 1e-3, 1e-3, 0.999
    return {"w": _one_step(optax.adam(lr, eps=eps), 1.0, [g])[0],
            "eps_on_corrected": 1.0 - lr * g / (g + eps),
            "eps_on_uncorrected": 1.0 - lr * g * math.sqrt(1 - b2) / (math.sqrt(1 - b2) * g + eps)}


def _rmsprop() -> dict:
    """One optax.rmsprop step (lr 0.1, decay 0.9, eps 1e-2, g = 0.1) against eps inside and outside the root."""
    import optax

    lr, decay, eps, g = 0.1, 0.9, 1e-2, 0.1
    v = (1 - decay) * g * g
    return {"w": _one_step(optax.rmsprop(lr, decay=decay, eps=eps), 1.0, [g])[0],
            "eps_inside": 1.0 - lr * g / math.sqrt(v + eps), "eps_outside": 1.0 - lr * g / (math.sqrt(v) + eps)}


def _adagrad() -> dict:
    """One optax.adagrad step (lr 0.1, s0 0.1, eps 1e-2, g = 0.1) against eps inside and outside the root."""
    import optax

    lr, s0, eps, g = 0.1, 0.1, 1e-2, 0.1
    s = s0 + g * g
    return {"w": _one_step(optax.adagrad(lr, initial_accumulator_value=s0, eps=eps), 1.0, [g])[0],
            "eps_inside": 1.0 - lr * g / math.sqrt(s + eps), "eps_outside": 1.0 - lr * g / (math.sqrt(s) + eps)}


def _momentum() -> dict:
    """optax.sgd(momentum 0.9) from w = 1 with g = 2: one step at lr 0.1, then one at lr 0.01 (the
    learning rate injected, as optax changes it between steps)."""
    import jax.numpy as jnp
    import optax

    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    w = jnp.array([1.0])
    state = sgd.init(w)
    updates, state = sgd.update(jnp.array([2.0]), state, w)
    w = optax.apply_updates(w, updates)
    first, buffer = float(w[0]), float(state.inner_state[0].trace[0])
    state.hyperparams["learning_rate"] = jnp.asarray(0.01)
    updates, state = sgd.update(jnp.array([2.0]), state, w)
    return {"w": first, "buffer": buffer, "w2": float(optax.apply_updates(w, updates)[0])}


def _x64() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "JAX_ENABLE_X64"}
    try:
        done = subprocess.run([sys.executable, "-c", X64_PROBE], capture_output=True, text=True, timeout=300,
                              check=True, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as err:
        return {"error": f"{type(err).__name__}: {err}"}


def _matmul_precision() -> dict:
    """The process's default matmul precision, and the float32 error of a 256×256 product against
    float64 at "default" and "highest" precision, on the first GPU (where TF32 shows) or the CPU."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from crossnn_jax.device import gpus

    found = gpus()
    device = found[0] if found else jax.devices("cpu")[0]
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    exact = a @ b
    errors = {}
    for precision in ("default", "highest"):
        with jax.default_matmul_precision(precision), jax.default_device(device):
            got = np.asarray(jax.jit(jnp.matmul)(jax.device_put(a.astype(np.float32), device),
                                                 jax.device_put(b.astype(np.float32), device)), dtype=np.float64)
        errors[precision] = float(np.max(np.abs(got - exact)) / np.max(np.abs(exact)))
    return {"process_default": jax.config.jax_default_matmul_precision, "device": str(device),
            "gpu": bool(found), "float32_error_default": errors["default"],
            "float32_error_highest": errors["highest"]}


def _dense_init() -> dict:
    """Flax's default Dense kernel, jax.nn.initializers.lecun_normal(), on a (100, 50) kernel."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    kernel = np.asarray(jax.nn.initializers.lecun_normal()(jax.random.key(0), (100, 50), jnp.float32))
    std = 1.0 / math.sqrt(100)
    return {"kernel_max_abs": float(np.max(np.abs(kernel))), "kernel_std": float(kernel.std()), "target_std": std,
            "truncation_bound": 2.0 * std / 0.87962566103423978, "bias": "zeros (flax.linen.Dense's bias_init)"}


def _random() -> dict:
    import jax

    key = jax.random.key(0)
    first = jax.random.uniform(key, (3,)).tolist()
    again = jax.random.uniform(key, (3,)).tolist()
    _, sub = jax.random.split(key)
    return {"key0": first, "same_key_same_numbers": first == again,
            "split_key_differs": jax.random.uniform(sub, (3,)).tolist() != first,
            "global_seed_function": any(hasattr(jax.random, name) for name in ("seed", "set_seed", "manual_seed"))}


def facts() -> dict[str, object]:
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    with jax.enable_x64(True):
        adam, rmsprop, adagrad, momentum = _adam(), _rmsprop(), _adagrad(), _momentum()
        adamw = _one_step(optax.adamw(0.1, weight_decay=0.1), 1.0, [0.0])[0]
        leaky_grad = float(jax.grad(lambda z: jax.nn.leaky_relu(z))(0.0))
        softplus = float(jax.nn.softplus(25.0))
        gelu_error = abs(float(jax.nn.gelu(1.0)) - 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0))))
        clipped = optax.clip_by_global_norm(5.0).update(jnp.array([3.0, 4.0]), optax.EmptyState())[0].tolist()
        ce_logits = float(optax.losses.softmax_cross_entropy_with_integer_labels(jnp.array([[2.0, 1.0, 0.1]]),
                                                                                 jnp.array([0]))[0])
        broadcast = float(jnp.mean((jnp.array([[1.0], [2.0], [3.0]]) - jnp.array([1.0, 2.0, 3.0])) ** 2))
    randoms = _random()
    # optax's bias correction in float32 (x64 off): 1 - b2^t with b2 = 0.999 rounded to float32
    corrected = float(optax.tree.bias_correction(jnp.ones((), jnp.float32), 0.999, jnp.ones((), jnp.int32)))
    return {
        "adam_float32_bias_correction": {"optax": 1.0 / corrected, "exact": 1.0 - 0.999,
                                         "relative_error": abs(1.0 / corrected - (1.0 - 0.999)) / (1.0 - 0.999)},
        "adam_defaults": {name: _default(optax.adam, name) for name in ("b1", "b2", "eps", "eps_root")},
        "adam_eps": _default(optax.adam, "eps"),
        "adam_step": adam,
        "adamw_weight_decay_default": _default(optax.adamw, "weight_decay"),
        "adamw_weight_decay_step": adamw,
        "rmsprop_defaults": {name: _default(optax.rmsprop, name) for name in ("decay", "eps", "eps_in_sqrt",
                                                                              "initial_scale")},
        "rmsprop_step": rmsprop,
        "adagrad_defaults": {name: _default(optax.adagrad, name) for name in ("initial_accumulator_value", "eps")},
        "adagrad_step": adagrad,
        "momentum_first_step": momentum,
        "default_lr": {name: _default(getattr(optax, name), "learning_rate")
                       for name in ("sgd", "adam", "rmsprop", "adagrad")},
        "clip_at_max_norm": clipped,
        "x64": _x64(),
        "matmul_precision": _matmul_precision(),
        "random": randoms,
        "random_seed0": randoms["key0"],
        "dense_init": _dense_init(),
        "gelu_default_approximate": _default(jax.nn.gelu, "approximate"),
        "gelu_tanh_error_at_1": gelu_error,
        "leaky_relu_default": _default(jax.nn.leaky_relu, "negative_slope"),
        "leaky_relu_grad_at_0": leaky_grad,
        "softplus_25": {"jax": softplus, "exact": math.log1p(math.exp(25.0))},
        "l2_loss_of_1": float(optax.l2_loss(jnp.array(1.0), jnp.array(0.0))),
        "squared_error_shape": list(optax.losses.squared_error(jnp.ones((2, 3)), jnp.zeros((2, 3))).shape),
        "ce_on_logits": ce_logits,
        "mse_broadcast": {"value": broadcast, "correct": 0.0},
        "same_padding_stride2": [list(p) for p in lax.padtype_to_pads((6,), (3,), (2,), "SAME")],
        "conv_default_dimension_numbers": _conv_default_layout(),
    }


def _conv_default_layout() -> str:
    """lax.conv_general_dilated's layout without dimension_numbers, as "NCHW/OIHW"-style letters."""
    from jax import lax

    numbers = lax.conv_dimension_numbers((1, 2, 3, 4), (5, 2, 1, 1), None)
    return "".join("NCHW"[numbers.lhs_spec.index(i)] for i in range(4)) + "/" + \
        "".join("OIHW"[numbers.rhs_spec.index(i)] for i in range(4))
