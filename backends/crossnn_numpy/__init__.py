"""crossnn's NumPy backend: the float64 reference, with hand-written forward and backward passes.

Files, as in every backend package: ops (the lowering registry: one entry per activation, layer and
loss, holding its training math and its script text), optimizers (the optimizer chain; the rules are
registry entries too), step (the training step and trainer), script (the emitted script), tutorial
(the hand-written loop benchmarks compare with), device; plus xp, the array namespace the math is
written against (listed with its meaning in crossnn_numpy.xp), and windows, the convolution and
pooling math. The math is pure, so the same code also runs on CuPy, torch tensors and jax.numpy.
"""

from __future__ import annotations

from crossnn.backends import Backend
from crossnn.errors import UnsupportedFeature


class NumpyBackend(Backend):
    name = "numpy"
    reference = True
    title = "NumPy"
    requires = ("numpy",)
    distributions = ("numpy",)
    import_order = 0
    mode_notes = {"default": "hand-written forward and backward passes in NumPy (the float64 reference); the same "
                             "code runs on torch tensors as the torch backend's xp mode"}

    def check_device(self, device):
        """device.resolve raises for a name this backend lacks or a GPU it cannot see."""
        from crossnn_numpy.device import resolve

        resolve(device)

    def devices(self, probe: bool = False):
        from crossnn_numpy import device

        return device.probe() if probe else device.guess()

    def tutorial(self, experiment, params, data, *, dtype, device):
        """The hand-written NumPy loop of crossnn_numpy.tutorial (no code shared with the lowering)."""
        from crossnn_numpy.device import resolve
        from crossnn_numpy.tutorial import TutorialTrainer

        if resolve(device) is not None:
            raise UnsupportedFeature("numpy", "a hand-written loop on a GPU")
        return TutorialTrainer(experiment, params, data, dtype)

    def threads(self):
        """The threads of NumPy's BLAS library (threadpoolctl), or None without threadpoolctl."""
        from crossnn_numpy.device import blas_threads

        return blas_threads()

    def set_threads(self, n):
        """NumPy's BLAS threads, through threadpoolctl (which must be installed)."""
        from crossnn_numpy.device import set_blas_threads

        set_blas_threads(n)

    def runtime(self):
        from crossnn.bench.machine import blas_threads

        return {"numpy": self.version(), "blas threads": blas_threads() or "unknown (threadpoolctl not installed)"}

    def matmul_gflops(self, n, dtype, device):
        from crossnn.bench.machine import numpy_matmul_gflops
        from crossnn_numpy.device import resolve

        if resolve(device) is not None:
            raise UnsupportedFeature("numpy", "a matmul benchmark on a GPU")
        return numpy_matmul_gflops(dtype, n)

    def script(self, experiment, params, data, side_file=None):
        """A NumPy tutorial-style script: forward and backward written out layer by layer."""
        from crossnn_numpy.script import script

        return script(experiment, params, data, side_file)

    def build(self, experiment, params, data, *, dtype, device, mode):
        from crossnn_numpy.device import resolve
        from crossnn_numpy.step import NumpyTrainer

        return NumpyTrainer(experiment, params, data, dtype, gpu=resolve(device))
