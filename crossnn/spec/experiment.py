"""The experiment: everything needed to train one model the same way in every framework."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from pathlib import Path

from crossnn.spec.base import Spec, positive, require
from crossnn.spec.data import DataSource
from crossnn.spec.losses import Loss
from crossnn.spec.model import Model
from crossnn.spec.optimizers import Optimizer


@dataclass(frozen=True, kw_only=True)
class Train(Spec):
    """The schedule. Each epoch visits the N training samples in order, or in a fresh permutation
    drawn from the seed when shuffle = true, in batches of batch_size; the last, smaller batch is
    dropped when drop_last = true. A batch_size above N means one batch of all N samples. The loss of
    every step is computed before that step's update.

    validation_split: the last fraction of the samples (taken before any shuffling, as Keras' fit
    does) is held out and never trained on. metrics: computed after every epoch on the training
    samples and, with a validation split, on the held-out ones ("accuracy" reads the output the way
    the loss defines it: probability > 0.5, logit > 0 or argmax; "mae" is mean |output - y|)."""

    epochs: int
    batch_size: int
    shuffle: bool = False
    drop_last: bool = False
    validation_split: float = 0.0
    metrics: tuple[Literal["accuracy", "mae"], ...] = ()

    def validate(self):
        positive(self, "epochs", "batch_size")
        require(0.0 <= self.validation_split < 1.0, "validation_split",
                f"must be in [0, 1), got {self.validation_split}")
        require(len(set(self.metrics)) == len(self.metrics), "metrics", "lists a metric twice")


@dataclass(frozen=True, kw_only=True)
class Experiment(Spec):
    """name, seed (fixes data, initial parameters and batch order), data, model, loss, optimizer,
    train. `source` is the file it was read from (not part of the spec; data paths are relative to it)."""

    name: str
    seed: int
    data: DataSource
    model: Model
    loss: Loss
    optimizer: Optimizer
    train: Train
    source: str | None = field(default=None, compare=False, repr=False)

    def validate(self):
        require(self.name.strip() != "", "name", "must not be empty")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        if self.loss.sparse_targets:
            out = self.model.output_shape
            require(len(out) == 1, "loss",
                    f"sparse cross-entropy scores one class index per sample: the model must output [classes], but "
                    f"layer '{self.model.layers[-1].name}' outputs {list(out)} (flatten or pool before it, or give a "
                    f"recurrent layer return_sequences = false)")
            require(self.model.output_units >= 2, "loss",
                    f"sparse cross-entropy needs >= 2 output units, the model has {self.model.output_units}")
        # a metric that cannot be read from this loss's output is an error, not a silent omission
        require("accuracy" not in self.train.metrics or self.loss.outputs != "value", "train.metrics",
                f"accuracy needs a classification loss (bce, bce_logits or cross_entropy), not {self.loss.kind}")
        require("mae" not in self.train.metrics or not self.loss.sparse_targets, "train.metrics",
                "mae needs targets shaped like the output, not the class indices of sparse cross-entropy")

    @property
    def base_dir(self) -> Path:
        """Where relative data paths start: the spec file's folder, else the working directory."""
        return Path(self.source).parent if self.source else Path.cwd()
