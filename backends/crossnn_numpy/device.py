"""Devices: NumPy computes on the CPU; with CuPy installed and an NVIDIA GPU present, the same
backend code runs on the GPU ("cuda:N") through CuPy's NumPy-compatible namespace (crossnn_numpy.xp)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from crossnn.errors import BackendError

#: where the NVIDIA driver lists one folder per GPU
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def guess() -> tuple[str, ...]:
    """cpu, plus cuda:N per GPU the driver lists when CuPy is installed (imports nothing)."""
    try:
        has_cupy = importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):
        has_cupy = False
    try:
        count = sum(1 for _ in NVIDIA_GPUS.iterdir()) if has_cupy else 0
    except OSError:
        count = 0
    return ("cpu",) + tuple(f"cuda:{i}" for i in range(count))


def probe() -> tuple[str, ...]:
    """cpu, plus the GPUs CuPy can use."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver, no GPU: the CPU only
        count = 0
    return ("cpu",) + tuple(f"cuda:{i}" for i in range(count))


def resolve(name: str) -> int | None:
    """None for the CPU, the GPU index for "cuda" / "cuda:N" (checked with CuPy)."""
    if name == "cpu":
        return None
    kind, _, index = name.partition(":")
    if kind not in ("cuda", "gpu") or (index and not index.isdigit()):
        raise BackendError(f"backend 'numpy' has no device '{name}'; it has cpu, and cuda:N with CuPy")
    gpus = probe()[1:]
    number = int(index or 0)
    if number >= len(gpus):
        raise BackendError(f"backend 'numpy' cannot use device '{name}': "
                           + ("CuPy is not installed" if importlib.util.find_spec("cupy") is None
                              else f"CuPy sees {len(gpus)} GPU(s)"))
    return number


def _numpy_blas(pools: list[dict]) -> list[dict]:
    """The BLAS pools NumPy itself links (its wheels ship them under numpy.libs), else every BLAS pool."""
    blas = [pool for pool in pools if pool.get("user_api") == "blas"]
    own = [pool for pool in blas if "numpy" in str(pool.get("filepath", ""))]
    return own or blas


def blas_threads() -> int | None:
    """The thread count of NumPy's BLAS library (threadpoolctl), or None when threadpoolctl is not
    installed or no BLAS library is loaded."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = _numpy_blas(threadpool_info())
    return max(pool["num_threads"] for pool in pools) if pools else None


def set_blas_threads(n: int) -> None:
    """Limit the BLAS libraries loaded in this process to n threads (threadpoolctl), for the rest of it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise BackendError("backend 'numpy' cannot set its thread count: threadpoolctl is not installed "
                           "(pip install threadpoolctl)") from None
    threadpool_limits(limits=n, user_api="blas")
