"""Text pipeline of the language model: corpus, tokens, vocabulary and the two minibatch schemes of d2l.

Everything here is plain NumPy and seeded (``numpy.random.default_rng``), so a given seed yields the same
batches whatever backend trains on them.
"""
from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np

UNK = "<unk>"
TOKEN_KINDS = ("char", "word")
SCHEMES = ("random", "sequential")
# The bundled public-domain corpus (see README "Language model" for its source and checksum).
BUNDLED = "alice29.txt"


def read_text(path: str | Path | None = None) -> str:
    """The raw text of ``path``, or of the bundled corpus when ``path`` is None."""
    if path is None:
        return resources.files("multirnn.lm").joinpath("data", BUNDLED).read_text(encoding="ascii")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"corpus must be an existing text file, got {str(path)!r}")
    return path.read_text(encoding="utf-8", errors="replace")


def preprocess(text: str) -> str:
    """d2l's normalisation: every run of non-letters becomes one space, then lower case."""
    return re.sub("[^A-Za-z]+", " ", text).lower().strip()


def tokenize(text: str, kind: str = "char") -> list[str]:
    if kind not in TOKEN_KINDS:
        raise ValueError(f"token kind must be one of {TOKEN_KINDS}, got {kind!r}")
    return list(text) if kind == "char" else text.split()


class Vocab:
    """Token <-> index. Index 0 is ``<unk>``: unseen tokens (and those rarer than ``min_freq``) map there.
    The rest follow ``reserved`` and then the kept tokens in sorted order, so a token list gives one
    vocabulary everywhere."""

    def __init__(self, tokens=(), min_freq: int = 0, reserved=(), idx_to_token=None):
        if idx_to_token is None:
            counts = Counter(tokens)
            kept = sorted(t for t, n in counts.items() if n >= min_freq and t != UNK and t not in reserved)
            idx_to_token = [UNK, *reserved, *kept]
        idx_to_token = [str(t) for t in idx_to_token]
        if not idx_to_token or idx_to_token[0] != UNK or len(set(idx_to_token)) != len(idx_to_token):
            raise ValueError(f"idx_to_token must start with {UNK!r} and hold distinct tokens")
        self.idx_to_token = idx_to_token
        self.token_to_idx = {t: i for i, t in enumerate(idx_to_token)}

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and other.idx_to_token == self.idx_to_token

    @property
    def unk(self) -> int:
        return 0

    def encode(self, tokens) -> np.ndarray:
        return np.array([self.token_to_idx.get(t, 0) for t in tokens], dtype=np.int64)

    def decode(self, indices) -> list[str]:
        return [self.idx_to_token[int(i)] for i in indices]


def load_corpus(path=None, kind: str = "char", max_tokens: int | None = None, vocab: Vocab | None = None):
    """(encoded corpus int64 array, vocab) of ``path`` (None = the bundled corpus), d2l-normalised."""
    tokens = tokenize(preprocess(read_text(path)), kind)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    vocab = vocab if vocab is not None else Vocab(tokens)
    return vocab.encode(tokens), vocab


def split_corpus(corpus: np.ndarray, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first (1 - valid_fraction) of the tokens for training, the tail for validation."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    cut = len(corpus) - int(round(len(corpus) * valid_fraction))
    return corpus[:cut], corpus[cut:]


def _check_sizes(corpus, batch_size, num_steps):
    for name, value in (("batch_size", batch_size), ("num_steps", num_steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    corpus = np.asarray(corpus)
    if corpus.ndim != 1 or not np.issubdtype(corpus.dtype, np.integer):
        raise TypeError(f"corpus must be a 1-D integer array of token indices, got {corpus.dtype} "
                        f"shape {corpus.shape}")
    return corpus


def random_batches(corpus, batch_size: int, num_steps: int, rng: np.random.Generator):
    """d2l's random sampling: a random offset, the corpus cut into num_steps windows, windows shuffled;
    (X, Y) batch-major (batch_size, num_steps), Y = X shifted by one token. Adjacent batches are not
    adjacent in the text, so no state is carried between them."""
    corpus = _check_sizes(corpus, batch_size, num_steps)
    corpus = corpus[rng.integers(0, num_steps):]
    starts = np.arange(0, ((len(corpus) - 1) // num_steps) * num_steps, num_steps)
    rng.shuffle(starts)
    for i in range(0, (len(starts) // batch_size) * batch_size, batch_size):
        rows = starts[i:i + batch_size, None] + np.arange(num_steps)
        yield corpus[rows], corpus[rows + 1]


def sequential_batches(corpus, batch_size: int, num_steps: int, rng: np.random.Generator):
    """d2l's sequential partitioning: a random offset, the corpus cut into batch_size long rows, each
    batch the next num_steps columns, so row b of a batch continues row b of the previous one (state
    is carried across batches)."""
    corpus = _check_sizes(corpus, batch_size, num_steps)
    offset = int(rng.integers(0, num_steps + 1))
    usable = ((len(corpus) - offset - 1) // batch_size) * batch_size
    xs = corpus[offset:offset + usable].reshape(batch_size, -1)
    ys = corpus[offset + 1:offset + 1 + usable].reshape(batch_size, -1)
    for i in range(0, (xs.shape[1] // num_steps) * num_steps, num_steps):
        yield xs[:, i:i + num_steps], ys[:, i:i + num_steps]


def epoch_batches(corpus, scheme: str, batch_size: int, num_steps: int, seed: int, epoch: int):
    """The batches of one epoch; seeded by (seed, epoch) so that a resumed run regenerates them."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    make = random_batches if scheme == "random" else sequential_batches
    return list(make(corpus, batch_size, num_steps, rng))


def unigram_perplexity(train: np.ndarray, evaluate: np.ndarray, vocab_size: int) -> float:
    """The baseline: perplexity on ``evaluate`` of token frequencies counted on ``train`` (add-one
    smoothed, so an unseen token does not give infinity)."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-np.mean(log_p[evaluate])))
