"""crossnn's TensorFlow backend: the experiment as a tf.Module of tf.Variables, a tf.GradientTape
training step compiled with tf.function (or run eagerly, or XLA-compiled), and the spec's optimizer
rules written with TF ops.

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
    modes = ("graph", "eager", "xla")  # the keys of crossnn_tensorflow.step.MODES, listed without importing TF
    import_order = 20

    def devices(self, probe: bool = False):
        from crossnn_tensorflow import device

        return device.probe() if probe else device.guess()

    def prepare(self):
        """Import TF and apply the parity settings (see crossnn_tensorflow.device.configure)."""
        from crossnn_tensorflow import device

        device.configure()

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
