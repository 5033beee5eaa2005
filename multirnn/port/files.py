"""Reading and writing each format's own saved files, for ``multirnn convert``.

=======  ==========================  ==========================================================
format   file                        where the spec comes from on reading
=======  ==========================  ==========================================================
npz      ``.npz`` canonical params   ``__multirnn_spec__`` entry (JSON) written by ``save_npz``
torch    ``torch.save`` state_dict   key names and shapes (+ ``nonlinearity`` for an RNN)
keras    ``.keras`` / ``.weights.h5`` the ``.keras`` config; a ``.weights.h5`` needs every field given
flax     msgpack params tree         tree structure and shapes (+ ``nonlinearity`` for an RNN)
gluon    ``.params`` (mx.nd.save)    names and shapes (+ ``nonlinearity`` for an RNN)
onnx     ``.onnx``                   the RNN/GRU/LSTM nodes (+ ``multirnn.spec`` metadata)
=======  ==========================  ==========================================================

``known`` spec fields (the CLI flags) complete what a file cannot say and are checked against what it
does say. Frameworks are imported only for their own formats.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import finish_import, make_spec, spec_from_json, spec_from_known, spec_to_json

FORMATS = ("npz", "torch", "keras", "flax", "gluon", "onnx")
EXTENSIONS = {".npz": "npz", ".pt": "torch", ".pth": "torch", ".keras": "keras", ".h5": "keras",
              ".msgpack": "flax", ".params": "gluon", ".onnx": "onnx"}
SPEC_KEY = "__multirnn_spec__"


def guess_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ValueError(f"cannot tell the format of {str(path)!r} from its extension; give it "
                         f"(one of {FORMATS}); known extensions: {sorted(EXTENSIONS)}")
    return EXTENSIONS[suffix]


def _known(known: dict) -> dict:
    return {k: v for k, v in (known or {}).items() if v is not None}


# ---- canonical .npz ----

def save_npz(path, model, params: dict) -> None:
    """Canonical params plus the spec (as JSON) in one ``.npz``, loadable with allow_pickle=False."""
    from multirnn import validate

    validate.check_model(model)
    validate.check_params(model, params)
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to other names
        np.savez(f, **{SPEC_KEY: np.array(spec_to_json(model))}, **params)


def load_npz(path, **known):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    text = arrays.pop(SPEC_KEY, None)
    if text is not None:
        stored = spec_from_json(str(text[()]))
        fields = {f: getattr(stored, f) for f in stored.__dataclass_fields__}
        model = make_spec(fields, _known(known), "npz")
    else:
        model = spec_from_known(_known(known), "npz without a spec entry")
    return model, finish_import(model, arrays)


# ---- each framework's files: read_file / write_file in multirnn.port.<framework> ----

def _module(fmt: str):
    if fmt not in FORMATS[1:]:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    import importlib

    return importlib.import_module(f"{__package__}.{fmt}")


def read_loaded(fmt: str, path, **known):
    """A ``Loaded`` (spec, params, and a runner where the file can run) from a saved file of ``fmt``."""
    from .source import Loaded

    known = _known(known)
    prefix = known.pop("prefix", None)
    if prefix is not None and fmt != "torch":
        raise ValueError(f"prefix applies to torch state_dicts only, not to {fmt} files")
    if prefix is not None:
        known["prefix"] = prefix
    if fmt == "npz":
        model, params = load_npz(path, **known)
        return Loaded(model, params, origin=f"npz file {os.fspath(path)!r}")
    return _module(fmt).read_file(path, **known)


def read(fmt: str, path, **known):
    """``(model, params)`` from a saved file of ``fmt``."""
    loaded = read_loaded(fmt, path, **known)
    return loaded.model, loaded.params


def write(fmt: str, path, model, params: dict) -> None:
    """Save ``params`` of ``model`` as ``fmt``'s own file at ``path``."""
    path = os.fspath(path)
    if fmt == "npz":
        save_npz(path, model, params)
    else:
        _module(fmt).write_file(path, model, params)
