"""A bare Flax linen cell (``nn.SimpleCell``/``nn.GRUCell``/``nn.LSTMCell``/``nn.OptimizedLSTMCell``)
with its variables, read as a one-layer spec; a list of them (with a list of variables) as a hand-made
stack (multirnn.port.cells). The cell's fields are checked as inside ``nn.RNN`` (multirnn.port.flax);
the proof calls ``cell.apply(variables, carry, x_t)`` step by step. Flax's LSTM carry is (c, h),
multirnn's state (h, c)."""
from __future__ import annotations

import numpy as np

from ._common import make_spec
from .cells import CellRead, as_list, loaded_from_cells


def is_cell(source) -> bool:
    import flax.linen as nn

    return bool(as_list(source)) and all(isinstance(cell, nn.RNNCellBase) for cell in as_list(source))


def read_cell(cell, variables, index: int | None = None) -> CellRead:
    import flax
    import jax
    import jax.numpy as jnp

    from multirnn.backends.jax_backend import precision

    from .flax import (_cell_from_flax, _linen_cell, _linen_variables, check_leaves, finish_import,
                       iter_leaves)

    where = f"Flax {type(cell).__name__}" + ("" if index is None else f" (cell {index})")
    facts = _linen_cell(where, cell)
    variables = _linen_variables(cell, variables)  # a bound cell's own when None
    if getattr(cell, "scope", None) is not None:
        cell = cell.clone(parent=None)  # unbound, to apply with those variables
    tree = variables["params"]
    check_leaves(f"{where} params", tree, {leaf for leaf in facts.leaves})
    num_inputs = int(np.shape(tree[facts.input_kernel[0]][facts.input_kernel[1]])[0])
    fields = {"cell": facts.cell, "num_inputs": num_inputs, "num_hiddens": facts.features,
              "nonlinearity": facts.nonlinearity}
    if facts.cell == "gru":
        fields["reset_after"] = True  # flax's GRUCell resets after the recurrent matmul
    if getattr(facts, "gate_activation", "sigmoid") != "sigmoid":
        fields["gate_activation"] = facts.gate_activation
    model = make_spec(fields, {}, where)
    params = finish_import(model, _cell_from_flax(model, tree, where, num_inputs))
    leaves = {np.dtype(a.dtype).name for a in iter_leaves(tree)}
    dtype = "float64" if leaves == {"float64"} and facts.dtype in (None, "float64") else "float32"
    lstm = facts.cell == "lstm"

    def step(x_t, state):
        with precision(dtype):
            if state is None:
                carry = cell.initialize_carry(jax.random.PRNGKey(0), x_t.shape)
            else:
                arrays = [jnp.asarray(a) for a in state]
                carry = (arrays[1], arrays[0]) if lstm else arrays[0]
            carry, _ = cell.apply(variables, carry, jnp.asarray(x_t))
            return (np.asarray(carry[1]), np.asarray(carry[0])) if lstm else (np.asarray(carry),)

    return CellRead(model, params, dtype, step, f"flax {flax.__version__} (jax {jax.__version__})", where)


def read(source, *, variables=None, **known):
    """A ``Loaded`` from a linen cell and its ``variables`` (a bound cell's own when omitted), or a list
    of cells with a list of variables (a hand-made stack), proven by the loop of ``cell.apply`` calls."""
    import multirnn.backends

    multirnn.backends.get("jax")
    cells = as_list(source)
    if isinstance(source, (list, tuple)):
        variables = [None] * len(cells) if variables is None else list(variables)
        if len(variables) != len(cells):
            raise ValueError(f"variables= must be a list of one entry per cell ({len(cells)}), got "
                             f"{len(variables)}")
    else:
        variables = [variables]
    return loaded_from_cells([read_cell(c, v, k if len(cells) > 1 else None)
                              for k, (c, v) in enumerate(zip(cells, variables))], known)
