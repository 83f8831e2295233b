"""crossnn's PyTorch backend: the experiment as an nn.Module of torch's layers (nn.Linear, nn.Conv2d,
nn.MaxPool2d, nn.BatchNorm2d, nn.LayerNorm, nn.Embedding, nn.LSTM, ...) and activation modules,
torch's loss modules and torch.optim, trained with the tutorial's loop ("eager"), the same loop
under torch.compile ("compile"), or the NumPy backend's pure training step on torch tensors ("xp",
the fast mode on a GPU; "onednn", the same with oneDNN's float32 products, the fast mode on the CPU;
for recurrent models eager's fused nn.LSTM is the fast path).

Files, as in every backend package: ops (the lowering registry: one entry per activation, layer,
loss and optimizer rule, each describing its torch modules once, for training and for scripts),
optimizers (the optimizer chain: clip, weight decay, the torch.optim rule, learning rate), step (the
training step, its modes and the trainer), script (a standalone PyTorch script of an experiment),
checkpoint (training state in canonical form, torch.save'd state_dicts, nn.Sequential import),
device, facts (measured defaults and formulas of the installed torch), tutorial (the hand-written
reference loop, sharing no code with the rest); plus xp (NumPy's array namespace mapped onto torch).
torch computes images as (N, C, H, W); crossnn's layout is channels-last, converted at the boundary
(crossnn_torch.ops). torch is imported only when a backend method needs it.

User code adds a layer, activation, loss or optimizer without editing crossnn:
crossnn_torch.ops.OPS.register(SpecClass) (beside crossnn_numpy.ops.OPS, which the reference needs).
"""

from __future__ import annotations

from crossnn.backends import Backend


class TorchBackend(Backend):
    name = "torch"
    title = "PyTorch"
    requires = ("torch",)
    distributions = ("torch",)
    install_hint = "pip install 'crossnn[torch]'"
    modes = ("eager", "xp", "compile", "onednn")  # the keys of crossnn_torch.step.MODES, listed without importing torch
    fast_modes = ("onednn", "xp")
    mode_device_kinds = {"onednn": ("cpu",)}
    mode_notes = {
        "eager": "tutorial-style eager loop: nn.Module forward, torch loss module, autograd backward, "
                 "torch.optim step (zero_grad / backward / step); recurrent layers are torch's fused nn.LSTM / "
                 "nn.GRU / nn.RNN (one C++ loop over time; in float32 on the CPU oneDNN's LSTM kernel, on a GPU "
                 "cuDNN's), the fast path for recurrent models",
        "xp": "the NumPy backend's hand-written forward, backward, loss gradient and optimizer update run "
              "on torch tensors (crossnn_torch.xp adapter) under inference_mode: no autograd, no nn.Module; "
              "recurrent layers step through time in Python (the reference's backpropagation through time)",
        "compile": "the eager loop on torch.compile(model) (inductor) with a torch.compile'd optimizer.step; "
                   "compiles during the first steps (timed with them)",
        "onednn": "the xp step with float32 matrix products through the oneDNN library inside PyTorch "
                  "(torch.ops.mkldnn._linear_pointwise, the kernel torch.compile's CPU code uses for nn.Linear) "
                  "instead of MKL's sgemm (products under 128³ multiply-adds stay on torch.matmul), about twice "
                  "MKL's speed on AMD CPUs; CPU only, float64 as xp",
    }
    import_order = 10
    native_entries = {
        "default-init": "torch's own initialisation after torch.manual_seed(seed), ignoring the spec's initial "
                        "parameters: nn.Linear and nn.Conv2d kaiming_uniform_(a=√5) (U(±1/√fan_in) for weight and "
                        "bias, fan_in = in·kh·kw for a convolution), nn.BatchNorm and nn.LayerNorm ones and zeros "
                        "(running statistics zeros and ones), nn.Embedding N(0, 1), nn.RNN/LSTM/GRU U(±1/√hidden) "
                        "for every weight and both biases (bias_hh_l0 then stays at its draw, frozen: the "
                        "canonical bias is the sum)",
        "weight-decay": "torch.optim's weight_decay, which is L2 added to the gradient, whatever the spec's kind "
                        "(AdamW keeps its decoupled decay)",
        "bce-clamp": "nn.BCELoss, which clamps log p and log(1 - p) at -100, whatever the spec's log_min",
        "cross-entropy-inputs": "nn.CrossEntropyLoss on whatever the model outputs, softmax probabilities included "
                                "(a softmax applied twice)",
        "softplus-threshold": "nn.Softplus() (beta 1, threshold 20): the identity above z = 20",
    }

    def check_device(self, device):
        """device.resolve raises for a name this backend lacks or a GPU it cannot see."""
        from crossnn_torch.device import resolve

        resolve(device)

    def devices(self, probe: bool = False):
        from crossnn_torch import device

        return device.probe() if probe else device.guess(self.version())

    def prepare(self):
        """Deterministic algorithms on, TF32 off (see crossnn_torch.device.configure)."""
        from crossnn_torch import device

        device.configure()

    def threads(self):
        import torch

        return torch.get_num_threads()

    def set_threads(self, n):
        """torch.set_num_threads: the intra-op threads of torch's CPU kernels."""
        import torch

        torch.set_num_threads(n)

    def mode_unavailable(self, mode):
        """The onednn mode needs the oneDNN inner product inside this torch build."""
        if mode != "onednn":
            return None
        from crossnn_torch.xp import onednn_unavailable

        return onednn_unavailable()

    def runtime(self):
        """Threads, determinism, TF32 and the CPU math libraries torch was built with."""
        import torch

        return {
            "torch": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "fill_uninitialized_memory": torch.utils.deterministic.fill_uninitialized_memory,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "mkl": torch.backends.mkl.is_available(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cuda": torch.version.cuda,
        }

    def matmul_gflops(self, n, dtype, device):
        """Best of 10 products of two n×n matrices (2 n³ FLOPs each), synchronised, after one untimed
        warm-up product, by torch.matmul and, for float32 on the CPU, by oneDNN's inner product too
        (the onednn mode's kernel, crossnn_torch.xp): the faster of torch's own kernels."""
        import time

        import torch
        from crossnn_torch import device as devices
        from crossnn_torch.xp import linear_operator, onednn_unavailable

        where = devices.resolve(device)
        a = torch.rand(n, n, dtype=getattr(torch, dtype), device=where)
        b = torch.rand(n, n, dtype=getattr(torch, dtype), device=where)
        out = torch.empty(n, n, dtype=a.dtype, device=where)
        products = [lambda: torch.matmul(a, b, out=out)]
        if where.type == "cpu" and a.dtype == torch.float32 and onednn_unavailable() is None:
            operator, weight = linear_operator(), b.t()
            products.append(lambda: operator(a, weight, None, "none", [], ""))
        best = float("inf")
        for product in products:
            product()
            devices.synchronize(where)
            for _ in range(10):
                start = time.perf_counter()
                product()
                devices.synchronize(where)
                best = min(best, time.perf_counter() - start)
        return 2.0 * n**3 / best / 1e9

    def tutorial(self, experiment, params, data, *, dtype, device):
        """The loop of PyTorch's tutorials, written by hand (crossnn_torch.tutorial): nn.Sequential of
        nn.Conv2d, pooling, flatten, nn.Linear and activations, a torch loss module, torch.optim,
        zero_grad / backward / step."""
        from crossnn_torch import device as devices
        from crossnn_torch.tutorial import tutorial

        self.prepare()
        return tutorial(experiment, params, data, dtype=dtype, device=str(devices.resolve(device)))

    def import_model(self, model, inputs=None):
        """An nn.Sequential of nn.Linear, nn.Conv2d, pooling, nn.Flatten, nn.Dropout, nn.BatchNorm1d/2d,
        nn.LayerNorm, nn.Embedding, nn.RNN/LSTM/GRU (each followed by crossnn_torch.ops.RecurrentOutput)
        and activations as (spec Model, canonical variables); inputs: the input shape ([H, W, C], [T]
        for ids), needed when the model does not start with nn.Linear
        (crossnn_torch.checkpoint.import_sequential)."""
        if not any(cls.__module__.split(".")[0] == "torch" for cls in type(model).__mro__):
            return None
        from crossnn_torch.checkpoint import import_sequential

        return import_sequential(model, inputs)

    def build(self, experiment, params, data, *, dtype, device, mode, native=frozenset()):
        """A TorchTrainer (crossnn_torch.step); `native` entries (see native_entries) are lowered with
        torch's built-ins and defaults instead of the spec's formulas (eager and compile modes)."""
        from crossnn_torch.step import TorchTrainer

        self.prepare()
        return TorchTrainer(experiment, params, data, dtype=dtype, device=device, mode=mode,
                            native=frozenset(native) & frozenset(self.native_entries))

    def export_native(self, experiment, state, path):
        """torch.save({"info", "date", "model": state_dict, "optimizer": state_dict, "step"}, path)
        (crossnn_torch.checkpoint)."""
        from crossnn_torch.checkpoint import export_native

        export_native(experiment, state, path)
        return f"torch.save of the model's and the optimizer's state_dict, at step {state.step}"

    def import_native(self, experiment, path):
        """A file export_native wrote, back into a canonical TrainingState; CheckpointError otherwise."""
        from crossnn_torch.checkpoint import import_native

        return import_native(experiment, path)

    def facts(self):
        """Defaults and formulas of the installed torch, measured on fixed inputs (crossnn_torch.facts)."""
        from crossnn_torch.facts import facts

        return facts()

    def script(self, experiment, params, data, side_file=None):
        """A standalone PyTorch script of the experiment (crossnn_torch.script)."""
        from crossnn_torch.script import script

        return script(experiment, params, data, side_file)
