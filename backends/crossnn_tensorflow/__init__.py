"""crossnn's TensorFlow backend: the experiment as a tf.Module of tf.Variables, a tf.GradientTape
training step compiled with tf.function (or run eagerly, or XLA-compiled, or looped over a whole span
of steps inside one tf.function), and the spec's optimizer rules written with TF ops. `tutorial`
gives the Keras tutorials' own loop, written by hand (tutorial.py), as the benchmarks' yardstick.

Files, as in every backend package: ops (the lowering registry: one entry per activation, layer and
loss, holding its TF lowering, its script text and its Keras counterpart), optimizers (the optimizer
chain; the rules are registry entries too), step (the model, the training step and the trainer),
script (the emitted script), checkpoint (Keras models, .weights.h5 checkpoints, Keras' default
initializers, reading a user's Keras model), facts (measured facts of TF/Keras), tutorial, device.
TensorFlow is imported only when a backend method needs it, so loading this plugin (e.g. for
`crossnn list`) stays cheap.

User-defined layers, activations, losses and optimizers: crossnn_tensorflow.ops.OPS.register (the
entry contracts are in crossnn_tensorflow.ops and crossnn_tensorflow.optimizers).
"""

from __future__ import annotations

from crossnn.backends import Backend

#: catalog entries (crossnn.differences) the native flavour lowers TF/Keras' own way, and how
NATIVE_ENTRIES = {
    "default-init": "the Keras layers' own initializers, seeded with keras.utils.set_random_seed(seed), instead of "
                    "the given initial parameters: Dense and Conv2D glorot_uniform kernel (receptive-field fans for "
                    "a conv kernel), zero bias; BatchNormalization and LayerNormalization gamma ones, beta zeros "
                    "(moving mean zeros, variance ones); Embedding U(±0.05); SimpleRNN, LSTM and GRU glorot_uniform "
                    "kernel, orthogonal recurrent kernel, zero bias, LSTM's forget gate at 1 (unit_forget_bias)",
    "momentum-sgd": "keras.optimizers.SGD: velocity v <- momentum*v - lr*g, w <- w + v (lr inside the buffer)",
    "adam-epsilon": "keras.optimizers.Adam with epsilon = the spec's eps, added to the uncorrected sqrt(v)",
    "weight-decay": "keras optimizers' weight_decay: always decoupled, w <- w - w*wd*lr, whatever the spec's kind",
    "rmsprop": "keras.optimizers.RMSprop(rho=alpha, epsilon=eps): epsilon inside the square root, lr inside the "
               "momentum buffer",
    "adagrad": "keras.optimizers.Adagrad(initial_accumulator_value, epsilon): epsilon inside the square root",
    "bce-clamp": "keras.losses.BinaryCrossentropy: the logits behind a sigmoid output, else p clipped to "
                 "[1e-7, 1 - 1e-7], instead of clamping log p",
    "cross-entropy-inputs": "keras Categorical/SparseCategoricalCrossentropy with their default from_logits=False, "
                            "whatever the spec says",
    "leaky-relu-slope": "tf.nn.leaky_relu(alpha=slope): alpha is a float32 op attribute",
    "gelu-approximation": "tf.nn.gelu(approximate=...): its constants are cast through float32",
    "softplus-threshold": "tf.math.softplus: exp(z) / z beyond its thresholds",
    "clip-norm": "tf.clip_by_global_norm: scales by clip_norm / max(norm, clip_norm), no 1e-6",
}


class TensorflowBackend(Backend):
    name = "tensorflow"
    title = "Keras / TensorFlow"
    requires = ("tensorflow",)
    distributions = ("tensorflow", "tensorflow-cpu")
    install_hint = "pip install 'crossnn[tensorflow]'"
    #: the keys of crossnn_tensorflow.step.MODES, listed without importing TF; "graph" (the tutorials'
    #: per-step tf.function) is the default
    modes = ("graph", "eager", "xla", "epoch", "xla-epoch")
    #: the fastest on the circle net (~20x graph) and on FCN-R (~1.1x); parity as in every mode
    fast_modes = ("xla-epoch",)
    mode_notes = {
        "graph": "the tutorial-style step: one tf.function (GradientTape + update) called from Python per batch",
        "eager": "the same step run op by op, without tf.function",
        "xla": "the per-batch tf.function compiled by XLA (jit_compile=True), called from Python per batch",
        "epoch": "a whole span of steps in one tf.function: a tf.while_loop over a [steps, batch] index tensor",
        "xla-epoch": "the epoch loop compiled by XLA (jit_compile=True) on 128-row index chunks: "
                     "one compilation per batch size",
    }
    import_order = 20
    native_entries = NATIVE_ENTRIES

    def check_device(self, device):
        """device.resolve raises for a name this backend lacks or a GPU it cannot see."""
        from crossnn_tensorflow.device import resolve

        resolve(device)

    def devices(self, probe: bool = False):
        from crossnn_tensorflow import device

        return device.probe() if probe else device.guess()

    def prepare(self):
        """Import TF and apply the parity settings (see crossnn_tensorflow.device.configure)."""
        from crossnn_tensorflow import device

        device.configure()

    def threads(self):
        """TF's intra-op threads (0 would be TF's own choice: one per core)."""
        from crossnn_tensorflow.device import import_tensorflow

        return import_tensorflow().config.threading.get_intra_op_parallelism_threads()

    def set_threads(self, n):
        """tf.config.threading's intra-op threads; refused once TF has run an op in this process."""
        from crossnn_tensorflow.device import set_intra_op_threads

        set_intra_op_threads(n)

    def runtime(self):
        """TF version, intra/inter-op threads, op determinism, TF32 and oneDNN, as set in this process."""
        from crossnn_tensorflow import device

        return device.settings()

    def matmul_gflops(self, n, dtype, device):
        """Best of 10 tf.linalg.matmul of n×n by n×n on `device`, each forced to finish (warm-up excluded)."""
        from crossnn_tensorflow import device as devices

        self.prepare()
        return devices.matmul_gflops(n, dtype, device)

    def tutorial(self, experiment, params, data, *, dtype, device):
        """The Keras tutorials' custom training loop (crossnn_tensorflow.tutorial), sharing no code
        with the lowering; chains of Dense, Conv2D, pooling, Flatten, Activation, normalization,
        Embedding and recurrent (keras.layers.LSTM, GRU, SimpleRNN) layers."""
        from crossnn_tensorflow.tutorial import KerasTutorialTrainer

        self.prepare()
        return KerasTutorialTrainer(experiment, params, data, dtype=dtype, device=device)

    def import_model(self, model):
        """A Keras Sequential or functional model (Dense, Conv2D, pooling, Flatten, Reshape,
        Activation, Dropout, Add, Concatenate, BatchNormalization, LayerNormalization, Embedding,
        SimpleRNN, LSTM and GRU layers) as (spec Model, canonical parameters and moving statistics)."""
        roots = ("keras", "tf_keras", "tensorflow")
        if not any(cls.__module__.split(".")[0] in roots for cls in type(model).__mro__):
            return None
        from crossnn_tensorflow.checkpoint import import_keras

        return import_keras(model)

    def facts(self):
        """Measured facts of the installed TF/Keras, computed by running them on fixed inputs:
        dense_kernel_shape, dense_init, default_lr, adam_eps, rmsprop_defaults, adagrad_defaults,
        adam_weight_decay_step, momentum_first_step, bce_p0_y1, bce_logit_input, ce_default_from_logits,
        ce_on_logits_as_probabilities, ce_on_logits, mse_sum, mse_mean, mse_broadcast,
        leaky_relu_default, leaky_relu_float64, gelu_default, gelu_float64_error, softplus_25,
        batchnorm, tf32, random_seed0, clip_at_max_norm, conv_kernel_shape, conv_init,
        same_stride2_window_starts, avg_pool_same_divisors, flatten_order, layernorm_epsilon,
        embedding_init, recurrent_init, lstm_unit_forget_bias, gru (see crossnn_tensorflow.facts.facts).
        tf32, random_seed0, dense_init, conv_init, embedding_init and recurrent_init are measured in a
        fresh Python process (global state)."""
        self.prepare()
        from crossnn_tensorflow.facts import facts

        return facts()

    def script(self, experiment, params, data, side_file=None):
        """A standalone TensorFlow script (tf.Module of tf.Variables, @tf.function GradientTape
        train_step, the spec's optimizer chain in TF ops) training `experiment` in float64 from
        `params` on `data`; its last line of output is the final parameters as JSON."""
        from crossnn_tensorflow.script import script

        return script(experiment, params, data, side_file)

    def export_native(self, experiment, state, path):
        """The state's parameters and moving statistics as a Keras .weights.h5 (path must end in
        '.weights.h5') of a keras model mirroring the spec: keras.Sequential of the layers' Keras
        counterparts (Dense, Conv2D, pooling, BatchNormalization, LSTM, ...) named like the spec's
        layers, or a functional keras.Model for graphs. Loads into a user's keras model of the same
        architecture with model.load_weights(path). Weights only: the step and the optimizer state
        are not in a .weights.h5."""
        self.prepare()
        from crossnn_tensorflow.checkpoint import export_weights

        export_weights(experiment, state, path)
        return ("a Keras .weights.h5: the parameters (and moving statistics) only; the step and the optimizer state "
                "are not kept")

    def import_native(self, experiment, path):
        """A Keras .weights.h5 of the spec's model as a TrainingState: the parameters, at step 0, with
        no optimizer state (the file holds weights only). A missing, unreadable or mismatched file
        raises crossnn.checkpoint.CheckpointError."""
        self.prepare()
        from crossnn_tensorflow.checkpoint import import_weights

        return import_weights(experiment, path)

    def build(self, experiment, params, data, *, dtype, device, mode, native=frozenset()):
        from crossnn_tensorflow.step import TensorflowTrainer

        self.prepare()
        return TensorflowTrainer(experiment, params, data, dtype=dtype, device=device, mode=mode,
                                 native=frozenset(native) & frozenset(self.native_entries))
