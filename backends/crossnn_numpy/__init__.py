"""crossnn's NumPy backend: the float64 reference, with hand-written forward and backward passes.

Sections, as in every backend package: layers (layers and activations), losses, optimizers,
step (the training step and trainer), device.
"""

from __future__ import annotations

import numpy as np

from crossnn.backends import Backend
from crossnn.errors import BackendError


class NumpyBackend(Backend):
    name = "numpy"
    reference = True
    requires = ("numpy",)
    distributions = ("numpy",)
    import_order = 0

    def devices(self, probe: bool = False):
        from crossnn_numpy.device import DEVICES

        return DEVICES

    def build(self, experiment, params, data, *, dtype, device, mode):
        from crossnn_numpy.device import DEVICES
        from crossnn_numpy.step import NumpyTrainer

        if device not in DEVICES:
            raise BackendError(f"backend 'numpy' has no device '{device}'; it has {', '.join(DEVICES)}")
        return NumpyTrainer(experiment, params, data, dtype, np)
