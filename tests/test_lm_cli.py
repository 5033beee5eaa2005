"""``multirnn train`` / ``multirnn generate`` end to end on a tiny model (NumPy backend: no framework)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from multirnn import lm_checkpoint
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


def test_cli_errors_are_clear(tmp_path):
    with pytest.raises(SystemExit, match="checkpoint must be an existing file"):
        main(["train", "--resume", str(tmp_path / "missing.npz")])
    with pytest.raises(SystemExit, match="corpus must be an existing text file"):
        main(["train", "--corpus", str(tmp_path / "missing.txt")])
    with pytest.raises(SystemExit, match="backend must be one of"):
        main(["train", *TINY, "--backend", "theano", "--checkpoint", str(tmp_path / "x.npz")])
