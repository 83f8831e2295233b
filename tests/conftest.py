"""Shared test set-up: framework import order, fixed threads, and backend parametrisation.

torch is imported before tensorflow (importing them the other way round has crashed in the past),
and every backend that is not installed is skipped with its reason, never silently.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401  (import order: torch first)

from crossnn import backends  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--parity-examples", type=int, default=42,
                     help="hypothesis examples in the property-based parity tests (default 42: one per loss and "
                          "optimizer cell; CI's slow run uses 200)")


def backend_params(names=None):
    """pytest params over the installed backends; unavailable ones are skipped with the reason."""
    params = []
    for name, entry in backends.discover().items():
        if names is not None and name not in names:
            continue
        marks = [] if entry.available else [pytest.mark.skip(reason=f"backend '{name}' unavailable: {entry.reason}")]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def pytest_generate_tests(metafunc):
    """Tests taking `backend_name` run once per installed backend, unless they choose their own."""
    chosen = any("backend_name" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize"))
    if "backend_name" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("backend_name", backend_params())


@pytest.fixture
def restore_threads():
    """Thread counts are process-wide (--threads, crossnn.run(threads=)): put torch's and the BLAS
    libraries' back after the test."""
    torch = pytest.importorskip("torch")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    pools = threadpoolctl.threadpool_info()
    yield
    torch.set_num_threads(before)
    for pool in pools:
        threadpoolctl.threadpool_limits(limits=pool["num_threads"], user_api=pool["user_api"])
