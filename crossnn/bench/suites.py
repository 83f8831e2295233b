"""Built-in benchmark suites: lists of experiments to time, each with the sizes it varies.

seeds      the five seed experiments as they are
mlp-width  2 -> width -> 1 (sigmoid, BCE, momentum SGD) on the circle data, width 16 ... 4096
fcn-r      the fully-connected network of the DLBench study, 784-2048-4096-1024-10 with sigmoid
           hidden layers and softmax cross-entropy, on synthetic MNIST-shaped data, batch 32 ... 4096
alexnet-r  the DLBench study's AlexNet-R for 32x32x3 images (CIFAR-10 sized): three 5x5 'same'
           convolutions (32, 32, 64 filters, ReLU), each followed by 3x3 stride-2 pooling (max, avg,
           avg), then dense 10; softmax cross-entropy, momentum SGD; synthetic data, batch 16 ... 128
resnet-r   ResNet-style blocks on 32x32x3: a 3x3 stem of 16 filters, two residual blocks (3x3, 3x3,
           add, ReLU) of 16 filters, a stride-2 3x3 convolution to 32 filters and one block there,
           global average pooling, dense 10; batch 16 ... 128
lstm-r     the DLBench study's LSTM case at a size a CPU can time: 32-step sequences of ids from a
           1000-word vocabulary, embedding 128, LSTM 256, dense 2 on the last state; softmax
           cross-entropy, SGD; batch 16 ... 128
"""

from __future__ import annotations

from dataclasses import dataclass

from crossnn import examples
from crossnn import spec as S
from crossnn.spec import Experiment, load

MLP_WIDTHS = (16, 64, 256, 1024, 4096)
FCN_R_BATCHES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
FCN_R_LAYERS = (2048, 4096, 1024)


@dataclass(frozen=True)
class Case:
    """One experiment to time; `suite` and `label` name it in tables."""

    suite: str
    label: str
    experiment: Experiment


def seeds(quick: bool) -> list[Case]:
    names = ("circle", "two-tower") if quick else examples.SEEDS
    return [Case("seeds", name, load(examples.path(name))) for name in names]


def mlp_width(quick: bool) -> list[Case]:
    cases = []
    for width in (16, 256, 4096) if quick else MLP_WIDTHS:
        dense = dict(kernel_init=S.FanInUniform(), bias_init=S.FanInUniform())
        model = S.Model(inputs=2, layers=(S.Dense(name="hidden", units=width, activation=S.Sigmoid(), **dense),
                                          S.Dense(name="out", units=1, activation=S.Sigmoid(), **dense)))
        experiment = S.Experiment(name=f"mlp-width-{width}", seed=0, data=S.Circle(n=1200), model=model,
                                  loss=S.BCE(log_min=-100.0), optimizer=S.SGD(lr=0.5, momentum=0.8),
                                  train=S.Train(epochs=1000, batch_size=100))
        cases.append(Case("mlp-width", f"width {width}", experiment))
    return cases


def fcn_r_experiment(batch: int) -> Experiment:
    dense = dict(kernel_init=S.GlorotUniform(), bias_init=S.Zeros())
    layers = [S.Dense(name=f"fc{i + 1}", units=units, activation=S.Sigmoid(), **dense)
              for i, units in enumerate(FCN_R_LAYERS)]
    layers.append(S.Dense(name="logits", units=10, **dense))
    return S.Experiment(name=f"fcn-r-batch-{batch}", seed=0, data=S.TeacherClasses(n=max(batch, 1024)),
                        model=S.Model(inputs=784, layers=tuple(layers)),
                        loss=S.CrossEntropy(from_logits=True, sparse=True), optimizer=S.SGD(lr=0.01),
                        train=S.Train(epochs=100, batch_size=batch, drop_last=True))


def fcn_r(quick: bool) -> list[Case]:
    return [Case("fcn-r", f"batch {batch}", fcn_r_experiment(batch)) for batch in ((256,) if quick else FCN_R_BATCHES)]


CNN_BATCHES = (16, 32, 64, 128)
CIFAR_SHAPED = S.TeacherClasses(n=512, inputs=(32, 32, 3), classes=10)


def _conv(name: str, filters: int, kernel: int, **options) -> S.Conv2D:
    return S.Conv2D(name=name, filters=filters, kernel_size=kernel, padding="same", kernel_init=S.HeUniform(),
                    bias_init=S.Zeros(), **{"activation": S.ReLU(), **options})


def _cnn_experiment(name: str, layers: list, batch: int) -> Experiment:
    layers = [*layers, S.Dense(name="logits", units=10, kernel_init=S.GlorotUniform(), bias_init=S.Zeros())]
    return S.Experiment(name=f"{name}-batch-{batch}", seed=0, data=CIFAR_SHAPED,
                        model=S.Model(inputs=(32, 32, 3), layers=tuple(layers)),
                        loss=S.CrossEntropy(from_logits=True, sparse=True), optimizer=S.SGD(lr=0.01, momentum=0.9),
                        train=S.Train(epochs=100, batch_size=batch, drop_last=True))


def alexnet_r_experiment(batch: int) -> Experiment:
    pool = dict(pool_size=3, strides=2, padding="same")
    return _cnn_experiment("alexnet-r", [
        _conv("conv1", 32, 5), S.MaxPool2D(name="pool1", **pool),
        _conv("conv2", 32, 5), S.AvgPool2D(name="pool2", count_padding=False, **pool),
        _conv("conv3", 64, 5), S.AvgPool2D(name="pool3", count_padding=False, **pool),
        S.Flatten(name="flatten")], batch)


def _block(name: str, source: str, filters: int) -> list:
    return [_conv(f"{name}_a", filters, 3), _conv(f"{name}_b", filters, 3, activation=S.Linear()),
            S.Add(name=name, inputs=(source, f"{name}_b")),
            S.ActivationLayer(name=f"{name}_relu", activation=S.ReLU())]


def resnet_r_experiment(batch: int) -> Experiment:
    return _cnn_experiment("resnet-r", [
        _conv("stem", 16, 3), *_block("block1", "stem", 16), *_block("block2", "block1_relu", 16),
        _conv("down", 32, 3, strides=2), *_block("block3", "down", 32), S.GlobalAvgPool2D(name="pool")], batch)


def alexnet_r(quick: bool) -> list[Case]:
    return [Case("alexnet-r", f"batch {batch}", alexnet_r_experiment(batch))
            for batch in ((32,) if quick else CNN_BATCHES)]


def resnet_r(quick: bool) -> list[Case]:
    return [Case("resnet-r", f"batch {batch}", resnet_r_experiment(batch))
            for batch in ((32,) if quick else CNN_BATCHES)]


def lstm_r_experiment(batch: int) -> Experiment:
    layers = (S.Embedding(name="embed", input_dim=1000, output_dim=128, embeddings_init=S.Uniform(low=-0.1, high=0.1)),
              S.LSTM(name="lstm", units=256, unit_forget_bias=True, kernel_init=S.GlorotUniform(),
                     recurrent_init=S.Orthogonal(), bias_init=S.Zeros()),
              S.Dense(name="logits", units=2, kernel_init=S.GlorotUniform(), bias_init=S.Zeros()))
    return S.Experiment(name=f"lstm-r-batch-{batch}", seed=0, data=S.TokenSums(n=512, length=32, vocab=1000),
                        model=S.Model(inputs=32, layers=layers), loss=S.CrossEntropy(from_logits=True, sparse=True),
                        optimizer=S.SGD(lr=0.1), train=S.Train(epochs=100, batch_size=batch, drop_last=True))


def lstm_r(quick: bool) -> list[Case]:
    return [Case("lstm-r", f"batch {batch}", lstm_r_experiment(batch)) for batch in ((32,) if quick else CNN_BATCHES)]


SUITES = {"seeds": seeds, "mlp-width": mlp_width, "fcn-r": fcn_r, "alexnet-r": alexnet_r, "resnet-r": resnet_r,
          "lstm-r": lstm_r}


def cases_for(names: list[str], quick: bool) -> list[Case]:
    """Cases of the named suites, or of spec files / example names (one case each)."""
    from crossnn.cli import load_spec

    cases = []
    for name in names:
        if name in SUITES:
            cases += SUITES[name](quick)
        else:
            experiment = load_spec(name)
            cases.append(Case("spec", experiment.name, experiment))
    return cases
