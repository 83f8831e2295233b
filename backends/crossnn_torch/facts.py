"""Measured facts of the installed torch, the ones the catalog of framework differences
(crossnn.differences) checks: defaults read from signatures and modules, and formulas run on fixed
inputs. Every value is plain Python (JSON-serialisable). torch's global RNG is left as it was."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
import warnings

import torch
from torch import nn

#: run in a fresh interpreter: the TF32 switches before anything (crossnn's prepare()) changes them
TF32_PROBE = ("import json, torch; print(json.dumps({'matmul': bool(torch.backends.cuda.matmul.allow_tf32), "
              "'cudnn': bool(torch.backends.cudnn.allow_tf32)}))")

F64 = torch.float64


def _default(cls, name):
    """The signature default of `name` in cls.__init__, or None where the argument is required."""
    default = inspect.signature(cls).parameters[name].default
    return None if default is inspect.Parameter.empty else default


def _one_step(optimizer_class, w0: float, grad: float, **options) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    w = torch.tensor([w0], dtype=F64, requires_grad=True)
    optimizer = optimizer_class([w], **options)
    w.grad = torch.tensor([grad], dtype=F64)
    optimizer.step()
    return w, optimizer


def _momentum() -> dict[str, float]:
    w, optimizer = _one_step(torch.optim.SGD, 1.0, 2.0, lr=0.1, momentum=0.9)
    out = {"w": w.item(), "buffer": optimizer.state[w]["momentum_buffer"].item()}
    for group in optimizer.param_groups:
        group["lr"] = 0.01
    w.grad = torch.tensor([2.0], dtype=F64)
    optimizer.step()
    out["w2"] = w.item()
    return out


def _mse_broadcast() -> dict[str, object]:
    p = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    y = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = nn.MSELoss()(p, y).item()
    return {"value": value, "correct": 0.0, "warned": any(issubclass(w.category, UserWarning) for w in caught)}


def _batchnorm() -> dict[str, object]:
    bn = nn.BatchNorm1d(2, dtype=F64)
    bn.train()
    with torch.no_grad():
        bn(torch.tensor([[1.0, 2.0], [3.0, 5.0], [6.0, 11.0]], dtype=F64))
    return {"momentum": bn.momentum, "eps": bn.eps, "running_mean": bn.running_mean.tolist(),
            "running_var": bn.running_var.tolist()}


def _batchnorm_running_var() -> dict[str, object]:
    """nn.BatchNorm1d(1) after one training step on [1, 2, 4, 9] (from running_var 1): the running
    variance against the batch's biased σ² and unbiased σ² m / (m - 1) moved by torch's momentum, and
    which of the two normalized the output."""
    bn = nn.BatchNorm1d(1, dtype=F64)
    x = torch.tensor([[1.0], [2.0], [4.0], [9.0]], dtype=F64)
    with torch.no_grad():
        y = bn(x)[:, 0]
    values = x[:, 0]
    biased, unbiased = values.var(correction=0).item(), values.var(correction=1).item()
    centered = values - values.mean()

    def moved(var):
        return (1.0 - bn.momentum) * 1.0 + bn.momentum * var

    normalized = {name: float(torch.max(torch.abs(y - centered / torch.sqrt(torch.tensor(v + bn.eps, dtype=F64)))))
                  for name, v in (("biased", biased), ("unbiased", unbiased))}
    return {"running_var": bn.running_var.item(), "if_biased": moved(biased), "if_unbiased": moved(unbiased),
            "batch_weight": bn.momentum, "running_mean": bn.running_mean.item(), "batch_mean": values.mean().item(),
            "normalized_with": min(normalized, key=normalized.get)}


def _embedding_init() -> dict[str, float]:
    """Mean and standard deviation of nn.Embedding(1000, 100)'s default table (seed 0): N(0, 1)."""
    table = nn.Embedding(1000, 100, dtype=F64).weight.detach()
    return {"mean": table.mean().item(), "std": table.std().item(), "max_abs": table.abs().max().item()}


def _lstm_init() -> dict[str, object]:
    """nn.LSTM(8, 16)'s default parameters (seed 0): names and shapes (two biases), the largest |value|
    against 1/√hidden, and the forget gate's bias (rows 16..31 of bias_ih_l0: drawn like the rest,
    not set to 1)."""
    lstm = nn.LSTM(8, 16)
    params = dict(lstm.named_parameters())
    forget = params["bias_ih_l0"][16:32].detach()
    return {"parameters": {name: list(p.shape) for name, p in params.items()},
            "max_abs": max(p.abs().max().item() for p in params.values()), "bound": 1.0 / math.sqrt(16),
            "forget_bias_range": [forget.min().item(), forget.max().item()]}


def _saturated(module, states, blocks: int) -> list[list[float]]:
    """The state after one step of a recurrent module with one unit and zero weights, from `states`,
    on x = 0, with each gate block's input bias in turn at +30 (that gate saturated)."""
    out = []
    for k in range(blocks):
        with torch.no_grad():
            for p in module.parameters():
                p.zero_()
            module.bias_ih_l0[k] = 30.0
            _, state = module(torch.zeros(1, 1, 1, dtype=F64), states)
        out.append([s.item() for s in (state if isinstance(state, tuple) else (state,))])
    return out


def _gru_gate_order() -> dict[str, object]:
    """nn.GRU(1, 1) from h = 0.5 on x = 0 with zero weights: r = z = 1/2 and n = 0 give h' = 0.25;
    a saturated z keeps h (0.5), a saturated n gives 0.5 + 0.25 = 0.75, a saturated r changes nothing
    (its product b_hn is 0). The blocks named by the effect each one has."""
    gru = nn.GRU(1, 1, dtype=F64)
    h = _saturated(gru, torch.full((1, 1, 1), 0.5, dtype=F64), 3)
    names = ["z" if abs(v - 0.5) < 1e-6 else "n" if abs(v - 0.75) < 1e-6 else "r" if abs(v - 0.25) < 1e-6 else "?"
             for (v,) in h]
    return {"blocks": names, "h_when_block_saturated": [v for (v,) in h]}


def _lstm_gate_order() -> dict[str, object]:
    """nn.LSTM(1, 1) from h = 0, c = 0.5 on x = 0 with zero weights: i = f = o = 1/2, g = 0 give c' =
    0.25; a saturated f keeps c (0.5), a saturated g adds 0.5 (0.75), a saturated o leaves c' and makes
    h' = tanh(0.25), a saturated i changes nothing (g = 0). The blocks named by their effect."""
    lstm = nn.LSTM(1, 1, dtype=F64)
    states = (torch.zeros(1, 1, 1, dtype=F64), torch.full((1, 1, 1), 0.5, dtype=F64))
    hc = _saturated(lstm, states, 4)
    base_h = 0.5 * math.tanh(0.25)

    def name(h, c):
        if abs(c - 0.5) < 1e-6:
            return "f"
        if abs(c - 0.75) < 1e-6:
            return "g"
        if abs(c - 0.25) < 1e-6:
            return "o" if abs(h - math.tanh(0.25)) < 1e-6 else "i" if abs(h - base_h) < 1e-6 else "?"
        return "?"

    return {"blocks": [name(h, c) for h, c in hc], "h_c_when_block_saturated": hc}


def _gru_reset_after() -> dict[str, float]:
    """Where nn.GRU applies the reset gate r: one unit, h = 0.5, x = 0, W_hn = b_hn = 1, r = 1/2, z = 0
    (its bias at -30): n = tanh(r (W_hn h + b_hn)) = tanh(0.75) after the product (Keras' reset_after,
    cuDNN's form), tanh(W_hn (r h) + b_hn) = tanh(1.25) before it."""
    order = _gru_gate_order()["blocks"]
    gru = nn.GRU(1, 1, dtype=F64)
    with torch.no_grad():
        for p in gru.parameters():
            p.zero_()
        gru.bias_ih_l0[order.index("z")] = -30.0
        gru.weight_hh_l0[order.index("n"), 0] = 1.0
        gru.bias_hh_l0[order.index("n")] = 1.0
        _, h = gru(torch.zeros(1, 1, 1, dtype=F64), torch.full((1, 1, 1), 0.5, dtype=F64))
    return {"h": h.item(), "reset_after": math.tanh(0.75), "reset_before": math.tanh(1.25)}


def _tf32() -> dict[str, object]:
    try:
        done = subprocess.run([sys.executable, "-c", TF32_PROBE], capture_output=True, text=True, timeout=120,
                              check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as err:
        return {"matmul": None, "cudnn": None, "error": f"{type(err).__name__}: {err}"}


def _conv_init() -> dict[str, object]:
    """nn.Conv2d(8, 16, (3, 3))'s default draw (seed 0) against 1/√(in·kh·kw)."""
    conv = nn.Conv2d(8, 16, (3, 3))
    return {"weight_max_abs": conv.weight.abs().max().item(), "bias_max_abs": conv.bias.abs().max().item(),
            "bound": 1.0 / math.sqrt(8 * 3 * 3), "bias_all_zero": bool(torch.all(conv.bias == 0).item())}


def _raises(make) -> dict[str, object]:
    try:
        make()
    except Exception as err:  # whatever torch raises is the fact
        return {"raised": type(err).__name__, "message": str(err)}
    return {"raised": None, "message": ""}


def _window_rows(conv: nn.Conv2d, x: torch.Tensor) -> list[float]:
    """The row each window of a (k, 1) convolution whose weight picks its first row starts at, on an
    input whose rows hold their index + 1 (so a padded row reads -1)."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
        return [v - 1.0 for v in conv(x).flatten().tolist()]


def _same_padding_stride2() -> dict[str, object]:
    """H = 8, k = 3, stride 2: torch's usual symmetric padding=1 against crossnn's (TensorFlow's)
    'same', which pads one row after only (nn.ZeroPad2d((0, 0, 0, 1)) then padding 0)."""
    x = (torch.arange(8, dtype=F64) + 1.0).reshape(1, 1, 8, 1)
    symmetric = nn.Conv2d(1, 1, (3, 1), stride=(2, 1), padding=(1, 0), bias=False, dtype=F64)
    same = nn.Conv2d(1, 1, (3, 1), stride=(2, 1), bias=False, dtype=F64)
    return {"torch_padding_1": _window_rows(symmetric, x),
            "same": _window_rows(same, nn.functional.pad(x, (0, 0, 0, 1)))}


def _same_even_kernel() -> list[float]:
    """torch's padding='same' (stride 1) with a kernel of 2 rows on 4 rows: where the windows start
    (0 first: the extra padded row goes after, as in crossnn's rule)."""
    x = (torch.arange(4, dtype=F64) + 1.0).reshape(1, 1, 4, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "padding='same' with even kernel lengths ... may require a copy"
        return _window_rows(nn.Conv2d(1, 1, (2, 1), padding="same", bias=False, dtype=F64), x)


def _flatten_order() -> dict[str, list[float]]:
    """nn.Flatten of an NCHW arange (C=3, H=2, W=2) against crossnn's (H, W, C) order of the same image."""
    x = torch.arange(12, dtype=F64).reshape(1, 3, 2, 2)
    return {"nn_flatten": nn.Flatten()(x)[0].tolist(), "channels_last": x.permute(0, 2, 3, 1).flatten(1)[0].tolist()}


def _max_pool_tie() -> list[list[float]]:
    """The gradient of nn.MaxPool2d(2) on a 2×2 window of equal values: which element gets it."""
    x = torch.ones(1, 1, 2, 2, dtype=F64, requires_grad=True)
    nn.MaxPool2d(2)(x).sum().backward()
    return x.grad[0, 0].tolist()


def facts() -> dict[str, object]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        linear = nn.Linear(100, 50)
        linear_init = {"weight_max_abs": linear.weight.abs().max().item(),
                       "bias_max_abs": linear.bias.abs().max().item(),
                       "bound": 1.0 / math.sqrt(100), "bias_all_zero": bool(torch.all(linear.bias == 0).item())}
        torch.manual_seed(0)
        random_seed0 = torch.rand(3, dtype=F64).tolist()
        torch.manual_seed(0)
        conv_init = _conv_init()
        torch.manual_seed(0)
        embedding_init = _embedding_init()
        torch.manual_seed(0)
        lstm_init = _lstm_init()

    adam_w, _ = _one_step(torch.optim.Adam, 1.0, 0.0, lr=0.1, weight_decay=0.1)
    adamw_w, _ = _one_step(torch.optim.AdamW, 1.0, 0.0, lr=0.1, weight_decay=0.1)

    z = torch.tensor([[2.0, 1.0, 0.1]], dtype=F64)
    label = torch.tensor([0])
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    zeros = torch.zeros(2, 2, dtype=F64)

    gradient = torch.zeros(2, dtype=F64, requires_grad=True)
    gradient.grad = torch.tensor([3.0, 4.0], dtype=F64)
    nn.utils.clip_grad_norm_([gradient], max_norm=5.0)

    return {
        "linear_weight_shape": list(nn.Linear(3, 2).weight.shape),
        "linear_init": linear_init,
        "default_lr": {cls.__name__: _default(cls, "lr") for cls in (torch.optim.SGD, torch.optim.Adam,
                                                                     torch.optim.RMSprop, torch.optim.Adagrad)},
        "adam_eps": _default(torch.optim.Adam, "eps"),
        "rmsprop_defaults": {"alpha": _default(torch.optim.RMSprop, "alpha"),
                             "eps": _default(torch.optim.RMSprop, "eps")},
        "adagrad_defaults": {"initial_accumulator_value": _default(torch.optim.Adagrad, "initial_accumulator_value"),
                             "eps": _default(torch.optim.Adagrad, "eps")},
        "adam_weight_decay_step": adam_w.item(),
        "adamw_weight_decay_step": adamw_w.item(),
        "momentum_first_step": _momentum(),
        "bce_p0_y1": nn.BCELoss()(torch.tensor([0.0]), torch.tensor([1.0])).item(),
        "bce_logit_input": nn.BCELoss()(torch.sigmoid(torch.tensor([-50.0], dtype=torch.float32)),
                                        torch.tensor([1.0], dtype=torch.float32)).item(),
        "ce_on_probabilities": nn.CrossEntropyLoss()(torch.softmax(z, dim=1), label).item(),
        "ce_on_logits": nn.CrossEntropyLoss()(z, label).item(),
        "mse_sum": nn.MSELoss(reduction="sum")(p, zeros).item(),
        "mse_mean": nn.MSELoss(reduction="mean")(p, zeros).item(),
        "mse_broadcast": _mse_broadcast(),
        "leaky_relu_default": nn.LeakyReLU().negative_slope,
        "gelu_default": nn.GELU().approximate,
        "softplus_25": {"torch": float(nn.Softplus()(torch.tensor(25.0, dtype=F64))),
                        "exact": math.log1p(math.exp(25.0))},
        "batchnorm": _batchnorm(),
        "tf32": _tf32(),
        "random_seed0": random_seed0,
        "clip_at_max_norm": gradient.grad.tolist(),
        "conv_weight_shape": list(nn.Conv2d(2, 3, (4, 5)).weight.shape),
        "conv_init": conv_init,
        "conv_same_stride2": _raises(lambda: nn.Conv2d(2, 3, 3, stride=2, padding="same")),
        "same_padding_stride2": _same_padding_stride2(),
        "conv_same_even_kernel": _same_even_kernel(),
        "avgpool_count_include_pad": _default(nn.AvgPool2d, "count_include_pad"),
        "flatten_order": _flatten_order(),
        "max_pool_tie_gradient": _max_pool_tie(),
        "batchnorm2d_defaults": {"momentum": nn.BatchNorm2d(1).momentum, "eps": nn.BatchNorm2d(1).eps},
        "batchnorm_running_var": _batchnorm_running_var(),
        "layernorm_eps": nn.LayerNorm(4).eps,
        "embedding_init": embedding_init,
        "lstm_init": lstm_init,
        "lstm_gate_order": _lstm_gate_order(),
        "gru_gate_order": _gru_gate_order(),
        "gru_reset_after": _gru_reset_after(),
    }
