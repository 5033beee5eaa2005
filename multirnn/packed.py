"""Padded batches through a fused kernel, the way torch's packed sequences run them, written once against
backends.protocol.

The batch is sorted longest first and cut in time wherever a sequence ends; each segment is one kernel
call on the sequences still running, a prefix of the sorted batch that shrinks segment by segment. So a
padded step is never computed, and a sequence's final state is the carry after its own last step. The
backward direction runs the same segments on each sequence reversed within its own length. The plan is
made from host lengths (NumPy) for the eager fused-kernel backends (torch, MXNet). The same sort, with
per-step ``running`` counts instead of segments, serves a scan whose batch shrinks step by step
(TensorFlow, torch's generic path: recurrence.shrinking_step); traced callers (the native layers)
run the masked scan of multirnn.recurrence. A gradient pass reads only the valid steps, so a
sequence may run past its end: it runs at most three coarse segments (``coarse_segments``,
``run_past_ends``; on TensorFlow the sizes traced scalars, the rows host ints; on JAX both static,
a trace per pattern), or the whole padded batch unmasked where cutting saves nothing
(recurrence.schedule). multirnn.gradients sorts such a batch on the host, so its plan has no order
to gather by, and so does multirnn.forward where a plan is made. MXNet's and JAX's forward passes
run the coarse segments past each sequence's end as well, exactly (``run_to_ends``): a sequence's h
is its output at its last valid step, and an LSTM's padded steps are frozen (one more input column
drives its input gate to exactly 0 and its forget gate to exactly 1, so c stays what the last valid
step left).

Measured on torch's oneDNN LSTM (T=64, B=64, lengths 32..64), a gradient pass: 0.82-0.90x (1 thread)
and 0.76-0.97x (2 threads) the full-length batch in coarse segments, 0.87-0.96x and 1.04-1.18x in
this plan's 26 exact ones, where torch's own packed LSTM costs 2.5-3.4x (benchmarks/run.py --suite
padded).
"""
from __future__ import annotations

from typing import Any, NamedTuple

Array = Any


WHOLE_BATCH = "whole batch"  # the plan recurrence.schedule chooses instead of a Plan: unmasked


class Plan(NamedTuple):
    """Host-side schedule of a padded batch (plain ints, from ``make_plan``) plus its framework arrays."""

    order: Array  # (batch,) framework ints: sorted position -> original row, longest first; None
    # where the batch came sorted (multirnn.gradients sorts it on the host: a NumPy take, not a gather
    # and its gradient in the graph)
    inverse: Array  # (batch,) framework ints: original row -> sorted position; None with order
    sorted_lengths: Array  # (batch,) framework ints, non-increasing (for reverse_padded)
    sizes: tuple  # steps of each segment (summing to the longest length); () without a fused kernel
    active: tuple  # sequences running in each segment (non-increasing); () without a fused kernel
    running: Array = None  # (steps,) framework ints: sequences running at each step, for a scan whose
    # batch shrinks (backends with ``shrinking_scan``: recurrence.shrinking_step); else None
    coarse: tuple = None  # (sizes, rows) of coarse_segments for a gradient pass (run_past_ends): host
    # ints on the eager backends (MXNet's graph is built for them); where a trace runs them
    # (TensorFlow) sizes as framework scalars and rows in quarters of the batch, host ints (one trace
    # per row pattern and segment count); None: none


def make_plan(lengths, steps: int) -> tuple[list, list, list, tuple, tuple, list]:
    """(order, inverse, sorted lengths, sizes, active, running) for host ``lengths``: segment k runs
    from one distinct length to the next, on the ``active[k]`` sequences at least that long; step t
    on the ``running[t]`` sequences longer than t."""
    lengths = [int(n) for n in lengths]
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])  # stable: ties keep batch order
    inverse = [0] * len(order)
    for position, row in enumerate(order):
        inverse[row] = position
    ordered = [lengths[b] for b in order]
    running, remaining = [], len(ordered)
    for t in range(steps):  # ordered is non-increasing: drop the sequences of length t
        while remaining and ordered[remaining - 1] <= t:
            remaining -= 1
        running.append(remaining)
    ends = sorted({n for n in lengths if n > 0})
    sizes = [end - start for start, end in zip([0] + ends, ends)]
    active = [running[end - 1] for end in ends]  # at least `end` long: longer than end - 1
    return order, inverse, ordered, tuple(sizes), tuple(active), running


def sort_batch(ops, plan: Plan, xs, flat_state: list, masks):
    """Inputs (batch axis 1), state units (axis 0) and dropout masks (axis 1) in the plan's order (as
    they are where it has none: sorted already)."""
    if plan.order is None:
        return xs, flat_state, masks
    state = [tuple(ops.take(a, plan.order, 0) for a in unit) for unit in flat_state]
    return (ops.take(xs, plan.order, 1), state,
            None if masks is None else [ops.take(m, plan.order, 1) for m in masks])


def unsort_batch(ops, plan: Plan, ys, finals: list):
    if plan.inverse is None:
        return ys, finals
    return (ops.take(ys, plan.inverse, 1),
            [None if unit is None else tuple(ops.take(a, plan.inverse, 0) for a in unit) for unit in finals])


def run_unit(ops, kernel, plan: Plan, xs, state: tuple):
    """One direction of one layer over sorted, time-major ``xs`` (T, B, in): (ys (T, B, H) zero at
    padded steps, final state). ``kernel`` is ops.fused_kernel's runner for this one unit."""
    batch, width = xs.shape[1], state[0].shape[1]
    pieces, tail = _split_steps(ops, xs, plan.sizes)
    carry, finished, outputs = tuple(state), [], []
    for piece, size, running in zip(pieces, plan.sizes, plan.active):
        rows = carry[0].shape[0]
        if running < rows:  # the sequences that ended keep the carry after their last step
            parts = [ops.split_sizes(a, (running, rows - running), 0) for a in carry]
            finished.append(tuple(p[1] for p in parts))
            carry = tuple(p[0] for p in parts)
        ys, carry = _run_segment(ops, kernel, piece, carry, size, running, batch, width)
        outputs.append(ys)
    return _stack_steps(ops, outputs, tail, batch, width, state[0]), _join_rows(ops, finished + [carry])


def coarse_segments(sizes: tuple, active: tuple, steps: int, batch: int, quantum: int = 8,
                    call_cost: float = 0.025, row_quantum: int | None = None) -> tuple[tuple, tuple]:
    """At most three segments covering an exact plan's (``sizes``, ``active``), for a gradient pass,
    which reads only the valid steps (recurrence.reads_valid_steps_only: a sequence may run past its
    end): each starts at a multiple of ``quantum`` steps on the sequences still running then, rounded
    up to a multiple of ``row_quantum`` rows (default ``quantum``; ``quarter_rows`` where each row
    count is a trace of its own), so a few shapes serve every batch (MXNet compiles a graph per
    shape). Chosen to minimise the steps × rows computed plus ``call_cost`` × steps × batch per
    extra kernel call (MXNet's RNN operator in a graph: about 2.5% of a full call each, measured;
    torch's LSTM picks the same cuts for call costs of 1-5%). A single segment of the whole batch
    when nothing cheaper exists."""
    ends, start = [], 0
    for size in sizes:
        start += size
        ends.append(start)
    longest = min(steps, -(-ends[-1] // quantum) * quantum)
    row_quantum = row_quantum or quantum

    def rows_from(t):  # the sequences longer than t, rounded up
        count = next((n for end, n in zip(ends, active) if end > t), 0)
        return min(batch, -(-count // row_quantum) * row_quantum)

    candidates = range(quantum, longest, quantum)
    best = ((longest,), (rows_from(0),))
    best_cost = longest * best[1][0]
    for cuts in [(b,) for b in candidates] + [(a, b) for a in candidates for b in candidates if a < b]:
        bounds = (0,) + cuts + (longest,)
        seg_sizes = tuple(e - s for s, e in zip(bounds, bounds[1:]))
        seg_rows = tuple(rows_from(s) for s in bounds[:-1])
        cost = sum(s * r for s, r in zip(seg_sizes, seg_rows)) + call_cost * len(cuts) * steps * batch
        if cost < best_cost:
            best, best_cost = (seg_sizes, seg_rows), cost
    return best


def forward_segments(sizes: tuple, active: tuple, steps: int, batch: int,
                     row_quantum: int | None = None) -> tuple[tuple, tuple]:
    """``coarse_segments`` for a forward pass (``run_to_ends``): no segment runs a sequence of length
    0 (``active[0]`` counts those of positive length), so they keep h_0 and c_0."""
    seg_sizes, rows = coarse_segments(sizes, active, steps, batch, row_quantum=row_quantum)
    return seg_sizes, tuple(min(count, active[0]) for count in rows)


def quarter_rows(batch: int, quantum: int = 8) -> int:
    """A row quantum of a quarter of ``batch`` (rounded up to ``quantum``): segments then run on one
    to four quarters of the batch, so at most 14 row patterns exist for any batch of that size (the
    rows strictly decrease: two equal segments cost a call more than one; 3-4 patterns in 500
    batches of lengths drawn from 1..64 or 32..64 at B=64, against 13-15 at 8 rows)."""
    return max(quantum, -(-batch // (4 * quantum)) * quantum)


def run_past_ends(ops, runner, coarse: tuple, xs, state: tuple, finals: bool = False):
    """One direction of one layer over sorted, time-major ``xs`` (T, B, in) in coarse segments, for a
    gradient pass, which reads only the valid steps (recurrence.reads_valid_steps_only): segment k
    runs ``sizes[k]`` steps on the first ``rows[k]`` sequences, from the carry the segment before
    left. Returns ys (T, B, H): zero beyond each segment's rows and after the last segment, anything
    finite where a sequence ran past its end; with ``finals`` also the carry each sequence had when
    its last segment ended (``run_to_ends``), else no final state. ``runner(xs, [state]) -> (ys,
    [state])`` is a kernel call (or a scan: recurrence.scan_runner)."""
    sizes, rows = coarse
    batch, width = ops.size(xs, 1), state[0].shape[1]
    pieces, tail = _split_steps(ops, xs, sizes)
    carry, previous, outputs, finished = tuple(state), batch, [], []  # the carry's rows: the segment
    # before's; finished (with ``finals``): the rows each cut leaves behind, with their carry
    for piece, size, count in zip(pieces, sizes, rows):
        if finals and not _known(count, previous):
            parts = [ops.split_sizes(a, (count, previous - count), 0) for a in carry]
            finished.append(tuple(p[1] for p in parts))
            carry = tuple(p[0] for p in parts)
        else:
            carry = tuple(_first(ops, a, count, previous, 0) for a in carry)
        ys, carry = _run_segment(ops, runner, piece, carry, size, count, batch, width)
        outputs.append(ys)
        previous = count
    ys = _stack_steps(ops, outputs, tail, batch, width, state[0])
    return (ys, _join_rows(ops, finished + [carry])) if finals else ys


def run_to_ends(ops, model, runner_of, p: dict, coarse: tuple, xs, state: tuple, lengths, valid, margin):
    """A forward pass of one direction of one layer in coarse segments (``coarse_segments``, its first
    segment on exactly the sequences of positive length), each sequence running past its end, with
    the exact outputs (zero at padded steps) and final state of each: (ys, final). ``xs`` sorted
    longest first and zero at padded steps; an LSTM's ``valid`` (T, B, 1), 1 at valid steps and 0
    at padded ones, and ``margin`` (``freeze_margin``) a (1, 1) array. A sequence's h (all of a
    GRU's or tanh RNN's state) is its output at its last valid step (``last_valid``); an LSTM's c
    is not an output, so its padded steps are frozen: one more input column, 1 at padded steps,
    drives the input gate to 0 and the forget gate to 1 exactly (``frozen_gates``), and c = 1·c +
    0·g stays what the last valid step left (sequences of length 0 keep h_0 and c_0: they run in no
    segment). ``runner_of(p)`` is ``run_past_ends``' runner for unit parameters ``p`` (a kernel call
    or a scan)."""
    lstm = model.cell == "lstm"
    runner = runner_of(frozen_gates(ops, model, p, margin) if lstm else p)
    if lstm:
        xs = ops.concat([xs, 1.0 - valid], axis=-1)
    ys, carry = run_past_ends(ops, runner, coarse, xs, state, finals=True)
    ys = ops.mask_padded(ys, lengths)
    running, batch = coarse[1][0], ops.size(xs, 1)
    h = ops.last_valid(ys, lengths)
    if not _known(running, batch):  # h_0 of the sequences of length 0, from the carry
        h = ops.concat([_first(ops, h, running, batch, 0),
                        ops.split_sizes(carry[0], (running, batch - running), 0)[1]], axis=0)
    return ys, (h,) + carry[1:]


FREEZE_LIMIT = 1e30  # a larger margin (absurd weights): the forward pass runs exactly, not past ends
FREEZE_SLACK = 1000.0  # sigmoid(x) is exactly 1 for x >= 1000 and exactly 0 for x <= -1000, in
# float32 and float64 alike (exp(-1000) underflows to 0, exp(1000) overflows to inf)


def freeze_margin(model, params: dict, state: list) -> float:
    """The pre-activation ``frozen_gates`` adds at an LSTM's padded steps (host NumPy ``params`` and
    initial ``state``): twice the largest |b_ih + b_hh + h·W_hh| an input or forget gate can reach,
    plus FREEZE_SLACK, so either gate's pre-activation is beyond ±FREEZE_SLACK whatever h is. The
    padded steps' inputs are zero and |h| < 1 after a step (h = o·tanh(c)); h_0 may be larger.
    0.0 for the GRU and tanh RNN (nothing to freeze); inf where the weights are not finite."""
    import numpy as np  # local: multirnn imports no NumPy at load time

    if model.cell != "lstm":
        return 0.0
    if model.proj_size:  # a projected h has no bound
        return float("inf")
    scale = max([1.0] + [float(np.max(np.abs(unit[0]))) for unit in state if unit is not None])
    bound = 0.0
    for _, _, prefix, _ in model.units():
        for gate in "if":
            reach = scale * np.abs(params[f"{prefix}W_h{gate}"]).sum(axis=0)
            if model.bias:
                reach = reach + np.abs(params[f"{prefix}b_x{gate}"] + params[f"{prefix}b_h{gate}"])
            bound = max(bound, float(np.max(reach)))
    return 2.0 * bound + FREEZE_SLACK if np.isfinite(bound) else float("inf")


def frozen_gates(ops, model, p: dict, margin):
    """An LSTM unit's ``p`` with one more input row: -``margin`` into the input gate, +``margin``
    into the forget gate, 0 into the others (``run_to_ends``). At a valid step its column is 0, and
    0·margin adds an exact 0."""
    width = model.num_hiddens
    zero = ops.zeros((1, width), p["W_xi"])
    rows = {"i": zero - margin, "f": zero + margin, "c": zero, "o": zero}
    return dict(p, **{f"W_x{g}": ops.concat([p[f"W_x{g}"], row], axis=0) for g, row in rows.items()})


def _join_rows(ops, finished: list) -> tuple:
    """A final state from the carries of the groups of rows in the order they finished (the last
    rows of the sorted batch first): each state array joined first rows first."""
    return tuple(ops.concat([unit[i] for unit in reversed(finished)], axis=0) if len(finished) > 1
                 else finished[0][i] for i in range(len(finished[0])))


def _split_steps(ops, xs, sizes: tuple):
    """``xs`` cut into the segments' steps, and the number of steps after them (whose outputs are
    zeros: no sequence is that long). Sizes may be traced scalars (``_known``)."""
    tail = ops.size(xs, 0) - sum(sizes)
    return ops.split_sizes(xs, tuple(sizes) + ((tail,) if not _known(tail, 0) else ()), 0), tail


def _run_segment(ops, runner, piece, carry: tuple, size: int, count: int, batch: int, width: int):
    """``runner`` over one segment's steps on its first ``count`` sequences, from ``carry`` (theirs):
    (outputs (size, batch, width), zero for the other sequences; the carry after the segment)."""
    ys, (carry,) = runner(_first(ops, piece, count, batch, 1), [carry])
    if not _known(count, batch):
        ys = ops.concat([ys, ops.zeros((size, batch - count, width), ys)], axis=1)
    return ys, carry


def _stack_steps(ops, outputs: list, tail: int, batch: int, width: int, like):
    """The segments' outputs joined in time, zeros for the ``tail`` steps after them."""
    if not _known(tail, 0):
        outputs = outputs + [ops.zeros((tail, batch, width), like)]
    return ops.concat(outputs, axis=0) if len(outputs) > 1 else outputs[0]


def _first(ops, x, count: int, total: int, axis: int):
    """The first ``count`` of ``x``'s ``total`` slices along ``axis``."""
    return x if _known(count, total) else ops.split_sizes(x, (count, total - count), axis)[0]


def _known(n, value) -> bool:
    """Whether a segment's size or row count ``n`` is the host int ``value``; a traced scalar
    (TensorFlow's segment sizes, or its batch in a relaxed trace) is never known, so its split and
    zero padding always run (empty where they are not needed)."""
    return isinstance(n, int) and isinstance(value, int) and n == value
