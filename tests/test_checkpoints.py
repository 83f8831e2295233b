"""Checkpoints: exact save/load, resume from the command line, and one clear line for every kind of
broken or mismatched file."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest

import crossnn
from crossnn import spec as S
from crossnn.checkpoint import CheckpointError, TrainingState, load_checkpoint, save_checkpoint
from crossnn.cli import main
from crossnn.harness import RunSpec, train

ADAM = dataclasses.replace(crossnn.example("two-tower"), train=S.Train(epochs=40, batch_size=4, shuffle=True))


@pytest.fixture(scope="module")
def stopped():
    return train(ADAM, [RunSpec("numpy", "float64")], stop_after=17).records[0].final_state


def test_save_and_load_are_exact(tmp_path, stopped):
    path = tmp_path / "c.npz"
    save_checkpoint(path, ADAM, stopped)
    experiment, state = load_checkpoint(path, ADAM)
    assert experiment == ADAM and state.step == 17 and state.counters == {"step": 17}
    for name, value in stopped.params.items():
        assert np.array_equal(state.params[name], value)
        assert np.array_equal(state.slots["exp_avg_sq"][name], stopped.slots["exp_avg_sq"][name])


def _damaged(tmp_path, stopped, how):
    path = tmp_path / "bad.npz"
    save_checkpoint(path, ADAM, stopped)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "missing key":
        with np.load(path) as archive:
            contents = {k: archive[k] for k in archive.files if k != "slot/exp_avg/dense2/kernel"}
        np.savez(path, **contents)
    elif how == "not a checkpoint":
        np.savez(path, weights=np.zeros(3))
    elif how == "wrong shape":
        with np.load(path) as archive:
            contents = {k: archive[k] for k in archive.files}
        contents["param/dense3/kernel"] = np.zeros((2, 2))
        np.savez(path, **contents)
    return path


@pytest.mark.parametrize("how, fragment", [
    ("truncated", "not a readable checkpoint"),
    ("missing key", "missing key 'slot/exp_avg/dense2/kernel'"),
    ("not a checkpoint", "missing key 'format'"),
    ("wrong shape", "param/dense3/kernel has shape (2, 2), the model needs (3, 1)"),
])
def test_broken_checkpoints_fail_with_one_line(tmp_path, stopped, how, fragment):
    path = _damaged(tmp_path, stopped, how)
    with pytest.raises(CheckpointError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(path, ADAM)


def test_checkpoint_of_another_spec_is_refused(tmp_path, stopped):
    path = tmp_path / "c.npz"
    save_checkpoint(path, ADAM, stopped)
    with pytest.raises(CheckpointError, match="saved for a different spec"):
        load_checkpoint(path, crossnn.example("circle"))


def test_command_line_stop_save_resume(tmp_path, capsys):
    spec = tmp_path / "adam.toml"
    S.save(ADAM, spec)
    ckpt = tmp_path / "ckpt.npz"
    assert main(["run", str(spec), "--backends", "numpy", "--stop-after", "17", "--save", str(ckpt), "--quiet"]) == 0
    assert "training state after step 17" in capsys.readouterr().out
    assert main(["run", str(spec), "--backends", "numpy", "--resume", str(ckpt), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "resumed at step 17" in out and "parity: PASS" in out
    # bad uses are one line and exit 2
    for argv, fragment in ((["--save", str(ckpt)], "--stop-after and --save go together"),
                           (["--stop-after", "5", "--save", str(ckpt), "--backends", "numpy", "--dtype", "float32,float64"],
                            "--save: choose one backend and one dtype"),
                           (["--resume", str(tmp_path / "nothing.npz")], "no such checkpoint")):
        assert main(["run", str(spec), "--quiet", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err


def test_training_state_refuses_a_step_beyond_the_plan(stopped):
    late = TrainingState(10_000, stopped.params, stopped.slots, stopped.counters)
    with pytest.raises(crossnn.DataError, match="outside this plan"):
        train(ADAM, [RunSpec("numpy")], resume=late)


def test_truncated_file_is_not_a_zip(tmp_path, stopped):
    path = _damaged(tmp_path, stopped, "truncated")
    assert not zipfile.is_zipfile(path)
