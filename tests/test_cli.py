"""The command line: bad input gives one line naming the field and exit status 2; runs give
parity tables, JSON and the right exit status; start-up stays fast."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from crossnn import examples
from crossnn.cli import main

CIRCLE = examples.path("circle").read_text()
LINEAR = examples.path("linear-2x3").read_text()
TWO_TOWER = examples.path("two-tower").read_text()


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _csv_with_header(tmp: Path) -> str:
    (tmp / "named.csv").write_text("a,b,c,y\n1,2,3,4\n4,5,6,7\n")
    return _edit(LINEAR, 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]', 'path = "named.csv"')


def _bad_npz(tmp: Path) -> str:
    (tmp / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    return _edit(LINEAR, 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]', 'path = "broken.npz"')


def _wrong_key_npz(tmp: Path) -> str:
    np.savez(tmp / "keys.npz", inputs=np.zeros((2, 3)), y=np.zeros((2, 1)))
    return _edit(LINEAR, 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]', 'path = "keys.npz"')


def _text_csv(tmp: Path) -> str:
    (tmp / "words.csv").write_text("1,2,3,x\n4,5,6,y\n")
    return _edit(LINEAR, 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]', 'path = "words.csv"')


def _sparse_out_of_range(tmp: Path) -> str:
    text = _edit(LINEAR, 'y = [[10.0], [20.0]]', 'y = [0, 7]')
    text = _edit(text, "units = 1", "units = 3")
    return _edit(text, 'type = "mse"', 'type = "cross_entropy"\nfrom_logits = true\nsparse = true')


# (name, spec text or a function of tmp_path giving it, extra CLI args, fragment the one line must contain)
BAD_INPUTS = [
    ("unknown layer type", _edit(CIRCLE, 'type = "dense"', 'type = "dens"'),
     [], "model.layers[0].type: unknown layer type 'dens' (did you mean 'dense'?)"),
    ("negative units", _edit(CIRCLE, "units = 5", "units = -5"), [], "model.layers[0].units: must be > 0, got -5"),
    ("missing key", _edit(CIRCLE, "units = 5\n", ""), [], "model.layers[0]: missing key 'units' for layer 'dense'"),
    ("missing section", _edit(CIRCLE, '[loss]\ntype = "bce"\nlog_min = -100.0\n', ""), [], "missing key 'loss'"),
    ("data/model shape mismatch", _edit(LINEAR, "inputs = 3", "inputs = 4"), [],
     "data.x: has 3 feature column(s) but model.inputs = 4"),
    ("y columns mismatch", _edit(LINEAR, "y = [[10.0], [20.0]]", "y = [[10.0, 1.0], [20.0, 2.0]]"), [],
     "data.y: has 2 column(s) but the model outputs 1"),
    ("unknown input name", _edit(TWO_TOWER, 'inputs = ["dense1", "dense2"]', 'inputs = ["dense1", "dense9"]'), [],
     "model.layers[2].inputs: unknown input 'dense9'"),
    ("cycle in a graph", _edit(TWO_TOWER, 'name = "dense1"\nunits = 1\nactivation = "linear"\nuse_bias = true\n'
                               'kernel_init = "glorot_uniform"\nbias_init = "zeros"\ninputs = ["input"]',
                               'name = "dense1"\nunits = 1\nactivation = "linear"\nuse_bias = true\n'
                               'kernel_init = "glorot_uniform"\nbias_init = "zeros"\ninputs = ["dense3"]'), [],
     "the layers form a cycle"),
    ("NaN in data", _edit(LINEAR, "x = [[1.0, 2.0, 3.0]", "x = [[nan, 2.0, 3.0]"), [], "data.x[0][0]: value is nan"),
    ("unknown initializer", _edit(CIRCLE, 'kernel_init = "fan_in_uniform"', 'kernel_init = "xavier"'), [],
     "model.layers[0].kernel_init.type: unknown initializer type 'xavier'"),
    ("wrong value type", _edit(CIRCLE, "units = 5", 'units = "five"'), [],
     "model.layers[0].units: expected an integer, got string 'five'"),
    ("wrong type for a table", _edit(CIRCLE, "epochs = 1000", "epochs = 1000.5"), [],
     "train.epochs: expected an integer, got float 1000.5"),
    ("unreadable data file", _edit(LINEAR, 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]',
                                   'path = "missing.npz"'), [], "data.path: cannot read missing.npz"),
    ("truncated npz", _bad_npz, [], "data.path: cannot read broken.npz"),
    ("npz without the key", _wrong_key_npz, [], "data.path: keys.npz has no array 'x'"),
    ("non-numeric csv", _text_csv, [], "data.path: cannot read words.csv"),
    ("unknown backend", LINEAR, ["--backends", "numpy,mxnet"], "unknown backend 'mxnet'"),
    ("unknown dtype", LINEAR, ["--dtype", "float16"], "--dtype: unknown dtype 'float16'"),
    ("invalid TOML", LINEAR + "\n[train\n", [], "not valid TOML"),
    ("unknown top-level key", "learning_rate = 0.1\n" + LINEAR, [], "unknown top-level key 'learning_rate'"),
    ("misspelt key", _edit(CIRCLE, "units = 5", "unit = 5"), [],
     "unknown key 'unit' for layer 'dense' (did you mean 'units'?)"),
    ("zero learning rate", _edit(LINEAR, "lr = 0.01", "lr = 0.0"), [], "optimizer.lr: must be > 0, got 0.0"),
    ("momentum out of range", _edit(CIRCLE, "momentum = 0.8", "momentum = 1.5"), [],
     "optimizer.momentum: must be in [0, 1), got 1.5"),
    ("adam without eps", _edit(TWO_TOWER, "eps = 1e-08\n", ""), [],
     "optimizer.eps: missing (torch uses 1e-8, keras 1e-7; write it, or set defaults = \"torch\" or \"keras\""),
    ("activation needing a parameter", _edit(CIRCLE, 'activation = "sigmoid"', 'activation = "leaky_relu"'), [],
     "model.layers[0].activation.negative_slope: missing (torch uses 0.01, keras 0.2; write { type = \"leaky_relu\""),
    ("sparse labels out of range", _sparse_out_of_range, [], "data.y: class indices must lie in [0, 2]"),
    ("duplicate layer names", _edit(CIRCLE, 'name = "fc2"', 'name = "fc1"'), [], "duplicate layer name 'fc1'"),
    ("zero batch size", _edit(CIRCLE, "batch_size = 100", "batch_size = 0"), [], "train.batch_size: must be > 0"),
    ("batch_norm on a one-sample last batch",  # 1200 rows = 11 x 109 + 1
     _edit(_edit(_edit(CIRCLE, "batch_size = 100", "batch_size = 109"), "seed = 0", 'seed = 0\ndefaults = "torch"'),
           '[[model.layers]]\ntype = "dense"\nname = "fc2"',
           '[[model.layers]]\ntype = "batch_norm"\nname = "bn"\n\n[[model.layers]]\ntype = "dense"\nname = "fc2"'),
     [], "spec.toml: train.batch_size: a batch of 1 sample(s) gives layer 'bn' (batch_norm) 1 value per channel; batch "
         "statistics need at least 2 (PyTorch refuses training on one); set drop_last = true"),
    ("negative seed", _edit(CIRCLE, "seed = 0", "seed = -3"), [], "seed: must be >= 0, got -3"),
    ("unknown generator", _edit(CIRCLE, 'generator = "circle"', 'generator = "circles"'), [],
     "data.generator: unknown data generator 'circles' (did you mean 'circle'?)"),
    ("missing spec file", None, ["nowhere.toml"], "no such spec file: nowhere.toml"),
    ("unknown example", None, ["circel"], "'circel' is neither a spec file nor an example"),
    ("unknown option", LINEAR, ["--epochs", "3"], "unrecognized arguments: --epochs 3"),
    ("NaN tolerance", LINEAR, ["--rtol", "nan"], "--rtol: must be a finite number >= 0, got nan"),
    ("negative tolerance", LINEAR, ["--atol", "-1"], "--atol: must be a finite number >= 0, got -1.0"),
    ("unknown device", LINEAR, ["--device", "tpu"], "--device: unknown device 'tpu'; use cpu or cuda[:N]"),
    ("csv with a header line", _csv_with_header, [], "(if the first line holds column names, set header = true)"),
    ("zero threads", LINEAR, ["--threads", "0"], "--threads: must be an integer >= 1, got 0"),
    ("a mode no backend has", LINEAR, ["--backends", "numpy", "--mode", "warp"],
     "--mode: no chosen backend has mode 'warp'; their modes: default"),
    ("a named backend without a listed mode", LINEAR, ["--backends", "numpy,torch", "--mode", "eager"],
     "--mode: backend 'numpy' has none of the modes eager; its modes: default"),
    ("metric that does not apply", _edit(LINEAR, "metrics = []", 'metrics = ["accuracy"]'), [],
     "train.metrics: accuracy needs a classification loss (bce, bce_logits or cross_entropy), not mse"),
]


def _cupy_gpu() -> bool:
    from crossnn_numpy.device import probe

    return len(probe()) > 1


@pytest.mark.skipif(_cupy_gpu(), reason="CuPy sees a GPU here: the named numpy backend runs on it")
def test_a_named_numpy_backend_goes_to_the_named_gpu_or_refuses(tmp_path, capsys):
    """Named, the reference backend runs where --device sends it (through CuPy); without CuPy that is
    one line, not a quiet CPU run under a GPU label. Unnamed, it stays the CPU reference."""
    spec = tmp_path / "spec.toml"
    spec.write_text(LINEAR)
    assert main(["run", "--quiet", str(spec), "--backends", "numpy", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()  # "CuPy is not installed", or "CuPy sees 0 GPU(s)"
    assert err.startswith("crossnn: error: --device: backend 'numpy' cannot use device 'cuda': CuPy ")
    assert "\n" not in err
    from crossnn.selection import select_runs

    assert [r.device for r in select_runs(devices="cuda").runs if r.backend == "numpy"] == ["cpu"]
    assert [r.device for r in select_runs("numpy", devices="cpu,cuda").runs] == ["cpu", "cuda"]


@pytest.mark.parametrize("name, text, args, fragment", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, name, text, args, fragment):
    argv = ["run", "--quiet"]
    if text is not None:
        spec = tmp_path / "spec.toml"
        spec.write_text(text(tmp_path) if callable(text) else text)
        argv.append(str(spec))
    try:
        code = main(argv + args)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("crossnn: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in captured.err


def test_there_are_at_least_twenty_bad_input_cases():
    assert len(BAD_INPUTS) >= 20


def test_debug_shows_the_traceback(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(_edit(CIRCLE, "units = 5", "units = -5"))
    assert main(["--debug", "run", str(spec)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_run_prints_parity_and_writes_json(tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["run", "linear-2x3", "--backends", "numpy", "--dtype", "float64,float32", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "numpy float32 cpu default" in text and "parity: PASS" in text
    assert "fc/kernel (3, 1): [0.40784463 1.19106518 1.97428573]" in text
    data = json.loads(out.read_text())
    assert data["experiment"]["name"] == "linear-2x3" and data["dtypes"] == ["float32", "float64"]
    ref, f32 = data["runs"]
    assert ref["reference"] and ref["backend"] == "numpy" and ref["dtype"] == "float64"
    np.testing.assert_allclose(np.array(ref["final_params"]["fc/kernel"]).ravel(),
                               [0.40784463, 1.19106518, 1.97428573], atol=1e-8)
    assert ref["initial_params"] == {"fc/kernel": [[0.0], [0.0], [0.0]], "fc/bias": [0.0]}
    assert len(ref["losses"]) == 100 and ref["losses"][0] == 250.0
    assert ref["seconds"] > 0 and ref["version"] == np.__version__
    assert f32["parity"]["passed"] and f32["parity"]["max_abs"] < 1e-5
    assert set(f32["parity"]["params"]) == {"fc/kernel", "fc/bias"}
    assert data["parity"]["passed"]


def test_parity_failure_exits_1(capsys):
    """float32 held to a float64 tolerance fails, and the table says where."""
    code = main(["run", "two-tower", "--backends", "numpy", "--dtype", "float32", "--rtol", "1e-12", "--atol", "0",
                 "--quiet"])
    text = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in text and "parity: FAIL (0 of 1 runs agree)" in text


def test_show_summarises_layers_and_counts(capsys):
    assert main(["show", "two-tower"]) == 0
    text = capsys.readouterr().out
    assert "total parameters: 13" in text
    assert "concat  concatenate  dense1, dense2" in text
    assert "(N, 3)" in text
    assert main(["show", "token-sums"]) == 0  # initializers in words, LSTM's unit_forget_bias included
    text = capsys.readouterr().out
    assert "recurrent_kernel (16, 64) orthogonal(gain=1.0), bias (64,) zeros with the forget gate's 16 at 1" in text
    assert "x (750, 12), y (750,) for training, 250 samples held out (train.validation_split)" in text


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "crossnn", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


@pytest.mark.parametrize("args", [["--help"], ["list"]])
def test_startup_imports_no_framework(args):
    """`crossnn --help` and `crossnn list` stay fast because they import neither torch nor
    tensorflow; the time they take is printed (about 0.2 s here), not asserted."""
    probe = ("import sys, time, runpy; t = time.perf_counter(); sys.argv = ['crossnn'] + %r\n"
             "try:\n    runpy.run_module('crossnn', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('SECONDS', time.perf_counter() - t, 'torch' in sys.modules, 'tensorflow' in sys.modules)") % args
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    seconds, torch_loaded, tf_loaded = done.stdout.split("SECONDS")[1].split()
    print(f"crossnn {' '.join(args)}: {float(seconds):.2f} s in-process")
    assert torch_loaded == "False" and tf_loaded == "False"


def test_list_shows_backends_and_examples():
    done = _cli("list")
    assert done.returncode == 0
    assert "numpy" in done.stdout and "reference" in done.stdout
    assert f"examples: {', '.join(examples.names())}" in done.stdout and "adder, circle, digits" in done.stdout


def test_a_broken_plugin_is_listed_unavailable_and_the_rest_work(tmp_path):
    """A plugin whose import fails shows its error in `crossnn list`; numpy still runs."""
    site = tmp_path / "site"
    (site / "brokenbackend-1.0.dist-info").mkdir(parents=True)
    (site / "brokenbackend-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: brokenbackend\nVersion: 1.0\n")
    (site / "brokenbackend-1.0.dist-info" / "entry_points.txt").write_text(
        "[crossnn.backends]\nbroken = brokenbackend:Backend\n")
    (site / "brokenbackend.py").write_text("raise ImportError('libbroken.so: cannot open shared object file')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listing = _cli("list", env=env)
    assert listing.returncode == 0
    line = next(row for row in listing.stdout.splitlines() if row.strip().startswith("broken"))
    assert "no" in line and "plugin failed to load: ImportError: libbroken.so" in line
    run = _cli("run", "linear-2x3", "--backends", "numpy", "--quiet", env=env)
    assert run.returncode == 0 and "0.40784463" in run.stdout
    asked = _cli("run", "linear-2x3", "--backends", "broken", env=env)
    assert asked.returncode == 2
    assert asked.stderr.strip() == ("crossnn: error: --backends: backend 'broken' is unavailable: plugin failed to "
                                    "load: ImportError: libbroken.so: cannot open shared object file")


def test_cli_subprocess_bad_input_has_no_traceback(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(textwrap.dedent(CIRCLE).replace("units = 5", "units = 0"))
    done = _cli("run", str(spec))
    assert done.returncode == 2
    assert done.stderr.strip() == f"crossnn: error: {spec}: model.layers[0].units: must be > 0, got 0"


def test_several_specs_and_the_seed_suite(tmp_path, capsys):
    out = tmp_path / "suite.json"
    assert main(["run", "linear-2x3", "line", "--backends", "numpy", "--dtype", "float32", "--quiet",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "==== linear-2x3" in text and "==== line" in text
    assert "training time per run, all experiments:" in text
    documents = json.loads(out.read_text())["experiments"]
    assert [d["experiment"]["name"] for d in documents] == ["linear-2x3", "line"]

    assert set(examples.SEEDS) == {"adder", "line", "linear-2x3", "two-tower", "circle"} <= set(examples.names())


def test_large_parameters_print_shortened(tmp_path, capsys):
    """A 30-value kernel prints as its first and last three values; the 1-value bias in full."""
    x = [[float(i + j) / 30 for i in range(30)] for j in range(2)]
    spec = tmp_path / "wide.toml"
    spec.write_text(f'name = "wide"\nseed = 0\n[data]\nx = {x}\ny = [[1.0], [2.0]]\n[model]\ninputs = 30\n'
                    '[[model.layers]]\ntype = "dense"\nname = "fc"\nunits = 1\nactivation = "linear"\n'
                    'use_bias = true\nkernel_init = "zeros"\nbias_init = "zeros"\n[loss]\ntype = "mse"\n'
                    '[optimizer]\ntype = "sgd"\nlr = 0.01\n'
                    '[train]\nepochs = 1\nbatch_size = 2\n')
    assert main(["run", str(spec), "--backends", "numpy"]) == 0
    text = capsys.readouterr().out
    assert "tensors over 24 values shortened, all of them in --json" in text
    kernel = next(line for line in text.splitlines() if line.startswith("  fc/kernel (30, 1): "))
    assert kernel.count("...") == 1 and len(kernel.split("...")[0].split()) == 3 + 3
    assert "  fc/bias (1,): [0.03" in text


def test_native_flavour_prints_the_catalog_entries_behind_its_divergence(capsys):
    """`run --flavor native` lowers with torch's own defaults: the parity verdict fails (exit 1) and a
    second table names the entries (nn.Linear's initialisation here) and the divergence each causes."""
    pytest.importorskip("torch")
    code = main(["run", "two-tower", "--flavor", "native", "--backends", "torch"])
    text = capsys.readouterr().out
    assert code == 1 and "torch float64 cpu eager native" in text and "parity: FAIL" in text
    table = text.split("catalog entries behind the native runs' divergence")[1]
    row = next(line for line in table.splitlines() if "default-init" in line)
    assert row.split()[0] == "torch" and "kaiming_uniform_" in table
    assert "adam-epsilon" not in row and "entries that do not apply to this spec:" in table


def test_diff_measures_the_entries_that_apply(capsys):
    pytest.importorskip("torch")
    assert main(["diff", "two-tower", "--backends", "torch"]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.startswith("  default-init")]
    assert rows and rows[0][1] == "torch" and float(rows[0][-2]) > 0.1  # final rel: a different start
    assert "momentum-sgd" not in text  # two-tower trains with Adam
    assert "weight-layout: nn.Linear(3, 2).weight has shape [2, 3] (out, in)" in text


@pytest.mark.parametrize("framework, suffix, keeps_optimizer", [("torch", ".pt", True),
                                                                ("tensorflow", ".weights.h5", False)])
def test_export_and_import_round_trip_through_the_cli(tmp_path, capsys, framework, suffix, keeps_optimizer):
    """Stop after 40 steps, export to the framework's own file, import it back: the parameters (and,
    for torch's state_dicts, Adam's moments and step) come back bit for bit."""
    pytest.importorskip(framework)
    from crossnn.checkpoint import load_checkpoint

    saved, native, back = tmp_path / "ck.npz", tmp_path / f"model{suffix}", tmp_path / "back.npz"
    assert main(["run", "two-tower", "--backends", "numpy", "--stop-after", "40", "--save", str(saved)]) == 0
    assert main(["export", str(saved), "--backend", framework, "--out", str(native)]) == 0
    assert main(["import", str(native), "--backend", framework, "--spec", "two-tower", "--out", str(back)]) == 0
    said = capsys.readouterr().out
    assert f"written as {framework}'s own format" in said
    assert ("the step and the optimizer state are not kept" in said) == (not keeps_optimizer)
    _, want = load_checkpoint(saved)
    _, got = load_checkpoint(back)
    assert set(got.params) == set(want.params)
    assert all(np.array_equal(got.params[k], want.params[k]) for k in want.params)
    if keeps_optimizer:
        assert got.step == 40 and got.counters == want.counters
        assert all(np.array_equal(got.slots[s][k], want.slots[s][k]) for s in want.slots for k in want.slots[s])
    else:  # Keras' .weights.h5 holds the weights only
        assert got.step == 0


def test_report_reads_a_pytest_benchmark_file(tmp_path):
    """The opt-in pytest-benchmark suite, timed for real on NumPy, then read by `crossnn report`: every
    benchmark appears with its median per training step."""
    root = Path(__file__).parents[1]
    bench = tmp_path / "pytest_benchmark.json"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "circle and numpy",
                           "tests/benchmarks/test_step_benchmarks.py", "--benchmark-enable",
                           "--benchmark-max-time=0.05", f"--benchmark-json={bench}"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    doc = json.loads(bench.read_text())
    assert doc["benchmarks"]
    assert main(["report", "linear-2x3", "--backends", "numpy", "--no-bench", "--pytest-benchmark", str(bench),
                 "--name", "pb", "--out", str(tmp_path / "reports")]) == 0
    readme = (tmp_path / "reports" / "pb" / "README.md").read_text()
    assert "\n- CPU: " in readme.split("## Parity")[0]  # the machine the parity runs were made on, without a bench
    section = readme.split("## pytest-benchmark suite")[1]
    for b in doc["benchmarks"]:
        row = next(line for line in section.splitlines() if line.startswith(f"| {b['name']} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        steps = b["extra_info"]["steps"]
        assert float(cells[5].replace(",", "")) == pytest.approx(b["stats"]["median"] / steps * 1e6, rel=0.01)
    assert (tmp_path / "reports" / "pb" / "pytest_benchmark.json").exists()


def test_spec_and_data_errors_name_the_file(tmp_path, capsys):
    """A section's missing key reads cleanly, a data error names the spec it came from, and a spec
    that is not UTF-8 text is bad input, not an internal error."""
    spec = tmp_path / "spec.toml"
    spec.write_text(LINEAR.split("[[model.layers]]")[0] + LINEAR[LINEAR.index("[loss]"):])
    assert main(["show", str(spec)]) == 2
    assert capsys.readouterr().err.strip() == f"crossnn: error: {spec}: model: missing key 'layers'"
    spec.write_text(_edit(LINEAR, 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]', 'path = "gone.npz"'))
    assert main(["run", str(spec), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(f"crossnn: error: {spec}: data.path: cannot read gone.npz")
    spec.write_bytes(b"name = \"x\"\n\xff\xfe\n")
    assert main(["show", str(spec)]) == 2
    assert capsys.readouterr().err.strip() == f"crossnn: error: {spec}: not a TOML text file: byte 11 is not UTF-8"


def test_command_line_conveniences(tmp_path, capsys):
    """--debug after the command, --version, repeated names run once, options that need another
    option, and a file that is not what --pytest-benchmark expects."""
    bad = tmp_path / "bad.toml"
    bad.write_text(_edit(CIRCLE, "units = 5", "units = -5"))
    assert main(["run", str(bad), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("crossnn 0.")
    assert main(["run", "linear-2x3", "--backends", "numpy,numpy", "--dtype", "float32,float32", "--quiet"]) == 0
    assert capsys.readouterr().out.count("numpy float32 cpu default") == 1 + 2  # a run row, a parity row per parameter
    for argv, line in ((["code", "circle", "--html", "x.html"], "--html goes with --side-by-side"),
                       (["code", "circle", "--side-by-side", "--backend", "numpy"], "--side-by-side takes --backends"),
                       (["bench", "circle", "--modes", "bogus"], "--modes: no chosen backend has mode 'bogus'"),
                       (["code", "circle", "--side-by-side", "--backends", "numpy,numpy", "--width", "10"],
                        "--width: 10 is too narrow for 1 column(s); give at least 20")):
        assert main(argv) == 2
        assert line in capsys.readouterr().err
    run_json = tmp_path / "run.json"
    assert main(["run", "linear-2x3", "--backends", "numpy", "--quiet", "--json", str(run_json)]) == 0
    assert main(["report", "linear-2x3", "--no-bench", "--pytest-benchmark", str(run_json),
                 "--out", str(tmp_path / "reports")]) == 2
    assert "is not a pytest-benchmark --benchmark-json file" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_output_cut_short_by_the_reader_is_not_an_error():
    """`crossnn ... | head -1`: the command stops quietly with SIGPIPE's status, no internal error."""
    done = subprocess.run(f"{shlex.quote(sys.executable)} -m crossnn list | head -1; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60)
    assert done.stdout == "backends:\n" and done.stderr == "" and done.returncode in (0, 141)


def test_show_says_when_the_batch_is_larger_than_the_data(tmp_path, capsys):
    spec = tmp_path / "big-batch.toml"
    spec.write_text(_edit(_edit(LINEAR, "batch_size = 2", "batch_size = 5"), "drop_last = false", "drop_last = true"))
    assert main(["show", str(spec)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == ("train: 100 epochs x 1 steps of <= 2 samples = 100 steps, in order "
                    "(batch_size 5 > 2 samples: one batch of all of them)")


def _run_json(tmp_path: Path, spec_text: str = LINEAR, dtypes: str = "float64") -> Path:
    """A `crossnn run --json` file of a NumPy run."""
    spec, out = tmp_path / "spec.toml", tmp_path / "run.json"
    spec.write_text(spec_text)
    assert main(["run", str(spec), "--backends", "numpy", "--dtype", dtypes, "--quiet", "--json", str(out)]) in (0, 1)
    return out


def test_report_keeps_a_folder_of_user_files_and_refuses_unsafe_names(tmp_path, capsys):
    """--name naming a folder of the user's, or not a plain folder name ('', '.', '..', '../escape'),
    is one line and exit 2; the user's files stay and nothing is written outside --out."""
    raw = _run_json(tmp_path)
    out = tmp_path / "out"
    (out / "mydata").mkdir(parents=True)
    (out / "mydata" / "notes.txt").write_text("mine")
    capsys.readouterr()
    for name in ("mydata", "", ".", "..", "../escape"):
        assert main(["report", "--run-json", str(raw), "--no-bench", "--name", name, "--out", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("crossnn: error: "), err
        assert ("is not a crossnn report" if name == "mydata" else "--name: must be a plain folder name") in err
    assert (out / "mydata" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["mydata"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run.json", "spec.toml"]


def test_report_replaces_its_own_folder_with_the_modes_of_plain_files(tmp_path, capsys):
    raw = _run_json(tmp_path)
    args = ["report", "--run-json", str(raw), "--no-bench", "--name", "r", "--out", str(tmp_path / "reports")]
    old = os.umask(0o022)
    try:
        assert main(args) == 0
        (tmp_path / "reports" / "r" / "loss_gone.png").write_bytes(b"")  # a figure of an older report
        with (tmp_path / "reports" / "r" / "crossnn-manifest.txt").open("a") as manifest:
            manifest.write("loss_gone.png\n")
        assert main(args) == 0
    finally:
        os.umask(old)
    folder = tmp_path / "reports" / "r"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "crossnn-manifest.txt", "loss_linear-2x3.png",
                                                       "run_linear-2x3.json"]
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["r"]
    assert folder.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())


def test_a_spec_name_with_slashes_stays_inside_the_report_folder(tmp_path, capsys):
    spec = tmp_path / "evil.toml"
    spec.write_text(_edit(LINEAR, 'name = "linear-2x3"', 'name = "../../evil"'))
    assert main(["report", str(spec), "--backends", "numpy", "--dtype", "float64", "--no-bench", "--name", "r",
                 "--out", str(tmp_path / "reports")]) == 0
    folder = tmp_path / "reports" / "r"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "crossnn-manifest.txt", "loss_.._.._evil.png",
                                                       "run_.._.._evil.json"]
    assert "## Parity: ../../evil" in (folder / "README.md").read_text()
    assert "(loss_.._.._evil.png)" in (folder / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.toml", "reports"]


def test_non_finite_numbers_are_strict_json_that_report_reads_back(tmp_path, capsys):
    """A run that blows up (infinite losses, a NaN loss difference) is written as strict JSON, which
    strict parsers accept, and `crossnn report --run-json` reads that file back."""
    from crossnn.files import revive_floats

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    raw = _run_json(tmp_path, _edit(LINEAR, "lr = 0.01", "lr = 10.0"), "float64,float32")
    json.loads(raw.read_text(), parse_constant=refuse)  # `crossnn run --json` itself writes strict JSON
    reports = tmp_path / "reports"
    assert main(["report", "--run-json", str(raw), "--no-bench", "--name", "a", "--out", str(reports)]) == 0
    strict = reports / "a" / "run_linear-2x3.json"
    doc = json.loads(strict.read_text(), parse_constant=refuse)
    reference = doc["runs"][0]
    assert "Infinity" in reference["losses"] and reference["parity"]["loss_max_abs"] == "NaN"  # inf - inf
    original = revive_floats(json.loads(raw.read_text()))
    np.testing.assert_array_equal(revive_floats(reference["losses"]), original["runs"][0]["losses"])
    assert main(["report", "--run-json", str(strict), "--no-bench", "--name", "b", "--out", str(reports)]) == 0
    readme = (reports / "b" / "README.md").read_text()
    assert "FAIL (loss is inf at step" in readme and "(loss_linear-2x3.png)" in readme
    assert (reports / "b" / "run_linear-2x3.json").read_text() == strict.read_text()


def test_json_to_standard_output_and_unusable_paths_caught_before_training(tmp_path, capsys):
    """--json - puts the JSON alone on standard output (the tables go to standard error); an output
    path that cannot be written is one line and exit 2 before anything trains."""
    assert main(["run", "linear-2x3", "--backends", "numpy", "--quiet", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["experiment"]["name"] == "linear-2x3" and "final parameters" in captured.err
    spec = tmp_path / "good.toml"
    spec.write_text(LINEAR)
    for argv in (["run", str(spec), "--json", f"{spec}/x.json"], ["run", str(spec), "--json", str(tmp_path)],
                 ["code", str(spec), "--backend", "numpy", "--out", f"{spec}/x.py"],
                 ["bench", str(spec), "--backends", "numpy", "--json", str(tmp_path)]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, argv
        option = "--json" if "--json" in argv else "--out"
        assert captured.err.startswith(f"crossnn: error: {option} {argv[argv.index(option) + 1]}: "), captured.err


def test_two_runs_of_one_spec_both_reach_the_report(tmp_path):
    """A --run-json file from elsewhere beside a parity run of the same spec made here: neither's files
    overwrite the other's, and the README links each section to its own figures."""
    raw = _run_json(tmp_path)
    reports = tmp_path / "reports"
    assert main(["report", "linear-2x3", "--backends", "numpy", "--dtype", "float32", "--no-bench",
                 "--run-json", str(raw), "--name", "twice", "--out", str(reports)]) == 0
    folder = reports / "twice"
    assert {p.name for p in folder.glob("run_*.json")} == {"run_linear-2x3.json", "run_linear-2x3-2.json"}
    dtypes = {json.loads(p.read_text())["dtypes"][0] for p in folder.glob("run_*.json")}
    assert dtypes == {"float32", "float64"}
    readme = (folder / "README.md").read_text()
    assert "(loss_linear-2x3.png)" in readme and "(loss_linear-2x3-2.png)" in readme


def test_report_checks_its_inputs_before_any_work(tmp_path, capsys):
    """Malformed --run-json and --bench files and unknown --devices are one line and exit 2; a spec
    named like a non-finite number ("NaN") keeps its name through the report's JSON."""
    for payload, option in (([1, 2], "--run-json"), ({"experiment": {"name": "a"}, "runs": []}, "--run-json"),
                            ([1, 2], "--bench")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(payload))
        quiet = ["--no-bench"] if option == "--run-json" else []  # --bench fills the benchmarks: no runs made
        assert main(["report", option, str(bad), *quiet, "--out", str(tmp_path / "r")]) == 2
        assert f"{option}: {bad} is not a `crossnn" in capsys.readouterr().err
    assert main(["report", "linear-2x3", "--devices", "bogus", "--quick", "--out", str(tmp_path / "r")]) == 2
    assert "--devices: unknown device 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    raw = _run_json(tmp_path, _edit(LINEAR, 'name = "linear-2x3"', 'name = "NaN"'))
    assert main(["report", "--run-json", str(raw), "--no-bench", "--name", "n", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "n" / "run_NaN.json").read_text())["experiment"]["name"] == "NaN"


def test_a_device_a_backend_lacks_is_bad_input_before_training(capsys):
    pytest.importorskip("torch")
    assert main(["run", "circle", "--backends", "torch", "--device", "cpu:1", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "crossnn: error: --device: backend 'torch' has no device 'cpu:1'; use cpu, " \
                                   "cuda[:N] or gpu[:N]" and captured.out == ""


def test_file_options_refuse_a_folder_name_and_checkpoint_pairs_are_checked_first(tmp_path, capsys):
    assert main(["run", "adder", "--backends", "numpy", "--quiet", "--json", f"{tmp_path}/newdir/"]) == 2
    assert "names a folder; give a file name" in capsys.readouterr().err and not (tmp_path / "newdir").exists()
    assert main(["run", "adder", "--save", str(tmp_path / "x.npz")]) == 2
    assert "--stop-after and --save go together" in capsys.readouterr().err


def test_export_finds_a_relative_data_path_beside_the_spec_not_the_checkpoint(tmp_path, monkeypatch, capsys):
    """A spec reading data.csv beside it, run from its parent folder with a relative spec path, saved to a
    checkpoint in another folder and exported from a third working directory: the checkpoint's spec reads
    its data where the spec was (it used to look beside the checkpoint and fail with exit 2)."""
    pytest.importorskip("torch")
    from crossnn.checkpoint import load_checkpoint

    specs, checkpoints, elsewhere = tmp_path / "specs", tmp_path / "checkpoints", tmp_path / "elsewhere"
    for folder in (specs, checkpoints, elsewhere):
        folder.mkdir()
    (specs / "data.csv").write_text("1,2,3,10\n4,5,6,20\n")
    text = _edit(LINEAR, 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]', 'path = "data.csv"')
    # a schedule: the exported optimizer's learning rate depends on the step count per epoch, so on the data
    (specs / "lin.toml").write_text(_edit(text, "lr = 0.01", 'lr = 0.01\nschedule = { type = "step", unit = "epoch", '
                                                             'step_size = 10, gamma = 0.5 }'))
    monkeypatch.chdir(tmp_path)
    saved = checkpoints / "ck.npz"
    assert main(["run", "specs/lin.toml", "--backends", "numpy", "--stop-after", "40", "--save", str(saved),
                 "--quiet"]) == 0
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["export", str(saved), "--backend", "torch", "--out", "state.pt"]) == 0, capsys.readouterr().err
    assert main(["import", "state.pt", "--backend", "torch", "--spec", str(specs / "lin.toml"),
                 "--out", "back.npz"]) == 0
    (_, want), (_, got) = load_checkpoint(saved), load_checkpoint(elsewhere / "back.npz")
    assert got.step == 40 and all(np.array_equal(got.params[k], want.params[k]) for k in want.params)
    import torch

    lr = torch.load(elsewhere / "state.pt", weights_only=False)["optimizer"]["param_groups"][0]["lr"]
    assert lr == 0.01 * 0.5 ** 4  # after 40 steps of one-batch epochs: four halvings


def test_mode_takes_a_list_and_says_which_backend_ran_which(capsys):
    """Each backend runs the listed modes it has (it used to take one mode, and a backend without it ran
    its default unannounced)."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    code = main(["run", "linear-2x3", "--backends", "torch,tensorflow", "--mode", "eager,xla", "--quiet",
                 "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    labels = [run["label"] for run in json.loads(captured.out)["runs"]]
    assert labels == ["numpy float64 cpu default", "torch float64 cpu eager", "tensorflow float64 cpu eager",
                      "tensorflow float64 cpu xla"]
    assert "crossnn: --mode eager,xla: torch runs eager; tensorflow runs eager, xla" in captured.err.splitlines()


def test_unnamed_backends_without_a_listed_mode_are_left_out_with_a_line(capsys):
    pytest.importorskip("torch")
    assert main(["run", "linear-2x3", "--mode", "onednn", "--quiet", "--json", "-"]) == 0
    captured = capsys.readouterr()
    labels = [run["label"] for run in json.loads(captured.out)["runs"]]
    assert labels == ["numpy float64 cpu default", "torch float64 cpu onednn"]  # the reference runs in any case
    err = captured.err.splitlines()
    assert "crossnn: backend 'numpy' left out: --mode names none of its modes (default)" in err
    assert "crossnn: --mode onednn: torch runs onednn" in err


def test_threads_set_every_framework_and_the_json_records_them(capsys, restore_threads):
    import torch
    from crossnn_numpy.device import blas_threads

    assert main(["run", "linear-2x3", "--backends", "numpy,torch", "--threads", "3", "--quiet", "--json", "-"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["threads"] == 3 and [run["threads"] for run in document["runs"]] == [3, 3]
    assert torch.get_num_threads() == 3 and blas_threads() == 3


def test_threads_reach_tensorflow():
    """TensorFlow takes its thread count before its first op: in a fresh process, as the command runs."""
    pytest.importorskip("tensorflow")
    done = _cli("run", "linear-2x3", "--backends", "tensorflow", "--threads", "3", "--quiet", "--json", "-")
    assert done.returncode == 0, done.stderr[-2000:]
    reference, tensorflow = json.loads(done.stdout)["runs"]
    assert tensorflow["threads"] == 3 and "intra-op 3, inter-op 1 threads" in tensorflow["description"]
