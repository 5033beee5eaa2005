"""Flax nnx module of a multirnn spec (Flax's recommended API), next to the linen one in flax_module.py.
Imported only through the jax backend."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from multirnn.backends import get
from multirnn.spec import RecurrentSpec


class RecurrentNNX(nnx.Module):
    """``module(inputs, state=None) -> (outputs, state)``; ``module.params[name]`` is an ``nnx.Param``
    per canonical name and shape, so ``nnx.jit``, ``nnx.grad`` and ``nnx.Optimizer(module, tx,
    wrt=nnx.Param)`` see the canonical layout. The spec is a static attribute (a hashable dataclass).
    For float64, build and call it inside ``multirnn.backends.jax_backend.precision("float64")``."""

    def __init__(self, model: RecurrentSpec, params: dict):
        self.model = model
        self.params = nnx.Dict({name: nnx.Param(jnp.asarray(params[name])) for name in model.param_shapes()})

    def __call__(self, inputs, state=None, lengths=None, dropout_seed=None):
        """``lengths`` and ``dropout_seed`` as in the linen module."""
        params = {name: param[...] for name, param in self.params.items()}
        return get("jax").run_user(self.model, params, inputs, state, lengths, dropout_seed)
