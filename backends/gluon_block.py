"""Gluon ``HybridBlock`` of a multirnn spec. Imported only through the mxnet backend.

Unhybridized, each call runs the backend's cached hybridized graph for its input shape (mxnet_graph's
GraphCache), so it is fast either way. ``hybridize()`` makes the whole block one CachedOp whose
parameters are Gluon's own, so ``export`` writes a symbol + params pair that ``SymbolBlock.imports``
runs without multirnn. A Symbol has no shape, so the unrolled graph is built for one sequence length
(and with or without a state input): calling with another clears the cached graph and builds again."""
from __future__ import annotations

import mxnet as mx
import numpy as np

from multirnn import recurrence
from multirnn.backends import get
from multirnn.state import flatten_state, nest_state

from .mxnet_graph import SymbolOps, _Sym


def hold_arrays(block, arrays: dict) -> dict:
    """Gluon Parameters of ``block`` holding ``arrays``, named like them with '.' written as '__' and
    set as attributes (hybrid_forward receives them as keyword arguments): name -> Parameter."""
    held = {}
    with block.name_scope():
        for name, value in arrays.items():
            param = block.params.get(name.replace(".", "__"), shape=value.shape, dtype=value.dtype)
            setattr(block, name.replace(".", "__"), param)
            held[name] = param
    block.initialize(mx.init.Zero())
    for name, value in arrays.items():
        held[name].set_data(mx.nd.array(np.ascontiguousarray(value), dtype=value.dtype))
    return held


class RecurrentBlock(mx.gluon.HybridBlock):
    """``block(inputs, state=None) -> (outputs, state)``; parameters under the canonical names with '.'
    written as '__' (after Gluon's own block prefix); ``block.canonical[name]`` is each one. The
    exported graph takes ``data`` (and the flat state arrays if it was built with a state) and returns
    ``[outputs, *flat final state]``."""

    def __init__(self, model, params, **kwargs):
        super().__init__(**kwargs)
        self.model, self._dtype = model, np.dtype(next(iter(params.values())).dtype)
        self.canonical, self._graph_key = hold_arrays(self, params), None

    def __call__(self, inputs, state=None, lengths=None, dropout_seed=None):
        """``lengths`` (ints (batch,)) and ``dropout_seed`` (training-mode dropout with the masks of
        multirnn.forward(training=True, dropout_seed=...)) run the unhybridized block: a hybridized
        graph is built for full-length batches without dropout. (Gluon's __call__ takes no keywords.)"""
        if lengths is None and dropout_seed is None:
            return super().__call__(inputs) if state is None else super().__call__(inputs, state)
        if self._active:
            raise ValueError("lengths and dropout_seed need the unhybridized block: hybridize() "
                             "builds one graph for full-length batches without dropout")
        params = {name: param.data() for name, param in self.canonical.items()}
        return get("mxnet").run_user(self.model, params, inputs, state, lengths, dropout_seed)

    def forward(self, inputs, state=None):
        flat_state = [] if state is None else [a for unit in flatten_state(self.model, state) for a in unit]
        # the unrolled graph fixes the length, the state arity and whether layers run the fused kernel
        key = (inputs.shape[1 if self.model.batch_first else 0], state is None, get("mxnet").use_fused_kernels)
        if key != self._graph_key and self._active:  # the cached graph is for another one of those
            self._clear_cached_op()
        self._graph_key = key
        out = super().forward(inputs, *flat_state)
        width = self.model.state_arrays
        return out[0], nest_state(self.model, [tuple(out[i:i + width]) for i in range(1, len(out), width)])

    def hybrid_forward(self, F, inputs, *flat_state, **weights):
        model = self.model
        params = {name: weights[name.replace(".", "__")] for name in self.canonical}
        width = model.state_arrays
        state = [tuple(flat_state[i:i + width]) for i in range(0, len(flat_state), width)] or None
        if F is mx.nd:
            ys, finals = get("mxnet").run_user(model, params, inputs, state and nest_state(model, state))
            return (ys,) + tuple(a for unit in flatten_state(model, finals) for a in unit)
        xs = F.swapaxes(inputs, 0, 1) if model.batch_first else inputs
        if state is None:
            column = F.zeros_like(F.slice_axis(F.sum(xs, axis=0), axis=-1, begin=0, end=1))  # (batch, 1)
            zeros = tuple(F.broadcast_axis(column, axis=1, size=size)  # (batch, size) without a shape
                          for size in model.state_widths)
            state = [zeros for _ in model.units()]
        ops = SymbolOps(self._graph_key[0], model.num_hiddens, self._dtype, self._graph_key[2])
        ys, finals = recurrence.run(ops, model, {k: _Sym(v) for k, v in params.items()}, _Sym(xs),
                                    [tuple(map(_Sym, unit)) for unit in state])
        ys = F.swapaxes(ys.sym, 0, 1) if model.batch_first else ys.sym
        return (ys,) + tuple(a.sym for unit in finals for a in unit)
