"""Text pipeline: tokens, vocabulary, the bundled corpus and d2l's two minibatch schemes."""
from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest

from multirnn.lm import text

# sha256 of tests/testdata/alice29.txt in the Brotli 1.1.0 sdist on PyPI (the Canterbury corpus file).
ALICE_SHA256 = "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0"


def test_bundled_corpus_is_the_verified_file_and_loads_offline():
    raw = resources.files("multirnn.lm").joinpath("data", text.BUNDLED).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == ALICE_SHA256
    corpus, vocab = text.load_corpus()
    assert len(vocab) == 28  # <unk>, space, a-z: d2l's character vocabulary
    assert vocab.idx_to_token[:3] == ["<unk>", " ", "a"]
    assert "".join(vocab.decode(corpus[:25])) == "alice s adventures in won"
    assert corpus.dtype == np.int64 and len(corpus) > 100_000


def test_preprocess_and_tokenize():
    assert text.preprocess("The Time-Machine, by H. G. Wells!\n") == "the time machine by h g wells"
    assert text.tokenize("ab c", "char") == ["a", "b", " ", "c"]
    assert text.tokenize("ab  c", "word") == ["ab", "c"]
    with pytest.raises(ValueError, match="token kind"):
        text.tokenize("x", "byte")


def test_vocab_unknown_min_freq_and_round_trip():
    tokens = list("abracadabra")
    vocab = text.Vocab(tokens, min_freq=2)  # c and d appear once
    assert vocab.idx_to_token == ["<unk>", "a", "b", "r"]
    assert list(vocab.encode("abcz")) == [1, 2, 0, 0]
    assert vocab.decode([3, 1]) == ["r", "a"]
    assert text.Vocab(idx_to_token=vocab.idx_to_token) == vocab
    with pytest.raises(ValueError, match="must start with"):
        text.Vocab(idx_to_token=["a", "<unk>"])
    reserved = text.Vocab(["x", "y"], reserved=["<eos>"])
    assert reserved.idx_to_token == ["<unk>", "<eos>", "x", "y"]


def test_word_corpus_from_a_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("The cat sat. The cat ran!")
    corpus, vocab = text.load_corpus(path, "word")
    assert vocab.decode(corpus) == ["the", "cat", "sat", "the", "cat", "ran"]
    with pytest.raises(ValueError, match="existing text file"):
        text.read_text(tmp_path / "missing.txt")


def test_random_batches_are_windows_shifted_by_one_and_disjoint():
    corpus = np.arange(1000) * 3  # token value reveals its position: value // 3
    batches = list(text.random_batches(corpus, 4, 7, np.random.default_rng(0)))
    starts = []
    for x, y in batches:
        assert x.shape == y.shape == (4, 7)
        assert np.all(np.diff(x, axis=1) == 3)  # each row is a contiguous window
        np.testing.assert_array_equal(y, x + 3)  # the target is the next token
        starts.extend(x[:, 0] // 3)
    assert len(set(starts)) == len(starts)  # no window twice in an epoch
    assert len(np.unique(np.diff(sorted(starts)) % 7)) == 1  # all on one num_steps grid
    # all windows but those lost to the random offset (at most 1) and to the last partial batch (< 4)
    assert (1000 - 1) // 7 - 1 - 3 <= 4 * len(batches) <= (1000 - 1) // 7


def test_sequential_batches_continue_row_by_row():
    corpus = np.arange(500)
    batches = list(text.sequential_batches(corpus, 3, 5, np.random.default_rng(1)))
    for (x0, _), (x1, _) in zip(batches, batches[1:]):
        np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)  # row b continues row b
    for x, y in batches:
        np.testing.assert_array_equal(y, x + 1)


def test_epoch_batches_are_seeded_and_differ_per_epoch():
    corpus = np.arange(400) % 17
    a = text.epoch_batches(corpus, "random", 4, 6, seed=3, epoch=0)
    b = text.epoch_batches(corpus, "random", 4, 6, seed=3, epoch=0)
    c = text.epoch_batches(corpus, "random", 4, 6, seed=3, epoch=1)
    assert all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
    assert not all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    with pytest.raises(ValueError, match="scheme"):
        text.epoch_batches(corpus, "shuffled", 4, 6, 0, 0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        text.epoch_batches(corpus, "random", 0, 6, 0, 0)
    with pytest.raises(TypeError, match="1-D integer array"):
        text.epoch_batches(corpus.astype(float), "random", 4, 6, 0, 0)


def test_unigram_perplexity_by_hand():
    train = np.array([1, 1, 2, 0])
    evaluate = np.array([1, 2])
    p = (np.array([1, 2, 1]) + 1) / 7  # add-one smoothed counts of 3 tokens
    expected = np.exp(-(np.log(p[1]) + np.log(p[2])) / 2)
    assert text.unigram_perplexity(train, evaluate, 3) == pytest.approx(expected, rel=1e-12)


def test_split_corpus():
    train, valid = text.split_corpus(np.arange(100), 0.1)
    assert len(train) == 90 and valid[0] == 90
    with pytest.raises(ValueError, match="valid_fraction"):
        text.split_corpus(np.arange(10), 1.0)
