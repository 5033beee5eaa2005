"""Every backend against the NumPy float64 reference: outputs, final states and every gradient.

Parametrized over backend x model x nonlinearity x batch_first x initial state x dtype, so one failing
backend never hides another.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, make_case, random_state, to_float64

import multirnn
from multirnn.state import flatten_state


def flat_arrays(model, state):
    return [a for unit in flatten_state(model, state) for a in unit]


def check_against_reference(model, params, inputs, state, backend, dtype, cotangent=None):
    ref_out, ref_state = multirnn.forward(model, to_float64(params), to_float64(inputs),
                                          to_float64(state))
    out, new_state = multirnn.forward(model, params, inputs, state, backend=backend)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref_out, dtype, "outputs")
    for k, (got, want) in enumerate(zip(flat_arrays(model, new_state), flat_arrays(model, ref_state))):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype, f"state array {k}")

    ref_grads = multirnn.gradients(model, to_float64(params), to_float64(inputs), to_float64(state),
                                   cotangent=to_float64(cotangent))
    grads = multirnn.gradients(model, params, inputs, state, backend=backend, cotangent=cotangent)
    assert sorted(grads) == sorted(params)
    for name in params:
        assert grads[name].shape == params[name].shape
        assert np.any(ref_grads[name] != 0), f"reference gradient of {name} is all zero: weak test"
        assert_close(grads[name], ref_grads[name], dtype, f"d/d{name}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("given_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("spec", [multirnn.RNNScratch, multirnn.BiRNNScratch])
def test_scratch_models_match_reference(backend, spec, nonlinearity, batch_first, given_state, dtype):
    model = spec(4, 5, nonlinearity=nonlinearity, batch_first=batch_first)
    params, inputs = make_case(model, seed=3, steps=6, batch=3, dtype=dtype)
    state = random_state(model, 3, seed=9, dtype=dtype) if given_state else None
    rng = np.random.default_rng(4)
    cotangent = rng.normal(size=(3, 6, 10) if batch_first else (6, 3, 10))[..., :model.output_size]
    check_against_reference(model, params, inputs, state, backend, dtype, cotangent.astype(dtype))


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
