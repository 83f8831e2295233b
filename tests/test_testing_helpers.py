"""crossnn.testing: parity assertions on specs, on users' own framework models, and on parameters
trained by users' own loops."""

from __future__ import annotations

import numpy as np
import pytest

import crossnn
from crossnn import spec as S
from crossnn.results import run_text
from crossnn.testing import (ParityError, assert_model_parity, assert_params_match, assert_parity, check_parity,
                             import_model)
from tests.conftest import backend_params

CIRCLE_TRAINING = dict(data=S.Circle(n=300), loss=S.BCE(log_min=-100.0), optimizer=S.SGD(lr=0.5, momentum=0.8),
                       train=S.Train(epochs=20, batch_size=100, shuffle=True))


def test_assert_parity_passes_and_fails_with_a_named_parameter():
    assert_parity(crossnn.example("two-tower"), backends=["numpy"], dtypes=["float32"])
    with pytest.raises(ParityError,
                       match=r"numpy float32 cpu default: parameter dense\d/\w+ leaves tolerance at step 0"):
        assert_parity(crossnn.example("two-tower"), backends=["numpy"], dtypes=["float32"], rtol=1e-13, atol=0.0)


@pytest.mark.parametrize("backend_name", backend_params(["torch"]))
def test_a_users_torch_sequential_agrees_across_backends(backend_name):
    import torch
    from torch import nn

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 5), nn.Sigmoid(), nn.Linear(5, 1), nn.Sigmoid())
    spec_model, params = import_model(model)
    assert [layer.kind for layer in spec_model.layers] == ["dense", "dense"]
    np.testing.assert_array_equal(params["0/kernel"], model[0].weight.detach().double().numpy().T)
    result = assert_model_parity(model, **CIRCLE_TRAINING)
    assert {r.spec.backend for r in result.records} >= {"numpy", "torch"}

    # the user's own loop, from the same weights and batch plan, lands on the reference's parameters
    from crossnn.data import load_dataset
    from crossnn.plan import BatchPlan

    experiment = S.Experiment(name="mine", seed=0, model=spec_model, **CIRCLE_TRAINING)
    data = load_dataset(experiment)
    plan = BatchPlan.for_experiment(experiment, data.n)
    model = model.double()
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    optimizer, loss_fn = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.8), nn.BCELoss()
    for step in range(plan.steps):
        rows = torch.from_numpy(plan.batch(step))
        optimizer.zero_grad()
        loss_fn(model(x[rows]), y[rows]).backward()
        optimizer.step()
    trained = {"0/kernel": model[0].weight.detach().numpy().T, "0/bias": model[0].bias.detach().numpy(),
               "2/kernel": model[2].weight.detach().numpy().T, "2/bias": model[2].bias.detach().numpy()}
    assert_params_match(experiment, trained, initial_params=params)
    trained["2/bias"] = trained["2/bias"] + 1e-6
    with pytest.raises(ParityError, match=r"2/bias: largest difference 1\.000e-06"):
        assert_params_match(experiment, trained, initial_params=params)


@pytest.mark.parametrize("backend_name", backend_params(["tensorflow"]))
def test_a_users_keras_two_tower_agrees_across_backends(backend_name):
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input(shape=(2,), name="x")
    a = keras.layers.Dense(1, name="dense1")(inp)
    b = keras.layers.Dense(2, activation="tanh", name="dense2")(inp)
    out = keras.layers.Dense(1, name="dense3")(keras.layers.Concatenate(name="concat")([a, b]))
    model = keras.Model(inp, out)
    spec_model, params = import_model(model)
    assert [n.name for n in spec_model.nodes] == ["dense1", "dense2", "concat", "dense3"]
    assert spec_model.layers[1].activation == S.Tanh()
    np.testing.assert_array_equal(params["dense2/kernel"], model.get_layer("dense2").get_weights()[0])
    assert_model_parity(model, data=S.RandomNormal(n=10, inputs=2, outputs=1), loss=S.MSE(),
                        optimizer=S.Adam(lr=0.01, eps=1e-8), train=S.Train(epochs=30, batch_size=5))


def test_an_object_no_backend_knows_is_refused():
    with pytest.raises(crossnn.BackendError, match="no installed backend can read a builtins.dict"):
        import_model({"weights": 1})


def test_run_text_prints_what_check_parity_returns():
    """check_parity returns its parities as a list, one per record; run_text used to index that list by
    id(record) and raise IndexError."""
    result, parities = check_parity(crossnn.example("linear-2x3"), backends="numpy", dtypes="float64,float32")
    text = run_text(result, parities)
    assert text == run_text(result, {id(record): parity for record, parity in zip(result.records, parities)})
    assert "numpy float32 cpu default  fc/kernel" in text and "parity: PASS (1 of 1 runs agree)" in text
    with pytest.raises(ValueError, match="1 parities for 2 runs"):
        run_text(result, parities[:1])


def test_names_may_be_one_string_as_on_the_command_line():
    """dtypes="float32" is one dtype (it used to be read as the seven dtypes 'f', 'l', 'o', ...)."""
    result = assert_parity("two-tower", backends="numpy", dtypes="float32")
    assert [record.spec.label for record in result.records] == ["numpy float32 cpu default"]
    result, parities = check_parity(crossnn.example("two-tower"), backends="numpy", dtypes="float64, float32")
    assert [record.spec.dtype for record in result.records] == ["float64", "float32"] and len(parities) == 2
    with pytest.raises(crossnn.BackendError, match="dtypes: unknown dtype 'f'; use float32 or float64"):
        check_parity("two-tower", backends="numpy", dtypes=["f"])
    with pytest.raises(crossnn.BackendError, match="unknown backend 'nump'"):
        assert_parity("two-tower", backends="nump")
    with pytest.raises(crossnn.BackendError, match="device: unknown device 'gpu0'"):
        assert_parity("two-tower", backends="numpy", device="gpu0")
