"""The recurrence as one hybridized MXNet graph per (spec, input shape): the time loop is unrolled into
a symbolic graph once, and every later call is a single CachedOp (no per-step Python, no per-op
dispatch), forward and backward alike. Imported only through the mxnet backend."""
from __future__ import annotations

from collections import OrderedDict

import mxnet as mx

from multirnn import recurrence


class _Sym:
    """A Symbol whose + - * broadcast like NDArray's (Symbol's own operators demand equal shapes)."""

    __slots__ = ("sym",)

    def __init__(self, sym):
        self.sym = sym

    def _apply(self, other, broadcast, scalar):
        if isinstance(other, _Sym):
            return _Sym(broadcast(self.sym, other.sym))
        return _Sym(scalar(self.sym, other))

    def __add__(self, other):
        return self._apply(other, mx.sym.broadcast_add, lambda a, b: a + b)

    __radd__ = __add__

    def __mul__(self, other):
        return self._apply(other, mx.sym.broadcast_mul, lambda a, b: a * b)

    __rmul__ = __mul__

    def __sub__(self, other):
        return self._apply(other, mx.sym.broadcast_sub, lambda a, b: a - b)

    def __rsub__(self, other):  # only scalar - symbol reaches here
        return _Sym(other - self.sym)


class SymbolOps:
    """multirnn.recurrence's Ops on wrapped Symbols, for a sequence of ``steps`` steps."""

    def __init__(self, steps: int, hidden: int):
        self.steps, self.hidden = steps, hidden

    @staticmethod
    def matmul(a, b):
        return _Sym(mx.sym.dot(a.sym, b.sym))  # contracts a's last axis with b's first, any rank

    @staticmethod
    def tanh(x):
        return _Sym(mx.sym.Activation(x.sym, act_type="tanh"))

    @staticmethod
    def relu(x):
        return _Sym(mx.sym.Activation(x.sym, act_type="relu"))

    @staticmethod
    def sigmoid(x):
        return _Sym(mx.sym.Activation(x.sym, act_type="sigmoid"))

    @staticmethod
    def concat(xs, axis):
        parts = [x.sym for x in xs]
        if axis == 0 or len(parts) == 1:
            return _Sym(mx.sym.concat(*parts, dim=axis))
        # The recurrence joins along the last axis (axis=1 of 2-D weights, -1 of outputs) parts of one
        # width. MXNet's concat there is ~8x slower than stacking them on a new axis before the last
        # and merging the two (right-aligned reshape: -3 merges, -2 keeps the rest).
        return _Sym(mx.sym.reshape(mx.sym.stack(*parts, axis=-2), shape=(-2, -3), reverse=True))

    def split(self, x, n):
        # The recurrence only splits gate blocks of width H. slice_axis, not split: split's backward
        # is several times slower in this build, and a Symbol has no shape to derive the width from.
        return [_Sym(mx.sym.slice_axis(x.sym, axis=-1, begin=k * self.hidden, end=(k + 1) * self.hidden))
                for k in range(n)] if n > 1 else [x]

    def scan(self, step, carry, xs, reverse=False):
        if self.steps == 1:
            inputs = [mx.sym.squeeze(xs.sym, axis=0)]
        else:
            parts = mx.sym.split(xs.sym, num_outputs=self.steps, axis=0, squeeze_axis=True)
            inputs = [parts[t] for t in range(self.steps)]
        ys = []
        for x in (reversed(inputs) if reverse else inputs):
            carry, y = step(carry, _Sym(x))
            ys.append(y.sym)
        return carry, _Sym(mx.sym.stack(*(ys[::-1] if reverse else ys), axis=0))


class Unrolled(mx.gluon.HybridBlock):
    """``block(xs, *params in canonical order, *flat state arrays) -> (ys, *final state arrays)``."""

    def __init__(self, model, names, steps):
        super().__init__()
        self.model, self.names, self.steps = model, tuple(names), steps

    def hybrid_forward(self, F, xs, *arrays):
        arrays = [_Sym(a) for a in arrays]
        params = dict(zip(self.names, arrays[:len(self.names)]))
        state, width = arrays[len(self.names):], self.model.state_arrays
        flat = [tuple(state[i:i + width]) for i in range(0, len(state), width)]
        ops = SymbolOps(self.steps, self.model.num_hiddens)
        ys, finals = recurrence.run(ops, self.model, params, _Sym(xs), flat)
        return (ys.sym,) + tuple(a.sym for unit in finals for a in unit)


class GraphCache:
    """Hybridized Unrolled blocks by (spec, parameter names, input shape, dtype); least recently used
    dropped past ``size`` (each holds its own preallocated buffers)."""

    def __init__(self, size: int = 32):
        self.size, self.blocks = size, OrderedDict()

    def run(self, model, params: dict, xs, flat_state):
        key = (model, tuple(params), xs.shape, xs.dtype)
        block = self.blocks.pop(key, None)
        if block is None:
            block = Unrolled(model, params, xs.shape[0])
            block.hybridize(static_alloc=True, static_shape=True)
        self.blocks[key] = block
        while len(self.blocks) > self.size:
            self.blocks.popitem(last=False)
        out = block(xs, *params.values(), *(a for unit in flat_state for a in unit))
        out = out if isinstance(out, (list, tuple)) else [out]
        width = model.state_arrays
        finals = [tuple(out[1 + i:1 + i + width]) for i in range(0, len(out) - 1, width)]
        return out[0], finals
