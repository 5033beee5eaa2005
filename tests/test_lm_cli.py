"""``multirnn train`` / ``multirnn generate`` end to end on a tiny model (NumPy backend: no framework)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from multirnn.lm import checkpoint as lm_checkpoint
from multirnn.cli import main

TINY = ["--hidden", "8", "--max-tokens", "3000", "--batch-size", "8", "--num-steps", "10",
        "--cell", "gru", "--sampling", "sequential", "--dtype", "float64"]


def test_train_resume_equals_straight_run_and_generate(tmp_path, capsys):
    straight, split = tmp_path / "straight.npz", tmp_path / "split.npz"
    assert main(["train", *TINY, "--epochs", "3", "--checkpoint", str(straight)]) == 0
    err = capsys.readouterr().err
    assert "tok/s" in err and "unigram perplexity" in err and "epoch 3: train perplexity" in err

    assert main(["train", *TINY, "--epochs", "2", "--checkpoint", str(split), "--quiet"]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "3", "--checkpoint", str(split),
                 "--quiet"]) == 0
    _, params_a, vocab, meta_a, _ = lm_checkpoint.load(straight)
    _, params_b, _, meta_b, _ = lm_checkpoint.load(split)
    assert meta_b["progress"]["epoch"] == 3 and len(meta_b["progress"]["history"]["train_perplexity"]) == 3
    for name in params_a:
        np.testing.assert_array_equal(params_a[name], params_b[name])
    assert meta_a["progress"]["history"] == meta_b["progress"]["history"]
    history = meta_a["progress"]["history"]
    assert history["train_perplexity"][-1] < history["train_perplexity"][0]
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "straight.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(straight), "--prefix", "Alice", "--num-preds", "15"]) == 0
    out = capsys.readouterr().out.rstrip("\n")
    assert out.startswith("alice") and len(out) == len("alice") + 15


def test_max_steps_stops_mid_epoch_and_saves(tmp_path):
    path = tmp_path / "c.npz"
    assert main(["train", *TINY, "--epochs", "1", "--max-steps", "4", "--checkpoint", str(path),
                 "--quiet"]) == 0
    _, _, _, meta, carried = lm_checkpoint.load(path)
    assert meta["progress"]["step"] == 4 and meta["progress"]["batch"] == 4
    assert carried is not None  # sequential partitioning carries the state into the next batch


def test_cli_errors_are_clear(tmp_path, capsys):
    """A wrong command line exits 2 with the reason; a damaged checkpoint is a failure, 1."""
    for argv, reason in ((["train", "--resume", str(tmp_path / "missing.npz")], "checkpoint must be an existing file"),
                         (["train", "--corpus", str(tmp_path / "missing.txt")], "corpus must be an existing text file"),
                         (["train", *TINY, "--backend", "theano", "--checkpoint", str(tmp_path / "x.npz")],
                          "backend must be one of")):
        assert main(argv) == 2
        assert f"multirnn train: error: {reason}" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert main(["generate", "--checkpoint", str(tmp_path / "bad.npz")]) == 1
    assert "multirnn generate: error:" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal(tmp_path, capsys):
    """Redirected output (a log, CI) gets one line per epoch, never carriage-return redraws."""
    assert main(["train", *TINY, "--epochs", "1", "--checkpoint", str(tmp_path / "c.npz")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "epoch 1: train perplexity" in err and "tok/s" in err
