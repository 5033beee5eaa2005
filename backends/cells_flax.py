"""A Flax linen cell of a unidirectional multirnn spec, for ``flax.linen.RNN(cell)`` (or called alone:
``carry, y = cell.apply(variables, carry, x_t)``). Imported only through multirnn.native_cell."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from multirnn import stepping
from multirnn.backends import get
from multirnn.params import init_params
from multirnn.spec import RecurrentSpec
from multirnn.state import flatten_state, nest_state


class RecurrentCell(nn.RNNCellBase):
    """linen's cell protocol: ``__call__(carry, x_t) -> (carry, y_t)``, ``initialize_carry``,
    ``num_feature_axes``. The carry is the nested state of multirnn.spec; parameters keep their
    canonical names and ``init`` draws them from ``seed`` in NumPy (as backends/flax_module.py)."""

    model: RecurrentSpec
    seed: int = 0
    dtype: str = "float32"

    @nn.compact
    def __call__(self, carry, inputs):
        seeded = None
        params = {}
        for name in self.model.param_shapes():
            def initializer(_key, name=name):
                nonlocal seeded
                if seeded is None:
                    seeded = init_params(self.model, self.seed, self.dtype)
                return jnp.asarray(seeded[name])
            params[name] = self.param(name, initializer)
        y, finals = stepping.step_network(get("jax"), self.model, params, inputs,
                                          flatten_state(self.model, carry))
        return nest_state(self.model, finals), y

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        zeros = jnp.zeros(tuple(input_shape[:-1]) + (self.model.num_hiddens,), self.dtype)
        return nest_state(self.model, [(zeros,) * self.model.state_arrays for _ in self.model.units()])

    @property
    def num_feature_axes(self) -> int:
        return 1


def native_cell(model, params):
    """The cell bound to ``params``: call ``cell(carry, x_t)``; ``cell.unbind()`` gives the module and
    its variables for ``nn.RNN``/``apply``."""
    import numpy as np

    from .jax_backend import precision

    dtype = next(iter(params.values())).dtype
    cell = RecurrentCell(model, dtype=str(np.dtype(dtype)))
    with precision(dtype):
        return cell.bind({"params": {k: jnp.asarray(v) for k, v in params.items()}})
