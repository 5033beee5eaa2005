"""A Flax linen cell of a unidirectional multirnn spec, for ``flax.linen.RNN(cell)`` (or called alone:
``carry, y = cell.apply(variables, carry, x_t)``). Imported only through multirnn.native_cell.

Its parameters are the canonical ones with the gates of each GRU/LSTM layer side by side --
``{prefix}W_x`` (in, G·H), ``{prefix}W_h`` (H, G·H), ``{prefix}b_x``, ``{prefix}b_h`` (G·H,), gates in
canonical order; an rnn layer's are its canonical arrays -- because a Python loop of jitted steps
would otherwise concatenate every weight on every call (XLA folds the concatenation of slices of one
array away, not that of separate arrays). ``canonical_params`` converts back."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from multirnn import stepping
from multirnn.backends import get
from multirnn.params import init_params
from multirnn.spec import CELL_GATES, RecurrentSpec
from multirnn.state import flatten_state, nest_state

_FUSED = {"W_x": "W_x{}", "W_h": "W_h{}", "b_x": "b_x{}", "b_h": "b_h{}"}  # fused name -> per gate


def fused_params(model: RecurrentSpec, params: dict, concat=np.concatenate) -> dict:
    """Canonical params -> the cell's: each GRU/LSTM layer's gates side by side."""
    if model.cell == "rnn":
        return dict(params)
    out = {}
    for _, _, prefix, _ in model.units():
        for fused, per_gate in _FUSED.items():
            names = [prefix + per_gate.format(g) for g in CELL_GATES[model.cell]]
            if names[0] in params:
                out[prefix + fused] = concat([params[n] for n in names], axis=-1)
    return out


def canonical_params(model: RecurrentSpec, fused: dict, split=np.split) -> dict:
    """The cell's params (or their gradients) -> canonical names and shapes."""
    if model.cell == "rnn":
        return dict(fused)
    out = {}
    gates = CELL_GATES[model.cell]
    for _, _, prefix, _ in model.units():
        for name, per_gate in _FUSED.items():
            if prefix + name in fused:
                parts = split(fused[prefix + name], len(gates), axis=-1)
                out.update({prefix + per_gate.format(g): part for g, part in zip(gates, parts)})
    return out


def zero_carry(model: RecurrentSpec, input_shape, dtype):
    """Zeros in the nested state convention for inputs of ``input_shape`` (..., features): the carry
    both Flax cells (linen and nnx) start from."""
    zeros = jnp.zeros(tuple(input_shape[:-1]) + (model.num_hiddens,), dtype)
    return nest_state(model, [(zeros,) * model.state_arrays for _ in model.units()])


def _fused_names(model: RecurrentSpec) -> list:
    return list(fused_params(model, dict.fromkeys(model.param_shapes()), concat=lambda parts, axis: None))


class RecurrentCell(nn.RNNCellBase):
    """linen's cell protocol: ``__call__(carry, x_t) -> (carry, y_t)``, ``initialize_carry``,
    ``num_feature_axes``. The carry is the nested state of multirnn.spec; ``init`` draws the params
    from ``seed`` in NumPy (as backends/flax_module.py)."""

    model: RecurrentSpec
    seed: int = 0
    dtype: str = "float32"

    @nn.compact
    def __call__(self, carry, inputs):
        seeded = None
        fused = {}
        for name in _fused_names(self.model):
            def initializer(_key, name=name):
                nonlocal seeded
                if seeded is None:
                    seeded = fused_params(self.model, init_params(self.model, self.seed, self.dtype))
                return jnp.asarray(seeded[name])
            fused[name] = self.param(name, initializer)
        params = canonical_params(self.model, fused, split=jnp.split)
        y, finals = stepping.step_network(get("jax"), self.model, params, inputs,
                                          flatten_state(self.model, carry))
        return nest_state(self.model, finals), y

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        return zero_carry(self.model, input_shape, self.dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1

    def canonical_params(self) -> dict:
        """A bound cell's params under the canonical names, as NumPy arrays."""
        return canonical_params(self.model, {k: np.asarray(v) for k, v in self.variables["params"].items()})


def native_cell(model, params):
    """The cell bound to ``params``: call ``cell(carry, x_t)``; ``cell.unbind()`` gives the module and
    its variables for ``nn.RNN``/``apply``."""
    from .jax_backend import precision

    dtype = next(iter(params.values())).dtype
    cell = RecurrentCell(model, dtype=str(np.dtype(dtype)))
    with precision(dtype):
        return cell.bind({"params": {k: jnp.asarray(v) for k, v in fused_params(model, params).items()}})
