"""The training step, its modes, and the trainer the harness drives.

The step is the JAX documentation's: a pure function of the carry (the parameters, a dict pytree in
canonical names and layout; the layers' state, e.g. BatchNorm's moving statistics; the optax state),
the data and the batch's indices, the step's learning rate and its dropout masks, returning (the loss
before the update, the new carry):

    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y, masks)
    d, opt_state = optimizer.update(grads, opt_state, params)    # clip, decay, rule (optax.chain)
    params = optax.apply_updates(params, -lr · d)                # the learning rate

The data sits on the device from the start; a step gathers its rows inside the step (X[idx]). The
trainer counts its steps: the step number fixes the learning rate and the dropout masks
(crossnn.schedule.StepClock), computed in NumPy and fed in as arguments, so neither a schedule nor
dropout ever recompiles. Every call into jax happens inside crossnn_jax.device.scope (float64 for
float64 runs only, matmul precision "highest", the run's device), so nothing leaks into the process.

Modes (MODES; adding one adds its class here and its name to JaxBackend.modes with a mode_notes line):

jit    one jax.jit-compiled step per batch, called from Python (parameters and optax state donated,
       so XLA updates them in place); the losses stay on the device until the span ends
eager  the same step, not compiled: jax runs it op by op
scan   a whole span of steps in ONE compiled call: the step looped on the device over the span's
       batches ([steps, batch] indices, [steps] learning rates, [steps, batch, ...] masks), the JAX way
       of training without Python in the loop. One loop needs one batch size, so consecutive batches of
       one size form a segment (a short last batch runs on its own, as TF's epoch mode cuts its spans),
       cut into chunks of CHUNK steps, the last one padded. The loop is jax.lax.fori_loop with the
       chunk's real step count as a traced bound (a while loop, what lax.scan compiles to), so ONE
       compilation per batch size serves every span length and padding rows are never run. (A
       lax.scan has a static length: it would compile once per span length, or run the padding
       through a lax.cond whose untaken branch still copies the whole carry, measured at 35 ms per
       padded step on an FCN-R-sized model.)
xp     the NumPy backend's pure training step (crossnn_numpy.step.TrainStep: hand-written forward and
       backward passes, loss gradient, the optimizer chain on one flat parameter vector) on
       jax.numpy through crossnn_jax.xp, compiled with jax.jit: no autodiff, no optax
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from crossnn.backends import Trainer
from crossnn.checkpoint import TrainingState
from crossnn.data import Dataset
from crossnn.errors import BackendError, UnsupportedFeature
from crossnn.schedule import StepClock
from crossnn.spec import INPUT, Experiment

from crossnn_jax import checkpoint, ops
from crossnn_jax import device as devices
from crossnn_jax.optimizers import Chain

#: steps per call of the scan mode (a span's segments are cut into chunks this long, the last padded)
CHUNK = 128


class Network:
    """The model as functions of its variables (a dict {canonical name: array}: the parameters and the
    layers' state, e.g. BatchNorm's moving statistics): the layers' entries called in graph order."""

    def __init__(self, experiment: Experiment, native=frozenset(), loops: bool = False):
        self.layers = [(node.name, ops.layer(node, native), node.inputs,
                        {p.name: f"{node.name}/{p.name}" for p in (*node.params, *node.state)})
                       for node in experiment.model.nodes]
        for _, op, _, _ in self.layers:
            op.loops = loops  # the entries run inside a device loop (see crossnn_jax.ops.Layer.loops)
        self.output = experiment.model.layers[-1].name

    def _run(self, variables, x, masks, training):
        values, new_state = {INPUT: x}, {}
        for name, op, inputs, names in self.layers:
            p = {short: variables[full] for short, full in names.items()}
            args = (p, [values[i] for i in inputs], masks.get(name) if masks else None)
            if op.stateful and training:
                values[name], state = op.train(*args)
                new_state.update({names[short]: value for short, value in state.items()})
            else:
                values[name] = op(*args)
        return values[self.output], new_state

    def __call__(self, variables, x):
        """The output when predicting: no dropout, stateful layers use their state."""
        return self._run(variables, x, None, False)[0]

    def train(self, params, layer_state, x, masks):
        """(the output of a training step, the layers' new state): the step's dropout masks, batch statistics."""
        return self._run({**params, **layer_state}, x, masks, True)

    def native_init(self, seed: int, dtype) -> dict:
        """The "default-init" flavour's parameters: each layer's own initializers (Flax's), one key
        per layer split from jax.random.key(seed), the way a JAX model's init splits its key."""
        keys = jax.random.split(jax.random.key(seed), max(1, len(self.layers)))
        out = {}
        for key, (name, op, _, _) in zip(keys, self.layers):
            out.update({f"{name}/{short}": value for short, value in op.native_init(key, dtype).items()})
        return out


def make_step(network: Network, loss, chain: Chain):
    """The pure training step (see the module docstring) on the device-resident data X, Y. The carry
    is (parameters, the layers' state, the optax state)."""

    def loss_fn(params, layer_state, x, y, masks):
        output, layer_state = network.train(params, layer_state, x, masks)
        return loss(output, y), layer_state

    def step(carry, X, Y, idx, lr, masks):
        params, layer_state, opt_state = carry
        (value, layer_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, layer_state, X[idx],
                                                                                Y[idx], masks)
        direction, opt_state = chain.update(grads, opt_state, params)
        return value, (chain.apply(params, direction, lr), layer_state, opt_state)

    return step


class ChainMode:
    """The eager mode, and what jit and scan share: the Network, the loss entry and the optax Chain.
    The carry (parameters, layers' state, optax state) is what a step takes and returns."""

    description = "jax.value_and_grad step run op by op (no jit), optax chain"
    compiled = False

    def __init__(self, trainer: JaxTrainer):
        self.trainer = trainer
        experiment, native = trainer.experiment, trainer.native
        self.network = Network(experiment, native)
        self.loss = ops.loss(experiment.loss, native)
        self.class_indices = self.loss.class_indices
        self.chain = Chain(experiment.optimizer, native)
        if "default-init" in native:
            params = self.network.native_init(experiment.seed, trainer.jax_dtype)
        else:
            params = {name: trainer.array(trainer.initial[name]) for name in trainer.names}
        layer_state = {name: trainer.array(trainer.initial[name]) for name in trainer.state_names}
        self.carry = trainer.committed((params, layer_state, self.chain.init(params)))
        step = make_step(self.network, self.loss, self.chain)
        self.step = jax.jit(step, donate_argnums=0) if self.compiled else step
        self.forward = jax.jit(self.network) if self.compiled else self.network

    def run(self, first: int, rows: Sequence[np.ndarray]):
        """Steps first, first + 1, ... on the batches `rows`, one call of the step each; the losses as
        one device array."""
        t = self.trainer
        losses = []
        for k, idx in enumerate(rows):
            loss, self.carry = self.step(self.carry, t.X, t.Y, idx, t.clock.lr(first + k), t.masks(first + k, len(idx)))
            losses.append(loss)
        return jnp.stack(losses)

    def variables(self) -> dict:
        """Parameters and layers' state by canonical name."""
        params, layer_state, _ = self.carry
        return {**params, **layer_state}

    def predict(self, x):
        return self.forward(self.variables(), x)

    def export_state(self) -> tuple[dict, dict]:
        return self.chain.export(self.carry[2])

    def import_state(self, state: TrainingState) -> None:
        t = self.trainer
        params = {name: t.array(state.params[name]) for name in t.names}
        layer_state = {name: t.array(state.params[name]) for name in t.state_names}
        self.carry = t.committed((params, layer_state, checkpoint.optax_state(self.chain, params, state, t.array)))

    def synchronize(self):
        jax.block_until_ready(self.carry)


class JitMode(ChainMode):
    description = "one jax.jit step per batch (jax.value_and_grad, optax chain; the carry donated)"
    compiled = True


class ScanMode(ChainMode):
    description = (f"whole spans in one jax.jit call each: the step in a lax.fori_loop over [{CHUNK}, batch] index "
                   "chunks with a traced step count (one compilation per batch size)")
    compiled = True

    def __init__(self, trainer: JaxTrainer):
        super().__init__(trainer)
        step = make_step(Network(trainer.experiment, trainer.native, loops=True), self.loss, self.chain)

        def span(carry, X, Y, idx, lrs, masks, count):
            """Steps 0 .. count-1 of the chunk (rows of idx, lrs and masks), in order; their losses
            (rows from count on are padding: never run, read back as 0)."""

            def body(i, state):
                carry, losses = state
                loss, carry = step(carry, X, Y, idx[i], lrs[i], {name: m[i] for name, m in masks.items()})
                return carry, losses.at[i].set(loss)

            carry, losses = lax.fori_loop(0, count, body, (carry, jnp.zeros(idx.shape[0], lrs.dtype)))
            return losses, carry

        self.span = jax.jit(span, donate_argnums=0)

    @staticmethod
    def chunks(sizes: Sequence[int]) -> list[tuple[int, int]]:
        """[start, stop) of each call: runs of one batch size, cut into at most CHUNK steps."""
        out, start = [], 0
        while start < len(sizes):
            stop = start + 1
            while stop < len(sizes) and stop - start < CHUNK and sizes[stop] == sizes[start]:
                stop += 1
            out.append((start, stop))
            start = stop
        return out

    def run(self, first, rows):
        """The steps chunk by chunk: each chunk's indices, learning rates and masks stacked (the masks
        drawn for that chunk only) and padded to CHUNK rows."""
        t = self.trainer
        out = []
        for a, b in self.chunks([len(r) for r in rows]):
            pad = CHUNK - (b - a)
            idx = np.concatenate([np.stack(rows[a:b]), np.zeros((pad, len(rows[a])), np.int32)])
            rates = np.array([t.clock.lr(first + k) for k in range(a, b)] + [0.0] * pad, t.np_dtype)
            drawn = [t.masks(first + k, len(rows[a])) for k in range(a, b)]
            stacked = {}
            for name in drawn[0]:
                shown = np.stack([m[name] for m in drawn])
                stacked[name] = np.concatenate([shown, np.zeros((pad, *shown.shape[1:]), t.np_dtype)])
            loss, self.carry = self.span(self.carry, t.X, t.Y, idx, rates, stacked, b - a)
            out.append((loss, b - a))
        return np.concatenate([np.asarray(loss)[:count] for loss, count in out])  # one transfer per chunk


class XpMode:
    """crossnn_numpy.step.TrainStep (hand-written gradients, the pure optimizer chain) on jax.numpy,
    jitted. Its carry is (one flat vector of the parameters in canonical order, the step's state: the
    NumPy chain's slots and counters and, under "layers", the layers' state)."""

    description = ("the NumPy backend's hand-written forward/backward/optimizer on jax.numpy (crossnn_jax.xp), "
                   "one jax.jit step per batch")
    class_indices = False

    def __init__(self, trainer: JaxTrainer):
        if trainer.native:
            raise UnsupportedFeature("jax", "the native flavour in the xp mode (it runs the NumPy backend's "
                                            "formulas); use jit, eager or scan")
        from crossnn_jax.xp import jax_namespace
        from crossnn_numpy.step import TrainStep

        self.trainer = trainer
        self.train_step = train_step = TrainStep(trainer.experiment, jax_namespace)
        self.load(trainer.initial, {}, {})

        def step(carry, X, Y, idx, lr, masks):
            loss, flat, state = train_step(*carry, X[idx], Y[idx], lr, masks)
            return loss, (flat, state)

        self.step = jax.jit(step, donate_argnums=0)
        self.forward = jax.jit(lambda carry, x: train_step.predict(*carry, x))

    def load(self, variables: dict, slots: dict, counters: dict) -> None:
        t = self.trainer
        flat = self.train_step.flatten({name: t.array(variables[name]) for name in t.names})
        state = self.train_step.import_state(flat, variables, slots, counters, t.array)
        self.carry = t.committed((flat, state))

    run = ChainMode.run
    synchronize = ChainMode.synchronize

    def variables(self) -> dict:
        return self.train_step.variables(*self.carry)

    def predict(self, x):
        return self.forward(self.carry, x)

    def export_state(self):
        slots, counters = self.train_step.export_state(self.carry[1])
        return slots, {name: int(value) for name, value in counters.items()}

    def import_state(self, state: TrainingState) -> None:
        self.load(state.params, state.slots, state.counters)


MODES = {"jit": JitMode, "eager": ChainMode, "scan": ScanMode, "xp": XpMode}


class JaxTrainer(Trainer):
    """An experiment trained by one of the MODES on one jax device, inside crossnn_jax.device.scope."""

    def __init__(self, experiment: Experiment, params: dict[str, np.ndarray], data: Dataset, *, dtype: str,
                 device: str, mode: str, native: frozenset[str] = frozenset()):
        if mode not in MODES:
            raise BackendError(f"backend 'jax' has no mode '{mode}'; it has {', '.join(MODES)}")
        self.experiment, self.native, self.mode_name = experiment, frozenset(native), mode
        self.dtype, self.np_dtype = dtype, np.dtype(dtype)
        self.device = devices.resolve(device)
        self.names = list(experiment.model.parameter_inits())
        self.state_names = list(experiment.model.state_inits())
        self.initial = params
        self.clock = StepClock(experiment, data.n)
        self.steps_done = 0
        with self.scope():
            self.jax_dtype = jnp.dtype(dtype)
            self.mode = MODES[mode](self)
            self.X = self.array(data.x)
            self.Y = self._targets(data.y)

    def scope(self):
        """float64 on for a float64 run only, matmul precision "highest", the run's device."""
        return devices.scope(self.dtype, self.device)

    def array(self, value) -> jax.Array:
        """A NumPy array as one of the run's dtype on its device (call inside the scope)."""
        return jax.device_put(np.asarray(value, dtype=self.np_dtype), self.device)

    def committed(self, tree):
        """`tree` with every leaf its own buffer on the run's device, committed (Python counters become
        int32 scalars): optax creates its zero states uncommitted, and jit compiles a step again when an
        argument's placement changes from one call to the next; a buffer in two leaves (one zeros tree
        for two slots) could not be donated twice."""
        seen = set()

        def commit(leaf):
            array = jax.device_put(jnp.asarray(leaf), self.device)
            if array.unsafe_buffer_pointer() in seen:
                array = jnp.array(array, copy=True)
            seen.add(array.unsafe_buffer_pointer())
            return array

        return jax.tree.map(commit, tree)

    def _targets(self, y: np.ndarray) -> jax.Array:
        """Class indices (int32, the output's shape but its last axis) for a loss that wants them,
        one-hot rows for the other losses of sparse labels, else the values."""
        model = self.experiment.model
        if not self.experiment.loss.sparse_targets:
            return self.array(y)
        labels = np.asarray(y, dtype=np.int64).reshape(len(y), *model.output_shape[:-1])
        if self.mode.class_indices:
            return jax.device_put(labels.astype(np.int32), self.device)
        return self.array(np.eye(model.output_units)[labels])

    def run(self, batches: Sequence[np.ndarray]) -> np.ndarray:
        if not len(batches):
            return np.zeros(0)
        first = self.steps_done
        with self.scope():
            losses = np.asarray(self.mode.run(first, [np.asarray(b, dtype=np.int32) for b in batches]),
                                dtype=np.float64)
        self.steps_done = first + len(batches)
        return losses

    def masks(self, step: int, rows: int) -> dict[str, np.ndarray]:
        """crossnn's dropout masks of a step ({} without dropout), in the run's dtype."""
        return {name: m.astype(self.np_dtype) for name, m in self.clock.masks(step, rows).items()}

    def step(self, batch):
        return float(self.run([batch])[0])

    def parameters(self):
        """Every variable (parameters, layers' state), canonical names and layout, as NumPy copies."""
        with self.scope():
            return {name: np.array(value) for name, value in self.mode.variables().items()}

    def predict(self, x):
        with self.scope():
            return np.asarray(self.mode.predict(self.array(x)))

    def state(self) -> TrainingState:
        with self.scope():
            slots, counters = self.mode.export_state()
            host = {slot: {name: np.array(value) for name, value in per.items()} for slot, per in slots.items()}
            return TrainingState(self.steps_done, self.parameters(), host, counters)

    def load_state(self, state: TrainingState) -> None:
        with self.scope():
            self.mode.import_state(state)
        self.steps_done = int(state.step)

    def synchronize(self):
        self.mode.synchronize()

    def describe(self):
        return f"jax {jax.__version__} on {devices.name_of(self.device)}: {self.mode.description}"
