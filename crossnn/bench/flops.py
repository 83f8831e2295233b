"""FLOPs of a training step, counted from the spec (matrix multiplies and convolutions only, as benchmark studies do).

For a layer whose forward pass costs F per sample, a step on B samples costs B·F forward, B·F for
the parameter gradient (e.g. dW = xᵀ dz) and B·F for the input gradient (dx = dz Wᵀ) — the last
only when a layer upstream has parameters that need it.
"""

from __future__ import annotations

from crossnn.spec import INPUT, Model


def training_flops(model: Model, batch: int) -> int:
    trains_upstream = {INPUT: False}  # does anything at or above this value have parameters?
    total = 0
    for node in model.nodes:
        forward = node.layer.matmul_flops(node.input_shapes)
        needs_input_grad = any(trains_upstream[name] for name in node.inputs)
        total += batch * forward * (3 if needs_input_grad else 2)
        trains_upstream[node.name] = bool(node.params) or needs_input_grad
    return total
