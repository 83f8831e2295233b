"""Emitted scripts: each backend's standalone script, run in a subprocess, reproduces crossnn's run of
the same spec on that backend (float64, 1e-9)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import crossnn
from crossnn import backends
from crossnn import spec as S
from crossnn.cli import main
from crossnn.data import load_dataset
from crossnn.errors import UnsupportedFeature
from crossnn.harness import RunSpec, train
from crossnn.params import initial_parameters

FEATURES = S.Experiment(
    name="features", seed=4, data=S.RandomNormal(n=20, inputs=3, outputs=2),
    model=S.Model(inputs=3, layers=(
        S.Dense(name="h", units=6, activation=S.GELU(approximate="none"), kernel_init=S.HeUniform(),
                bias_init=S.Zeros()),
        S.Dropout(name="drop", rate=0.3),
        S.Dense(name="g", units=4, activation=S.LeakyReLU(negative_slope=0.1), kernel_init=S.GlorotUniform(),
                bias_init=S.Zeros()),
        S.Dense(name="out", units=2, kernel_init=S.GlorotUniform(), bias_init=S.Zeros()))),
    loss=S.Huber(delta=0.5),
    optimizer=S.RMSprop(lr=0.01, alpha=0.9, eps=1e-8, momentum=0.5, weight_decay=0.01, weight_decay_kind="decoupled",
                        clip_norm=1.0, schedule=S.StepDecay(unit="epoch", step_size=2, gamma=0.5)),
    train=S.Train(epochs=6, batch_size=6, shuffle=True))

HE = dict(kernel_init=S.HeUniform(), bias_init=S.Normal(mean=0.0, stddev=0.1))
CNN = S.Experiment(
    name="cnn", seed=2, data=S.Textures(n=24, size=6, channels=2, classes=3),
    model=S.Model(inputs=[6, 6, 2], layers=(
        S.Conv2D(name="c1", filters=3, kernel_size=3, strides=2, padding="same", activation=S.ReLU(), **HE),
        S.MaxPool2D(name="mp", pool_size=2, strides=1, padding="same"),
        S.AvgPool2D(name="ap", pool_size=[2, 1], strides=1, padding="same", count_padding=False),
        S.Dropout(name="drop", rate=0.25),
        S.Conv2D(name="c2", filters=2, kernel_size=[2, 3], padding="valid", dilation=[2, 1], **HE),
        S.Flatten(name="flat"),
        S.Dense(name="out", units=3, kernel_init=S.GlorotUniform(), bias_init=S.Zeros()))),
    loss=S.CrossEntropy(from_logits=True, sparse=True), optimizer=S.Adam(lr=0.01, eps=1e-8),
    train=S.Train(epochs=3, batch_size=8, shuffle=True))


def _short(experiment, *, epochs, n=None):
    """An example cut to a few steps (and, with n, fewer generated samples) to keep scripts quick."""
    data = dataclasses.replace(experiment.data, n=n) if n is not None else experiment.data
    return dataclasses.replace(experiment, data=data, train=dataclasses.replace(experiment.train, epochs=epochs))


SPECS = {"linear-2x3": crossnn.example("linear-2x3"), "two-tower": crossnn.example("two-tower"),
         "line": crossnn.example("line"), "adder-short": dataclasses.replace(
             crossnn.example("adder"), train=S.Train(epochs=5, batch_size=1)),
         "circle-50": dataclasses.replace(crossnn.example("circle"), train=S.Train(epochs=50, batch_size=100)),
         "features": FEATURES, "cnn": CNN,
         "resnet-short": _short(crossnn.example("resnet-mini"), n=48, epochs=1),
         "digits-bn-short": _short(crossnn.example("digits-bn"), epochs=1),
         "token-sums-short": _short(crossnn.example("token-sums"), n=60, epochs=2)}


def _script_params(backend_name: str, experiment) -> dict:
    code = backends.get(backend_name).script(experiment, initial_parameters(experiment), load_dataset(experiment))
    done = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


QUICK_SCRIPTS = ("features", "cnn", "token-sums-short")  # dense features, a CNN, embedding + LSTM; the rest: -m slow


@pytest.mark.parametrize("name", [name if name in QUICK_SCRIPTS else pytest.param(name, marks=pytest.mark.slow)
                                  for name in SPECS])
def test_emitted_script_reproduces_the_backend(backend_name, name):
    experiment = SPECS[name]
    try:
        got = _script_params(backend_name, experiment)
    except UnsupportedFeature as err:
        pytest.skip(str(err))
    expected = train(experiment, [RunSpec(backend_name, "float64")]).records[0].final_params
    assert set(got) == set(expected)
    for key, value in expected.items():
        diff = np.max(np.abs(np.array(got[key]) - value)) / max(np.max(np.abs(value)), 1e-300)
        assert diff <= 1e-9, f"{backend_name} {name} {key}: {diff:.2e}"


def test_code_command_prints_and_writes(tmp_path, capsys):
    assert main(["code", "linear-2x3", "--backend", "numpy"]) == 0
    assert "def backward(P, c, d_out):" in capsys.readouterr().out
    out = tmp_path / "side.html"
    names = ",".join(backends.available())
    assert main(["code", "two-tower", "--side-by-side", "--backends", names, "--html", str(out)]) == 0
    page = out.read_text()
    assert page.count("<section>") == len(backends.available()) and "batch order" in page
    assert main(["code", "two-tower", "--side-by-side", "--backends", names, "--width", "150"]) == 0
    assert "NUMPY" in capsys.readouterr().out
    assert main(["code", "two-tower"]) == 2
