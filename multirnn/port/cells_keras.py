"""Keras 3 ``SimpleRNNCell``/``GRUCell``/``LSTMCell`` read alone (called step by step, not inside
``keras.layers.RNN``, which multirnn.port.keras reads), or a list of them as a hand-made stack
(multirnn.port.cells). Every config field and variable is accounted for by the same checks as a cell
inside an RNN layer (multirnn.port.keras_graph)."""
from __future__ import annotations

import numpy as np

from ._common import make_spec
from .cells import CellRead, as_list, loaded_from_cells


def is_cell(source) -> bool:
    from .keras_graph import _kinds

    cells = _kinds()[1]
    return bool(as_list(source)) and all(type(cell) in cells for cell in as_list(source))


def read_cell(cell, index: int | None = None) -> CellRead:
    import keras

    from .keras import from_keras
    from .keras_graph import _cell_arrays, _cell_fields, _check_cell_weights, _dtype_name

    where = f"Keras {type(cell).__name__} {cell.name!r}" + ("" if index is None else f" (cell {index})")
    notes: list = []
    fields = _cell_fields(cell, where, notes)
    _check_cell_weights(cell, where)
    dtype = _dtype_name(cell, where)
    model = make_spec({**fields, "num_inputs": int(cell.kernel.shape[0])}, {}, where)
    params = from_keras(model, [np.asarray(v) for v in _cell_arrays(cell)])

    def step(x_t, state):
        states = (cell.get_initial_state(batch_size=x_t.shape[0]) if state is None
                  else [keras.ops.convert_to_tensor(a) for a in state])
        _, new = cell(keras.ops.convert_to_tensor(x_t), list(states), training=False)
        return tuple(np.asarray(a) for a in (new if isinstance(new, (list, tuple)) else [new]))

    return CellRead(model, params, dtype, step, f"keras {keras.__version__} ({keras.backend.backend()})",
                    where, tuple(notes))


def read(source, *, variables=None, **known):
    """A ``Loaded`` from a Keras cell or a list of them (a hand-made stack), proven by the loop."""
    from .keras import _import_keras

    if variables is not None:
        raise ValueError("variables= goes with a Flax linen module; a Keras cell holds its own weights")
    _import_keras()
    cells = as_list(source)
    return loaded_from_cells([read_cell(c, k if len(cells) > 1 else None) for k, c in enumerate(cells)],
                             known)
