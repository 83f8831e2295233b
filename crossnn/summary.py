"""A readable summary of a spec: data, layers with output shapes and parameter counts, schedule."""

from __future__ import annotations

import math

from crossnn.console import table
from crossnn.spec import Experiment
from crossnn.spec.base import short_text, to_plain


def _args(spec) -> str:
    fields = spec.fields_dict()
    return ", ".join(f"{k}={short_text(v)}" for k, v in fields.items())


def summary(experiment: Experiment) -> str:
    from crossnn.data import load_dataset
    from crossnn.plan import BatchPlan

    model = experiment.model
    params, state = model.parameter_inits(), model.state_inits()
    dataset = load_dataset(experiment)
    plan = BatchPlan.for_experiment(experiment, dataset.n)
    data = experiment.data
    source = f"{data.kind}" + (f" ({_args(data)})" if data.kind != "inline" else "")
    lines = [f"{experiment.name}" + (f"  ({experiment.source})" if experiment.source else "")
             + f", seed {experiment.seed}",
             f"data: {source}: x {dataset.x.shape}, y {dataset.y.shape}"
             + (f" for training, {dataset.validation.n} samples held out (train.validation_split)"
                if dataset.validation is not None else ""),
             "input: (N, " + ", ".join(str(n) for n in model.input_shape) + ")", ""]
    rows = []
    for node in model.nodes:
        layer = node.layer
        own = {k: v for k, v in params.items() if k.startswith(f"{node.name}/")}
        kept = {k: v for k, v in state.items() if k.startswith(f"{node.name}/")}
        count = sum(math.prod(p.shape) for p in own.values())
        activation = getattr(layer, "activation", None)
        shown = short_text(to_plain(activation)) if activation else ""
        rows.append((node.name, layer.kind, ", ".join(node.inputs), shown,
                     "(N, " + ", ".join(str(n) for n in node.shape) + ")", count,
                     ", ".join([f"{k.split('/')[1]} {p.shape} {p.init.describe()}" for k, p in own.items()]
                               + [f"state {k.split('/')[1]} {p.shape} {p.init.describe()}"
                                  for k, p in kept.items()])))
    lines.append(table(("layer", "type", "inputs", "activation", "output", "params", "parameters (canonical layout)"),
                       rows, indent=""))
    lines += ["", f"total parameters: {model.parameter_count()}",
              f"loss: {experiment.loss.kind}"
              + (f" ({_args(experiment.loss)})" if experiment.loss.fields_dict() else ""),
              f"optimizer: {experiment.optimizer.kind} ({_args(experiment.optimizer)})",
              f"train: {experiment.train.epochs} epochs x {plan.steps_per_epoch} steps of <= {plan.batch_size} samples"
              f" = {plan.steps} steps, {'shuffled' if experiment.train.shuffle else 'in order'}"
              + (", last short batch dropped"
                 if experiment.train.drop_last and plan.n_samples % plan.batch_size else "")
              + (f" (batch_size {experiment.train.batch_size} > {plan.n_samples} samples: one batch of all of them)"
                 if experiment.train.batch_size > plan.n_samples else "")]
    return "\n".join(lines)
