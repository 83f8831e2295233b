"""Training state in crossnn's canonical form, and JAX's own checkpoint file.

Canonical state (crossnn.checkpoint.TrainingState): the parameters and the layers' state need no
conversion (crossnn's layout is the one the JAX lowering computes in); the optax chain's state maps
onto crossnn's slot names through each stage's declaration (crossnn_jax.optimizers.Stage):

    optax.trace            trace                     momentum_buffer
    optax.scale_by_adam    mu, nu, count             exp_avg, exp_avg_sq, counter step
    optax.scale_by_rms     nu                        square_avg
    optax.scale_by_stddev  nu, mu                    square_avg, grad_avg
    scale_by_adagrad /     sum_of_squares            sum
    optax.scale_by_rss
    count_steps            count                     counter step (RMSprop, Adagrad)

so a run stopped in any backend resumes here, and a state exported here resumes anywhere.

The native file is what a JAX user keeps without a checkpoint library: a NumPy .npz (no pickle) of
the pytrees, every leaf under its jax tree path (jax.tree_util.keystr):

    format                      "crossnn-jax-1"
    step                        steps completed
    optimizer                   the optax chain the state belongs to, as the emitted script writes it
    params/<name>               the parameter pytree {canonical name: array}
    state/<name>                the layers' state (BatchNorm's moving statistics)
    opt_state/<tree path>       every leaf of the optax state, e.g. opt_state/[0].mu['dense1/kernel']

Reading it back rebuilds the spec's chain, initialises its state for the parameters and fills every
leaf by its path, so a file for another optimizer or model fails with the missing path named.
(orbax-checkpoint would write the same pytrees; it is not a dependency.)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from crossnn.checkpoint import CheckpointError, TrainingState
from crossnn.files import write_npz_atomic
from crossnn.spec import Experiment

from crossnn_jax import device as devices
from crossnn_jax.optimizers import Chain

FORMAT = "crossnn-jax-1"


def training_state(step: int, variables: dict, chain: Chain, opt_state) -> TrainingState:
    """The canonical state: every variable and the chain's slots and counters, as NumPy arrays."""
    slots, counters = chain.export(opt_state)
    return TrainingState(int(step), {name: np.array(value) for name, value in variables.items()},
                         {slot: {name: np.array(value) for name, value in per.items()} for slot, per in slots.items()},
                         counters)


def optax_state(chain: Chain, params: dict, state: TrainingState, to_array):
    """The chain's optax state for `params` holding `state`'s slots and counters (slots it lacks, e.g.
    before the first step, keep their initial values)."""
    return chain.restore(chain.init(params), state.slots, state.counters, to_array)


def _split(experiment: Experiment, variables: dict) -> tuple[dict, dict]:
    """(trained parameters, layers' state) of a variables dict, as float64 jax arrays."""
    model = experiment.model
    return ({name: jnp.asarray(variables[name], jnp.float64) for name in model.parameter_inits()},
            {name: jnp.asarray(variables[name], jnp.float64) for name in model.state_inits()})


def export_native(experiment: Experiment, state: TrainingState, path) -> None:
    """Write `state` as the native .npz (see the module docstring), completely or not at all."""
    with devices.scope("float64", jax.devices("cpu")[0]):
        chain = Chain(experiment.optimizer)
        params, layer_state = _split(experiment, state.params)
        opt_state = optax_state(chain, params, state, lambda a: jnp.asarray(a, jnp.float64))
        arrays = {"format": np.array(FORMAT), "step": np.array(state.step, dtype=np.int64),
                  "optimizer": np.array(chain.code())}
        arrays.update({f"params/{name}": np.asarray(value) for name, value in params.items()})
        arrays.update({f"state/{name}": np.asarray(value) for name, value in layer_state.items()})
        for key, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
            arrays[f"opt_state/{jax.tree_util.keystr(key)}"] = np.asarray(leaf)
    write_npz_atomic(Path(path), arrays)


def import_native(experiment: Experiment, path) -> TrainingState:
    """The canonical state of a file export_native wrote for this spec; CheckpointError naming what
    does not fit otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from None
    if str(contents.get("format", "")) != FORMAT:
        raise CheckpointError(f"{path}: not a crossnn jax checkpoint (format '{contents.get('format', 'missing')}', "
                              f"expected '{FORMAT}')")

    def read(key: str, shape=None) -> np.ndarray:
        if key not in contents:
            raise CheckpointError(f"{path}: missing key '{key}' (saved for another model or optimizer?)")
        value = contents[key]
        if shape is not None and value.shape != tuple(shape):
            raise CheckpointError(f"{path}: {key} has shape {value.shape}, the model needs {tuple(shape)}")
        return value

    model = experiment.model
    variables = {name: read(f"params/{name}", p.shape) for name, p in model.parameter_inits().items()}
    variables.update({name: read(f"state/{name}", p.shape) for name, p in model.state_inits().items()})
    with devices.scope("float64", jax.devices("cpu")[0]):
        chain = Chain(experiment.optimizer)
        params, _ = _split(experiment, variables)
        template = chain.init(params)
        leaves, tree = jax.tree_util.tree_flatten_with_path(template)
        filled = [jnp.asarray(read(f"opt_state/{jax.tree_util.keystr(key)}", np.shape(leaf)), jnp.asarray(leaf).dtype)
                  for key, leaf in leaves]
        opt_state = jax.tree_util.tree_unflatten(tree, filled)
        return training_state(int(read("step")), variables, chain, opt_state)
