"""The oracle itself: the NumPy reference against d2l's published equations, finite differences and
structural identities. (Everything else is tested against this file's subject.)"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CELL_VARIANTS, make_case, random_state

import multirnn
from multirnn.spec import RecurrentSpec


def d2l_rnn(inputs, W_xh, W_hh, b_h, H):
    """d2l's RNNScratch.forward, transcribed."""
    outputs = []
    for X in inputs:
        H = np.tanh(np.matmul(X, W_xh) + np.matmul(H, W_hh) + b_h)
        outputs.append(H)
    return outputs, H


def d2l_gru(inputs, p, H):
    """d2l's GRUScratch.forward (reset gate before the matmul); d2l's single biases b_z, b_r, b_h
    are our b_x* + b_h*."""
    outputs = []
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    b = {g: p[f"b_x{g}"] + p[f"b_h{g}"] for g in "zrh"}
    for X in inputs:
        Z = sig(X @ p["W_xz"] + H @ p["W_hz"] + b["z"])
        R = sig(X @ p["W_xr"] + H @ p["W_hr"] + b["r"])
        H_tilde = np.tanh(X @ p["W_xh"] + (R * H) @ p["W_hh"] + b["h"])
        H = Z * H + (1 - Z) * H_tilde
        outputs.append(H)
    return outputs, H


def d2l_lstm(inputs, p, H, C):
    """d2l's LSTMScratch.forward."""
    outputs = []
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    b = {g: p[f"b_x{g}"] + p[f"b_h{g}"] for g in "ifoc"}
    for X in inputs:
        I = sig(X @ p["W_xi"] + H @ p["W_hi"] + b["i"])  # noqa: E741
        F = sig(X @ p["W_xf"] + H @ p["W_hf"] + b["f"])
        O = sig(X @ p["W_xo"] + H @ p["W_ho"] + b["o"])  # noqa: E741
        C_tilde = np.tanh(X @ p["W_xc"] + H @ p["W_hc"] + b["c"])
        C = F * C + I * C_tilde
        H = O * np.tanh(C)
        outputs.append(H)
    return outputs, (H, C)


def test_rnn_matches_d2l_equations():
    model = multirnn.RNNScratch(4, 5)
    params, inputs = make_case(model)
    H0 = random_state(model, 3, 1, "float64")
    outputs, state = multirnn.forward(model, params, inputs, H0)
    d2l_out, d2l_state = d2l_rnn(inputs, params["W_xh"], params["W_hh"], params["b_h"], H0)
    np.testing.assert_allclose(outputs, np.stack(d2l_out), rtol=0, atol=1e-14)
    np.testing.assert_allclose(state, d2l_state, rtol=0, atol=1e-14)


def test_birnn_matches_d2l_definition():
    """d2l BiRNNScratch: f_rnn on inputs, b_rnn on reversed(inputs), outputs concatenated per step
    with the backward outputs reversed back."""
    model = multirnn.BiRNNScratch(4, 5)
    params, inputs = make_case(model)
    Hf, Hb = random_state(model, 3, 1, "float64")
    outputs, (state_f, state_b) = multirnn.forward(model, params, inputs, (Hf, Hb))
    f_out, f_H = d2l_rnn(inputs, params["fwd.W_xh"], params["fwd.W_hh"], params["fwd.b_h"], Hf)
    b_out, b_H = d2l_rnn(inputs[::-1], params["bwd.W_xh"], params["bwd.W_hh"], params["bwd.b_h"], Hb)
    expected = np.stack([np.concatenate((f, b), -1) for f, b in zip(f_out, reversed(b_out))])
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(state_f, f_H, rtol=0, atol=1e-14)
    np.testing.assert_allclose(state_b, b_H, rtol=0, atol=1e-14)


def test_birnn_backward_half_is_reversed_rnn():
    bi = multirnn.BiRNNScratch(4, 5)
    params, inputs = make_case(bi)
    outputs, (_, state_b) = multirnn.forward(bi, params, inputs)
    uni = multirnn.RNNScratch(4, 5)
    bwd = {k[len("bwd."):]: v for k, v in params.items() if k.startswith("bwd.")}
    uni_out, uni_state = multirnn.forward(uni, bwd, np.ascontiguousarray(inputs[::-1]))
    np.testing.assert_array_equal(outputs[..., 5:], uni_out[::-1])
    np.testing.assert_array_equal(state_b, uni_state)


def test_gru_and_lstm_match_d2l_equations():
    gru = multirnn.GRUScratch(4, 5)
    params, inputs = make_case(gru)
    H0 = random_state(gru, 3, 1, "float64")
    outputs, state = multirnn.forward(gru, params, inputs, H0)
    d2l_out, d2l_state = d2l_gru(inputs, params, H0)
    np.testing.assert_allclose(outputs, np.stack(d2l_out), rtol=0, atol=1e-14)
    np.testing.assert_allclose(state, d2l_state, rtol=0, atol=1e-14)

    lstm = multirnn.LSTMScratch(4, 5)
    params, inputs = make_case(lstm)
    H0, C0 = random_state(lstm, 3, 1, "float64")
    outputs, (H, C) = multirnn.forward(lstm, params, inputs, (H0, C0))
    d2l_out, (d2l_H, d2l_C) = d2l_lstm(inputs, params, H0, C0)
    np.testing.assert_allclose(outputs, np.stack(d2l_out), rtol=0, atol=1e-14)
    np.testing.assert_allclose(H, d2l_H, rtol=0, atol=1e-14)
    np.testing.assert_allclose(C, d2l_C, rtol=0, atol=1e-14)


def test_stacked_layers_feed_previous_outputs():
    """d2l StackedRNNScratch: layer i > 0 runs on layer i-1's outputs."""
    deep = multirnn.RNNScratch(4, 5, num_layers=2)
    params, inputs = make_case(deep)
    outputs, (s0, s1) = multirnn.forward(deep, params, inputs)
    layer = multirnn.RNNScratch(4, 5)
    out0, st0 = multirnn.forward(layer, {k[3:]: v for k, v in params.items() if k.startswith("l0.")}, inputs)
    out1, st1 = multirnn.forward(multirnn.RNNScratch(5, 5),
                                 {k[3:]: v for k, v in params.items() if k.startswith("l1.")}, out0)
    np.testing.assert_array_equal(outputs, out1)
    np.testing.assert_array_equal(s0, st0)
    np.testing.assert_array_equal(s1, st1)


def finite_difference_check(model, params, inputs, state, cotangent, **kwargs):
    grads = multirnn.gradients(model, params, inputs, state, cotangent=cotangent, **kwargs)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name, value in params.items():
        for _ in range(3):  # a few random coordinates of each parameter
            index = tuple(rng.integers(0, n) for n in value.shape)
            plus, minus = dict(params), dict(params)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][index] += eps
            minus[name][index] -= eps
            f_plus = np.sum(multirnn.forward(model, plus, inputs, state, **kwargs)[0] * cotangent)
            f_minus = np.sum(multirnn.forward(model, minus, inputs, state, **kwargs)[0] * cotangent)
            numeric = (f_plus - f_minus) / (2 * eps)
            assert abs(grads[name][index] - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name, index)


@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_bptt_matches_finite_differences(variant, layers, bidirectional):
    model = RecurrentSpec(3, 4, num_layers=layers, bidirectional=bidirectional, **CELL_VARIANTS[variant])
    params, inputs = make_case(model, steps=4, batch=2, scale=10.0)
    state = random_state(model, 2, 5, "float64")
    cotangent = np.random.default_rng(7).normal(size=(4, 2, model.output_size))
    finite_difference_check(model, params, inputs, state, cotangent)


def test_bptt_through_dropout_matches_finite_differences():
    model = multirnn.GRUScratch(3, 4, num_layers=3, bidirectional=True, dropout=0.5)
    params, inputs = make_case(model, steps=4, batch=2, scale=10.0)
    cotangent = np.random.default_rng(7).normal(size=(4, 2, model.output_size))
    finite_difference_check(model, params, inputs, None, cotangent, training=True, dropout_seed=3)


def test_dropout_is_identity_in_eval_and_drops_in_training():
    model = multirnn.RNNScratch(3, 4, num_layers=2, dropout=0.5)
    params, inputs = make_case(model, steps=50, batch=8)
    eval_out, _ = multirnn.forward(model, params, inputs)
    no_dropout = multirnn.RNNScratch(3, 4, num_layers=2)
    np.testing.assert_array_equal(eval_out, multirnn.forward(no_dropout, params, inputs)[0])
    train_a, _ = multirnn.forward(model, params, inputs, training=True, dropout_seed=1)
    train_b, _ = multirnn.forward(model, params, inputs, training=True, dropout_seed=1)
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.allclose(train_a, eval_out)
    from multirnn.dropout import dropout_masks

    (mask,) = dropout_masks(model, 50, 8, seed=1, dtype="float64")
    assert set(np.unique(mask)) == {0.0, 2.0}
    assert 0.4 < np.mean(mask == 0) < 0.6  # 1600 Bernoulli(0.5) draws
    # no dropout after the last layer: single-layer models have no masks at all
    assert dropout_masks(multirnn.RNNScratch(3, 4, dropout=0.5), 5, 2, 0, "float64") is None


def test_seeded_init_is_reproducible_and_d2l_shaped():
    model = multirnn.BiRNNScratch(28, 32, sigma=0.01)
    a = multirnn.init_params(model, seed=42)
    b = multirnn.init_params(model, seed=42)
    c = multirnn.init_params(model, seed=43)
    assert list(a) == ["fwd.W_xh", "fwd.W_hh", "fwd.b_h", "bwd.W_xh", "bwd.W_hh", "bwd.b_h"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == np.float32
    assert not np.array_equal(a["fwd.W_xh"], c["fwd.W_xh"])
    assert a["fwd.W_xh"].shape == (28, 32) and a["bwd.W_hh"].shape == (32, 32)
    np.testing.assert_array_equal(a["fwd.b_h"], np.zeros(32))
    # sigma is the std of the weights: 28*32 + 32*32 draws per direction
    weights = np.concatenate([a[k].ravel() for k in a if "W_" in k])
    assert 0.0095 < weights.std() < 0.0105
    # float64 params of one seed equal the float32 ones up to rounding
    d = multirnn.init_params(model, seed=42, dtype="float64")
    np.testing.assert_array_equal(d["fwd.W_xh"].astype(np.float32), a["fwd.W_xh"])


# A non-suffix mask (batch, steps): gaps, a leading masked step, a masked last step.
FD_MASK = np.array([[True, False, True, True, False], [False, True, False, True, True]])


@pytest.mark.parametrize("options", [{}, {"reverse": True, "keep_order": False}, {"num_layers": 2},
                                     {"bidirectional": True, "num_layers": 2}],
                         ids=["forward", "go-backwards", "stack", "bidirectional-stack"])
@pytest.mark.parametrize("variant", ["gru-reset-before", "lstm"])
def test_masked_bptt_matches_finite_differences(variant, options):
    """The cotangent of a unidirectional model's masked step reaches the output it repeats; that
    path, the kept states and the whole-sequence reversal all checked numerically."""
    model = RecurrentSpec(3, 4, **options, **CELL_VARIANTS[variant])
    params, inputs = make_case(model, steps=5, batch=2, scale=10.0)
    state = random_state(model, 2, 5, "float64")
    cotangent = np.random.default_rng(7).normal(size=(5, 2, model.output_size))
    finite_difference_check(model, params, inputs, state, cotangent, mask=FD_MASK)
