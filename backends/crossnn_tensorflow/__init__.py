"""crossnn's TensorFlow backend: the experiment as a tf.Module of tf.Variables, a tf.GradientTape
training step compiled with tf.function (or run eagerly, or XLA-compiled, or looped over a whole span
of steps inside one tf.function), and the spec's optimizer rules written with TF ops. `tutorial`
gives the Keras tutorials' own loop, written by hand (tutorial.py), as the benchmarks' yardstick.

Sections, as in every backend package: layers (the tf.Module and activations), losses, optimizers,
step (the training step and trainer), device. TensorFlow is imported only when a backend method
needs it, so loading this plugin (e.g. for `crossnn list`) stays cheap.
"""

from __future__ import annotations

from crossnn.backends import Backend


class TensorflowBackend(Backend):
    name = "tensorflow"
    requires = ("tensorflow",)
    distributions = ("tensorflow", "tensorflow-cpu")
    install_hint = "pip install 'crossnn[tensorflow]'"
    #: the keys of crossnn_tensorflow.step.MODES, listed without importing TF; "graph" (the tutorials'
    #: per-step tf.function) is the default
    modes = ("graph", "eager", "xla", "epoch", "xla-epoch")
    #: the fastest on the circle net (~20x graph) and on FCN-R (~1.1x); parity as in every mode
    fast_mode = "xla-epoch"
    mode_notes = {
        "graph": "the tutorial-style step: one tf.function (GradientTape + update) called from Python per batch",
        "eager": "the same step run op by op, without tf.function",
        "xla": "the per-batch tf.function compiled by XLA (jit_compile=True), called from Python per batch",
        "epoch": "a whole span of steps in one tf.function: a tf.while_loop over a [steps, batch] index tensor",
        "xla-epoch": "the epoch loop compiled by XLA (jit_compile=True) on 128-row index chunks: "
                     "one compilation per batch size",
    }
    import_order = 20

    def devices(self, probe: bool = False):
        from crossnn_tensorflow import device

        return device.probe() if probe else device.guess()

    def prepare(self):
        """Import TF and apply the parity settings (see crossnn_tensorflow.device.configure)."""
        from crossnn_tensorflow import device

        device.configure()

    def runtime(self):
        """TF version, intra/inter-op threads, op determinism, TF32 and oneDNN, as set in this process."""
        from crossnn_tensorflow import device

        return device.settings()

    def matmul_gflops(self, n, dtype, device):
        """Best of 5 tf.linalg.matmul of n×n by n×n on `device`, each forced to finish (warm-up excluded)."""
        from crossnn_tensorflow import device as devices

        self.prepare()
        return devices.matmul_gflops(n, dtype, device)

    def tutorial(self, experiment, params, data, *, dtype, device):
        """The Keras tutorials' custom training loop (crossnn_tensorflow.tutorial), sharing no code
        with the lowering; chains of Dense/Activation layers only."""
        from crossnn_tensorflow.tutorial import KerasTutorialTrainer

        self.prepare()
        return KerasTutorialTrainer(experiment, params, data, dtype=dtype, device=device)

    def import_model(self, model):
        """A Keras Sequential or functional model of Dense, Activation and Concatenate layers as
        (spec Model, canonical parameters)."""
        roots = ("keras", "tf_keras", "tensorflow")
        if not any(cls.__module__.split(".")[0] in roots for cls in type(model).__mro__):
            return None
        from crossnn_tensorflow.layers import import_keras

        return import_keras(model)

    def build(self, experiment, params, data, *, dtype, device, mode):
        from crossnn_tensorflow.step import TensorflowTrainer

        self.prepare()
        return TensorflowTrainer(experiment, params, data, dtype=dtype, device=device, mode=mode)
