"""Devices and determinism: "cpu", and "cuda" / "cuda:N" when torch sees a GPU.

`guess` imports nothing (it backs `crossnn list`); everything else imports torch when called.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from crossnn.errors import BackendError

#: where the NVIDIA driver lists one folder per GPU
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def guess(torch_version: str) -> tuple[str, ...]:
    """A cheap guess without importing torch: cpu, plus one cuda:N per GPU the NVIDIA driver lists
    when the installed torch is not a CPU-only build ("+cpu" in its version)."""
    if "+cpu" in torch_version:
        return ("cpu",)
    try:
        count = sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        count = 0
    return ("cpu",) + tuple(f"cuda:{i}" for i in range(count))


def probe() -> tuple[str, ...]:
    """The devices torch can use, exactly: cpu and cuda:0 .. cuda:N-1."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ("cpu",) + tuple(f"cuda:{i}" for i in range(count))


def configure() -> None:
    """Parity settings: deterministic algorithms, TF32 off for matmuls and cuDNN. cuBLAS is only
    deterministic with a fixed workspace, so CUBLAS_WORKSPACE_CONFIG is set before its first use.
    Deterministic mode would also fill every new tensor with NaN (fill_uninitialized_memory, a guard
    against reading uninitialised memory, which no kernel used here does): that costs a pass over
    each allocation, 13% of an FCN-R step, and changes no result, so it is off."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def resolve(name: str):
    """The torch.device for "cpu", "cuda" or "cuda:N" ("gpu[:N]" too), or a BackendError saying why it
    cannot be used."""
    import torch

    try:
        device = torch.device(re.sub(r"^gpu\b", "cuda", name.strip().lower()))
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise BackendError(f"backend 'torch' has no device '{name}'; use cpu, cuda[:N] or gpu[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"backend 'torch' cannot use device '{name}': torch.cuda.is_available() is False "
                               f"(torch {torch.__version__})")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise BackendError(f"backend 'torch' cannot use device '{name}': torch sees "
                               f"{torch.cuda.device_count()} GPU(s)")
        device = torch.device("cuda", index)
    return device


def synchronize(device) -> None:
    """Wait for queued GPU work on `device` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
