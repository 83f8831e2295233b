"""crossnn's PyTorch backend: the experiment as an nn.Module of nn.Linear and torch's activation
modules, torch's loss modules and torch.optim, trained with the tutorial's loop.

Sections, as in every backend package: layers (the nn.Module), losses, optimizers, step (the
training step and trainer), device. torch is imported only when a backend method needs it.
"""

from __future__ import annotations

from crossnn.backends import Backend


class TorchBackend(Backend):
    name = "torch"
    requires = ("torch",)
    distributions = ("torch",)
    install_hint = "pip install 'crossnn[torch]'"
    modes = ("eager",)  # the keys of crossnn_torch.step.MODES, listed here without importing torch
    import_order = 10

    def devices(self, probe: bool = False):
        from crossnn_torch import device

        return device.probe() if probe else device.guess(self.version())

    def prepare(self):
        """Deterministic algorithms on, TF32 off (see crossnn_torch.device.configure)."""
        from crossnn_torch import device

        device.configure()

    def import_model(self, model):
        """An nn.Sequential of nn.Linear and activations as (spec Model, canonical parameters)."""
        if not any(cls.__module__.split(".")[0] == "torch" for cls in type(model).__mro__):
            return None
        from crossnn_torch.layers import import_sequential

        return import_sequential(model)

    def build(self, experiment, params, data, *, dtype, device, mode):
        from crossnn_torch.step import TorchTrainer

        self.prepare()
        return TorchTrainer(experiment, params, data, dtype=dtype, device=device, mode=mode)
