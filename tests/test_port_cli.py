"""``multirnn convert`` on saved files, for every pair of formats."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import assert_close, load_backend, make_case, require_module, to_float64
from porting import assert_tree_equal

import multirnn
from multirnn.cli import main
from multirnn.port import files

EXTENSION = {"npz": "npz", "torch": "pt", "keras": "keras", "flax": "msgpack", "gluon": "params",
             "onnx": "onnx"}
NEEDS = {"torch": "torch", "keras": "tensorflow", "flax": "jax", "gluon": "mxnet", "onnx": None, "npz": None}
# A reset-after GRU holds every canonical number in torch, Keras, Gluon and ONNX; Flax folds the r and z
# bias pairs (so a chain through Flax is equal in function, not bit for bit).
MODEL = multirnn.RecurrentSpec(3, 4, cell="gru", num_layers=2, bidirectional=True, reset_after=True)


def need(fmt):
    if NEEDS[fmt]:
        load_backend(NEEDS[fmt])
    if fmt == "onnx":
        require_module("onnx")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The model saved once in every format (each written from the canonical .npz by the CLI)."""
    folder = tmp_path_factory.mktemp("convert")
    params, inputs = make_case(MODEL, seed=4, steps=4, batch=2, dtype="float32", scale=10.0)
    files.save_npz(folder / "model.npz", MODEL, params)
    paths = {"npz": folder / "model.npz"}
    for fmt in files.FORMATS[1:]:
        paths[fmt] = folder / f"model.{EXTENSION[fmt]}"
        try:
            need(fmt)
        except pytest.skip.Exception:
            continue
        assert main(["convert", str(paths["npz"]), "--to", fmt, "-o", str(paths[fmt])]) == 0
    return folder, paths, params, inputs


@pytest.mark.parametrize("src, dst", [(s, d) for s in files.FORMATS for d in files.FORMATS if s != d])
def test_convert_every_pair(src, dst, saved, capsys):
    need(src)
    need(dst)
    folder, paths, params, inputs = saved
    out = folder / f"{src}_to_{dst}.{EXTENSION[dst]}"
    assert main(["convert", str(paths[src]), "--from", src, "--to", dst, "-o", str(out)]) == 0
    assert f"{src} -> {dst}" in capsys.readouterr().out
    back = folder / f"{src}_to_{dst}_back.npz"
    assert main(["convert", str(out), "-o", str(back)]) == 0  # formats guessed from the extensions
    model, got = files.load_npz(back)
    # Keras layers are batch-major, so a spec read from Keras says batch_first=True; the rest is kept.
    assert dataclasses.replace(model, batch_first=False) == MODEL
    if "flax" in (src, dst):
        ref = multirnn.forward(MODEL, to_float64(params), to_float64(inputs))[0]
        assert_close(multirnn.forward(MODEL, got, inputs)[0], ref, "float32", f"{src}->{dst}")
    else:
        assert_tree_equal(got, params)


def test_rnn_nonlinearity_must_be_given_when_the_file_cannot_say(tmp_path, capsys):
    load_backend("torch")
    model = multirnn.RecurrentSpec(2, 3, cell="rnn", nonlinearity="relu")
    params = multirnn.init_params(model, 0)
    files.save_npz(tmp_path / "m.npz", model, params)
    assert main(["convert", str(tmp_path / "m.npz"), "--to", "torch", "-o", str(tmp_path / "m.pt")]) == 0
    assert main(["convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "b.npz")]) == 2
    assert "--nonlinearity" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "b.npz"),
                 "--nonlinearity", "relu"]) == 0
    loaded_model, loaded = files.load_npz(tmp_path / "b.npz")
    assert loaded_model == model
    assert_tree_equal(loaded, params)
    assert main(["convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "c.npz"), "--nonlinearity", "relu",
                 "--hidden", "5"]) == 2
    assert "num_hiddens=5 disagrees" in capsys.readouterr().err


def test_reset_before_gru_to_torch_is_refused_with_alternatives(tmp_path, capsys):
    model = multirnn.RecurrentSpec(2, 3, cell="gru")
    files.save_npz(tmp_path / "m.npz", model, multirnn.init_params(model, 0))
    assert main(["convert", str(tmp_path / "m.npz"), "--to", "torch", "-o", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert "reset_after=False" in err and "Keras" in err and "ONNX" in err


def test_npz_loads_without_pickle_and_unknown_extension_is_named(tmp_path, capsys):
    model = multirnn.RecurrentSpec(2, 3, cell="lstm")
    params = multirnn.init_params(model, 0)
    files.save_npz(tmp_path / "m.npz", model, params)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:  # the checkpoint format: plain npz
        assert sorted(data.files) == sorted([f"params/{k}" for k in params] + ["multirnn.json"])
        assert_tree_equal({k: data[f"params/{k}"] for k in params}, params)
    assert main(["convert", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.bin")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err


def test_convert_and_checkpoint_share_one_file_format(tmp_path, capsys):
    """convert reads what multirnn.checkpoint.save writes, `multirnn checkpoint` verifies what convert
    writes, and the written file records where it came from."""
    from multirnn import checkpoint

    model = multirnn.RecurrentSpec(2, 3, cell="gru", bidirectional=True)
    params = multirnn.init_params(model, 0)
    checkpoint.save(tmp_path / "saved.npz", model, params, seed=0)
    assert main(["convert", str(tmp_path / "saved.npz"), "-o", str(tmp_path / "copy.npz")]) == 0
    capsys.readouterr()
    assert main(["checkpoint", str(tmp_path / "copy.npz"), "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["metadata"]["converted_from"]["format"] == "npz"
    got = checkpoint.read(tmp_path / "copy.npz")
    assert got.model == model
    assert_tree_equal(got.params, params)


def test_npz_written_by_multirnn_0_1_convert_still_loads(tmp_path):
    """The 0.1 convert wrote np.savez(params, __multirnn_spec__=<flat JSON fields>)."""
    import json

    model = multirnn.RecurrentSpec(2, 3, cell="rnn", nonlinearity="relu")
    params = multirnn.init_params(model, 0)
    fields = {f: getattr(model, f) for f in model.__dataclass_fields__}
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez(f, **{files.SPEC_KEY: np.array(json.dumps(fields))}, **params)
    assert main(["convert", str(tmp_path / "old.npz"), "-o", str(tmp_path / "new.npz")]) == 0
    got_model, got = files.load_npz(tmp_path / "new.npz")
    assert got_model == model
    assert_tree_equal(got, params)


def test_language_model_checkpoint_converts_its_recurrent_part(tmp_path, capsys):
    need("onnx")
    from multirnn.lm import checkpoint as lm_checkpoint
    from multirnn.lm import LanguageModel, init_lm_params
    from multirnn.lm.text import Vocab

    vocab = Vocab("abc")  # <unk>, a, b, c
    lm = LanguageModel(multirnn.RecurrentSpec(4, 5, cell="lstm"), vocab_size=4)
    params = init_lm_params(lm, 0)
    lm_checkpoint.save(tmp_path / "lm.npz", lm, params, vocab)
    assert main(["convert", str(tmp_path / "lm.npz"), "-o", str(tmp_path / "rnn.onnx")]) == 0
    assert "head (W_hq, b_q) is not converted" in capsys.readouterr().out
    model, got = files.read("onnx", tmp_path / "rnn.onnx")
    assert model == lm.rnn
    assert_tree_equal(got, {k: params[k] for k in lm.rnn.param_shapes()})


def test_npz_with_arrays_the_model_does_not_use_is_refused(tmp_path, capsys):
    from multirnn import checkpoint

    model = multirnn.RecurrentSpec(2, 3, cell="rnn")
    checkpoint.save(tmp_path / "m.npz", model, multirnn.init_params(model, 0),
                    arrays={"W_out": np.ones((3, 2), np.float32)})
    assert main(["convert", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.onnx")]) == 1
    assert "arrays ['W_out'] are not parameters" in capsys.readouterr().err


def test_torch_lstm_to_keras_file_runs_the_same(tmp_path):
    """End to end: a torch nn.LSTM's saved state_dict -> `multirnn convert` -> a .keras file that Keras
    loads and runs with torch's outputs."""
    load_backend("torch")
    load_backend("tensorflow")
    import keras
    import torch

    torch.manual_seed(1)
    layer = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    torch.save({"rnn." + k: v for k, v in layer.state_dict().items()}, tmp_path / "m.pt")
    assert main(["convert", str(tmp_path / "m.pt"), "--prefix", "rnn.", "--from", "torch", "--to", "keras",
                 "-o", str(tmp_path / "m.keras")]) == 0
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = layer(torch.from_numpy(x))[0].numpy()
    got = keras.saving.load_model(tmp_path / "m.keras")(x)
    assert_close(np.asarray(got), expected.astype(np.float64), "float32", "keras vs torch")
