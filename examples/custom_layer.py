"""A user-defined layer and optimizer, registered from user code without editing crossnn.

Seed 004 writes its own Linear layer (My_Linear: weight and bias drawn from U(±1/√out_features))
and its own momentum SGD. Here they are as crossnn extensions: a spec class for each, then one
lowering per backend, registered with the backends' `register` decorators. Run it:

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

    def output_size(self, input_sizes):
        return self.units

    def matmul_flops(self, input_sizes):
        return 2 * input_sizes[0] * self.units

    def parameters(self, input_sizes):
        (fan_in,) = input_sizes
        init = SeedLinearInit()
        return (S.ParamInit("kernel", (fan_in, self.units), init, fan_in, self.units),
                S.ParamInit("bias", (self.units,), init, fan_in, self.units))


@spec_class
class SeedSGD(S.Optimizer, kind="seed_sgd"):
    """Seed 004's SGD: b = g on the first step, then b ← momentum · b + g; w ← w - lr · b."""

    momentum: float

    def state_slots(self):
        return ("momentum_buffer",)


# ---- 2. one lowering per backend ---------------------------------------------------------------------

import numpy as np  # noqa: E402
from crossnn_numpy import layers as numpy_layers  # noqa: E402
from crossnn_numpy import optimizers as numpy_optimizers  # noqa: E402


@numpy_layers.register(SeedLinear)
class NumpySeedLinear:
    """Forward x @ W + b; backward dW = xᵀ dy, db = Σ dy, dx = dy Wᵀ."""

    def __init__(self, node, index, xp):
        self.kernel, self.bias, self.xp = index[f"{node.name}/kernel"], index[f"{node.name}/bias"], xp

    def forward(self, values, inputs):
        x = inputs[0]
        return x @ values[self.kernel] + values[self.bias], x

    def backward(self, values, x, dy, grads, need_input_grads):
        self.xp.matmul(x.T, dy, out=grads[self.kernel])
        self.xp.sum(dy, axis=0, out=grads[self.bias])
        return (dy @ values[self.kernel].T,) if need_input_grads else (None,)


@numpy_optimizers.register(SeedSGD)
class NumpySeedSGD(numpy_optimizers.Rule):
    def apply(self, i, w, g, state, lr):
        buffers = state["momentum_buffer"]
        if buffers[i] is None:
            buffers[i] = self.xp.copy(g)
        else:
            buffers[i] *= self.s.momentum
            buffers[i] += g
        self.xp.subtract_scaled(w, lr, buffers[i])


if importlib.util.find_spec("torch"):
    import torch
    from torch import nn
    from crossnn_torch import layers as torch_layers
    from crossnn_torch import optimizers as torch_optimizers

    @torch_layers.register(SeedLinear, params={"kernel": "weight.T", "bias": "bias"})
    class My_Linear(nn.Module):  # noqa: N801  (seed 004's name)
        """Seed 004's layer: x @ weightᵀ + bias with weight (out, in); crossnn copies the spec's
        initial values in, transposing the kernel."""

        def __init__(self, node, dtype=None, device=None):
            super().__init__()
            (in_f,) = node.input_sizes
            out_f = node.layer.units
            self.weight = nn.Parameter(torch.empty(out_f, in_f, dtype=dtype, device=device))
            self.bias = nn.Parameter(torch.empty(out_f, dtype=dtype, device=device))

        def forward(self, x):
            return x @ self.weight.t() + self.bias

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

    @torch_optimizers.register(SeedSGD)
    def seed_sgd(s, params):
        return SeedTorchSGD(params, lr=s.lr, momentum=s.momentum)


if importlib.util.find_spec("tensorflow"):
    from crossnn_tensorflow.device import import_tensorflow

    tf = import_tensorflow()  # `import tensorflow as tf`, with TF's C++ start-up notices kept off the terminal
    from crossnn_tensorflow import layers as tf_layers
    from crossnn_tensorflow import optimizers as tf_optimizers

    @tf_layers.register(SeedLinear)
    class TfSeedLinear(tf.Module):
        def __init__(self, node, variables):
            super().__init__()
            self.w, self.b = variables[f"{node.name}/kernel"], variables[f"{node.name}/bias"]

        def __call__(self, inputs):
            return tf.matmul(inputs[0], self.w) + self.b

    @tf_optimizers.register(SeedSGD)
    class TfSeedSGD(tf_optimizers.Rule):
        """The buffer starts at zero, so the first step's momentum · 0 + g is exactly g."""

        def create(self, variables):
            self.buffers = self.slot("momentum_buffer", variables)

        def update(self, i, w, g, lr):
            b = self.buffers[i]
            b.assign(self.s.momentum * b + g)
            w.assign_sub(tf.cast(lr, w.dtype) * b)


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
    print("final fc2/bias:", np.round(result.reference.final_params["fc2/bias"], 8))
