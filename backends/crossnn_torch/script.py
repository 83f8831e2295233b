"""A standalone PyTorch script for an experiment, written the way PyTorch's tutorials write one: an
nn.Sequential of nn.Linear and activation modules (or an nn.Module whose forward() follows a model
graph), a loss module, a torch.optim optimizer and the zero_grad / backward / step loop over the
batches. The data, initial parameters, batch order, learning-rate schedule and dropout masks are
crossnn's (crossnn.codegen), so the script ends where crossnn's torch run ends.

Where torch has no built-in for a spec formula (softplus without nn.Softplus' threshold, BCE with a
log clamp other than -100, cross-entropy on probabilities, dropout with crossnn's masks), the script
carries the same small module the backend uses, so a reader sees exactly what differs.
"""

from __future__ import annotations

import inspect
import keyword
import re
import textwrap

import numpy as np
from torch import nn

from crossnn import codegen, spec
from crossnn.data import Dataset
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT, Experiment

from crossnn_torch import layers, losses

COMMAND = "crossnn code {name} --backend torch"

IMPORTS = "import torch\nfrom torch import nn\n"

DROPOUT_CLASS = '''class Dropout(nn.Module):
    """Inverted dropout with crossnn's masks: x * mask while training (the mask, 0 or 1/(1 - rate)
    per element, is set before every step), x itself in eval mode. nn.Dropout would draw its own
    masks from torch's RNG; these come from the seed, so every framework drops the same units."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        return x * self.mask if self.training and self.mask is not None else x
'''


def _source(obj) -> str:
    return textwrap.dedent(inspect.getsource(obj))


# ---- names ------------------------------------------------------------------------------------------

RESERVED = {"x", "self", "torch", "nn", "np", "softplus"}


def _identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for a layer name that is no keyword, no nn.Module attribute and unused."""
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = "layer_" + ident
    while keyword.iskeyword(ident) or hasattr(nn.Module, ident) or ident in RESERVED or ident in taken:
        ident += "_"
    taken.add(ident)
    return ident


# ---- model ------------------------------------------------------------------------------------------

MODULES = {
    spec.Sigmoid: lambda a: "nn.Sigmoid()",
    spec.Tanh: lambda a: "nn.Tanh()",
    spec.ReLU: lambda a: "nn.ReLU()",
    spec.LeakyReLU: lambda a: f"nn.LeakyReLU(negative_slope={a.negative_slope!r})",
    spec.Softmax: lambda a: "nn.Softmax(dim=-1)",
    spec.GELU: lambda a: f"nn.GELU(approximate={a.approximate!r})",
    spec.Softplus: lambda a: "Softplus()",
}

FUNCTIONS = {
    spec.Sigmoid: lambda a, z: f"torch.sigmoid({z})",
    spec.Tanh: lambda a, z: f"torch.tanh({z})",
    spec.ReLU: lambda a, z: f"torch.relu({z})",
    spec.LeakyReLU: lambda a, z: f"nn.functional.leaky_relu({z}, negative_slope={a.negative_slope!r})",
    spec.Softmax: lambda a, z: f"torch.softmax({z}, dim=-1)",
    spec.GELU: lambda a, z: f"nn.functional.gelu({z}, approximate={a.approximate!r})",
    spec.Softplus: lambda a, z: f"softplus({z})",
}


def _check_activation(a: spec.Activation, where: str) -> None:
    if type(a) is not spec.Linear and type(a) not in MODULES:
        raise UnsupportedFeature("torch", f"activation '{a.kind}' of layer '{where}' in a script")


def _linear(node) -> str:
    layer = node.layer
    bias = "" if layer.use_bias else ", bias=False"
    return f"nn.Linear({node.input_sizes[0]}, {layer.units}{bias})"


class Model:
    """The model's source, and how the rest of the script reaches its parts."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        self.linears: dict[str, str] = {}  # dense layer name -> expression of its nn.Linear
        self.dropouts: dict[str, tuple[str, int, float]] = {}  # dropout layer -> (module, size, rate)
        self.uses_softplus = False
        for node in experiment.model.nodes:
            if type(node.layer) not in (spec.Dense, spec.ActivationLayer, spec.Concatenate, spec.Dropout):
                raise UnsupportedFeature("torch", f"layer type '{node.layer.kind}' in a script")
            act = getattr(node.layer, "activation", None)
            if act is not None:
                _check_activation(act, node.name)
                self.uses_softplus |= isinstance(act, spec.Softplus)
        self.code = self._sequential() if layers.is_chain(experiment.model) else self._graph()

    def _sequential(self) -> str:
        lines, index = [], 0
        for node in self.experiment.model.nodes:
            layer = node.layer
            entries = []
            if isinstance(layer, spec.Dense):
                self.linears[node.name] = f"model[{index}]"
                entries.append((_linear(node), f"{node.name}: {node.input_sizes[0]} -> {layer.units}"))
            elif isinstance(layer, spec.Dropout):
                self.dropouts[node.name] = (f"model[{index}]", node.size, layer.rate)
                entries.append(("Dropout()", f"{node.name}: rate {layer.rate!r}, crossnn's masks"))
            act = getattr(layer, "activation", None)
            if act is not None and type(act) is not spec.Linear:
                entries.append((MODULES[type(act)](act), f"{node.name}: activation" if isinstance(
                    layer, spec.ActivationLayer) else ""))
            for code, note in entries:
                lines.append(f"    {code},{'  # ' + note if note else ''}")
                index += 1
        return ("# ---- the model: a chain of layers, so an nn.Sequential ----\n"
                "model = nn.Sequential(\n" + "\n".join(lines) + "\n)\n")

    def _graph(self) -> str:
        taken: set[str] = set()
        names = {node.name: _identifier(node.name, taken) for node in self.experiment.model.nodes}
        names[INPUT] = "x"
        init, forward = [], []
        for node in self.experiment.model.nodes:
            layer, ident = node.layer, names[node.name]
            args = [names[i] for i in node.inputs]
            if isinstance(layer, spec.Dense):
                init.append(f"        self.{ident} = {_linear(node)}")
                self.linears[node.name] = f"model.{ident}"
                value = f"self.{ident}({args[0]})"
                if type(layer.activation) is not spec.Linear:
                    value = FUNCTIONS[type(layer.activation)](layer.activation, value)
            elif isinstance(layer, spec.ActivationLayer):
                value = FUNCTIONS[type(layer.activation)](layer.activation, args[0]) if type(
                    layer.activation) is not spec.Linear else args[0]
            elif isinstance(layer, spec.Concatenate):
                value = f"torch.cat([{', '.join(args)}], dim=1)"
            else:  # Dropout
                init.append(f"        self.{ident} = Dropout()  # rate {layer.rate!r}, crossnn's masks")
                self.dropouts[node.name] = (f"model.{ident}", node.size, layer.rate)
                value = f"self.{ident}({args[0]})"
            forward.append(f"        {ident} = {value}")
        output = names[self.experiment.model.layers[-1].name]
        return ("# ---- the model: a graph of layers, so an nn.Module whose forward() wires them ----\n"
                "class Net(nn.Module):\n"
                "    def __init__(self):\n"
                "        super().__init__()\n" + "\n".join(init) + "\n\n"
                "    def forward(self, x):\n"
                "        # each line is one layer of the spec, reading the layers its `inputs` name\n"
                + "\n".join(forward) + f"\n        return {output}\n\n\n"
                "model = Net()\n")


# ---- loss and optimizer ---------------------------------------------------------------------------


def _loss(s: spec.Loss) -> tuple[str, str]:
    """(definitions the loss needs, the line creating loss_fn)."""
    if isinstance(s, spec.MSE):
        return "", "loss_fn = nn.MSELoss()"
    if isinstance(s, spec.MAE):
        return "", "loss_fn = nn.L1Loss()"
    if isinstance(s, spec.Huber):
        return "", f"loss_fn = nn.HuberLoss(delta={s.delta!r})"
    if isinstance(s, spec.BCELogits):
        return "", "loss_fn = nn.BCEWithLogitsLoss()  # sigmoid and BCE in one, on the logits"
    if isinstance(s, spec.BCE):
        if s.log_min == losses.TORCH_BCE_LOG_MIN:
            return "", "loss_fn = nn.BCELoss()  # clamps log p and log(1 - p) at -100"
        code = (f"# nn.BCELoss clamps the logs at -100; this spec clamps them at {s.log_min!r}\n"
                f"BCE_GRAD_FLOOR = {losses.BCE_GRAD_FLOOR!r}\n\n\n"
                + _source(losses.ClampedBCEFunction) + "\n\n" + _source(losses.ClampedBCELoss))
        return code, f"loss_fn = ClampedBCELoss(log_min={s.log_min!r})"
    if isinstance(s, spec.CrossEntropy):
        if s.from_logits:
            return "", "loss_fn = nn.CrossEntropyLoss()  # log-softmax and NLL in one, on the logits"
        code = ("# nn.CrossEntropyLoss wants logits; the model outputs probabilities, so the loss is -log p\n"
                + _source(losses.ProbabilityCrossEntropyFunction) + "\n\n"
                + _source(losses.ProbabilityCrossEntropyLoss))
        return code, f"loss_fn = ProbabilityCrossEntropyLoss(log_min={s.log_min!r})"
    raise UnsupportedFeature("torch", f"loss '{s.kind}' in a script")


def _optimizer(s: spec.Optimizer) -> tuple[str, float]:
    """(the line creating `optimizer`, the decoupled decay the loop applies by hand)."""
    decoupled = s.weight_decay_kind == "decoupled"
    wd = s.weight_decay
    if isinstance(s, spec.AdamW):
        return (f"optimizer = torch.optim.AdamW(model.parameters(), lr={s.lr!r}, betas=({s.beta1!r}, {s.beta2!r}), "
                f"eps={s.eps!r}, weight_decay={wd!r})"), 0.0
    if isinstance(s, spec.Adam):
        extra = ", decoupled_weight_decay=True" if decoupled else ""
        return (f"optimizer = torch.optim.Adam(model.parameters(), lr={s.lr!r}, betas=({s.beta1!r}, {s.beta2!r}), "
                f"eps={s.eps!r}, weight_decay={wd!r}{extra})"), 0.0
    l2 = 0.0 if decoupled else wd
    if isinstance(s, spec.SGD):
        line = (f"optimizer = torch.optim.SGD(model.parameters(), lr={s.lr!r}, momentum={s.momentum!r}, "
                f"nesterov={s.nesterov!r}, weight_decay={l2!r})")
    elif isinstance(s, spec.RMSprop):
        line = (f"optimizer = torch.optim.RMSprop(model.parameters(), lr={s.lr!r}, alpha={s.alpha!r}, eps={s.eps!r}, "
                f"momentum={s.momentum!r}, centered={s.centered!r}, weight_decay={l2!r})")
    elif isinstance(s, spec.Adagrad):
        line = (f"optimizer = torch.optim.Adagrad(model.parameters(), lr={s.lr!r}, "
                f"initial_accumulator_value={s.initial_accumulator!r}, eps={s.eps!r}, weight_decay={l2!r})")
    else:
        raise UnsupportedFeature("torch", f"optimizer '{s.kind}' in a script")
    return line, (wd if decoupled else 0.0)


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


# ---- the script -----------------------------------------------------------------------------------


def script(experiment: Experiment, params: dict[str, np.ndarray], data: Dataset) -> str:
    model = Model(experiment)
    loss_defs, loss_line = _loss(experiment.loss)
    optimizer_line, decay = _optimizer(experiment.optimizer)
    opt = experiment.optimizer
    loss = experiment.loss
    classes = experiment.model.output_size

    big = max(np.asarray(data.x).size, np.asarray(data.y).size,
              *(np.asarray(v).size for v in params.values())) > codegen.LITERAL_LIMIT
    parts = [codegen.header(experiment, "PyTorch", COMMAND.format(name=experiment.name)),
             codegen.COMMON_IMPORTS + IMPORTS,
             "# float64 everywhere: crossnn's parity runs are float64, and so is every tensor below\n"
             "torch.set_default_dtype(torch.float64)\n"]
    if big:
        parts.append(codegen.UNPACK)
    counts_steps = opt.schedule is not None or bool(decay) or bool(model.dropouts)
    parts += [codegen.data_code(data, experiment), codegen.params_code(params), codegen.plan_code(experiment, data.n)]
    if opt.schedule is not None or decay:
        parts.append(codegen.lr_code(experiment))
    dropout = codegen.dropout_code(experiment)
    if dropout:
        parts += [dropout, DROPOUT_CLASS]
    if model.uses_softplus:
        parts.append("# the spec's softplus: nn.Softplus() returns z itself above z = 20 (its threshold);\n"
                     "# this one keeps log(1 + exp(z)), with the gradient sigmoid(z)\n"
                     + _source(layers.SoftplusFunction) + "\n\n" + _source(layers.Softplus) + "\n\n"
                     + "softplus = SoftplusFunction.apply\n")
    if loss_defs:
        parts.append(loss_defs)
    parts.append(model.code)

    linears = "".join(f"    {name!r}: {expr},\n" for name, expr in model.linears.items())
    parts.append(
        "# the nn.Linear of every dense layer, by its name in the spec\n"
        f"linears = {{\n{linears}}}\n\n"
        "# start from crossnn's initial parameters; nn.Linear keeps its weight as (out, in), the\n"
        "# transpose of crossnn's (in, out) kernel\n"
        "with torch.no_grad():\n"
        "    for name, linear in linears.items():\n"
        "        linear.weight.copy_(torch.from_numpy(INIT[name + \"/kernel\"]).T)\n"
        "        if linear.bias is not None:\n"
        "            linear.bias.copy_(torch.from_numpy(INIT[name + \"/bias\"]))\n")

    if loss.sparse_targets and isinstance(loss, spec.CrossEntropy) and loss.from_logits:
        targets = "Y = torch.from_numpy(Y)  # class indices (int64), what nn.CrossEntropyLoss takes\n"
    elif loss.sparse_targets:
        targets = (f"Y = nn.functional.one_hot(torch.from_numpy(Y), {classes}).to(torch.float64)"
                   "  # class indices as one-hot rows\n")
    else:
        targets = "Y = torch.from_numpy(Y)\n"
    setup = ["# ---- loss, optimizer, tensors ----", loss_line, _wrap(optimizer_line)]
    if decay:
        setup.append(f"WEIGHT_DECAY = {decay!r}  # decoupled: torch.optim.{type(opt).__name__} has no such option, "
                     "so the loop shrinks the weights itself")
    parts.append("\n".join(setup) + "\nX = torch.from_numpy(X)\n" + targets)

    loop = ["# ---- training: the tutorial's loop, one optimizer step per batch ----"]
    if counts_steps:
        loop.append("step = 0  # the global step number: the learning rate and dropout masks depend on it")
    loop += ["for epoch in range(EPOCHS):",
            "    for rows in batches(epoch):",
            "        rows = torch.from_numpy(rows)",
            "        xb, yb = X[rows], Y[rows]"]
    if opt.schedule is not None or decay:
        loop.append("        lr = lr_at(epoch, step)")
    if opt.schedule is not None:
        loop += ["        for group in optimizer.param_groups:  # the schedule, written by hand",
                 "            group[\"lr\"] = lr"]
    for name, (expr, size, rate) in model.dropouts.items():
        loop.append(f"        {expr}.mask = torch.from_numpy("
                    f"dropout_mask({name!r}, step, len(rows), {size}, {rate!r}))")
    loop += ["        optimizer.zero_grad()               # forget the previous step's gradients",
             "        loss = loss_fn(model(xb), yb)       # forward pass and loss",
             "        loss.backward()                     # gradients of every parameter"]
    if opt.clip_norm is not None:
        loop.append(f"        nn.utils.clip_grad_norm_(model.parameters(), max_norm={opt.clip_norm!r})"
                    "  # one norm for all")
    if decay:
        loop += ["        with torch.no_grad():               # decoupled weight decay, before the update",
                 "            for p in model.parameters():",
                 "                p.mul_(1.0 - lr * WEIGHT_DECAY)"]
    loop.append("        optimizer.step()                    # the update")
    if counts_steps:
        loop.append("        step += 1")
    loop += [
             "    if epoch % max(1, EPOCHS // 10) == 0 or epoch == EPOCHS - 1:",
             "        print(f\"epoch {epoch:5d}  loss {loss.item():.6f}\")"]
    parts.append("\n".join(loop) + "\n")

    parts.append(
        "# kernels back to crossnn's (in, out) layout\n"
        "final = {}\n"
        "for name, linear in linears.items():\n"
        "    final[name + \"/kernel\"] = linear.weight.detach().T\n"
        "    if linear.bias is not None:\n"
        "        final[name + \"/bias\"] = linear.bias.detach()\n"
        + codegen.footer_code("final"))
    return "\n\n".join(part.rstrip("\n") + "\n" for part in parts if part)
