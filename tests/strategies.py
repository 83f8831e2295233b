"""Hypothesis strategies that generate valid experiment specs.

`experiments()` covers the whole spec surface (for file round trips); `trainable_experiments()`
builds specs that train sensibly on every backend: the loss matches the output activation, data
matches the model, and values stay small enough that float64 runs agree to rounding.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

from crossnn import spec as S

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=0.999, allow_nan=False)
layer_names = st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and s != "input")

activations = st.one_of(
    st.sampled_from([S.Linear(), S.ReLU(), S.Sigmoid(), S.Tanh(), S.Softmax(), S.Softplus()]),
    st.builds(S.LeakyReLU, negative_slope=finite),
    st.builds(S.GELU, approximate=st.sampled_from(["none", "tanh"])),
)


@st.composite
def _uniform(draw):
    low = draw(finite)
    return S.Uniform(low=low, high=draw(st.floats(min_value=low + 1e-3, max_value=low + 1e3)))


initializers = st.one_of(
    st.sampled_from([S.Zeros(), S.Ones(), S.GlorotUniform(), S.GlorotNormal(), S.HeUniform(), S.HeNormal(),
                     S.LecunUniform(), S.LecunNormal(), S.FanInUniform()]),
    st.builds(S.Constant, value=finite),
    _uniform(),
    st.builds(S.Normal, mean=finite, stddev=positive),
    st.builds(S.TruncatedNormal, mean=finite, stddev=positive),
    st.builds(S.VarianceScaling, scale=positive, mode=st.sampled_from(["fan_in", "fan_out", "fan_avg"]),
              distribution=st.sampled_from(["uniform", "normal", "truncated_normal"])),
)

losses = st.one_of(
    st.sampled_from([S.MSE(), S.MAE(), S.BCELogits()]),
    st.builds(S.Huber, delta=positive),
    st.builds(S.BCE, log_min=st.floats(min_value=-1e3, max_value=-1e-3)),
    st.builds(S.CrossEntropy, from_logits=st.just(True), sparse=st.booleans()),
    st.builds(S.CrossEntropy, from_logits=st.just(False), sparse=st.booleans(),
              log_min=st.floats(min_value=-1e3, max_value=-1e-3)),
)


@st.composite
def _sgd(draw, lr=positive):
    momentum = draw(st.one_of(st.just(0.0), unit))
    decay = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1.0)))
    return S.SGD(lr=draw(lr), momentum=momentum, nesterov=draw(st.booleans()) if momentum > 0 else False,
                 weight_decay=decay, weight_decay_kind="l2" if decay else None)


@st.composite
def _adam(draw, lr=positive):
    decay = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1.0)))
    return S.Adam(lr=draw(lr), beta1=draw(unit), beta2=draw(unit), eps=draw(positive), weight_decay=decay,
                  weight_decay_kind="l2" if decay else None)


schedules = st.one_of(
    st.none(),
    st.builds(S.StepDecay, unit=st.sampled_from(["epoch", "step"]), step_size=st.integers(1, 50),
              gamma=st.floats(1e-3, 1.0)),
    st.builds(S.ExponentialDecay, unit=st.sampled_from(["epoch", "step"]), gamma=st.floats(1e-3, 1.0)),
)


@st.composite
def _any_optimizer(draw):
    """Every optimizer kind with every shared option (decay kinds, clipping, schedules)."""
    decay = draw(st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1.0)))
    shared = dict(lr=draw(positive), weight_decay=decay,
                  weight_decay_kind=draw(st.sampled_from(["l2", "decoupled"])) if decay else None,
                  clip_norm=draw(st.one_of(st.none(), positive)), schedule=draw(schedules))
    kind = draw(st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "adagrad"]))
    if kind == "sgd":
        momentum = draw(st.one_of(st.just(0.0), unit))
        return S.SGD(momentum=momentum, nesterov=draw(st.booleans()) if momentum > 0 else False, **shared)
    if kind in ("adam", "adamw"):
        if kind == "adamw":
            shared.update(weight_decay=decay or 0.01, weight_decay_kind="decoupled")
            return S.AdamW(beta1=draw(unit), beta2=draw(unit), eps=draw(positive), **shared)
        return S.Adam(beta1=draw(unit), beta2=draw(unit), eps=draw(positive), **shared)
    if kind == "rmsprop":
        return S.RMSprop(alpha=draw(unit), eps=draw(positive), momentum=draw(st.one_of(st.just(0.0), unit)),
                         centered=draw(st.booleans()), **shared)
    return S.Adagrad(initial_accumulator=draw(st.floats(0.0, 1.0)), eps=draw(positive), **shared)


optimizers = st.one_of(_sgd(), _adam(), _any_optimizer())


@st.composite
def models(draw, inputs=st.integers(1, 6), width=st.integers(1, 6), outputs=None, last_activation=None,
           names=layer_names, inits=initializers, acts=activations):
    """A chain of dense (and activation) layers, or a two-branch graph joined by concatenate."""
    n_in = draw(inputs)
    n_out = draw(outputs) if outputs is not None else draw(width)
    out_act = draw(last_activation) if last_activation is not None else draw(acts)
    chosen = draw(st.lists(names, min_size=6, max_size=6, unique=True))

    def dense(name, units, act, inputs=None):
        return S.Dense(name=name, units=units, activation=act, use_bias=draw(st.booleans()),
                       kernel_init=draw(inits), bias_init=draw(inits), inputs=inputs)

    if draw(st.booleans()):  # graph
        layers = [dense(chosen[0], draw(width), draw(acts), ("input",)),
                  dense(chosen[1], draw(width), draw(acts), ("input",)),
                  S.Concatenate(name=chosen[2], inputs=(chosen[0], chosen[1])),
                  dense(chosen[3], n_out, out_act)]
    else:
        depth = draw(st.integers(1, 3))
        layers = [dense(chosen[i], draw(width), draw(acts)) for i in range(depth - 1)]
        if draw(st.booleans()) and depth > 1:
            layers.append(draw(st.one_of(st.builds(S.ActivationLayer, name=st.just(chosen[4]), activation=acts),
                                         st.builds(S.Dropout, name=st.just(chosen[4]), rate=st.floats(0.0, 0.9)))))
        layers.append(dense(chosen[5], n_out, out_act))
    return S.Model(inputs=n_in, layers=tuple(layers))


pairs = st.one_of(st.integers(1, 3).map(lambda k: (k, k)), st.tuples(st.integers(1, 3), st.integers(1, 3)))


@st.composite
def image_models(draw, outputs=None, inits=initializers, acts=activations):
    """Convolutional models on [H, W, C] inputs: conv2d / pooling layers (every padding, stride and
    dilation), a residual add or a channel concatenate, then flatten or global pooling and dense."""
    size = draw(st.integers(5, 9))
    shape = (size, draw(st.integers(5, 9)), draw(st.integers(1, 3)))

    def conv(name, filters, inputs=None, padding=None):
        return S.Conv2D(name=name, filters=filters, kernel_size=draw(pairs), strides=draw(pairs),
                        dilation=draw(st.sampled_from([(1, 1), (2, 1), (1, 2)])),
                        padding=padding or draw(st.sampled_from(["valid", "same"])), activation=draw(acts),
                        use_bias=draw(st.booleans()), kernel_init=draw(inits), bias_init=draw(inits), inputs=inputs)

    layers = [conv("c1", draw(st.integers(1, 4)), padding="same")]
    join = draw(st.sampled_from(["add", "concatenate", None]))
    if join:
        layers.append(conv("c2", layers[0].filters if join == "add" else 2, padding="same"))
        layers[-1] = dataclasses.replace(layers[-1], strides=(1, 1))
        layers.append(S.Add(name="j", inputs=("c1", "c2")) if join == "add" else
                      S.Concatenate(name="j", axis=draw(st.sampled_from([-1, 3])), inputs=("c1", "c2")))
    pool = draw(st.sampled_from(["max", "avg", None]))
    if pool == "max":
        layers.append(S.MaxPool2D(name="p", pool_size=draw(pairs), strides=draw(st.one_of(st.none(), pairs)),
                                  padding="same"))
    elif pool == "avg":
        layers.append(S.AvgPool2D(name="p", pool_size=draw(pairs), strides=draw(st.one_of(st.none(), pairs)),
                                  padding="same", count_padding=draw(st.booleans())))
    layers.append(draw(st.sampled_from([S.Flatten(name="f"), S.GlobalAvgPool2D(name="f")])))
    n_out = draw(outputs) if outputs is not None else draw(st.integers(1, 4))
    layers.append(S.Dense(name="out", units=n_out, activation=draw(acts), kernel_init=draw(inits),
                          bias_init=draw(inits)))
    return S.Model(inputs=shape, layers=tuple(layers))


@st.composite
def experiments(draw):
    """Any valid spec (data need not fit: files and round trips don't train)."""
    loss = draw(losses)
    outputs = st.integers(2, 5) if loss.sparse_targets else None
    model = draw(st.one_of(models(outputs=outputs), image_models(outputs=outputs)))
    rows = draw(st.integers(1, 4))
    data = draw(st.one_of(
        st.builds(S.InlineData, x=st.just(tuple(tuple(float(i + j) for j in range(3)) for i in range(rows))),
                  y=st.just(tuple((float(i),) for i in range(rows)))),
        st.builds(S.RandomNormal, n=st.integers(1, 50), inputs=st.integers(1, 5), outputs=st.integers(1, 5)),
        st.builds(S.Circle, n=st.integers(1, 2000), center=finite, radius_sq=positive),
        st.builds(S.NpzFile, path=st.just("data/train.npz"), x_key=st.text(min_size=1, max_size=5),
                  y_key=st.text(min_size=1, max_size=5)),
        st.builds(S.CsvFile, path=st.just("train.csv"), y_columns=st.integers(1, 3), header=st.booleans()),
        st.builds(S.TeacherClasses, n=st.integers(1, 100), inputs=st.integers(1, 50), classes=st.integers(2, 10)),
        st.builds(S.Digits, scale=positive, shuffle=st.booleans(), images=st.booleans()),
        st.builds(S.Textures, n=st.integers(1, 100), size=st.integers(1, 32), channels=st.integers(1, 4),
                  classes=st.integers(2, 8), frequency=positive, noise=st.floats(0.0, 3.0)),
    ))
    return S.Experiment(
        name=draw(st.text(min_size=1, max_size=20).filter(lambda s: s.strip())),
        seed=draw(st.integers(0, 2**32)), data=data, model=model, loss=loss, optimizer=draw(optimizers),
        train=S.Train(epochs=draw(st.integers(1, 1000)), batch_size=draw(st.integers(1, 512)),
                      shuffle=draw(st.booleans()), drop_last=draw(st.booleans()),
                      validation_split=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.9))),
                      metrics=tuple(draw(st.lists(st.sampled_from(_metrics_for(loss)), unique=True)))))


def _metrics_for(loss: S.Loss) -> list[str]:
    """The metrics a loss's output can be read with (accuracy: classification; mae: same-shape targets)."""
    return ["accuracy"] * (loss.outputs != "value") + ["mae"] * (not loss.sparse_targets)


# ---- specs that train the same on every backend -----------------------------------------------------

_small_inits = st.one_of(st.sampled_from([S.GlorotUniform(), S.FanInUniform(), S.LecunUniform(), S.Zeros()]),
                         st.builds(S.Normal, mean=st.just(0.0), stddev=st.floats(0.05, 0.5)))
_hidden = st.one_of(st.sampled_from([S.Linear(), S.ReLU(), S.Sigmoid(), S.Tanh(), S.Softplus()]),
                    st.builds(S.LeakyReLU, negative_slope=st.floats(0.01, 0.3)),
                    st.builds(S.GELU, approximate=st.sampled_from(["none", "tanh"])))


TASKS = ("mse", "mae", "huber", "bce", "bce_logits", "ce_logits", "ce_probs")
OPTIMIZER_KINDS = ("sgd", "sgd-momentum", "adam", "adamw", "rmsprop", "adagrad")


@st.composite
def trainable_experiments(draw, max_epochs: int = 4, task: str | None = None, kind: str | None = None):
    """Specs whose loss fits the output (bce after sigmoid, probability cross-entropy after softmax),
    with inline data of matching shape (0/1 targets, class indices or one-hot rows for the
    classification losses), small learning rates and a few epochs; half of them with a dropout
    layer before the output. `task` (a loss) and `kind` (an optimizer) fix those choices."""
    task = task or draw(st.sampled_from(TASKS))
    classes = draw(st.integers(2, 4))
    outputs, last, loss = {
        "mse": (st.integers(1, 3), st.sampled_from([S.Linear(), S.Tanh()]), S.MSE()),
        "mae": (st.integers(1, 3), st.just(S.Linear()), S.MAE()),
        "huber": (st.integers(1, 3), st.just(S.Linear()), S.Huber(delta=draw(st.floats(0.1, 2.0)))),
        "bce": (st.integers(1, 2), st.just(S.Sigmoid()), S.BCE(log_min=-100.0)),
        "bce_logits": (st.integers(1, 2), st.just(S.Linear()), S.BCELogits()),
        "ce_logits": (st.just(classes), st.just(S.Linear()),
                      S.CrossEntropy(from_logits=True, sparse=draw(st.booleans()))),
        "ce_probs": (st.just(classes), st.just(S.Softmax()),
                     S.CrossEntropy(from_logits=False, sparse=draw(st.booleans()), log_min=-100.0)),
    }[task]
    model = draw(models(inputs=st.integers(1, 4), width=st.integers(1, 5), outputs=outputs, last_activation=last,
                        names=st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]), inits=_small_inits,
                        acts=_hidden))
    if draw(st.booleans()):
        *body, out = model.layers
        model = S.Model(inputs=model.inputs,
                        layers=(*body, S.Dropout(name="drop", rate=draw(st.floats(0.1, 0.6))), out))
    n = draw(st.integers(2, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    x = rng.standard_normal((n, model.inputs))
    k = model.output_units
    if task in ("bce", "bce_logits"):
        y = (rng.uniform(size=(n, k)) > 0.5).astype(float)
    elif task.startswith("ce"):
        labels = rng.integers(0, k, size=n)
        y = labels.reshape(-1, 1) if loss.sparse else np.eye(k)[labels]
    else:
        y = rng.standard_normal((n, k))
    shared = dict(weight_decay=draw(st.sampled_from([0.0, 0.01])), clip_norm=draw(st.sampled_from([None, 0.5])),
                  schedule=draw(st.sampled_from([None, S.StepDecay(unit="epoch", step_size=1, gamma=0.5),
                                                 S.ExponentialDecay(unit="step", gamma=0.95)])))
    shared["weight_decay_kind"] = draw(st.sampled_from(["l2", "decoupled"])) if shared["weight_decay"] else None
    kind = kind or draw(st.sampled_from(OPTIMIZER_KINDS))
    lr = draw(st.floats(1e-3, 0.05))
    optimizer = {  # moderate hyperparameters keep every step well conditioned, so float64 runs agree to rounding
        "sgd": lambda: S.SGD(lr=lr * 4, **shared),
        "sgd-momentum": lambda: S.SGD(lr=lr * 4, momentum=0.9, nesterov=draw(st.booleans()), **shared),
        "adam": lambda: S.Adam(lr=lr, eps=1e-8, **shared),
        "adamw": lambda: S.AdamW(lr=lr, eps=1e-8, **{**shared, "weight_decay": 0.01, "weight_decay_kind": "decoupled"}),
        "rmsprop": lambda: S.RMSprop(lr=lr, alpha=0.9, eps=1e-8, momentum=draw(st.sampled_from([0.0, 0.5])),
                                     centered=draw(st.booleans()), **shared),
        "adagrad": lambda: S.Adagrad(lr=lr * 4, initial_accumulator=0.1, eps=1e-10, **shared),
    }[kind]()
    experiment = S.Experiment(
        name="generated", seed=draw(st.integers(0, 10_000)),
        data=S.InlineData(x=x.tolist(), y=y.tolist()), model=model, loss=loss, optimizer=optimizer,
        train=S.Train(epochs=draw(st.integers(1, max_epochs)), batch_size=draw(st.integers(1, n)),
                      shuffle=draw(st.booleans()), drop_last=False))
    return experiment, task


@st.composite
def trainable_conv_experiments(draw):
    """A small CNN that trains well on every backend: one conv2d (kernel 1-5, stride 1-3, dilation 1-2,
    'same' or 'valid', odd or even input sizes), one pooling layer (max, or avg with or without
    count_padding; 'same' or 'valid') or none, then flatten or global pooling and a dense output."""
    height, width, channels = draw(st.integers(4, 9)), draw(st.integers(4, 9)), draw(st.integers(1, 2))
    k, s, d = (draw(st.integers(1, 5)), draw(st.integers(1, 5))), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    fits = (k[0] - 1) * d + 1 <= height and (k[1] - 1) * d + 1 <= width
    padding = draw(st.sampled_from(["valid", "same"])) if fits else "same"
    conv = S.Conv2D(name="conv", filters=draw(st.integers(1, 3)), kernel_size=k, strides=(s, draw(st.integers(1, 3))),
                    dilation=(d, draw(st.integers(1, 2))) if padding == "same" else (d, d), padding=padding,
                    activation=draw(st.sampled_from([S.Tanh(), S.ReLU(), S.Sigmoid(), S.Linear()])),
                    use_bias=draw(st.booleans()), kernel_init=S.GlorotUniform(),
                    bias_init=S.Uniform(low=-0.1, high=0.1))
    layers = [conv]
    conv_shape = S.Model(inputs=(height, width, channels), layers=(conv,)).output_shape
    pool = draw(st.sampled_from(["max", "avg", None]))
    if pool:
        size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        fits = size[0] <= conv_shape[0] and size[1] <= conv_shape[1]
        options = dict(pool_size=size, strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                       padding=draw(st.sampled_from(["valid", "same"])) if fits else "same")
        layers.append(S.MaxPool2D(name="pool", **options) if pool == "max" else
                      S.AvgPool2D(name="pool", count_padding=draw(st.booleans()), **options))
    layers.append(draw(st.sampled_from([S.Flatten(name="flat"), S.GlobalAvgPool2D(name="flat")])))
    layers.append(S.Dense(name="out", units=2, kernel_init=S.GlorotUniform(), bias_init=S.Zeros()))
    n = draw(st.integers(2, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    optimizer = draw(st.sampled_from([S.Adam(lr=0.01, eps=1e-8), S.SGD(lr=0.05, momentum=0.9)]))
    return S.Experiment(
        name="generated-cnn", seed=draw(st.integers(0, 10_000)),
        data=S.InlineData(x=rng.standard_normal((n, height, width, channels)).tolist(),
                          y=rng.standard_normal((n, 2)).tolist()),
        model=S.Model(inputs=(height, width, channels), layers=tuple(layers)), loss=S.MSE(), optimizer=optimizer,
        train=S.Train(epochs=2, batch_size=draw(st.integers(1, n)), shuffle=draw(st.booleans())))


_GATES = st.sampled_from([S.Sigmoid(), S.Tanh()])
_RECURRENT_INITS = dict(kernel_init=S.GlorotUniform(), recurrent_init=S.Orthogonal(),
                        bias_init=S.Uniform(low=-0.1, high=0.1))


@st.composite
def trainable_state_and_sequence_experiments(draw):
    """Models with the issue-15 layers and their options: batch_norm (momentum, epsilon, running
    variance, center, scale, on vectors or images), layer_norm, or a sequence model (an optional
    embedding, then simple_rnn / lstm / gru with their activations, unit_forget_bias, reset_after and
    return_sequences)."""
    kind = draw(st.sampled_from(["batch_norm", "layer_norm", "sequence"]))
    n = draw(st.integers(3, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    dense = dict(kernel_init=S.GlorotUniform(), bias_init=S.Zeros())
    if kind == "sequence":
        steps, features = draw(st.integers(1, 5)), draw(st.integers(1, 3))
        ids = draw(st.booleans())
        layers = [S.Embedding(name="embed", input_dim=6, output_dim=features,
                              embeddings_init=S.Normal(mean=0.0, stddev=0.5))] if ids else []
        x = rng.integers(0, 6, size=(n, steps)).astype(float) if ids else rng.standard_normal((n, steps, features))
        options = dict(name="rnn", units=draw(st.integers(1, 4)), return_sequences=draw(st.booleans()),
                       activation=draw(st.sampled_from([S.Tanh(), S.ReLU(), S.Sigmoid()])), **_RECURRENT_INITS)
        cell = draw(st.sampled_from(["simple_rnn", "lstm", "gru"]))
        if cell == "simple_rnn":
            layers.append(S.SimpleRNN(**options))
        elif cell == "lstm":
            layers.append(S.LSTM(recurrent_activation=draw(_GATES), unit_forget_bias=draw(st.booleans()), **options))
        else:
            layers.append(S.GRU(recurrent_activation=draw(_GATES), reset_after=draw(st.booleans()), **options))
        if options["return_sequences"]:
            layers.append(S.Flatten(name="flat"))
        inputs = list(x.shape[1:])
    else:
        images = draw(st.booleans())
        inputs = [draw(st.integers(2, 4)), draw(st.integers(2, 4)), 2] if images else [3]
        x = rng.standard_normal((n, *inputs))
        pre = S.Dense(name="pre", units=3, activation=S.Tanh(), use_bias=False, **dense)
        if kind == "batch_norm":
            norm = S.BatchNorm(name="norm", axis=draw(st.sampled_from([-1, 1])) if images else -1,
                               momentum=draw(st.sampled_from([0.0, 0.5, 0.9, 0.99])),
                               epsilon=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
                               running_variance=draw(st.sampled_from(["biased", "unbiased"])),
                               center=draw(st.booleans()), scale=draw(st.booleans()),
                               gamma_init=S.Uniform(low=0.5, high=1.5), beta_init=S.Uniform(low=-0.1, high=0.1))
        else:
            norm = S.LayerNorm(name="norm", epsilon=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
                               center=draw(st.booleans()), scale=draw(st.booleans()),
                               gamma_init=S.Uniform(low=0.5, high=1.5), beta_init=S.Uniform(low=-0.1, high=0.1))
        layers = [pre, norm] + ([S.Flatten(name="flat")] if images else [])
    layers.append(S.Dense(name="out", units=2, **dense))
    optimizer = draw(st.sampled_from([S.Adam(lr=0.01, eps=1e-8), S.SGD(lr=0.05, momentum=0.9)]))
    return S.Experiment(
        name="generated-state", seed=draw(st.integers(0, 10_000)),
        data=S.InlineData(x=x.tolist(), y=rng.standard_normal((n, 2)).tolist()),
        model=S.Model(inputs=inputs, layers=tuple(layers)), loss=S.MSE(), optimizer=optimizer,
        train=S.Train(epochs=2, batch_size=draw(st.integers(2, n)), shuffle=draw(st.booleans()),
                      drop_last=True))  # no short last batch of one sample (batch_norm needs two)
