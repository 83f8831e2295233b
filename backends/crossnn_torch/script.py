"""A standalone PyTorch script for an experiment, written the way PyTorch's tutorials write one: an
nn.Sequential of torch's modules (or an nn.Module whose forward() follows a model graph), a loss
module, a torch.optim optimizer and the zero_grad / backward / step loop over the batches. Every
module call is the `code()` of the Mod its registry entry describes (crossnn_torch.ops), the loop
stages are the optimizer chain's (crossnn_torch.optimizers), and crossnn's own small modules
(softplus without a threshold, dropout with crossnn's masks, the channels-last permutation, ...) are
copied in as source, so a reader sees exactly what differs from torch's built-ins. The data, initial
parameters, batch order, schedule and dropout masks are crossnn's (crossnn.codegen), so the script
ends where crossnn's torch run ends.
"""

from __future__ import annotations

import inspect
import keyword
import re
import textwrap

import numpy as np
from torch import nn

from crossnn import codegen
from crossnn.data import Dataset
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT, Experiment

from crossnn_torch import ops
from crossnn_torch.optimizers import Chain

RESERVED = {"x", "self", "torch", "nn", "np", "model", "optimizer", "loss_fn"}


def _identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for a layer name that is no keyword, no nn.Module attribute and unused."""
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = "layer_" + ident
    while keyword.iskeyword(ident) or hasattr(nn.Module, ident) or ident in RESERVED or ident in taken:
        ident += "_"
    taken.add(ident)
    return ident


def _line(mod: ops.Mod, indent: str, end: str = ",") -> str:
    return f"{indent}{mod.code()}{end}" + (f"  # {mod.note}" if mod.note else "")


def _helpers(mods: list[ops.Mod]) -> str:
    """The source of crossnn's own module classes the mods use (and what they need), each once."""
    classes: list[type] = []
    for mod in (m for top in mods for m in top.nested()):
        if mod.cls.__module__ == ops.__name__:
            for cls in (*ops.SCRIPT_NEEDS.get(mod.cls, ()), mod.cls):
                if cls not in classes:
                    classes.append(cls)
    return "\n\n".join(textwrap.dedent(inspect.getsource(cls)) for cls in classes)


class Model:
    """The model's source, and the expression of every layer's modules in it."""

    def __init__(self, experiment: Experiment):
        self.model = experiment.model
        self.layers = ops.layer_mods(self.model)
        for node, mods, _, _ in self.layers:
            for mod in (m for top in mods for m in top.nested()):
                if not mod.cls.__module__.startswith("torch.nn") and mod.cls.__module__ != ops.__name__:
                    raise UnsupportedFeature("torch", f"layer '{node.layer.kind}' in a script (its module "
                                                      f"{mod.cls.__qualname__} is defined outside crossnn)")
        self.image_output = ops.image(self.model.output_shape)
        self.module_of: dict[str, list[str]] = {}  # layer name -> expression of each of its modules
        self.code = self._sequential() if ops.is_chain(self.model) else self._graph()

    @property
    def mods(self) -> list[ops.Mod]:
        return [m for _, mods, _, _ in self.layers for m in mods] + ([ops.Mod(ops.ChannelsLast)] if self.image_output
                                                                   else [])

    def _sequential(self) -> str:
        lines, index = [], 0
        for node, mods, _, _ in self.layers:
            self.module_of[node.name] = [f"model[{index + k}]" for k in range(len(mods))]
            lines += [_line(mod, "    ") for mod in mods]
            index += len(mods)
        if self.image_output:
            lines.append(_line(ops.Mod(ops.ChannelsLast, note="the output channels-last, as crossnn's targets"),
                               "    "))
        return ("# ---- the model: a chain of layers, so an nn.Sequential ----\n"
                "model = nn.Sequential(\n" + "\n".join(lines) + "\n)\n")

    def _graph(self) -> str:
        taken: set[str] = set()
        names = {node.name: _identifier(node.name, taken) for node, _, _, _ in self.layers}
        names[INPUT] = "x"
        init, forward = [], []
        for node, mods, _, _ in self.layers:
            ident = names[node.name]
            if len(mods) == 1:
                init.append(_line(mods[0], f"        self.{ident} = ", ""))
                self.module_of[node.name] = [f"model.{ident}"]
            else:
                init += [f"        self.{ident} = nn.Sequential(", *(_line(m, "            ") for m in mods),
                         "        )"]
                self.module_of[node.name] = [f"model.{ident}[{k}]" for k in range(len(mods))]
            forward.append(f"        {ident} = self.{ident}({', '.join(names[i] for i in node.inputs)})")
        output = names[self.model.layers[-1].name]
        if self.image_output:
            output += ".permute(0, 2, 3, 1)  # channels-last, as crossnn's targets"
        return ("# ---- the model: a graph of layers, so an nn.Module whose forward() wires them ----\n"
                "class Net(nn.Module):\n"
                "    def __init__(self):\n"
                "        super().__init__()\n" + "\n".join(init) + "\n\n"
                "    def forward(self, x):\n"
                "        # each line is one layer of the spec, reading the layers its `inputs` name\n"
                + "\n".join(forward) + f"\n        return {output}\n\n\n"
                "model = Net()\n")

    def variables(self) -> list[tuple[str, tuple[str, ...], object]]:
        """(canonical name, the model's tensors holding it, their layout) of every parameter and layer
        state, in canonical order."""
        where = {}
        for node, _, params, state in self.layers:
            for short, place in {**params, **state}.items():
                module = self.module_of[node.name][place.module]
                where[f"{node.name}/{short}"] = (tuple(f"{module}.{a}" for a in place.attributes), place.layout)
        return [(name, *where[name]) for name in self.model.variable_inits()]


def _wrap(line: str, width: int = 100) -> str:
    """A long call split after its commas, continuation lines indented under the parenthesis."""
    if len(line) <= width or "(" not in line:
        return line
    head, rest = line.split("(", 1)
    indent = " " * (len(head) + 1)
    out, current = [], head + "("
    for part in rest.split(", "):
        piece = part if current.endswith("(") else " " + part
        if len(current) + len(piece) + 1 > width and not current.endswith("("):
            out.append(current + ",")
            current = indent + part
        else:
            current = current + ("," if not current.endswith("(") else "") + piece
    out.append(current)
    return "\n".join(out)


def script(experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, side_file: str | None = None) -> str:
    model = Model(experiment)
    lowered = ops.loss(experiment.loss, frozenset(), experiment.model.output_shape)
    chain = Chain(experiment.optimizer)
    optimizer_line, stage_lines = chain.code()
    loss = experiment.loss
    ids = ops.ids_input(experiment.model)
    images = ops.image(experiment.model.input_shape) and not ids
    dropouts = codegen.dropout_layers(experiment)
    needs_lr = chain.needs_lr()

    helpers = _helpers(model.mods + [lowered.mod])
    parts = [codegen.header(experiment, "PyTorch", "torch"),
             codegen.imports(*codegen.script_imports(experiment, data, params, side_file),
                             *(["math"] if "math." in helpers else []), "numpy as np", "torch", "torch:nn"),
             "# float64 everywhere: crossnn's parity runs are float64, and so is every tensor below\n"
             "torch.set_default_dtype(torch.float64)\n"]
    if helpers:
        parts.append("# crossnn's own modules, where torch has no built-in for the spec's formula or layout\n"
                     + helpers)
    parts.append(model.code)
    parts.append("# ---- loss and optimizer ----\n" + _line(lowered.mod, "loss_fn = ", "") + "\n"
                 + _wrap(optimizer_line) + "\n")
    parts += [codegen.plan_code(experiment, data.n), codegen.lr_code(experiment) if needs_lr else "",
              codegen.dropout_code(experiment)]

    main = ["def main():", f"    {codegen.LOAD}"]
    if ids:
        main.append("    X = torch.from_numpy(X).long()  # ids (stored as numbers): nn.Embedding wants int64")
    elif images:
        main.append("    X = torch.from_numpy(X).permute(0, 3, 1, 2).contiguous()  # images as torch's (N, C, H, W)")
    else:
        main.append("    X = torch.from_numpy(X)")
    if loss.sparse_targets and lowered.class_indices:
        main.append("    Y = torch.from_numpy(Y)  # class indices (int64), what nn.CrossEntropyLoss takes")
    elif loss.sparse_targets:
        main.append(f"    Y = nn.functional.one_hot(torch.from_numpy(Y), {experiment.model.output_units})"
                    ".to(torch.float64)  # class indices as one-hot rows")
    else:
        main.append("    Y = torch.from_numpy(Y)")
    main += ["    # start from crossnn's initial parameters (canonical layout: a dense kernel is (in, out),",
             "    # nn.Linear keeps (out, in); a conv kernel is (kh, kw, in, out), nn.Conv2d keeps (out, in, kh, kw))"]
    variables = model.variables()
    if any(isinstance(layout, ops.Gates) for _, _, layout in variables):
        main += ["    # recurrent layers: a kernel (in, G·u) is weight_ih_l0 (G·u, in) transposed, GRU gates z, r, h",
                 "    # are torch's r, z, n (blocks reordered), and one bias is bias_ih_l0 + bias_hh_l0"]
    main.append("    with torch.no_grad():")
    for name, wheres, layout in variables:
        natives = ops.parts(layout.native_code(f"torch.from_numpy(INIT[{name!r}])"))
        frozen = getattr(layout, "frozen", (False,) * len(wheres))
        main += [f"        {where}.copy_({code})" if code is not None else f"        {where}.zero_()"
                 for where, code in zip(wheres, natives)]
        main += [f"        {where}.requires_grad_(False)  # held at 0: crossnn's one bias is bias_ih + bias_hh"
                 for where, held in zip(wheres, frozen) if held]
    if not variables:
        main.append("        pass")
    main += ["    # ---- training: the tutorial's loop, one optimizer step per batch ----",
             "    step = 0  # the global step number: the learning rate and dropout masks depend on it",
             "    for epoch in range(EPOCHS):",
             "        for rows in batches(epoch):"]
    body = ["rows = torch.from_numpy(rows)", "xb, yb = X[rows], Y[rows]"]
    if needs_lr:
        body.append("lr = lr_at(epoch, step)")
    for name, shape, rate in dropouts:
        (module,) = model.module_of[name]
        mask = f"torch.from_numpy(dropout_mask({name!r}, step, len(rows), {shape}, {rate!r}))"
        body.append(f"{module}.mask = {mask}" + (".permute(0, 3, 1, 2)  # as the (N, C, H, W) tensor"
                                                  if ops.image(shape) else ""))
    body += ["optimizer.zero_grad()               # forget the previous step's gradients",
             "loss = loss_fn(model(xb), yb)       # forward pass and loss",
             "loss.backward()                     # gradients of every parameter",
             *stage_lines,
             "optimizer.step()                    # the update",
             "step += 1"]
    main += [f"            {line}" for line in body]
    main += ["        if epoch % max(1, EPOCHS // 10) == 0 or epoch == EPOCHS - 1:",
             '            print(f"epoch {epoch:5d}  loss {loss.item():.6f}")',
             "    # back to crossnn's canonical layout",
             "    final = {"]
    for name, wheres, layout in variables:
        detached = tuple(f"{where}.detach()" for where in wheres)
        main.append(f"        {name!r}: {layout.canonical_code(detached[0] if len(detached) == 1 else detached)},")
    main.append("    }")
    parts.append("\n".join(main) + "\n" + codegen.footer_code("final"))
    parts += [codegen.data_code(experiment, data, params, side_file), codegen.MAIN_GUARD]
    return codegen.join(parts)
