"""A user-defined layer and optimizer, registered from user code without editing crossnn.

Seed 004 writes its own Linear layer (My_Linear: weight and bias drawn from U(±1/√out_features))
and its own momentum SGD. Here they are as crossnn extensions: a spec class for each, then one entry
per backend in that backend's lowering registry (`crossnn_<backend>.ops.OPS.register`), holding the
code that trains it and, optionally, the text an emitted script uses. Run it:

    python examples/custom_layer.py

It trains the circle net with the custom layer and optimizer on every installed backend and checks
float64 parity against the NumPy reference.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import crossnn
from crossnn import spec as S
from crossnn.testing import assert_parity


# ---- 1. the spec: what the layer and the optimizer compute ------------------------------------------

spec_class = dataclasses.dataclass(frozen=True, kw_only=True)  # every spec class is a frozen dataclass


@spec_class
class SeedLinearInit(S.Initializer, kind="seed_linear_uniform"):
    """w ~ U(±1/√units): seed 004's reset_parameters uses 1/√p.shape[0] for both its (out, in) weight
    and its bias, i.e. the number of output units."""

    def sample(self, rng, shape, fan_in, fan_out):
        bound = 1.0 / math.sqrt(fan_out)
        return rng.uniform(-bound, bound, size=shape)


@spec_class
class SeedLinear(S.Layer, kind="seed_linear"):
    """y = x @ W + b, W (in, units), b (units,), both from SeedLinearInit."""

    units: int

    def output_shape(self, input_shapes):
        return (self.units,)

    def matmul_flops(self, input_shapes):
        return 2 * input_shapes[0][-1] * self.units

    def parameters(self, input_shapes):
        fan_in = input_shapes[0][-1]
        init = SeedLinearInit()
        return (S.ParamInit("kernel", (fan_in, self.units), init, fan_in, self.units),
                S.ParamInit("bias", (self.units,), init, fan_in, self.units))


@spec_class
class SeedSGD(S.Optimizer, kind="seed_sgd"):
    """Seed 004's SGD: b = g on the first step, then b ← momentum · b + g; w ← w - lr · b."""

    momentum: float

    def state_slots(self):
        return ("momentum_buffer",)


# ---- 2. one entry per backend ----------------------------------------------------------------------

from crossnn_numpy import ops as numpy_ops  # noqa: E402
from crossnn_numpy.optimizers import Rule as NumpyRule  # noqa: E402


@numpy_ops.OPS.register(SeedLinear)
class NumpySeedLinear(numpy_ops.Op):
    """The reference: forward x @ W + b; backward dW = xᵀ dy, db = Σ dy, dx = dy Wᵀ (pure: new arrays
    out, nothing handed in is written to), and the lines an emitted NumPy script uses."""

    def forward(self, p, inputs, mask=None):
        x = inputs[0]
        return self.xp.matmul(x, p["kernel"]) + p["bias"], x

    def backward(self, p, x, dy, need):
        grads = {"kernel": self.xp.matmul(x.T, dy), "bias": self.xp.sum(dy, axis=0)}
        return (self.xp.matmul(dy, p["kernel"].T) if need[0] else None,), grads

    @staticmethod
    def forward_code(node, ins, out):
        return [f'{out} = {ins[0]} @ P["{node.name}/kernel"] + P["{node.name}/bias"]',
                f"c[{node.name!r}] = {ins[0]}"]

    @staticmethod
    def backward_code(node, d):
        grads = [f'g["{node.name}/kernel"] = c[{node.name!r}].T @ {d}', f'g["{node.name}/bias"] = np.sum({d}, axis=0)']
        return grads, [f'{d} @ P["{node.name}/kernel"].T']


@numpy_ops.OPS.register(SeedSGD)
class NumpySeedSGD(NumpyRule):
    """The rule's direction d (the chain then applies w ← w - lr · d); the buffer starts at zero, so
    the first step's momentum · 0 + g is exactly g."""

    def update(self, u, state, params):
        buffers = [self.s.momentum * b + g for b, g in zip(state["momentum_buffer"], u)]
        return buffers, {**state, "momentum_buffer": buffers}

    def code(self):
        return [f'u = state["momentum_buffer"][name] = {self.s.momentum!r} * state["momentum_buffer"][name] + u']


if importlib.util.find_spec("torch"):
    import torch
    from crossnn_torch.ops import LINEAR_WEIGHT, OPS as TORCH_OPS, LayerOp, Mod, Param
    from crossnn_torch.optimizers import Rule as TorchRule
    from torch import nn

    class My_Linear(nn.Module):  # noqa: N801  (seed 004's name)
        """Seed 004's layer: x @ weightᵀ + bias with weight (out, in); crossnn copies the spec's
        initial values in, transposing the kernel."""

        def __init__(self, node, dtype=None, device=None):
            super().__init__()
            in_f, out_f = node.input_shapes[0][-1], node.layer.units
            self.weight = nn.Parameter(torch.empty(out_f, in_f, dtype=dtype, device=device))
            self.bias = nn.Parameter(torch.empty(out_f, dtype=dtype, device=device))

        def forward(self, x):
            return x @ self.weight.t() + self.bias

    @TORCH_OPS.register(SeedLinear)
    class TorchSeedLinear(LayerOp):
        """The module (built with the run's dtype and device) and where each canonical parameter lives:
        the kernel is My_Linear's weight, transposed."""

        @staticmethod
        def modules(node, native):
            return [Mod(My_Linear, (node,), factory=True)]

        @staticmethod
        def params(node):
            return {"kernel": Param(0, "weight", LINEAR_WEIGHT), "bias": Param(0, "bias")}

    class SeedTorchSGD(torch.optim.Optimizer):
        """Seed 004's optimizer, as it writes it (momentum buffer cloned from the first gradient)."""

        def __init__(self, params, lr, momentum):
            super().__init__(params, dict(lr=lr, momentum=momentum))

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = torch.clone(p.grad)
                    else:
                        buf = state["momentum_buffer"]
                        buf.mul_(group["momentum"]).add_(p.grad)
                    p.add_(buf, alpha=-group["lr"])

    TORCH_OPS.register(SeedSGD)(lambda s, native: TorchRule(SeedTorchSGD, {"lr": s.lr, "momentum": s.momentum}))


if importlib.util.find_spec("tensorflow"):
    from crossnn_tensorflow.device import import_tensorflow

    tf = import_tensorflow()  # `import tensorflow as tf`, with TF's C++ start-up notices kept off the terminal
    from crossnn_tensorflow.ops import OPS as TF_OPS
    from crossnn_tensorflow.ops import Op as TfOp
    from crossnn_tensorflow.optimizers import Rule as TfRule

    @TF_OPS.register(SeedLinear)
    class TfSeedLinear(TfOp):
        """A TF op on the layer's tf.Variables (self.params: short name -> variable, canonical layout);
        tf.GradientTape differentiates it."""

        def __call__(self, inputs, mask=None):
            return tf.matmul(inputs[0], self.params["kernel"]) + self.params["bias"]

    @TF_OPS.register(SeedSGD)
    class TfSeedSGD(TfRule):
        """The direction d (the chain then does w ← w - lr · d), the buffer a slot variable."""

        def direction(self, i, w, g, scalars):
            b = self.slot_variables["momentum_buffer"][i]
            b_t = self.s.momentum * b + g
            b.assign(b_t)
            return b_t


if importlib.util.find_spec("jax"):
    import optax
    from crossnn_jax import ops as jax_ops
    from crossnn_jax.optimizers import Stage

    @jax_ops.OPS.register(SeedLinear)
    class JaxSeedLinear(jax_ops.Layer):
        """jax.numpy forward code (jax.grad differentiates it) and its script line."""

        def __call__(self, p, inputs, mask=None):
            return inputs[0] @ p["kernel"] + p["bias"]

        def code(self, ins, out):
            return [f'{out} = {ins[0]} @ params["{self.node.name}/kernel"] + params["{self.node.name}/bias"]']

    # optax's trace is this momentum rule; its state field `trace` is crossnn's momentum_buffer
    jax_ops.OPS.register(SeedSGD)(lambda s, native: [Stage(optax.trace, {"decay": s.momentum},
                                                          slots=(("momentum_buffer", "trace"),))])


# ---- 3. use them like built-ins ---------------------------------------------------------------------

def experiment() -> S.Experiment:
    circle = crossnn.example("circle")
    model = S.Model(inputs=2, layers=(SeedLinear(name="fc1", units=5),
                                      S.ActivationLayer(name="s1", activation=S.Sigmoid()),
                                      SeedLinear(name="fc2", units=1),
                                      S.ActivationLayer(name="s2", activation=S.Sigmoid())))
    return dataclasses.replace(circle, name="circle-seed-layers", model=model, optimizer=SeedSGD(lr=0.5, momentum=0.8),
                               train=S.Train(epochs=100, batch_size=100, metrics=("accuracy",)))


if __name__ == "__main__":
    result = assert_parity(experiment(), dtypes=["float64"])  # raises ParityError if any backend disagrees
    for record in result.records:
        print(f"{record.spec.label:<32} accuracy {record.metrics['accuracy']:.4f}  parity ok")
    print("final fc2/bias:", [round(float(v), 8) for v in result.reference.final_params["fc2/bias"]])
