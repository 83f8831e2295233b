"""The TensorFlow backend's issue-15 layers (batch_norm with its moving statistics, layer_norm,
embedding, simple_rnn, lstm, gru) against independent references:

* Keras models trained with `fit` (float64 floatx, plain SGD, no shuffling) from crossnn's initial
  parameters: BatchNormalization, LayerNormalization, Embedding, SimpleRNN, LSTM and GRU with both
  reset_after forms end where crossnn's TF lowering ends (1e-9 relative, moving statistics included);
* the NumPy reference: the loop modes update the moving statistics in order, float32 stays in the
  envelope, prediction uses the moving statistics, and a run stopped in torch after a step that moved
  them resumes in TensorFlow onto the uninterrupted NumPy run;
* hypothesis: the layers' options drawn at random, against the reference;
* Keras itself for the formats: .weights.h5 files a user's Keras twin loads, Keras models imported
  with their moving statistics, Keras' own initializers (default-init), the measured facts;
* the hand-written Keras loop (tutorial) and emitted scripts of these layers.

The per-feature, per-mode agreement with the reference is tests/test_conformance.py's rows.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import crossnn  # noqa: E402
from crossnn import backends  # noqa: E402
from crossnn import spec as S  # noqa: E402
from crossnn.bench.suites import lstm_r_experiment  # noqa: E402
from crossnn.checkpoint import TrainingState, load_checkpoint, save_checkpoint  # noqa: E402
from crossnn.data import load_dataset  # noqa: E402
from crossnn.errors import UnsupportedFeature  # noqa: E402
from crossnn.harness import RunSpec, train  # noqa: E402
from crossnn.params import initial_parameters  # noqa: E402
from crossnn.parity import compare  # noqa: E402
from tests.scripts import run_scripts  # noqa: E402
from tests.test_tensorflow_features import _facts  # noqa: E402  (the facts, measured once per session)

RNG = np.random.default_rng(150)
GLOROT = dict(kernel_init=S.GlorotUniform(), bias_init=S.Uniform(low=-0.2, high=0.2))
RECURRENT = dict(kernel_init=S.GlorotUniform(), recurrent_init=S.Orthogonal(), bias_init=S.Uniform(low=-0.2,
                                                                                                  high=0.2))
FEATURES = RNG.standard_normal((20, 4)) * 2.0 + 1.0
IMAGES = RNG.standard_normal((20, 5, 5, 2))
SEQUENCES = RNG.standard_normal((20, 6, 3))
IDS = RNG.integers(0, 9, size=(20, 6)).astype(float)
TARGETS = RNG.standard_normal((20, 2))


def _experiment(name, inputs, x, layers, *, optimizer=S.SGD(lr=0.05), epochs=4, batch=8, shuffle=False):
    """layers -> dense 2 on x, MSE; no shuffling (as Keras' fit with shuffle=False walks the data)."""
    return S.Experiment(name=name, seed=15, data=S.InlineData(x=x.tolist(), y=TARGETS.tolist()),
                        model=S.Model(inputs=inputs, layers=(*layers, S.Dense(name="out", units=2, **GLOROT))),
                        loss=S.MSE(), optimizer=optimizer,
                        train=S.Train(epochs=epochs, batch_size=batch, shuffle=shuffle))


def _bn(**fields):
    return S.BatchNorm(name="bn", **{"momentum": 0.8, "epsilon": 1e-3, "running_variance": "biased",
                                     "gamma_init": S.Uniform(low=0.5, high=1.5),
                                     "beta_init": S.Uniform(low=-0.2, high=0.2), **fields})


def _lstm(**fields):
    return S.LSTM(name="lstm", units=5, unit_forget_bias=True, **RECURRENT, **fields)


def _gru(reset_after, **fields):
    return S.GRU(name="gru", units=4, reset_after=reset_after, **RECURRENT, **fields)


def _embedding(dim=3):
    return S.Embedding(name="emb", input_dim=9, output_dim=dim, embeddings_init=S.Normal(mean=0.0, stddev=0.5))


#: experiment, and the Keras layers of its body (before the dense output), built from the spec's values
CASES = {
    "batch_norm": (_experiment("bn", 4, FEATURES, [S.Dense(name="h", units=3, activation=S.Tanh(), **GLOROT), _bn()]),
                   lambda: [keras.layers.Dense(3, activation="tanh", name="h"),
                            keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-3, name="bn")]),
    "batch_norm images no center": (
        _experiment("bni", [5, 5, 2], IMAGES, [
            S.Conv2D(name="c", filters=3, kernel_size=3, padding="same", use_bias=False, **GLOROT),
            _bn(center=False, epsilon=1e-5), S.Flatten(name="flat")]),
        lambda: [keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="c"),
                 keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-5, center=False, name="bn"),
                 keras.layers.Flatten(name="flat")]),
    "layer_norm": (_experiment("ln", 4, FEATURES, [S.LayerNorm(name="ln", epsilon=1e-3,
                                                               gamma_init=S.Uniform(low=0.5, high=1.5),
                                                               beta_init=S.Uniform(low=-0.2, high=0.2))]),
                   lambda: [keras.layers.LayerNormalization(epsilon=1e-3, name="ln")]),
    "embedding lstm": (_experiment("el", 6, IDS, [_embedding(), _lstm()]),
                       lambda: [keras.layers.Embedding(9, 3, name="emb"), keras.layers.LSTM(5, name="lstm")]),
    "lstm sequences": (_experiment("ls", [6, 3], SEQUENCES, [_lstm(return_sequences=True), S.Flatten(name="flat")]),
                       lambda: [keras.layers.LSTM(5, return_sequences=True, name="lstm"),
                                keras.layers.Flatten(name="flat")]),
    "gru reset_after": (_experiment("ga", [6, 3], SEQUENCES, [_gru(True)]),
                        lambda: [keras.layers.GRU(4, reset_after=True, name="gru")]),
    "embedding gru reset before": (_experiment("gb", 6, IDS, [_embedding(), _gru(False)]),
                                   lambda: [keras.layers.Embedding(9, 3, name="emb"),
                                            keras.layers.GRU(4, reset_after=False, name="gru")]),
    "simple_rnn": (_experiment("sr", [6, 3], SEQUENCES, [S.SimpleRNN(name="rnn", units=4, **RECURRENT)]),
                   lambda: [keras.layers.SimpleRNN(4, name="rnn")]),
}


@pytest.fixture
def float64_keras():
    """Keras in float64 (floatx and the dtype policy: layers, the optimizer's learning rate), restored
    after the test."""
    from crossnn_tensorflow.device import floatx

    with floatx("float64"):
        yield


def _rel(got: dict, want: dict) -> float:
    return max(float(np.max(np.abs(got[k] - want[k])) / max(np.max(np.abs(want[k])), 1e-300)) for k in want)


def _variables(experiment, name: str) -> list[str]:
    node = next(n for n in experiment.model.nodes if n.name == name)
    return [f"{name}/{p.name}" for p in (*node.params, *node.state)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_fit_agrees_with_the_tf_lowering(case, float64_keras):
    """The Keras twin of each case compiled with SGD and MSE and fit on the same rows in the same order
    (batch 8, no shuffling), from crossnn's initial parameters and moving statistics: every weight,
    the moving statistics included, within 1e-9 of crossnn's float64 TF run; so are Keras' per-epoch
    losses (means over the batches weighted by their sizes). Keras' BatchNormalization keeps the
    biased moving variance and uses the momentum as crossnn does."""
    experiment, body = CASES[case]
    data = load_dataset(experiment)
    start = initial_parameters(experiment)
    layers = body() + [keras.layers.Dense(2, name="out")]
    model = keras.Sequential([keras.Input(shape=experiment.model.input_shape), *layers])
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([start[name] for name in _variables(experiment, layer.name)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=np.float64(experiment.optimizer.lr)),
                  loss=keras.losses.MeanSquaredError(), jit_compile=False)
    history = model.fit(data.x, data.y, batch_size=8, epochs=experiment.train.epochs, shuffle=False, verbose=0)
    keras_final = {name: np.asarray(value) for layer in model.layers if layer.weights
                   for name, value in zip(_variables(experiment, layer.name), layer.get_weights())}

    result = train(experiment, [RunSpec("tensorflow", "float64", "cpu", "graph")])
    record = result.records[0]
    assert record.ok, record.message
    assert sorted(keras_final) == sorted(record.final_params)
    rel = _rel(keras_final, record.final_params)
    print(f"{case}: Keras fit vs crossnn TF, final variables max rel {rel:.2e}")
    assert rel <= 1e-9
    sizes = np.array([len(b) for b in result.plan.batches(0, result.plan.steps)], dtype=float)
    per_epoch = len(sizes) // experiment.train.epochs
    epochs = [slice(k * per_epoch, (k + 1) * per_epoch) for k in range(experiment.train.epochs)]
    ours = [np.sum(record.losses[e] * sizes[e]) / np.sum(sizes[e]) for e in epochs]
    np.testing.assert_allclose(history.history["loss"], ours, rtol=1e-9)
    moving = [name for name in record.final_params if "moving" in name]
    for name in moving:  # the moving statistics moved, and Keras agrees on where to
        assert not np.allclose(record.final_params[name], start[name])


# ---- the NumPy reference: loop modes, float32, prediction, a run resumed across frameworks ----------


def _shuffled(case, **fields):
    experiment = CASES[case][0]
    return dataclasses.replace(experiment, optimizer=S.Adam(lr=0.01, eps=1e-8),
                               train=S.Train(epochs=3, batch_size=6, shuffle=True), **fields)


@pytest.mark.parametrize("case", ["batch_norm images no center", "embedding lstm"])
def test_loop_modes_update_the_state_in_order(case):
    """The epoch loop (tf.while_loop over steps) runs the graph step's kernels, so it ends on the graph
    mode's bits, moving statistics included (each step reads the statistics the step before wrote);
    the XLA loop stays within rounding of the per-step XLA function. Batches of 6 out of 20: the short
    last batch is a loop call of its own."""
    records = {r.spec.mode: r for r in train(_shuffled(case), [
        RunSpec("tensorflow", "float64", "cpu", mode) for mode in ("graph", "epoch", "xla", "xla-epoch")]).records}
    assert all(r.ok for r in records.values()), [r.message for r in records.values()]
    for loop, step, rtol in (("epoch", "graph", 0.0), ("xla-epoch", "xla", 1e-12)):
        assert _rel(records[loop].final_params, records[step].final_params) <= rtol, (loop, step)
        np.testing.assert_allclose(records[loop].losses, records[step].losses, rtol=rtol, atol=0)


@pytest.mark.parametrize("mode", ["graph", "xla-epoch"])
def test_float32_stays_in_the_envelope(mode):
    """float32 runs of the new layers against the NumPy float64 reference, at every snapshot, within
    crossnn's float32 tolerances (the documented envelope): every case in graph mode, two under XLA
    (each case compiles for a while there)."""
    for case in sorted(CASES) if mode == "graph" else ["batch_norm images no center", "embedding gru reset before"]:
        result = train(_shuffled(case), [RunSpec("tensorflow", "float32", "cpu", mode)], snapshot_every=1)
        (record,) = result.records
        assert record.ok, record.message
        parity = compare(result.reference, record)
        assert parity.passed, (case, parity.max_rel, parity.first_fail_step)


def test_prediction_uses_the_moving_statistics():
    """After training, predict() normalizes with the moving statistics, as the NumPy reference does
    (not with the batch's): the same outputs as NumPy's predict from the same variables, and not the
    outputs a training-mode pass gives."""
    experiment = _shuffled("batch_norm")
    record = train(experiment, [RunSpec("tensorflow", "float64", "cpu", "graph")]).records[0]
    final = record.final_params
    data = load_dataset(experiment)
    trainer = backends.get("tensorflow").build(experiment, final, data, dtype="float64", device="cpu", mode="eager")
    predicted = trainer.predict(data.x)
    reference = backends.get("numpy").build(experiment, final, data, dtype="float64", device="cpu",
                                            mode="default").predict(data.x)
    np.testing.assert_allclose(predicted, reference, rtol=1e-12, atol=1e-14)
    h = np.tanh(data.x @ final["h/kernel"] + final["h/bias"])
    moving = (h - final["bn/moving_mean"]) / np.sqrt(final["bn/moving_variance"] + 1e-3)
    by_hand = (moving * final["bn/gamma"] + final["bn/beta"]) @ final["out/kernel"] + final["out/bias"]
    np.testing.assert_allclose(predicted, by_hand, rtol=1e-12, atol=1e-14)
    batch = (h - h.mean(axis=0)) / np.sqrt(h.var(axis=0) + 1e-3)
    assert not np.allclose(predicted, (batch * final["bn/gamma"] + final["bn/beta"]) @ final["out/kernel"]
                           + final["out/bias"], rtol=1e-3)


@pytest.mark.parametrize("mode", ["graph", "xla-epoch"])
def test_stopped_in_torch_resumed_in_tensorflow_equals_numpy(mode, tmp_path):
    """Stop in torch after 5 steps (each moved the moving statistics, PyTorch's unbiased running
    variance), save, resume in TensorFlow: every variable at every snapshot equals the uninterrupted
    NumPy run (1e-9), the moving statistics included."""
    pytest.importorskip("torch")
    experiment = dataclasses.replace(
        CASES["batch_norm images no center"][0], optimizer=S.Adam(lr=0.01, eps=1e-8),
        train=S.Train(epochs=3, batch_size=6, shuffle=True),
        model=S.Model(inputs=[5, 5, 2], layers=(
            S.Conv2D(name="c", filters=3, kernel_size=3, padding="same", use_bias=False, **GLOROT),
            _bn(momentum=0.9, running_variance="unbiased"), S.ActivationLayer(name="relu", activation=S.ReLU()),
            S.Flatten(name="flat"), S.Dense(name="out", units=2, **GLOROT))))
    stopped = train(experiment, [RunSpec("torch", "float64")], stop_after=5).records[0]
    if not stopped.ok and stopped.message.startswith("backend 'torch' cannot lower"):  # UnsupportedFeature
        pytest.skip(f"torch cannot run batch_norm yet: {stopped.message}")
    assert stopped.ok, stopped.message
    start = initial_parameters(experiment)
    state = stopped.final_state
    assert state.step == 5 and not np.allclose(state.params["bn/moving_variance"], start["bn/moving_variance"])
    path = tmp_path / "torch.npz"
    save_checkpoint(path, experiment, state)
    _, loaded = load_checkpoint(path, experiment)
    result = train(experiment, [RunSpec("tensorflow", "float64", "cpu", mode)], resume=loaded, snapshot_every=1)
    (record,) = result.records
    assert record.ok, record.message
    assert record.start_step == 5 and max(record.snapshots) == result.plan.steps
    parity = compare(result.reference, record)
    assert parity.passed and parity.max_rel <= 1e-9, parity.max_rel
    assert _rel(record.final_params, result.reference.final_params) <= 1e-9


# ---- Keras' formats: .weights.h5, model import, Keras' initializers -----------------------------------


def _trained(case, **fields):
    experiment = _shuffled(case, **fields)
    record = train(experiment, [RunSpec("tensorflow", "float64", "cpu", "graph")]).records[0]
    assert record.ok, record.message
    return experiment, record


def _keras_twin(case):
    experiment, body = CASES[case]
    return keras.Sequential([keras.Input(shape=experiment.model.input_shape), *body(),
                             keras.layers.Dense(2, name="out")])


@pytest.mark.parametrize("case", ["batch_norm images no center", "embedding lstm", "embedding gru reset before"])
def test_weights_h5_loads_into_a_users_keras_twin(case, tmp_path, float64_keras):
    """A trained run exported as .weights.h5 loads into a user's hand-built Keras twin
    (model.load_weights), which then predicts what crossnn predicts (the moving statistics came along);
    the file reads back into the same variables."""
    experiment, record = _trained(case)
    backend = backends.get("tensorflow")
    path = tmp_path / "run.weights.h5"
    backend.export_native(experiment, TrainingState(record.steps_done, record.final_params, {}, {}), path)
    twin = _keras_twin(case)
    twin.load_weights(path)
    data = load_dataset(experiment)
    crossnn_trainer = backend.build(experiment, record.final_params, data, dtype="float64", device="cpu",
                                    mode="graph")
    np.testing.assert_allclose(twin.predict(data.x, verbose=0), crossnn_trainer.predict(data.x), rtol=1e-12,
                               atol=1e-14)
    back = backend.import_native(experiment, path)
    assert sorted(back.params) == sorted(record.final_params)
    assert all(np.array_equal(back.params[k], record.final_params[k]) for k in back.params)


def test_import_keras_models_with_these_layers(float64_keras):
    """A Keras Sequential (Dense, BatchNormalization, LayerNormalization) and a functional model
    (Embedding -> LSTM and GRU branches -> Concatenate -> Dense) import into specs whose starting
    variables are the models' (moving statistics included) and whose predictions are Keras'."""
    backend = backends.get("tensorflow")
    rng = np.random.default_rng(3)
    sequential = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, activation="tanh", name="h"),
                                   keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-4, name="bn"),
                                   keras.layers.LayerNormalization(epsilon=1e-5, center=False, name="ln"),
                                   keras.layers.Dense(2, name="out")])
    sequential.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 3), rng.normal(size=3), rng.normal(size=3),
                                            rng.uniform(0.5, 2.0, 3)])
    ids = keras.Input(shape=(6,), name="ids")
    embedded = keras.layers.Embedding(9, 3, name="emb")(ids)
    joined = keras.layers.Concatenate(name="join")([
        keras.layers.LSTM(4, unit_forget_bias=False, name="lstm")(embedded),
        keras.layers.GRU(2, reset_after=False, name="gru")(embedded)])
    functional = keras.Model(ids, keras.layers.Dense(2, name="out")(joined))
    for model, x in ((sequential, FEATURES), (functional, IDS)):
        spec_model, variables = backend.import_model(model)
        by_layer = {layer.name: layer for layer in model.layers}
        for node in spec_model.nodes:
            weights = by_layer[node.name].get_weights()
            names = [f"{node.name}/{p.name}" for p in (*node.params, *node.state)]
            assert all(np.array_equal(variables[n], w) for n, w in zip(names, weights, strict=True))
        experiment = S.Experiment(name="imported", seed=0, data=S.InlineData(x=x.tolist(), y=TARGETS.tolist()),
                                  model=spec_model, loss=S.MSE(), optimizer=S.SGD(lr=0.1),
                                  train=S.Train(epochs=1, batch_size=4))
        trainer = backend.build(experiment, variables, load_dataset(experiment), dtype="float64", device="cpu",
                                mode="eager")
        np.testing.assert_allclose(trainer.predict(x), model.predict(x, verbose=0), rtol=1e-12, atol=1e-14)
    kinds = {node.name: node.layer for node in spec_model.nodes}
    assert kinds["lstm"].unit_forget_bias is False and kinds["gru"].reset_after is False
    assert isinstance(kinds["lstm"].recurrent_init, S.Orthogonal)


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning")
def test_import_refuses_options_a_spec_cannot_say():
    for layer, message in ((keras.layers.LSTM(3, go_backwards=True), "go_backwards"),
                           (keras.layers.GRU(3, use_bias=False), "use_bias"),
                           (keras.layers.SimpleRNN(3, return_state=False, dropout=0.5), "dropout"),
                           (keras.layers.Embedding(9, 3, mask_zero=True), "mask_zero"),
                           (keras.layers.LayerNormalization(rms_scaling=True), "rms_scaling")):
        shape = (6,) if isinstance(layer, keras.layers.Embedding) else (6, 3)
        with pytest.raises(UnsupportedFeature, match=message):
            backends.get("tensorflow").import_model(keras.Sequential([keras.Input(shape=shape), layer]))


def test_native_default_init_is_keras_own_layers_seeded(float64_keras):
    """default-init: the Keras layers' own initializers, drawn in the model's order after
    keras.utils.set_random_seed(seed), as a user's keras.Sequential draws them: Embedding U(±0.05),
    LSTM glorot_uniform / orthogonal / zeros with the forget gate at 1, BatchNormalization ones and
    zeros (moving statistics zeros and ones)."""
    experiment = _experiment("di", 6, IDS, [_embedding(), _lstm(return_sequences=True), _bn(), S.Flatten(name="flat")])
    record = train(experiment, [RunSpec("tensorflow", "float64", "cpu", "graph", frozenset({"default-init"}))],
                   snapshot_every=1).records[0]
    assert record.ok, record.message
    keras.utils.set_random_seed(experiment.seed)
    twin = keras.Sequential([keras.Input(shape=(6,)), keras.layers.Embedding(9, 3),
                             keras.layers.LSTM(5, return_sequences=True), keras.layers.BatchNormalization(),
                             keras.layers.Flatten(), keras.layers.Dense(2)])
    start = record.snapshots[0]
    names = ["emb/embeddings", "lstm/kernel", "lstm/recurrent_kernel", "lstm/bias", "bn/gamma", "bn/beta",
             "bn/moving_mean", "bn/moving_variance", "out/kernel", "out/bias"]
    assert all(np.array_equal(start[n], w) for n, w in zip(names, twin.get_weights(), strict=True))
    assert np.abs(start["emb/embeddings"]).max() <= 0.05
    assert start["lstm/bias"].reshape(4, 5).mean(axis=1).tolist() == [0.0, 1.0, 0.0, 0.0]
    recurrent = start["lstm/recurrent_kernel"]
    assert np.abs(recurrent @ recurrent.T - np.eye(5)).max() < 1e-12


def test_sequence_facts_against_hand_computed_references():
    f = _facts()
    assert f["layernorm_epsilon"] == 1e-3
    emb = f["embedding_init"]
    assert emb["max_abs"] <= 0.05 and abs(emb["std"] - 0.05 / math.sqrt(3)) < 0.002  # U(±0.05): std 0.05/√3
    rec = f["recurrent_init"]
    assert rec["glorot_limit"] == math.sqrt(6 / (8 + 64)) and 0.9 * rec["glorot_limit"] < rec["kernel_max_abs"]
    assert rec["kernel_max_abs"] <= rec["glorot_limit"] and rec["recurrent_orthogonality_error"] < 1e-12
    assert f["lstm_unit_forget_bias"] == {"default": True, "bias_per_gate": [0.0, 1.0, 0.0, 0.0]}
    assert f["gru"] == {"reset_after_default": True, "bias_shape": [2, 9], "gate_order": ["z", "r", "h"]}
    assert json.loads(json.dumps(f)) == f


# ---- the hand-written Keras loop and emitted scripts ---------------------------------------------------


def _short(experiment, n, epochs):
    return dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, n=n),
                               train=dataclasses.replace(experiment.train, epochs=epochs))


@pytest.mark.parametrize("name", ["token-sums", "lstm-r"])
def test_tutorial_loop_matches_the_lowering_on_lstm_models(name):
    """keras.layers.Embedding -> keras.layers.LSTM -> Dense in the Keras tutorial loop (SpecAdam on
    token-sums, keras.optimizers.SGD on the DLBench LSTM case) from crossnn's initial parameters: the
    lowering's parameters and losses to rounding."""
    experiment = _short(crossnn.example("token-sums"), 60, 2) if name == "token-sums" else \
        _short(lstm_r_experiment(16), 32, 1)
    result = train(experiment, [RunSpec("tensorflow", "float64", "cpu", "graph")])
    backend = backends.get("tensorflow")
    trainer = backend.tutorial(experiment, initial_parameters(experiment), load_dataset(experiment),
                               dtype="float64", device="cpu")
    losses = trainer.run(result.plan.batches(0, result.plan.steps))
    rel = _rel(trainer.parameters(), result.records[0].final_params)
    print(f"{name}: Keras tutorial loop vs crossnn TF, max rel {rel:.2e}")
    assert rel <= 1e-12
    np.testing.assert_allclose(losses, result.records[0].losses, rtol=1e-12)


def test_tutorial_loop_refuses_an_unbiased_running_variance():
    experiment = _shuffled("batch_norm", model=S.Model(inputs=4, layers=(_bn(running_variance="unbiased"),
                                                                          S.Dense(name="out", units=2, **GLOROT))))
    with pytest.raises(UnsupportedFeature, match="unbiased running variance"):
        backends.get("tensorflow").tutorial(experiment, initial_parameters(experiment), load_dataset(experiment),
                                            dtype="float64", device="cpu")


@pytest.mark.slow  # 7 s: the emitted TF script of a sequence model is also run in test_codegen (token-sums)
def test_scripts_of_these_layers_reproduce_the_tf_runs(tmp_path):
    """Emitted scripts of models with layer_norm, simple_rnn, gru (both forms, returning sequences),
    embedding and batch_norm (unbiased, no scale) end within 1e-9 of crossnn's TF runs; nothing on
    stderr. (digits-bn and token-sums: tests/test_codegen.py.)"""
    cases = {
        "sequences": _experiment("sq", [6, 3], SEQUENCES, [
            S.SimpleRNN(name="rnn", units=4, return_sequences=True, activation=S.ReLU(), **RECURRENT),
            S.LayerNorm(name="ln", epsilon=1e-5, scale=False), _gru(False, return_sequences=True),
            S.Flatten(name="flat")], optimizer=S.Adam(lr=0.01, eps=1e-8), shuffle=True),
        "ids": _experiment("id", 6, IDS, [_embedding(4), _gru(True), _bn(scale=False, running_variance="unbiased")],
                           optimizer=S.SGD(lr=0.05, momentum=0.9), shuffle=True),
    }
    backend = backends.get("tensorflow")
    paths = {}
    for name, experiment in cases.items():
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(backend.script(experiment, initial_parameters(experiment), load_dataset(experiment)))
    done = run_scripts(paths)
    for name, experiment in cases.items():
        out = done[name]
        assert out.returncode == 0 and out.stderr == "", (name, out.stderr[-2000:])
        got = {k: np.array(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
        record = train(experiment, [RunSpec("tensorflow", "float64", "cpu", "graph")]).records[0]
        assert sorted(got) == sorted(record.final_params)
        rel = _rel(got, record.final_params)
        print(f"script {name}: max rel {rel:.2e} from crossnn's TF run")
        assert rel <= 1e-9


# ---- property-based: the layers' options -------------------------------------------------------------

_ACTS = st.sampled_from([S.Tanh(), S.Sigmoid(), S.ReLU(), S.Linear()])


@st.composite
def _layer_cases(draw):
    """A small model around one of the new layers with its options drawn: batch_norm (axis, momentum,
    epsilon, running variance, center, scale; on features or images), layer_norm (axis, epsilon,
    center, scale), simple_rnn / lstm / gru (units, return_sequences, activations, unit_forget_bias,
    reset_after) on float sequences or behind an embedding; SGD or Adam, batches of 2 to 6 (a batch
    of one would give an unbiased variance no meaning)."""
    kind = draw(st.sampled_from(["batch_norm", "layer_norm", "recurrent"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n, batch = 12, draw(st.sampled_from([2, 3, 4, 6]))
    if kind == "recurrent":
        steps, ids = draw(st.integers(1, 5)), draw(st.booleans())
        units = draw(st.integers(1, 5))
        cls = draw(st.sampled_from([S.SimpleRNN, S.LSTM, S.GRU]))
        options = {S.LSTM: {"unit_forget_bias": draw(st.booleans())}, S.GRU: {"reset_after": draw(st.booleans())},
                   S.SimpleRNN: {}}[cls]
        if cls is not S.SimpleRNN:
            options["recurrent_activation"] = draw(st.sampled_from([S.Sigmoid(), S.Tanh()]))
        layers = [cls(name="rec", units=units, return_sequences=draw(st.booleans()), activation=draw(_ACTS),
                      **RECURRENT, **options)]
        if ids:
            layers.insert(0, S.Embedding(name="emb", input_dim=5, output_dim=draw(st.integers(1, 4)),
                                         embeddings_init=S.Normal(mean=0.0, stddev=0.5)))
            x, inputs = rng.integers(0, 5, (n, steps)).astype(float), steps
        else:
            features = draw(st.integers(1, 3))
            x, inputs = rng.standard_normal((n, steps, features)), [steps, features]
    else:
        images = draw(st.booleans())
        x, inputs = (rng.standard_normal((n, 3, 4, 2)), [3, 4, 2]) if images else \
            (rng.standard_normal((n, 3)) * 3.0 + 1.0, 3)
        rank = 3 if images else 1
        axis = draw(st.sampled_from([-1] + list(range(1, rank + 1))))
        scales = dict(center=draw(st.booleans()), scale=draw(st.booleans()), epsilon=draw(st.sampled_from([1e-5,
                                                                                                          1e-3, 0.1])))
        if kind == "batch_norm":
            norm = _bn(axis=axis, momentum=draw(st.floats(0.0, 0.99)),
                       running_variance=draw(st.sampled_from(["biased", "unbiased"])), **scales)
        else:
            norm = S.LayerNorm(name="ln", axis=axis, gamma_init=S.Uniform(low=0.5, high=1.5),
                               beta_init=S.Uniform(low=-0.2, high=0.2), **scales)
        layers = [S.Dense(name="h", units=3, activation=S.Tanh(), **GLOROT), norm]
    layers.append(S.Flatten(name="flat"))  # sequences and images to rows for the dense output
    optimizer = draw(st.sampled_from([S.SGD(lr=0.1, momentum=0.5), S.Adam(lr=0.01, eps=1e-8)]))
    experiment = S.Experiment(name="options", seed=draw(st.integers(0, 99)),
                              data=S.InlineData(x=x.tolist(), y=rng.standard_normal((n, 2)).tolist()),
                              model=S.Model(inputs=inputs, layers=(*layers, S.Dense(name="out", units=2, **GLOROT))),
                              loss=S.MSE(), optimizer=optimizer,
                              train=S.Train(epochs=2, batch_size=batch, shuffle=True))
    return experiment, draw(st.sampled_from(["graph", "epoch"]))


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_layer_cases())
def test_layer_options_agree_with_the_reference(case):
    """Every drawn option of the new layers: the TF lowering agrees with the NumPy reference in
    float64 at every step (1e-9), moving statistics included. 30 examples (150 passed once, 100 s)."""
    experiment, mode = case
    result = train(experiment, [RunSpec("tensorflow", "float64", "cpu", mode)], snapshot_every=1)
    (record,) = result.records
    assert record.ok, record.message
    parity = compare(result.reference, record)
    layers = ", ".join(f"{layer.kind} {layer.fields_dict()}" for layer in experiment.model.layers[:2])
    assert parity.passed, f"{mode}: {layers}: max rel {parity.max_rel:.2e} at step {parity.first_fail_step}"
