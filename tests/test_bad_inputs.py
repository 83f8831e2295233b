"""The reliability audit kept as a table: every malformed input — spec, data, checkpoint, command-line
flag, Python API argument, pytest-plugin setting — gets one line naming the field, option or file,
exit status 2 on the command line (or the documented exception in Python), and no traceback.

Command-line rows run in this process through crossnn.cli.main; a row is (id, files to write in a
fresh folder, argv or a Python callable, expected exit status or exception type, fragment the one
line must contain). "{t}" in argv stands for that folder.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import crossnn
from crossnn import examples
from crossnn import spec as S
from crossnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from crossnn.cli import main
from crossnn.errors import BackendError, DataError, SpecError
from crossnn.harness import RunSpec, train
from crossnn.params import initial_parameters
from crossnn.parity import Tolerance
from crossnn.testing import assert_params_match, assert_parity, check_parity

pytest_plugins = ["pytester"]

LINEAR = examples.path("linear-2x3").read_text()
CIRCLE = examples.path("circle").read_text()
TOWER = examples.path("two-tower").read_text()
TOKENS = examples.path("token-sums").read_text()
INLINE = 'x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[10.0], [20.0]]'


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def lin(old: str, new: str) -> str:
    return edit(LINEAR, old, new)


def circ(old: str, new: str) -> str:
    return edit(CIRCLE, old, new)


def data(source: str, base: str = LINEAR) -> str:
    """`base` with its [data] table replaced by `source`."""
    start, stop = base.index("[data]\n") + len("[data]\n"), base.index("\n[model]")
    return base[:start] + source + "\n" + base[stop:]


def optimizer(table: str, base: str = LINEAR) -> str:
    start, stop = base.index("[optimizer]\n"), base.index("\n[train]")
    return base[:start] + "[optimizer]\n" + table + "\n" + base[stop:]


def loss(table: str) -> str:
    start, stop = LINEAR.index("[loss]\n"), LINEAR.index("\n[optimizer]")
    return LINEAR[:start] + "[loss]\n" + table + "\n" + LINEAR[stop:]


def two_layers(units: str) -> str:
    """LINEAR with its layer's units line replaced by `units` and a second dense layer of one unit after it."""
    second = LINEAR[LINEAR.index("[[model.layers]]"):LINEAR.index("[loss]")].replace('name = "fc"', 'name = "fc2"')
    return edit(lin("units = 1", units), "[loss]", second + "[loss]")


def layer(fields: str, base: str = LINEAR) -> str:
    """LINEAR with its one dense layer's `units` line followed by extra or replaced fields."""
    return edit(base, 'units = 1\nactivation = "linear"', fields)


SPARSE = edit(edit(lin("y = [[10.0], [20.0]]", "y = [0, 1]"), "units = 1", "units = 3"),
              'type = "mse"', 'type = "cross_entropy"\nfrom_logits = true\nsparse = true')


# ---- files the rows write ---------------------------------------------------------------------

def npz(**arrays):
    """A writer of an .npz archive holding `arrays`."""
    def write(path):
        np.savez(path, **arrays)
    return write


def checkpoint(**changes):
    """A writer of linear-2x3's checkpoint after 3 steps with keys replaced (a value of None drops the key)."""
    def write(path):
        experiment = crossnn.example("linear-2x3")
        state = train(experiment, [RunSpec("numpy")], stop_after=3).records[0].final_state
        save_checkpoint(path, experiment, state)
        with np.load(path) as archive:
            contents = {k: archive[k] for k in archive.files}
        for key, value in changes.items():
            key = key.replace("__", "/")
            if value is None:
                contents.pop(key)
            else:
                contents[key] = value
        np.savez(path, **contents)
    return write


def loop(path):
    """A symbolic link that names itself through a second one."""
    other = path.with_name(path.name + ".other")
    os.symlink(other.name, path)
    os.symlink(path.name, other)


def link_to(target: str):
    def write(path):
        os.symlink(target, path)
    return write


def deep_toml(path):
    path.write_text("name = " + "[" * 5000 + "]" * 5000 + "\n")


def truncated_zip(path):
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 30)


def folder(path):
    path.mkdir()


def npy(path):
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))


RUN = ["run", "--quiet", "--backends", "numpy"]
SPEC = "{t}/spec.toml"


def spec_row(name, text, fragment, *args):
    """A spec (or its data) that is bad: `crossnn run` refuses it in one line."""
    return (name, {"spec.toml": text}, [*RUN, SPEC, *args], 2, fragment)


def data_row(name, source, files, fragment, base=LINEAR):
    return (name, {"spec.toml": data(source, base), **files}, [*RUN, SPEC], 2, fragment)


def resume_row(name, writer, fragment):
    return (name, {"spec.toml": LINEAR, "ck.npz": writer}, [*RUN, SPEC, "--resume", "{t}/ck.npz"], 2, fragment)


def flag_row(name, args, fragment, files=None, command=None):
    return (name, {"spec.toml": LINEAR, **(files or {})}, command or [*RUN, SPEC, *args], 2, fragment)


CLI_ROWS = [
    # ---- spec: types -------------------------------------------------------------------------
    spec_row("units zero", lin("units = 1", "units = 0"), "model.layers[0].units: must be > 0, got 0"),
    spec_row("units float", lin("units = 1", "units = 1.5"), "model.layers[0].units: expected an integer, got float"),
    spec_row("units boolean", lin("units = 1", "units = true"), "model.layers[0].units: expected an integer, got bool"),
    spec_row("units list", lin("units = 1", "units = [1]"), "model.layers[0].units: expected an integer, got a list"),
    spec_row("units huge", two_layers("units = 1000000000000"),
             "model.layers[0].units: 1000000000000 units make parameters of 40.0 TB (float64); this machine has"),
    spec_row("model inputs huge", circ("inputs = 2", "inputs = 100000000000000").replace(
        'generator = "circle"\nn = 1200\ncenter = 0.5\nradius_sq = 0.1',
        'generator = "random_normal"\nn = 2\ninputs = 2\noutputs = 1'),
        "data.x: has 2 feature column(s) but model.inputs = 100000000000000"),
    spec_row("model inputs zero", lin("inputs = 3", "inputs = 0"),
             "model.inputs: must be a positive feature count or a list of positive sizes, got 0"),
    spec_row("model inputs string", lin("inputs = 3", 'inputs = "3"'), "model.inputs: expected an integer, got string"),
    spec_row("name empty", lin('name = "linear-2x3"', 'name = " "'), "name: must not be empty"),
    spec_row("name number", lin('name = "linear-2x3"', "name = 5"), "name: expected a string, got int 5"),
    spec_row("seed float", lin("seed = 0", "seed = 0.5"), "seed: expected an integer, got float 0.5"),
    spec_row("seed string", lin("seed = 0", 'seed = "0"'), "seed: expected an integer, got string '0'"),
    spec_row("epochs zero", lin("epochs = 100", "epochs = 0"), "train.epochs: must be > 0, got 0"),
    spec_row("epochs negative", lin("epochs = 100", "epochs = -2"), "train.epochs: must be > 0, got -2"),
    spec_row("epochs huge", lin("epochs = 100", "epochs = 1000000000000000"),
             "train.epochs: 1000000000000000 epochs make 1000000000000000 steps, whose losses take 8.0 PB"),
    spec_row("batch size float", lin("batch_size = 2", "batch_size = 2.0"),
             "train.batch_size: expected an integer, got float 2.0"),
    spec_row("shuffle string", lin("shuffle = false", 'shuffle = "no"'), "train.shuffle: expected true or false"),
    spec_row("drop_last integer", lin("drop_last = false", "drop_last = 0"),
             "train.drop_last: expected true or false, got int 0"),
    spec_row("validation split one", lin("validation_split = 0.0", "validation_split = 1.0"),
             "train.validation_split: must be in [0, 1), got 1.0"),
    spec_row("validation split negative", lin("validation_split = 0.0", "validation_split = -0.5"),
             "train.validation_split: must be in [0, 1), got -0.5"),
    spec_row("validation split leaves no training", lin("validation_split = 0.0", "validation_split = 0.9"),
             "train.validation_split: 0.9 of 2 samples leaves no training samples"),
    spec_row("metric twice", circ('metrics = ["accuracy"]', 'metrics = ["accuracy", "accuracy"]'),
             "train.metrics: lists a metric twice"),
    spec_row("unknown metric", lin("metrics = []", 'metrics = ["f1"]'), "train.metrics[0]: expected one of"),
    spec_row("mae with sparse targets", edit(SPARSE, "metrics = []", 'metrics = ["mae"]'),
             "train.metrics: mae needs targets shaped like the output"),
    spec_row("misspelt train key", lin("epochs = 100", "epoch = 100"), "train: unknown key 'epoch'"),
    spec_row("missing train key", lin("epochs = 100\n", ""), "train: missing key 'epochs'"),
    spec_row("train not a table", "train = 5\n" + LINEAR[:LINEAR.index("[train]")],
             "train: expected a table [train], got int"),
    spec_row("data not a table", lin("[data]\n" + INLINE, "data = 5"), "data: expected a table [data], got int"),
    # ---- spec: optimizer, loss, schedule -----------------------------------------------------
    spec_row("lr negative", lin("lr = 0.01", "lr = -0.1"), "optimizer.lr: must be > 0, got -0.1"),
    spec_row("lr nan", lin("lr = 0.01", "lr = nan"), "optimizer.lr: must be finite, got nan"),
    spec_row("lr infinite", lin("lr = 0.01", "lr = inf"), "optimizer.lr: must be finite, got inf"),
    spec_row("lr string", lin("lr = 0.01", 'lr = "0.01"'), "optimizer.lr: expected a number, got string '0.01'"),
    spec_row("momentum negative", lin("momentum = 0.0", "momentum = -0.1"), "optimizer.momentum: must be in [0, 1)"),
    spec_row("nesterov without momentum", lin("nesterov = false", "nesterov = true"),
             "optimizer.nesterov: needs momentum > 0"),
    spec_row("nesterov string", lin("nesterov = false", 'nesterov = "no"'),
             "optimizer.nesterov: expected true or false"),
    spec_row("unknown optimizer", lin('type = "sgd"', 'type = "sgdd"'),
             "optimizer.type: unknown optimizer type 'sgdd' (did you mean 'sgd'?)"),
    spec_row("optimizer without type", lin('type = "sgd"\n', ""), "optimizer: missing key 'type'"),
    spec_row("optimizer type number", lin('type = "sgd"', "type = 3"), "optimizer.type: expected a string, got int 3"),
    spec_row("adam beta1 one", optimizer('type = "adam"\nlr = 0.01\nbeta1 = 1.0\nbeta2 = 0.999\neps = 1e-8'),
             "optimizer.beta1: must be in [0, 1)"),
    spec_row("adam eps zero", optimizer('type = "adam"\nlr = 0.01\nbeta1 = 0.9\nbeta2 = 0.999\neps = 0.0'),
             "optimizer.eps: must be > 0, got 0.0"),
    spec_row("adam without lr", optimizer('type = "adam"\nbeta1 = 0.9\nbeta2 = 0.999\neps = 1e-8'),
             "optimizer.lr: missing (torch uses 0.001, keras 0.001; write it, or set defaults"),
    spec_row("weight decay negative", lin("weight_decay = 0.0", "weight_decay = -1.0"),
             "optimizer.weight_decay: must be >= 0, got -1.0"),
    spec_row("weight decay without kind", lin("weight_decay = 0.0", "weight_decay = 0.1"),
             "optimizer.weight_decay_kind: missing (torch uses \"l2\", keras \"decoupled\""),
    spec_row("weight decay kind unknown", lin("weight_decay = 0.0", 'weight_decay = 0.1\nweight_decay_kind = "l1"'),
             "optimizer.weight_decay_kind: expected one of"),
    spec_row("clip norm zero", lin("weight_decay = 0.0", "weight_decay = 0.0\nclip_norm = 0.0"),
             "optimizer.clip_norm: must be a positive number, got 0.0"),
    spec_row("schedule unknown", lin("weight_decay = 0.0", 'weight_decay = 0.0\nschedule = { type = "cosine" }'),
             "optimizer.schedule.type: unknown schedule type 'cosine'"),
    spec_row("schedule gamma nan", lin("weight_decay = 0.0", 'weight_decay = 0.0\n'
                                       'schedule = { type = "exponential", unit = "epoch", gamma = nan }'),
             "optimizer.schedule.gamma: must be"),
    spec_row("rmsprop alpha missing", optimizer('type = "rmsprop"\nlr = 0.01\neps = 1e-8'),
             "optimizer.alpha: missing (torch uses 0.99, keras 0.9"),
    spec_row("adagrad accumulator negative",
             optimizer('type = "adagrad"\nlr = 0.01\ninitial_accumulator = -1.0\neps = 1e-10'),
             "optimizer.initial_accumulator: must be >= 0, got -1.0"),
    spec_row("unknown loss", loss('type = "mse2"'), "loss.type: unknown loss type 'mse2'"),
    spec_row("bce without log_min", loss('type = "bce"'), "loss.log_min: missing (torch uses -100.0"),
    spec_row("huber delta zero", loss('type = "huber"\ndelta = 0.0'), "loss.delta: must be > 0"),
    spec_row("cross entropy without from_logits", loss('type = "cross_entropy"'),
             "loss.from_logits: missing (torch uses true, keras false"),
    spec_row("sparse with one output", loss('type = "cross_entropy"\nfrom_logits = true\nsparse = true'),
             "loss: sparse cross-entropy needs >= 2 output units, the model has 1"),
    spec_row("sparse with a sequence output", edit(TOKENS, "return_sequences = false", "return_sequences = true"),
             "loss: sparse cross-entropy scores one class index per sample: the model must output [classes], "
             "but layer 'logits' outputs [12, 2]"),
    # ---- spec: layers, activations, initializers, graph --------------------------------------
    spec_row("uniform low above high", lin('kernel_init = "zeros"', 'kernel_init = { type = "uniform", low = 1.0, '
                                                                    'high = -1.0 }'),
             "model.layers[0].kernel_init.high: must be greater than low"),
    spec_row("normal stddev negative", lin('kernel_init = "zeros"', 'kernel_init = { type = "normal", mean = 0.0, '
                                                                     'stddev = -1.0 }'),
             "model.layers[0].kernel_init.stddev: must be > 0"),
    spec_row("constant nan", lin('bias_init = "zeros"', 'bias_init = { type = "constant", value = nan }'),
             "model.layers[0].bias_init.value: must be finite, got nan"),
    spec_row("initializer without its fields", lin('kernel_init = "zeros"', 'kernel_init = "uniform"'),
             "model.layers[0].kernel_init: initializer 'uniform' needs"),
    spec_row("unknown activation", lin('activation = "linear"', 'activation = "relu6"'),
             "model.layers[0].activation.type: unknown activation type 'relu6'"),
    spec_row("leaky slope string", lin('activation = "linear"',
                                       'activation = { type = "leaky_relu", negative_slope = "x" }'),
             "model.layers[0].activation.negative_slope: expected a number, got string 'x'"),
    spec_row("gelu approximation unknown", lin('activation = "linear"',
                                               'activation = { type = "gelu", approximate = "fast" }'),
             "model.layers[0].activation.approximate: expected one of"),
    spec_row("activation table without type", lin('activation = "linear"', "activation = { negative_slope = 0.1 }"),
             "model.layers[0].activation: missing key 'type' (the activation kind)"),
    spec_row("layer name with slash", lin('name = "fc"', 'name = "a/b"'),
             "model.layers[0].name: 'a/b' is not a usable layer name"),
    spec_row("layer named input", lin('name = "fc"', 'name = "input"'),
             "model.layers[0].name: 'input' is not a usable layer name"),
    spec_row("dense with two inputs", lin('bias_init = "zeros"', 'bias_init = "zeros"\ninputs = ["input", "input"]'),
             "model.layers[0].inputs: a dense layer takes 1 input(s), got 2"),
    spec_row("inputs as a string", lin('bias_init = "zeros"', 'bias_init = "zeros"\ninputs = "input"'),
             "model.layers[0].inputs: expected a list, got string 'input'"),
    spec_row("layer feeds itself", lin('bias_init = "zeros"', 'bias_init = "zeros"\ninputs = ["fc"]'),
             "model.layers[0].inputs: layer 'fc' names itself as an input"),
    spec_row("concatenate of one input", edit(TOWER, 'inputs = ["dense1", "dense2"]', 'inputs = ["dense1"]'),
             "model.layers[2].inputs: a concatenate layer takes at least 2 input(s), got 1"),
    spec_row("concatenate without inputs", edit(TOWER, 'name = "concat"\naxis = -1\ninputs = ["dense1", "dense2"]',
                                                'name = "concat"\naxis = -1'),
             "model.layers[2].inputs: a concatenate layer must name its inputs"),
    spec_row("layer that feeds nothing", edit(TOWER, 'inputs = ["dense1", "dense2"]', 'inputs = ["dense1", "input"]'),
             "model.layers[1]: layer 'dense2' does not feed the output layer 'dense3'"),
    spec_row("dropout rate one", edit(LINEAR, "[loss]", '[[model.layers]]\ntype = "dropout"\nrate = 1.0\n\n[loss]'),
             "model.layers[1].rate: must be in [0, 1), got 1.0"),
    spec_row("unknown layer key", layer('units = 1\nactivation = "linear"\nbias = true'),
             "model.layers[0]: unknown key 'bias' for layer 'dense'"),
    spec_row("unknown section key", lin("[model]\ninputs = 3", "[model]\ninputs = 3\noutputs = 1"),
             "model: unknown key 'outputs'"),
    spec_row("no layers", LINEAR[:LINEAR.index("[[model.layers]]")] + "layers = []\n\n"
             + LINEAR[LINEAR.index("[loss]"):], "model.layers: a model needs at least one layer"),
    # ---- spec: files ---------------------------------------------------------------------------
    ("TOML nested 5000 deep", {"spec.toml": deep_toml}, [*RUN, SPEC], 2, "spec.toml: not usable TOML: arrays or "
                                                                          "tables nested too deeply"),
    spec_row("duplicate TOML key", lin("seed = 0", "seed = 0\nseed = 1"), "not valid TOML"),
    ("spec not UTF-8", {"spec.toml": b"name = \"\xff\"\n"}, [*RUN, SPEC], 2,
     "not a TOML text file: byte 8 is not UTF-8"),
    spec_row("empty spec", "", "spec.toml: missing key 'name'"),
    ("spec is a link loop", {"spec.toml": loop}, [*RUN, SPEC], 2, "cannot read spec file: Too many levels of symbolic"),
    ("spec is a folder", {"spec.toml": folder}, [*RUN, SPEC], 2, "spec.toml: cannot read spec file: Is a directory"),
    ("spec is a dangling link", {"spec.toml": link_to("gone.toml")}, [*RUN, SPEC], 2,
     "spec.toml: cannot read spec file: No such file or directory"),
    # ---- data ------------------------------------------------------------------------------------
    data_row("x without y", "x = [[1.0, 2.0, 3.0]]", {}, "data: missing key 'y'"),
    data_row("ragged rows", "x = [[1.0, 2.0, 3.0], [4.0, 5.0]]\ny = [[1.0], [2.0]]", {},
             "data.x: row [1] has 2 values, row [0] has 3"),
    data_row("empty x", "x = []\ny = []", {}, "data.x: expected a non-empty list"),
    data_row("flat x", "x = [1.0, 2.0]\ny = [1.0, 2.0]", {}, "data.x: must be a list of rows"),
    data_row("string in x", 'x = [[1.0, "2", 3.0]]\ny = [[1.0]]', {}, "data.x[0][1]: expected a number, got string"),
    data_row("rows of x and y differ", "x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [[1.0], [2.0], [3.0]]", {},
             "data.y: has 3 rows but x has 2"),
    data_row("infinite y", "x = [[1.0, 2.0, 3.0]]\ny = [[inf]]", {}, "data.y[0][0]: value is inf: data must be finite"),
    data_row("unknown file kind", 'path = "data.txt"', {}, "data.path: expected a .npz or .csv file, got 'data.txt'"),
    data_row("path a number", "path = 5", {}, "data.path: expected a .npz or .csv file, got 5"),
    data_row("x and a generator", 'generator = "circle"\nx = [[1.0]]', {}, "data: unknown key 'x' for data 'circle'"),
    data_row("circle n zero", 'generator = "circle"\nn = 0', {}, "data.n: must be > 0, got 0", CIRCLE),
    data_row("circle n huge", 'generator = "circle"\nn = 1000000000000', {},
             "data.n: 1000000000000 samples make data of 24.0 TB (float64); this machine has", CIRCLE),
    data_row("adder inputs huge", 'generator = "adder"\nn = 100\ninputs = 100000000000', {},
             "data.inputs: 100000000000 input features make data of 80.0 TB (float64)", CIRCLE),
    data_row("adder low above high", 'generator = "adder"\nlow = 5.0\nhigh = 1.0', {},
             "data.high: must be greater than low (5.0)"),
    data_row("random outputs zero", 'generator = "random_normal"\noutputs = 0', {}, "data.outputs: must be > 0, got 0"),
    data_row("line noise negative", 'generator = "line"\nnoise = -1.0', {}, "data.noise: must be >= 0, got -1.0"),
    data_row("teacher of one class", 'generator = "teacher_classes"\nclasses = 1', {},
             "data.classes: must be >= 2, got 1"),
    data_row("teacher n huge", 'generator = "teacher_classes"\nn = 10000000000000', {},
             "data.n: 10000000000000 samples make data of"),
    data_row("generator unknown key", 'generator = "circle"\nradius = 0.3', {},
             "data: unknown key 'radius' for data 'circle' (did you mean 'radius_sq'?)"),
    data_row("digits scale zero", 'generator = "digits"\nscale = 0.0', {}, "data.scale: must be > 0, got 0.0"),
    data_row("generator number", "generator = 5", {}, "data.generator: expected a string, got int 5"),
    data_row("data columns do not fit", 'generator = "random_normal"\nn = 4\ninputs = 2\noutputs = 1', {},
             "data.x: has 2 feature column(s) but model.inputs = 3"),
    data_row("csv missing", 'path = "gone.csv"', {}, "data.path: cannot read gone.csv"),
    data_row("csv without rows", 'path = "empty.csv"', {"empty.csv": ""}, "data.path: empty.csv has no rows of data"),
    data_row("csv header only", 'path = "h.csv"\nheader = true', {"h.csv": "a,b,c,y\n"},
             "data.path: h.csv has no rows of data after its header line"),
    data_row("csv y_columns zero", 'path = "d.csv"\ny_columns = 0', {"d.csv": "1,2,3,4\n"},
             "data.y_columns: must be > 0, got 0"),
    data_row("csv too few columns", 'path = "d.csv"\ny_columns = 4', {"d.csv": "1,2,3,4\n"},
             "data.y_columns: d.csv has 4 columns, too few for 4 y column(s)"),
    data_row("csv ragged", 'path = "d.csv"', {"d.csv": "1,2,3,4\n1,2\n"}, "data.path: cannot read d.csv"),
    data_row("csv is a link loop", 'path = "d.csv"', {"d.csv": loop}, "Too many levels of symbolic links"),
    data_row("npz garbage", 'path = "d.npz"', {"d.npz": b"this is not an archive at all"},
             "data.path: cannot read d.npz: not a NumPy archive (.npz)"),
    data_row("npz is an npy file", 'path = "d.npz"', {"d.npz": npy}, "cannot read d.npz: not a NumPy archive (.npz)"),
    data_row("npz truncated", 'path = "d.npz"', {"d.npz": truncated_zip}, "data.path: cannot read d.npz"),
    data_row("npz is a folder", 'path = "d.npz"', {"d.npz": folder}, "data.path: cannot read d.npz"),
    data_row("npz is a link loop", 'path = "d.npz"', {"d.npz": loop},
             "cannot read d.npz: [Errno 40] Too many levels of symbolic links"),
    data_row("npz complex x", 'path = "d.npz"', {"d.npz": npz(x=np.ones((2, 3)) * 1j, y=np.ones((2, 1)))},
             "data.x: expected real numbers, got dtype complex128"),
    data_row("npz complex y", 'path = "d.npz"', {"d.npz": npz(x=np.ones((2, 3)), y=np.ones((2, 1)) + 0j)},
             "data.y: expected real numbers, got shape (2, 1) dtype complex128"),
    data_row("npz text x", 'path = "d.npz"', {"d.npz": npz(x=np.array([["a", "b", "c"]]), y=np.ones((1, 1)))},
             "data.x: expected real numbers, got dtype <U1"),
    data_row("npz 3-D x", 'path = "d.npz"', {"d.npz": npz(x=np.ones((2, 3, 1)), y=np.ones((2, 1)))},
             "data.x: has samples of shape [3, 1] but model.inputs = 3"),
    data_row("npz object array", 'path = "d.npz"', {"d.npz": npz(x=np.array([1, "a"], dtype=object), y=np.ones(2))},
             "data.path: cannot read d.npz: Object arrays cannot be loaded when allow_pickle=False"),
    data_row("npz no samples", 'path = "d.npz"', {"d.npz": npz(x=np.ones((0, 3)), y=np.ones((0, 1)))},
             "data.x: no samples"),
    data_row("npz y key missing", 'path = "d.npz"\ny_key = "labels"', {"d.npz": npz(x=np.ones((2, 3)), y=np.ones(2))},
             "data.path: d.npz has no array 'labels' (it holds x, y)"),
    data_row("sparse labels fractional", "x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]\ny = [0.5, 1]", {},
             "data.y: sparse cross-entropy wants integer class indices", SPARSE),
    data_row("sparse labels text", 'path = "d.npz"', {"d.npz": npz(x=np.ones((2, 3)), y=np.array(["a", "b"]))},
             "data.y: sparse cross-entropy wants integer class indices, got dtype <U1", SPARSE),
    # ---- checkpoints given to --resume ------------------------------------------------------------
    resume_row("checkpoint garbage", b"garbage, not a zip", "ck.npz: not a readable checkpoint (ValueError: not a "
                                                             "NumPy archive (.npz))"),
    resume_row("checkpoint is an npy file", npy, "not a NumPy archive (.npz)"),
    resume_row("checkpoint truncated", truncated_zip, "ck.npz: not a readable checkpoint"),
    resume_row("checkpoint missing", None, "ck.npz: no such checkpoint"),
    resume_row("checkpoint is a link loop", loop, "ck.npz: cannot read it (Too many levels of symbolic links)"),
    resume_row("checkpoint is a folder", folder, "ck.npz: cannot read it (Is a directory)"),
    resume_row("checkpoint step text", checkpoint(step=np.array("3")), "ck.npz: step must hold an integer (one value), "
                                                                       "got <U1 array of shape ()"),
    resume_row("checkpoint step array", checkpoint(step=np.array([3, 4])),
               "ck.npz: step must hold an integer (one value), got int64 array of shape (2,)"),
    resume_row("checkpoint step float", checkpoint(step=np.array(3.5)), "ck.npz: step must hold an integer"),
    resume_row("checkpoint step negative", checkpoint(step=np.array(-1)), "ck.npz: step -1 is negative"),
    resume_row("checkpoint step beyond the plan", checkpoint(step=np.array(1000)),
               "the checkpoint is at step 1000, outside this plan's 100 steps"),
    resume_row("checkpoint format number", checkpoint(format=np.array(1)), "ck.npz: format must hold text (one value)"),
    resume_row("checkpoint format other", checkpoint(format=np.array("other-1")),
               "ck.npz: format 'other-1', expected 'crossnn-checkpoint-1'"),
    resume_row("checkpoint without format", checkpoint(format=None), "ck.npz: missing key 'format'"),
    resume_row("checkpoint spec number", checkpoint(spec=np.array(7)), "ck.npz: spec must hold text (one value)"),
    resume_row("checkpoint spec not TOML", checkpoint(spec=np.array("name = ")), "ck.npz:spec: not valid TOML"),
    resume_row("checkpoint spec nested deeply", checkpoint(spec=np.array("a = " + "[" * 5000 + "]" * 5000)),
               "ck.npz:spec: not usable TOML: arrays or tables nested too deeply"),
    resume_row("checkpoint of another spec", checkpoint(spec=np.array(CIRCLE)), "ck.npz: saved for a different spec"),
    resume_row("checkpoint param text", checkpoint(param__fc__kernel=np.array([["a"], ["b"], ["c"]])),
               "ck.npz: param/fc/kernel must hold real numbers, got <U1 array of shape (3, 1)"),
    resume_row("checkpoint param complex", checkpoint(param__fc__bias=np.array([1j])),
               "ck.npz: param/fc/bias must hold real numbers, got complex128"),
    resume_row("checkpoint param shape", checkpoint(param__fc__kernel=np.zeros((1, 3))),
               "ck.npz: param/fc/kernel has shape (1, 3), the model needs (3, 1)"),
    resume_row("checkpoint param missing", checkpoint(param__fc__bias=None), "ck.npz: missing key 'param/fc/bias'"),
    resume_row("checkpoint counter float", checkpoint(counter__step=np.array(2.5)),
               "ck.npz: counter/step must hold an integer (one value), got float64"),
    resume_row("checkpoint slot text", checkpoint(**{"slot__momentum_buffer__fc__bias": np.array(["x"])}),
               "ck.npz: slot/momentum_buffer/fc/bias must hold real numbers"),
    resume_row("checkpoint slot of another parameter", checkpoint(**{"slot__momentum_buffer__fc__gone": np.zeros(1)}),
               "ck.npz: slot/momentum_buffer/fc/gone does not match the model's parameters"),
    # ---- flags of `crossnn run` ------------------------------------------------------------------
    flag_row("rtol infinite", ["--rtol", "inf"], "--rtol: must be a finite number >= 0, got inf"),
    flag_row("rtol negative", ["--rtol=-1e-3"], "--rtol: must be a finite number >= 0, got -0.001"),
    flag_row("atol nan", ["--atol", "nan"], "--atol: must be a finite number >= 0, got nan"),
    flag_row("rtol not a number", ["--rtol", "abc"], "argument --rtol: invalid float value: 'abc'"),
    flag_row("snapshot every zero", ["--snapshot-every", "0"], "--snapshot-every: must be an integer >= 1, got 0"),
    flag_row("snapshot every negative", ["--snapshot-every", "-3"],
             "--snapshot-every: must be an integer >= 1, got -3"),
    flag_row("snapshot every fractional", ["--snapshot-every", "1.5"], "argument --snapshot-every: invalid int value"),
    flag_row("stop after zero", ["--stop-after", "0", "--save", "{t}/c.npz"], "--stop-after: must be an integer >= 1"),
    flag_row("stop after beyond the plan", ["--stop-after", "1000000000", "--save", "{t}/c.npz"],
             "--stop-after: must be in 1..100 (the plan's steps), got 1000000000"),
    flag_row("stop after without save", ["--stop-after", "5"], "--stop-after and --save go together"),
    flag_row("save with two dtypes", ["--stop-after", "5", "--save", "{t}/c.npz", "--dtype", "float64,float32"],
             "--save: choose one backend and one dtype"),
    flag_row("resume with two specs", ["linear-2x3", "--resume", "{t}/c.npz"], "--save and --resume take one spec"),
    flag_row("resume empty", ["--resume", ""], "--resume: the path is empty"),
    flag_row("dtype empty", ["--dtype", ""], "--dtype: name a dtype (float32 or float64)"),
    flag_row("dtype comma", ["--dtype", ","], "--dtype: name a dtype"),
    flag_row("dtype float16", ["--dtype", "float16"], "--dtype: unknown dtype 'float16'; use float32 or float64"),
    flag_row("dtype among good ones", ["--dtype", "float64,bfloat16"], "--dtype: unknown dtype 'bfloat16'"),
    flag_row("backends comma", ["--backends", ","], "--backends: names nothing (got ',')"),
    flag_row("backends empty", ["--backends", ""], "--backends: names nothing (got '')"),
    flag_row("backends unknown", ["--backends", "numpy,nosuch"], "unknown backend 'nosuch'"),
    flag_row("device index not a number", ["--device", "cuda:abc"], "--device: unknown device 'cuda:abc'; use cpu or"),
    flag_row("device empty", ["--device", ""], "--device: name a device (cpu or cuda[:N])"),
    flag_row("device colon only", ["--device", "cuda:"], "--device: unknown device 'cuda:'"),
    flag_row("mode empty", ["--mode", ""], "--mode: names nothing (got '')"),
    flag_row("mode unknown", ["--mode", "turbo"], "--mode: no chosen backend has mode 'turbo'"),
    flag_row("flavor unknown", ["--flavor", "wild"], "argument --flavor: invalid choice: 'wild'"),
    flag_row("json empty", ["--json", ""], "--json: the path is empty"),
    flag_row("json is the spec", ["--json", SPEC], "--json {t}/spec.toml: is this command's spec file; writing "
                                                   "there would destroy it"),
    flag_row("json is a link to the spec", ["--json", "{t}/link.json"], "--json {t}/link.json: is this command's spec",
             {"link.json": link_to("spec.toml")}),
    flag_row("json is a second name of the spec", ["--json", "{t}/hard.json"],
             "--json {t}/hard.json: is this command's spec file",
             {"hard.json": lambda path: os.link(path.with_name("spec.toml"), path)}),
    flag_row("json is the data file", ["--json", "{t}/d.csv"], "--json {t}/d.csv: is this command's data file",
             {"spec.toml": data('path = "d.csv"'), "d.csv": "1,2,3,4\n5,6,7,8\n"}),
    flag_row("json is a file of the user's", ["--json", "{t}/notes.txt"],
             "--json {t}/notes.txt: exists and is not a file crossnn wrote; not replacing it (--force replaces it)",
             {"notes.txt": "my notes"}),
    flag_row("json is a user's JSON", ["--json", "{t}/mine.json"], "--json {t}/mine.json: exists and is not a file "
                                                                   "crossnn wrote", {"mine.json": '{"a": 1}'}),
    flag_row("json names a folder", ["--json", "{t}/out/"], "--json {t}/out/: names a folder; give a file name"),
    flag_row("json inside a file", ["--json", SPEC + "/x.json"], "is not a folder"),
    flag_row("json is a link loop", ["--json", "{t}/l.json"], "--json {t}/l.json: cannot write there (Too many levels",
             {"l.json": loop}),
    flag_row("save and json one file", ["--stop-after", "5", "--save", "{t}/o.json", "--json", "{t}/o.json"],
             "--save {t}/o.json: --json writes that file too"),
    flag_row("save is the resumed checkpoint", ["--stop-after", "50", "--save", "{t}/ck.npz", "--resume", "{t}/ck.npz"],
             "--save {t}/ck.npz: is the checkpoint this command resumes", {"ck.npz": checkpoint()}),
    flag_row("save over a user's archive", ["--stop-after", "5", "--save", "{t}/mine.npz"],
             "--save {t}/mine.npz: exists and is not a file crossnn wrote", {"mine.npz": npz(weights=np.ones(3))}),
    # ---- other commands --------------------------------------------------------------------------
    flag_row("unknown command", [], "argument COMMAND: invalid choice: 'runn'", command=["runn", SPEC]),
    flag_row("show a missing spec", [], "no such spec file: {t}/none.toml", command=["show", "{t}/none.toml"]),
    flag_row("code out is the spec", [], "--out {t}/spec.toml: is this command's spec file",
             command=["code", SPEC, "--backend", "numpy", "--out", SPEC]),
    flag_row("code out is a user's script", [], "--out {t}/train.py: exists and is not a file crossnn wrote",
             {"train.py": "print('mine')\n"}, command=["code", SPEC, "--backend", "numpy", "--out", "{t}/train.py"]),
    flag_row("code html is the data file", [], "--html {t}/d.csv: is this command's data file",
             {"spec.toml": data('path = "d.csv"'), "d.csv": "1,2,3,4\n5,6,7,8\n"},
             command=["code", SPEC, "--side-by-side", "--backends", "numpy", "--html", "{t}/d.csv"]),
    flag_row("code width too narrow", [], "--width: 0 is too narrow",
             command=["code", SPEC, "--side-by-side", "--backends", "numpy", "--width", "0"]),
    flag_row("code backend empty", [], "--backend: name the framework", command=["code", SPEC, "--backend", ""]),
    flag_row("code backends comma", [], "--backends: names nothing",
             command=["code", SPEC, "--side-by-side", "--backends", ","]),
    flag_row("export out is the checkpoint", [], "--out {t}/ck.npz: is the checkpoint this command exports",
             {"ck.npz": checkpoint()}, command=["export", "{t}/ck.npz", "--backend", "numpy", "--out", "{t}/ck.npz"]),
    flag_row("export a garbage checkpoint", [], "{t}/ck.npz: not a readable checkpoint (ValueError: not a NumPy "
                                                "archive (.npz))", {"ck.npz": b"\x00garbage"},
             command=["export", "{t}/ck.npz", "--backend", "numpy", "--out", "{t}/out.pt"]),
    flag_row("export over a user's file", [], "--out {t}/model.pt: exists and is not a file crossnn wrote",
             {"ck.npz": checkpoint(), "model.pt": b"weights"},
             command=["export", "{t}/ck.npz", "--backend", "numpy", "--out", "{t}/model.pt"]),
    flag_row("import out is the imported file", [], "--out {t}/m.npz: is the file this command imports",
             {"m.npz": checkpoint()},
             command=["import", "{t}/m.npz", "--backend", "numpy", "--spec", SPEC, "--out", "{t}/m.npz"]),
    flag_row("import out is the spec", [], "--out {t}/spec.toml: is this command's spec file", {"m.pt": b"x"},
             command=["import", "{t}/m.pt", "--backend", "numpy", "--spec", SPEC, "--out", SPEC]),
    flag_row("bench repeats zero", [], "--repeats: must be an integer >= 1, got 0",
             command=["bench", SPEC, "--backends", "numpy", "--repeats", "0"]),
    flag_row("bench dtype float16", [], "--dtype: unknown dtype 'float16'",
             command=["bench", SPEC, "--backends", "numpy", "--dtype", "float16"]),
    flag_row("bench device index", [], "--devices: unknown device 'cuda:x'",
             command=["bench", SPEC, "--backends", "numpy", "--devices", "cpu,cuda:x"]),
    flag_row("bench modes comma", [], "--modes: names nothing",
             command=["bench", SPEC, "--backends", "numpy", "--modes", ","]),
    flag_row("bench json is the spec", [], "--json {t}/spec.toml: is a spec file this command benchmarks",
             command=["bench", SPEC, "--backends", "numpy", "--json", SPEC]),
    flag_row("report bench and no bench", [], "--no-bench: leaves the benchmarks out; --bench puts",
             files={"b.json": "{}"},
             command=["report", SPEC, "--backends", "numpy", "--no-bench", "--bench", "{t}/b.json", "--out", "{t}/r"]),
    flag_row("report dtype float16", [], "--dtype: unknown dtype 'float16'",
             command=["report", SPEC, "--backends", "numpy", "--no-bench", "--dtype", "float16", "--out", "{t}/r"]),
    flag_row("report suites comma", [], "--suites: names nothing",
             command=["report", SPEC, "--backends", "numpy", "--suites", ",", "--out", "{t}/r"]),
    flag_row("report bench empty", [], "--bench: the path is empty",
             command=["report", "--bench", "", "--out", "{t}/r"]),
    flag_row("report run json nested deeply", [], "--run-json: cannot read {t}/deep.json: arrays or objects nested",
             {"deep.json": "[" * 100000 + "]" * 100000}, command=["report", "--run-json", "{t}/deep.json",
                                                                 "--no-bench", "--out", "{t}/r"]),
    flag_row("report out is a file", [], "--out {t}/spec.toml: is not a folder",
             command=["report", "--run-json", "{t}/x.json", "--out", SPEC]),
    flag_row("diff dtype float16", [], "--dtype: unknown dtype 'float16'",
             command=["diff", SPEC, "--backends", "numpy", "--dtype", "float16"]),
    flag_row("diff two dtypes", [], "--dtype: diff measures one dtype at a time",
             command=["diff", SPEC, "--backends", "numpy", "--dtype", "float32,float64"]),
    flag_row("diff backends empty", [], "--backends: names nothing",
             command=["diff", SPEC, "--backends", ""]),
]


def _write(tmp_path, files):
    for name, content in files.items():
        path = tmp_path / name
        if content is None:
            continue
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("name, files, argv, code, fragment", CLI_ROWS, ids=[row[0] for row in CLI_ROWS])
def test_command_line_refuses_bad_input_in_one_line(tmp_path, capsys, name, files, argv, code, fragment):
    _write(tmp_path, files)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.is_symlink()}
    try:
        status = main([arg.replace("{t}", str(tmp_path)) for arg in argv])
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert status == code, captured
    assert line.startswith("crossnn: error: ") and fragment.replace("{t}", str(tmp_path)) in line, line
    assert captured.out == ""
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.is_symlink()}
    assert after == before  # nothing written, nothing of the user's changed


# ---- the Python API ---------------------------------------------------------------------------------

def _tiny():
    return crossnn.example("linear-2x3")


def _dense(**changes):
    return {"type": "dense", "name": "fc", "units": 1, "activation": "linear", "use_bias": True,
            "kernel_init": "zeros", "bias_init": "zeros", **changes}


API_ROWS = [
    ("assert_parity rtol nan", lambda: assert_parity(_tiny(), ["numpy"], rtol=math.nan), SpecError,
     "rtol: must be a finite number >= 0, got nan"),
    ("assert_parity atol nan", lambda: assert_parity(_tiny(), ["numpy"], atol=float("nan")), SpecError,
     "atol: must be a finite number >= 0, got nan"),
    ("check_parity rtol negative", lambda: check_parity(_tiny(), ["numpy"], rtol=-1), SpecError,
     "rtol: must be a finite number >= 0, got -1"),
    ("check_parity atol infinite", lambda: check_parity(_tiny(), ["numpy"], atol=math.inf), SpecError,
     "atol: must be a finite number >= 0, got inf"),
    ("check_parity rtol text", lambda: check_parity(_tiny(), ["numpy"], rtol="1e-3"), SpecError,
     "rtol: must be a finite number >= 0, got str '1e-3'"),
    ("check_parity rtol boolean", lambda: check_parity(_tiny(), ["numpy"], rtol=True), SpecError,
     "rtol: must be a finite number >= 0, got True"),
    ("check_parity rtol numpy nan", lambda: check_parity(_tiny(), ["numpy"], rtol=np.float32("nan")), SpecError,
     "rtol: must be a finite number >= 0, got nan"),
    ("check_parity snapshot_every zero", lambda: check_parity(_tiny(), ["numpy"], snapshot_every=0), SpecError,
     "snapshot_every: must be an integer >= 1, got 0"),
    ("check_parity snapshot_every negative", lambda: check_parity(_tiny(), ["numpy"], snapshot_every=-3), SpecError,
     "snapshot_every: must be an integer >= 1, got -3"),
    ("check_parity snapshot_every fractional", lambda: check_parity(_tiny(), ["numpy"], snapshot_every=2.5),
     SpecError, "snapshot_every: must be an integer >= 1, got 2.5"),
    ("check_parity dtype float16", lambda: check_parity(_tiny(), ["numpy"], dtypes=["float16"]), BackendError,
     "dtypes: unknown dtype 'float16'"),
    ("check_parity dtypes as one word", lambda: check_parity(_tiny(), ["numpy"], dtypes="float6"), BackendError,
     "dtypes: unknown dtype 'float6'"),
    ("check_parity no dtypes", lambda: check_parity(_tiny(), ["numpy"], dtypes=[]), BackendError,
     "dtypes: name a dtype (float32 or float64)"),
    ("check_parity dtype not text", lambda: check_parity(_tiny(), ["numpy"], dtypes=[64]), TypeError,
     "dtypes: expected names (strings), got int 64"),
    ("check_parity device index", lambda: check_parity(_tiny(), ["numpy"], device="cuda:abc"), BackendError,
     "device: unknown device 'cuda:abc'"),
    ("check_parity unknown backend", lambda: check_parity(_tiny(), ["numpy", "nosuch"]), BackendError,
     "unknown backend 'nosuch'"),
    ("check_parity backends empty text", lambda: check_parity(_tiny(), ""), SpecError, "backends: names nothing"),
    ("check_parity backends a number", lambda: check_parity(_tiny(), 5), TypeError,
     "backends: expected a name, names separated by commas, or a list of names, got int 5"),
    ("assert_params_match rtol nan", lambda: assert_params_match(_tiny(), {}, rtol=math.nan), SpecError,
     "rtol: must be a finite number >= 0, got nan"),
    ("assert_params_match atol None", lambda: assert_params_match(_tiny(), {}, atol=None), SpecError,
     "atol: must be a finite number >= 0, got NoneType None"),
    ("train snapshot_every zero", lambda: train(_tiny(), [], snapshot_every=0), SpecError,
     "snapshot_every: must be an integer >= 1, got 0"),
    ("train stop_after zero", lambda: train(_tiny(), [], stop_after=0), SpecError,
     "stop_after: must be an integer >= 1, got 0"),
    ("train stop_after boolean", lambda: train(_tiny(), [], stop_after=True), SpecError,
     "stop_after: must be an integer >= 1, got True"),
    ("train stop_after beyond the plan", lambda: train(_tiny(), [], stop_after=10 ** 6), DataError,
     "stop_after: must be in 1..100 (the plan's steps), got 1000000"),
    ("train epochs beyond memory", lambda: train(S.loads(lin("epochs = 100", "epochs = 10000000000000000")), []),
     SpecError, "train.epochs: 10000000000000000 epochs make 10000000000000000 steps, whose losses take 80.0 PB"),
    ("Tolerance rtol nan", lambda: Tolerance(math.nan, 0.0), SpecError, "rtol: must be a finite number >= 0"),
    ("Tolerance atol negative", lambda: Tolerance(1e-9, -1e-12), SpecError, "atol: must be a finite number >= 0"),
    ("Tolerance rtol None", lambda: Tolerance(None, 0.0), SpecError,
     "rtol: must be a finite number >= 0, got NoneType"),
    ("Dense units a numpy float", lambda: S.Layer.from_value(_dense(units=np.float64(5))), SpecError,
     "units: expected an integer, got float64"),
    ("Dense units a numpy bool", lambda: S.Layer.from_value(_dense(units=np.True_)), SpecError,
     "units: expected an integer, got bool"),
    ("SGD lr complex", lambda: S.Optimizer.from_value({"type": "sgd", "lr": np.complex128(1)}), SpecError,
     "lr: expected a number, got complex128"),
    ("inline data of text", lambda: S.DataSource.from_value({"x": np.array([["a", "b"]]), "y": np.ones((1, 1))}),
     SpecError, "x[0][0]: expected a number, got string 'a'"),
    ("unknown example", lambda: crossnn.example("nope"), SpecError, "no example named 'nope'"),
    ("load_checkpoint of a text file", lambda: load_checkpoint(examples.path("linear-2x3")), CheckpointError,
     "linear-2x3.toml: not a readable checkpoint (ValueError: not a NumPy archive (.npz))"),
    ("parameters beyond memory", lambda: initial_parameters(S.loads(
        lin("units = 1", "units = 100000000000000"))), SpecError,
     "model.layers[0].units: 100000000000000 units make parameters of 3.2 PB (float64)"),
    ("activations beyond memory", lambda: train(S.loads(data(
        'generator = "random_normal"\nn = 2000000\ninputs = 3\noutputs = 1',
        edit(two_layers("units = 5000000"), "batch_size = 2", "batch_size = 2000000"))), []),
     SpecError, "model.layers[0]: 5000000 outputs per sample in batches of 2000000 make activations of 80.0 TB"),
]


@pytest.mark.parametrize("name, call, error, fragment", API_ROWS, ids=[row[0] for row in API_ROWS])
def test_python_api_refuses_bad_arguments_in_one_line(name, call, error, fragment):
    with pytest.raises(error) as caught:
        call()
    assert fragment in _one_line(str(caught.value))


# ---- the pytest plugin --------------------------------------------------------------------------------

PLUGIN_ROWS = [
    ("ini rtol nan", "crossnn_rtol = nan\n", [], "crossnn_rtol in tox.ini: must be a finite number >= 0, got nan"),
    ("ini atol negative", "crossnn_atol = -1\n", [], "crossnn_atol in tox.ini: must be a finite number >= 0, got -1.0"),
    ("ini rtol text", "crossnn_rtol = tight\n", [],
     "crossnn_rtol in tox.ini: must be a finite number >= 0, got 'tight'"),
    ("ini dtype unknown", "crossnn_dtypes = float64,bf16\n", [], "crossnn_dtypes in tox.ini: unknown dtype 'bf16'"),
    ("option dtype unknown", "", ["--crossnn-dtypes", "float16"], "--crossnn-dtypes: unknown dtype 'float16'"),
    ("option dtypes comma", "", ["--crossnn-dtypes", ","], "--crossnn-dtypes: name a dtype"),
    ("option backends comma", "", ["--crossnn-backends", ","], "--crossnn-backends: names nothing"),
    ("option backend unknown", "", ["--crossnn-backends", "numpy,nope"],
     "--crossnn-backends: unknown backend 'nope'; installed: numpy"),
]


@pytest.mark.parametrize("name, ini, args, fragment", PLUGIN_ROWS, ids=[row[0] for row in PLUGIN_ROWS])
def test_plugin_settings_are_one_line_collection_errors_naming_file_and_option(pytester, name, ini, args, fragment):
    pytester.makefile(".toml", parity_lin=LINEAR)
    pytester.makefile(".ini", tox="[pytest]\ncrossnn_backends = numpy\n" + ini)
    result = pytester.runpytest(*args)
    result.assert_outcomes(errors=1)
    lines = [line for line in result.outlines if "parity_lin.toml: " in line and "ERROR collecting" not in line]
    assert len(lines) == 1 and fragment in lines[0], result.outlines
    result.stdout.no_fnmatch_line("*Traceback*")


def test_plugin_data_that_do_not_fit_the_model_is_a_collection_error(pytester):
    pytester.makefile(".toml", parity_bad=lin("inputs = 3", "inputs = 4"))
    pytester.makeini("[pytest]\ncrossnn_backends = numpy\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.re_match_lines([r".*parity_bad\.toml: data\.x: has 3 feature column\(s\) but model\.inputs = 4$"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_there_are_at_least_150_distinct_rows():
    rows = [row[0] for row in CLI_ROWS + API_ROWS + PLUGIN_ROWS]
    assert len(rows) == len(set(rows)) >= 150


# ---- Ctrl-C while starting up -------------------------------------------------------------------------

INTERRUPT_WHILE_IMPORTING = textwrap.dedent("""
    import os, runpy, signal, sys

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)

    module, sys.argv = sys.argv[1], ["crossnn", *sys.argv[2:]]

    class Interrupt:  # sends this process SIGINT when `module` starts to import
        def find_spec(self, name, path=None, target=None):
            if name == module:
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, Interrupt())
    runpy.run_module("crossnn", run_name="__main__")
""")


@pytest.mark.parametrize("module, argv", [
    ("numpy", ["run", "linear-2x3", "--backends", "numpy"]),
    ("crossnn.backends", ["list"]),
    pytest.param("torch", ["run", "linear-2x3", "--backends", "torch"], id="torch",
                 marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")),
])
def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(module, argv):
    """SIGINT delivered while the command imports NumPy, its own argument parser or a framework:
    `crossnn: interrupted` and exit status 130, as later, not a KeyboardInterrupt traceback."""
    done = subprocess.run([sys.executable, "-c", INTERRUPT_WHILE_IMPORTING, module, *argv], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert (done.returncode, done.stderr) == (130, "crossnn: interrupted\n"), done
    assert signal.SIGINT == 2  # the status is 128 + SIGINT, as a shell reports it


# ---- outputs that must not be lost ------------------------------------------------------------------

def test_run_with_its_spec_as_json_output_is_refused_and_the_spec_kept(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(LINEAR)
    assert main(["run", str(spec), "--json", str(spec)]) == 2
    assert spec.read_text() == LINEAR and capsys.readouterr().out == ""


def test_crossnn_outputs_are_replaced_and_force_replaces_a_users_file(tmp_path, capsys):
    """A JSON, checkpoint or script crossnn wrote is replaced as before; a user's file only with --force."""
    spec, out, ckpt, script = tmp_path / "spec.toml", tmp_path / "out.json", tmp_path / "c.npz", tmp_path / "t.py"
    spec.write_text(LINEAR)
    run = ["run", str(spec), "--backends", "numpy", "--quiet"]
    for _ in range(2):
        assert main([*run, "--json", str(out)]) == 0
        assert main([*run, "--stop-after", "5", "--save", str(ckpt)]) == 0
        assert main(["code", str(spec), "--backend", "numpy", "--out", str(script)]) == 0
    assert json.loads(out.read_text())["experiment"]["name"] == "linear-2x3" and load_checkpoint(ckpt)[1].step == 5
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main([*run, "--json", str(notes)]) == 2 and notes.read_text() == "mine"
    assert main([*run, "--json", str(notes), "--force"]) == 0
    assert json.loads(notes.read_text())["experiment"]["name"] == "linear-2x3"
    assert main([*run, "--json", str(spec), "--force"]) == 2 and spec.read_text() == LINEAR  # an input: never


def test_report_keeps_a_users_file_in_its_folder(tmp_path, capsys):
    out = tmp_path / "reports"
    args = ["report", "linear-2x3", "--backends", "numpy", "--dtype", "float64", "--no-bench", "--name", "r",
            "--out", str(out)]
    assert main(args) == 0
    (out / "r" / "run_my_analysis.json").write_text('{"mine": 1}')
    assert main(args) == 0
    assert (out / "r" / "run_my_analysis.json").read_text() == '{"mine": 1}'
    manifest = (out / "r" / "crossnn-manifest.txt").read_text().splitlines()
    assert "run_my_analysis.json" not in manifest and "run_linear-2x3.json" in manifest


def test_stop_after_stops_the_reference_too_on_a_plan_of_a_trillion_epochs(tmp_path, capsys):
    """10^12 epochs of circle: the reference and the run stop at step 10 (the reference used to train
    the whole plan), and the saved parameters are printed."""
    spec, ckpt = tmp_path / "big.toml", tmp_path / "ck.npz"
    spec.write_text(circ("epochs = 1000", "epochs = 1000000000000"))
    assert main(["run", str(spec), "--backends", "numpy", "--stop-after", "10", "--save", str(ckpt), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "12000000000000 steps (1000000000000 epochs x 12)" in text
    assert "training state after step 10 of numpy float64 cpu default saved to" in text
    _, state = load_checkpoint(ckpt)
    kernel = np.array2string(state.params["fc2/kernel"].ravel(), precision=8, max_line_width=100)
    assert f"  fc2/kernel (5, 1): {kernel}" in text.split("its parameters:")[1]
    experiment = S.load(spec)
    result = train(experiment, [RunSpec("numpy", "float32")], stop_after=10)
    assert result.reference.steps_done == 10 and result.records[0].steps_done == 10


def test_zip_members_that_are_not_arrays_are_named(tmp_path):
    """np.load hands back a member without the .npy header as bytes: the checkpoint says which key."""
    path = tmp_path / "ck.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key in ("format", "spec", "step"):
            archive.writestr(f"{key}.npy", b"not an array")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert _one_line(str(caught.value)) == f"{path}: format must hold text (one value), got bytes"


def test_numpy_scalars_and_arrays_are_taken_where_python_values_are():
    """units = np.int64(5), lr = np.float32(0.1), use_bias = np.True_ and NumPy data arrays build the
    same spec as the Python values (stored as Python int, float, bool and tuples)."""
    dense = S.Layer.from_value(_dense(units=np.int64(5), use_bias=np.True_))
    assert dense == S.Layer.from_value(_dense(units=5)) and type(dense.units) is int and dense.use_bias is True
    sgd = S.Optimizer.from_value({"type": "sgd", "lr": np.float32(0.1)})
    assert sgd.lr == float(np.float32(0.1)) and type(sgd.lr) is float
    inline = S.DataSource.from_value({"x": np.arange(6.0).reshape(2, 3), "y": np.array([[1], [2]])})
    assert inline.x == ((0.0, 1.0, 2.0), (3.0, 4.0, 5.0)) and inline.y == ((1,), (2,)) and type(inline.y[0][0]) is int
