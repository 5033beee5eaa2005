"""NumPy reference of the language model: forward and hand-written backward of the output layer and the
softmax cross-entropy, chained into multirnn.reference's BPTT. The oracle of every backend's LM.

Written apart from multirnn.lm.head (explicit log-sum-exp, explicit scatter-add for the embedding).
Time-major: tokens and targets are integer arrays (num_steps, batch).
"""
from __future__ import annotations

import numpy as np

from .. import reference
from .head import rnn_params


def _inputs(lm, params, tokens):
    if lm.embed_size is None:
        return np.eye(lm.vocab_size, dtype=params["W_hq"].dtype)[tokens]
    return params["W_embed"][tokens]


def logits(lm, params, tokens, flat_state):
    """(logits (num_steps, batch, vocab), flat final state, tape)."""
    ys, finals, tape = reference.forward(lm.rnn, rnn_params(lm, params), _inputs(lm, params, tokens),
                                         flat_state)
    return ys @ params["W_hq"] + params["b_q"], finals, (ys, tape)


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(out: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-token -log softmax(out)[target], shape of targets."""
    return -np.take_along_axis(log_softmax(out), targets[..., None], axis=-1)[..., 0]


def value_and_grad(lm, params, tokens, targets, flat_state):
    """(mean cross-entropy, param grads, flat initial-state grads, flat final state)."""
    out, finals, (ys, tape) = logits(lm, params, tokens, flat_state)
    loss = cross_entropy(out, targets).mean()
    # d mean(CE) / d logits = (softmax - onehot(target)) / number of tokens
    d_out = np.exp(log_softmax(out))
    steps, batch = targets.shape
    t_idx, b_idx = np.meshgrid(np.arange(steps), np.arange(batch), indexing="ij")
    d_out[t_idx, b_idx, targets] -= 1.0
    d_out /= targets.size
    hidden = ys.shape[-1]
    grads = {"W_hq": ys.reshape(-1, hidden).T @ d_out.reshape(-1, lm.vocab_size),
             "b_q": d_out.sum(axis=(0, 1))}
    d_ys = d_out @ params["W_hq"].T
    rnn_grads, d_inputs, d_state = reference.backward(lm.rnn, rnn_params(lm, params), tape, d_ys)
    grads.update(rnn_grads)
    if lm.embed_size is not None:
        grads["W_embed"] = np.zeros_like(params["W_embed"])
        np.add.at(grads["W_embed"], tokens, d_inputs)  # rows used several times add up
    return loss, {name: grads[name] for name in params}, d_state, finals
