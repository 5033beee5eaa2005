"""`multirnn compare` end to end, and the backend registry's errors."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import pytest
from conftest import FRAMEWORKS, FUSED_KERNEL_BACKENDS, REQUIRED, load_backend, require_module

from multirnn import backends, cli


def test_compare_json_lists_every_backend_and_passes(capsys):
    code = cli.main(["compare", "--json", "--dtype", "float64", "--models", "RNNScratch,BiRNNScratch"])
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert report["tolerance"] == 1e-10
    available = [r["backend"] for r in rows if not r.get("error")]
    assert REQUIRED & set(FRAMEWORKS) <= set(available)  # with no framework, every row is an install hint
    for row in rows:
        if row.get("error"):
            assert "pip install 'multirnn[" in row["error"]
            continue
        assert row["model"] in ("RNNScratch", "BiRNNScratch")
        for key in ("outputs", "states", "gradients"):
            assert 0 <= row[key] <= 1e-10, row
        assert row["pass"] is True
    assert code == (0 if all(r["pass"] for r in rows) else 1)


def test_compare_table_prints_tolerance(capsys):
    assert cli.main(["compare", "--backends", "numpy", "--models", "lstm bi x2"]) == 0
    out = capsys.readouterr().out
    assert "lstm bi x2" in out and "tolerance 1e-05" in out and "pass" in out


@pytest.mark.parametrize("name", FUSED_KERNEL_BACKENDS)
def test_compare_reports_the_path_and_generic_switches_kernels_off(name, capsys):
    load_backend(name)
    models = "lstm bi x2,gru uni x1,gru-after uni x1"  # gru = d2l's reset-before: no fused kernel
    for flag, want in (([], ["fused", "generic", "fused"]), (["--generic"], ["generic"] * 3)):
        code = cli.main(["compare", "--json", "--backends", name, "--models", models, *flag])
        rows = json.loads(capsys.readouterr().out)["rows"]
        assert [r["path"] for r in rows] == want, flag
        assert code == 0 and all(r["pass"] for r in rows)
    assert backends.get(name).use_fused_kernels  # switched back on afterwards


def test_compare_rejects_unknown_names(capsys):
    for argv, option in ((["--backends", "theano"], "--backends"), (["--models", "transformer"], "--models"),
                         (["--native", "--backends", "mxnet"], "--backends (with --native)")):
        assert cli.main(["compare", *argv]) == 2  # a usage error, as argparse's own
        assert f"multirnn compare: error: {option}: unknown" in capsys.readouterr().err


def test_help_is_written_for_users(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith("usage: multirnn [-h] COMMAND") and "``" not in out and "register(" not in out
    for command in ("compare", "convert", "verify", "train", "generate", "checkpoint"):
        assert f"multirnn {command}" in out


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.get("caffe")


def test_missing_frameworks_name_their_extras():
    """Hide every framework (sys.modules[x] = None makes its import fail) and ask for each backend."""
    code = ("import sys\n"
            f"for m in {FRAMEWORKS!r}: sys.modules[m] = None\n"
            "from multirnn import backends\n"
            f"for name in {FRAMEWORKS!r}:\n"
            "    try:\n        backends.get(name)\n"
            "    except backends.BackendUnavailable as e:\n        print(e)\n"
            "print(backends.available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir()).stdout.strip().splitlines()
    for name, line in zip(FRAMEWORKS, out, strict=False):
        assert line.startswith(f"backend {name!r} is unavailable") and f"pip install 'multirnn[{name}]'" in line
    assert out[-1] == "['numpy']"


@pytest.mark.parametrize("framework", ["torch", "keras", "flax", "nnx", "gluon", "onnxruntime"])
def test_compare_native_holds_each_frameworks_own_layer_against_the_reference(framework, capsys):
    from multirnn.port.native import FRAMEWORK_BACKEND

    if FRAMEWORK_BACKEND[framework]:
        load_backend(FRAMEWORK_BACKEND[framework])
    else:
        require_module(framework)
    models = "lstm bi x2,gru uni x1,gru-after bi x1,rnn bi x2"  # gru = reset-before: Keras and ONNX only
    code = cli.main(["compare", "--native", "--json", "--backends", framework, "--models", models])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["model"] for r in rows] == models.split(",")
    for row in rows:
        if row.get("refused"):
            assert (row["model"] == "gru uni x1" and "reset_after=False" in row["refused"]) or \
                (framework == "nnx" and "recurrent bias" in row["refused"]), row
            continue
        assert row["outputs"] <= 1e-5 and row["states"] <= 1e-5 and row["pass"], row
    assert framework in ("torch", "flax", "nnx", "gluon") or not any(r.get("refused") for r in rows)
    assert code == 0
