"""A Gluon recurrent cell of a unidirectional multirnn spec: ``begin_state(batch_size)``,
``output, states = cell(x_t, states)``, ``cell.unroll(...)``, as ``mxnet.gluon.rnn.GRUCell``. Imported only
through multirnn.native_cell (after backends.mxnet_backend, which makes MXNet importable).

Speed decides two things. native_cell hands the cell over hybridized (a ``HybridRecurrentCell``, as
Gluon's own): one CachedOp per step. And its weights are held transposed, (out, in), the layout of
Gluon's own cells, because MXNet's ``FullyConnected`` (oneDNN) multiplies by them about 4x faster
than ``dot`` multiplies by the canonical (in, out) arrays, and transposing or concatenating on every
call would copy every weight (MXNet has no parameter version to cache a copy under, and an optimizer
updates parameters in place). So the step graph multiplies by each gate's weight and concatenates
nothing (``_GateBlocks``); ``canonical_params()`` and ``canonical_grads()`` give the canonical arrays."""
from __future__ import annotations

import mxnet as mx

from multirnn import stepping
from multirnn.backends import get

from .gluon_block import hold_arrays
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
    """SymbolOps for one step (multirnn.stepping) on the cell's transposed weights. In a step every
    concatenation is of gate blocks along the last axis (recurrence.input_projection's weights and
    biases, make_step's recurrent weights) and every matmul's right operand is a weight (out=H, in)."""

    def concat(self, xs, axis):
        return _GateBlocks(xs)

    def matmul(self, a, b):
        if isinstance(b, _GateBlocks):
            return _GateBlocks(self.matmul(a, w) for w in b.parts)
        return _Sym(mx.sym.FullyConnected(a.sym, b.sym, no_bias=True, num_hidden=self.hidden))

    def split(self, x, n):
        if isinstance(x, _GateBlocks):
            if len(x.parts) != n:
                raise ValueError(f"{len(x.parts)} gate blocks split into {n}")
            return x.parts
        return super().split(x, n)


def _is_weight(value) -> bool:
    return value.ndim == 2  # the canonical weights; biases (and h_0/c_0) are 1-D


class RecurrentCell(mx.gluon.rnn.HybridRecurrentCell):
    """States are a list, one entry per state array: the flat state of multirnn.state, unit by unit,
    h before c. ``cell.weights[name]`` is the Parameter of canonical ``name`` ('.' written as '__'
    after Gluon's own block prefix), a weight transposed."""

    def __init__(self, model, params, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self._dtype = next(iter(params.values())).dtype
        self.weights = hold_arrays(self, {name: value.T if _is_weight(value) else value
                                          for name, value in params.items()})

    def canonical_params(self) -> dict:
        """The cell's params under the canonical names and shapes, as NumPy arrays."""
        return self._canonical({name: param.data() for name, param in self.weights.items()})

    def canonical_grads(self) -> dict:
        """The gradients after ``backward()``, under the canonical names and shapes, as NumPy arrays."""
        return self._canonical({name: param.grad() for name, param in self.weights.items()})

    @staticmethod
    def _canonical(arrays: dict) -> dict:
        return {name: a.asnumpy().T if a.ndim == 2 else a.asnumpy() for name, a in arrays.items()}

    def state_info(self, batch_size=0):
        info = {"shape": (batch_size, self.model.num_hiddens), "__layout__": "NC", "dtype": self._dtype}
        return [dict(info) for _ in range(self.model.state_arrays * self.model.num_layers)]

    def _alias(self):  # Gluon's default name prefix (called before __init__ has set self.model)
        return "multirnn_cell"

    def hybrid_forward(self, F, inputs, states, **held):
        per_unit = self.model.state_arrays
        flat = [tuple(states[k:k + per_unit]) for k in range(0, len(states), per_unit)]
        params = {name: held[name.replace(".", "__")] for name in self.weights}
        if F is mx.nd:  # unhybridized: the canonical arrays back (a copy per call), the backend's ops
            params = {k: v.T if _is_weight(v) else v for k, v in params.items()}
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
