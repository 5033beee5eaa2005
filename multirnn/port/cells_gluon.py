"""Gluon ``rnn.RNNCell``/``rnn.GRUCell``/``rnn.LSTMCell`` read as one-layer specs; a list of them, or
a ``rnn.SequentialRNNCell``/``HybridSequentialRNNCell`` of them, as a stack (multirnn.port.cells). A
cell's parameters are layer 0's of ``rnn.RNN/GRU/LSTM`` without the ``l0_`` prefix (``i2h_weight``
(G·H, in), ``h2h_weight``, ``i2h_bias``, ``h2h_bias``), gates in the same order, the same equations
(GRUCell resets after the h2h matmul)."""
from __future__ import annotations

import numpy as np

from ._common import GATES_PER_CELL, UnrepresentableError, make_spec
from .cells import CellRead, as_list, loaded_from_cells

_ACTIVATIONS = {"rnn": {"_activation": ("tanh", "relu")},
                "lstm": {"_activation": ("tanh",), "_recurrent_activation": ("sigmoid",)}, "gru": {}}


def _rnn():
    from .gluon import _mxnet

    return _mxnet().gluon.rnn


def _kinds() -> dict:
    rnn = _rnn()
    return {rnn.RNNCell: "rnn", rnn.GRUCell: "gru", rnn.LSTMCell: "lstm"}


def _sequential(cell) -> bool:
    rnn = _rnn()
    return type(cell) in (rnn.SequentialRNNCell, rnn.HybridSequentialRNNCell)


def is_cell(source) -> bool:
    rnn = _rnn()
    return bool(as_list(source)) and all(isinstance(cell, rnn.RecurrentCell) for cell in as_list(source))


def read_cell(cell, index: int | None = None) -> CellRead:
    from .gluon import _mxnet, from_gluon

    mx = _mxnet()

    where = f"Gluon {type(cell).__name__} {cell.prefix!r}" + ("" if index is None else f" (cell {index})")
    kind = _kinds().get(type(cell))
    if kind is None:
        raise UnrepresentableError(f"{where} is not representable: multirnn reads gluon.rnn.RNNCell, "
                                   f"GRUCell and LSTMCell (and a SequentialRNNCell of them); modifier and "
                                   f"wrapper cells (Zoneout, Residual, Dropout, Bidirectional) and "
                                   f"subclasses compute something else")
    if cell._forward_hooks or cell._forward_pre_hooks:
        raise UnrepresentableError(f"{where} has forward (pre-)hooks: they can change what it computes")
    for attribute, allowed in _ACTIVATIONS[kind].items():
        if getattr(cell, attribute) not in allowed:
            raise UnrepresentableError(f"{where} has {attribute[1:]}={getattr(cell, attribute)!r}: "
                                       f"representable: {' or '.join(map(repr, allowed))}")
    registered = {id(p) for p in cell._reg_params.values()}
    unused = sorted(name for name, p in cell.collect_params().items() if id(p) not in registered)
    if unused or sorted(cell._reg_params) != sorted(("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")):
        raise UnrepresentableError(f"{where} holds parameters {sorted(cell.collect_params())}: "
                                   f"representable: exactly i2h/h2h weight and bias")
    try:
        arrays = {f"l0_{name}": p.data().asnumpy() for name, p in cell._reg_params.items()}
    except mx.gluon.parameter.DeferredInitializationError as exc:
        raise ValueError(f"{where} is not initialized yet (deferred: input_size=0); give input_size= or "
                         f"run it once before converting") from exc
    dtypes = sorted({a.dtype.name for a in arrays.values()})
    if len(dtypes) != 1 or dtypes[0] not in ("float32", "float64"):
        raise UnrepresentableError(f"{where} has parameters of dtype {dtypes}: representable: one of "
                                   f"float32, float64")
    gates = GATES_PER_CELL[kind]
    fields = {"cell": kind, "num_inputs": int(arrays["l0_i2h_weight"].shape[1]),
              "num_hiddens": int(arrays["l0_h2h_weight"].shape[0]) // gates}
    if kind == "rnn":
        fields["nonlinearity"] = cell._activation
    if kind == "gru":
        fields["reset_after"] = True  # Gluon's GRUCell resets after the h2h matmul
    model = make_spec(fields, {}, where)
    params = from_gluon(model, arrays)
    dtype = dtypes[0]
    ctx = next(iter(cell.collect_params().values())).list_ctx()[0]

    def step(x_t, state):
        states = (cell.begin_state(batch_size=x_t.shape[0], ctx=ctx, dtype=dtype) if state is None
                  else [mx.nd.array(a, ctx=ctx, dtype=dtype) for a in state])
        with mx.autograd.predict_mode():
            _, new = cell(mx.nd.array(x_t, ctx=ctx, dtype=dtype), states)
        return tuple(a.asnumpy() for a in new)

    return CellRead(model, params, dtype, step, f"mxnet {mx.__version__}", where)


def read(source, *, variables=None, **known):
    """A ``Loaded`` from a Gluon cell, a list of them or a SequentialRNNCell (a stack), proven by the
    loop of cell calls."""
    if variables is not None:
        raise ValueError("variables= goes with a Flax linen module, not with a Gluon cell")
    cells = [c for item in as_list(source) for c in (item._children.values() if _sequential(item) else [item])]
    return loaded_from_cells([read_cell(c, k if len(cells) > 1 else None) for k, c in enumerate(cells)],
                             known)
