"""crossnn's TensorFlow backend (work in progress)."""

from crossnn.backends import Backend


class TensorflowBackend(Backend):
    name = "tensorflow"
    requires = ("tensorflow",)
    distributions = ("tensorflow", "tensorflow-cpu")
    install_hint = "pip install 'crossnn[tensorflow]'"
    modes = ("graph", "eager", "xla")
    import_order = 20

    def build(self, experiment, params, data, *, dtype, device, mode):
        raise NotImplementedError
