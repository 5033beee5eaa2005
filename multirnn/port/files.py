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

from ._common import finish_import, make_spec, spec_from_json, spec_to_json

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


def _spec_from_known(known: dict, source: str):
    try:
        return make_spec({}, known, source)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{source} files do not record the model: give cell, num_inputs, num_hiddens "
                         f"(CLI: --cell --inputs --hidden, and --layers, --bidirectional, ... as needed); "
                         f"{exc}") from exc


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
        model = _spec_from_known(_known(known), "npz without a spec entry")
    return model, finish_import(model, arrays)


# ---- each framework's files ----

def read(fmt: str, path, **known):
    """``(model, params)`` from a saved file of ``fmt``."""
    known = _known(known)
    prefix = known.pop("prefix", "")
    if fmt == "npz":
        return load_npz(path, **known)
    if fmt == "torch":
        import multirnn.backends

        multirnn.backends.get("torch")
        import torch

        from .torch import from_torch, infer_torch_spec

        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise ValueError(f"{path}: expected a saved state_dict, got {type(sd).__name__}")
        model = infer_torch_spec(sd, prefix=prefix, **known)
        return model, from_torch(model, sd, prefix=prefix)
    if fmt == "keras":
        from .keras import from_keras, get_keras_weights, infer_keras_spec, keras_model, recurrent_layers

        if str(path).endswith(".keras"):
            import multirnn.backends

            multirnn.backends.get("tensorflow")
            import keras

            layers = recurrent_layers(keras.saving.load_model(path, compile=False).layers)
            model = infer_keras_spec(layers, **known)
        else:
            model = _spec_from_known(known, "Keras .weights.h5")
            net = keras_model(model)
            net.load_weights(path)
            layers = recurrent_layers(net.layers)
        return model, from_keras(model, get_keras_weights(layers))
    if fmt == "flax":
        from flax import serialization

        from .flax import from_flax, infer_flax_spec

        tree = serialization.msgpack_restore(Path(path).read_bytes())
        model = infer_flax_spec(tree, **known)
        return model, from_flax(model, tree)
    if fmt == "gluon":
        import multirnn.backends

        multirnn.backends.get("mxnet")
        import mxnet as mx

        from .gluon import from_gluon, infer_gluon_spec

        arrays = {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}
        model = infer_gluon_spec(arrays, **known)
        return model, from_gluon(model, arrays)
    if fmt == "onnx":
        from .onnx import from_onnx

        return from_onnx(path, **known)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def write(fmt: str, path, model, params: dict) -> None:
    """Save ``params`` of ``model`` as ``fmt``'s own file at ``path``."""
    path = os.fspath(path)
    if fmt == "npz":
        save_npz(path, model, params)
    elif fmt == "torch":
        import multirnn.backends

        multirnn.backends.get("torch")
        import torch

        from .torch import to_torch

        torch.save({k: torch.from_numpy(v) for k, v in to_torch(model, params).items()}, path)
    elif fmt == "keras":
        from .keras import keras_model

        if not (path.endswith(".keras") or path.endswith(".weights.h5")):
            raise ValueError(f"a Keras file must end in .keras (model + config) or .weights.h5, got {path!r}")
        net = keras_model(model, params)
        net.save(path) if path.endswith(".keras") else net.save_weights(path)
    elif fmt == "flax":
        from flax import serialization

        from .flax import to_flax

        Path(path).write_bytes(serialization.msgpack_serialize(to_flax(model, params)))
    elif fmt == "gluon":
        import multirnn.backends

        multirnn.backends.get("mxnet")
        import mxnet as mx

        from .gluon import to_gluon

        mx.nd.save(path, {k: mx.nd.array(v, dtype=v.dtype) for k, v in to_gluon(model, params).items()})
    elif fmt == "onnx":
        import onnx

        from .onnx import to_onnx

        onnx.save(to_onnx(model, params), path)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
