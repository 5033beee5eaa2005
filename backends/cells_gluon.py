"""A Gluon recurrent cell of a unidirectional multirnn spec: ``begin_state(batch_size)``,
``output, states = cell(x_t, states)``, ``cell.unroll(...)``, as ``mxnet.gluon.rnn.GRUCell``. Imported only
through multirnn.native_cell (after backends.mxnet_backend, which makes MXNet importable).

A ``HybridRecurrentCell`` like Gluon's own, and native_cell hands it over hybridized: one CachedOp per
step. Eagerly, or in a graph that concatenates the per-gate weights as recurrence.make_step does, every
call would copy every weight (MXNet has no parameter version to cache the concatenation under, and an
optimizer updates the parameters in place), which at batch 1 costs as much as the step itself; the
graph multiplies by each gate's weight and concatenates nothing (``_GateBlocks``)."""
from __future__ import annotations

import mxnet as mx

from multirnn import stepping
from multirnn.backends import get

from .mxnet_graph import SymbolOps, _Sym


class _GateBlocks:
    """Per-gate arrays standing for their concatenation along the last axis, never built: x·[W_1 .. W_G]
    is [x·W_1 .. x·W_G], a sum is blockwise, and splitting into G gates hands the blocks back."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = list(parts)

    def __add__(self, other):
        if not isinstance(other, _GateBlocks) or len(other.parts) != len(self.parts):
            raise TypeError("gate blocks add only to gate blocks of the same count")
        return _GateBlocks(a + b for a, b in zip(self.parts, other.parts))


class _StepSymbolOps(SymbolOps):
    """SymbolOps for one step (multirnn.stepping), whose concatenations are all of gate blocks along
    the last axis (recurrence.input_projection's weights and biases, make_step's recurrent weights)."""

    def concat(self, xs, axis):
        return _GateBlocks(xs)

    def matmul(self, a, b):
        if isinstance(b, _GateBlocks):
            return _GateBlocks(super(_StepSymbolOps, self).matmul(a, w) for w in b.parts)
        return super().matmul(a, b)

    def split(self, x, n):
        if isinstance(x, _GateBlocks):
            if len(x.parts) != n:
                raise ValueError(f"{len(x.parts)} gate blocks split into {n}")
            return x.parts
        return super().split(x, n)


class RecurrentCell(mx.gluon.rnn.HybridRecurrentCell):
    """States are a list, one entry per state array: the flat state of multirnn.state, unit by unit,
    h before c. Parameters under the canonical names with '.' written as '__' (after Gluon's own
    block prefix), as backends.gluon_block.RecurrentBlock."""

    def __init__(self, model, params, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self._dtype = next(iter(params.values())).dtype
        self.canonical = {}
        with self.name_scope():
            for name, value in params.items():
                param = self.params.get(name.replace(".", "__"), shape=value.shape, dtype=value.dtype)
                setattr(self, name.replace(".", "__"), param)  # an attribute: hybrid_forward's kwargs
                self.canonical[name] = param
        self.initialize(mx.init.Zero())
        for name, value in params.items():
            self.canonical[name].set_data(mx.nd.array(value, dtype=value.dtype))

    def state_info(self, batch_size=0):
        info = {"shape": (batch_size, self.model.num_hiddens), "__layout__": "NC", "dtype": self._dtype}
        return [dict(info) for _ in range(self.model.state_arrays * self.model.num_layers)]

    def _alias(self):  # Gluon's default name prefix (called before __init__ has set self.model)
        return "multirnn_cell"

    def hybrid_forward(self, F, inputs, states, **weights):
        params = {name: weights[name.replace(".", "__")] for name in self.canonical}
        per_unit = self.model.state_arrays
        flat = [tuple(states[k:k + per_unit]) for k in range(0, len(states), per_unit)]
        if F is mx.nd:
            output, finals = stepping.step_network(get("mxnet"), self.model, params, inputs, flat)
            return output, [a for unit in finals for a in unit]
        ops = _StepSymbolOps(1, self.model.num_hiddens, self._dtype)
        output, finals = stepping.step_network(ops, self.model, {k: _Sym(v) for k, v in params.items()},
                                               _Sym(inputs), [tuple(map(_Sym, unit)) for unit in flat])
        return output.sym, [a.sym for unit in finals for a in unit]


def native_cell(model, params):
    cell = RecurrentCell(model, params)
    cell.hybridize()
    return cell
