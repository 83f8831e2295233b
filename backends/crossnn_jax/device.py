"""Devices and the numerics scope every JAX computation of a run happens in.

Devices: "cpu", and "cuda" / "cuda:N" ("gpu[:N]" too) when jax sees a GPU (a CUDA jaxlib plugin
installed and a driver present). `guess` imports nothing (it backs `crossnn list`); everything else
imports jax when called.

The scope (`scope`) is what keeps a JAX run from changing anything else in the process. jax's switches
are global flags by default; crossnn sets them only through their context managers, around the build,
every span of steps, every prediction and every read of the state:

    jax.enable_x64(dtype == "float64")      float64 exists only inside it: outside, jax makes every
                                            float64 input float32 (x64 is off by default) and other
                                            code in the process keeps that default
    jax.default_matmul_precision("highest") full float32 products and convolutions on GPUs (the
                                            "default" precision lets XLA use TF32 on NVIDIA GPUs);
                                            no effect on CPUs or in float64
    jax.default_device(device)              arrays jax creates itself (optax's zero states) land on
                                            the run's device

All three are thread-local and part of jit's cache key, so a function traced inside the scope is
compiled for it and never reused outside it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from pathlib import Path

from crossnn.errors import BackendError

#: where the NVIDIA driver lists one folder per GPU
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
#: modules of jax's CUDA plugins (any one installed means jax can drive an NVIDIA GPU)
CUDA_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13")
#: the matmul precision of parity runs
PRECISION = "highest"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def guess() -> tuple[str, ...]:
    """A cheap guess without importing jax: cpu, plus one cuda:N per GPU the NVIDIA driver lists when
    a CUDA plugin of jaxlib is installed."""
    if not any(_installed(module) for module in CUDA_PLUGINS):
        return ("cpu",)
    try:
        count = sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        count = 0
    return ("cpu",) + tuple(f"cuda:{i}" for i in range(count))


def cpu_threads() -> int:
    """The threads of XLA's CPU pool: intra_op_parallelism_threads from XLA_FLAGS, 1 with
    --xla_cpu_multi_thread_eigen=false alone, else the CPUs this process may run on."""
    flags = os.environ.get("XLA_FLAGS", "")
    match = re.search(r"intra_op_parallelism_threads=(\d+)", flags)
    if match:
        return int(match.group(1))
    if re.search(r"--xla_cpu_multi_thread_eigen=(false|0)", flags):
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpus() -> list:
    """The GPUs jax can use (jax.devices("gpu")), none when it has no GPU backend."""
    import jax

    try:
        return list(jax.devices("gpu"))
    except RuntimeError:  # "Unknown backend gpu" / no CUDA plugin or driver
        return []


def probe() -> tuple[str, ...]:
    """The devices jax can use, exactly: cpu and cuda:0 .. cuda:N-1."""
    return ("cpu",) + tuple(f"cuda:{i}" for i in range(len(gpus())))


def resolve(name: str):
    """The jax Device for "cpu", "cuda[:N]" or "gpu[:N]", or a BackendError saying why it cannot be used."""
    import jax

    match = re.fullmatch(r"(cpu|cuda|gpu)(?::(\d+))?", name.strip().lower())
    if match is None or (match.group(1) == "cpu" and match.group(2) not in (None, "0")):
        raise BackendError(f"backend 'jax' has no device '{name}'; use cpu, cuda[:N] or gpu[:N]")
    if match.group(1) == "cpu":
        return jax.devices("cpu")[0]
    found = gpus()
    index = int(match.group(2) or 0)
    if index >= len(found):
        raise BackendError(f"backend 'jax' cannot use device '{name}': jax {jax.__version__} sees "
                           f"{len(found)} GPU(s) (a GPU needs jax[cuda12] or jax[cuda13])")
    return found[index]


def name_of(device) -> str:
    """crossnn's name of a jax Device: cpu or cuda:N."""
    return "cpu" if device.platform == "cpu" else f"cuda:{gpus().index(device)}"


@contextlib.contextmanager
def scope(dtype: str, device=None):
    """Inside: float64 on for float64 runs (off for float32 ones), matmul precision "highest", and
    `device` (a jax Device) the default device. Nothing outside changes (see the module docstring)."""
    import jax

    with contextlib.ExitStack() as stack:
        stack.enter_context(jax.enable_x64(dtype == "float64"))
        stack.enter_context(jax.default_matmul_precision(PRECISION))
        if device is not None:
            stack.enter_context(jax.default_device(device))
        yield
