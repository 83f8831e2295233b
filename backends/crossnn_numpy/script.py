"""A standalone NumPy training script for an experiment, in the style of a NumPy tutorial: the forward
pass and the chain rule written out layer by layer, the loss and its gradient, the optimizer update,
and the loop over crossnn's batch order. Every line comes from the registry entry of the spec class
it lowers (crossnn_numpy.ops, crossnn_numpy.optimizers); window layers call the same functions the
backend trains with (crossnn_numpy.windows, copied in). Running it reproduces the NumPy backend's run."""

from __future__ import annotations

import inspect
import textwrap

from crossnn import codegen
from crossnn import spec as S
from crossnn.spec import INPUT

from crossnn_numpy import normalization, ops, sequences, windows
from crossnn_numpy.optimizers import chain

#: helpers the entries' code may call, by name: their source
SCRIPT_HELPERS = {
    "softmax": '''def softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)
''',
    "erf": "erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf\n",
    "Activation": '''class Activation:
    """An activation as the recurrent helpers take it: forward(z) -> a, backward(z, a, da) -> dz."""

    def __init__(self, forward, backward):
        self.forward, self.backward = forward, backward
''',
    **{name: textwrap.dedent(inspect.getsource(getattr(module, name))) for module, names in (
        (windows, ("pad2d", "crop2d", "window_slices", "unslice", "gather_windows", "conv2d_forward",
                   "conv2d_backward", "max_pool_forward", "max_pool_backward", "avg_pool_divisor", "avg_pool_forward",
                   "avg_pool_backward")),
        (normalization, ("_count", "normalize_forward", "normalize_backward", "batch_norm_moving",
                         "batch_norm_inference")),
        (sequences, ("_steps_of", "_sequence", "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
                     "gru_forward", "gru_backward"))) for name in names},
}
#: a stable order for the helpers (definitions before uses do not matter in Python, readers like it)
HELPER_ORDER = list(SCRIPT_HELPERS)


def _var(name: str) -> str:
    """A Python identifier for a layer's value."""
    return "x" if name == INPUT else "v_" + "".join(c if c.isalnum() else "_" for c in name)


def _model_code(model: S.Model) -> tuple[str, set[str]]:
    """forward() and backward(), and the helpers they call."""
    stateful = bool(model.state_inits())
    fwd = ["def forward(P, x, masks=None, training=False):",
           '    """The model output; `c` keeps what the backward pass needs'
           + (' and, under "state", the layers\' new state' if stateful else "") + '."""',
           '    c = {"state": {}}' if stateful else "    c = {}"]
    bwd = ["def backward(P, c, d_out):", '    """dL/dP for every parameter, given dL/d(output), by the chain rule."""',
           "    g, d = {}, {}", f"    d[{model.layers[-1].name!r}] = d_out"]
    helpers: set[str] = set()
    trains = {INPUT: False}
    for node in model.nodes:
        entry = ops.OPS.lookup(node.layer, "in a script")
        fwd += [f"    {line}" for line in entry.forward_code(node, [_var(n) for n in node.inputs], _var(node.name))]
        helpers |= entry.helpers(node)
        trains[node.name] = bool(node.params) or any(trains[n] for n in node.inputs)
    fwd.append(f"    return {_var(model.layers[-1].name)}, c")
    for node in reversed(model.nodes):
        lines, input_grads = ops.OPS.lookup(node.layer).backward_code(node, f"d[{node.name!r}]")
        needed = [(name, expr) for name, expr in zip(node.inputs, input_grads) if trains[name] and expr is not None]
        if not lines and not needed:
            continue
        bwd += [f"    {line}" for line in lines]
        for name, expr in needed:
            bwd.append(f"    d[{name!r}] = d[{name!r}] + {expr} if {name!r} in d else {expr}")
    bwd.append("    return g")
    return "\n".join(fwd) + "\n\n\n" + "\n".join(bwd) + "\n", helpers


def _loss_code(loss: S.Loss) -> str:
    body = textwrap.indent(ops.loss(loss, None).code, "    ")
    return 'def loss_and_grad(p, y):\n    """The loss (a mean) and dL/dp."""\n' + body + "\n"


def script(experiment: S.Experiment, params, data, side_file: str | None = None) -> str:
    model = experiment.model
    dropout = codegen.dropout_layers(experiment)
    model_code, helpers = _model_code(model)
    optimizer_code = chain(experiment.optimizer, None).code()
    used = codegen.script_imports(experiment, data, params, side_file)
    if "erf" in helpers or "math." in model_code:
        used.append("math")
    parts = [codegen.header(experiment, "NumPy", "numpy"), codegen.imports(*used, "numpy as np"),
             "# ---- the model, its loss and the optimizer: every derivative written out ----"]
    if helpers & set(dir(windows)):
        parts.append("# window layers (convolution, pooling) on (N, H, W, C) arrays, written for any NumPy-like\n"
                     "# namespace `xp` (these are crossnn's own; here xp is np)")
    parts += [SCRIPT_HELPERS[name] for name in HELPER_ORDER if name in helpers]
    trained = list(model.parameter_inits())
    parts += [model_code, _loss_code(experiment.loss), f"TRAINED = {trained!r}  # what the optimizer updates",
              optimizer_code,
              codegen.plan_code(experiment, data.n), codegen.lr_code(experiment), codegen.dropout_code(experiment)]
    masks = (", masks={" + ", ".join(f"{name!r}: dropout_mask({name!r}, step, len(rows), {shape}, {rate!r})"
                                     for name, shape, rate in dropout) + "}") if dropout else ""
    main = ["def main():", f"    {codegen.LOAD}"]
    if experiment.loss.sparse_targets:
        main.append(f"    Y = np.eye({model.output_units})[Y]  # class indices -> one-hot rows")
    main += ["    # ---- training: the plan's batches, one update per batch ----",
             "    P = {name: value.copy() for name, value in INIT.items()}",
             "    state = init_state(P)",
             "    step = 0",
             '    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):',
             "        for epoch in range(EPOCHS):",
             "            for rows in batches(epoch):",
             f"                out, cache = forward(P, X[rows]{masks}, training=True)",
             "                loss, d_out = loss_and_grad(out, Y[rows])",
             "                P = update(P, backward(P, cache, d_out), state, lr_at(epoch, step))"]
    if model.state_inits():
        main.append('                P.update(cache["state"])  # the layers\' state after this step')
    main.append("                step += 1")
    parts.append("\n".join(main) + "\n" + codegen.footer_code("P"))
    parts += [codegen.data_code(experiment, data, params, side_file), codegen.MAIN_GUARD]
    return codegen.join(parts)
