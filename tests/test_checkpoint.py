"""Checkpoints: round trips, atomic writes (even under SIGKILL), clear errors for corrupt, truncated,
mismatched or hostile files, and a fuzzed loader that never crashes nor returns garbage."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multirnn
from multirnn import checkpoint
from multirnn.checkpoint import CheckpointError

SPECS = [multirnn.RNNScratch(3, 4, nonlinearity="relu", batch_first=True), multirnn.BiRNNScratch(2, 3),
         multirnn.RecurrentSpec(3, 4, cell="gru", num_layers=2, bidirectional=True, reset_after=True),
         multirnn.RecurrentSpec(2, 5, cell="lstm", bias=False, sigma=0.5)]
EXTRA = {"embedding": np.arange(12.0).reshape(4, 3), "counts": np.array([1, 2, 3], np.int64),
         "mask": np.array([True, False]), "vocab": np.array(["<pad>", "a", "b"])}


def assert_same_checkpoint(got, model, params, arrays=None, **metadata):
    assert got.model == model and type(got.model) is type(model)
    assert sorted(got.params) == sorted(params)
    for name, value in params.items():
        assert got.params[name].dtype == value.dtype
        np.testing.assert_array_equal(got.params[name], value)
    for name, value in (arrays or {}).items():
        assert got.arrays[name].dtype == value.dtype
        np.testing.assert_array_equal(got.arrays[name], value)
    assert sorted(got.arrays) == sorted(arrays or {})
    for key, value in metadata.items():
        assert got.metadata[key] == value


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", SPECS, ids=lambda m: f"{type(m).__name__}-{m.cell}")
def test_round_trip(tmp_path, model, dtype):
    params = multirnn.init_params(model, seed=7, dtype=dtype)
    path = checkpoint.save(tmp_path / "model.npz", model, params, arrays=EXTRA, seed=7,
                           note={"epochs": [1, 2]})
    got = checkpoint.read(path)
    assert_same_checkpoint(got, model, params, EXTRA, seed=7, note={"epochs": [1, 2]})
    assert got.metadata["dtype"] == dtype
    assert got.metadata["format_version"] == checkpoint.FORMAT_VERSION
    assert got.metadata["multirnn_version"] == multirnn.__version__
    loaded_model, loaded_params, metadata = checkpoint.load(path)
    assert loaded_model == model and metadata["seed"] == 7
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temp file left behind


def test_plain_numpy_reads_it_without_pickle(tmp_path):
    """Framework-neutral: numpy alone reads every array and the JSON header."""
    model = SPECS[1]
    params = multirnn.init_params(model, seed=0)
    checkpoint.save(tmp_path / "m.npz", model, params, seed=0)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        for name, value in params.items():
            np.testing.assert_array_equal(npz[f"params/{name}"], value)
    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        header = json.loads(archive.read("multirnn.json"))
    assert header["spec"] == {"class": "BiRNNScratch", "fields": {
        "num_inputs": 2, "num_hiddens": 3, "num_layers": 1, "nonlinearity": "tanh", "bias": True,
        "sigma": 0.01, "batch_first": False, "dropout": 0.0, "gate_activation": "sigmoid",
        "reverse": False, "keep_order": True, "merge_mode": "concat", "learn_initial_state": False,
        "proj_size": 0}}
    assert header["metadata"] == {"seed": 0}


def test_equal_content_gives_equal_bytes(tmp_path):
    model = SPECS[2]
    params = multirnn.init_params(model, seed=1)
    checkpoint.save(tmp_path / "a.npz", model, params, seed=1)
    checkpoint.save(tmp_path / "b.npz", model, params, seed=1)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


# ---- atomic writes ----

def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    model = SPECS[0]
    old = multirnn.init_params(model, seed=1)
    path = checkpoint.save(tmp_path / "m.npz", model, old, seed=1)
    before = path.read_bytes()
    calls = []

    def crash_midway(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_writestr(self, *args, **kwargs)
    real_writestr = zipfile.ZipFile.writestr
    monkeypatch.setattr(zipfile.ZipFile, "writestr", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, model, multirnn.init_params(model, seed=2), seed=2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # the temp file was removed
    assert checkpoint.load(path)[2]["seed"] == 1


def test_sigkill_mid_write_never_leaves_a_torn_checkpoint(tmp_path):
    """A writer killed at an arbitrary moment leaves a checkpoint that loads as one of the versions
    it wrote (stray temp files may remain; the checkpoint itself is never torn)."""
    path = tmp_path / "m.npz"
    script = textwrap.dedent(f"""
        import numpy as np, multirnn
        from multirnn import checkpoint
        model = multirnn.RNNScratch(3, 4)
        params = multirnn.init_params(model, seed=0)
        big = np.zeros((256, 1024))  # 2 MiB, so the kill often lands inside a write
        step = 0
        while True:
            checkpoint.save({str(path)!r}, model, params, arrays={{"big": big + step}}, step=step)
            step += 1
            print(step, flush=True)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        writer.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(0.3)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    got = checkpoint.read(path)
    step = got.metadata["step"]
    np.testing.assert_array_equal(got.arrays["big"], np.zeros((256, 1024)) + step)
    assert step >= 0


# ---- clear errors ----

def write_zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)


def tamper(tmp_path, edit_header=None, add_members=None, drop_members=(), seal=True):
    """A saved checkpoint rewritten with an edited header and/or members (hashes kept consistent, the
    header's own hash included unless ``seal=False``: a hand edit)."""
    model = multirnn.RecurrentSpec(3, 4, cell="gru")
    path = checkpoint.save(tmp_path / "m.npz", model, multirnn.init_params(model, seed=0), seed=0)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = json.loads(members["multirnn.json"])
    for name, blob in (add_members or {}).items():
        members[name] = blob
        header["arrays"][name] = {"shape": [], "dtype": "|O", "sha256": hashlib.sha256(blob).hexdigest()}
    for name in drop_members:
        del members[name]
    if edit_header:
        edit_header(header)
    members["multirnn.json"] = json.dumps(checkpoint.seal(header) if seal else header).encode()
    write_zip(path, members)
    return path


def set_in(keys, value):
    def edit(header):
        target = header
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, match", [
    (set_in(["format_version"], 3), r"format version 3 is newer than this multirnn reads \(2\)"),
    (set_in(["format_version"], "1"), r"invalid format_version '1'"),
    (set_in(["format"], "keras"), r"multirnn.json does not describe a multirnn-checkpoint"),
    (set_in(["spec", "class"], "Transformer"), r"unknown spec class 'Transformer'"),
    (set_in(["spec", "fields", "cell"], "tcn"), r"stored spec .* is invalid: cell must be one of"),
    (set_in(["spec", "fields", "colour"], "red"), r"stored spec .* is invalid: .*colour"),
    (set_in(["spec", "fields", "num_hiddens"], 5),
     r"params\['W_xz'\] has shape \(3, 4\) in the file but the stored spec needs \(3, 5\)"),
    (set_in(["spec", "fields", "bidirectional"], True),
     r"parameters do not match the stored spec .*missing \['bwd.W_hh'"),
    (set_in(["spec", "fields", "bias"], False), r"parameters do not match .*unexpected \['b_hh'"),
    (set_in(["dtype"], "float64"), r"params are float32 but the header says 'float64'"),
    (set_in(["arrays", "params/W_xz.npy", "sha256"], "0" * 64),
     r"params/W_xz.npy is corrupt \(SHA-256 does not match the header\)"),
    (set_in(["arrays", "params/W_xz.npy", "shape"], [4, 3]), r"has shape \(4, 3\) in the file"),
    (set_in(["metadata"], None), r"lacks its 'arrays' index or 'metadata'"),
    (set_in(["spec"], []), r"has no valid 'spec'"),
])
def test_mismatched_header_is_named(tmp_path, edit, match):
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(tamper(tmp_path, edit_header=edit))


def test_hand_edited_header_is_caught_by_its_own_hash(tmp_path):
    """A consistent-looking edit (another sigma: the params still fit) that does not re-seal the header."""
    with pytest.raises(CheckpointError, match=r"multirnn.json was edited or is corrupt \(its header_sha256"):
        checkpoint.load(tamper(tmp_path, edit_header=set_in(["spec", "fields", "sigma"], 0.5), seal=False))


def test_version_1_files_without_a_header_hash_still_load(tmp_path):
    def as_version_1(header):
        header["format_version"] = 1
        header.pop("header_sha256")
    got = checkpoint.read(tamper(tmp_path, edit_header=as_version_1, seal=False))
    assert got.metadata["format_version"] == 1 and got.model == multirnn.RecurrentSpec(3, 4, cell="gru")


def test_member_missing_or_unexpected(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing \['params/W_hr.npy'\], unexpected \[\]"):
        checkpoint.load(tamper(tmp_path, drop_members=["params/W_hr.npy"]))
    path = tamper(tmp_path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("arrays/sneaky.npy", b"")
    with pytest.raises(CheckpointError, match=r"unexpected \['arrays/sneaky.npy'\]"):
        checkpoint.load(path)


class _Exploit:
    def __reduce__(self):
        return (open, (os.environ["MULTIRNN_PWNED"], "w"))


def test_pickled_member_is_never_unpickled(tmp_path, monkeypatch):
    """An object array (numpy pickles those) with a matching hash still fails: allow_pickle=False."""
    canary = tmp_path / "pwned"
    monkeypatch.setenv("MULTIRNN_PWNED", str(canary))
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([_Exploit()], dtype=object), allow_pickle=True)
    path = tamper(tmp_path, add_members={"arrays/evil.npy": buffer.getvalue()})
    with pytest.raises(CheckpointError, match="corrupt or truncated .*pickle"):
        checkpoint.read(path)
    assert not canary.exists()


@pytest.mark.parametrize("content, match", [
    (b"", r"not a valid .npz/zip"),
    (b"hello, not a zip at all", r"not a valid .npz/zip"),
    (pickle.dumps({"W_xh": np.ones(3)}), r"not a valid .npz/zip"),
])
def test_not_a_checkpoint(tmp_path, content, match):
    (tmp_path / "x.npz").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(tmp_path / "x.npz")


def test_plain_npz_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "plain.npz", W_xh=np.ones((3, 4)))
    with pytest.raises(CheckpointError, match=r"no multirnn.json header"):
        checkpoint.load(tmp_path / "plain.npz")


def test_missing_file_is_the_usual_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nope.npz")


def test_bad_save_arguments(tmp_path):
    model = SPECS[0]
    params = multirnn.init_params(model, seed=0)
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match=r"metadata\['when'\] must be JSON-serialisable"):
        checkpoint.save(path, model, params, when=np.datetime64("2026-01-01"))
    with pytest.raises(TypeError, match=r"metadata\['loss'\] must be JSON-serialisable \(no nan/inf\)"):
        checkpoint.save(path, model, params, loss=float("nan"))
    with pytest.raises(ValueError, match=r"metadata key 'dtype' is reserved"):
        checkpoint.save(path, model, params, dtype="float32")
    with pytest.raises(TypeError, match=r"arrays\['objs'\] must have a numeric, bool or string dtype"):
        checkpoint.save(path, model, params, arrays={"objs": np.array([{}], dtype=object)})
    with pytest.raises(ValueError, match=r"arrays: name '../escape' must match"):
        checkpoint.save(path, model, params, arrays={"../escape": np.ones(2)})
    with pytest.raises(ValueError, match=r"params\['W_hh'\] must have shape \(4, 4\), got \(4, 3\)"):
        checkpoint.save(path, model, {**params, "W_hh": np.ones((4, 3), np.float32)})
    with pytest.raises(TypeError, match=r"model must be a multirnn spec"):
        checkpoint.save(path, "rnn", params)
    assert not path.exists() and os.listdir(tmp_path) == []


# ---- fuzzing the loader ----

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    model = multirnn.RecurrentSpec(2, 3, cell="lstm")
    params = multirnn.init_params(model, seed=3, dtype="float32")
    path = checkpoint.save(tmp_path_factory.mktemp("fuzz") / "m.npz", model, params,
                           arrays={"emb": np.arange(6, dtype=np.float32)}, seed=3)
    return path.read_bytes(), checkpoint.read(path)


def load_or_clear_error(tmp_path, blob, original, edited=None):
    """The loader's contract: a clear CheckpointError, or exactly the original content (except the
    ``edited`` header entry, when a test rewrote one consistently)."""
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(blob)
    try:
        got = checkpoint.read(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return False
    if edited is None:
        assert_same_checkpoint(got, original.model, original.params, original.arrays, seed=3)
    else:  # a spec that still fits the params (e.g. another sigma) is a valid, different checkpoint
        multirnn.validate.check_params(got.model, got.params)
        model = got.model if edited == "spec" else original.model
        assert_same_checkpoint(got, model, original.params, original.arrays)
    return True


def test_every_truncation_is_a_clear_error(tmp_path, pristine):
    blob, original = pristine
    for length in range(0, len(blob), 11):
        assert not load_or_clear_error(tmp_path, blob[:length], original), f"truncated to {length}"


def test_every_single_byte_flip_is_caught_or_harmless(tmp_path, pristine):
    blob, original = pristine
    positions = range(0, len(blob), 5)
    survived = 0
    for position in positions:
        flipped = bytearray(blob)
        flipped[position] ^= 0xFF
        survived += load_or_clear_error(tmp_path, bytes(flipped), original)
    # Survivors are bytes zip readers ignore ("version made by", attributes...): about 1 in 10.
    assert survived < len(positions) // 4


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_never_crash_the_loader(tmp_path, pristine, data):
    blob, original = pristine
    mutated = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        position = data.draw(st.integers(0, len(mutated) - 1), label="position")
        mutated[position] ^= data.draw(st.integers(1, 255), label="xor")
    cut = data.draw(st.integers(0, len(mutated)), label="truncate to")
    tail = data.draw(st.binary(max_size=8), label="appended")
    load_or_clear_error(tmp_path, bytes(mutated[:cut]) + tail, original)


def test_cli_verifies_checkpoints(tmp_path, capsys):
    from multirnn.cli import main

    model = SPECS[2]
    path = checkpoint.save(tmp_path / "m.npz", model, multirnn.init_params(model, seed=4), seed=4,
                           arrays={"emb": np.zeros((2, 3))})
    assert main(["checkpoint", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["metadata"]["seed"] == 4
    assert summary["arrays"]["emb"] == ["float64", 2, 3]
    assert summary["params"]["l1.bwd.W_xz"] == [8, 4]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert main(["checkpoint", str(path)]) == 1
    assert "corrupt" in capsys.readouterr().err
    assert main(["checkpoint", str(tmp_path / "missing.npz")]) == 1


def test_expected_model_must_match(tmp_path):
    model = SPECS[1]
    path = checkpoint.save(tmp_path / "m.npz", model, multirnn.init_params(model, seed=0))
    assert checkpoint.load(path, model)[0] == model
    with pytest.raises(CheckpointError, match=r"holds BiRNNScratch\(num_inputs=2.*expected RNNScratch"):
        checkpoint.load(path, multirnn.RNNScratch(2, 3))
    with pytest.raises(TypeError, match="model must be a multirnn spec"):
        checkpoint.load(path, "BiRNNScratch")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children,
                                                                      max_size=3),
    max_leaves=6)


def header_paths(node, prefix=()):
    """Every key path inside the JSON header, so a random one can be replaced."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from header_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from header_paths(value, prefix + (index,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_headers_never_crash_the_loader(tmp_path, pristine, data):
    """Structure-aware fuzzing: a well-formed zip whose JSON header has one value replaced by random
    JSON (type confusion, absurd shapes, wrong hashes) still gives a CheckpointError or the original."""
    blob, original = pristine
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = json.loads(members["multirnn.json"])
    path = data.draw(st.sampled_from(sorted(filter(None, header_paths(header)), key=repr)), label="path")
    target = header
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JSON_VALUES, label="value")
    # re-sealed, so the fuzzing reaches the checks behind the header's own hash
    members["multirnn.json"] = json.dumps(checkpoint.seal(header)).encode()
    buffer = io.BytesIO()
    write_zip(buffer, members)
    # A consistent edit of the metadata, the writer's version or the spec is not corruption: the
    # loader may accept it if the params still fit; anything else must match the original.
    edited = path[0] if path[0] in ("metadata", "multirnn_version", "spec") else None
    load_or_clear_error(tmp_path, buffer.getvalue(), original, edited)
