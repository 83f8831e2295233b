"""crossnn's PyTorch backend (work in progress)."""

from crossnn.backends import Backend


class TorchBackend(Backend):
    name = "torch"
    requires = ("torch",)
    distributions = ("torch",)
    install_hint = "pip install 'crossnn[torch]'"
    modes = ("eager",)
    import_order = 10

    def build(self, experiment, params, data, *, dtype, device, mode):
        raise NotImplementedError
