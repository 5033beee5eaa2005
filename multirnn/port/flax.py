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

``read(module, variables=...)`` reads a live linen module (``nn.RNN``, ``nn.Bidirectional``, an
``nn.Sequential`` of those): every attribute that can change the function is represented exactly or
refused by name (``reverse``, custom ``gate_fn``/``activation_fn``, ``residual``, a ``merge_fn`` other
than concatenation, nonzero ``carry_init``, half-precision ``dtype``, scanned weights, mixed stacks),
every array is consumed, and the returned ``Loaded`` runs the module itself so ``port.load`` can prove
the conversion. msgpack params (``read_file``) are weights only and say so in ``Loaded.notes``.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np

from ._common import (UnrepresentableError, as_numpy, check_export, expect_shape, finish_import, make_spec,
                      require_bias_free, require_no_learned_state, require_no_projection,
                      require_reset_after)
from multirnn.recurrence import unit_params

LSTM_NAMES = {"i": "i", "f": "f", "o": "o", "c": "g"}  # canonical gate -> Flax letter
# Each linen cell's Dense submodules, and whether each has a bias.
CELL_PARAMS = {"rnn": {"i": True, "h": False},
               "gru": {"ir": True, "iz": True, "in": True, "hr": False, "hz": False, "hn": True},
               "lstm": {**{"i" + g: False for g in "ifgo"}, **{"h" + g: True for g in "ifgo"}}}


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
    require_flax_directions(model)
    require_no_learned_state(model, "Flax")
    require_no_projection(model, "Flax")
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
            raise ValueError(missing("/".join(map(str, path))))
        node = node[key]
    return node


def _get(tree: dict, path: tuple, what: str):
    return dig(tree, path, lambda at: f"Flax params have no {at} ({what}); top-level keys: "
               f"{sorted(tree) if isinstance(tree, dict) else type(tree).__name__}")


def _cell_from_flax(model, cell: dict, where: str, width: int) -> dict:
    h = model.num_hiddens
    names = CELL_PARAMS[model.cell]
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
    require_no_projection(model, "Flax")
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    check_leaves("Flax params", tree, {path + leaf for path in
                                       (_layer_path(model, layer, direction) for layer, direction, _, _ in
                                        model.units()) for leaf in cell_leaves(model.cell)})
    params = {}
    for layer, direction, prefix, width in model.units():
        path = _layer_path(model, layer, direction)
        cell = _get(tree, path, f"layer {layer} {direction}")
        p = _cell_from_flax(model, cell, "/".join(path), width)
        params.update({prefix + k: np.ascontiguousarray(v) for k, v in p.items()})
    return finish_import(model, params)


def cell_leaves(kind: str) -> list[tuple[str, str]]:
    """The (Dense, array) leaves of a linen cell of ``kind``."""
    return [(name, leaf) for name, has_bias in CELL_PARAMS[kind].items()
            for leaf in (("kernel", "bias") if has_bias else ("kernel",))]


def leaf_paths(tree, prefix: tuple = ()) -> set:
    """Every leaf's key path in a tree of mappings."""
    if not isinstance(tree, Mapping):
        return {prefix}
    return set().union(*(leaf_paths(v, prefix + (k,)) for k, v in tree.items())) if tree else set()


def check_leaves(what: str, tree, expected: set) -> None:
    """Every array is read and every array needed is there: leftovers or missing arrays name them."""
    actual = leaf_paths(tree)
    show = lambda paths: ", ".join("/".join(map(str, p)) for p in sorted(paths, key=str))  # noqa: E731
    if actual - expected:
        raise ValueError(f"{what}: arrays this model does not use (the source holds more than it "
                         f"reads): {show(actual - expected)}")
    if expected - actual:
        raise ValueError(f"{what}: missing arrays {show(expected - actual)}")


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
    kwargs = {"features": model.num_hiddens, "param_dtype": getattr(jnp, dtype), "dtype": getattr(jnp, dtype),
              **cell_functions(model, nn)}
    require_flax_directions(model)
    time_major = not model.batch_first
    make = lambda: nn.RNN(cls(**kwargs), time_major=time_major, return_carry=return_carry)  # noqa: E731
    reversed_rnn = lambda: nn.RNN(cls(**kwargs), time_major=time_major, return_carry=return_carry,  # noqa: E731
                                  reverse=True, keep_order=model.keep_order)
    return [nn.Bidirectional(make(), make(), time_major=time_major, return_carry=return_carry)
            if model.bidirectional else reversed_rnn() if model.reverse else make()
            for _ in range(model.num_layers)]


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


# ---- reading a live linen module: every attribute and array accounted for (import flax) ----
#
# The spec holds one homogeneous stack, forward or bidirectional (concatenated), of flax's default cells.
# Everything a module can say beyond that is refused by name; what has no effect on the computed
# function once the weights are given (initializers, unroll, RNG plumbing) is listed as such.

LINEN_NO_EFFECT = frozenset({"parent", "name", "kernel_init", "recurrent_kernel_init", "bias_init",
                             "unroll", "split_rngs", "variable_carry"})
FLOAT_DTYPES = ("float32", "float64")


def fn_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def refuse(where: str, attribute: str, value, instead: str):
    raise UnrepresentableError(f"{where}: {attribute}={value} cannot be represented: {instead}")


def _default_functions():
    """flax's default activations, as the objects flax (linen and nnx) uses: compared by identity."""
    import jax
    import jax.numpy as jnp

    return {"sigmoid": (jax.nn.sigmoid,), "tanh": (jnp.tanh,), "relu": (jax.nn.relu,),
            "hard_sigmoid": (jax.nn.hard_sigmoid,)}


def is_function(fn, name: str) -> bool:
    return any(fn is f for f in _default_functions()[name])


def check_gates(where: str, gate_fn, activation_fn) -> tuple[str, str]:
    """(gate_activation, nonlinearity) of a GRU/LSTM cell: flax applies gate_fn to every gate and
    activation_fn to the GRU candidate and the LSTM cell input and output, as the spec does.
    jax.nn.hard_sigmoid is relu6(x + 3) / 6: the spec's "hard_sigmoid"."""
    gate = next((name for name in ("sigmoid", "hard_sigmoid") if is_function(gate_fn, name)), None)
    if gate is None:
        refuse(where, "gate_fn", fn_name(gate_fn), "the spec's GRU/LSTM gates are nn.sigmoid (flax's "
               "default) or nn.hard_sigmoid")
    activation = next((name for name in ("tanh", "relu") if is_function(activation_fn, name)), None)
    if activation is None:
        refuse(where, "activation_fn", fn_name(activation_fn), "the spec's GRU candidate / LSTM cell "
               "activation is nn.tanh (flax's default) or nn.relu")
    return gate, activation


def cell_functions(model, module) -> dict:
    """The gate_fn / activation_fn keyword arguments of a flax cell (linen or nnx, ``module``) for
    ``model``; a gate function flax does not have is refused by name."""
    if model.cell == "rnn":
        return {"activation_fn": getattr(module, model.nonlinearity)}
    if model.gate_activation == "hard_sigmoid_legacy":
        raise UnrepresentableError("gate_activation='hard_sigmoid_legacy' (clip(0.2·x + 0.5, 0, 1)) has no "
                                   "flax function; representable: 'sigmoid', 'hard_sigmoid' "
                                   "(nn.hard_sigmoid, slope 1/6)")
    return {"gate_fn": getattr(module, model.gate_activation),
            "activation_fn": getattr(module, model.nonlinearity)}


def simple_nonlinearity(where: str, activation_fn, residual) -> str:
    if residual:
        refuse(where, "residual", residual, "h' = f(W_i x + b + W_h h + h) has a pre-activation residual "
               "the spec's rnn cell does not; representable: residual=False")
    for name in ("tanh", "relu"):
        if is_function(activation_fn, name):
            return name
    refuse(where, "activation_fn", fn_name(activation_fn), "the spec's rnn nonlinearity is tanh or relu "
           "(nn.tanh, nn.relu)")


def check_carry_init(where: str, carry_init) -> None:
    """The carry starts at zeros, the spec's default initial state (None in nnx >= 0.12.8: zeros)."""
    import jax

    if carry_init is not None and carry_init is not jax.nn.initializers.zeros:
        refuse(where, "carry_init", fn_name(carry_init), "the spec starts from a zero state when none is "
               "given; representable: flax's default zeros_init() (pass a nonzero state explicitly)")


def check_dtype(where: str, attribute: str, value) -> str | None:
    """None or a float dtype the spec computes in; half precision computes something else."""
    if value is None:
        return None
    try:
        name = np.dtype(value).name
    except TypeError:
        name = repr(value)
    if name not in FLOAT_DTYPES:
        refuse(where, attribute, name, f"multirnn computes in {' or '.join(FLOAT_DTYPES)}; a {name} "
               "cell rounds every step differently")
    return name


def check_unknown_fields(where: str, module, known: set) -> None:
    """A dataclass field this reader does not know (a newer flax) must still be at its default."""
    for field in dataclasses.fields(module):
        if field.name in known or field.name in LINEN_NO_EFFECT:
            continue
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        value = getattr(module, field.name)
        same = value is default
        if not same:
            try:
                same = bool(value == default)
            except Exception:  # noqa: BLE001 - incomparable values are not the default
                same = False
        if not same:
            refuse(where, field.name, value, f"this reader does not know what {type(module).__name__}."
                   f"{field.name} computes; representable: its default")


@dataclasses.dataclass(frozen=True)
class CellFacts:
    """What one cell says about the spec."""

    cell: str  # rnn | gru | lstm
    features: int
    nonlinearity: str | None  # tanh | relu
    dtype: str | None  # the computation dtype; None: from the inputs and params
    leaves: tuple = ()  # the cell's arrays, paths relative to the cell
    input_kernel: tuple = ()  # the path of its input kernel, (fan_in, H), which says num_inputs
    gate_activation: str = "sigmoid"  # gru/lstm: gate_fn


@dataclasses.dataclass
class LayerFacts:
    """One layer of the stack: its cells (one per direction) and where their weights are."""

    where: str
    bidirectional: bool
    time_major: bool
    returns_carry: bool
    cells: list  # CellFacts per direction
    cell_paths: list  # per direction, the cell's path in the source's weights
    module: object  # the layer, to run it
    path: tuple = ()  # the layer's path in the source's weights
    reverse: bool = False  # a plain nn.RNN(reverse=True): the spec's reverse
    keep_order: bool = True  # and its keep_order (flax's default with reverse=True is False)


def _linen_cell(where: str, cell) -> CellFacts:
    import flax.linen as nn

    kinds = {nn.SimpleCell: "rnn", nn.GRUCell: "gru", nn.LSTMCell: "lstm", nn.OptimizedLSTMCell: "lstm"}
    kind = kinds.get(type(cell))
    if kind is None:
        refuse(where, "cell", type(cell).__name__, "representable cells: nn.SimpleCell, nn.GRUCell, "
               "nn.LSTMCell, nn.OptimizedLSTMCell (MGUCell, ConvLSTMCell and subclasses are not)")
    where = f"{where} {type(cell).__name__}"
    nonlinearity = None
    known = {"features", "activation_fn", "dtype", "param_dtype", "carry_init"}
    if kind == "rnn":
        known |= {"residual", "use_bias"}
        nonlinearity = simple_nonlinearity(where, cell.activation_fn, cell.residual)
        if getattr(cell, "use_bias", True) is not True:
            refuse(where, "use_bias", cell.use_bias, "this reader reads SimpleCell's bias 'i/bias' "
                   "(flax 0.12 always has it)")
    else:
        known.add("gate_fn")
        gate, nonlinearity = check_gates(where, cell.gate_fn, cell.activation_fn)
    check_carry_init(where, cell.carry_init)
    check_dtype(where, "param_dtype", cell.param_dtype)
    check_unknown_fields(where, cell, known)
    return CellFacts(kind, int(cell.features), nonlinearity, check_dtype(where, "dtype", cell.dtype),
                     tuple(cell_leaves(kind)), (next(iter(CELL_PARAMS[kind])), "kernel"),
                     gate if kind != "rnn" else "sigmoid")


def _check_linen_scan(where: str, rnn) -> None:
    """nn.RNN's scan options: the weights must be shared by every step (broadcast, not scanned)."""
    if rnn.variable_axes:
        refuse(where, "variable_axes", dict(rnn.variable_axes), "scanning a collection gives each step "
               "its own weights; representable: variable_axes={} (weights shared by every step)")
    broadcast = rnn.variable_broadcast
    if not (broadcast is True or broadcast == "params" or
            (isinstance(broadcast, (list, tuple)) and "params" in broadcast)):
        refuse(where, "variable_broadcast", broadcast, "the weights must be broadcast to every step; "
               "representable: 'params' (the default)")


def _linen_rnn(where: str, rnn) -> CellFacts:
    """One nn.RNN. Inside nn.Bidirectional, its time_major/return_carry/reverse/keep_order are the
    Bidirectional's to set (it passes them on every call), so they have no effect there."""
    import flax.linen as nn

    if type(rnn) is not nn.RNN:
        refuse(where, "type", type(rnn).__name__, "representable layers: nn.RNN, nn.Bidirectional of two "
               "nn.RNN, nn.Sequential of those")
    _check_linen_scan(where, rnn)
    check_unknown_fields(where, rnn, {"cell", "time_major", "return_carry", "reverse", "keep_order",
                                      "variable_axes", "variable_broadcast"})
    return _linen_cell(where, rnn.cell)


def _linen_layer(where: str, layer, bound, last: bool) -> LayerFacts:
    import flax.linen as nn

    if type(layer) is nn.Bidirectional:
        if layer.merge_fn is not nn.Bidirectional.__dataclass_fields__["merge_fn"].default:
            refuse(where, "merge_fn", fn_name(layer.merge_fn), "the spec concatenates the two directions "
                   "(flax's default); other merges are not representable yet")
        check_unknown_fields(where, layer, {"forward_rnn", "backward_rnn", "merge_fn", "time_major",
                                            "return_carry"})
        cells = [_linen_rnn(f"{where} {name}", getattr(layer, name))
                 for name in ("forward_rnn", "backward_rnn")]
        paths = [bound.forward_rnn.cell.scope.path, bound.backward_rnn.cell.scope.path]
        facts = LayerFacts(where, True, bool(layer.time_major), bool(layer.return_carry), cells, paths,
                           layer, tuple(bound.scope.path))
    else:
        cells = [_linen_rnn(where, layer)]
        facts = LayerFacts(where, False, bool(layer.time_major), bool(layer.return_carry), cells,
                           [bound.cell.scope.path], layer, tuple(bound.scope.path),
                           *direction_fields(layer))
    if facts.returns_carry and not last:
        refuse(where, "return_carry", True, "inside nn.Sequential the next layer would be given "
               "(carry, outputs); representable: return_carry=False on every layer but the last")
    return facts


def direction_fields(rnn) -> tuple[bool, bool]:
    """(reverse, keep_order) of a plain nn.RNN / nnx.RNN: reverse=True runs from the last step to the
    first; keep_order=True puts the outputs back in input order, False keeps them last step first."""
    return bool(rnn.reverse), bool(rnn.keep_order) if rnn.reverse else True


def require_flax_directions(model) -> None:
    """merge_fn is a function multirnn cannot read back: only concatenation is written."""
    if model.merge_mode != "concat":
        raise UnrepresentableError(f"merge_mode={model.merge_mode!r}: Flax's Bidirectional merges with a "
                                   "merge_fn function, which multirnn reads only as flax's default "
                                   "concatenation; representable: merge_mode='concat' (Keras has merge modes)")


def spec_from_layers(source: str, layers: list, num_inputs: int, known: dict):
    """The spec of a stack of audited layers; anything not the same across the stack is refused."""
    first = layers[0]
    for layer in layers:
        for attribute, value, want in (("bidirectional", layer.bidirectional, first.bidirectional),
                                       ("time_major", layer.time_major, first.time_major),
                                       ("reverse", layer.reverse, first.reverse),
                                       ("keep_order", layer.keep_order, first.keep_order)):
            if value != want:
                refuse(layer.where, attribute, value, f"the spec is one homogeneous stack and layer 0 has "
                       f"{attribute}={want}")
        for cell in layer.cells:
            for attribute in ("cell", "features", "nonlinearity", "gate_activation"):
                value, want = getattr(cell, attribute), getattr(first.cells[0], attribute)
                if value != want:
                    refuse(layer.where, attribute, value, f"the spec is one homogeneous stack and layer 0 "
                           f"has {attribute}={want}")
    cell = first.cells[0]
    inferred = {"cell": cell.cell, "num_inputs": int(num_inputs), "num_hiddens": cell.features,
                "num_layers": len(layers), "bidirectional": first.bidirectional,
                "batch_first": not first.time_major, "dropout": 0.0, "reverse": first.reverse,
                "keep_order": first.keep_order}
    if cell.cell == "gru":
        inferred["reset_after"] = True
    inferred["nonlinearity"] = cell.nonlinearity
    if cell.cell != "rnn":
        inferred["gate_activation"] = cell.gate_activation
    return make_spec(inferred, known, source)


def canonical_tree(model, layers: list, cell_tree) -> dict:
    """The source's cell weights at the paths ``to_flax`` writes (a shared cell is read twice)."""
    tree: dict = {}
    for layer, direction, _, _ in model.units():
        facts = layers[layer]
        node = tree
        *parents, leaf = _layer_path(model, layer, direction)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = cell_tree(facts.cell_paths[model.directions.index(direction)])
    return tree


def run_dtype(layers: list, leaves: list) -> str:
    """float64 where every weight is float64 and no cell computes in float32; else float32."""
    dtypes = {np.dtype(getattr(a, "dtype", np.float32)).name for a in leaves}
    computes = {cell.dtype for layer in layers for cell in layer.cells}
    return "float64" if dtypes == {"float64"} and computes <= {None, "float64"} else "float32"


def plain(tree):
    """Nested mappings (FrozenDict, State) as dicts of NumPy copies, so later edits cannot change them."""
    if isinstance(tree, Mapping):
        return {k: plain(v) for k, v in tree.items()}
    return np.array(as_numpy(tree))


def _linen_variables(module, variables) -> dict:
    if variables is None:
        if getattr(module, "scope", None) is None:
            raise ValueError(f"a linen {type(module).__name__} holds no weights: pass variables= "
                             "(the dict module.init returns, or its 'params')")
        variables = module.variables
    variables = plain(variables)
    if "params" not in variables:
        variables = {"params": variables}
    others = sorted(set(variables) - {"params"})
    if others:
        raise ValueError(f"variables hold collections {others} besides 'params' that no recurrent cell "
                         "reads (the source holds more than it reads)")
    return variables


def _linen_layer_modules(module) -> tuple[list, bool]:
    """The stack's layers and whether they sit in an nn.Sequential."""
    import flax.linen as nn

    if type(module) is nn.Sequential:
        if not module.layers:
            raise ValueError("an empty nn.Sequential has no recurrent layers")
        check_unknown_fields("Flax nn.Sequential", module, {"layers"})
        return list(module.layers), True
    if type(module) in (nn.RNN, nn.Bidirectional):
        return [module], False
    raise TypeError(f"cannot read a linen {type(module).__module__}.{type(module).__qualname__}: give an "
                    "nn.RNN, an nn.Bidirectional of two nn.RNN, or an nn.Sequential of those")


def read(module, *, variables=None, **known):
    """A ``Loaded`` from a live linen ``nn.RNN`` / ``nn.Bidirectional`` / ``nn.Sequential`` of those and
    its ``variables`` ({'params': ...} or the params tree; a bound module's own when omitted).

    Every attribute that can change the function is read and represented exactly or refused
    (UnrepresentableError naming it); every array is consumed. The result runs the module itself."""
    import flax

    from .source import Loaded, SourceRun

    variables = _linen_variables(module, variables)
    modules, in_sequential = _linen_layer_modules(module)
    bound = module.bind(variables)
    bound_layers = list(bound.layers) if in_sequential else [bound]
    name = type(module).__name__
    layers = [_linen_layer(f"Flax nn.{name} layer {k}" if in_sequential else f"Flax nn.{name}", layer,
                           bound_layers[k], last=k == len(modules) - 1) for k, layer in enumerate(modules)]
    params = variables["params"]
    first = layers[0].cells[0]
    expected = {tuple(path) + leaf for facts in layers for cell, path in zip(facts.cells, facts.cell_paths)
                for leaf in cell.leaves}
    check_leaves(f"Flax nn.{name} params", params, expected)
    at = lambda path: dig(params, tuple(path), lambda p: f"Flax params have no {p}")  # noqa: E731
    num_inputs = at(tuple(layers[0].cell_paths[0]) + first.input_kernel).shape[0]
    model = spec_from_layers(f"Flax nn.{name}", layers, num_inputs, known)
    converted = from_flax(model, canonical_tree(model, layers, at))
    dtype = run_dtype(layers, list(iter_leaves(params)))
    returns_carry = layers[-1].returns_carry
    subtrees = [at(facts.path) for facts in layers]

    def call(inputs, state):
        from multirnn.backends.jax_backend import precision

        import jax.numpy as jnp

        with precision(dtype):
            calls = [functools.partial(_apply_returning_carry, facts.module, sub)
                     for facts, sub in zip(layers, subtrees)]
            outputs, final = _run_layer_calls(model, calls, inputs, state)
            if state is None:  # the module itself as written: its chaining, layout and return_carry
                whole = module.apply(variables, jnp.asarray(inputs))
                outputs = np.asarray(whole[1] if returns_carry else whole)
        return outputs, final

    run = SourceRun(call, f"flax {flax.__version__}", dtype=dtype)
    return Loaded(model, converted, run=run, origin=f"Flax linen nn.{name}")


def iter_leaves(tree):
    if isinstance(tree, Mapping):
        for value in tree.values():
            yield from iter_leaves(value)
    else:
        yield tree


def _apply_returning_carry(module, params, x, **kwargs):
    return module.apply({"params": params}, x, return_carry=True, **kwargs)


# ---- files (import flax) ----

def read_file(path, **known):
    """A ``Loaded`` from a msgpack-serialized linen params tree (weights only: it cannot run)."""
    from pathlib import Path

    from flax import serialization

    from .source import Loaded

    tree = serialization.msgpack_restore(Path(path).read_bytes())
    model = infer_flax_spec(tree, **known)
    return Loaded(model, from_flax(model, tree), origin=f"Flax msgpack params {str(path)!r}",
                  notes=(MSGPACK_ASSUMPTION,))


# What a weights-only params tree cannot say, and so is assumed on reading one.
MSGPACK_ASSUMPTION = (
    "Flax msgpack params hold weights only, not the module: read assuming flax's default cells "
    "(sigmoid gates, tanh activations, SimpleCell without residual), forward time order "
    "(nn.RNN reverse=False) and concatenated nn.Bidirectional directions; a module with other "
    "gate_fn/activation_fn/residual/reverse/merge_fn computes something else -- read it live with "
    "multirnn.port.load(module, variables=...)")


def write_file(path, model, params: dict) -> None:
    from pathlib import Path

    from flax import serialization

    Path(path).write_bytes(serialization.msgpack_serialize(to_flax(model, params)))
