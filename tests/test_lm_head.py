"""Output layer O_t = H_t W_hq + b_q and softmax cross-entropy: the hand-written reference against finite
differences and an independent loss formula, the neutral code (multirnn.head) against the reference, and
every backend against the reference (logits, loss, final state, every gradient incl. the initial state's).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from multirnn.lm import reference as lm_reference
from multirnn.backends.numpy_backend import NumpyOps
from multirnn.lm.head import loss as neutral_loss
from multirnn.lm import LanguageModel, init_lm_params, logits, loss_and_grads
from multirnn.state import flatten_state

VOCAB = 7
CASES = {  # name: (cell, layers, embed_size, reset_after)
    "rnn-onehot": ("rnn", 1, None, False),
    "gru-embed": ("gru", 1, 4, False),
    "gru-reset-after-embed-2layers": ("gru", 2, 3, True),
    "lstm-onehot-2layers": ("lstm", 2, None, False),
}


def make_lm(case):
    cell, layers, embed, reset_after = CASES[case]
    return LanguageModel.build(VOCAB, 5, cell=cell, num_layers=layers, embed_size=embed,
                               reset_after=reset_after)


def make_params(lm, dtype="float64", seed=0):
    """Scaled-up weights and random biases so the nonlinearities bend and bias bugs show."""
    rng = np.random.default_rng(seed + 7)
    params = {}
    for name, value in init_lm_params(lm, seed, "float64").items():
        short = name.rsplit(".", 1)[-1]
        params[name] = rng.normal(0, 0.3, value.shape) if short.startswith("b_") else \
            value * (1.0 if name == "W_embed" else 40.0)
    return {k: v.astype(dtype) for k, v in params.items()}


def make_batch(lm, batch=3, steps=6, seed=1, dtype="float64"):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, lm.vocab_size, (batch, steps))
    targets = rng.integers(0, lm.vocab_size, (batch, steps))
    state = [tuple(rng.normal(0, 0.5, (batch, lm.rnn.num_hiddens)).astype(dtype)
                   for _ in range(lm.rnn.state_arrays)) for _ in lm.rnn.units()]
    return tokens, targets, state


def nested(lm, flat):
    from multirnn.state import nest_state
    return nest_state(lm.rnn, flat)


def flat_list(lm, state):
    return [a for unit in flatten_state(lm.rnn, state) for a in unit]


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_loss_is_mean_negative_log_probability(case):
    """The loss against a direct formula: -mean log(exp(o_y) / sum exp(o))."""
    lm = make_lm(case)
    params = make_params(lm)
    tokens, targets, state = make_batch(lm)
    out, _ = logits(lm, params, tokens, nested(lm, state))
    probs = np.exp(out) / np.exp(out).sum(-1, keepdims=True)
    b, t = np.meshgrid(np.arange(3), np.arange(6), indexing="ij")
    expected = -np.mean(np.log(probs[b, t, targets]))
    got = loss_and_grads(lm, params, tokens, targets, nested(lm, state)).loss
    assert abs(got - expected) < 1e-12


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_gradients_match_finite_differences(case):
    """Every parameter entry and the initial state, central differences in float64."""
    lm = make_lm(case)
    params = make_params(lm)
    tokens, targets, state = make_batch(lm, batch=2, steps=4)
    xs, ys = tokens.T.copy(), targets.T.copy()
    loss, grads, d_state, _ = lm_reference.value_and_grad(lm, params, xs, ys, state)
    eps = 1e-6

    def f(p, s):
        return lm_reference.value_and_grad(lm, p, xs, ys, s)[0]

    for name, value in params.items():
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            bumped = {k: v.copy() for k, v in params.items()}
            bumped[name][idx] += eps
            up = f(bumped, state)
            bumped[name][idx] -= 2 * eps
            numeric[idx] = (up - f(bumped, state)) / (2 * eps)
        assert np.any(grads[name] != 0), name
        np.testing.assert_allclose(grads[name], numeric, atol=1e-7, err_msg=name)
    for unit, arrays in enumerate(state):
        for k, array in enumerate(arrays):
            numeric = np.zeros_like(array)
            for idx in np.ndindex(array.shape):
                for sign in (1, -1):
                    moved = [tuple(a.copy() for a in u) for u in state]
                    moved[unit][k][idx] += sign * eps
                    numeric[idx] += sign * f(params, moved) / (2 * eps)
            np.testing.assert_allclose(d_state[unit][k], numeric, atol=1e-7, err_msg=f"state {unit},{k}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_neutral_head_on_numpy_matches_reference(case):
    """multirnn.head (fused recurrence, log_softmax Op) against the hand-written reference, no framework."""
    lm = make_lm(case)
    params = make_params(lm)
    tokens, targets, state = make_batch(lm)
    got, finals = neutral_loss(NumpyOps(), lm, params, tokens.T, targets.T, state)
    want, _, _, ref_finals = lm_reference.value_and_grad(lm, params, tokens.T, targets.T, state)
    assert abs(float(got) - want) <= 1e-12
    for a, b in zip(finals, ref_finals):
        for x, y in zip(a, b):
            assert_close(x, y, "float64", "final state")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_backend_matches_reference(backend, case, dtype):
    lm = make_lm(case)
    params = make_params(lm, dtype)
    tokens, targets, state = make_batch(lm, dtype=dtype)
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    state64 = [tuple(a.astype(np.float64) for a in u) for u in state]
    ref = loss_and_grads(lm, params64, tokens, targets, nested(lm, state64))
    ref_out, _ = logits(lm, params64, tokens, nested(lm, state64))

    out, _ = logits(lm, params, tokens, nested(lm, state), backend=backend)
    assert out.dtype == np.dtype(dtype) and out.shape == (3, 6, VOCAB)
    assert_close(out, ref_out, dtype, "logits")
    got = loss_and_grads(lm, params, tokens, targets, nested(lm, state), backend=backend)
    assert_close(np.array(got.loss), np.array(ref.loss), dtype, "loss")
    assert sorted(got.grads) == sorted(params)
    for name in params:
        assert got.grads[name].dtype == np.dtype(dtype)
        assert np.any(ref.grads[name] != 0), f"reference d/d{name} is all zero: weak test"
        assert_close(got.grads[name], ref.grads[name], dtype, f"d/d{name}")
    for k, (a, b) in enumerate(zip(flat_list(lm, got.state_grads), flat_list(lm, ref.state_grads))):
        assert_close(a, b, dtype, f"d/d initial state array {k}")
    for k, (a, b) in enumerate(zip(flat_list(lm, got.state), flat_list(lm, ref.state))):
        assert_close(a, b, dtype, f"final state array {k}")


def test_embedding_gradient_adds_up_repeated_tokens(backend):
    """A token used at several positions gets the sum of their gradients (scatter-add), on a batch
    made of a single repeated token."""
    lm = make_lm("gru-embed")
    params = make_params(lm)
    tokens = np.full((2, 5), 3)
    targets = np.arange(10).reshape(2, 5) % VOCAB
    ref = loss_and_grads(lm, params, tokens, targets)
    got = loss_and_grads(lm, params, tokens, targets, backend=backend)
    unused = [i for i in range(VOCAB) if i != 3]
    assert np.all(ref.grads["W_embed"][unused] == 0) and np.any(ref.grads["W_embed"][3] != 0)
    assert_close(got.grads["W_embed"], ref.grads["W_embed"], "float64", "d/dW_embed")


def test_bad_input_is_named():
    lm = make_lm("rnn-onehot")
    params = make_params(lm)
    tokens, targets, _ = make_batch(lm)
    with pytest.raises(ValueError, match="tokens must hold indices in"):
        logits(lm, params, tokens + VOCAB)
    with pytest.raises(ValueError, match="targets must have shape"):
        loss_and_grads(lm, params, tokens, targets[:, :2])
    with pytest.raises(ValueError, match="2-D integer array"):
        logits(lm, params, tokens.astype(np.float64))
    with pytest.raises(ValueError, match="missing \\['W_hq'\\]"):
        logits(lm, {k: v for k, v in params.items() if k != "W_hq"}, tokens)
    with pytest.raises(ValueError, match="unidirectional"):
        LanguageModel(make_lm("rnn-onehot").rnn.__class__(VOCAB, 4, bidirectional=True), VOCAB)
    with pytest.raises(ValueError, match="rnn.num_inputs must be"):
        LanguageModel.build(VOCAB, 4).__class__(make_lm("gru-embed").rnn, VOCAB)
