"""Every backend against the NumPy float64 reference: outputs, final states and every gradient.

Parametrized over backend x model x nonlinearity x batch_first x initial state x dtype, so one failing
backend never hides another.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, check_against_reference, make_case, random_state, to_float64

import multirnn
from multirnn.spec import RecurrentSpec


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("given_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("spec", [multirnn.RNNScratch, multirnn.BiRNNScratch])
def test_scratch_models_match_reference(backend_path, spec, nonlinearity, batch_first, given_state, dtype):
    model = spec(4, 5, nonlinearity=nonlinearity, batch_first=batch_first)
    params, inputs = make_case(model, seed=3, steps=6, batch=3, dtype=dtype)
    state = random_state(model, 3, seed=9, dtype=dtype) if given_state else None
    rng = np.random.default_rng(4)
    cotangent = rng.normal(size=(3, 6, 10) if batch_first else (6, 3, 10))[..., :model.output_size]
    check_against_reference(model, params, inputs, state, backend_path, dtype, cotangent.astype(dtype))


def test_default_cotangent_is_ones(backend):
    model = multirnn.BiRNNScratch(3, 4)
    params, inputs = make_case(model, dtype="float64")
    ones = np.ones((5, 3, 8))
    by_default = multirnn.gradients(model, params, inputs, backend=backend)
    explicit = multirnn.gradients(model, params, inputs, backend=backend, cotangent=ones)
    for name in params:
        np.testing.assert_array_equal(by_default[name], explicit[name])


def test_returned_state_feeds_back(backend):
    """Running 3 + 4 steps with the state handed over equals running 7 steps at once."""
    model = multirnn.RNNScratch(3, 4)
    params, inputs = make_case(model, steps=7, dtype="float64")
    whole, whole_state = multirnn.forward(model, params, inputs, backend=backend)
    first, state = multirnn.forward(model, params, inputs[:3], backend=backend)
    second, final = multirnn.forward(model, params, inputs[3:], state, backend=backend)
    assert_close(np.concatenate([first, second]), whole, "float64", "outputs")
    assert_close(final, whole_state, "float64", "state")


def test_d2l_default_init_runs_everywhere(backend):
    """d2l's exact setting: sigma=0.01 weights, zero biases, float32."""
    model = multirnn.BiRNNScratch(28, 32)
    params = multirnn.init_params(model, seed=0, dtype="float32")
    inputs = np.random.default_rng(0).normal(size=(35, 4, 28)).astype("float32")
    check_against_reference(model, params, inputs, None, backend, "float32")


CELL_VARIANTS = {
    "gru_reset_before": dict(cell="gru"),
    "gru_reset_after": dict(cell="gru", reset_after=True),
    "lstm": dict(cell="lstm"),
    "rnn_relu": dict(cell="rnn", nonlinearity="relu"),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)],
                         ids=["1layer_uni", "1layer_bi", "2layer_uni", "2layer_bi"])
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_cells_and_stacks_match_reference(backend_path, variant, layers, bidirectional, dtype):
    model = RecurrentSpec(3, 4, num_layers=layers, bidirectional=bidirectional, **CELL_VARIANTS[variant])
    params, inputs = make_case(model, seed=11, steps=5, batch=2, dtype=dtype, scale=10.0)
    state = random_state(model, 2, seed=12, dtype=dtype)
    cotangent = np.random.default_rng(13).normal(size=(5, 2, model.output_size)).astype(dtype)
    check_against_reference(model, params, inputs, state, backend_path, dtype, cotangent)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_no_bias_models_match_reference(backend_path, cell):
    model = RecurrentSpec(3, 4, cell=cell, bias=False, bidirectional=True, num_layers=2)
    assert not any(".b_" in name for name in model.param_shapes())
    params, inputs = make_case(model, dtype="float64")
    check_against_reference(model, params, inputs, None, backend_path, "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dropout_masks_are_identical_across_backends(backend_path, dtype):
    model = multirnn.LSTMScratch(3, 4, num_layers=3, bidirectional=True, dropout=0.3)
    params, inputs = make_case(model, steps=6, batch=3, dtype=dtype, scale=10.0)
    kwargs = dict(training=True, dropout_seed=21)
    ref_out, _ = multirnn.forward(model, to_float64(params), to_float64(inputs), **kwargs)
    out, _ = multirnn.forward(model, params, inputs, backend=backend_path, **kwargs)
    assert_close(out, ref_out, dtype, "outputs")
    eval_out, _ = multirnn.forward(model, params, inputs, backend=backend_path)
    assert np.max(np.abs(out - eval_out)) > 1e-3  # training mode really dropped something
    ref_grads = multirnn.gradients(model, to_float64(params), to_float64(inputs), **kwargs)
    grads = multirnn.gradients(model, params, inputs, backend=backend_path, **kwargs)
    for name in params:
        assert_close(grads[name], ref_grads[name], dtype, f"d/d{name}")
