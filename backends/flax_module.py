"""Flax linen module of a multirnn spec. Imported only through the jax backend."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from multirnn.backends import get
from multirnn.params import init_params
from multirnn.spec import RecurrentSpec


class RecurrentModule(nn.Module):
    """``module.apply({'params': canonical params}, inputs, state=None) -> (outputs, state)``.

    Parameters keep their canonical names. ``init`` draws them from ``seed`` in NumPy like every other
    backend (the PRNG key Flax hands in is ignored on purpose: no framework RNG decides a weight).
    """

    model: RecurrentSpec
    seed: int = 0
    dtype: str = "float32"

    @nn.compact
    def __call__(self, inputs, state=None, lengths=None, dropout_seed=None):
        """``lengths`` (ints (batch,), may be traced) and ``dropout_seed`` (a Python int: training-mode
        dropout with multirnn.forward's masks) as in multirnn.forward."""
        seeded = None
        params = {}
        for name in self.model.param_shapes():
            def initializer(_key, name=name):
                nonlocal seeded
                if seeded is None:
                    seeded = init_params(self.model, self.seed, self.dtype)
                return jnp.asarray(seeded[name])
            params[name] = self.param(name, initializer)
        return get("jax").run_user(self.model, params, inputs, state, lengths, dropout_seed)
