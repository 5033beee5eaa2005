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
"""
from __future__ import annotations

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


def _cell_from_nnx(model, cell: dict, where: str) -> dict:
    def get(*path):
        return as_numpy(linen.dig(cell, path, lambda at: f"{where}: nnx {model.cell} cell params "
                                  f"have no {at} (got {sorted(cell)})"))

    if model.cell == "rnn":
        return {"i": {"kernel": get("dense_i", "kernel"), "bias": get("dense_i", "bias")},
                "h": {"kernel": get("dense_h", "kernel")}}
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
    kwargs = {"param_dtype": getattr(jnp, dtype), "dtype": getattr(jnp, dtype)}
    if model.cell == "rnn":
        kwargs["activation_fn"] = nnx.tanh if model.nonlinearity == "tanh" else nnx.relu
    rngs = nnx.Rngs(0)
    modules = []
    for layer in range(model.num_layers):
        width = model.num_inputs if layer == 0 else model.output_size
        make = lambda: nnx.RNN(cls(width, model.num_hiddens, rngs=rngs, **kwargs),  # noqa: E731
                               time_major=not model.batch_first, return_carry=True, rngs=rngs)
        module = nnx.Bidirectional(make(), make(), time_major=not model.batch_first, return_carry=True,
                                   rngs=rngs) if model.bidirectional else make()
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
