"""A standalone NumPy training script for an experiment, in the style of a NumPy tutorial: the forward
pass and the chain rule written out layer by layer, the loss and its gradient, the optimizer update,
and the loop over crossnn's batch order. Running it reproduces the NumPy backend's run."""

from __future__ import annotations

import textwrap

from crossnn import codegen
from crossnn import spec as S
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT

# activation: (forward expression of z, backward expression of z, a = f(z) and the upstream gradient da)
ACTIVATIONS = {
    S.Linear: ("{z}", "{da}"),
    S.ReLU: ("np.maximum({z}, 0.0)", "np.where({z} > 0, {da}, 0.0)"),
    S.Sigmoid: ("1.0 / (1.0 + np.exp(-{z}))", "{da} * (1.0 - {a}) * {a}"),
    S.Tanh: ("np.tanh({z})", "{da} * (1.0 - {a} * {a})"),
    S.Softplus: ("np.maximum({z}, 0.0) + np.log1p(np.exp(-np.abs({z})))", "{da} * (1.0 / (1.0 + np.exp(-{z})))"),
    S.Softmax: ("softmax({z})", "{a} * ({da} - np.sum({da} * {a}, axis=-1, keepdims=True))"),
}


def _activation(act: S.Activation) -> tuple[str, str]:
    if isinstance(act, S.LeakyReLU):
        s = act.negative_slope
        return f"np.where({{z}} > 0, {{z}}, {{z}} * {s!r})", f"np.where({{z}} > 0, {{da}}, {{da}} * {s!r})"
    if isinstance(act, S.GELU):
        if act.approximate == "none":
            return ("{z} * 0.5 * (1.0 + erf({z} * math.sqrt(0.5)))",
                    "{da} * (0.5 * (1.0 + erf({z} * math.sqrt(0.5))) "
                    "+ {z} * np.exp(-0.5 * {z} * {z}) / math.sqrt(2 * math.pi))")
        inner = "math.sqrt(2.0 / math.pi) * ({z} + 0.044715 * {z} * {z} * {z})"
        return (f"0.5 * {{z}} * (1.0 + np.tanh({inner}))",
                f"{{da}} * (0.5 * (1.0 + np.tanh({inner})) + 0.5 * {{z}} * (1.0 - np.tanh({inner}) ** 2) * "
                f"math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * {{z}} * {{z}}))")
    if type(act) not in ACTIVATIONS:
        raise UnsupportedFeature("numpy", f"emitting activation '{act.kind}'")
    return ACTIVATIONS[type(act)]


def _var(name: str) -> str:
    """A Python identifier for a layer's value."""
    return "x" if name == INPUT else "v_" + "".join(c if c.isalnum() else "_" for c in name)


def _model_code(model: S.Model) -> str:
    fwd, bwd = ["def forward(P, x, masks=None):",
                '    """The model output; `c` keeps what the backward pass needs."""', "    c = {}"], []
    bwd += ["def backward(P, c, d_out):", '    """dL/dP for every parameter, given dL/d(output), by the chain rule."""',
            "    g, d = {}, {}", f"    d[{model.layers[-1].name!r}] = d_out"]
    for node in model.nodes:
        layer, out = node.layer, _var(node.name)
        ins = [_var(n) for n in node.inputs]
        key = repr(node.name)
        if isinstance(layer, S.Dense):
            f, _ = _activation(layer.activation)
            bias = f' + P["{node.name}/bias"]' if layer.use_bias else ""
            fwd.append(f'    z = {ins[0]} @ P["{node.name}/kernel"]{bias}')
            fwd.append(f"    {out} = {f.format(z='z')}")
            fwd.append(f"    c[{key}] = ({ins[0]}, z, {out})")
        elif isinstance(layer, S.ActivationLayer):
            f, _ = _activation(layer.activation)
            fwd.append(f"    {out} = {f.format(z=ins[0])}")
            fwd.append(f"    c[{key}] = ({ins[0]}, {out})")
        elif isinstance(layer, S.Concatenate):
            fwd.append(f"    {out} = np.concatenate([{', '.join(ins)}], axis=1)")
        elif isinstance(layer, S.Dropout):
            fwd.append(f"    mask = masks[{key}] if masks else None  # inverted dropout while training")
            fwd.append(f"    {out} = {ins[0]} if mask is None else {ins[0]} * mask")
            fwd.append(f"    c[{key}] = mask")
        else:
            raise UnsupportedFeature("numpy", f"emitting layer type '{layer.kind}'")
    fwd.append(f"    return {_var(model.layers[-1].name)}, c")

    def add(target: str, expr: str) -> list[str]:
        if target == INPUT:
            return []
        return [f"    d[{target!r}] = d[{target!r}] + {expr} if {target!r} in d else {expr}"]

    for node in reversed(model.nodes):
        layer, key = node.layer, repr(node.name)
        da = f"d[{key}]"
        if isinstance(layer, S.Dense):
            _, b = _activation(layer.activation)
            bwd.append(f"    x_in, z, a = c[{key}]")
            bwd.append(f"    dz = {b.format(z='z', a='a', da=da)}")
            bwd.append(f'    g["{node.name}/kernel"] = x_in.T @ dz')
            if layer.use_bias:
                bwd.append(f'    g["{node.name}/bias"] = np.sum(dz, axis=0)')
            bwd += add(node.inputs[0], f'dz @ P["{node.name}/kernel"].T')
        elif isinstance(layer, S.ActivationLayer):
            _, b = _activation(layer.activation)
            bwd.append(f"    z, a = c[{key}]")
            bwd += add(node.inputs[0], f"({b.format(z='z', a='a', da=da)})")
        elif isinstance(layer, S.Concatenate):
            start = 0
            for name, size in zip(node.inputs, node.input_sizes):
                bwd += add(name, f"{da}[:, {start}:{start + size}]")
                start += size
        elif isinstance(layer, S.Dropout):
            bwd += add(node.inputs[0], f"({da} if c[{key}] is None else {da} * c[{key}])")
    bwd.append("    return g")
    return "\n".join(fwd) + "\n\n\n" + "\n".join(bwd) + "\n"


def _loss_code(loss: S.Loss) -> str:
    head = 'def loss_and_grad(p, y):\n    """The loss (a mean) and dL/dp."""\n'
    if isinstance(loss, S.MSE):
        body = "    d = p - y\n    return np.mean(d * d), (2.0 / d.size) * d\n"
    elif isinstance(loss, S.MAE):
        body = "    d = p - y\n    return np.mean(np.abs(d)), np.sign(d) * (1.0 / d.size)\n"
    elif isinstance(loss, S.Huber):
        body = (f"    d, delta = p - y, {loss.delta!r}\n    ad = np.abs(d)\n"
                "    value = np.mean(np.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta)))\n"
                "    return value, np.clip(d, -delta, delta) * (1.0 / d.size)\n")
    elif isinstance(loss, S.BCE):
        body = (f"    log_p = np.maximum(np.log(p), {loss.log_min!r})      # the log clamp\n"
                f"    log_q = np.maximum(np.log1p(-p), {loss.log_min!r})\n"
                "    value = np.mean((y - 1.0) * log_q - y * log_p)\n"
                f"    floor = {S.BCE.grad_floor!r}  # float32(1e-12), as torch's BCELoss floors p (1 - p)\n"
                "    return value, (p - y) / np.maximum((1.0 - p) * p, floor) * (1.0 / p.size)\n")
    elif isinstance(loss, S.BCELogits):
        body = ("    value = np.mean(np.maximum(p, 0.0) - p * y + np.log1p(np.exp(-np.abs(p))))\n"
                "    return value, (1.0 / (1.0 + np.exp(-p)) - y) * (1.0 / p.size)\n")
    elif isinstance(loss, S.CrossEntropy) and loss.from_logits:
        body = ("    shifted = p - np.max(p, axis=1, keepdims=True)\n    e = np.exp(shifted)\n"
                "    total = np.sum(e, axis=1, keepdims=True)\n"
                "    value = -np.sum(y * (shifted - np.log(total))) / p.shape[0]\n"
                "    return value, (e / total - y) * (1.0 / p.shape[0])\n")
    elif isinstance(loss, S.CrossEntropy):
        body = (f"    log_p = np.log(p)\n    active = log_p > {loss.log_min!r}\n"
                f"    value = -np.sum(y * np.where(active, log_p, {loss.log_min!r})) / p.shape[0]\n"
                "    return value, np.where(active, -y / np.where(active, p, 1.0), 0.0) * (1.0 / p.shape[0])\n")
    else:
        raise UnsupportedFeature("numpy", f"emitting loss '{loss.kind}'")
    return head + body


def _optimizer_code(opt: S.Optimizer) -> str:
    lines = ["def update(P, G, state, lr):", '    """One optimizer step on every parameter, in place."""']
    if opt.clip_norm is not None:
        lines += ["    norm = math.sqrt(sum(float(np.sum(g * g)) for g in G.values()))  # global norm",
                  f"    coef = min(1.0, {opt.clip_norm!r} / (norm + 1e-6))",
                  "    G = {name: g * coef for name, g in G.items()}"]
    counted = isinstance(opt, (S.Adam, S.RMSprop, S.Adagrad))
    if counted:
        lines.append('    state["step"] = state.get("step", 0) + 1')
        lines.append('    t = state["step"]')
    lines.append("    for name, w in P.items():")
    lines.append("        g = G[name]")
    if opt.decoupled:
        lines.append(f"        w *= 1.0 - lr * {opt.decoupled!r}  # decoupled weight decay")
    if opt.l2:
        lines.append(f"        g = g + {opt.l2!r} * w  # L2 weight decay")
    if isinstance(opt, S.SGD):
        if opt.momentum:
            lines += ['        b = state.setdefault("momentum_buffer", {}).get(name)',
                      f"        b = g.copy() if b is None else {opt.momentum!r} * b + g  # b = g on the first step",
                      '        state["momentum_buffer"][name] = b',
                      f"        g = g + {opt.momentum!r} * b" if opt.nesterov else "        g = b"]
        lines.append("        w -= lr * g")
    elif isinstance(opt, S.Adam):
        lines += ['        m = state.setdefault("exp_avg", {}).setdefault(name, np.zeros_like(w))',
                  '        v = state.setdefault("exp_avg_sq", {}).setdefault(name, np.zeros_like(w))',
                  f"        m += (1.0 - {opt.beta1!r}) * (g - m)",
                  f"        v *= {opt.beta2!r}",
                  f"        v += ((1.0 - {opt.beta2!r}) * g) * g",
                  f"        denom = np.sqrt(v) / math.sqrt(1.0 - {opt.beta2!r} ** t) + {opt.eps!r}",
                  f"        w += (-(lr / (1.0 - {opt.beta1!r} ** t)) * m) / denom"]
    elif isinstance(opt, S.RMSprop):
        lines += ['        v = state.setdefault("square_avg", {}).setdefault(name, np.zeros_like(w))',
                  f"        v *= {opt.alpha!r}", f"        v += ((1.0 - {opt.alpha!r}) * g) * g"]
        if opt.centered:
            lines += ['        gbar = state.setdefault("grad_avg", {}).setdefault(name, np.zeros_like(w))',
                      f"        gbar += (1.0 - {opt.alpha!r}) * (g - gbar)",
                      f"        a = np.sqrt(v - gbar * gbar) + {opt.eps!r}"]
        else:
            lines.append(f"        a = np.sqrt(v) + {opt.eps!r}")
        if opt.momentum:
            lines += ['        b = state.setdefault("momentum_buffer", {}).setdefault(name, np.zeros_like(w))',
                      f"        b *= {opt.momentum!r}", "        b += g / a", "        w -= lr * b"]
        else:
            lines.append("        w += (-lr * g) / a")
    elif isinstance(opt, S.Adagrad):
        lines += [f'        s = state.setdefault("sum", {{}})'
                  f'.setdefault(name, np.zeros_like(w) + {opt.initial_accumulator!r})',
                  "        s += g * g", f"        w += (-lr * g) / (np.sqrt(s) + {opt.eps!r})"]
    else:
        raise UnsupportedFeature("numpy", f"emitting optimizer '{opt.kind}'")
    return "\n".join(lines) + "\n"


def script(experiment: S.Experiment, params, data) -> str:
    command = f"crossnn code {experiment.name} --backend numpy"
    model = experiment.model
    dropout = [(n.name, n.layer.rate, n.size) for n in model.nodes if isinstance(n.layer, S.Dropout)]
    gelu = any(isinstance(getattr(n.layer, "activation", None), S.GELU) for n in model.nodes)
    softmax = any(isinstance(getattr(n.layer, "activation", None), S.Softmax) for n in model.nodes)
    parts = [codegen.header(experiment, "NumPy", command), "import math\n" + codegen.COMMON_IMPORTS, "",
             codegen.UNPACK, codegen.data_code(data, experiment)]
    if experiment.loss.sparse_targets:
        parts.append(f"Y = np.eye({model.output_size})[Y]  # class indices -> one-hot rows\n")
    parts += [codegen.params_code(params), codegen.plan_code(experiment, data.n), "", codegen.lr_code(experiment)]
    if dropout:
        parts += ["", codegen.dropout_code(experiment)]
    if gelu:
        parts.append("erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf\n")
    if softmax:
        parts.append(textwrap.dedent('''
            def softmax(z):
                e = np.exp(z - np.max(z, axis=-1, keepdims=True))
                return e / np.sum(e, axis=-1, keepdims=True)
            '''))
    parts += ["\n# ---- the model, its loss and the optimizer: every derivative written out ----\n",
              _model_code(model), "", _loss_code(experiment.loss), "", _optimizer_code(experiment.optimizer)]
    masks = (", masks={" + ", ".join(f"{name!r}: dropout_mask({name!r}, step, len(rows), {size}, {rate!r})"
                                     for name, rate, size in dropout) + "}") if dropout else ""
    parts.append(textwrap.dedent(f'''
        # ---- training: the plan's batches, one update per batch ----
        P = {{name: value.copy() for name, value in INIT.items()}}
        state = {{}}
        step = 0
        with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
            for epoch in range(EPOCHS):
                for rows in batches(epoch):
                    out, cache = forward(P, X[rows]{masks})
                    loss, d_out = loss_and_grad(out, Y[rows])
                    update(P, backward(P, cache, d_out), state, lr_at(epoch, step))
                    step += 1
        '''))
    parts.append(codegen.footer_code("P"))
    return "\n".join(parts)
