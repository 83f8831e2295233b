"""Devices and parity settings: "cpu", and "gpu:N" (also spelled "gpu", "cuda", "cuda:N") when
TensorFlow lists a GPU.

`guess` imports nothing (it backs `crossnn list`); everything else imports TensorFlow when called.

oneDNN (TF_ENABLE_ONEDNN_OPTS): TF's x86 Linux builds run some float32 kernels (matmul among them)
through oneDNN, which orders sums differently from TF's Eigen kernels. The switch is read once, when
TensorFlow is imported, so a plugin could only set it by changing the process environment before any
import of TF — changing the user's own TF code too. Measured here (TF 2.21 tensorflow-cpu, 2-core AMD
EPYC, the seed experiments in every mode, oneDNN on vs off): float64 results are bit-identical (no
oneDNN kernels for float64); XLA results are bit-identical in both dtypes; float32 graph/eager
results differ at float32 rounding level (circle after 12,000 steps: 1.8e-4 absolute), and neither
setting is consistently closer to NumPy (circle: on is closer; adder: off matches NumPy float32
bit for bit). So the backend leaves TF's default alone and reports the setting in
Trainer.describe(); export TF_ENABLE_ONEDNN_OPTS=0 before starting Python to compare without it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import sys
from pathlib import Path

from crossnn.errors import BackendError

#: where the NVIDIA driver lists one folder per GPU
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
#: distributions of TensorFlow that never have GPU kernels
CPU_ONLY_DISTRIBUTIONS = ("tensorflow-cpu", "intel-tensorflow")
#: inter-op threads: the models are chains of small ops, so one scheduler thread; intra-op threads
#: (inside a matmul or an elementwise op): every core this process may run on
INTER_OP_THREADS = 1

_NAME = re.compile(r"^(cpu|gpu|cuda)(?::(\d+))?$")


def guess() -> tuple[str, ...]:
    """A cheap guess without importing TF: cpu, plus gpu:N per GPU the NVIDIA driver lists unless
    the installed TensorFlow is a CPU-only distribution."""
    if not _installed("tensorflow") or any(_installed(d) for d in CPU_ONLY_DISTRIBUTIONS):
        return ("cpu",)
    try:
        count = sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        count = 0
    return ("cpu",) + tuple(f"gpu:{i}" for i in range(count))


def probe() -> tuple[str, ...]:
    """The devices TF can use, exactly: cpu and gpu:0 .. gpu:N-1."""
    tf = import_tensorflow()

    return ("cpu",) + tuple(f"gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU"))))


#: intra-op threads chosen through set_intra_op_threads (crossnn run --threads); None: intra_op_threads' default
_chosen_intra_op_threads: list[int] = []


def intra_op_threads() -> int:
    """The chosen count, else every core this process may run on."""
    if _chosen_intra_op_threads:
        return _chosen_intra_op_threads[-1]
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_intra_op_threads(n: int) -> None:
    """Use n intra-op threads from now on (configure keeps them). TensorFlow fixes its thread pools
    when it runs its first op; after that, a different count is refused with a one-line BackendError."""
    tf = import_tensorflow()
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current != n:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
        except RuntimeError:  # the runtime is already initialised
            raise BackendError(f"backend 'tensorflow' cannot change its intra-op threads to {n}: TensorFlow fixes them "
                               f"when it runs its first op, which it has done in this process (they are {current})"
                               ) from None
    _chosen_intra_op_threads[:] = [n]


#: set beside TF_CPP_MIN_LOG_LEVEL when crossnn chose the level, so a child process (a benchmark's),
#: which inherits both, still knows the level is not the user's choice and keeps the notices quiet
_LEVEL_CHOSEN_BY_CROSSNN = "CROSSNN_TF_CPP_MIN_LOG_LEVEL"


def import_tensorflow():
    """Import TF with its C++ start-up chatter (oneDNN notices, CPU-feature hints, and, below level 2,
    grappler's per-graph warnings) kept off the terminal, unless the user chose TF_CPP_MIN_LOG_LEVEL.
    The notices are printed before TF's logging starts, so they are silenced by pointing file
    descriptor 2 at /dev/null for the import only; Python exceptions still propagate."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if "tensorflow" in sys.modules or (level is not None and level != os.environ.get(_LEVEL_CHOSEN_BY_CROSSNN)):
        import tensorflow as tf

        return tf
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ[_LEVEL_CHOSEN_BY_CROSSNN] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tf


def configure() -> None:
    """Parity settings: deterministic ops, TF32 off, fixed thread counts. Thread counts can only be
    set before TF's runtime starts; if TF already ran ops in this process, its counts are kept (and
    reported by `threads`)."""
    tf = import_tensorflow()

    tf.config.experimental.enable_op_determinism()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        if tf.config.threading.get_intra_op_parallelism_threads() != intra_op_threads():
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads())
        if tf.config.threading.get_inter_op_parallelism_threads() != INTER_OP_THREADS:
            tf.config.threading.set_inter_op_parallelism_threads(INTER_OP_THREADS)
    except RuntimeError:  # the runtime is already initialised
        pass


def threads() -> str:
    """The thread counts in effect ("0" is TF's own choice: one per core)."""
    import tensorflow as tf

    return (f"intra-op {tf.config.threading.get_intra_op_parallelism_threads()}, "
            f"inter-op {tf.config.threading.get_inter_op_parallelism_threads()} threads")


def onednn_enabled() -> bool:
    """Whether TF's oneDNN kernels are on in this process (TF_ENABLE_ONEDNN_OPTS, read at import)."""
    from tensorflow.python.util import _pywrap_util_port  # TF's own switch; no public API reports it

    return bool(_pywrap_util_port.IsMklEnabled())


def onednn() -> str:
    return "oneDNN on" if onednn_enabled() else "oneDNN off"


def settings() -> dict[str, object]:
    """What affects speed and numerics in this process: TF version, thread counts (0 = TF's own
    choice), op determinism, TF32, oneDNN."""
    import tensorflow as tf
    from tensorflow.python.framework import config  # is_op_determinism_enabled has no public alias

    return {
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "op_determinism": bool(config.is_op_determinism_enabled()),
        "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        "onednn": onednn_enabled(),
    }


def matmul_gflops(n: int, dtype: str, device: str, repeats: int = 10) -> float:
    """Best-of-`repeats` GFLOP/s (2 n³ flops) of tf.linalg.matmul of two n×n matrices on `device`,
    after one warm-up product. Each timed product is forced by reading one element of its result
    back to the host, which waits for the whole product (on a GPU too)."""
    import time

    import numpy as np
    import tensorflow as tf

    where = resolve(device)
    rng = np.random.default_rng(0)
    with tf.device(where):
        a, b = (tf.identity(tf.constant(rng.standard_normal((n, n)), dtype=dtype)) for _ in range(2))
        tf.linalg.matmul(a, b)[0, 0].numpy()  # warm-up: kernel selection, thread pool start
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tf.linalg.matmul(a, b)[0, 0].numpy()
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def resolve(name: str) -> str:
    """TF's device string ("/CPU:0", "/GPU:N") for "cpu", "gpu[:N]" or "cuda[:N]", or a BackendError
    saying why it cannot be used."""
    match = _NAME.match(name.strip().lower())
    if match is None or (match[1] == "cpu" and match[2] not in (None, "0")):
        raise BackendError(f"backend 'tensorflow' has no device '{name}'; use cpu, gpu[:N] or cuda[:N]")
    if match[1] == "cpu":
        return "/CPU:0"
    import tensorflow as tf

    index = int(match[2] or 0)
    count = len(tf.config.list_physical_devices("GPU"))
    if index >= count:
        raise BackendError(f"backend 'tensorflow' cannot use device '{name}': TensorFlow {tf.__version__} "
                           f"sees {count} GPU(s)")
    return f"/GPU:{index}"


def synchronize(device: str) -> None:
    """Wait for queued GPU work (nothing to wait for on the CPU)."""
    if device.startswith("/GPU"):
        import tensorflow as tf

        tf.test.experimental.sync_devices()


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@contextlib.contextmanager
def floatx(dtype: str):
    """Keras' float type set to `dtype` for the block, as a float64 Keras program sets it: floatx (the
    dtype of an optimizer's learning-rate variable) and the global dtype policy (the dtype of new
    layers' weights and computations). Both are needed: Keras fixes the global policy from floatx
    the first time any layer is made, so after one float32 layer in the process, set_floatx alone
    no longer makes float64 layers."""
    import keras

    before, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(before)
        keras.config.set_dtype_policy(policy)
