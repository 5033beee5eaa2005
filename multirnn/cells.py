"""Step-at-a-time use of a spec: ``step`` (NumPy in and out, any backend) and ``native_cell`` (the
framework's own cell object: torch ``nn.Module``, Keras cell, Flax linen cell, Gluon cell)."""
from __future__ import annotations

import importlib

import numpy as np

from . import validate
from .spec import RecurrentSpec
from .state import nest_state
from .stepping import refuse_unsteppable


def _check_masks(model: RecurrentSpec, training, dropout_masks, batch: int, dtype) -> list | None:
    """The per-step dropout masks as a list for the backend (None: nothing is dropped)."""
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    drops = training and model.dropout > 0 and model.num_layers > 1
    if not drops:
        if dropout_masks is not None:  # given but unused would silently compute eval mode
            raise ValueError("dropout_masks applies only with training=True and a model that drops "
                             f"between layers (dropout > 0, num_layers > 1); got training={training}, "
                             f"dropout={model.dropout}, num_layers={model.num_layers}")
        return None
    if dropout_masks is None:
        # forward draws one mask per (step, batch, unit) for the whole sequence from one seed, so a
        # step alone cannot know which of those is its own: the caller hands it this step's
        raise ValueError(f"training=True with dropout between layers (model.dropout={model.dropout}) "
                         "needs dropout_masks=: this step's masks, [m[t] for m in masks] of masks = "
                         "multirnn.dropout_masks(model, num_steps, batch, seed, dtype), the masks "
                         "forward(..., training=True, dropout_seed=seed) draws")
    count = model.num_layers - 1
    if not isinstance(dropout_masks, (list, tuple)) or len(dropout_masks) != count:
        raise TypeError(f"dropout_masks must be a list of {count} arrays (one per layer after the first), "
                        f"got {type(dropout_masks).__name__}"
                        + (f" of {len(dropout_masks)}" if isinstance(dropout_masks, (list, tuple)) else ""))
    return [np.ascontiguousarray(validate.check_array(f"dropout_masks[{k}]", m, (batch, model.output_size),
                                                      dtype))
            for k, m in enumerate(dropout_masks)]


def step(model: RecurrentSpec, params: dict, x_t: np.ndarray, state=None, backend: str = "numpy", *,
         training: bool = False, dropout_masks=None):
    """One time step of a unidirectional ``model``: every layer advances by one step, as a hand loop
    of stacked cells does. Returns ``(output_t, state)``.

    x_t: (batch, num_inputs) in the params' dtype. state: the nested convention of multirnn.spec
    (None = zeros); the returned state feeds straight back. output_t: (batch, num_hiddens), the last
    layer's new hidden state. Stepping T times gives ``forward``'s outputs and final state (exactly
    on ``numpy``, the float64 reference; within the parity tolerances on a framework backend).

    ``training=True`` with dropout between layers takes this step's masks, ``dropout_masks``: one
    (batch, num_hiddens) array per layer after the first. ``[m[t] for m in masks]`` at step t, with
    ``masks = multirnn.dropout_masks(model, T, batch, seed, dtype)``, gives
    ``forward(..., training=True, dropout_seed=seed)``. A bidirectional model is refused (its
    backward half needs the future).
    """
    from multirnn import backends

    validate.check_model(model)
    refuse_unsteppable(model)
    dtype = validate.check_params(model, params)
    x_t = validate.check_array("x_t", x_t, (None, model.num_inputs), dtype)
    masks = _check_masks(model, training, dropout_masks, x_t.shape[0], dtype)
    flat = validate.check_state(model, state, x_t.shape[0], dtype)
    y, finals = backends.get(backend).step(model, params, np.ascontiguousarray(x_t), flat, masks)
    return y, nest_state(model, finals)


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
