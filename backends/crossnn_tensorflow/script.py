"""A standalone TensorFlow script for an experiment, written the way TensorFlow's tutorials write a
custom training loop: a tf.Module holding one tf.Variable per parameter with the layers as TF ops, a
@tf.function train_step under a tf.GradientTape, the optimizer's update written with TF ops, and a
loop over `batches(epoch)`. Every line of the model, the loss and the optimizer comes from the
registry entry of the spec class it lowers (crossnn_tensorflow.ops, crossnn_tensorflow.optimizers);
the data, initial parameters, batch order, learning-rate schedule and dropout masks are crossnn's
(crossnn.codegen), so the script ends where crossnn's float64 TensorFlow run ends.
"""

from __future__ import annotations

import keyword
import re

from crossnn import codegen
from crossnn import spec as S
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT

from crossnn_tensorflow import ops, optimizers


IMPORT_TF = '''# TF's C++ logging: errors only. It must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow():
    """TensorFlow, imported with its start-up notices kept off the terminal: the oneDNN notice is
    printed on stderr before TF's logging starts, so TF_CPP_MIN_LOG_LEVEL cannot stop it."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tensorflow


tf = import_tensorflow()
tf.config.experimental.enable_op_determinism()  # as crossnn's parity runs: the same bits every run
'''

#: names the model's code uses for itself (never a layer's variable)
RESERVED = {"x", "p", "z", "masks", "self", "tf", "np", "math", "json", "zlib", "io", "base64", "os"} | set(
    ops.SCRIPT_HELPERS)


def _identifier(name: str, taken: set[str]) -> str:
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = "layer_" + ident
    while keyword.iskeyword(ident) or ident in RESERVED or ident in taken:
        ident += "_"
    taken.add(ident)
    return ident


def _model_code(model: S.Model, dropout: bool) -> tuple[str, set[str]]:
    """The Model class, and the script helpers its layers call. A model with state (batch_norm) is
    called with `training`."""
    taken: set[str] = set()
    names = {INPUT: "x"}
    lines, summary, helpers = [], [], set()
    for node in model.nodes:
        entry = ops.OPS.lookup(node.layer, "in a script")
        if not hasattr(entry, "forward_code"):
            raise UnsupportedFeature("tensorflow", f"layer '{node.layer.kind}' in a script (no forward_code)")
        ident = _identifier(node.name, taken)
        statements, value = entry.forward_code(node, [names[i] for i in node.inputs])
        lines += statements + [f"{ident} = {value}"]
        names[node.name] = ident
        helpers |= entry.helpers(node)
        shapes = ", ".join(str(list(shape)) for shape in node.input_shapes)
        summary.append(f"{node.name}: {node.layer.kind} {shapes} -> {list(node.shape)}")
    doc = "\n".join(f"        {line}" for line in summary)
    if any(getattr(node.layer, "padding", None) == "same" for node in model.nodes):
        doc += ("\n\n        padding=\"SAME\" is TensorFlow's rule, which is the spec's: the extra row or column of\n"
                "        padding goes after (bottom, right).")
    masks_doc = ""
    if dropout:
        masks_doc = ("\n\n        masks: {dropout layer: its mask} while training (inverted dropout with crossnn's\n"
                     "        masks, which tf.nn.dropout cannot take: it draws its own); None to predict.")
    stateful = bool(model.state_inits())
    training_doc = ("\n\n        training: batch_norm uses the batch's statistics and moves its moving statistics\n"
                    "        (tf.Variables the optimizer does not train); predicting, it uses the moving ones."
                    if stateful else "")
    body = "\n".join(f"        {line}" for line in lines)
    return f'''# ---- the model: a tf.Module holding one tf.Variable per parameter ----
class Model(tf.Module):
    """The spec's layers as TF ops on NHWC tensors; kernels as Keras keeps them (and crossnn's canonical
    layout): a dense kernel (in, out), a conv kernel (kh, kw, in, out)."""

    def __init__(self, init):
        super().__init__()
        # one tf.Variable per {"parameter and moving statistic" if stateful else "parameter"}, under crossnn's
        # canonical name, in crossnn's order
        self.params = {{name: tf.Variable(value) for name, value in init.items()}}

    def __call__(self, x, masks=None{", training=False" if stateful else ""}):
        """The model's output for the rows x. Layer by layer (input shapes -> output shape, batch
        excluded):

{doc}{masks_doc}{training_doc}"""
        p = self.params
{body}
        return {names[model.layers[-1].name]}
''', helpers


def script(experiment: S.Experiment, params, data, side_file: str | None = None) -> str:
    model = experiment.model
    dropout = codegen.dropout_layers(experiment)
    model_code, helpers = _model_code(model, bool(dropout))
    loss_code = getattr(ops.loss(experiment.loss), "code", None)
    if loss_code is None:
        raise UnsupportedFeature("tensorflow", f"loss '{experiment.loss.kind}' in a script (its entry has no code)")
    optimizer_code = optimizers.script_code(experiment.optimizer)
    written = model_code + loss_code + optimizer_code + "".join(ops.SCRIPT_HELPERS[h] for h in helpers)
    used = codegen.script_imports(experiment, data, params, side_file) + ["os"]
    if "math." in written:
        used.append("math")
    parts = [codegen.header(experiment, "TensorFlow", "tensorflow"),
             codegen.imports(*used, "numpy as np"), IMPORT_TF]
    if helpers:
        parts.append("# ---- helpers in TF ops: activations where TF's own differ from the spec, normalization, "
                     "recurrent layers ----\n"
                     + "\n\n".join(ops.SCRIPT_HELPERS[name] for name in ops.SCRIPT_HELPERS if name in helpers))
    parts += [model_code, loss_code, optimizer_code, codegen.plan_code(experiment, data.n),
              codegen.lr_code(experiment), codegen.dropout_code(experiment)]

    masks_arg = ", masks" if dropout else ""
    stateful = bool(model.state_inits())
    call = f"model(x{masks_arg}{', training=True' if stateful else ''})"
    if stateful:
        trained = ("    variables = [model.params[name] for name in "
                   f"{list(model.parameter_inits())!r}]  # the trained parameters, crossnn's order (the moving "
                   "statistics are not trained)")
    else:
        trained = ("    variables = list(model.params.values())  # the order the optimizer walks: crossnn's "
                   "parameter order")
    sparse_rows = any(isinstance(node.layer, S.Embedding) for node in model.nodes)
    main = ["def main():", f"    {codegen.LOAD}",
            "    # ---- training: the tutorial's loop, one GradientTape step per batch ----",
            "    model = Model(INIT)",
            trained,
            "    optimizer = Optimizer(variables)",
            "    X, Y = tf.constant(X), tf.constant(Y)" + ("  # class indices (int64), as the sparse cross-entropy "
                                                          "takes them" if experiment.loss.sparse_targets else ""),
            "",
            "    @tf.function(reduce_retracing=True)",
            f"    def train_step(rows, lr{masks_arg}):",
            '        """One step on the samples `rows`: forward pass and loss under a GradientTape, the gradients,',
            "        the update. Returns the loss before the update. lr is a float64 tensor, so a schedule's new",
            '        value does not retrace the function."""',
            "        x, y = tf.gather(X, rows), tf.gather(Y, rows)",
            "        with tf.GradientTape() as tape:",
            f"            loss = loss_fn({call}, y)",
            "        grads = tape.gradient(loss, variables)",
            *(["        # an embedding's gradient is a tf.IndexedSlices of the rows read: dense (each id's rows",
               "        # summed), as the update takes it",
               "        grads = [tf.convert_to_tensor(g) for g in grads]"] if sparse_rows else []),
            "        optimizer.apply(grads, variables, lr)",
            "        return loss",
            "",
            f"    step = 0  # the global step: it picks the learning rate{' and the dropout masks' if dropout else ''}",
            "    for epoch in range(EPOCHS):",
            "        for rows in batches(epoch):"]
    if dropout:
        main.append("            masks = {" + ", ".join(
            f"{name!r}: tf.constant(dropout_mask({name!r}, step, len(rows), {shape}, {rate!r}))"
            for name, shape, rate in dropout) + "}")
    main += ["            lr = tf.constant(lr_at(epoch, step), tf.float64)",
             f"            loss = train_step(tf.constant(rows), lr{masks_arg})",
             "            step += 1",
             "        if epoch % max(1, EPOCHS // 10) == 0 or epoch == EPOCHS - 1:",
             '            print(f"epoch {epoch:5d}  loss {float(loss):.6f}")']
    parts.append("\n".join(main) + "\n" + codegen.footer_code("{name: v.numpy() for name, v in model.params.items()}"))
    parts += [codegen.data_code(experiment, data, params, side_file), codegen.MAIN_GUARD]
    return codegen.join(parts)
