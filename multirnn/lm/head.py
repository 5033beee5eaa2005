"""The language model around the recurrence, written once against backends.protocol (like
multirnn.recurrence): backends know nothing of the LM.

tokens -> one-hot or embedding rows -> multirnn.recurrence.run -> O_t = H_t W_hq + b_q -> softmax
cross-entropy, from the protocol's array operations (one_hot, take_rows, log_softmax, sum_all besides
the recurrence's); gradients from the backend's ``value_and_grad``, compiled by its ``compile``.

Tokens here are time-major integer arrays (num_steps, batch); multirnn.lm adapts the user's layout.
"""
from __future__ import annotations

import functools



def rnn_params(lm, params: dict) -> dict:
    """The recurrent part of an LM's params (exactly the RecurrentSpec's canonical names)."""
    return {name: params[name] for name in lm.rnn.param_shapes()}


def embed(ops, lm, params: dict, tokens):
    """Network inputs (num_steps, batch, num_inputs) of integer tokens (num_steps, batch)."""
    if lm.embed_size is None:
        return ops.one_hot(tokens, lm.vocab_size, params["W_hq"])
    return ops.take_rows(params["W_embed"], tokens)


def logits(ops, lm, params: dict, tokens, flat_state):
    """(logits (num_steps, batch, vocab_size), flat final state)."""
    # run_recurrence, not recurrence.run: MXNet runs its cached graph there
    ys, finals = ops.run_recurrence(lm.rnn, rnn_params(lm, params), embed(ops, lm, params, tokens),
                                    flat_state)
    return ops.matmul(ys, params["W_hq"]) + params["b_q"], finals


def loss(ops, lm, params: dict, tokens, targets, flat_state):
    """(mean softmax cross-entropy per token, flat final state). targets: like tokens."""
    out, finals = logits(ops, lm, params, tokens, flat_state)
    mask = ops.one_hot(targets, lm.vocab_size, out)
    # The token count as sum(mask) (exact in floating point) keeps traced shapes free of Python ints.
    return -ops.sum_all(ops.log_softmax(out) * mask) / ops.sum_all(mask), finals


@functools.lru_cache(maxsize=64)
def compiled_logits(ops, lm):
    """logits(params, tokens, flat_state) compiled by the backend, once per (backend, model)."""
    return ops.compile(functools.partial(logits, ops, lm))


@functools.lru_cache(maxsize=64)
def compiled_value_and_grad(ops, lm):
    """g((params, flat_state), tokens, targets) -> ((loss, flat final state), (d params, d flat state)),
    the backend's autodiff of ``loss`` compiled once per (backend, model)."""
    def loss_of(wrt, tokens, targets):
        params, flat_state = wrt
        return loss(ops, lm, params, tokens, targets, flat_state)
    return ops.compile(ops.value_and_grad(loss_of))
