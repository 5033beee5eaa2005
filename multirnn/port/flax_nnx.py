"""Flax nnx ``SimpleCell``/``GRUCell``/``LSTMCell`` in ``nnx.RNN`` / ``nnx.Bidirectional`` <-> canonical.

The nnx form is a list with one pure dict per layer, ``nnx.to_pure_dict(nnx.state(layer, nnx.Param))``
of an ``nnx.RNN`` (``{'cell': ...}``) or ``nnx.Bidirectional`` (``{'forward_rnn': {'cell': ...},
'backward_rnn': ...}``). Cells (flax 0.12):

* SimpleCell ``dense_i`` {kernel, bias}, ``dense_h`` {kernel}: exact.
* LSTMCell ``ii``, ``if_``, ``ig``, ``io`` {kernel}, ``hi``, ``hf``, ``hg``, ``ho`` {kernel, bias}: as linen,
  one bias per gate (export folds ``b_x + b_h``; see multirnn.port.flax).
* GRUCell ``dense_i`` {kernel (in, 3H), bias} and ``dense_h`` {kernel (H, 3H)}, gates r, z, n, reset after:
  it has NO recurrent bias for the candidate, so a nonzero ``b_hh`` is refused rather than dropped
  (use linen's GRUCell, which has it); the r and z bias pairs are folded as in linen.

This module maps nnx's names onto the linen converter, so the two cannot drift apart.

``read(module)`` reads a live ``nnx.RNN`` / ``nnx.Bidirectional`` / ``nnx.Sequential`` (or a list, as
``nnx_layers`` builds) with the same audit as linen's ``read`` (see multirnn.port.flax): attributes
represented exactly or refused by name, every Variable consumed, and a copy of the module to run.
"""
from __future__ import annotations

import functools

import numpy as np

from . import flax as linen
from ._common import UnrepresentableError, as_numpy, check_export, require_reset_after

_GRU_GATES = ("r", "z", "n")


def _cell_to_nnx(model, cell: dict, where: str) -> dict:
    if model.cell == "rnn":
        return {"dense_i": cell["i"], "dense_h": cell["h"]}
    if model.cell == "lstm":
        return {("if_" if k == "if" else k): v for k, v in cell.items()}
    if np.any(cell["hn"]["bias"] != 0):
        raise UnrepresentableError(
            f"{where}: nnx GRUCell has no recurrent bias for the candidate (b_hh) but it is nonzero here; "
            "flax.linen GRUCell, torch, Keras, Gluon and ONNX can hold it")
    return {"dense_i": {"kernel": np.concatenate([cell[f"i{g}"]["kernel"] for g in _GRU_GATES], axis=1),
                        "bias": np.concatenate([cell[f"i{g}"]["bias"] for g in _GRU_GATES])},
            "dense_h": {"kernel": np.concatenate([cell[f"h{g}"]["kernel"] for g in _GRU_GATES], axis=1)}}


# Each nnx cell's arrays (flax 0.12); OptimizedLSTMCell holds the four gates fused, in order i, f, g, o.
_NNX_LEAVES = {
    "rnn": {("dense_i", "kernel"), ("dense_i", "bias"), ("dense_h", "kernel")},
    "gru": {("dense_i", "kernel"), ("dense_i", "bias"), ("dense_h", "kernel")},
    "lstm": {(name, "kernel") for name in ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho")}
            | {(name, "bias") for name in ("hi", "hf", "hg", "ho")},
    "lstm-fused": {("dense_i", "kernel"), ("dense_h", "kernel"), ("dense_h", "bias")},
}


def _cell_from_nnx(model, cell: dict, where: str) -> dict:
    def get(*path):
        return as_numpy(linen.dig(cell, path, lambda at: f"{where}: nnx {model.cell} cell params "
                                  f"have no {at} (got {sorted(cell)})"))

    layout = "lstm-fused" if model.cell == "lstm" and "dense_i" in cell else model.cell
    linen.check_leaves(f"{where} (nnx {layout} cell)", cell, _NNX_LEAVES[layout])
    if model.cell == "rnn":
        return {"i": {"kernel": get("dense_i", "kernel"), "bias": get("dense_i", "bias")},
                "h": {"kernel": get("dense_h", "kernel")}}
    if layout == "lstm-fused":
        return _split_fused_lstm(model, get("dense_i", "kernel"), get("dense_h", "kernel"),
                                 get("dense_h", "bias"), where)
    if model.cell == "lstm":
        return {("if" if k == "if_" else k): {n: as_numpy(a) for n, a in v.items()} for k, v in cell.items()}
    wi, bi, wh = get("dense_i", "kernel"), get("dense_i", "bias"), get("dense_h", "kernel")
    h = model.num_hiddens
    for name, value, shape in (("dense_i/bias", bi, (3 * h,)), ("dense_h/kernel", wh, (h, 3 * h))):
        if value.shape != shape:
            raise ValueError(f"{where}/{name} must have shape {shape}, got {value.shape}")
    if wi.ndim != 2 or wi.shape[1] != 3 * h:
        raise ValueError(f"{where}/dense_i/kernel must have shape (in, {3 * h}), got {wi.shape}")
    out = {}
    for k, g in enumerate(_GRU_GATES):
        cols = slice(k * h, (k + 1) * h)
        out[f"i{g}"] = {"kernel": wi[:, cols], "bias": bi[cols]}
        out[f"h{g}"] = {"kernel": wh[:, cols]}
    out["hn"]["bias"] = np.zeros(h, wi.dtype)  # nnx has none: exactly zero
    return out


def _split_fused_lstm(model, wi, wh, bh, where: str) -> dict:
    """nnx OptimizedLSTMCell's fused (in, 4H) / (H, 4H) / (4H,) Linears as linen LSTMCell params."""
    h = model.num_hiddens
    for name, value, shape in (("dense_h/kernel", wh, (h, 4 * h)), ("dense_h/bias", bh, (4 * h,))):
        if value.shape != shape:
            raise ValueError(f"{where}/{name} must have shape {shape}, got {value.shape}")
    if wi.ndim != 2 or wi.shape[1] != 4 * h:
        raise ValueError(f"{where}/dense_i/kernel must have shape (in, {4 * h}), got {wi.shape}")
    out = {}
    for k, g in enumerate("ifgo"):
        cols = slice(k * h, (k + 1) * h)
        out[f"i{g}"] = {"kernel": wi[:, cols]}
        out[f"h{g}"] = {"kernel": wh[:, cols], "bias": bh[cols]}
    return out


def _map_layers(model, layers: list, convert, what: str) -> list:
    out = []
    for layer, tree in enumerate(layers):
        paths = [("forward_rnn", "cell"), ("backward_rnn", "cell")] if model.bidirectional else [("cell",)]
        new: dict = {}
        for path in paths:
            node = tree
            for key in path:
                if not isinstance(node, dict) or key not in node:
                    raise ValueError(f"{what} layer {layer} has no {'/'.join(path)}")
                node = node[key]
            target = new
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = convert(node, f"layer {layer} {'/'.join(path)}")
        out.append(new)
    return out


def _linen_layers(model, tree: dict) -> list:
    if model.num_layers == 1:
        return [tree]
    return [tree[f"layers_{k}"] for k in range(model.num_layers)]


def to_nnx(model, params: dict) -> list[dict]:
    """Per layer, the pure-dict nnx Param state of ``nnx_layers(model)``."""
    check_export(model, params)
    require_reset_after(model, "Flax nnx")
    layers = _linen_layers(model, linen.to_flax(model, params))
    return _map_layers(model, layers, lambda cell, where: _cell_to_nnx(model, cell, where), "linen")


def from_nnx(model, layers: list) -> dict[str, np.ndarray]:
    """Canonical params from per-layer nnx pure dicts (see to_nnx)."""
    require_reset_after(model, "Flax nnx")
    if not isinstance(layers, (list, tuple)) or len(layers) != model.num_layers:
        raise ValueError(f"layers must be a list of {model.num_layers} nnx state dicts (one per layer)")
    linen_layers = _map_layers(model, list(layers),
                               lambda cell, where: _cell_from_nnx(model, cell, where), "nnx")
    if model.num_layers == 1:
        return linen.from_flax(model, linen_layers[0])
    return linen.from_flax(model, {f"layers_{k}": t for k, t in enumerate(linen_layers)})


# ---- nnx's own modules (import flax.nnx) ----

def nnx_layers(model, layers_state: list | None = None, dtype: str = "float32") -> list:
    """One ``nnx.RNN`` / ``nnx.Bidirectional`` per layer (return_carry on), holding ``layers_state``."""
    import jax.numpy as jnp
    from flax import nnx

    cls = {"rnn": nnx.SimpleCell, "gru": nnx.GRUCell, "lstm": nnx.LSTMCell}[model.cell]
    linen.require_flax_directions(model)
    kwargs = {"param_dtype": getattr(jnp, dtype), "dtype": getattr(jnp, dtype),
              **linen.cell_functions(model, nnx)}
    rngs = nnx.Rngs(0)
    modules = []
    for layer in range(model.num_layers):
        width = model.num_inputs if layer == 0 else model.output_size
        make = lambda **direction: nnx.RNN(cls(width, model.num_hiddens, rngs=rngs, **kwargs),  # noqa: E731
                                           time_major=not model.batch_first, return_carry=True, rngs=rngs,
                                           **direction)
        module = nnx.Bidirectional(make(), make(), time_major=not model.batch_first, return_carry=True,
                                   rngs=rngs) if model.bidirectional else \
            make(reverse=True, keep_order=model.keep_order) if model.reverse else make()
        if layers_state is not None:
            nnx.update(module, nnx.State(_as_jax(layers_state[layer])))
        modules.append(module)
    return modules


def _as_jax(tree):
    import jax.numpy as jnp

    return {k: _as_jax(v) for k, v in tree.items()} if isinstance(tree, dict) else jnp.asarray(tree)


def run_nnx(model, layers_state: list, inputs: np.ndarray, state=None):
    """Run nnx layers holding ``layers_state`` with a multirnn-convention state; returns (outputs, state)."""
    from multirnn.backends.jax_backend import precision

    # the modules are built (their weights placed) inside the same precision as the run
    if inputs.dtype == np.float64:
        with precision("float64"):
            return linen.run_layer_calls(model, nnx_layers(model, layers_state, "float64"), inputs, state)
    return linen.run_layer_calls(model, nnx_layers(model, layers_state, inputs.dtype.name), inputs, state)


# ---- reading a live nnx module: every attribute and Variable accounted for (import flax.nnx) ----

# Attributes with no effect on the function once the weights are given (initializers, the RNG
# streams that only feed carry initialization, checked to be zeros).
NNX_NO_EFFECT = frozenset({"kernel_init", "recurrent_kernel_init", "bias_init", "rngs", "param_dtype",
                           "in_features", "hidden_features", "out_features", "unroll", "broadcast_rngs"})
# Each cell class's own attributes beyond NNX_NO_EFFECT, and its Linear submodules.
_NNX_CELLS = {
    "SimpleCell": ("rnn", {"activation_fn", "residual", "dtype", "carry_init", "promote_dtype"},
                   ("dense_i", "dense_h")),
    "GRUCell": ("gru", {"gate_fn", "activation_fn", "dtype", "carry_init", "promote_dtype"},
                ("dense_i", "dense_h")),
    "LSTMCell": ("lstm", {"gate_fn", "activation_fn", "dtype", "carry_init", "promote_dtype"},
                 ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho")),
    "OptimizedLSTMCell": ("lstm", {"gate_fn", "activation_fn", "dtype", "carry_init", "promote_dtype"},
                          ("dense_i", "dense_h")),
}


def _public(module) -> dict:
    return {k: v for k, v in vars(module).items() if not k.startswith("_")}


def _init_default(cls, name: str):
    import inspect

    parameter = inspect.signature(cls.__init__).parameters.get(name)
    return None if parameter is None else parameter.default


def _check_unknown(where: str, module, known: set) -> None:
    for name, value in _public(module).items():
        if name not in known and name not in NNX_NO_EFFECT:
            linen.refuse(where, name, value, f"this reader does not know what {type(module).__name__}."
                         f"{name} computes")


def _check_default(where: str, module, name: str) -> None:
    """An attribute that must be what flax's constructor gives it (compared by identity)."""
    value, default = getattr(module, name, None), _init_default(type(module), name)
    if hasattr(module, name) and value is not default:
        linen.refuse(where, name, linen.fn_name(value), f"representable: flax's default "
                     f"{linen.fn_name(default)}")


def _nnx_linear(where: str, dense) -> None:
    from flax import nnx

    if type(dense) is not nnx.Linear:
        linen.refuse(where, "type", type(dense).__name__, "the cell's projections must be nnx.Linear")
    for name in ("precision", "dot_general", "promote_dtype", "preferred_element_type"):
        _check_default(where, dense, name)
    linen.check_dtype(where, "dtype", dense.dtype)
    _check_unknown(where, dense, {"kernel", "bias", "use_bias", "dtype", "precision", "dot_general",
                                  "promote_dtype", "preferred_element_type"})


def _nnx_cell(where: str, cell):
    from flax import nnx

    name = type(cell).__name__
    if getattr(nnx, name, None) is not type(cell) or name not in _NNX_CELLS:
        linen.refuse(where, "cell", name, "representable cells: nnx.SimpleCell, nnx.GRUCell, nnx.LSTMCell, "
                     "nnx.OptimizedLSTMCell")
    kind, known, denses = _NNX_CELLS[name]
    where = f"{where} {name}"
    nonlinearity, gate = None, "sigmoid"
    if kind == "rnn":
        nonlinearity = linen.simple_nonlinearity(where, cell.activation_fn, cell.residual)
    else:
        gate, nonlinearity = linen.check_gates(where, cell.gate_fn, cell.activation_fn)
    linen.check_carry_init(where, cell.carry_init)
    _check_default(where, cell, "promote_dtype")
    linen.check_dtype(where, "param_dtype", cell.param_dtype)
    _check_unknown(where, cell, known | set(denses))
    for dense in denses:
        _nnx_linear(f"{where}.{dense}", getattr(cell, dense))
    leaves = tuple((dense, leaf) for dense in denses
                   for leaf in (("kernel", "bias") if getattr(cell, dense).use_bias else ("kernel",)))
    return linen.CellFacts(kind, int(cell.hidden_features), nonlinearity,
                           linen.check_dtype(where, "dtype", cell.dtype), leaves, (denses[0], "kernel"), gate)


def _nnx_rnn(where: str, rnn):
    from flax import nnx

    if type(rnn) is not nnx.RNN:
        linen.refuse(where, "type", type(rnn).__name__, "representable layers: nnx.RNN, nnx.Bidirectional "
                     "of two nnx.RNN, an nnx.Sequential or list of those")
    default_axes = nnx.RNN(nnx.SimpleCell(1, 1, rngs=nnx.Rngs(0)), rngs=False).state_axes
    if rnn.state_axes != default_axes:
        linen.refuse(where, "state_axes", rnn.state_axes, f"the weights must be carried unchanged through "
                     f"every step; representable: the default {default_axes}")
    _check_unknown(where, rnn, {"cell", "time_major", "return_carry", "reverse", "keep_order", "state_axes"})
    return _nnx_cell(where, rnn.cell)


def _nnx_layer(where: str, layer, paths: dict, last: bool):
    from flax import nnx

    if type(layer) is nnx.Bidirectional:
        if layer.merge_fn is not _init_default(nnx.Bidirectional, "merge_fn"):
            linen.refuse(where, "merge_fn", linen.fn_name(layer.merge_fn), "the spec concatenates the two "
                         "directions (flax's default); other merges are not representable yet")
        _check_unknown(where, layer, {"forward_rnn", "backward_rnn", "merge_fn", "time_major",
                                      "return_carry"})
        rnns = (layer.forward_rnn, layer.backward_rnn)
        cells = [_nnx_rnn(f"{where} {name}", rnn) for name, rnn in zip(("forward_rnn",
                                                                                   "backward_rnn"), rnns)]
    else:
        rnns = (layer,)
        cells = [_nnx_rnn(where, layer)]
    facts = linen.LayerFacts(where, len(rnns) == 2, bool(layer.time_major), bool(layer.return_carry), cells,
                             [paths[id(rnn.cell)] for rnn in rnns], layer, (),
                             *(linen.direction_fields(layer) if len(rnns) == 1 else (False, True)))
    if facts.returns_carry and not last:
        linen.refuse(where, "return_carry", True, "inside nnx.Sequential the next layer would be given "
                     "(carry, outputs); representable: return_carry=False on every layer but the last")
    return facts


def _nnx_layer_modules(module) -> tuple[list, bool]:
    """The stack's layers, and whether the module itself chains them (nnx.Sequential)."""
    from flax import nnx

    if isinstance(module, (list, tuple)):
        return list(module), False
    if type(module) is nnx.Sequential:
        _check_unknown("Flax nnx.Sequential", module, {"layers"})
        return list(module.layers), True
    if type(module) in (nnx.RNN, nnx.Bidirectional):
        return [module], True
    raise TypeError(f"cannot read an nnx {type(module).__module__}.{type(module).__qualname__}: give an "
                    "nnx.RNN, an nnx.Bidirectional of two nnx.RNN, or an nnx.Sequential or list of those")


def _check_variables(where: str, root) -> None:
    """Only Params (read below) and the RNG streams that feed carry initialization (zeros)."""
    from flax import nnx

    for path, node in nnx.iter_graph(root):
        if isinstance(node, nnx.Variable) and not isinstance(node, (nnx.Param, nnx.RngState)):
            raise ValueError(f"{where}: {type(node).__name__} {'/'.join(map(str, path))} is not read by any "
                             "recurrent cell (the source holds more than it reads)")


def read(module, *, variables=None, **known):
    """A ``Loaded`` from a live ``nnx.RNN`` / ``nnx.Bidirectional`` / ``nnx.Sequential`` (or list) of those.

    Every attribute that can change the function is read and represented exactly or refused
    (UnrepresentableError naming it); every Variable is consumed. The result runs a copy of the module
    (so probing it leaves the original's RNG counters alone)."""
    import flax
    from flax import nnx

    from .source import Loaded, SourceRun

    if variables is not None:
        raise ValueError("an nnx module holds its own weights: variables= is for linen modules")
    modules, chains = _nnx_layer_modules(module)
    if not modules:
        raise ValueError("an empty nnx stack has no recurrent layers")
    name = type(module).__name__ if not isinstance(module, (list, tuple)) else "list"
    paths = {id(node): path for path, node in nnx.iter_graph(module)}
    single = type(module) in (nnx.RNN, nnx.Bidirectional)
    layers = [_nnx_layer(f"Flax nnx.{name}" if single else f"Flax nnx.{name} layer {k}", layer, paths,
                         last=k == len(modules) - 1 or not chains) for k, layer in enumerate(modules)]
    _check_variables(f"Flax nnx.{name}", module)
    params = linen.plain(nnx.to_pure_dict(nnx.state(module, nnx.Param)))
    first = layers[0].cells[0]
    expected = {tuple(path) + leaf for facts in layers for cell, path in zip(facts.cells, facts.cell_paths)
                for leaf in cell.leaves}
    linen.check_leaves(f"Flax nnx.{name} Params", params, expected)
    at = lambda path: linen.dig(params, tuple(path), lambda p: f"nnx Params have no {p}")  # noqa: E731
    num_inputs = at(tuple(layers[0].cell_paths[0]) + first.input_kernel).shape[0]
    model = linen.spec_from_layers(f"Flax nnx.{name}", layers, num_inputs, known)
    per_layer = []
    for facts in layers:
        cells = [at(path) for path in facts.cell_paths]
        per_layer.append({"forward_rnn": {"cell": cells[0]}, "backward_rnn": {"cell": cells[1]}}
                         if facts.bidirectional else {"cell": cells[0]})
    converted = from_nnx(model, per_layer)
    dtype = linen.run_dtype(layers, list(linen.iter_leaves(params)))
    runner = nnx.clone(module)
    runner_layers = _nnx_layer_modules(runner)[0]
    returns_carry = layers[-1].returns_carry

    def call(inputs, state):
        import jax.numpy as jnp

        from multirnn.backends.jax_backend import precision

        with precision(dtype):
            calls = [functools.partial(_call_returning_carry, layer) for layer in runner_layers]
            outputs, final = linen.run_layer_calls(model, calls, inputs, state)
            if state is None and chains:  # the module itself as written
                whole = runner(jnp.asarray(inputs))
                outputs = np.asarray(whole[1] if returns_carry else whole)
        return outputs, final

    run = SourceRun(call, f"flax {flax.__version__}", dtype=dtype)
    return Loaded(model, converted, run=run, origin=f"Flax nnx.{name}")


def _call_returning_carry(layer, x, **kwargs):
    return layer(x, return_carry=True, **kwargs)
