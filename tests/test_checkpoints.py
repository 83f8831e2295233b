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
from crossnn.parity import compare

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
    longer = dataclasses.replace(ADAM, train=dataclasses.replace(ADAM.train, epochs=41))  # the field is named
    with pytest.raises(CheckpointError, match=r"\('two-tower'; train.epochs: 40 in the checkpoint, 41 here\)"):
        load_checkpoint(path, longer)


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
                           (["--stop-after", "5", "--save", str(ckpt), "--backends", "numpy",
                             "--dtype", "float32,float64"],
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


def test_a_stopped_run_is_compared_at_its_stop_step():
    """The reference keeps a snapshot at the stop step, off the snapshot grid, so parity sees the state
    that is saved; run in float64 on the reference's own code, that state is the reference's."""
    result = train(ADAM, [RunSpec("numpy", "float64")], stop_after=17, snapshot_every=10)
    (stopped,) = result.records
    assert sorted(stopped.snapshots) == [0, 10, 17]
    for name, value in stopped.final_state.params.items():
        assert np.array_equal(result.reference.snapshots[17][name], value)
    parity = compare(result.reference, stopped)
    assert [step for step, _ in parity.curve] == [0, 10, 17] and parity.passed


def test_a_resumed_run_is_compared_from_its_first_step(stopped):
    """A checkpoint off the snapshot grid is still compared at the step it resumes from, against the
    reference trained from step 0: resuming equals never stopping."""
    result = _resumed(stopped)
    parity = compare(result.reference, result.records[0])
    assert parity.curve[0] == (17, 0.0) and parity.passed
    assert result.reference.start_step == 0 and result.notes == []


def test_a_checkpoint_off_the_references_path_becomes_the_references_start_too(stopped):
    """A state the reference does not reach (a user's own weights imported at step 0, a float32 run's
    state, an edited checkpoint) cannot be held to the run from the spec's initializers: the reference
    resumes from it as well, a note says so (naming the first parameter off and by how much), and the
    runs are compared from there: a backend that then drifts still fails."""
    skewed = dataclasses.replace(stopped, params={**stopped.params,
                                                  "dense3/kernel": stopped.params["dense3/kernel"] + 1e-3})
    result = _resumed(skewed)
    (note,) = result.notes
    assert note.startswith("the checkpoint's state at step 17 is not the reference's (dense3/kernel max abs 1.0e-03)")
    assert result.reference.start_step == 17 and result.records == [result.reference]  # the same run, made once
    rounded = dataclasses.replace(stopped, params={k: v.astype(np.float32) for k, v in stopped.params.items()})
    result = train(ADAM, [RunSpec("numpy", "float32")], resume=rounded, snapshot_every=10)
    parity = compare(result.reference, result.records[0])
    assert result.reference.start_step == 17 and parity.curve[0] == (17, 0.0) and parity.passed
    assert [p.name for p in parity.params] == list(stopped.params)  # every parameter compared, from step 17
    assert 0 < parity.max_rel < 1e-3  # float32 training after it, against the float64 reference


def _resumed(state):
    return train(ADAM, [RunSpec("numpy", "float64")], resume=state, snapshot_every=10)


def test_stopping_at_or_before_the_checkpoint_is_refused(tmp_path, stopped, capsys):
    for stop in (10, 17):
        with pytest.raises(crossnn.DataError, match=f"^stop_after: must be > 17, the checkpoint's step, got {stop}"):
            train(ADAM, [RunSpec("numpy")], resume=stopped, stop_after=stop)
    spec, ckpt, out = tmp_path / "adam.toml", tmp_path / "c17.npz", tmp_path / "c10.npz"
    S.save(ADAM, spec)
    save_checkpoint(ckpt, ADAM, stopped)
    assert main(["run", str(spec), "--backends", "numpy", "--resume", str(ckpt), "--stop-after", "10",
                 "--save", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == ("crossnn: error: --stop-after: must be > 17, the checkpoint's step, "
                                       "got 10\n")
    assert not out.exists()
