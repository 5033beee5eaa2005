"""The compiled/cached execution paths of issue 6 against the NumPy float64 reference: every cell
(both GRU reset variants), deep and bidirectional stacks, one-step sequences, the input projection
hoisted or per step, and MXNet's hybridized graph cache. Sizes are tiny: these check numbers, not speed."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import (FUSED_KERNEL_BACKENDS, assert_close, check_against_reference, load_backend, make_case,
                      random_state, to_float64)

import multirnn
from multirnn import compare, recurrence, reference
from multirnn.backends.numpy_backend import NumpyOps
from multirnn.state import flatten_state

MODELS = {
    "gru-reset-before": multirnn.RecurrentSpec(3, 4, cell="gru"),
    "gru-reset-after": multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=True),
    "lstm": multirnn.RecurrentSpec(3, 4, cell="lstm"),
    "deep-bi-lstm": multirnn.RecurrentSpec(3, 4, cell="lstm", num_layers=2, bidirectional=True),
    "relu-rnn-no-bias": multirnn.RecurrentSpec(3, 4, nonlinearity="relu", bias=False),
}


@pytest.mark.parametrize("name", MODELS)
def test_cells_match_reference(backend, name):
    model = MODELS[name]
    params, inputs = make_case(model, seed=5, steps=4, batch=2, dtype="float64")
    state = random_state(model, 2, seed=6, dtype="float64")
    cotangent = np.random.default_rng(7).normal(size=(4, 2, model.output_size))
    check_against_reference(model, params, inputs, state, backend, "float64", cotangent)


def test_one_step_sequence(backend):
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", bidirectional=True)
    params, inputs = make_case(model, seed=8, steps=1, batch=2, dtype="float32")
    state = random_state(model, 2, seed=12, dtype="float32")  # zeros would leave W_h* untested
    check_against_reference(model, params, inputs, state, backend, "float32")


@pytest.mark.parametrize("name", MODELS)
def test_projection_per_step_equals_hoisted(name):
    """Both branches of recurrence.run_direction, on NumPy Ops, against the independent reference."""
    model = MODELS[name]
    params, inputs = make_case(model, seed=9, steps=5, batch=3, dtype="float64")
    flat = flatten_state(model, random_state(model, 3, seed=10, dtype="float64"))
    want_ys, want_state, _ = reference.forward(model, params, inputs, flat)
    for hoist in (True, False):
        ops = NumpyOps()
        ops.hoist_input_projection = hoist
        ys, finals = recurrence.run(ops, model, params, inputs, flat)
        assert_close(ys, want_ys, "float64", f"outputs, hoist={hoist}")
        for got, want in zip(finals, want_state):
            for a, b in zip(got, want):
                assert_close(a, b, "float64", f"state, hoist={hoist}")


@pytest.mark.parametrize("name", FUSED_KERNEL_BACKENDS)
def test_fused_kernel_runs_exactly_where_it_computes_the_spec(name, monkeypatch):
    """The parity tests cover both paths only if the switch really switches: count the layers
    packed for the fused kernel (recurrence.kernel_weights, once per unit)."""
    backend = load_backend(name)
    packed = []
    original = recurrence.kernel_weights
    monkeypatch.setattr(recurrence, "kernel_weights", lambda *a: packed.append(1) or original(*a))
    lstm = multirnn.RecurrentSpec(3, 4, cell="lstm", bidirectional=True, num_layers=2)
    relu = multirnn.RecurrentSpec(3, 4, nonlinearity="relu")
    cases = [  # model, dtype, lengths, fused switch, units packed
        (lstm, "float32", None, True, 4),
        (lstm, "float32", None, False, 0),
        (lstm, "float32", np.array([7, 3]), True, 4),  # padded: multirnn.packed's segments, unit by unit
        (lstm, "float32", np.array([7, 3]), False, 0),
        (multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=True), "float64", None, True, 1),
        (multirnn.RecurrentSpec(3, 4, cell="gru"), "float64", None, True, 0),  # no such kernel
        (relu, "float32", None, True, 1),
        # MXNet 1.9.1's float64 relu kernel is float32-accurate only: generic there
        (relu, "float64", None, True, 0 if name == "mxnet" else 1),
    ]
    for model, dtype, lengths, fused, want in cases:
        if name == "mxnet":
            backend._graphs.blocks.clear()  # a cached graph would not be rebuilt
        packed.clear()
        with backend.fused_kernels(fused):
            params, inputs = make_case(model, steps=7, batch=2, dtype=dtype)
            out, _ = multirnn.forward(model, params, inputs, backend=name, lengths=lengths)
            # the one decision recurrence.run takes, and what `multirnn compare` reports
            assert recurrence.fused_path(backend, model, np.dtype(dtype)) == bool(want)
            if lengths is None:
                assert compare.path(backend, model, dtype) == ("fused" if want else "generic")
        assert len(packed) == want, (model, dtype, lengths, fused)
        want_out, _ = multirnn.forward(model, to_float64(params), to_float64(inputs), lengths=lengths)
        assert_close(out, want_out, dtype, f"{model} {dtype}")


def test_mxnet_graph_cache_reuses_and_bounds():
    load_backend("mxnet")
    import mxnet as mx

    from multirnn.backends.mxnet_graph import GraphCache

    model = multirnn.RNNScratch(2, 3)
    params = {k: mx.nd.array(v) for k, v in multirnn.init_params(model, 0, "float32").items()}
    state = [(mx.nd.zeros((1, 3)),)]
    cache = GraphCache(size=2)
    for steps in (4, 4, 5, 4, 6):  # 4 twice: one block; then 5; 4 again is a hit; 6 evicts 5
        ys, _ = cache.run(model, params, mx.nd.ones((steps, 1, 2)), state)
        assert ys.shape == (steps, 1, 3)
    assert [key[2][0] for key in cache.blocks] == [4, 6]


def test_mxnet_gluon_block_gradients_match_reference():
    """The Gluon block runs the hybridized graph too; its parameters' gradients must be exact."""
    load_backend("mxnet")
    import mxnet as mx

    model = multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=True, bidirectional=True)
    params, inputs = make_case(model, seed=11, steps=4, batch=2, dtype="float64")
    block = multirnn.native_layer(model, params, backend="mxnet", dtype="float64")
    with mx.autograd.record():
        outputs, _ = block(mx.nd.array(inputs, dtype="float64"))
    outputs.backward(mx.nd.ones(outputs.shape, dtype="float64"))
    want = multirnn.gradients(model, to_float64(params), to_float64(inputs))
    for name, param in block.canonical.items():
        assert_close(param.grad().asnumpy(), want[name], "float64", f"d/d{name}")


def test_mxnet_eager_ops_match_reference():
    """The NDArray Ops (the unhybridized fallback) stay exact too."""
    backend = load_backend("mxnet")
    model = MODELS["deep-bi-lstm"]
    params, inputs = make_case(model, seed=13, steps=3, batch=2, dtype="float64")
    flat = flatten_state(model, random_state(model, 2, seed=14, dtype="float64"))
    want_ys, want_state, _ = reference.forward(model, params, inputs, flat)
    ys, finals = recurrence.run(backend, model, *backend._to_framework(params, inputs, flat))
    assert_close(ys.asnumpy(), want_ys, "float64", "outputs")
    for got, want in zip(finals, want_state):
        for a, b in zip(got, want):
            assert_close(a.asnumpy(), b, "float64", "state")


@pytest.mark.parametrize("name", FUSED_KERNEL_BACKENDS)
def test_fused_kernel_sees_weights_updated_in_place(name):
    """An optimizer writes parameters in place; a kernel that cached its packed weights (oneDNN can)
    would run the old ones. Two layers, so both the first and a deeper layer's packing are checked."""
    load_backend(name)
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", num_layers=2)
    params, inputs = make_case(model, seed=15, steps=4, batch=2, dtype="float32")
    newer, _ = make_case(model, seed=16, steps=4, batch=2, dtype="float32")
    layer = multirnn.native_layer(model, params, backend=name)
    if name == "torch":
        import torch

        run = lambda: layer(torch.from_numpy(inputs))[0].detach().numpy()  # noqa: E731
        run()
        with torch.no_grad():
            for key, value in layer.canonical_params().items():
                value.copy_(torch.from_numpy(newer[key]))
    else:
        import mxnet as mx

        run = lambda: layer(mx.nd.array(inputs))[0].asnumpy()  # noqa: E731
        run()
        for key, param in layer.canonical.items():
            param.data()[:] = mx.nd.array(newer[key])
    want, _ = multirnn.forward(model, to_float64(newer), to_float64(inputs))
    assert_close(run(), want, "float32", "outputs after an in-place update")
