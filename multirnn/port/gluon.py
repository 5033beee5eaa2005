"""MXNet Gluon ``rnn.RNN``/``rnn.GRU``/``rnn.LSTM`` parameters <-> canonical params.

Names ``{l|r}{k}_{i2h|h2h}_{weight|bias}`` (``r`` = reverse direction), as ``save_parameters`` writes
them; a block prefix such as ``rnn0_`` (``collect_params()`` names) is accepted on import. Weights
(G·H, in) / (G·H, H), gates r, z, n (GRU, reset after the h2h matmul like torch) and i, f, c, o (LSTM).
Gluon layers always have both biases: a bias=False model exports zeros and imports only zero biases.
Like torch, an RNN's two biases are summed into ``b_h`` on import; export writes ``h2h_bias = 0``.
Note Gluon's ``rnn.RNN`` defaults to activation='relu'; ``gluon_layer`` sets the model's nonlinearity.
"""
from __future__ import annotations

import re

import numpy as np

from ._common import (Fused, as_numpy, check_export, expect_shape, finish_import, fuse, infer_fused_sizes,
                      make_spec, require_bias_free, require_reset_after, unfuse)

_KEY = re.compile(r"^(.*?)([lr])(\d+)_(i2h|h2h)_(weight|bias)$")


def _name(layer: int, direction: str, kind: str) -> str:
    return f"{'r' if direction == 'bwd' else 'l'}{layer}_{kind}"


def gluon_shapes(model) -> dict[str, tuple]:
    gh = {"rnn": 1, "gru": 3, "lstm": 4}[model.cell] * model.num_hiddens
    shapes = {}
    for layer, direction, _, width in model.units():
        shapes[_name(layer, direction, "i2h_weight")] = (gh, width)
        shapes[_name(layer, direction, "h2h_weight")] = (gh, model.num_hiddens)
        shapes[_name(layer, direction, "i2h_bias")] = (gh,)
        shapes[_name(layer, direction, "h2h_bias")] = (gh,)
    return shapes


def to_gluon(model, params: dict) -> dict[str, np.ndarray]:
    """Gluon parameter arrays by their ``save_parameters`` names (no block prefix)."""
    dtype = check_export(model, params)
    require_reset_after(model, "Gluon")
    out = {}
    for layer, direction, prefix, width in model.units():
        f = fuse(model, params, prefix, "gluon")
        zeros = np.zeros(f.wx.shape[1], dtype)
        out[_name(layer, direction, "i2h_weight")] = np.ascontiguousarray(f.wx.T)
        out[_name(layer, direction, "h2h_weight")] = np.ascontiguousarray(f.wh.T)
        out[_name(layer, direction, "i2h_bias")] = zeros.copy() if f.bx is None else f.bx.copy()
        out[_name(layer, direction, "h2h_bias")] = zeros.copy() if f.bh is None else f.bh.copy()
    return out


def _strip_prefix(arrays: dict) -> dict[str, np.ndarray]:
    out, prefixes = {}, set()
    for key, value in arrays.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"{key!r} is not a Gluon RNN parameter name "
                             "({l|r}<k>_{i2h|h2h}_{weight|bias})")
        prefixes.add(match.group(1))
        out[key[len(match.group(1)):]] = as_numpy(value)
    if len(prefixes) > 1:
        raise ValueError(f"parameters of several blocks given (prefixes {sorted(prefixes)}); "
                         "pass one layer's")
    return out


def from_gluon(model, arrays: dict) -> dict[str, np.ndarray]:
    """Canonical params from Gluon parameter arrays (NDArrays or NumPy), names with or without prefix."""
    require_reset_after(model, "Gluon")
    arrays = _strip_prefix(arrays)
    shapes = gluon_shapes(model)
    missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
    if missing or extra:
        raise ValueError(f"Gluon parameters do not match {model}: missing {missing}, unexpected {extra}")
    params = {}
    for layer, direction, prefix, _ in model.units():
        get = lambda kind: expect_shape(kind, arrays[_name(layer, direction, kind)],  # noqa: E731
                                        shapes[_name(layer, direction, kind)])
        bx, bh = get("i2h_bias"), get("h2h_bias")
        require_bias_free(model, _name(layer, direction, "i2h_bias"), bx)
        require_bias_free(model, _name(layer, direction, "h2h_bias"), bh)
        fused = Fused(get("i2h_weight").T, get("h2h_weight").T,
                      bx if model.bias else None, bh if model.bias else None)
        params.update(unfuse(model, fused, prefix, "gluon"))
    return finish_import(model, params)


def infer_gluon_spec(arrays: dict, **known):
    """The spec from Gluon parameter names and shapes; ``known`` completes it (the rnn nonlinearity)."""
    arrays = _strip_prefix(arrays)
    if "l0_h2h_weight" not in arrays or "l0_i2h_weight" not in arrays:
        raise ValueError(f"not a Gluon RNN/GRU/LSTM parameter set (names {sorted(arrays)[:4]})")
    inferred = infer_fused_sizes("l0_i2h_weight", arrays["l0_i2h_weight"],
                                 "l0_h2h_weight", arrays["l0_h2h_weight"])
    inferred.update({"num_layers": 1 + max(int(_KEY.match(k).group(3)) for k in arrays),
                     "bidirectional": any(k.startswith("r") for k in arrays)})
    if inferred["cell"] == "gru":
        inferred["reset_after"] = True
    return make_spec(inferred, known, "Gluon")


# ---- Gluon's own layers (import mxnet) ----

def gluon_layer(model, params: dict | None = None, *, arrays: dict | None = None, dtype="float32"):
    """A Gluon ``rnn.RNN``/``GRU``/``LSTM`` (layout from batch_first) loaded with canonical ``params``
    or with Gluon parameter ``arrays`` (see to_gluon) as they are."""
    import multirnn.backends

    multirnn.backends.get("mxnet")  # restores numpy.bool before mxnet loads
    import mxnet as mx

    if params is not None:
        dtype, arrays = check_export(model, params), to_gluon(model, params)
    dtype = np.dtype(dtype)
    rnn = mx.gluon.rnn
    cls = {"rnn": rnn.RNN, "gru": rnn.GRU, "lstm": rnn.LSTM}[model.cell]
    kwargs = {"activation": model.nonlinearity} if model.cell == "rnn" else {}
    layer = cls(model.num_hiddens, num_layers=model.num_layers, bidirectional=model.bidirectional,
                layout="NTC" if model.batch_first else "TNC", input_size=model.num_inputs,
                dtype=dtype.name, **kwargs)
    layer.initialize()
    if arrays is not None:
        arrays = _strip_prefix(arrays)
        for name, param in layer.collect_params().items():
            key = name[len(_KEY.match(name).group(1)):]  # drop the block prefix, e.g. "rnn0_"
            param.set_data(mx.nd.array(arrays[key], dtype=dtype.name))
    return layer


def run_gluon_layer(model, layer, inputs: np.ndarray, state=None):
    """Run a Gluon layer on NumPy inputs with a multirnn-convention state; returns (outputs, state)."""
    import mxnet as mx

    from multirnn.state import flatten_state, nest_state

    dtype = inputs.dtype.name
    x = mx.nd.array(inputs, dtype=dtype)
    batch = inputs.shape[0 if model.batch_first else 1]
    if state is None:
        begin = layer.begin_state(batch_size=batch, dtype=dtype)
    else:
        flat = flatten_state(model, state)
        begin = [mx.nd.array(np.stack([unit[k] for unit in flat]), dtype=dtype)
                 for k in range(model.state_arrays)]
    out, states = layer(x, begin)
    arrays = [s.asnumpy() for s in states]
    return out.asnumpy(), nest_state(model, [tuple(a[i] for a in arrays) for i in range(arrays[0].shape[0])])


# ---- files (import mxnet) ----

def read_file(path, **known):
    """A ``Loaded`` from a Gluon ``.params`` file (``mx.nd.save`` / ``save_parameters``)."""
    import multirnn.backends

    multirnn.backends.get("mxnet")  # restores numpy.bool before mxnet loads
    import mxnet as mx

    from .source import Loaded

    arrays = {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}
    model = infer_gluon_spec(arrays, **known)
    return Loaded(model, from_gluon(model, arrays), origin=f"Gluon params {str(path)!r}")


def write_file(path, model, params: dict) -> None:
    import multirnn.backends

    arrays = to_gluon(model, params)  # NumPy only: refuses what Gluon cannot hold before mxnet loads
    multirnn.backends.get("mxnet")
    import mxnet as mx

    mx.nd.save(str(path), {k: mx.nd.array(v, dtype=v.dtype) for k, v in arrays.items()})
