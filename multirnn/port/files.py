"""Reading and writing each format's own saved files, for ``multirnn convert``.

=======  ==========================  ==========================================================
format   file                        where the spec comes from on reading
=======  ==========================  ==========================================================
npz      multirnn checkpoint        its JSON header (``multirnn.checkpoint``; older ``__multirnn_spec__`` npz too)
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

from ._common import finish_import, make_spec, spec_from_json, spec_from_known

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


# ---- canonical .npz: the one multirnn file format (multirnn.checkpoint) ----

INITIAL_STATE = "initial_state"  # extra arrays initial_state.<unit>.<k>: a state stored with the model


def save_npz(path, model, params: dict, *, initial_state=None, **metadata) -> None:
    """The model in multirnn's one file format (``multirnn.checkpoint``: atomic, no pickle, hashed),
    with an optional stored initial state and JSON ``metadata`` (e.g. what it was converted from)."""
    from multirnn import checkpoint
    from multirnn.state import flatten_state

    arrays = {}
    if initial_state is not None:
        for unit, unit_arrays in enumerate(flatten_state(model, initial_state)):
            arrays.update({f"{INITIAL_STATE}.{unit}.{k}": np.asarray(a) for k, a in enumerate(unit_arrays)})
    checkpoint.save(path, model, params, arrays=arrays, **metadata)


def load_npz(path, **known):
    """``(model, params)`` from a multirnn ``.npz`` (see read_npz)."""
    loaded = read_npz(path, **known)
    return loaded.model, loaded.params


def read_npz(path, **known):
    """A ``Loaded`` from a multirnn checkpoint (a language-model checkpoint gives its recurrent part),
    from an ``.npz`` written by multirnn 0.1's ``convert`` (``__multirnn_spec__`` entry), or from a
    bare npz of canonical arrays with the spec given in ``known``. Every array must be accounted for."""
    from multirnn import checkpoint
    from multirnn.state import nest_state

    from .source import Loaded

    known, origin = _known(known), f"npz file {os.fspath(path)!r}"
    try:
        stored = checkpoint.read(path)
    except checkpoint.CheckpointError:
        with np.load(path, allow_pickle=False) as data:  # not a checkpoint: an older or bare npz?
            if "multirnn.json" in data.files:
                raise
            arrays = {k: data[k] for k in data.files}
        return _read_plain_npz(arrays, known, origin)
    model = stored.model
    make_spec({f: getattr(model, f) for f in model.__dataclass_fields__}, known, "npz")  # flags must agree
    state, extra = {}, {}
    for name, value in stored.arrays.items():
        parts = name.split(".")
        if parts[0] == INITIAL_STATE and len(parts) == 3:
            state.setdefault(int(parts[1]), {})[int(parts[2])] = value
        else:
            extra[name] = value
    notes = ()
    if stored.metadata.get("kind") == "language-model":
        notes = (f"the recurrent part of a language-model checkpoint; its head ({', '.join(sorted(extra))}) "
                 "is not converted",)
    elif extra:
        raise ValueError(f"{path}: arrays {sorted(extra)} are not parameters of {model} nor a stored "
                         "initial state: this converter would drop them")
    initial = None
    if state:
        if sorted(state) != list(range(len(list(model.units())))):
            raise ValueError(f"{path}: the stored initial state has units {sorted(state)}, the model "
                             f"{len(list(model.units()))}")
        initial = nest_state(model, [tuple(state[u][k] for k in sorted(state[u])) for u in sorted(state)])
    return Loaded(model, finish_import(model, stored.params), initial_state=initial, origin=origin,
                  notes=notes, native=True)


def _read_plain_npz(arrays: dict, known: dict, origin: str):
    from .source import Loaded

    text = arrays.pop(SPEC_KEY, None)
    if text is not None:  # written by multirnn 0.1's convert
        stored = spec_from_json(str(text[()]))
        model = make_spec({f: getattr(stored, f) for f in stored.__dataclass_fields__}, known, "npz")
    else:
        model = spec_from_known(known, "npz without a spec")
    return Loaded(model, finish_import(model, arrays), origin=origin, native=True,
                  notes=("an npz without a multirnn header: re-save it with `multirnn convert` to get the "
                         "checksummed format",))


# ---- each framework's files: read_file / write_file in multirnn.port.<framework> ----

def _module(fmt: str):
    if fmt not in FORMATS[1:]:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    import importlib

    return importlib.import_module(f"{__package__}.{fmt}")


def read_loaded(fmt: str, path, **known):
    """A ``Loaded`` (spec, params, and a runner where the file can run) from a saved file of ``fmt``."""
    known = _known(known)
    prefix = known.pop("prefix", None)
    if prefix is not None and fmt != "torch":
        raise ValueError(f"prefix applies to torch state_dicts only, not to {fmt} files")
    if prefix is not None:
        known["prefix"] = prefix
    if fmt == "npz":
        return read_npz(path, **known)
    return _module(fmt).read_file(path, **known)


def read(fmt: str, path, **known):
    """``(model, params)`` from a saved file of ``fmt``."""
    loaded = read_loaded(fmt, path, **known)
    return loaded.model, loaded.params


def write(fmt: str, path, model, params: dict, *, initial_state=None, **metadata) -> None:
    """Save ``params`` of ``model`` as ``fmt``'s own file at ``path``. Only npz records ``metadata``
    and a stored ``initial_state``; other formats refuse a model that has one."""
    path = os.fspath(path)
    if fmt == "npz":
        save_npz(path, model, params, initial_state=initial_state, **metadata)
        return
    if initial_state is not None:
        from ._common import UnrepresentableError

        raise UnrepresentableError(f"the model has a stored initial state, which {fmt} files cannot hold: "
                                   "it would start from zeros there; convert to npz instead")
    _module(fmt).write_file(path, model, params)
