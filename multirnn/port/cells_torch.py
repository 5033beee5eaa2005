"""torch ``nn.RNNCell``/``nn.GRUCell``/``nn.LSTMCell`` (live modules, and their state_dicts) read as
one-layer specs; a list of them as a hand-made stack (multirnn.port.cells). A cell's state_dict holds
the keys of layer 0 of an ``nn.RNN`` without the ``_l0`` suffix: ``weight_ih`` (G·H, in),
``weight_hh``, ``bias_ih``, ``bias_hh``, gates in the same order, the same equations (GRUCell resets
after the recurrent matmul, as nn.GRU)."""
from __future__ import annotations

import numpy as np

from ._common import UnrepresentableError, make_spec
from .cells import CellRead, as_list, loaded_from_cells

CELL_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def as_layer_state_dict(state_dict: dict) -> dict:
    """A cell's state_dict with the keys of layer 0 of the matching nn.RNN/GRU/LSTM (``weight_ih`` ->
    ``weight_ih_l0``); any other state_dict as it is."""
    if state_dict and set(state_dict) <= set(CELL_KEYS) and "weight_ih" in state_dict:
        return {key + "_l0": value for key, value in state_dict.items()}
    return state_dict


def _cell_classes() -> dict:
    import torch

    return {torch.nn.RNNCell: "rnn", torch.nn.GRUCell: "gru", torch.nn.LSTMCell: "lstm"}


def is_cell(source) -> bool:
    classes = tuple(_cell_classes())
    return bool(as_list(source)) and all(isinstance(cell, classes) for cell in as_list(source))


def read_cell(module, index: int | None = None) -> CellRead:
    """One torch cell: every attribute that changes its step read, every array consumed."""
    import torch

    from .torch import _refuse_hooks, _stack_dtype, from_torch

    base = next(cls for cls in _cell_classes() if isinstance(module, cls))
    kind = _cell_classes()[base]
    where = f"torch {type(module).__name__}" + ("" if index is None else f" (cell {index})")
    _refuse_hooks(module)
    if type(module).forward is not base.forward:
        raise UnrepresentableError(f"{where} subclasses nn.{base.__name__} and overrides forward: its "
                                   f"computation is its own; representable: nn.{base.__name__} itself")
    keys = sorted(module.state_dict())
    expected = sorted(CELL_KEYS if module.bias else CELL_KEYS[:2])
    if keys != expected:
        raise UnrepresentableError(f"{where} holds {keys}: representable: exactly {expected} (a converted "
                                   f"model would drop the rest)")
    fields = {"cell": kind, "num_inputs": module.input_size, "num_hiddens": module.hidden_size,
              "bias": bool(module.bias)}
    if kind == "rnn":
        if module.nonlinearity not in ("tanh", "relu"):
            raise UnrepresentableError(f"{where} has nonlinearity={module.nonlinearity!r}: representable: "
                                       f"'tanh' or 'relu'")
        fields["nonlinearity"] = module.nonlinearity
    if kind == "gru":
        fields["reset_after"] = True  # nn.GRUCell resets after the recurrent matmul, as nn.GRU
    model = make_spec(fields, {}, where)
    dtype = _stack_dtype(module, "")
    params = from_torch(model, as_layer_state_dict(module.state_dict()))
    device = next(module.parameters()).device

    def step(x_t, state):
        hx = None if state is None else tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device)
                                              for a in state)
        with torch.no_grad():
            out = module(torch.from_numpy(x_t).to(device), None if hx is None else
                         (hx if kind == "lstm" else hx[0]))
        return tuple(a.cpu().numpy() for a in (out if kind == "lstm" else (out,)))

    return CellRead(model, params, dtype, step, f"torch {torch.__version__}", where)


def read(source, *, variables=None, **known):
    """A ``Loaded`` from a torch cell or a list of them (a hand-made stack), proven by the loop."""
    if variables is not None:
        raise ValueError("variables= goes with a Flax linen module, not with a torch cell")
    cells = as_list(source)
    return loaded_from_cells([read_cell(c, k if len(cells) > 1 else None) for k, c in enumerate(cells)],
                             known)
