"""MXNet Gluon ``rnn.RNN``/``rnn.GRU``/``rnn.LSTM`` parameters <-> canonical params.

Names ``{l|r}{k}_{i2h|h2h}_{weight|bias}`` (``r`` = reverse direction), the layer's registered names;
a block prefix such as ``rnn0_`` (``collect_params()`` names) is accepted on import, and so are the names
``save_parameters`` writes in MXNet 1.9 (``_unfused.{k}.{i2h|h2h}_{weight|bias}``, bidirectional
``_unfused.{k}.{l|r}_cell.…``, under a parent's ``child.`` prefix). Weights
(G·H, in) / (G·H, H), gates r, z, n (GRU, reset after the h2h matmul like torch) and i, f, c, o (LSTM).
An LSTM with ``projection_size = P`` adds ``{l|r}{k}_h2r_weight`` (P, H), the transposed ``W_proj``
(no bias), and its h2h weight is (4·H, P): the spec's ``proj_size``.
Gluon layers always have both biases: a bias=False model exports zeros and imports only zero biases.
Like torch, an RNN's two biases are summed into ``b_h`` on import; export writes ``h2h_bias = 0``.
Note Gluon's ``rnn.RNN`` defaults to activation='relu'; ``gluon_layer`` sets the model's nonlinearity.

``read`` takes a live block: every attribute that changes what it computes is represented or refused by
name, every parameter consumed, and the ``Loaded`` runs the block itself so the conversion is proven.
mxnet is imported only through ``multirnn.backends.get("mxnet")``, never at module top level.
"""
from __future__ import annotations

import re

import numpy as np

from ._common import (Fused, GATES_PER_CELL, UnrepresentableError, as_numpy, check_export, expect_shape,
                      finish_import, fuse, infer_fused_sizes, make_spec, require_bias_free,
                      require_no_learned_state, require_reset_after, require_standard_cell,
                      require_standard_directions, unfuse)
from .torch import weights_only_notes  # NumPy only (torch itself is imported by torch.py's functions)

_KEY = re.compile(r"^(.*?)([lr])(\d+)_(i2h|h2h|h2r)_(weight|bias)$")
# What _RNNLayer.save_parameters writes (MXNet 1.9 keeps the old unfused-cell names in files).
_SAVED_KEY = re.compile(r"^(.*?)_unfused\.(\d+)\.(?:([lr])_cell\.)?(i2h|h2h|h2r)_(weight|bias)$")


def _name(layer: int, direction: str, kind: str) -> str:
    return f"{'r' if direction == 'bwd' else 'l'}{layer}_{kind}"


def gluon_shapes(model) -> dict[str, tuple]:
    gh = GATES_PER_CELL[model.cell] * model.num_hiddens
    shapes = {}
    for layer, direction, _, width in model.units():
        shapes[_name(layer, direction, "i2h_weight")] = (gh, width)
        shapes[_name(layer, direction, "h2h_weight")] = (gh, model.h_size)
        shapes[_name(layer, direction, "i2h_bias")] = (gh,)
        shapes[_name(layer, direction, "h2h_bias")] = (gh,)
        if model.proj_size:
            shapes[_name(layer, direction, "h2r_weight")] = (model.proj_size, model.num_hiddens)
    return shapes


def to_gluon(model, params: dict) -> dict[str, np.ndarray]:
    """Gluon parameter arrays by their ``save_parameters`` names (no block prefix)."""
    dtype = check_export(model, params)
    require_reset_after(model, "Gluon")
    require_standard_cell(model, "Gluon")
    require_standard_directions(model, "Gluon")
    require_no_learned_state(model, "Gluon")
    out = {}
    for layer, direction, prefix, width in model.units():
        f = fuse(model, params, prefix, "gluon")
        zeros = np.zeros(f.wx.shape[1], dtype)
        out[_name(layer, direction, "i2h_weight")] = np.ascontiguousarray(f.wx.T)
        out[_name(layer, direction, "h2h_weight")] = np.ascontiguousarray(f.wh.T)
        out[_name(layer, direction, "i2h_bias")] = zeros.copy() if f.bx is None else f.bx.copy()
        out[_name(layer, direction, "h2h_bias")] = zeros.copy() if f.bh is None else f.bh.copy()
        if model.proj_size:
            out[_name(layer, direction, "h2r_weight")] = np.ascontiguousarray(params[prefix + "W_proj"].T)
    return out


def _strip_prefix(arrays: dict) -> dict[str, np.ndarray]:
    out, prefixes = {}, set()
    for key, value in arrays.items():
        saved = _SAVED_KEY.match(key)
        match = _KEY.match(key)
        if saved is not None:
            prefix, layer, direction, kind, part = saved.groups()
            name = f"{direction or 'l'}{layer}_{kind}_{part}"
        elif match is not None:
            prefix, name = match.group(1), key[len(match.group(1)):]
        else:
            raise ValueError(f"{key!r} is not a Gluon RNN parameter name "
                             "({l|r}<k>_{i2h|h2h}_{weight|bias}, or save_parameters' _unfused.<k>.…)")
        if name in out:
            raise ValueError(f"{key!r} names the parameter {name!r} a second time")
        prefixes.add(prefix)
        out[name] = as_numpy(value)
    if len(prefixes) > 1:
        raise ValueError(f"parameters of several blocks given (prefixes {sorted(prefixes)}); "
                         "pass one layer's")
    return out


def from_gluon(model, arrays: dict) -> dict[str, np.ndarray]:
    """Canonical params from Gluon parameter arrays (NDArrays or NumPy), names with or without prefix."""
    require_reset_after(model, "Gluon")
    require_standard_cell(model, "Gluon")
    require_standard_directions(model, "Gluon")
    require_no_learned_state(model, "Gluon")
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
        if model.proj_size:
            params[prefix + "W_proj"] = get("h2r_weight").T
    return finish_import(model, params)


def infer_gluon_spec(arrays: dict, **known):
    """The spec from Gluon parameter names and shapes; ``known`` completes it (the rnn nonlinearity)."""
    arrays = _strip_prefix(arrays)
    if "l0_h2h_weight" not in arrays or "l0_i2h_weight" not in arrays:
        raise ValueError(f"not a Gluon RNN/GRU/LSTM parameter set (names {sorted(arrays)[:4]})")
    projection = arrays.get("l0_h2r_weight")  # (P, H): l0_h2h_weight is (4·H, P)
    inferred = infer_fused_sizes("l0_i2h_weight", arrays["l0_i2h_weight"], "l0_h2h_weight",
                                 arrays["l0_h2h_weight"], None if projection is None else projection.shape[1])
    if projection is not None:
        inferred["proj_size"] = projection.shape[0]
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
    if model.proj_size:
        kwargs["projection_size"] = model.proj_size
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


# ---- live blocks: read, proven by running (import mxnet) ----

_CELL_OF_MODE = {"rnn_tanh": ("rnn", "tanh"), "rnn_relu": ("rnn", "relu"), "gru": ("gru", None),
                 "lstm": ("lstm", None)}
_FLOAT_DTYPES = ("float32", "float64")
# Methods of _RNNLayer that decide what a block computes: a subclass overriding one computes its own thing.
_COMPUTING_METHODS = ("__call__", "forward", "hybrid_forward", "_forward_kernel", "begin_state", "state_info")


def _mxnet():
    import multirnn.backends

    multirnn.backends.get("mxnet")  # restores numpy.bool before mxnet loads
    import mxnet as mx

    return mx


def _describe(block) -> str:
    return f"Gluon {type(block).__name__} block {block.prefix!r}"


def _refuse_unsupported(block, base) -> None:
    """Every attribute of a Gluon recurrent layer that changes what it computes beyond the spec."""
    where = _describe(block)
    for method in _COMPUTING_METHODS:
        if getattr(type(block), method) is not getattr(base, method):
            raise UnrepresentableError(f"{where} overrides {method}: its computation is its own; "
                                       f"representable: gluon.rnn.{base.__name__} itself")
    if block._forward_hooks or block._forward_pre_hooks:
        raise UnrepresentableError(f"{where} has forward (pre-)hooks: they can change what it computes; "
                                   f"representable: the block without hooks")
    clip = (block._lstm_state_clip_min, block._lstm_state_clip_max)
    if any(bound is not None for bound in clip):
        # (lstm_state_clip_nan only acts together with the bounds)
        raise UnrepresentableError(
            f"{where} clips its LSTM cell state (state_clip_min={clip[0]}, state_clip_max={clip[1]}), which "
            f"the spec does not; representable: state_clip_min=None and state_clip_max=None")
    if block._use_sequence_length:
        raise UnrepresentableError(f"{where} has use_sequence_length=True: it takes per-sequence lengths "
                                   f"as an input; representable: use_sequence_length=False (multirnn.forward "
                                   f"takes lengths= itself)")
    if block._children:
        raise UnrepresentableError(f"{where} has child blocks {list(block._children)}: they are no part of "
                                   f"a recurrent layer")


def _block_arrays(block) -> dict:
    """The layer's parameters by registered name (no prefix), checking every parameter is one of them."""
    mx = _mxnet()
    registered = {id(p): name for name, p in block._reg_params.items()}
    unused = sorted(name for name, p in block.collect_params().items() if id(p) not in registered)
    if unused:
        raise UnrepresentableError(f"{_describe(block)} holds parameters {unused} that its kernel does not "
                                   f"use: a converted model would drop them")
    try:
        return {name: p.data().asnumpy() for name, p in block._reg_params.items()}
    except mx.gluon.parameter.DeferredInitializationError as exc:
        raise ValueError(f"{_describe(block)} is not initialized yet (deferred: input_size=0); give "
                         f"input_size= or run it once before converting") from exc


def _block_spec(block, base, arrays: dict, known: dict):
    where = _describe(block)
    if block._mode not in _CELL_OF_MODE or _CELL_OF_MODE[block._mode][0] != base.__name__.lower():
        raise UnrepresentableError(f"{where} has mode {block._mode!r}, which is not gluon.rnn.{base.__name__}'s")
    cell, nonlinearity = _CELL_OF_MODE[block._mode]
    inferred = infer_gluon_spec(arrays, cell=cell, nonlinearity=nonlinearity)  # sizes, depth, direction
    fields = inferred.__dict__
    fields = {k: fields[k] for k in ("cell", "num_inputs", "num_hiddens", "num_layers", "bidirectional",
                                     "proj_size")}
    stated = {"num_hiddens": block._hidden_size, "num_layers": block._num_layers,
              "bidirectional": block._dir == 2, "proj_size": block._projection_size or 0}
    if block._input_size:
        stated["num_inputs"] = block._input_size
    for name, value in stated.items():
        if fields[name] != value:
            raise ValueError(f"{where} says {name}={value!r} but its parameters have {fields[name]!r}")
    fields.update(batch_first=block._layout == "NTC", dropout=float(block._dropout))
    if cell == "rnn":
        fields["nonlinearity"] = nonlinearity
    if cell == "gru":
        fields["reset_after"] = True  # Gluon's GRU resets after the h2h matmul
    return make_spec(fields, known, where)


def _block_dtype(block, arrays: dict) -> str:
    names = sorted({a.dtype.name for a in arrays.values()} | {np.dtype(block._dtype).name})
    if len(names) != 1 or names[0] not in _FLOAT_DTYPES:
        raise UnrepresentableError(f"{_describe(block)} has dtype {names}: multirnn computes in one of "
                                   f"{_FLOAT_DTYPES}; representable: block.cast('float32') or 'float64'")
    return names[0]


def _source_run(block, model, dtype: str):
    mx = _mxnet()
    from .source import SourceRun

    ctx = next(iter(block.collect_params().values())).list_ctx()[0]

    def array(value):
        made = mx.nd.array(value, ctx=ctx, dtype=dtype)
        return made.as_np_ndarray() if mx.util.is_np_array() else made

    def call(inputs, state):
        from multirnn.state import flatten_state, nest_state

        batch = inputs.shape[0 if model.batch_first else 1]
        if state is None:  # the block's own initial state
            begin = block.begin_state(batch_size=batch, ctx=ctx, dtype=dtype)
        else:
            flat = flatten_state(model, state)
            begin = [array(np.stack([unit[k] for unit in flat])) for k in range(model.state_arrays)]
        with mx.autograd.predict_mode():  # inference: dropout between layers is the identity
            out, states = block(array(inputs), begin)
        finals = [s.asnumpy() for s in states]
        return out.asnumpy(), nest_state(model, [tuple(a[i] for a in finals) for i in range(finals[0].shape[0])])

    return SourceRun(call, f"mxnet {mx.__version__}", dtype)


def read(block, *, variables=None, **known):
    """A ``Loaded`` from a live Gluon ``rnn.RNN``/``GRU``/``LSTM`` block that runs it. Every attribute
    that changes what it computes is represented or refused by name (``UnrepresentableError``), every
    parameter consumed (whatever the block prefix)."""
    mx = _mxnet()
    from .source import Loaded

    if variables is not None:
        raise ValueError("variables= goes with a Flax linen module, not with a Gluon block")
    rnn = mx.gluon.rnn
    base = next((cls for cls in (rnn.RNN, rnn.GRU, rnn.LSTM) if isinstance(block, cls)), None)
    if base is None:
        raise UnrepresentableError(f"{type(block).__name__} is not a Gluon recurrent layer: representable: "
                                   f"a gluon.rnn.RNN, GRU or LSTM block")
    _refuse_unsupported(block, base)
    arrays = _block_arrays(block)
    model = _block_spec(block, base, arrays, known)
    dtype = _block_dtype(block, arrays)
    notes = ()
    if model.dropout:
        notes += (f"dropout={model.dropout} between layers is kept in the spec (training only); the source "
                  f"was verified in predict mode, where it is the identity",)
    return Loaded(model, from_gluon(model, arrays), run=_source_run(block, model, dtype),
                  origin=_describe(block), notes=notes)


# ---- files (import mxnet) ----

def read_file(path, **known):
    """A ``Loaded`` from a Gluon ``.params`` file (``mx.nd.save`` / ``save_parameters``)."""
    import multirnn.backends

    multirnn.backends.get("mxnet")  # restores numpy.bool before mxnet loads
    import mxnet as mx

    from .source import Loaded

    arrays = {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}
    model = infer_gluon_spec(arrays, **known)
    return Loaded(model, from_gluon(model, arrays), origin=f"Gluon params {str(path)!r}",
                  notes=weights_only_notes("a Gluon .params file", _PARAMS_SHOW, known))


# What a .params file's names and shapes say (Gluon layers always hold biases, so not bias).
_PARAMS_SHOW = frozenset({"cell", "num_inputs", "num_hiddens", "num_layers", "bidirectional", "reset_after",
                          "proj_size"})


def write_file(path, model, params: dict) -> None:
    import multirnn.backends

    arrays = to_gluon(model, params)  # NumPy only: refuses what Gluon cannot hold before mxnet loads
    multirnn.backends.get("mxnet")
    import mxnet as mx

    mx.nd.save(str(path), {k: mx.nd.array(v, dtype=v.dtype) for k, v in arrays.items()})
