"""Variable-length batches (``lengths``): every backend against the per-sequence NumPy reference, and
the semantics checked directly (padded outputs zero, final state = state at the own last step, the
backward direction reversed within each sequence's own length)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import (CELL_VARIANTS, assert_close, check_padded_against_reference, flat_arrays, load_backend,
                      make_case, random_state)

import multirnn
from multirnn import packed
from multirnn.backends._base import valid_steps
from multirnn.backends.numpy_backend import NumpyOps
from multirnn.state import flatten_state

LENGTHS = np.array([5, 2, 0, 4])  # full, short, empty, short


def time_major(model, array):
    return array.swapaxes(0, 1) if model.batch_first else array


def check_lengths_against_reference(model, backend, dtype, lengths=LENGTHS, given_state=True):
    check_padded_against_reference(model, backend, dtype, len(lengths), 5, given_state, lengths=lengths)


@pytest.mark.parametrize("cell", list(CELL_VARIANTS))
def test_lengths_match_reference(backend, cell):
    """A 2-layer bidirectional stack covers the forward and the reversed direction and a second layer
    fed padded outputs; unidirectional stacks are covered by tests/test_fuzz_parity.py."""
    model = multirnn.RecurrentSpec(3, 4, num_layers=2, bidirectional=True, **CELL_VARIANTS[cell])
    check_lengths_against_reference(model, backend, "float64")


@pytest.mark.parametrize("lengths", [np.array([3, 1, 3, 0, 2]), np.array([1, 1, 1, 1, 1]),
                                     np.array([2, 5, 5, 1, 4])], ids=["ties-short", "all-one", "ties-full"])
def test_lengths_with_ties_and_short_batches(backend, lengths):
    """Ties, zero lengths and a longest sequence shorter than the padding: the segments of
    multirnn.packed on the fused-kernel backends (the masked scan elsewhere)."""
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", num_layers=2, bidirectional=True)
    check_lengths_against_reference(model, backend, "float64", lengths=lengths)


def test_packed_plan():
    order, inverse, ordered, sizes, active, running = packed.make_plan([3, 1, 3, 0, 2], steps=5)
    assert order == [0, 2, 4, 1, 3] and ordered == [3, 3, 2, 1, 0]  # longest first, ties in batch order
    assert [order[i] for i in inverse] == [0, 1, 2, 3, 4]
    assert sizes == (1, 1, 1) and active == (4, 3, 2)  # steps [0,1) [1,2) [2,3): 4, 3, 2 running
    assert running == [4, 3, 2, 0, 0]  # per step: the sorted sequences longer than t
    assert packed.make_plan([0, 0], steps=2)[3:] == ((), (), [0, 0])
    assert packed.make_plan([4, 4], steps=4)[3:] == ((4,), (2,), [2, 2, 2, 2])


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_lengths_float32_batch_first(backend, batch_first):
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", bidirectional=True, batch_first=batch_first)
    check_lengths_against_reference(model, backend, "float32", given_state=False)


@pytest.mark.parametrize("cell", list(CELL_VARIANTS))
def test_neutral_recurrence_with_lengths_on_numpy(cell):
    """multirnn.recurrence's masked scan (on NumPy ops, no framework) against the per-sequence reference."""
    model = multirnn.RecurrentSpec(3, 4, num_layers=2, bidirectional=True, **CELL_VARIANTS[cell])
    params, xs = make_case(model, seed=1, steps=5, batch=4)
    flat = flatten_state(model, random_state(model, 4, seed=2, dtype="float64"))
    ys, finals = NumpyOps().forward(model, params, xs, flat, lengths=LENGTHS)
    ref_ys, ref_finals = multirnn.backends.get("numpy").forward(model, params, xs, flat, lengths=LENGTHS)
    assert_close(ys, ref_ys, "float64", "outputs")
    for got, want in zip(finals, ref_finals):
        for a, b in zip(got, want):
            assert_close(a, b, "float64", "state")


def test_semantics_against_truncated_runs(backend_or_numpy):
    """Each sequence of a padded batch equals that sequence run alone, truncated, without lengths:
    outputs zero past its length, final state its own, bwd direction reversed within its length."""
    backend = backend_or_numpy
    model = multirnn.BiRNNScratch(3, 4)
    params, inputs = make_case(model, seed=5, steps=5, batch=4)
    state = random_state(model, 4, seed=6, dtype="float64")
    out, (h_fwd, h_bwd) = multirnn.forward(model, params, inputs, state, backend=backend,
                                           lengths=LENGTHS)
    for b, length in enumerate(LENGTHS):
        np.testing.assert_array_equal(out[length:, b], 0.0)
        alone_state = (state[0][b:b + 1], state[1][b:b + 1])
        if length == 0:
            np.testing.assert_array_equal(h_fwd[b], state[0][b])
            np.testing.assert_array_equal(h_bwd[b], state[1][b])
            continue
        alone, (f_alone, b_alone) = multirnn.forward(model, params, inputs[:length, b:b + 1],
                                                     alone_state, backend=backend)
        assert_close(out[:length, b], alone[:, 0], "float64", f"outputs of sequence {b}")
        assert_close(h_fwd[b], f_alone[0], "float64", f"fwd state of sequence {b}")
        assert_close(h_bwd[b], b_alone[0], "float64", f"bwd state of sequence {b}")


def test_full_lengths_equal_no_lengths(backend):
    model = multirnn.RecurrentSpec(3, 4, cell="gru", bidirectional=True)
    params, inputs = make_case(model, steps=5, batch=3)
    full = multirnn.forward(model, params, inputs, backend=backend, lengths=np.full(3, 5))
    plain = multirnn.forward(model, params, inputs, backend=backend)
    np.testing.assert_array_equal(full[0], plain[0])


def test_all_zero_lengths_keep_state(backend):
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", num_layers=2)
    params, inputs = make_case(model, steps=3, batch=2)
    state = random_state(model, 2, seed=1, dtype="float64")
    out, new_state = multirnn.forward(model, params, inputs, state, backend=backend,
                                      lengths=np.zeros(2, int))
    np.testing.assert_array_equal(out, 0.0)
    for got, want in zip(flat_arrays(model, new_state), flat_arrays(model, state)):
        np.testing.assert_array_equal(got, want)
    grads = multirnn.gradients(model, params, inputs, state, backend=backend, lengths=np.zeros(2, int))
    for name, value in grads.items():
        np.testing.assert_array_equal(value, 0.0, err_msg=name)


@pytest.mark.parametrize("lengths, error, match", [
    (np.array([1.0, 2.0]), TypeError, "lengths must have an integer dtype"),
    (np.array([True, False]), TypeError, "integer dtype"),
    (np.array([1, 2, 3]), ValueError, r"lengths must have shape \(batch,\) = \(2,\)"),
    (np.array([[1, 2]]), ValueError, "lengths must have shape"),
    (np.array([-1, 2]), ValueError, r"lengths must lie in \[0, num_steps=3\]"),
    (np.array([4, 2]), ValueError, r"lengths must lie in \[0, num_steps=3\], got min 2 max 4"),
    ("12", TypeError, "lengths must be an int numpy.ndarray"),
])
@pytest.mark.parametrize("entry", ["forward", "gradients"])
def test_bad_lengths(entry, lengths, error, match, backend_or_numpy):
    model = multirnn.RNNScratch(3, 4)
    params, inputs = make_case(model, steps=3, batch=2)
    with pytest.raises(error, match=match):
        getattr(multirnn, entry)(model, params, inputs, backend=backend_or_numpy, lengths=lengths)


def test_lengths_as_list_is_accepted():
    model = multirnn.RNNScratch(3, 4)
    params, inputs = make_case(model, steps=3, batch=2)
    by_list = multirnn.forward(model, params, inputs, lengths=[3, 1])[0]
    by_array = multirnn.forward(model, params, inputs, lengths=np.array([3, 1]))[0]
    np.testing.assert_array_equal(by_list, by_array)
    assert time_major(model, by_list).shape == (3, 2, 4)


@pytest.mark.parametrize("name", ["torch", "mxnet"])
def test_padded_kernel_calls(monkeypatch, name):
    """Forward runs multirnn.packed's segments (one call per distinct length and unit; on MXNet where
    its LSTM's padded steps cannot be frozen: an absurd packed.freeze_margin, here any); a gradient
    pass reads only the valid steps, and a batch this small is not worth cutting
    (packed.coarse_segments): each unit's whole padded batch in one call, on torch eagerly, on MXNet
    inside its cached graph. Numbers: the tests above."""
    from conftest import load_backend

    backend = load_backend(name)
    if name == "mxnet":
        monkeypatch.setattr(packed, "FREEZE_LIMIT", 0.0)
    calls, original = [], backend.fused_kernel

    def counting(model, units):
        run = original(model, units)
        return lambda xs, states: calls.append(tuple(xs.shape)) or run(xs, states)
    monkeypatch.setattr(backend, "fused_kernel", counting)
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", bidirectional=True)
    params, inputs = make_case(model, steps=5, batch=5, dtype="float32")
    lengths = np.array([3, 1, 3, 0, 2])  # distinct lengths 1, 2, 3: three segments per unit
    multirnn.forward(model, params, inputs, backend=name, lengths=lengths)
    assert calls == [(1, 4, 3), (1, 3, 3), (1, 2, 3)] * 2
    calls.clear()
    multirnn.gradients(model, params, inputs, backend=name, lengths=lengths)
    if name == "torch":
        assert calls == [(5, 5, 3)] * 2
        return
    assert calls == []  # not eager: the graph of mxnet_graph.Unrolled, a batch too small to cut
    padded = [block for key, block in backend._graphs.blocks.items()
              if key[0] == model and key[2] == (5, 5, 3) and block.segments is not None]
    assert len(padded) == 1 and padded[0].segments == ()


def test_generic_path_shrinks_where_the_scan_can(monkeypatch, backend):
    """A cell no kernel computes (d2l's GRU) runs a padded batch in the shrinking scan where the
    backend's scan takes a batch that changes size (torch eagerly, TensorFlow in its while loop):
    forward and gradients, each unit once; elsewhere the masked scan (forward) or the whole batch
    (gradients). Numbers: test_lengths_match_reference."""
    from multirnn import recurrence

    impl = load_backend(backend)
    impl._compiled.clear()  # a compiled function traced before would not trace its steps again
    wrapped, original = [], recurrence.shrinking_step
    monkeypatch.setattr(recurrence, "shrinking_step", lambda ops, step: wrapped.append(1) or original(ops, step))
    model = multirnn.RecurrentSpec(3, 4, cell="gru", bidirectional=True)
    params, inputs = make_case(model, steps=5, batch=5)
    lengths = np.array([3, 1, 3, 0, 2])
    multirnn.forward(model, params, inputs, backend=backend, lengths=lengths)
    multirnn.gradients(model, params, inputs, backend=backend, lengths=lengths)
    assert len(wrapped) == (4 if backend in ("torch", "tensorflow") else 0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch", [5, 24], ids=["whole", "segments"])
@pytest.mark.parametrize("cell", ["lstm", "gru-reset-after"])
def test_mxnet_padded_graph_warns_of_no_unused_input(batch, bidirectional, cell):
    """Gluon warns of any graph input no computation uses, which a user would see on every new shape:
    the whole-batch gradient graph takes lengths only where a unit reverses each sequence, and the
    segmented one's unidirectional sorted lengths are known to go unread; the forward graph
    (packed.run_to_ends) takes the valid steps and margin only for the LSTM, which freezes."""
    import warnings

    backend = load_backend("mxnet")
    backend._graphs.blocks.clear()
    model = multirnn.RecurrentSpec(3, 4, bidirectional=bidirectional, **CELL_VARIANTS[cell])
    lengths = np.array([3, 1, 3, 0, 2]) if batch == 5 else np.array([20] * 4 + [12] * 8 + [5] * 12)
    params, inputs = make_case(model, steps=max(lengths), batch=batch, dtype="float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        multirnn.forward(model, params, inputs, backend="mxnet", lengths=lengths)
        multirnn.gradients(model, params, inputs, backend="mxnet", lengths=lengths)
    assert not [w for w in caught if "not used by any computation" in str(w.message)]
    assert [block.frozen for block in backend._graphs.blocks.values()] == [True, False]
    segments = [block.segments for block in backend._graphs.blocks.values()][1]
    assert segments == (() if batch == 5 else ((8, 8, 4), (24, 16, 8)))


def test_coarse_segments():
    """packed.coarse_segments, worked by hand: batch 24 of lengths 20 (4), 12 (8) and 5 (12) in 20 steps.
    One call: 20 x 24 = 480 row-steps. Cut at 8 and 16: 8 x 24 + 8 x 16 (12 running, rounded up to 16)
    + 4 x 8 (4 running) = 352, plus 2 x 2.5% of 480 = 376, the cheapest (at 8 alone: 396, at 16: 428)."""
    sizes, active = packed.make_plan([20] * 4 + [12] * 8 + [5] * 12, 20)[3:5]
    assert packed.coarse_segments(sizes, active, steps=20, batch=24) == ((8, 8, 4), (24, 16, 8))
    assert packed.coarse_segments(*packed.make_plan([3, 1, 3, 0, 2], 5)[3:5], steps=5, batch=5) == ((5,), (5,))
    assert packed.coarse_segments(*packed.make_plan([64] * 64, 64)[3:5], steps=64, batch=64) == ((64,), (64,))
    # rows rounded up to 16 (a trace per row pattern, TensorFlow): cut at 8 and 16, 8 x 24 + 8 x 16 +
    # 4 x 16 + 2 x 12 = 408; at 8 alone, 8 x 24 + 12 x 16 + 12 = 396, the cheapest (at 16: 460)
    assert packed.coarse_segments(sizes, active, steps=20, batch=24, row_quantum=16) == ((8, 12), (24, 16))
    assert [packed.quarter_rows(batch) for batch in (5, 24, 64, 100)] == [8, 8, 16, 32]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["lstm", "gru-reset-before"])
@pytest.mark.parametrize("name", ["torch", "mxnet", "tensorflow", "jax"])
def test_gradient_pass_in_coarse_segments(monkeypatch, name, cell, bidirectional):
    """A padded gradient pass big enough to cut (test_coarse_segments' batch, shuffled): the batch is
    sorted on the host and each unit runs three kernel calls, or three scans for the cell no kernel
    computes (on MXNet inside its cached graph; on TensorFlow inside one trace, the sizes traced
    scalars; on JAX inside one trace, the sizes static); every gradient against the per-sequence
    NumPy reference."""
    impl = load_backend(name)
    impl._compiled.clear()  # TensorFlow: a function traced before would not run the segments again
    seen, original = [], packed.run_past_ends

    def recording(ops, runner, coarse, xs, state, finals=False):
        if not finals:  # a gradient pass's (finals: packed.run_to_ends, a forward pass's)
            seen.append(coarse)
        return original(ops, runner, coarse, xs, state, finals)
    monkeypatch.setattr(packed, "run_past_ends", recording)
    planned, plan = [], packed.coarse_segments
    monkeypatch.setattr(packed, "coarse_segments", lambda *args, **kwargs: planned.append(
        plan(*args, **kwargs)) or planned[-1])
    model = multirnn.RecurrentSpec(3, 4, num_layers=2, bidirectional=bidirectional, **CELL_VARIANTS[cell])
    lengths = np.array([20] * 4 + [12] * 8 + [5] * 12)[np.random.default_rng(0).permutation(24)]
    check_padded_against_reference(model, name, "float64", 24, 20, lengths=lengths)
    # for the gradient pass; for the forward pass too where it runs to ends (packed.forward_segments:
    # on MXNet's kernel, on JAX)
    forward_too = (name == "mxnet" and cell == "lstm") or name == "jax"
    assert planned == [((8, 8, 4), (24, 16, 8))] * (2 if forward_too else 1)
    # once per unit (on MXNet where the graph is built, on TensorFlow where the function is traced)
    units = len(list(model.units()))
    if name == "tensorflow":  # the sizes traced scalars, the rows host ints (packed.Plan.coarse)
        assert len(seen) == units and all(len(sizes) == 3 and rows == (24, 16, 8) for sizes, rows in seen)
    else:
        assert seen == [((8, 8, 4), (24, 16, 8))] * units


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru-reset-after", "gru-reset-before", "rnn-tanh"])
@pytest.mark.parametrize("name", ["mxnet", "jax"])
def test_padded_forward_runs_to_ends(monkeypatch, name, cell, dtype):
    """A padded forward pass runs each unit in coarse segments past each sequence's end
    (packed.run_to_ends; an LSTM's padded steps frozen): on MXNet in its cached graph, where its
    kernel computes the cell (not d2l's reset-before GRU: the exact eager segments), on JAX in three
    scans of one trace. test_coarse_segments' batch plus two sequences of length 0 (which run in no
    segment), shuffled, its padding filled with large values; outputs (exact zeros at padded steps)
    and final states against the per-sequence reference, twice (the second call traces nothing)."""
    impl = load_backend(name)
    impl._compiled.clear()
    if name == "mxnet":
        impl._graphs.blocks.clear()
    seen, original = [], packed.run_to_ends
    monkeypatch.setattr(packed, "run_to_ends", lambda ops, model, runner_of, p, coarse, *rest: seen.append(
        coarse) or original(ops, model, runner_of, p, coarse, *rest))
    model = multirnn.RecurrentSpec(3, 4, num_layers=2, bidirectional=True, **CELL_VARIANTS[cell])
    lengths = np.array([20] * 4 + [12] * 8 + [5] * 12 + [0] * 2)[np.random.default_rng(0).permutation(26)]
    params, inputs = make_case(model, seed=1, steps=20, batch=26, dtype=dtype)
    padded = ~valid_steps(20, lengths)[:, :, 0]
    inputs[padded] = 1e4  # read by no valid step
    state = random_state(model, 26, seed=2, dtype=dtype)
    want_ys, want_finals = multirnn.forward(model, params, inputs, state, lengths=lengths)
    for _ in range(2):
        ys, finals = multirnn.forward(model, params, inputs, state, backend=name, lengths=lengths)
        assert_close(ys, want_ys, dtype, "outputs")
        np.testing.assert_array_equal(ys[padded], 0.0)
        for got, want in zip(flat_arrays(model, finals), flat_arrays(model, want_finals)):
            assert_close(got, want, dtype, "final state")
    refused = name == "mxnet" and cell == "gru-reset-before"
    assert seen == ([] if refused else [((8, 8, 4), (24, 16, 8))] * 4)  # once per unit, where traced
    if name == "mxnet" and not refused:
        (block,) = impl._graphs.blocks.values()
        assert block.frozen


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["mxnet", "jax"])
def test_frozen_gates_saturate_exactly(name, dtype):
    """Where a forward pass freezes an LSTM's padded steps (packed.run_to_ends), the backend's sigmoid
    of ±FREEZE_SLACK and beyond is exactly 0 and 1 (compiled too, on JAX), so c = 1·c + 0·g exactly."""
    impl = load_backend(name)
    slack = packed.FREEZE_SLACK
    x = np.array([-slack, -2 * slack, -1e29, slack, 2 * slack, 1e29], dtype)
    with impl.precision(dtype):
        got = impl.to_numpy(impl.compile(impl.sigmoid)(impl.asarray(x)))
    np.testing.assert_array_equal(got, np.array([0, 0, 0, 1, 1, 1], dtype))


def test_freeze_margin():
    """packed.freeze_margin worked by hand: an LSTM with H = 2 whose forget gate reads h through
    W_hf = [[1, -2], [3, 0]] (|column sums| 4 and 2) with bias [0.5, -5], its input gate 0, and an
    h_0 as large as 3: the forget gate's pre-activation reaches 3·4 + 0.5 = 12.5 and 3·2 + 5 = 11,
    so the margin is 2·12.5 + 1000."""
    model = multirnn.RecurrentSpec(1, 2, cell="lstm")
    params = {name: np.zeros(shape) for name, shape in model.param_shapes().items()}
    params["W_hf"] = np.array([[1.0, -2.0], [3.0, 0.0]])
    params["b_xf"], params["b_hf"] = np.array([0.25, -2.0]), np.array([0.25, -3.0])
    state = [(np.array([[0.5, -3.0]]), np.zeros((1, 2)))]
    assert packed.freeze_margin(model, params, state) == 2 * 12.5 + 1000
    assert packed.freeze_margin(multirnn.RecurrentSpec(1, 2, cell="gru"), {}, []) == 0.0
    projected = multirnn.RecurrentSpec(1, 2, cell="lstm", proj_size=1)  # its h has no bound
    assert packed.freeze_margin(projected, {}, []) == float("inf")
    params["W_hi"] = np.full((2, 2), np.inf)
    assert packed.freeze_margin(model, params, state) == float("inf")


def test_tensorflow_coarse_segments_in_a_relaxed_trace(monkeypatch):
    """TensorFlow's gradient function relaxes its signature once shapes change (reduce_retracing):
    the coarse segments then run on inputs of unknown steps and batch, their sizes read in the graph
    (Ops.size). Three shapes whose segments run on the same rows (24, 16, 8: host ints, so one trace
    serves them; two or four sequences of length 0 keep the first segment at 24 rows), the batch
    shuffled; every gradient against the reference."""
    impl = load_backend("tensorflow")
    impl._compiled.clear()
    shapes, original = [], packed.run_past_ends
    monkeypatch.setattr(packed, "run_past_ends", lambda ops, runner, coarse, xs, state, finals=False: (
        shapes.append((tuple(xs.shape), coarse[1])) or original(ops, runner, coarse, xs, state, finals)))
    model = multirnn.RecurrentSpec(3, 4, num_layers=2, bidirectional=True, cell="lstm")
    for steps, batch in ((20, 24), (22, 26), (21, 28)):
        params, inputs = make_case(model, seed=steps, steps=steps, batch=batch)
        lengths = np.array([steps] * 4 + [12] * 8 + [5] * 12 + [0] * (batch - 24))
        lengths = lengths[np.random.default_rng(steps).permutation(batch)]
        cotangent = np.random.default_rng(batch).normal(size=(steps, batch, 8))
        got = multirnn.gradients(model, params, inputs, backend="tensorflow", cotangent=cotangent,
                                 lengths=lengths)
        want = multirnn.gradients(model, params, inputs, cotangent=cotangent, lengths=lengths)
        for name in want:
            assert_close(got[name], want[name], "float64", name)
    assert {rows for _, rows in shapes} == {(24, 16, 8)}  # every shape cut, on the same rows
    assert ((None, None, 3), (24, 16, 8)) in shapes  # the relaxed trace ran the segments


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tensorflow_lengths_in_a_trace_that_knows_no_shape(cell):
    """The TensorFlow backend's plan built in graph ops (padding_of: sorted longest first, per-step
    running counts, for the shrinking scan), as the Keras layer meets it in model.fit: one tf.function
    traced for unknown batch and steps, then called with two shapes; outputs, final states and
    gradients against the per-sequence NumPy reference."""
    impl = load_backend("tensorflow")
    import tensorflow as tf

    model = multirnn.RecurrentSpec(3, 4, num_layers=2, bidirectional=True, cell=cell)
    params, _ = make_case(model, steps=1, batch=1)
    weights = {k: tf.Variable(v) for k, v in params.items()}

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float64),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None, 8], tf.float64)])
    def run(xs, lengths, cotangent):
        with tf.GradientTape() as tape:
            ys, state = impl.run_user(model, dict(weights), xs, lengths=lengths)
            loss = tf.reduce_sum(ys * cotangent)
        return ys, state, tape.gradient(loss, weights)

    for steps, lengths in ((5, np.array([2, 5, 0, 5, 3])), (7, np.array([7, 1, 4]))):
        _, xs = make_case(model, steps=steps, batch=len(lengths))
        cotangent = np.random.default_rng(steps).normal(size=(steps, len(lengths), 8))
        ys, state, grads = run(xs, lengths.astype(np.int32), cotangent)
        want_ys, want_state = multirnn.forward(model, params, xs, lengths=lengths)
        assert_close(ys.numpy(), want_ys, "float64", "outputs")
        for got, want in zip(flat_arrays(model, state), flat_arrays(model, want_state)):
            assert_close(got, want, "float64", "final state")
        want_grads = multirnn.gradients(model, params, xs, cotangent=cotangent, lengths=lengths)
        for name in want_grads:
            assert_close(grads[name].numpy(), want_grads[name], "float64", name)
    assert run.experimental_get_tracing_count() == 1
