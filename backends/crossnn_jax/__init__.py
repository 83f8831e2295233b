"""crossnn's JAX backend: the experiment as a pure function of a parameter pytree written with
jax.numpy and jax.lax, gradients from jax.value_and_grad, the optimizer an optax chain, trained the
way the JAX documentation writes a training loop: one jax.jit-compiled step per batch ("jit"), the
same step op by op ("eager"), whole spans of steps in one compiled loop on the device ("scan"), or the
NumPy backend's pure training step run on jax.numpy ("xp").

Files, as in every backend package: ops (the lowering registry: one entry per activation, layer and
loss, with its script text), optimizers (the optax chain: clip, weight decay, the rule, learning rate;
the rules are registry entries), step (the training step, its modes and the trainer), script (a
standalone JAX + optax script of an experiment), checkpoint (training state in canonical form and a
pickle-free .npz of the parameter pytree and the optax state), device (devices and the x64 /
matmul-precision scope), facts (measured defaults and formulas of the installed jax and optax, and the
catalog's JAX side), tutorial (the hand-written reference loop, sharing no code with the rest); plus
xp (crossnn_numpy.xp's namespace on jax.numpy).

JAX keeps float64 off by default and crossnn never switches it on globally: every computation of a
run happens inside crossnn_jax.device.scope (jax.enable_x64 for float64 runs only, matmul precision
"highest", the run's device), so torch, TensorFlow and user code in the same process see jax's
defaults. jax is imported only when a backend method needs it.

User code adds a layer, activation, loss or optimizer rule without editing crossnn:
crossnn_jax.ops.OPS.register(SpecClass) (beside crossnn_numpy.ops.OPS, which the reference needs).
"""

from __future__ import annotations

from crossnn.backends import Backend
from crossnn_jax.facts import CATALOG_SIDES

#: catalog entries (crossnn.differences) the native flavour lowers JAX's / optax's / Flax's own way, and how
NATIVE_ENTRIES = {
    "default-init": "Flax's nn.Dense / nn.Conv defaults: lecun_normal kernels (truncated normal, variance 1/fan_in, "
                    "fan_in = kh·kw·in for a convolution) and zero biases, drawn by jax.random from "
                    "jax.random.key(seed) split once per layer, instead of the given initial parameters",
    "rmsprop": "optax.rmsprop's scaling (optax.scale_by_rms / scale_by_stddev with its default eps_in_sqrt=True): "
               "g / sqrt(v + eps), epsilon inside the square root",
    "adagrad": "optax.adagrad's scaling (optax.scale_by_rss): g / sqrt(s + eps) where s > 0 (else 0), epsilon "
               "inside the square root",
    "clip-norm": "optax.clip_by_global_norm: g unchanged while its norm is below clip_norm, else "
                 "g / norm · clip_norm, no 1e-6",
    "gelu-approximation": "jax.nn.gelu with its default approximate=True (the tanh form), whatever the spec says",
    "leaky-relu-slope": "jax.nn.leaky_relu(z, negative_slope): where(z >= 0, ...), so its gradient at 0 is 1, "
                        "not the slope",
}


class JaxBackend(Backend):
    name = "jax"
    title = "JAX / optax"
    requires = ("jax", "optax")
    distributions = ("jax",)
    install_hint = "pip install 'crossnn[jax]'"
    modes = ("jit", "eager", "scan", "xp")  # the keys of crossnn_jax.step.MODES, listed without importing jax
    fast_modes = ("scan",)
    mode_notes = {
        "jit": "the JAX documentation's loop: one jax.jit-compiled step (jax.value_and_grad of the loss, the optax "
               "chain's update, optax.apply_updates) called from Python per batch",
        "eager": "the same step run op by op, without jax.jit",
        "scan": "a whole span of steps in one jax.jit call: the step in a jax.lax.fori_loop on the device over the "
                "span's [steps, batch] indices, learning rates and dropout masks, in 128-step chunks of one batch "
                "size with a traced step count (one compilation per batch size)",
        "xp": "the NumPy backend's hand-written forward, backward, loss gradient and optimizer update run on "
              "jax.numpy (crossnn_jax.xp) under jax.jit: no autodiff, no optax",
    }
    import_order = 30
    native_entries = NATIVE_ENTRIES
    # the catalog's JAX column; the "(new)" lines are proposed entries the catalog lacks (not shown). The
    # proposed preset crossnn_jax.facts.CATALOG_DEFAULTS is not enabled: see its docstring.
    catalog_sides = CATALOG_SIDES

    def check_device(self, device):
        """device.resolve raises for a name this backend lacks or a GPU jax cannot see."""
        from crossnn_jax.device import resolve

        resolve(device)

    def devices(self, probe: bool = False):
        from crossnn_jax import device

        return device.probe() if probe else device.guess()

    def prepare(self):
        """Import jax and optax. Nothing global is configured: x64 and the matmul precision are set
        around each run's computations (crossnn_jax.device.scope)."""
        import jax  # noqa: F401
        import optax  # noqa: F401

    def threads(self):
        """XLA's CPU thread pool: intra_op_parallelism_threads from XLA_FLAGS, else one thread per CPU
        this process may use (XLA's default)."""
        from crossnn_jax.device import cpu_threads

        return cpu_threads()

    def set_threads(self, n):
        """Accepted when XLA already uses n threads; refused otherwise: XLA sizes its CPU thread pool
        once, when jax starts, from XLA_FLAGS (changing that variable here would also reach TensorFlow's
        XLA)."""
        from crossnn.errors import BackendError

        if n == self.threads():
            return
        raise BackendError(f"backend 'jax' cannot change its thread count in a running process; start it with "
                           f"XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={n}'")

    def runtime(self):
        """Versions, jax's platform and devices, and the process-wide numerics flags (which crossnn leaves
        as they are; its runs set x64 and "highest" matmul precision in a scope)."""
        import os

        import jax
        import jaxlib
        import optax

        return {
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "optax": optax.__version__,
            "default_backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "jax_enable_x64 (process)": bool(jax.config.jax_enable_x64),
            "jax_default_matmul_precision (process)": jax.config.jax_default_matmul_precision,
            "run scope": "jax.enable_x64(dtype == 'float64'), jax.default_matmul_precision('highest')",
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "cpu threads": self.threads(),
        }

    def matmul_gflops(self, n, dtype, device):
        """Best of 10 jitted products of two n×n matrices (2 n³ FLOPs each), each waited for
        (block_until_ready), after one untimed call that compiles; inside the run scope."""
        import time

        import jax
        import jax.numpy as jnp
        import numpy as np

        from crossnn_jax import device as devices

        where = devices.resolve(device)
        with devices.scope(dtype, where):
            rng = np.random.default_rng(0)
            a, b = (jax.device_put(rng.random((n, n)).astype(dtype), where) for _ in range(2))
            product = jax.jit(jnp.matmul)
            product(a, b).block_until_ready()
            best = float("inf")
            for _ in range(10):
                start = time.perf_counter()
                product(a, b).block_until_ready()
                best = min(best, time.perf_counter() - start)
        return 2.0 * n**3 / best / 1e9

    def tutorial(self, experiment, params, data, *, dtype, device):
        """The loop of the JAX and optax documentation, written by hand (crossnn_jax.tutorial): a params
        pytree, loss_fn, jax.value_and_grad, optax.sgd / optax.adam, a jitted update per batch; chains of
        dense, conv2d, pooling and flatten layers."""
        from crossnn_jax.tutorial import TutorialTrainer

        return TutorialTrainer(experiment, params, data, dtype=dtype, device=device)

    def build(self, experiment, params, data, *, dtype, device, mode, native=frozenset()):
        """A JaxTrainer (crossnn_jax.step); `native` entries (see native_entries) are lowered with jax's,
        optax's and Flax's defaults instead of the spec's formulas (jit, eager and scan modes)."""
        from crossnn_jax.step import JaxTrainer

        return JaxTrainer(experiment, params, data, dtype=dtype, device=device, mode=mode,
                          native=frozenset(native) & frozenset(self.native_entries))

    def export_native(self, experiment, state, path):
        """A pickle-free .npz of the parameter pytree and the optax chain's state, leaves named by their
        jax tree paths (crossnn_jax.checkpoint)."""
        from crossnn_jax.checkpoint import export_native

        export_native(experiment, state, path)
        return (f".npz of the parameter pytree, the layers' state and the optax state (leaves by jax tree path), "
                f"at step {state.step}")

    def import_native(self, experiment, path):
        """A file export_native wrote, back into a canonical TrainingState; CheckpointError otherwise."""
        from crossnn_jax.checkpoint import import_native

        return import_native(experiment, path)

    def facts(self):
        """Defaults and formulas of the installed jax and optax, measured on fixed inputs (crossnn_jax.facts)."""
        from crossnn_jax.facts import facts

        return facts()

    def script(self, experiment, params, data, side_file=None):
        """A standalone JAX + optax script of the experiment (crossnn_jax.script)."""
        from crossnn_jax.script import script

        return script(experiment, params, data, side_file)
