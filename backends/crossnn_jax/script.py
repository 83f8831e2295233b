"""A standalone JAX + optax training script for an experiment, written the way the JAX documentation
writes one: a `model(params, x)` function over a dict of parameters, the loss, an optax chain, and a
jax.jit-compiled `train_step` with jax.value_and_grad, called once per batch of crossnn's batch order.
Every model line is the script text of the layer's registry entry (crossnn_jax.ops), the optimizer is
the Chain's own code (crossnn_jax.optimizers), and the functions that carry the spec's gradients or
formulas where jax and optax have none (clamped_bce, clip_by_global_norm_plus_eps, ...) are copied in
from the backend's source. Running it reproduces the JAX backend's jit-mode run."""

from __future__ import annotations

from crossnn import codegen
from crossnn import spec as S
from crossnn.spec import INPUT

from crossnn_jax import ops, optimizers
from crossnn_jax.optimizers import Chain

#: every script helper by name: its source (the ops' and the optimizers')
SCRIPT_HELPERS = {**ops.SCRIPT_HELPERS, **optimizers.SCRIPT_HELPERS}


def _var(name: str) -> str:
    """A Python identifier for a layer's value."""
    return "x" if name == INPUT else "v_" + "".join(c if c.isalnum() else "_" for c in name)


def _model_code(model: S.Model) -> tuple[str, set[str]]:
    """model(params, x, masks) or, for a model with state (BatchNorm), model(params, x, masks,
    training) -> (output, the layers' new state); and the helpers it calls."""
    stateful = bool(model.state_inits())
    if stateful:
        lines = ["def model(params, x, masks=None, training=False):",
                 '    """The forward pass and the layers\' new state (params holds their state too); masks:',
                 "    the step's dropout masks, None when predicting; training: batch statistics, else the moving",
                 '    ones."""',
                 "    state = {}"]
    else:
        lines = ["def model(params, x, masks=None):",
                 '    """The forward pass; masks: the step\'s dropout masks (None when predicting)."""']
    helpers: set[str] = set()
    for node in model.nodes:
        entry = ops.layer(node)
        lines += [f"    {line}" for line in entry.code([_var(n) for n in node.inputs], _var(node.name))]
        helpers |= entry.helpers
    output = _var(model.layers[-1].name)
    lines.append(f"    return {output}, state" if stateful else f"    return {output}")
    return "\n".join(lines) + "\n", helpers


def _loss_code(experiment: S.Experiment) -> tuple[str, set[str]]:
    entry = ops.loss(experiment.loss)
    loss = 'def loss(out, y):\n    """The spec\'s loss (a mean)."""\n    ' + entry.code + "\n"
    if experiment.model.state_inits():
        fn = ("def loss_fn(params, state, x, y, masks):\n"
              '    """The loss of a training step, and the layers\' new state (jax.value_and_grad\'s aux)."""\n'
              "    out, state = model({**params, **state}, x, masks, training=True)\n"
              "    return loss(out, y), state\n")
    else:
        fn = "def loss_fn(params, x, y, masks):\n    return loss(model(params, x, masks), y)\n"
    return loss + "\n\n" + fn, set(entry.helpers)


def _step_code(stateful: bool) -> str:
    if stateful:
        return ("@jax.jit\n"
                "def train_step(params, state, opt_state, x, y, lr, masks):\n"
                '    """One step: loss and gradients, the optimizer\'s direction d, then w <- w - lr * d."""\n'
                "    (value, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y, masks)\n"
                "    direction, opt_state = optimizer.update(grads, opt_state, params)\n"
                "    params = optax.apply_updates(params, jax.tree.map(lambda d: (-lr) * d, direction))\n"
                "    return value, params, state, opt_state\n")
    return ("@jax.jit\n"
            "def train_step(params, opt_state, x, y, lr, masks):\n"
            '    """One step: loss and gradients, the optimizer\'s direction d, then w <- w - lr * d."""\n'
            "    value, grads = jax.value_and_grad(loss_fn)(params, x, y, masks)\n"
            "    direction, opt_state = optimizer.update(grads, opt_state, params)\n"
            "    params = optax.apply_updates(params, jax.tree.map(lambda d: (-lr) * d, direction))\n"
            "    return value, params, opt_state\n")


def script(experiment: S.Experiment, params, data, side_file: str | None = None) -> str:
    model = experiment.model
    stateful = bool(model.state_inits())
    model_code, helpers = _model_code(model)
    loss_code, loss_helpers = _loss_code(experiment)
    chain = Chain(experiment.optimizer)
    helpers |= loss_helpers | set(chain.helpers)
    body = model_code + loss_code
    used = codegen.script_imports(experiment, data, params, side_file)
    if any("functools." in SCRIPT_HELPERS[name] for name in helpers):
        used.append("functools")
    if any("math." in SCRIPT_HELPERS[name] for name in helpers):
        used.append("math")
    if "count_steps" in helpers:
        used.append("typing:NamedTuple")
    used += ["numpy as np", "jax", "jax.numpy as jnp", "optax"]
    if "lax." in body:
        used.append("jax:lax")
    parts = [codegen.header(experiment, "JAX", "jax"), codegen.imports(*used),
             'jax.config.update("jax_enable_x64", True)  # float64, as crossnn\'s parity runs\n'
             'jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 on GPUs',
             "# ---- the model, its loss and the optimizer: gradients by jax.value_and_grad ----"]
    parts += [SCRIPT_HELPERS[name] for name in SCRIPT_HELPERS if name in helpers]
    parts += [model_code, loss_code, chain.code(), _step_code(stateful),
              codegen.plan_code(experiment, data.n), codegen.lr_code(experiment), codegen.dropout_code(experiment)]
    dropout = codegen.dropout_layers(experiment)
    masks = ("{" + ", ".join(f"{name!r}: dropout_mask({name!r}, step, len(rows), {shape}, {rate!r})"
                             for name, shape, rate in dropout) + "}") if dropout else "{}"
    main = ["def main():", f"    {codegen.LOAD}"]
    entry = ops.loss(experiment.loss)
    if experiment.loss.sparse_targets:
        labels = f"Y.reshape(len(Y), {', '.join(map(str, model.output_shape[:-1]))})" if len(model.output_shape) > 1 \
            else "Y.reshape(len(Y))"
        main.append(f"    Y = {labels}.astype(np.int32)  # class indices, as optax's integer-label loss takes them"
                    if entry.class_indices else f"    Y = np.eye({model.output_units})[{labels}]  # one-hot rows")
    main += ["    # ---- training: the plan's batches, one jitted step per batch ----",
             f"    params = {{name: jnp.asarray(INIT[name]) for name in {list(model.parameter_inits())!r}}}"]
    if stateful:
        main.append(f"    state = {{name: jnp.asarray(INIT[name]) for name in {list(model.state_inits())!r}}}  "
                    "# the layers' state, not trained")
    main += ["    opt_state = optimizer.init(params)", "    step = 0",
             "    for epoch in range(EPOCHS):", "        for rows in batches(epoch):"]
    carry = "params, state, opt_state" if stateful else "params, opt_state"
    main += [f"            value, {carry} = train_step({carry}, X[rows], Y[rows], lr_at(epoch, step), {masks})",
             "            step += 1"]
    parts.append("\n".join(main) + "\n" + codegen.footer_code("{**params, **state}" if stateful else "params"))
    parts += [codegen.data_code(experiment, data, params, side_file), codegen.MAIN_GUARD]
    return codegen.join(parts)
