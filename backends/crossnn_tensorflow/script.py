"""A standalone TensorFlow script for an experiment, written the way TensorFlow's tutorials write a
custom training loop: a tf.Module holding one tf.Variable per parameter with the layers as TF ops, a
@tf.function train_step under a tf.GradientTape, the optimizer's update written with TF ops, and a
loop over `batches(epoch)`. The data, initial parameters, batch order, learning-rate schedule and
dropout masks are crossnn's (crossnn.codegen), so the script ends where crossnn's float64
TensorFlow run ends.

The script keeps the lowering's choices, and says why in comments: the spec's optimizer rules in TF
ops (keras.optimizers' SGD momentum, Adam epsilon, RMSprop/Adagrad epsilon and weight decay
differ), losses in TF ops (keras.losses compute in keras.config.floatx(), float32 unless set, and
clip p instead of clamping log p), and written-out leaky_relu / gelu / softplus where TF's ops round
their constants through float32 or switch formulas at a threshold.
"""

from __future__ import annotations

import keyword
import re

import numpy as np

from crossnn import codegen, spec
from crossnn.data import Dataset
from crossnn.errors import UnsupportedFeature
from crossnn.spec import INPUT, Experiment

COMMAND = "crossnn code {name} --backend tensorflow"

PRELUDE = '''import os

# TF's C++ logging: errors only. It must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

'''

IMPORT_TF = '''

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

# ---- activations the spec writes out (TF's own ops differ) ------------------------------------------

HELPERS = {
    "leaky_relu": '''def leaky_relu(z, slope):
    """z for z > 0, slope * z otherwise. Not tf.nn.leaky_relu: its alpha is a float32 op attribute,
    so in float64 a slope of 0.01 would become 0.009999999776482582."""
    return tf.where(z > 0, z, z * slope)
''',
    "softplus": '''@tf.custom_gradient
def softplus(z):
    """max(z, 0) + log1p(exp(-|z|)), gradient sigmoid(z). Not tf.math.softplus: its kernel switches
    to exp(z) / z beyond a threshold, a few ulps from this; and not the tape's gradient of this
    formula, which would make softplus'(0) = 1 (tf.maximum's gradient) instead of 1/2."""
    value = tf.maximum(z, 0.0) + tf.math.log1p(tf.exp(-tf.abs(z)))
    return value, lambda da: da * (1.0 / (1.0 + tf.exp(-z)))
''',
    "gelu": '''@tf.custom_gradient
def gelu(z):
    """z * Phi(z) = 0.5 z (1 + erf(z / sqrt 2)), gradient Phi(z) + z phi(z). Not tf.nn.gelu: it casts
    its constant 1/sqrt(2) from a Python float through float32, 5e-9 off in float64."""
    cdf = 0.5 * (1.0 + tf.math.erf(z * SQRT_HALF))
    pdf = tf.exp(-0.5 * z * z) * INV_SQRT_2PI
    return z * cdf, lambda da: da * (cdf + z * pdf)
''',
    "gelu_tanh": '''@tf.custom_gradient
def gelu_tanh(z):
    """0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) and its exact derivative. Not
    tf.nn.gelu(approximate=True): it casts 0.044715 through float32."""
    t = tf.math.tanh(SQRT_2_OVER_PI * (z + 0.044715 * z * z * z))
    d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * z * z)
    return 0.5 * z * (1.0 + t), lambda da: da * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * d_inner)
''',
}
GELU_CONSTANTS = ("SQRT_HALF = math.sqrt(0.5)\nSQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)\n"
                  "INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)\n")


def _activation(a: spec.Activation, z: str, used: set[str]) -> str:
    """The expression of activation `a` applied to the expression `z`; helpers it needs go in `used`."""
    if isinstance(a, spec.Linear):
        return z
    simple = {spec.ReLU: "tf.nn.relu", spec.Sigmoid: "tf.nn.sigmoid", spec.Tanh: "tf.math.tanh",
              spec.Softmax: "tf.nn.softmax"}
    if type(a) in simple:
        return f"{simple[type(a)]}({z})"
    if isinstance(a, spec.LeakyReLU):
        used.add("leaky_relu")
        return f"leaky_relu({z}, {a.negative_slope!r})"
    if isinstance(a, spec.Softplus):
        used.add("softplus")
        return f"softplus({z})"
    if isinstance(a, spec.GELU):
        name = "gelu" if a.approximate == "none" else "gelu_tanh"
        used.add(name)
        return f"{name}({z})"
    raise UnsupportedFeature("tensorflow", f"activation '{a.kind}' in a script")


# ---- the model ----------------------------------------------------------------------------------------

RESERVED = {"x", "p", "masks", "self", "tf", "np", "math", "json", "zlib", "io", "base64", "os"} | set(HELPERS)


def _identifier(name: str, taken: set[str]) -> str:
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = "layer_" + ident
    while keyword.iskeyword(ident) or ident in RESERVED or ident in taken:
        ident += "_"
    taken.add(ident)
    return ident


def _model(experiment: Experiment, used: set[str]) -> tuple[str, list[tuple[str, int, float]]]:
    """(the Model class, [(dropout layer, units, rate)])."""
    taken: set[str] = set()
    names = {INPUT: "x"}
    lines, dropouts, summary = [], [], []
    for node in experiment.model.nodes:
        layer, ident = node.layer, _identifier(node.name, taken)
        names[node.name] = ident
        args = [names[i] for i in node.inputs]
        if isinstance(layer, spec.Dense):
            z = f"{args[0]} @ p[{node.name + '/kernel'!r}]"
            if layer.use_bias:
                z += f" + p[{node.name + '/bias'!r}]"
            value = _activation(layer.activation, z, used)
            summary.append(f"{node.name}: dense {node.input_sizes[0]} -> {layer.units}, {layer.activation.kind}")
        elif isinstance(layer, spec.ActivationLayer):
            value = _activation(layer.activation, args[0], used)
            summary.append(f"{node.name}: {layer.activation.kind}")
        elif isinstance(layer, spec.Concatenate):
            value = f"tf.concat([{', '.join(args)}], axis=1)"
            summary.append(f"{node.name}: concatenate {', '.join(node.inputs)}")
        elif isinstance(layer, spec.Dropout):
            value = f"{args[0]} if masks is None else {args[0]} * masks[{node.name!r}]"
            dropouts.append((node.name, node.size, layer.rate))
            summary.append(f"{node.name}: dropout {layer.rate!r} (crossnn's masks)")
        else:
            raise UnsupportedFeature("tensorflow", f"layer type '{layer.kind}' in a script")
        lines.append(f"        {ident} = {value}")
    output = names[experiment.model.layers[-1].name]
    doc = "\n".join(f"        {line}" for line in summary)
    masks_doc = ""
    if dropouts:
        masks_doc = ("\n\n        masks: {dropout layer: its mask} while training (inverted dropout with crossnn's\n"
                     "        masks, which tf.nn.dropout cannot take: it draws its own); None to predict.")
    code = f'''# ---- the model: a tf.Module holding one tf.Variable per parameter ----
class Model(tf.Module):
    """The spec's layers as TF ops; a dense layer computes x @ kernel + bias with the kernel (in, out),
    as keras.layers.Dense stores it (and crossnn's canonical layout)."""

    def __init__(self, init):
        super().__init__()
        # one tf.Variable per parameter, under crossnn's canonical name, in crossnn's order
        self.params = {{name: tf.Variable(value) for name, value in init.items()}}

    def __call__(self, x, masks=None):
        """The model's output for the rows x. Each line is one layer of the spec:

{doc}{masks_doc}"""
        p = self.params
{chr(10).join(lines)}
        return {output}
'''
    return code, dropouts


# ---- the loss -------------------------------------------------------------------------------------------

LOSS_NOTE = ("# ---- the loss, with TF ops (keras.losses would compute it in keras.config.floatx(), float32\n"
             "# unless set) ----\n")


def _loss(s: spec.Loss) -> str:
    if isinstance(s, spec.MSE):
        return LOSS_NOTE + '''def loss_fn(p, y):
    """mean((p - y)^2) over every element; the tape's gradient is 2 (p - y) / n."""
    return tf.reduce_mean(tf.square(p - y))
'''
    if isinstance(s, spec.MAE):
        return LOSS_NOTE + '''def loss_fn(p, y):
    """mean(|p - y|) over every element; the tape's gradient is sign(p - y) / n."""
    return tf.reduce_mean(tf.abs(p - y))
'''
    if isinstance(s, spec.Huber):
        return LOSS_NOTE + f'''DELTA = {s.delta!r}


def loss_fn(p, y):
    """mean(d^2 / 2 where |d| < DELTA, else DELTA (|d| - DELTA / 2)), d = p - y."""
    d = p - y
    ad = tf.abs(d)
    return tf.reduce_mean(tf.where(ad < DELTA, 0.5 * d * d, DELTA * (ad - 0.5 * DELTA)))
'''
    if isinstance(s, spec.BCE):
        return LOSS_NOTE + f'''LOG_MIN = {s.log_min!r}  # the spec's clamp of log p and log(1 - p)
BCE_GRAD_FLOOR = {s.grad_floor!r}  # floor of p (1 - p) in the gradient: float32(1e-12), as torch's BCELoss


@tf.custom_gradient
def bce(p, y):
    """-mean(y max(log p, LOG_MIN) + (1 - y) max(log(1 - p), LOG_MIN)); gradient
    (p - y) / max(p (1 - p), BCE_GRAD_FLOOR) / n. keras.losses.BinaryCrossentropy clips p to
    [1e-7, 1 - 1e-7] instead."""
    log_p = tf.maximum(tf.math.log(p), LOG_MIN)
    log_q = tf.maximum(tf.math.log1p(-p), LOG_MIN)
    value = tf.reduce_mean((y - 1.0) * log_q - y * log_p)

    def grad(upstream):
        n = tf.cast(tf.size(p), p.dtype)
        return upstream * ((p - y) / tf.maximum((1.0 - p) * p, BCE_GRAD_FLOOR) * (1.0 / n)), None

    return value, grad


def loss_fn(p, y):
    return bce(p, y)
'''
    if isinstance(s, spec.BCELogits):
        return LOSS_NOTE + '''@tf.custom_gradient
def bce_logits(z, y):
    """mean of tf.nn.sigmoid_cross_entropy_with_logits (max(z, 0) - z y + log1p(exp(-|z|)));
    gradient (sigmoid(z) - y) / n, exactly 1/2 - y at z = 0."""
    value = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))

    def grad(upstream):
        n = tf.cast(tf.size(z), z.dtype)
        return upstream * ((1.0 / (1.0 + tf.exp(-z)) - y) * (1.0 / n)), None

    return value, grad


def loss_fn(z, y):
    return bce_logits(z, y)
'''
    if isinstance(s, spec.CrossEntropy):
        if s.from_logits and s.sparse:
            return LOSS_NOTE + '''def loss_fn(z, labels):
    """mean over the rows of log sum exp z - z[label], on the logits z and class indices."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z))
'''
        if s.from_logits:
            return LOSS_NOTE + '''def loss_fn(z, y):
    """mean over the rows of -sum_k y log_softmax(z), on the logits z and one-hot rows y."""
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z))
'''
        one_hot = ("\n    y = tf.one_hot(y, tf.shape(p)[1], dtype=p.dtype)  # class indices as one-hot rows"
                   if s.sparse else "")
        return LOSS_NOTE + f'''LOG_MIN = {s.log_min!r}  # the spec's clamp of log p


@tf.custom_gradient
def cross_entropy(p, y):
    """-sum y max(log p, LOG_MIN) / rows on probabilities p; gradient -y / p / rows where log p > LOG_MIN,
    else 0 (the tape's gradient of the clamp would be 0 * (1/0) = NaN at p = 0). Keras'
    CategoricalCrossentropy rescales p to sum to 1 and clips it instead."""{one_hot}
    log_p = tf.math.log(p)
    active = log_p > LOG_MIN
    rows = tf.cast(tf.shape(p)[0], p.dtype)
    value = -tf.reduce_sum(y * tf.where(active, log_p, LOG_MIN)) / rows

    def grad(upstream):
        return upstream * (tf.where(active, -y / tf.where(active, p, 1.0), 0.0) * (1.0 / rows)), None

    return value, grad


def loss_fn(p, y):
    return cross_entropy(p, y)
'''
    raise UnsupportedFeature("tensorflow", f"loss '{s.kind}' in a script")


# ---- the optimizer ----------------------------------------------------------------------------------

CLIP = '''def clip_by_global_norm(grads, clip_norm):
    """Every g <- g * min(1, clip_norm / (norm + 1e-6)), norm the 2-norm of all gradients together:
    torch's clip_grad_norm_, the spec's. tf.clip_by_global_norm has no 1e-6."""
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g in grads]))
    coef = tf.minimum(tf.constant(1.0, norm.dtype), clip_norm / (norm + 1e-6))
    return [g * coef for g in grads]
'''

RULE_NOTES = {
    "sgd": ("SGD as torch.optim.SGD (the spec) writes it: b <- momentum b + g (b starts at 0, so b = g\n"
            "    on the first step), w <- w - lr b. Not keras.optimizers.SGD: it keeps a velocity\n"
            "    v <- momentum v - lr g, w <- w + v, the same only while lr stays constant."),
    "adam": ("Adam as the paper and torch.optim.Adam (the spec) write it: epsilon is added to\n"
             "    sqrt(v_hat), the bias-corrected second moment. Not keras.optimizers.Adam: it adds epsilon to\n"
             "    the uncorrected sqrt(v), in effect epsilon / sqrt(1 - beta2^t) on sqrt(v_hat)."),
    "rmsprop": ("RMSprop as torch.optim.RMSprop (the spec) writes it: g / (sqrt(v) + eps). Not\n"
                "    keras.optimizers.RMSprop: it puts epsilon inside the square root, g / sqrt(v + eps)."),
    "adagrad": ("Adagrad as torch.optim.Adagrad (the spec) writes it: s starts at INITIAL_ACCUMULATOR,\n"
                "    w <- w - lr g / (sqrt(s) + eps). Not keras.optimizers.Adagrad: epsilon inside the square\n"
                "    root, and its accumulator starts at 0.1 unless told otherwise."),
}


def _optimizer(s: spec.Optimizer) -> tuple[str, str]:
    """Constants, the clip helper if needed, and the optimizer class with apply(grads, variables, lr)."""
    consts = []
    body_top = []
    per_var = []
    state = []
    zip_items = ["w", "g"]
    zip_lists = ["variables", "grads"]
    if isinstance(s, spec.SGD):
        name, note = "SGD", RULE_NOTES["sgd"]
        if s.momentum:
            consts.append(f"MOMENTUM = {s.momentum!r}")
            state.append("self.buffers = [tf.Variable(tf.zeros_like(w)) for w in variables]")
            zip_items.append("b")
            zip_lists.append("self.buffers")
            per_var.append("b.assign(b * MOMENTUM + g)")
            per_var.append("w.assign_sub(lr * (g + MOMENTUM * b))  # Nesterov" if s.nesterov
                           else "w.assign_sub(lr * b)")
        else:
            per_var.append("w.assign_sub(lr * g)")
    elif isinstance(s, spec.Adam):
        name, note = ("AdamW" if isinstance(s, spec.AdamW) else "Adam"), RULE_NOTES["adam"]
        consts += [f"BETA1, BETA2, EPS = {s.beta1!r}, {s.beta2!r}, {s.eps!r}"]
        state += ["self.step = tf.Variable(0, dtype=tf.int64)  # t, counted from 1",
                  "self.m = [tf.Variable(tf.zeros_like(w)) for w in variables]",
                  "self.v = [tf.Variable(tf.zeros_like(w)) for w in variables]"]
        body_top += ["t = tf.cast(self.step.assign_add(1), tf.float64)",
                     "step_size = lr / (1.0 - BETA1 ** t)  # lr / (1 - beta1^t): m_hat's correction",
                     "correction2_sqrt = tf.sqrt(1.0 - BETA2 ** t)  # sqrt(1 - beta2^t): v_hat's"]
        zip_items += ["m", "v"]
        zip_lists += ["self.m", "self.v"]
        per_var += ["m.assign(m + (1.0 - BETA1) * (g - m))",
                    "v.assign(v * BETA2 + ((1.0 - BETA2) * g) * g)",
                    "w.assign_add((-step_size * m) / (tf.sqrt(v) / correction2_sqrt + EPS))"]
    elif isinstance(s, spec.RMSprop):
        name, note = "RMSprop", RULE_NOTES["rmsprop"]
        consts.append(f"ALPHA, EPS = {s.alpha!r}, {s.eps!r}")
        state += ["self.step = tf.Variable(0, dtype=tf.int64)",
                  "self.square_avg = [tf.Variable(tf.zeros_like(w)) for w in variables]"]
        body_top.append("self.step.assign_add(1)")
        zip_items.append("v")
        zip_lists.append("self.square_avg")
        per_var.append("v.assign(v * ALPHA + ((1.0 - ALPHA) * g) * g)")
        if s.centered:
            state.append("self.grad_avg = [tf.Variable(tf.zeros_like(w)) for w in variables]")
            zip_items.append("avg")
            zip_lists.append("self.grad_avg")
            per_var += ["avg.assign(avg + (1.0 - ALPHA) * (g - avg))",
                        "a = tf.sqrt(v - avg * avg) + EPS  # centered: the variance of g"]
        else:
            per_var.append("a = tf.sqrt(v) + EPS")
        if s.momentum:
            consts.append(f"MOMENTUM = {s.momentum!r}")
            state.append("self.buffers = [tf.Variable(tf.zeros_like(w)) for w in variables]")
            zip_items.append("b")
            zip_lists.append("self.buffers")
            per_var += ["b.assign(b * MOMENTUM + g / a)", "w.assign_sub(lr * b)"]
        else:
            per_var.append("w.assign_add((-lr * g) / a)")
    elif isinstance(s, spec.Adagrad):
        name, note = "Adagrad", RULE_NOTES["adagrad"]
        consts.append(f"INITIAL_ACCUMULATOR, EPS = {s.initial_accumulator!r}, {s.eps!r}")
        state += ["self.step = tf.Variable(0, dtype=tf.int64)",
                  "self.sum = [tf.Variable(tf.fill(tf.shape(w), tf.constant(INITIAL_ACCUMULATOR, w.dtype)))\n"
                  "                    for w in variables]"]
        body_top.append("self.step.assign_add(1)")
        zip_items.append("s")
        zip_lists.append("self.sum")
        per_var += ["s.assign_add(g * g)", "w.assign_sub(lr * g / (tf.sqrt(s) + EPS))"]
    else:
        raise UnsupportedFeature("tensorflow", f"optimizer '{s.kind}' in a script")

    decay = []
    if s.weight_decay:
        consts.append(f"WEIGHT_DECAY = {s.weight_decay!r}  # {s.weight_decay_kind}")
        if s.weight_decay_kind == "decoupled":
            decay += ["# decoupled decay, before the update (the kind Keras' weight_decay always is)",
                      "w.assign(w * (1.0 - lr * WEIGHT_DECAY))"]
        else:
            decay.append("g = g + WEIGHT_DECAY * w  # L2: torch's weight_decay (Keras' weight_decay is decoupled)")
    clip = []
    if s.clip_norm is not None:
        consts.append(f"CLIP_NORM = {s.clip_norm!r}")
        clip.append("grads = clip_by_global_norm(grads, CLIP_NORM)")

    init = "\n".join(f"        {line}" for line in state) if state else "        pass"
    top = "\n".join(f"        {line}" for line in clip + body_top)
    loop_vars = ", ".join(zip_items)
    loop = f"        for {loop_vars} in zip({', '.join(zip_lists)}):\n" + "\n".join(
        f"            {line}" for line in decay + per_var)
    code = "# ---- the optimizer: the spec's rule with TF ops ----\n" + "\n".join(consts) + "\n\n\n"
    if clip:
        code += CLIP + "\n\n"
    code += f'''class {name}(tf.Module):
    """{note}"""

    def __init__(self, variables):
        super().__init__()
{init}

    def apply(self, grads, variables, lr):
        """One update of every variable from its gradient, with this step's learning rate lr."""
{top + chr(10) if top else ""}{loop}


'''
    return code, name


# ---- the script ---------------------------------------------------------------------------------------


def script(experiment: Experiment, params: dict[str, np.ndarray], data: Dataset) -> str:
    used: set[str] = set()
    model_code, dropouts = _model(experiment, used)
    optimizer_code, optimizer_name = _optimizer(experiment.optimizer)
    data_part = codegen.data_code(data, experiment)
    params_part = codegen.params_code(params)

    imports = codegen.COMMON_IMPORTS
    if used & {"gelu", "gelu_tanh"}:  # its constants
        imports = imports.replace("import json\n", "import json\nimport math\n")
    parts = [codegen.header(experiment, "TensorFlow", COMMAND.format(name=experiment.name)),
             PRELUDE + imports + IMPORT_TF]
    if "unpack(" in data_part or "unpack(" in params_part:
        parts.append(codegen.UNPACK)
    parts += [data_part, params_part, codegen.plan_code(experiment, data.n), codegen.lr_code(experiment)]
    dropout = codegen.dropout_code(experiment)
    if dropout:
        parts.append(dropout)
    if used:
        helpers = "# ---- activations written with TF ops where TF's own differ from the spec ----\n"
        if used & {"gelu", "gelu_tanh"}:
            helpers += GELU_CONSTANTS + "\n\n"
        helpers += "\n\n".join(HELPERS[name] for name in HELPERS if name in used)
        parts.append(helpers)
    parts += [model_code, _loss(experiment.loss), optimizer_code]

    masks_arg = ", masks" if dropouts else ""
    mask_lines = "".join(
        f"        masks[{name!r}] = tf.constant(dropout_mask({name!r}, step, len(rows), {size}, {rate!r}))\n"
        for name, size, rate in dropouts)
    targets = ("# class indices (int64), as the sparse cross-entropy takes them"
               if experiment.loss.sparse_targets else "")
    parts.append(f'''# ---- training: the tutorial's loop, one GradientTape step per batch ----
model = Model(INIT)
variables = list(model.params.values())  # the order the optimizer walks: crossnn's parameter order
optimizer = {optimizer_name}(variables)
X, Y = tf.constant(X), tf.constant(Y){"  " + targets if targets else ""}


@tf.function(reduce_retracing=True)
def train_step(rows, lr{masks_arg}):
    """One step on the samples `rows`: forward pass and loss under a GradientTape, the gradients,
    the update. Returns the loss before the update. lr is a float64 tensor, so a schedule's new
    value does not retrace the function."""
    x, y = tf.gather(X, rows), tf.gather(Y, rows)
    with tf.GradientTape() as tape:
        loss = loss_fn(model(x{masks_arg}), y)
    grads = tape.gradient(loss, variables)
    optimizer.apply(grads, variables, lr)
    return loss


step = 0  # the global step: it picks the learning rate{" and the dropout masks" if dropouts else ""}
for epoch in range(EPOCHS):
    for rows in batches(epoch):
{"        masks = {}" + chr(10) if dropouts else ""}{mask_lines}        lr = tf.constant(lr_at(epoch, step), tf.float64)
        loss = train_step(tf.constant(rows), lr{masks_arg})
        step += 1
    if epoch % max(1, EPOCHS // 10) == 0 or epoch == EPOCHS - 1:
        print(f"epoch {{epoch:5d}}  loss {{float(loss):.6f}}")
''')
    parts.append(codegen.footer_code("{name: v.numpy() for name, v in model.params.items()}"))
    return "\n\n".join(part.strip("\n") + "\n" for part in parts)
