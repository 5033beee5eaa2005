"""A Flax nnx cell of a unidirectional multirnn spec, for ``flax.nnx.RNN(cell)`` (or called alone:
``carry, y = cell(carry, x_t)``). Imported only through multirnn.native_cell(..., api="nnx").
Parameters as the linen cell's (backends/cells_flax.py): each GRU/LSTM layer's gates side by side."""
from __future__ import annotations

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np

from multirnn import stepping
from multirnn.backends import get
from multirnn.state import flatten_state, nest_state

from .cells_flax import canonical_params, fused_params, zero_carry


class RecurrentCell(nnx.RNNCellBase):
    """nnx's cell protocol: ``__call__(carry, x_t) -> (carry, y_t)``, ``initialize_carry(input_shape,
    rngs=None)``, ``num_feature_axes``; the carry is the nested state of multirnn.spec. ``weights``
    holds one ``nnx.Param`` per (fused) array."""

    def __init__(self, model, params: dict):
        self.model = model
        self.dtype = next(iter(params.values())).dtype
        self.weights = nnx.Dict({name: nnx.Param(jnp.asarray(value))
                                 for name, value in fused_params(model, params).items()})

    def __call__(self, carry, inputs):
        params = canonical_params(self.model, {k: v.value for k, v in self.weights.items()}, split=jnp.split)
        y, finals = stepping.step_network(get("jax"), self.model, params, inputs,
                                          flatten_state(self.model, carry))
        return nest_state(self.model, finals), y

    def initialize_carry(self, input_shape, rngs=None):
        return zero_carry(self.model, input_shape, self.dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1

    def canonical_params(self) -> dict:
        """The params under the canonical names, as NumPy arrays."""
        return canonical_params(self.model, {k: np.asarray(v.value) for k, v in self.weights.items()})


def native_cell(model, params):
    from .jax_backend import precision

    with precision(next(iter(params.values())).dtype):
        return RecurrentCell(model, params)
