"""The Python front door (crossnn.load_spec, crossnn.run, Result): it reads like the command line and
shows what the command line shows, because the command line is built on it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import crossnn
from crossnn.cli import main
from crossnn.files import json_text

ROOT = Path(__file__).parents[1]


def _untimed(text: str) -> str:
    """The run table with its timings (the 'train s' column, three decimals) blanked."""
    return re.sub(r"\b\d+\.\d{3}\b", "T", text)


def _without_timings(document):
    if isinstance(document, dict):
        return {k: _without_timings(v) for k, v in document.items() if k not in ("seconds", "build_seconds")}
    if isinstance(document, list):
        return [_without_timings(v) for v in document]
    return document


def test_table_is_the_text_the_command_line_prints(capsys):
    pytest.importorskip("torch")
    result = crossnn.run(crossnn.load_spec("linear-2x3"), backends="numpy,torch")
    assert main(["run", "linear-2x3", "--backends", "numpy,torch", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed == printed.rstrip("\n") + "\n\n"  # the table, then one blank line
    assert _untimed(result.table()) == _untimed(printed[:-2])
    assert "parity: PASS (1 of 1 runs agree)" in result.table()


def test_the_command_line_prints_the_results_table(monkeypatch, capsys):
    """One function makes the table for both: replacing Result.table changes what `crossnn run` prints."""
    monkeypatch.setattr(crossnn.Result, "table", lambda self: f"TABLE OF {self.experiment.name}")
    assert main(["run", "linear-2x3", "--backends", "numpy", "--quiet"]) == 0
    assert capsys.readouterr().out == "TABLE OF linear-2x3\n\n"


def test_to_json_is_the_document_of_run_json(capsys):
    result = crossnn.run("linear-2x3", backends="numpy", dtypes="float64,float32")
    assert main(["run", "linear-2x3", "--backends", "numpy", "--dtype", "float64,float32", "--json", "-"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    from_api = json.loads(json_text(result.to_json()))
    assert _without_timings(from_api) == _without_timings(from_cli)
    assert from_api["runs"][1]["label"] == "numpy float32 cpu default" and from_api["runs"][1]["parity"]["passed"]


def test_runs_by_backend_or_label_and_their_parity():
    pytest.importorskip("torch")
    result = crossnn.run("linear-2x3", backends=["numpy", "torch"], dtypes=["float64", "float32"])
    assert result.labels == ["numpy float64 cpu default", "torch float64 cpu eager", "numpy float32 cpu default",
                             "torch float32 cpu eager"]
    assert result["torch float32 cpu eager"].spec.dtype == "float32"
    with pytest.raises(KeyError, match="backend 'torch' made 2 runs; use a label: torch float64 cpu eager, "
                                       "torch float32 cpu eager"):
        result["torch"]
    with pytest.raises(KeyError, match="no run 'jax'"):
        result["jax"]
    with pytest.raises(KeyError, match="is the reference"):
        result.parity("numpy float64 cpu default")
    # the reference's final parameters are the hand-computed linear-2x3 result in the README
    np.testing.assert_allclose(result["numpy float64 cpu default"].final_params["fc/kernel"].ravel(),
                               [0.40784463, 1.19106518, 1.97428573], atol=1e-8)
    parity = result.parity("torch float64 cpu eager")
    assert parity.passed and parity.max_abs < 1e-12 and result.passed
    # a tolerance no float32 run can meet fails them, and only them
    strict = crossnn.run("linear-2x3", backends="numpy,torch", dtypes="float64,float32", rtol=1e-12, atol=0.0)
    assert not strict.passed
    assert [strict.parity(label).passed for label in strict.labels[1:]] == [True, False, False]


def test_reprs_fit_a_screen():
    """repr of a Result, and of the harness's RunResult, RunRecord and Parity under it, is a few lines,
    not the arrays (circle keeps 500 snapshots of every parameter)."""
    result = crossnn.run("circle", backends="numpy", dtypes="float64,float32", snapshot_every=24)
    for thing in (result, result.harness, result.reference, result["numpy float32 cpu default"],
                  result.parity("numpy float32 cpu default")):
        text = repr(thing)
        assert len(text) < 2000 and len(text.splitlines()) < 25, text
    lines = repr(result).splitlines()
    assert lines[0].startswith("<crossnn.Result circle: PASS (1 of 1 runs agree with numpy float64 cpu default)")
    assert "numpy float32 cpu default" in lines[2] and "max rel" in lines[2]
    assert repr(result.reference).startswith("<RunRecord numpy float64 cpu default: ok, 12000 steps, final loss 0.05")


def test_names_as_one_string_a_comma_list_or_a_list():
    one = crossnn.run("linear-2x3", backends="numpy", dtypes="float32")
    assert one.labels == ["numpy float64 cpu default", "numpy float32 cpu default"]  # not 7 dtypes 'f', 'l', ...
    assert crossnn.run("linear-2x3", backends=("numpy",), dtypes=["float32"]).labels == one.labels
    assert crossnn.run("linear-2x3", backends="numpy", dtypes=" float32 , float64").labels == [
        "numpy float32 cpu default", "numpy float64 cpu default"]


@pytest.mark.parametrize("arguments, error, message", [
    (dict(dtypes="float16"), crossnn.BackendError, "dtypes: unknown dtype 'float16'; use float32 or float64"),
    (dict(dtypes=""), crossnn.BackendError, "dtypes: name a dtype"),
    (dict(backends="numpy,nope"), crossnn.BackendError, "backends: unknown backend 'nope'; installed: numpy"),
    (dict(devices="tpu"), crossnn.BackendError, "devices: unknown device 'tpu'; use cpu or cuda"),
    (dict(modes="warp"), crossnn.BackendError, "modes: no chosen backend has mode 'warp'; their modes: default"),
    (dict(dtypes=3), TypeError, "dtypes: expected a name, names separated by commas, or a list of names, got int 3"),
    (dict(backends=["numpy", None]), TypeError, "backends: expected names"),
    (dict(threads=0), crossnn.SpecError, "threads: must be an integer >= 1, got 0"),
    (dict(threads=True), crossnn.SpecError, "threads: must be an integer >= 1, got True"),
    (dict(snapshot_every=-2), crossnn.SpecError, "snapshot_every: must be an integer >= 1, got -2"),
    (dict(rtol=float("nan")), crossnn.SpecError, "rtol: must be a finite number >= 0, got nan"),
    (dict(atol=-1.0), crossnn.SpecError, "atol: must be a finite number >= 0, got -1.0"),
], ids=lambda value: str(value)[:40] if not isinstance(value, type) else value.__name__)
def test_a_bad_name_or_count_is_one_clear_error(arguments, error, message):
    arguments = {"backends": "numpy", **arguments}
    with pytest.raises(error) as caught:
        crossnn.run("linear-2x3", **arguments)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_load_spec_reads_files_and_examples(tmp_path):
    assert crossnn.load_spec("two-tower") == crossnn.example("two-tower")
    path = tmp_path / "mine.toml"
    crossnn.save(crossnn.example("line"), path)
    assert crossnn.load_spec(path) == crossnn.load_spec(str(path)) == crossnn.example("line")
    with pytest.raises(crossnn.SpecError, match="no such spec file: nowhere.toml"):
        crossnn.load_spec("nowhere.toml")
    with pytest.raises(crossnn.SpecError, match="'circel' is neither a spec file nor an example"):
        crossnn.load_spec("circel")


def test_modes_take_a_list_and_say_which_backend_ran_which():
    pytest.importorskip("torch")
    both = crossnn.run("linear-2x3", backends="numpy,torch", modes="default,xp")
    assert both.labels == ["numpy float64 cpu default", "torch float64 cpu xp"] and both.passed
    assert both.notes == ["modes default,xp: numpy runs default; torch runs xp"]
    with pytest.raises(crossnn.BackendError, match="modes: backend 'torch' has none of the modes default; "
                                                   "its modes: eager, xp, compile, onednn"):
        crossnn.run("linear-2x3", backends="numpy,torch", modes="default")
    # backends not named: those without a listed mode are left out, and the notes say so
    torch_only = crossnn.run("linear-2x3", modes="onednn")
    assert torch_only.labels == ["numpy float64 cpu default", "torch float64 cpu onednn"]  # the reference runs anyway
    assert "backend 'numpy' left out: modes names none of its modes (default)" in torch_only.notes
    assert torch_only.notes[-1] == "modes onednn: torch runs onednn"
    two = crossnn.run("linear-2x3", backends="torch", modes="eager,xp")
    assert two.labels == ["numpy float64 cpu default", "torch float64 cpu eager", "torch float64 cpu xp"]
    assert two.notes == ["modes eager,xp: torch runs eager, xp"] and two.passed


def test_threads_are_set_and_recorded(restore_threads):
    pytest.importorskip("torch")
    pytest.importorskip("threadpoolctl")
    import torch
    from crossnn_numpy.device import blas_threads

    result = crossnn.run("linear-2x3", backends="numpy,torch", threads=3)
    assert torch.get_num_threads() == 3 and blas_threads() == 3
    assert [record.threads for record in result.runs] == [3, 3]
    document = result.to_json()
    assert document["threads"] == 3 and [run["threads"] for run in document["runs"]] == [3, 3]


def test_a_fresh_interpreter_runs_circle_on_numpy_and_torch():
    """The issue's acceptance, as a user would type it: passed, the table, a one-screen repr."""
    pytest.importorskip("torch")
    code = ("import crossnn\n"
            "r = crossnn.run(crossnn.load_spec('circle'), backends='numpy,torch')\n"
            "print(r.passed)\nprint(r.table())\nprint('REPR')\nprint(repr(r))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    passed, rest = done.stdout.split("\n", 1)
    table, representation = rest.split("REPR\n")
    assert passed == "True"
    assert "torch float64 cpu eager" in table and "parity: PASS (1 of 1 runs agree)" in table
    assert len(representation) < 2000 and len(representation.splitlines()) < 25
    assert "accuracy" in table  # circle's final metrics are in the run table


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(capsys):
    pytest.importorskip("torch")
    exec(compile(_readme_example(), "README.md (Use from Python)", "exec"), {})
    out = capsys.readouterr().out
    assert "parity: PASS" in out and "<crossnn.Result circle: PASS" in out
