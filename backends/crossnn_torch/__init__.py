"""crossnn's PyTorch backend: the experiment as an nn.Module of nn.Linear and torch's activation
modules, torch's loss modules and torch.optim, trained with the tutorial's loop ("eager"), the same
loop under torch.compile ("compile"), or the NumPy backend's hand-written passes on torch tensors
("xp", the fast mode).

Sections, as in every backend package: layers (the nn.Module), losses, optimizers, step (the
training step, its modes and the trainer), device; plus xp (NumPy's array namespace mapped onto
torch) and tutorial (the hand-written reference loop, sharing no code with the rest). torch is
imported only when a backend method needs it.
"""

from __future__ import annotations

from crossnn.backends import Backend


class TorchBackend(Backend):
    name = "torch"
    requires = ("torch",)
    distributions = ("torch",)
    install_hint = "pip install 'crossnn[torch]'"
    modes = ("eager", "xp", "compile")  # the keys of crossnn_torch.step.MODES, listed without importing torch
    fast_mode = "xp"
    mode_notes = {
        "eager": "tutorial-style eager loop: nn.Module forward, torch loss module, autograd backward, "
                 "torch.optim step (zero_grad / backward / step)",
        "xp": "the NumPy backend's hand-written forward, backward, loss gradient and optimizer update run "
              "on torch tensors (crossnn_torch.xp adapter) under inference_mode: no autograd, no nn.Module",
        "compile": "the eager loop on torch.compile(model) (inductor) with a torch.compile'd optimizer.step; "
                   "compiles during the first steps (timed with them)",
    }
    import_order = 10

    def devices(self, probe: bool = False):
        from crossnn_torch import device

        return device.probe() if probe else device.guess(self.version())

    def prepare(self):
        """Deterministic algorithms on, TF32 off (see crossnn_torch.device.configure)."""
        from crossnn_torch import device

        device.configure()

    def runtime(self):
        """Threads, determinism, TF32 and the CPU math libraries torch was built with."""
        import torch

        return {
            "torch": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "mkl": torch.backends.mkl.is_available(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cuda": torch.version.cuda,
        }

    def matmul_gflops(self, n, dtype, device):
        """Best of 5 torch.matmul of two n×n matrices (2 n³ FLOPs each), synchronised, after one
        untimed warm-up product."""
        import time

        import torch
        from crossnn_torch import device as devices

        where = devices.resolve(device)
        a = torch.rand(n, n, dtype=getattr(torch, dtype), device=where)
        b = torch.rand(n, n, dtype=getattr(torch, dtype), device=where)
        out = torch.empty(n, n, dtype=a.dtype, device=where)
        torch.matmul(a, b, out=out)
        devices.synchronize(where)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            devices.synchronize(where)
            best = min(best, time.perf_counter() - start)
        return 2.0 * n**3 / best / 1e9

    def tutorial(self, experiment, params, data, *, dtype, device):
        """The loop of PyTorch's tutorials, written by hand (crossnn_torch.tutorial): nn.Sequential of
        nn.Linear and activations, a torch loss module, torch.optim, zero_grad / backward / step."""
        from crossnn_torch import device as devices
        from crossnn_torch.tutorial import tutorial

        self.prepare()
        return tutorial(experiment, params, data, dtype=dtype, device=str(devices.resolve(device)))

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
