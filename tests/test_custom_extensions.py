"""The README's worked example: a user-defined layer and optimizer registered from user code (seed
004's My_Linear and momentum SGD) agree across every installed backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from crossnn import backends

EXAMPLE = Path(__file__).parents[1] / "examples" / "custom_layer.py"


def test_worked_example_runs_with_parity_on_every_backend():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.endswith("parity ok")]
    assert {line.split()[0] for line in lines} == set(backends.available())
    accuracies = {line.split("accuracy")[1].split()[0] for line in lines}
    assert len(accuracies) == 1  # the same model everywhere
