"""What the benchmarks ran on: CPU, cores, memory, GPUs, library versions and thread settings,
read without importing any framework; and the machine's measured matrix-multiply peak."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def gpus() -> list[str]:
    """NVIDIA GPU names from nvidia-smi, or from the driver's /proc entries; [] without a GPU."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and names:
                return names
        except (OSError, subprocess.TimeoutExpired):
            pass
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text().splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    return names


def blas_threads() -> dict[str, int]:
    """NumPy's BLAS thread pools (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {f"{info['internal_api']} ({info['prefix']})": info["num_threads"] for info in threadpool_info()}


def describe() -> dict:
    return {
        "host": platform.node(), "cpu": cpu_model(), "logical_cores": os.cpu_count(), "memory_gib": memory_gib(),
        "gpus": gpus(), "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "numpy_blas_threads": blas_threads(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "OPENBLAS_CORETYPE", "TF_ENABLE_ONEDNN_OPTS") if k in os.environ},
    }


def kind(info: dict) -> str:
    """The kind of machine a description is of, in words: CPU model, logical cores, memory and GPUs.
    Benchmarks from machines of one kind are comparable; reports group rows by it."""
    gpus = info.get("gpus") or []
    memory = f", {info['memory_gib']:.0f} GiB" if info.get("memory_gib") else ""
    return (f"{info.get('cpu', '?')}, {info.get('logical_cores', '?')} logical cores{memory}, "
            + (f"GPU {', '.join(gpus)}" if gpus else "no GPU"))


def same_machine(a: dict, b: dict) -> bool:
    """Whether two descriptions are of the same machine: the same kind and operating system, and the
    same host where both name one. What a process loaded (its BLAS thread pools, library versions,
    environment) does not make it another machine."""
    if kind(a) != kind(b) or a.get("platform") != b.get("platform"):
        return False
    return not (a.get("host") and b.get("host") and a["host"] != b["host"])


def numpy_matmul_gflops(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """Best-of-repeats GFLOP/s of an n×n by n×n NumPy matmul (2 n³ flops)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def median_iqr(values: list[float]) -> tuple[float, float]:
    """Median and interquartile range (0 for fewer than 2 values)."""
    if len(values) < 2:
        return (values[0] if values else float("nan")), 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q[2] - q[0]
