"""Bad input to the public entry points: a clear ValueError/TypeError naming the argument, the
expected and the actual shape/dtype, before any backend is touched (the cases that reach a backend
run on every backend, the NumPy reference included)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_case, random_state

import multirnn

LSTM = multirnn.RecurrentSpec(3, 4, cell="lstm")
BIRNN = multirnn.BiRNNScratch(3, 4)
STACK = multirnn.RecurrentSpec(3, 4, cell="gru", num_layers=2)


def case(model, dtype="float64"):
    params, inputs = make_case(model, steps=3, batch=2, dtype=dtype)
    return params, inputs, random_state(model, 2, seed=1, dtype=dtype)


def with_param(params, name, value):
    return {**params, name: value}


def nan_at(array, index):
    array = array.copy()
    array[index] = np.nan
    return array


# (id, model, mutate(params, inputs, state) -> (params, inputs, state), error, message regex)
BAD = [
    ("inputs-rank-2", LSTM, lambda p, x, s: (p, x[0], s), ValueError,
     r"inputs must have rank 3 \('num_steps', 'batch', 'num_inputs'\), got shape \(2, 3\)"),
    ("inputs-rank-4", LSTM, lambda p, x, s: (p, x[None], s), ValueError, r"inputs must have rank 3"),
    ("inputs-features", LSTM, lambda p, x, s: (p, x[..., :2], s), ValueError,
     r"inputs must have num_inputs=3 features .* got shape \(3, 2, 2\)"),
    ("inputs-list", LSTM, lambda p, x, s: (p, x.tolist(), s), TypeError,
     r"inputs must be a numpy.ndarray, got list"),
    ("inputs-dtype", LSTM, lambda p, x, s: (p, x.astype(np.float32), s), TypeError,
     r"inputs must have dtype float64 \(the params' dtype\), got float32"),
    ("inputs-int", LSTM, lambda p, x, s: (p, x.astype(int), s), TypeError, r"inputs must have dtype"),
    ("inputs-nan", LSTM, lambda p, x, s: (p, nan_at(x, (1, 0, 2)), s), ValueError,
     r"inputs must be finite, got nan at index \(1, 0, 2\)"),
    ("inputs-inf", LSTM, lambda p, x, s: (p, x * np.inf, s), ValueError, r"inputs must be finite"),
    ("params-not-dict", LSTM, lambda p, x, s: (list(p.values()), x, s), TypeError,
     r"params must be a dict of numpy arrays, got list"),
    ("params-missing", LSTM, lambda p, x, s: ({k: v for k, v in p.items() if k != "W_hf"}, x, s),
     ValueError, r"missing \['W_hf'\], unexpected \[\]"),
    ("params-extra", LSTM, lambda p, x, s: (with_param(p, "W_xq", p["W_xi"]), x, s), ValueError,
     r"missing \[\], unexpected \['W_xq'\]"),
    ("params-shape", LSTM, lambda p, x, s: (with_param(p, "W_hi", p["W_hi"].T[:3]), x, s), ValueError,
     r"params\['W_hi'\] must have shape \(4, 4\), got \(3, 4\)"),
    ("params-list-value", LSTM, lambda p, x, s: (with_param(p, "b_xi", p["b_xi"].tolist()), x, s),
     TypeError, r"params\['b_xi'\] must be a numpy.ndarray, got list"),
    ("params-int", LSTM, lambda p, x, s: (with_param(p, "b_xi", p["b_xi"].astype(int)), x, s),
     TypeError, r"params\['b_xi'\] must be float32 or float64, got int64"),
    ("params-mixed-dtypes", LSTM,
     lambda p, x, s: (with_param(p, "b_xi", p["b_xi"].astype(np.float32)), x, s), TypeError,
     r"params must share one dtype, got \['float32', 'float64'\]"),
    ("params-nan", LSTM, lambda p, x, s: (with_param(p, "W_hc", nan_at(p["W_hc"], (2, 1))), x, s),
     ValueError, r"params\['W_hc'\] must be finite, got nan at index \(2, 1\)"),
    ("state-array-for-lstm", LSTM, lambda p, x, s: (p, x, s[0]), TypeError,
     r"state: the state \(an lstm state \(H, C\)\) must be a tuple of 2, got ndarray"),
    ("state-triple-for-lstm", LSTM, lambda p, x, s: (p, x, s + (s[0],)), TypeError,
     r"must be a tuple of 2, got tuple of 3"),
    ("state-tuple-for-rnn", multirnn.RNNScratch(3, 4), lambda p, x, s: (p, x, (s,)), TypeError,
     r"state: the state must be a numpy.ndarray H, got tuple"),
    ("state-bi-not-pair", BIRNN, lambda p, x, s: (p, x, s[0]), TypeError,
     r"bidirectional: \(fwd_state, bwd_state\)\) must be a tuple of 2, got ndarray"),
    ("state-layers", STACK, lambda p, x, s: (p, x, s[:1]), TypeError,
     r"one entry per layer, 2\) must be a tuple of 2, got tuple of 1"),
    ("state-batch", LSTM, lambda p, x, s: (p, x, (s[0][:1], s[1])), ValueError,
     r"state \(layer 0, fwd, H\) must have shape \(2, 4\), got \(1, 4\)"),
    ("state-hidden", BIRNN, lambda p, x, s: (p, x, (s[0], s[1][:, :3])), ValueError,
     r"state \(layer 0, bwd\) must have shape \(2, 4\), got \(2, 3\)"),
    ("state-dtype", LSTM, lambda p, x, s: (p, x, (s[0], s[1].astype(np.float32))), TypeError,
     r"state \(layer 0, fwd, C\) must have dtype float64 \(the params' dtype\), got float32"),
    ("state-nan", STACK, lambda p, x, s: (p, x, (s[0], nan_at(s[1], (1, 3)))), ValueError,
     r"state \(layer 1, fwd\) must be finite, got nan at index \(1, 3\)"),
]


@pytest.mark.parametrize("entry", ["forward", "gradients"])
@pytest.mark.parametrize("bad_id, model, mutate, error, match", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_named_before_any_backend_is_touched(monkeypatch, entry, bad_id, model, mutate, error,
                                                          match):
    """Validation is backend-independent: it runs before the registry is asked for a backend, so one
    run per case covers every backend (a backend touched first would fail this test)."""
    from multirnn import backends

    def untouchable(name):
        raise AssertionError(f"backend {name!r} was touched before the input was validated")
    monkeypatch.setattr(backends, "get", untouchable)
    params, inputs, state = mutate(*case(model))
    with pytest.raises(error, match=match):
        getattr(multirnn, entry)(model, params, inputs, state, backend="torch")


@pytest.mark.parametrize("cotangent, error, match", [
    (np.ones((3, 2, 4)), ValueError, r"cotangent must have shape \(3, 2, 8\), got \(3, 2, 4\)"),
    (np.ones((3, 2, 8), np.float32), TypeError, r"cotangent must have dtype float64"),
    (np.full((3, 2, 8), np.inf), ValueError, r"cotangent must be finite, got inf at index \(0, 0, 0\)"),
    ([[[1.0]]], TypeError, r"cotangent must be a numpy.ndarray, got list"),
])
def test_bad_cotangent(backend_or_numpy, cotangent, error, match):
    params, inputs, _ = case(BIRNN)
    with pytest.raises(error, match=match):
        multirnn.gradients(BIRNN, params, inputs, backend=backend_or_numpy, cotangent=cotangent)


def test_bad_model_and_backend():
    params, inputs, _ = case(LSTM)
    with pytest.raises(TypeError, match="model must be a multirnn spec .* got dict"):
        multirnn.forward({"cell": "lstm"}, params, inputs)
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'theano'"):
        multirnn.forward(LSTM, params, inputs, backend="theano")
    with pytest.raises(ValueError, match=r"backend must be one of .* got None"):
        multirnn.gradients(LSTM, params, inputs, backend=None)
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lstm', 'rnn'\], got 'tcn'"):
        multirnn.RecurrentSpec(3, 4, cell="tcn")
    with pytest.raises(ValueError, match=r"nonlinearity must be one of \('tanh', 'relu'\), got 'gelu'"):
        multirnn.RNNScratch(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"num_hiddens must be a positive int, got 0"):
        multirnn.RNNScratch(3, 0)
    with pytest.raises(ValueError, match=r"gate_activation='hard_sigmoid' applies to cell='gru' or 'lstm'"):
        multirnn.RecurrentSpec(3, 4, cell="rnn", gate_activation="hard_sigmoid")
    with pytest.raises(TypeError, match=r"bidirectional must be a bool, got 'yes'"):
        multirnn.RecurrentSpec(3, 4, bidirectional="yes")
    with pytest.raises(TypeError, match=r"batch_first must be a bool, got 1"):
        multirnn.RNNScratch(3, 4, batch_first=1)
    with pytest.raises(ValueError, match=r"sigma must be a non-negative float, got nan"):
        multirnn.RNNScratch(3, 4, sigma=float("nan"))
    with pytest.raises(ValueError, match=r"num_layers must be a positive int, got 2.0"):
        multirnn.RecurrentSpec(3, 4, num_layers=2.0)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("model_kind", ["lstm-stack-bi", "rnn"])
def test_zero_length_sequence(backend_or_numpy, batch_first, model_kind):
    """Defined behaviour: empty outputs, state unchanged (a copy), zero gradients."""
    if model_kind == "rnn":
        model = multirnn.RNNScratch(3, 4, batch_first=batch_first)
    else:
        model = multirnn.RecurrentSpec(3, 4, cell="lstm", num_layers=2, bidirectional=True,
                                       batch_first=batch_first)
    params, _, state = case(model)
    inputs = np.zeros((2, 0, 3) if batch_first else (0, 2, 3))
    out, new_state = multirnn.forward(model, params, inputs, state, backend=backend_or_numpy)
    assert out.shape == ((2, 0, model.output_size) if batch_first else (0, 2, model.output_size))
    assert out.dtype == np.float64
    from multirnn.state import flatten_state

    for got, want in zip(flatten_state(model, new_state), flatten_state(model, state)):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
            assert a is not b  # a copy: mutating the result must not touch the caller's state
    grads = multirnn.gradients(model, params, inputs, state, backend=backend_or_numpy)
    assert sorted(grads) == sorted(params)
    for name, value in grads.items():
        np.testing.assert_array_equal(value, np.zeros_like(params[name]))


def test_float32_everything_is_accepted(backend_or_numpy):
    """The checks do not reject valid float32 input (non-finite checks run in the input's dtype)."""
    params, inputs, state = case(LSTM, "float32")
    out, _ = multirnn.forward(LSTM, params, inputs, state, backend=backend_or_numpy)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
