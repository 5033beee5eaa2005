"""Flax linen ``SimpleCell``/``GRUCell``/``LSTMCell`` in ``nn.RNN`` / ``nn.Bidirectional`` <-> canonical.

The Flax form is the ``params`` collection of ``flax_module(model)``: one layer is ``{'cell': cell}``
(``nn.RNN``) or ``{'forward_rnn': {'cell': ...}, 'backward_rnn': {'cell': ...}}`` (``nn.Bidirectional``);
several layers are ``{'layers_0': layer, 'layers_1': ...}`` (``nn.Sequential``). Cell params:

* SimpleCell: ``i`` {kernel, bias}, ``h`` {kernel}. Its bias is ``b_h``: exact both ways.
* GRUCell (resets after the matmul, like torch; reset_after=False is refused): ``ir``, ``iz``, ``in``
  {kernel, bias}, ``hr``, ``hz`` {kernel}, ``hn`` {kernel, bias}. ``b_hh`` -> ``hn`` bias exactly; Flax
  has one bias for the r and z gates, so export writes ``b_xr + b_hr`` and ``b_xz + b_hz`` (one float
  rounding; exact when either is zero) and import puts them in ``b_xr``/``b_xz`` with zero ``b_hr``/``b_hz``.
* LSTMCell: ``ii``, ``if``, ``ig``, ``io`` {kernel}, ``hi``, ``hf``, ``hg``, ``ho`` {kernel, bias}: one bias
  per gate, so export writes ``b_x + b_h`` and import puts it in ``b_h`` with zero ``b_x``.

Flax cells always have biases: a bias=False model exports zeros and imports only zero biases.
Flax -> canonical -> Flax is exact; canonical -> Flax -> canonical is exact when the folded bias pairs
have a zero member (as every import produces).

Conversion is NumPy only; ``flax_module``/``run_flax`` import flax.
"""
from __future__ import annotations

import functools

import numpy as np

from ._common import (as_numpy, check_export, expect_shape, finish_import, make_spec, require_bias_free,
                      require_reset_after)
from multirnn.recurrence import unit_params

LSTM_NAMES = {"i": "i", "f": "f", "o": "o", "c": "g"}  # canonical gate -> Flax letter


def _layer_path(model, layer: int, direction: str) -> tuple[str, ...]:
    path = (f"layers_{layer}",) if model.num_layers > 1 else ()
    if model.bidirectional:
        path += ("forward_rnn" if direction == "fwd" else "backward_rnn",)
    return path + ("cell",)


def _cell_to_flax(model, p: dict, dtype) -> dict:
    def bias(*names):  # the sum of the named canonical biases; zeros for a bias=False model
        if not model.bias:
            return np.zeros(model.num_hiddens, dtype)
        return p[names[0]].copy() if len(names) == 1 else p[names[0]] + p[names[1]]

    if model.cell == "rnn":
        return {"i": {"kernel": p["W_xh"].copy(), "bias": bias("b_h")}, "h": {"kernel": p["W_hh"].copy()}}
    if model.cell == "gru":
        return {"ir": {"kernel": p["W_xr"].copy(), "bias": bias("b_xr", "b_hr")},
                "iz": {"kernel": p["W_xz"].copy(), "bias": bias("b_xz", "b_hz")},
                "in": {"kernel": p["W_xh"].copy(), "bias": bias("b_xh")},
                "hr": {"kernel": p["W_hr"].copy()}, "hz": {"kernel": p["W_hz"].copy()},
                "hn": {"kernel": p["W_hh"].copy(), "bias": bias("b_hh")}}
    cell = {}
    for gate, letter in LSTM_NAMES.items():
        cell["i" + letter] = {"kernel": p[f"W_x{gate}"].copy()}
        cell["h" + letter] = {"kernel": p[f"W_h{gate}"].copy(), "bias": bias(f"b_x{gate}", f"b_h{gate}")}
    return cell


def to_flax(model, params: dict) -> dict:
    """The ``params`` collection (nested dict of NumPy arrays) of ``flax_module(model)``."""
    dtype = check_export(model, params)
    require_reset_after(model, "Flax linen")
    tree: dict = {}
    for layer, direction, prefix, _ in model.units():
        node = tree
        *parents, leaf = _layer_path(model, layer, direction)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = _cell_to_flax(model, unit_params(params, prefix), dtype)
    return tree


def dig(tree, path: tuple, missing):
    """``tree[path[0]][path[1]]...`` of nested dicts; a missing key raises ValueError(missing("a/b"))."""
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise ValueError(missing("/".join(path)))
        node = node[key]
    return node


def _get(tree: dict, path: tuple, what: str):
    return dig(tree, path, lambda at: f"Flax params have no {at} ({what}); top-level keys: "
               f"{sorted(tree) if isinstance(tree, dict) else type(tree).__name__}")


def _cell_from_flax(model, cell: dict, where: str, width: int) -> dict:
    h = model.num_hiddens
    names = {"rnn": {"i": True, "h": False},
             "gru": {"ir": True, "iz": True, "in": True, "hr": False, "hz": False, "hn": True},
             "lstm": {**{"i" + g: False for g in "ifgo"}, **{"h" + g: True for g in "ifgo"}}}[model.cell]
    if set(cell) != set(names):
        raise ValueError(f"{where}: expected Flax {model.cell} cell params {sorted(names)}, "
                         f"got {sorted(cell)}")
    arrays = {}
    for name, has_bias in names.items():
        want = {"kernel"} | ({"bias"} if has_bias else set())
        if set(cell[name]) != want:
            raise ValueError(f"{where}/{name}: expected {sorted(want)}, got {sorted(cell[name])}")
        fan_in = width if name.startswith("i") else h
        arrays[name] = expect_shape(f"{where}/{name}/kernel", as_numpy(cell[name]["kernel"]), (fan_in, h))
        if has_bias:
            arrays[name + ".b"] = expect_shape(f"{where}/{name}/bias", as_numpy(cell[name]["bias"]), (h,))
            require_bias_free(model, f"{where}/{name}/bias", arrays[name + ".b"])
    zero = np.zeros_like(arrays[next(iter(names))][0])
    if model.cell == "rnn":
        p = {"W_xh": arrays["i"], "W_hh": arrays["h"], "b_h": arrays["i.b"]}
    elif model.cell == "gru":
        p = {"W_xr": arrays["ir"], "W_xz": arrays["iz"], "W_xh": arrays["in"], "W_hr": arrays["hr"],
             "W_hz": arrays["hz"], "W_hh": arrays["hn"], "b_xr": arrays["ir.b"], "b_xz": arrays["iz.b"],
             "b_xh": arrays["in.b"], "b_hh": arrays["hn.b"], "b_hr": zero, "b_hz": zero}
    else:
        p = {}
        for gate, letter in LSTM_NAMES.items():
            p.update({f"W_x{gate}": arrays["i" + letter], f"W_h{gate}": arrays["h" + letter],
                      f"b_x{gate}": zero, f"b_h{gate}": arrays["h" + letter + ".b"]})
    if not model.bias:
        p = {k: v for k, v in p.items() if not k.startswith("b_")}
    return p


def from_flax(model, tree: dict) -> dict[str, np.ndarray]:
    """Canonical params from a Flax ``params`` collection (a ``{'params': ...}`` wrapper is accepted)."""
    require_reset_after(model, "Flax linen")
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    params = {}
    for layer, direction, prefix, width in model.units():
        path = _layer_path(model, layer, direction)
        cell = _get(tree, path, f"layer {layer} {direction}")
        p = _cell_from_flax(model, cell, "/".join(path), width)
        params.update({prefix + k: np.ascontiguousarray(v) for k, v in p.items()})
    return finish_import(model, params)


def infer_flax_spec(tree: dict, **known):
    """The spec from a Flax params tree's structure and shapes; ``known`` completes it."""
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    layered = isinstance(tree, dict) and "layers_0" in tree
    first = tree["layers_0"] if layered else tree
    bidirectional = isinstance(first, dict) and "forward_rnn" in first
    cell = _get(first, (("forward_rnn",) if bidirectional else ()) + ("cell",), "layer 0")
    kinds = {"i": "rnn", "ir": "gru", "ii": "lstm"}
    kind = next((kinds[k] for k in kinds if k in cell), None)
    if kind is None:
        raise ValueError(f"not a Flax SimpleCell/GRUCell/LSTMCell: params {sorted(cell)}")
    kernel = as_numpy(cell[{"rnn": "i", "gru": "ir", "lstm": "ii"}[kind]]["kernel"])
    inferred = {"cell": kind, "num_inputs": kernel.shape[0], "num_hiddens": kernel.shape[1],
                "num_layers": sum(1 for k in tree if k.startswith("layers_")) if layered else 1,
                "bidirectional": bidirectional}
    if kind == "gru":
        inferred["reset_after"] = True
    return make_spec(inferred, known, "Flax")


# ---- Flax's own modules (import flax) ----

def _cell_class(model):
    import flax.linen as nn

    return {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[model.cell]


def flax_layers(model, dtype: str = "float32", return_carry: bool = True) -> list:
    """One linen module per layer: ``nn.RNN`` or ``nn.Bidirectional`` of the model's cell."""
    import flax.linen as nn
    import jax.numpy as jnp

    cls = _cell_class(model)
    kwargs = {"features": model.num_hiddens, "param_dtype": getattr(jnp, dtype), "dtype": getattr(jnp, dtype)}
    if model.cell == "rnn":
        kwargs["activation_fn"] = nn.tanh if model.nonlinearity == "tanh" else nn.relu
    time_major = not model.batch_first
    make = lambda: nn.RNN(cls(**kwargs), time_major=time_major, return_carry=return_carry)  # noqa: E731
    return [nn.Bidirectional(make(), make(), time_major=time_major, return_carry=return_carry)
            if model.bidirectional else make() for _ in range(model.num_layers)]


def flax_module(model, dtype: str = "float32"):
    """The whole model as one linen module (outputs only), the layout ``to_flax`` writes."""
    import flax.linen as nn

    layers = flax_layers(model, dtype, return_carry=False)
    return layers[0] if model.num_layers == 1 else nn.Sequential(layers)


def run_flax(model, tree: dict, inputs: np.ndarray, state=None):
    """Run the Flax layers holding ``tree`` (see to_flax) with a multirnn-convention state; returns
    ``(outputs, state)`` in that convention."""
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    calls = [functools.partial(_apply, module, tree[f"layers_{layer}"] if model.num_layers > 1 else tree)
             for layer, module in enumerate(flax_layers(model, inputs.dtype.name))]
    return run_layer_calls(model, calls, inputs, state)


def _apply(module, params, x, **kwargs):
    return module.apply({"params": params}, x, **kwargs)


def run_layer_calls(model, calls, inputs: np.ndarray, state=None):
    """Chain Flax-style layer calls ``call(x, initial_carry=...) -> (carries, x)`` (linen or nnx),
    translating multirnn's state to Flax carries and back. Flax's LSTM carry is (c, h); multirnn's is
    (h, c). float64 runs inside enable_x64, as the jax backend does."""
    from multirnn.backends.jax_backend import precision

    if inputs.dtype == np.float64:
        with precision("float64"):
            return _run_layer_calls(model, calls, inputs, state)
    return _run_layer_calls(model, calls, inputs, state)


def _run_layer_calls(model, calls, inputs, state):
    import jax.numpy as jnp

    from multirnn.state import flatten_state, nest_state

    flat = flatten_state(model, state) if state is not None else None
    to_carry = (lambda u: (jnp.asarray(u[1]), jnp.asarray(u[0]))) if model.cell == "lstm" \
        else (lambda u: jnp.asarray(u[0]))
    from_carry = (lambda c: (np.asarray(c[1]), np.asarray(c[0]))) if model.cell == "lstm" \
        else (lambda c: (np.asarray(c),))
    x, finals, per = jnp.asarray(inputs), [], len(model.directions)
    for layer, call in enumerate(calls):
        kwargs = {}
        if flat is not None:
            units = [to_carry(u) for u in flat[layer * per:(layer + 1) * per]]
            kwargs["initial_carry"] = tuple(units) if model.bidirectional else units[0]
        carries, x = call(x, **kwargs)
        finals += [from_carry(c) for c in (carries if model.bidirectional else (carries,))]
    return np.asarray(x), nest_state(model, finals)


# ---- files (import flax) ----

def read_file(path, **known):
    """A ``Loaded`` from a msgpack-serialized linen params tree (weights only: it cannot run)."""
    from pathlib import Path

    from flax import serialization

    from .source import Loaded

    tree = serialization.msgpack_restore(Path(path).read_bytes())
    model = infer_flax_spec(tree, **known)
    return Loaded(model, from_flax(model, tree), origin=f"Flax msgpack params {str(path)!r}")


def write_file(path, model, params: dict) -> None:
    from pathlib import Path

    from flax import serialization

    Path(path).write_bytes(serialization.msgpack_serialize(to_flax(model, params)))
