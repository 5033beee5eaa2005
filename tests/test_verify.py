"""Proof by execution (multirnn.port.verify) and ``multirnn verify A B``, on NumPy-only sources, so the
machinery itself is tested with no framework installed; the galleries test it on real frameworks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_backend, make_case, require_module

import multirnn
from multirnn.cli import main
from multirnn.port import ConversionMismatch, Loaded, SourceRun, files, load, prove

MODEL = multirnn.RecurrentSpec(3, 4, cell="gru", num_layers=2, bidirectional=True, reset_after=True)


def reference_run(model, params, dtype="float64", perturb=0.0, **kwargs):
    """A 'source' that is the NumPy reference itself, optionally off by ``perturb`` in one weight."""
    params = {k: v.astype(dtype) for k, v in params.items()}
    if perturb:
        name = next(iter(params))
        params[name] = params[name] + np.asarray(perturb, dtype)

    def call(inputs, state):
        return multirnn.forward(model, params, inputs, state)
    return SourceRun(call, "numpy (test)", dtype=dtype, **kwargs)


def test_a_faithful_source_is_proven_with_its_numbers():
    params, _ = make_case(MODEL, seed=1)
    loaded = Loaded(MODEL, params, run=reference_run(MODEL, params), origin="test source")
    verification = prove(loaded)
    assert loaded.verification is verification
    assert verification.max_error == 0.0 and verification.probes == 3
    assert str(verification).startswith("verified against numpy (test): max abs diff 0")


@pytest.mark.parametrize("dtype, perturb", [("float64", 1e-6), ("float32", 1e-3)])
def test_a_source_that_computes_something_else_is_a_mismatch(dtype, perturb):
    params, _ = make_case(MODEL, seed=1)
    loaded = Loaded(MODEL, params, run=reference_run(MODEL, params, dtype, perturb), origin="test source")
    with pytest.raises(ConversionMismatch, match=r"test source: the converted model differs from numpy "
                                                 r"\(test\) by .* in outputs, probe 0"):
        prove(loaded)
    assert isinstance(ConversionMismatch("x"), ValueError)


def test_a_source_without_a_state_input_starts_from_its_stored_state():
    """takes_state=False: every probe starts from the source's own (stored) initial state."""
    model = multirnn.RecurrentSpec(2, 3, cell="lstm")
    params, _ = make_case(model, seed=2)
    stored = (np.full((1, 3), 0.3), np.full((1, 3), -0.2))  # broadcast over the batch, like a learned h0

    def call(inputs, state):
        assert state is None
        batch = inputs.shape[1]
        return multirnn.forward(model, params, inputs, tuple(np.repeat(a, batch, 0) for a in stored))
    run = SourceRun(call, "numpy (test)", dtype="float64", takes_state=False)
    assert prove(Loaded(model, params, initial_state=stored, run=run)).max_error == 0.0
    with pytest.raises(ConversionMismatch, match=r"^the source: .* in outputs, probe 0 .*own initial state"):
        prove(Loaded(model, params, initial_state=None, run=run))  # dropping the stored state is caught


def test_last_output_sources_are_compared_with_the_final_state():
    model = multirnn.RecurrentSpec(2, 3, cell="rnn", bidirectional=True)
    params, _ = make_case(model, seed=3)

    def call(inputs, state):
        _, final = multirnn.forward(model, params, inputs, state)
        return np.concatenate(final, axis=-1), None  # Keras return_sequences=False, no state returned
    assert prove(Loaded(model, params, run=SourceRun(call, "t", dtype="float64", outputs="last"))).max_error == 0


def test_load_of_our_own_npz_needs_no_proof(tmp_path):
    params, _ = make_case(MODEL, seed=1, dtype="float32")
    files.save_npz(tmp_path / "m.npz", MODEL, params)
    loaded = load(tmp_path / "m.npz")
    model, got = loaded
    assert model == MODEL and loaded.native and loaded.verification is None and not loaded.notes
    assert all(np.array_equal(got[k], params[k]) for k in params)


def test_load_names_what_it_cannot_read():
    with pytest.raises(TypeError, match="cannot read a builtins.dict"):
        load({"weight_ih_l0": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="cannot tell the format"):
        load("model.bin")


def test_verify_cli_same_and_different_functions(tmp_path, capsys):
    params, _ = make_case(MODEL, seed=1, dtype="float32")
    files.save_npz(tmp_path / "a.npz", MODEL, params)
    files.save_npz(tmp_path / "same.npz", MODEL, dict(params))
    other = dict(params)
    other["l1.bwd.W_xz"] = other["l1.bwd.W_xz"] + np.float32(0.05)
    files.save_npz(tmp_path / "b.npz", MODEL, other)
    assert main(["verify", str(tmp_path / "a.npz"), str(tmp_path / "same.npz")]) == 0
    assert "same function" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    a, b = report["rows"]
    assert report["pass"] is False and a["pass"] is True and b["pass"] is False
    assert a["outputs"] == 0.0 and b["outputs"] > 1e-3


def test_verify_cli_refuses_different_specs(tmp_path, capsys):
    files.save_npz(tmp_path / "a.npz", MODEL, multirnn.init_params(MODEL, 0))
    lstm = multirnn.RecurrentSpec(3, 4, cell="lstm", num_layers=2, bidirectional=True)
    files.save_npz(tmp_path / "b.npz", lstm, multirnn.init_params(lstm, 0))
    assert main(["verify", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 1
    assert "the specs differ: {'cell': ('gru', 'lstm')" in capsys.readouterr().out


def test_verify_an_onnx_file_exported_by_torch_against_its_state_dict(tmp_path, capsys):
    """The parity oracle for files other tools wrote: torch.onnx.export (run by onnxruntime) against the
    torch state_dict it came from, and against a state_dict with one weight changed."""
    load_backend("torch")
    require_module("onnx")
    require_module("onnxruntime")
    import torch

    torch.manual_seed(0)
    layer = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    torch.onnx.export(layer, (torch.zeros(2, 5, 3),), str(tmp_path / "lstm.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y", "h", "c"],
                      dynamic_axes={"x": {0: "batch", 1: "steps"}, "y": {0: "batch", 1: "steps"}})
    torch.save(layer.state_dict(), tmp_path / "lstm.pt")
    assert main(["verify", str(tmp_path / "lstm.onnx"), str(tmp_path / "lstm.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    onnx_side, torch_side = report["rows"]
    assert onnx_side["framework"].startswith("onnxruntime") and onnx_side["outputs"] <= 1e-5
    assert torch_side["framework"].startswith("weights only") and report["pass"]
    with torch.no_grad():
        layer.weight_hh_l1_reverse[0, 0] += 0.5
    torch.save(layer.state_dict(), tmp_path / "changed.pt")
    assert main(["verify", str(tmp_path / "lstm.onnx"), str(tmp_path / "changed.pt")]) == 1
    assert "NOT the same function" in capsys.readouterr().out


def test_convert_prints_and_records_its_proof(tmp_path, capsys):
    """A .keras file can run: convert proves the conversion and records the numbers in the npz."""
    load_backend("tensorflow")
    from multirnn import checkpoint
    from multirnn.port import keras as pkeras

    model = multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=True, bidirectional=True, batch_first=True)
    params, _ = make_case(model, seed=5, dtype="float32")
    pkeras.keras_model(model, params).save(str(tmp_path / "m.keras"))
    assert main(["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.npz")]) == 0
    assert "verified against keras" in capsys.readouterr().out
    proof = checkpoint.read(tmp_path / "m.npz").metadata["converted_from"]["verification"]
    assert proof["framework"].startswith("keras") and proof["max_error"] <= proof["tolerance"] == 1e-5
    assert main(["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "n.npz"), "--no-verify"]) == 0
    assert checkpoint.read(tmp_path / "n.npz").metadata["converted_from"]["verification"] == \
        "not verified: --no-verify"
