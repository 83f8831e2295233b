"""Built-in benchmark suites: lists of experiments to time, each with the sizes it varies.

seeds      the five seed experiments as they are
mlp-width  2 -> width -> 1 (sigmoid, BCE, momentum SGD) on the circle data, width 16 ... 4096
fcn-r      the fully-connected network of the DLBench study, 784-2048-4096-1024-10 with sigmoid
           hidden layers and softmax cross-entropy, on synthetic MNIST-shaped data, batch 32 ... 4096
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
    names = ("circle", "two-tower") if quick else examples.names()
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


SUITES = {"seeds": seeds, "mlp-width": mlp_width, "fcn-r": fcn_r}


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
