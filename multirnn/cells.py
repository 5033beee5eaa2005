"""Step-at-a-time use of a spec: ``step`` (NumPy in and out, any backend) and ``native_cell`` (the
framework's own cell object: torch ``nn.Module``, Keras cell, Flax linen cell, Gluon cell)."""
from __future__ import annotations

import functools
import importlib

import numpy as np

from . import validate
from .spec import RecurrentSpec
from .state import nest_state
from .stepping import refuse_unsteppable, step_network


def _check_training(model: RecurrentSpec, training) -> None:
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    if training and model.dropout > 0 and model.num_layers > 1:
        # forward draws one mask per (step, batch, unit) for the whole sequence from one seed, so a
        # step alone cannot know which of those masks is its own: refuse rather than differ
        raise ValueError(f"step does not apply training-mode dropout (model.dropout={model.dropout}): "
                         "forward draws its masks for the whole sequence at once, which one step cannot "
                         "reproduce; use training=False, or multirnn.forward for training with dropout")


def _compiled_step(impl, model: RecurrentSpec):
    """The backend's one step of ``model``, compiled once per spec (tf.function, jax.jit; eager
    backends run it as it is)."""
    return impl._once("step", model, lambda: impl.compile(functools.partial(step_network, impl, model)))


def step(model: RecurrentSpec, params: dict, x_t: np.ndarray, state=None, backend: str = "numpy", *,
         training: bool = False):
    """One time step of a unidirectional ``model``: every layer advances by one step, as a hand loop
    of stacked cells does. Returns ``(output_t, state)``.

    x_t: (batch, num_inputs) in the params' dtype. state: the nested convention of multirnn.spec
    (None = zeros); the returned state feeds straight back. output_t: (batch, num_hiddens), the last
    layer's new hidden state. Stepping T times gives ``forward``'s outputs and final state (exactly
    on ``numpy``, the float64 reference; within the parity tolerances on a framework backend).

    A bidirectional model is refused (its backward half needs the future), and so is
    ``training=True`` with dropout between layers (forward's masks are drawn per sequence).
    """
    from multirnn import backends

    validate.check_model(model)
    refuse_unsteppable(model)
    _check_training(model, training)
    dtype = validate.check_params(model, params)
    x_t = validate.check_array("x_t", x_t, (None, model.num_inputs), dtype)
    flat = validate.check_state(model, state, x_t.shape[0], dtype)
    impl = backends.get(backend)
    if impl.is_reference:  # the reference itself, one step long: the same arithmetic as forward
        ys, finals = impl.forward(model, params, x_t[None], flat)
        return ys[0], nest_state(model, finals)
    with impl.precision(dtype):
        run = _compiled_step(impl, model)
        y, finals = run(*impl._to_framework(params, np.ascontiguousarray(x_t), flat)[:3])
        return impl.to_numpy(y), nest_state(model, [tuple(impl.to_numpy(a) for a in u) for u in finals])


# backend name -> module (in backends/) whose ``native_cell(model, params)`` builds the cell
_CELL_MODULES = {"torch": "cells_torch", "tensorflow": "cells_keras", "jax": "cells_flax",
                 "mxnet": "cells_gluon"}


def native_cell(model: RecurrentSpec, params: dict | None = None, backend: str = "torch", seed: int = 0,
                dtype="float32", *, api: str | None = None):
    """The framework's own cell for a unidirectional ``model`` holding ``params`` (or the seeded
    init): a torch ``nn.Module`` called ``cell(x_t, state)`` like ``nn.GRUCell``; a Keras cell for
    ``keras.layers.RNN(cell)``; a Flax linen cell for ``flax.linen.RNN(cell)`` (``api="nnx"``: an nnx
    cell for ``flax.nnx.RNN(cell)``); a Gluon recurrent cell with ``begin_state``. See docs/cells.md."""
    from multirnn import backends
    from multirnn.params import init_params

    validate.check_model(model)
    refuse_unsteppable(model)
    if model.proj_size:  # the cells size h as num_hiddens wide; multirnn.step runs a projection
        raise ValueError(f"native_cell does not support proj_size={model.proj_size} yet (the cells' "
                         "h is num_hiddens wide); step it with multirnn.step, or run the sequence with "
                         "multirnn.forward or multirnn.native_layer")
    if backend not in _CELL_MODULES:
        raise ValueError(f"backend must be one of {tuple(_CELL_MODULES)} for native_cell, got {backend!r}")
    if api not in (None, "linen", "nnx") or (api is not None and backend != "jax"):
        raise ValueError(f"api= chooses Flax's linen (default) or nnx cell with backend='jax', got "
                         f"api={api!r} with backend={backend!r}")
    if params is not None:
        validate.check_params(model, params)
    backends.get(backend)  # the framework, imported in the registry's safe order
    name = "cells_nnx" if api == "nnx" else _CELL_MODULES[backend]
    module = importlib.import_module(f"multirnn.backends.{name}")
    return module.native_cell(model, params if params is not None else init_params(model, seed, dtype))
