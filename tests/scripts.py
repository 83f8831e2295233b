"""Running emitted standalone scripts (`crossnn code`) in subprocesses, two at a time."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_scripts(paths: dict[str, Path], timeout: float = 300) -> dict[str, subprocess.CompletedProcess]:
    """Each script run with this Python, stdout and stderr captured, by the same key."""

    def run(path):
        return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(paths, pool.map(run, paths.values())))
