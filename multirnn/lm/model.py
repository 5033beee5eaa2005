"""Language model (d2l's RNNLMScratch, any cell): spec, seeded params and the public functions.

Parameters are the recurrent spec's canonical params plus ``W_hq (output_size, vocab)``, ``b_q (vocab,)``
and, with an embedding, ``W_embed (vocab, embed_size)``. Tokens are batch-major integer arrays
``(batch, num_steps)`` as the minibatch iterators of multirnn.lm.text yield them; state follows the
recurrent spec's convention (None = zeros).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import validate
from . import head
from . import reference as lm_reference
from ..params import check_dtype, init_params
from ..spec import RecurrentSpec
from ..state import nest_state

@dataclass(frozen=True)
class LanguageModel:
    """A unidirectional recurrent ``rnn`` between one-hot (embed_size=None) or embedding inputs and an
    output layer over ``vocab_size`` tokens."""

    rnn: RecurrentSpec
    vocab_size: int
    embed_size: int | None = None
    embed_sigma: float = 1.0  # std of the embedding init (torch's nn.Embedding default)

    def __post_init__(self):
        if not isinstance(self.rnn, RecurrentSpec):
            raise TypeError(f"rnn must be a RecurrentSpec, got {type(self.rnn).__name__}")
        if self.rnn.bidirectional:
            raise ValueError("rnn must be unidirectional for a language model (it may not see the future)")
        if self.rnn.learn_initial_state:
            raise ValueError("rnn.learn_initial_state=True is not supported by the language model (its "
                             "training carries the state between batches)")
        for name in ("vocab_size", "embed_size"):
            value = getattr(self, name)
            if value is None and name == "embed_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        width = self.vocab_size if self.embed_size is None else self.embed_size
        if self.rnn.num_inputs != width:
            source = "vocab_size" if self.embed_size is None else "embed_size"
            raise ValueError(f"rnn.num_inputs must be {width} ({source}), got {self.rnn.num_inputs}")

    @classmethod
    def build(cls, vocab_size: int, num_hiddens: int, cell: str = "rnn", num_layers: int = 1,
              embed_size: int | None = None, **rnn_fields) -> "LanguageModel":
        rnn = RecurrentSpec(num_inputs=embed_size or vocab_size, num_hiddens=num_hiddens, cell=cell,
                            num_layers=num_layers, **rnn_fields)
        return cls(rnn, vocab_size, embed_size)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = dict(self.rnn.param_shapes())
        if self.embed_size is not None:
            shapes["W_embed"] = (self.vocab_size, self.embed_size)
        shapes["W_hq"] = (self.rnn.output_size, self.vocab_size)
        shapes["b_q"] = (self.vocab_size,)
        return shapes

    def to_dict(self) -> dict:
        from multirnn.checkpoint import spec_to_dict

        return {"rnn": spec_to_dict(self.rnn), "vocab_size": self.vocab_size,
                "embed_size": self.embed_size, "embed_sigma": self.embed_sigma}

    @classmethod
    def from_dict(cls, data: dict) -> "LanguageModel":
        from multirnn.checkpoint import spec_from_dict

        stored = data["rnn"]  # multirnn 0.1 wrote the spec's fields alone
        rnn = spec_from_dict(stored if "class" in stored else {"class": "RecurrentSpec", "fields": stored})
        return cls(rnn, int(data["vocab_size"]), data.get("embed_size"), float(data.get("embed_sigma", 1.0)))


def init_lm_params(lm: LanguageModel, seed: int, dtype="float32") -> dict[str, np.ndarray]:
    """The recurrent params of multirnn.init_params(lm.rnn, seed) and head params drawn from
    (seed, 1): W_hq ~ normal(0, rnn.sigma), b_q = 0, W_embed ~ normal(0, embed_sigma)."""
    dtype = check_dtype(dtype)
    params = init_params(lm.rnn, seed, dtype)
    rng = np.random.default_rng([int(seed), 1])
    if lm.embed_size is not None:
        params["W_embed"] = rng.normal(0.0, lm.embed_sigma, (lm.vocab_size, lm.embed_size)).astype(dtype)
    params["W_hq"] = rng.normal(0.0, lm.rnn.sigma, (lm.rnn.output_size, lm.vocab_size)).astype(dtype)
    params["b_q"] = np.zeros(lm.vocab_size, dtype)
    return params


# ---- validation ----

def check_lm(lm) -> LanguageModel:
    if not isinstance(lm, LanguageModel):
        raise TypeError(f"lm must be a multirnn.lm.LanguageModel, got {type(lm).__name__}")
    return lm


def check_lm_params(lm: LanguageModel, params) -> np.dtype:
    """Exactly lm.param_shapes(), one float dtype (multirnn.validate's checks)."""
    return validate.check_param_dict(lm.param_shapes(), params, "the layout of the language model")


def check_tokens(name: str, tokens, vocab_size: int, shape=None) -> np.ndarray:
    """A 2-D integer array (batch, num_steps) of indices in [0, vocab_size)."""
    if not isinstance(tokens, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of token indices, got {type(tokens).__name__}")
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{name} must be a 2-D integer array (batch, num_steps), got {tokens.dtype} "
                         f"shape {tokens.shape}")
    if shape is not None and tokens.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (that of tokens), got {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{name} must hold indices in [0, {vocab_size}), "
                         f"got [{tokens.min()}, {tokens.max()}]")
    if tokens.shape[1] == 0:
        raise ValueError(f"{name} must have at least one step, got shape {tokens.shape}")
    return np.ascontiguousarray(tokens.T).astype(np.int64)  # time-major for the backends


def _prepare(lm, params, tokens, state, backend, targets=None):
    from multirnn import backends

    check_lm(lm)
    dtype = check_lm_params(lm, params)
    xs = check_tokens("tokens", tokens, lm.vocab_size)
    ys = None if targets is None else check_tokens("targets", targets, lm.vocab_size, tokens.shape)
    flat = validate.check_state(lm.rnn, state, xs.shape[1], dtype)
    return backends.get(backend), xs, ys, flat


# ---- on a backend: NumPy time-major in and out ----

def _to_backend(impl, params, flat_state):
    return ({k: impl.asarray(v) for k, v in params.items()},
            [tuple(impl.asarray(a) for a in unit) for unit in flat_state])


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """NumPy, for perplexity and sampling (written apart from the reference: that one is the oracle)."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _state_to_numpy(impl, flat_state):
    return [tuple(impl.to_numpy(a) for a in unit) for unit in flat_state]


def time_major_logits(impl, lm, params, tokens, flat_state):
    """(logits (num_steps, batch, vocab), flat final state). The NumPy backend is the reference."""
    if impl.is_reference:
        return lm_reference.logits(lm, params, tokens, flat_state)[:2]
    with impl.precision(params["W_hq"].dtype):
        p, s = _to_backend(impl, params, flat_state)
        out, finals = head.compiled_logits(impl, lm)(p, impl.asindex(tokens), s)
        return impl.to_numpy(out), _state_to_numpy(impl, finals)


def time_major_loss_and_grads(impl, lm, params, tokens, targets, flat_state):
    """(loss, param grads, flat initial-state grads, flat final state) by the backend's autodiff; the
    NumPy backend's "autodiff" is the hand-written reference."""
    if impl.is_reference:
        return lm_reference.value_and_grad(lm, params, tokens, targets, flat_state)
    with impl.precision(params["W_hq"].dtype):
        grad = head.compiled_value_and_grad(impl, lm)
        (loss, finals), (d_params, d_state) = grad(_to_backend(impl, params, flat_state),
                                                   impl.asindex(tokens), impl.asindex(targets))
        return (impl.to_numpy(loss).item(), {k: impl.to_numpy(v) for k, v in d_params.items()},
                _state_to_numpy(impl, d_state), _state_to_numpy(impl, finals))


# ---- public functions ----

class LossAndGrads(NamedTuple):
    loss: float
    grads: dict  # name -> array like params
    state_grads: object  # d loss / d initial state, in the state convention
    state: object  # final state, in the state convention


def logits(lm: LanguageModel, params: dict, tokens: np.ndarray, state=None, backend: str = "numpy"):
    """(logits (batch, num_steps, vocab_size), final state) of ``tokens`` on ``backend``."""
    impl, xs, _, flat = _prepare(lm, params, tokens, state, backend)
    out, finals = time_major_logits(impl, lm, params, xs, flat)
    return np.ascontiguousarray(out.swapaxes(0, 1)), nest_state(lm.rnn, finals)


def loss_and_grads(lm: LanguageModel, params: dict, tokens: np.ndarray, targets: np.ndarray, state=None,
                   backend: str = "numpy") -> LossAndGrads:
    """Mean softmax cross-entropy of predicting ``targets`` from ``tokens`` and its gradients, by the
    backend's autodiff (hand-written for ``numpy``)."""
    impl, xs, ys, flat = _prepare(lm, params, tokens, state, backend, targets)
    loss, grads, d_state, finals = time_major_loss_and_grads(impl, lm, params, xs, ys, flat)
    return LossAndGrads(float(loss), grads, nest_state(lm.rnn, d_state), nest_state(lm.rnn, finals))


def perplexity(lm: LanguageModel, params: dict, corpus: np.ndarray, backend: str = "numpy",
               batch_size: int = 16, num_steps: int = 64) -> float:
    """exp(mean per-token cross-entropy) of predicting each token of ``corpus`` from those before it.

    The corpus is cut into ``batch_size`` contiguous rows read ``num_steps`` at a time with the state
    carried over (the tail that does not fill a row, fewer than batch_size tokens, is left out); each row
    starts from a zero state.
    """
    from multirnn import backends

    check_lm(lm)
    dtype = check_lm_params(lm, params)
    corpus = np.asarray(corpus)
    usable = ((len(corpus) - 1) // batch_size) * batch_size
    if usable == 0:
        raise ValueError(f"corpus must hold more than batch_size={batch_size} tokens, got {len(corpus)}")
    xs = corpus[:usable].reshape(batch_size, -1)
    ys = corpus[1:usable + 1].reshape(batch_size, -1)
    impl = backends.get(backend)
    flat = validate.check_state(lm.rnn, None, batch_size, dtype)
    total = 0.0
    for start in range(0, xs.shape[1], num_steps):
        x = check_tokens("corpus", xs[:, start:start + num_steps], lm.vocab_size)
        out, flat = time_major_logits(impl, lm, params, x, flat)
        log_probs = _log_softmax(out.astype(np.float64))
        total -= float(np.take_along_axis(log_probs, ys[:, start:start + num_steps].T[..., None], -1).sum())
    return float(np.exp(total / xs.size))


def _token_stepper(impl, lm: LanguageModel, params: dict):
    """``advance(tokens)``: feeds time-major tokens (num_steps, 1) on from the state so far (zeros at
    first) and returns the last step's logits as float64 NumPy. On a framework the params are converted
    once and the state stays in the backend's arrays between calls, through the compiled
    ``head.compiled_logits`` that ``logits`` runs: the same numbers, without the round trips."""
    flat = validate.check_state(lm.rnn, None, 1, np.dtype(params["W_hq"].dtype))
    if impl.is_reference:
        state = [flat]

        def advance_reference(tokens):
            out, state[0] = lm_reference.logits(lm, params, tokens, state[0])[:2]
            return out[-1, 0].astype(np.float64)
        return advance_reference
    run = head.compiled_logits(impl, lm)
    p, s = _to_backend(impl, params, flat)
    state = [s]

    def advance(tokens):
        out, state[0] = run(p, impl.asindex(tokens), state[0])
        return impl.to_numpy(out)[-1, 0].astype(np.float64)
    return advance


def generate(lm: LanguageModel, params: dict, vocab, prefix: str, num_preds: int = 50,
             backend: str = "numpy", kind: str = "char", temperature: float = 0.0, seed: int = 0) -> str:
    """``prefix`` followed by ``num_preds`` predicted tokens (d2l's predict).

    The prefix is lower-cased and tokenized like the corpus (tokens not in ``vocab`` read as <unk>) and
    warms the state up; then each step feeds the last token back. temperature == 0 picks the most likely
    token (greedy); temperature > 0 samples from softmax(logits / temperature) with a generator seeded by
    ``seed``, so one seed gives one text on every backend (up to ties in floating point).
    """
    from multirnn import backends

    from .text import tokenize

    check_lm(lm)
    dtype = check_lm_params(lm, params)
    if len(vocab) != lm.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} tokens but the model's vocab_size is {lm.vocab_size}")
    if isinstance(num_preds, bool) or not isinstance(num_preds, int) or num_preds < 0:
        raise ValueError(f"num_preds must be a non-negative int, got {num_preds!r}")
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    tokens = tokenize(prefix.lower(), kind)
    if not tokens:
        raise ValueError(f"prefix must hold at least one {kind} token, got {prefix!r}")
    rng = np.random.default_rng(seed)
    impl = backends.get(backend)
    with impl.precision(dtype):
        advance = _token_stepper(impl, lm, params)
        last = advance(np.asarray(vocab.encode(tokens), np.int64)[:, None])
        generated = []
        for _ in range(num_preds):
            if generated:
                last = advance(np.array([[generated[-1]]], np.int64))
            if temperature == 0:
                token = int(np.argmax(last))
            else:
                probs = np.exp(_log_softmax(last / temperature))
                token = int(rng.choice(lm.vocab_size, p=probs / probs.sum()))
            generated.append(token)
    joiner = "" if kind == "char" else " "
    return joiner.join(tokens + vocab.decode(generated))
