"""The recurrence as one hybridized MXNet graph per (spec, input shape), every later call a single
CachedOp (no per-step Python, no per-op dispatch), forward and backward alike. Each layer runs in
MXNet's fused ``RNN`` operator (oneDNN on CPU, what Gluon's rnn layers call) where it computes the
spec exactly (recurrence.fused_path); otherwise (d2l's reset-before GRU, or with fused kernels
switched off) the time loop is unrolled into the graph, step by step. Imported only through the mxnet
backend."""
from __future__ import annotations

import warnings
from collections import OrderedDict

import mxnet as mx
import numpy as np

from multirnn import packed, recurrence

from ._base import AbstractBackend


def fused_kernel_accepts(model, dtype) -> bool:
    """MXNet 1.9.1's rnn_relu kernel loses float64 precision (errors ~1e-7, as in float32), and on CPU
    its projected LSTM (projection_size) runs forward only ("No training support for LSTM with
    projection on CPU currently"): the unrolled graph runs those instead."""
    relu64 = model.cell == "rnn" and model.nonlinearity == "relu" and np.dtype(dtype) == np.float64
    return not (relu64 or model.proj_size)


class _Sym:
    """A Symbol whose + - * broadcast like NDArray's (Symbol's own operators demand equal shapes), with
    its static ``shape`` where the ops that multirnn.packed's segments use know it (else None)."""

    __slots__ = ("sym", "shape")

    def __init__(self, sym, shape=None):
        self.sym, self.shape = sym, shape

    def _apply(self, other, broadcast, scalar):
        # the left operand's shape: the recurrence adds and multiplies by no larger operands (biases,
        # gates, masks), and a wrong static shape would fail the graph's binding, not pass silently
        if isinstance(other, _Sym):
            return _Sym(broadcast(self.sym, other.sym), self.shape)
        return _Sym(scalar(self.sym, other), self.shape)

    def __add__(self, other):
        return self._apply(other, mx.sym.broadcast_add, lambda a, b: a + b)

    __radd__ = __add__

    def __mul__(self, other):
        return self._apply(other, mx.sym.broadcast_mul, lambda a, b: a * b)

    __rmul__ = __mul__

    def __sub__(self, other):
        return self._apply(other, mx.sym.broadcast_sub, lambda a, b: a - b)

    def __rsub__(self, other):  # only scalar - symbol reaches here
        return _Sym(other - self.sym, self.shape)


def fused_kernel(F, model, kernel_units: list):
    """One layer, one direction or both, in MXNet's fused RNN operator; ``F`` is mx.sym or mx.nd and
    ``kernel_units`` each unit's recurrence.kernel_weights. Returns ``run(xs, states) -> (ys, final
    state per unit)``.

    The operator takes one flat vector: every unit's W_ih (G·H, in) and W_hh (G·H, H), then every
    unit's b_ih and b_hh (always both: a missing one is zero). It is packed once here (a few ops), and
    autograd carries the gradients back to the canonical arrays."""
    flat = lambda w: F.reshape(F.transpose(w), shape=(-1,))  # noqa: E731  (in, G·H) -> rows of (G·H, in)
    weights, biases = [], []
    for w_ih, w_hh, b_ih, b_hh in kernel_units:
        weights += [flat(w_ih), flat(w_hh)]
        zeros = F.zeros_like(F.sum(w_hh, axis=0))  # (G·H,) in the right dtype, symbol or not
        biases += [zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh]
    width, units = model.state_arrays, len(kernel_units)
    packed = F.concat(*weights, *biases, dim=0)
    mode = f"rnn_{model.nonlinearity}" if model.cell == "rnn" else model.cell

    def run(xs, states):
        initial = [F.stack(*(s[i] for s in states), axis=0) for i in range(width)]  # (units, B, H)
        out = F.RNN(xs, packed, *initial, state_size=model.num_hiddens, num_layers=1,
                    bidirectional=units == 2, mode=mode, state_outputs=True)
        ends = [F.split(out[1 + i], num_outputs=2, axis=0, squeeze_axis=True) if units == 2
                else [F.squeeze(out[1 + i], axis=0)] for i in range(width)]
        return out[0], [tuple(ends[i][u] for i in range(width)) for u in range(units)]
    return run


def take(F, x, indices, axis: int):
    """``F.take`` along ``axis`` as a take along axis 0 between two swapaxes: MXNet 1.9.1's take along
    axis 1 of a (T, B, D) batch, forward and backward, cost 0.23x a full LSTM pass of the issue's size;
    this way 0.04x (measured)."""
    if axis == 0:
        return F.take(x, indices, axis=0)
    return F.swapaxes(F.take(F.swapaxes(x, 0, axis), indices, axis=0), 0, axis)


class SymbolOps(AbstractBackend):
    """multirnn.recurrence's Ops on wrapped Symbols, for a sequence of ``steps`` steps (a tracer, not a
    registered backend: what it lacks raises the base class's NotImplementedError)."""

    name = "mxnet-symbol"
    has_fused_kernel = True
    fused_kernel_accepts = staticmethod(fused_kernel_accepts)

    def __init__(self, steps: int, hidden: int, dtype, use_fused_kernels: bool = True):
        super().__init__()
        self.steps, self.hidden, self.dtype = steps, hidden, dtype
        self.use_fused_kernels = use_fused_kernels

    def dtype_of(self, x):
        return np.dtype(self.dtype)  # a Symbol has no dtype until bound

    def fused_kernel(self, model, units):
        raw = lambda a: None if a is None else a.sym  # noqa: E731
        run = fused_kernel(mx.sym, model, [tuple(map(raw, recurrence.kernel_weights(self, model, p)))
                                           for p in units])

        def run_symbols(xs, states):
            ys, finals = run(xs.sym, [tuple(map(raw, s)) for s in states])
            shape = None if xs.shape is None else (*xs.shape[:2], model.num_hiddens * len(units))
            state_shape = None if xs.shape is None else (xs.shape[1], model.num_hiddens)
            return _Sym(ys, shape), [tuple(_Sym(a, state_shape) for a in s) for s in finals]
        return run_symbols

    @staticmethod
    def matmul(a, b):  # contracts a's last axis with b's first, any rank; the width a weight's
        shape = None if a.shape is None else a.shape[:-1] + (None if b.shape is None else b.shape[-1],)
        return _Sym(mx.sym.dot(a.sym, b.sym), shape)

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
        shape = None
        if all(x.shape is not None and x.shape[axis] is not None for x in xs):
            shape = list(xs[0].shape)
            shape[axis] = sum(x.shape[axis] for x in xs)
            shape = tuple(shape)
        known = shape is not None and all(None not in x.shape for x in xs)
        if known and len(shape) > 2 and axis % len(shape) > 0 and len(parts) > 1:
            # joined along a later axis of 3-D parts (multirnn.packed's segments: padded rows, an
            # input column), MXNet's concat is slow: 5.3 ms for (64, 64, 128) + (64, 64, 1), where as
            # 2-D parts, (rows before the axis, the rest), along their second axis it is 0.3 ms
            lead = int(np.prod(shape[:axis % len(shape)]))
            flat = [mx.sym.reshape(p, shape=(lead, -1)) for p in parts]
            return _Sym(mx.sym.reshape(mx.sym.concat(*flat, dim=1), shape=shape), shape)
        # without a shape, axis 1 is a 2-D weight's last axis (the recurrence's gate concatenations)
        last = axis == -1 or axis == (1 if xs[0].shape is None else len(xs[0].shape) - 1)
        if not last or len(parts) == 1:
            return _Sym(mx.sym.concat(*parts, dim=axis), shape)
        # The recurrence joins along the last axis (axis=1 of 2-D weights, -1 of outputs) parts of one
        # width. MXNet's concat there is ~8x slower than stacking them on a new axis before the last
        # and merging the two (right-aligned reshape: -3 merges, -2 keeps the rest).
        return _Sym(mx.sym.reshape(mx.sym.stack(*parts, axis=-2), shape=(-2, -3), reverse=True), shape)

    @staticmethod
    def take(x, indices, axis):
        return _Sym(take(mx.sym, x.sym, indices.sym, axis), x.shape)

    @staticmethod
    def split_sizes(x, sizes, axis):
        parts, begin = [], 0
        for size in sizes:
            shape = None if x.shape is None else x.shape[:axis] + (size,) + x.shape[axis + 1:]
            parts.append(_Sym(mx.sym.slice_axis(x.sym, axis=axis, begin=begin, end=begin + size), shape))
            begin += size
        return parts

    def zeros(self, shape, like):
        return _Sym(mx.sym.zeros(shape, dtype=self.dtype), tuple(shape))

    @staticmethod
    def reverse_padded(x, lengths):  # lengths: the graph's input, in x's dtype (GraphCache.run)
        return _Sym(mx.sym.SequenceReverse(x.sym, sequence_length=lengths.sym, use_sequence_length=True),
                    x.shape)

    @staticmethod
    def mask_padded(x, lengths):  # a select, 9x faster than a broadcast multiply by the (T, B, 1) mask
        return _Sym(mx.sym.SequenceMask(x.sym, sequence_length=lengths.sym, use_sequence_length=True), x.shape)

    @staticmethod
    def last_valid(x, lengths):  # no read at index -1 where a length is 0
        last = mx.sym.SequenceLast(x.sym, sequence_length=mx.sym.maximum(lengths.sym, 1),
                                   use_sequence_length=True)
        return _Sym(last, None if x.shape is None else x.shape[1:])

    @staticmethod
    def flip_time(x):
        return _Sym(mx.sym.reverse(x.sym, axis=0))

    def split(self, x, n):
        # The recurrence only splits gate blocks of width H. slice_axis, not split: split's backward
        # is several times slower in this build, and a Symbol has no shape to derive the width from.
        return [_Sym(mx.sym.slice_axis(x.sym, axis=-1, begin=k * self.hidden, end=(k + 1) * self.hidden))
                for k in range(n)] if n > 1 else [x]

    def scan(self, step, carry, xs, reverse=False):
        steps = xs.shape[0] if xs.shape is not None else self.steps  # a segment's, or the sequence's
        if steps == 1:
            inputs = [mx.sym.squeeze(xs.sym, axis=0)]
        else:
            parts = mx.sym.split(xs.sym, num_outputs=steps, axis=0, squeeze_axis=True)
            inputs = [parts[t] for t in range(steps)]
        ys, shapes = [], [a.shape for a in carry]  # a step keeps the carry's shapes; y is its first
        for x in (reversed(inputs) if reverse else inputs):
            carry, y = step(carry, _Sym(x))
            ys.append(y.sym)
        carry = tuple(_Sym(a.sym, shape) for a, shape in zip(carry, shapes))
        return carry, _Sym(mx.sym.stack(*(ys[::-1] if reverse else ys), axis=0),
                           None if shapes[0] is None else (steps,) + tuple(shapes[0]))


class Unrolled(mx.gluon.HybridBlock):
    """``block(xs, *params in canonical order, *flat state arrays) -> (ys, *final state arrays)``;
    with ``segments`` (a gradient pass over a padded batch, recurrence.reads_valid_steps_only; no final
    state): ``()``: ``block(..., lengths) -> ys``, each layer's whole batch unmasked; a plan's coarse
    (sizes, rows): ``block(..., sorted lengths) -> ys`` on a batch sorted on the host, each segment one
    kernel call (or scan) on the sequences still running (multirnn.packed.run_past_ends).
    The whole-batch graph takes lengths only where a unit reverses each sequence within its length
    (Gluon warns of an unused input); without one it is the plain graph. ``frozen`` (a forward pass,
    recurrence.runs_to_ends): ``block(..., sorted lengths[, valid, margin]) -> (ys, *final state
    arrays)`` on a batch sorted on the host with zeros at its padded steps, the coarse ``segments``
    run past each sequence's end with exact outputs and final states (multirnn.packed.run_to_ends;
    an LSTM's valid steps (T, B, 1) and margin (1, 1))."""

    def __init__(self, model, names, shape, dtype, use_fused_kernels=True, segments=None, frozen=False):
        super().__init__()
        self.model, self.names, self.shape, self.dtype = model, tuple(names), shape, dtype
        self.use_fused_kernels, self.segments, self.frozen = use_fused_kernels, segments, frozen

    def hybrid_forward(self, F, xs, *arrays):
        steps, batch = self.shape[:2]
        arrays = [_Sym(a) for a in arrays]
        ops = SymbolOps(steps, self.model.num_hiddens, self.dtype, self.use_fused_kernels)
        padding = None
        if self.frozen:  # the batch sorted, its padded steps zero, on the host (AbstractBackend.forward)
            margin, valid = 0.0, None  # the GRU and tanh RNN: nothing to freeze
            if self.model.cell == "lstm":
                margin, valid = arrays.pop(), _Sym(arrays.pop().sym, (steps, batch, 1))
            lengths = arrays.pop()
            plan = packed.Plan(None, None, lengths, (), (), None, self.segments)
            padding = recurrence.Padding(lengths, None, valid, plan, freeze=margin)
        elif self.segments == ():  # without a reversed unit the plain graph: lengths only reverse
            if _reverses(self.model):
                padding = recurrence.Padding(arrays.pop(), None, None, packed.WHOLE_BATCH, outputs_only=True)
        elif self.segments is not None:  # the batch sorted on the host (AbstractBackend.gradients)
            lengths = arrays.pop()
            plan = packed.Plan(None, None, lengths, (), (), None, self.segments)
            padding = recurrence.Padding(lengths, None, None, plan, outputs_only=True)
        params = dict(zip(self.names, arrays[:len(self.names)]))
        state, width = arrays[len(self.names):], self.model.state_arrays
        widths = self.model.state_widths * (len(state) // width)  # a projected h is P wide, c H wide
        state = [_Sym(a.sym, (batch, w)) for a, w in zip(state, widths)]  # shapes for the segments
        flat = [tuple(state[i:i + width]) for i in range(0, len(state), width)]
        ys, finals = recurrence.run(ops, self.model, params, _Sym(xs, self.shape), flat, padding=padding)
        if self.segments is not None and not self.frozen:
            return ys.sym
        return (ys.sym,) + tuple(a.sym for unit in finals for a in unit)


def _reverses(model) -> bool:
    """Whether a unit reads each sequence reversed within its length (recurrence.run_unit)."""
    return model.bidirectional or model.reverse


class GraphCache:
    """Hybridized Unrolled blocks by (spec, parameter names, input shape, dtype, segments); least
    recently used dropped past ``size`` (each holds its own preallocated buffers)."""

    def __init__(self, size: int = 32):
        self.size, self.blocks = size, OrderedDict()

    def run(self, model, params: dict, xs, flat_state, use_fused_kernels=True, padding=None):
        """(ys, flat final state); with ``padding`` (recurrence.Padding, its plan recurrence.schedule's
        for a gradient pass: WHOLE_BATCH or coarse segments), Unrolled's gradient pass over the padded
        batch: (ys, None per unit); with a ``padding.freeze`` (recurrence.runs_to_ends), its forward
        pass: (ys, flat final state)."""
        # a learned h_0/c_0 reaches the graph inside flat_state (AbstractBackend._run), not as a param
        learned = set(model.initial_state_names)
        params = {k: v for k, v in params.items() if k.rsplit(".", 1)[-1] not in learned}
        segments, extra, frozen = None, [], padding is not None and recurrence.runs_to_ends(padding)
        if frozen:
            plan = padding.plan
            segments = plan.coarse
            extra = [plan.sorted_lengths.astype(xs.dtype)]
            extra += [padding.valid, padding.freeze] if model.cell == "lstm" else []
        elif padding is not None:
            plan = padding.plan
            if plan is packed.WHOLE_BATCH:
                segments, extra = (), [padding.lengths.astype(xs.dtype)] if _reverses(model) else []
            elif plan.order is None:  # sorted on the host (AbstractBackend.gradients)
                segments, extra = plan.coarse, [plan.sorted_lengths.astype(xs.dtype)]
            else:
                raise RuntimeError("the segmented gradient graph runs a batch sorted longest first on "
                                   "the host (AbstractBackend.gradients); this plan has an order")
        key = (model, tuple(params), xs.shape, xs.dtype, use_fused_kernels, segments, frozen)
        block = self.blocks.pop(key, None)
        if block is None:
            block = Unrolled(model, params, xs.shape, xs.dtype, use_fused_kernels, segments, frozen)
            block.hybridize(static_alloc=True, static_shape=True)
        self.blocks[key] = block
        while len(self.blocks) > self.size:
            self.blocks.popitem(last=False)
        with warnings.catch_warnings():
            if segments and not frozen and not _reverses(model):  # its sorted lengths only mark a padded
                # batch there (the forward graph reads them: packed.run_to_ends)
                warnings.filterwarnings("ignore", "The .*-th input to HybridBlock is not used", UserWarning)
            out = block(xs, *params.values(), *(a for unit in flat_state for a in unit), *extra)
        if padding is not None and not frozen:
            return out, [None] * len(flat_state)
        out = out if isinstance(out, (list, tuple)) else [out]
        width = model.state_arrays
        finals = [tuple(out[1 + i:1 + i + width]) for i in range(0, len(out) - 1, width)]
        return out[0], finals
