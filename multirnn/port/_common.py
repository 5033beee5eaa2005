"""What every converter shares: gate-order tables, fusing per-gate arrays, checks and clear refusals.

Everything here is plain NumPy. A "unit" is one direction of one layer (see RecurrentSpec.units()).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from multirnn import validate
from multirnn.recurrence import KERNEL_GATES, unit_params
from multirnn.spec import RecurrentSpec

# The canonical gate letters in each framework's fused order, written once. torch/Gluon call the GRU
# candidate "n" and the LSTM cell input "g"; both are canonical "h" and "c".
GATE_ORDER = {
    "torch": KERNEL_GATES,  # cuDNN's order
    "gluon": KERNEL_GATES,
    "keras": {"rnn": "h", "gru": "zrh", "lstm": "ifco"},
    "onnx": {"rnn": "h", "gru": "zrh", "lstm": "iofc"},
}
from multirnn.spec import GATES_PER_CELL  # noqa: E402,F401  (written once, with the cells)
CELL_OF_GATES = {1: "rnn", 3: "gru", 4: "lstm"}


class UnrepresentableError(ValueError):
    """The weights (or a feature of the model) cannot be written in the target format exactly."""


class SpecFieldError(ValueError):
    """A spec field the caller gave contradicts the source, or one the source cannot say is missing:
    the caller's arguments are at fault (the CLI's usage error, exit status 2)."""


def infer_fused_sizes(w_ih_name: str, w_ih, w_hh_name: str, w_hh, hidden: int | None = None) -> dict:
    """cell, num_hiddens, num_inputs from a first layer's fused (G·H, in) and (G·H, H) weights, the
    torch / Gluon / ONNX-style stacking. ``hidden``: H where the source states it (a projected
    LSTM's recurrent weights are (4·H, P))."""
    hidden = w_hh.shape[1] if hidden is None else hidden
    gates, rem = divmod(w_hh.shape[0], hidden)
    if rem or gates not in CELL_OF_GATES:
        raise ValueError(f"{w_hh_name} has shape {tuple(w_hh.shape)}: not G·H x H with G in 1, 3, 4")
    return {"cell": CELL_OF_GATES[gates], "num_hiddens": hidden, "num_inputs": w_ih.shape[1]}


def as_numpy(value) -> np.ndarray:
    """A framework tensor (torch, mxnet, jax, tf) or array-like as a NumPy array, without importing
    any framework."""
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu().numpy()
    elif hasattr(value, "asnumpy"):  # mxnet
        value = value.asnumpy()
    return np.asarray(value)


def check_export(model, params) -> np.dtype:
    validate.check_model(model)
    return validate.check_params(model, params)


@dataclasses.dataclass
class Fused:
    """One unit's weights with gates concatenated in a framework's order, canonical orientation:
    wx (in, G·H), wh (H, G·H), bx and bh (G·H,) or None when the model has no bias."""

    wx: np.ndarray
    wh: np.ndarray
    bx: np.ndarray | None
    bh: np.ndarray | None


def fuse(model: RecurrentSpec, params: dict, prefix: str, framework: str) -> Fused:
    """One unit's canonical params fused in ``framework``'s gate order. The rnn cell's single bias is
    the input bias; its recurrent bias is zero (so importing the sum gives b_h back exactly)."""
    p = unit_params(params, prefix)
    if model.cell == "rnn":
        bias = p.get("b_h")
        return Fused(p["W_xh"], p["W_hh"], bias, None if bias is None else np.zeros_like(bias))
    order = GATE_ORDER[framework][model.cell]
    cat = lambda kind: np.concatenate([p[f"{kind}{g}"] for g in order], axis=-1)  # noqa: E731
    return Fused(cat("W_x"), cat("W_h"), cat("b_x") if model.bias else None,
                 cat("b_h") if model.bias else None)


def unfuse(model: RecurrentSpec, fused: Fused, prefix: str, framework: str) -> dict:
    """Inverse of fuse: canonical prefixed params. The rnn cell's two biases are summed into b_h
    (one float rounding; exact when the recurrent bias is zero, as fuse writes it)."""
    if model.cell == "rnn":
        out = {"W_xh": fused.wx, "W_hh": fused.wh}
        if model.bias:
            out["b_h"] = fused.bx + fused.bh
        return {prefix + k: np.ascontiguousarray(v) for k, v in out.items()}
    order = GATE_ORDER[framework][model.cell]
    out = {}
    parts = {kind: np.split(value, len(order), axis=-1)
             for kind, value in (("W_x", fused.wx), ("W_h", fused.wh), ("b_x", fused.bx),
                                 ("b_h", fused.bh)) if value is not None}
    for kind in ("W_x", "W_h", "b_x", "b_h"):
        if kind in parts:
            for gate, value in zip(order, parts[kind]):
                out[f"{kind}{gate}"] = value
    return {prefix + k: np.ascontiguousarray(out[k]) for k in model.unit_shapes(1) if k in out}


def finish_import(model: RecurrentSpec, params: dict) -> dict:
    """Canonical key order, one dtype, validated like any user params."""
    shapes = model.param_shapes()
    ordered = {name: params[name] for name in shapes if name in params}
    validate.check_params(model, ordered)
    return ordered


def expect_shape(where: str, value: np.ndarray, shape: tuple) -> np.ndarray:
    if value.shape != tuple(shape):
        raise ValueError(f"{where} must have shape {tuple(shape)} for this model, got {value.shape}")
    return value


def require_bias_free(model: RecurrentSpec, name: str, value: np.ndarray) -> None:
    """A format that always has biases is imported into a bias=False model only if they are zero."""
    if not model.bias and np.any(value != 0):
        raise UnrepresentableError(f"{name} is nonzero but the model has bias=False; "
                                   f"import with a bias=True spec")


def require_reset_after(model: RecurrentSpec, framework: str) -> None:
    if model.cell == "gru" and not model.reset_after:
        raise UnrepresentableError(
            f"{framework} GRU layers reset after the recurrent matmul (reset_after=True); a reset-before GRU "
            f"(reset_after=False, d2l's GRUScratch) cannot be expressed there. Keras GRU(reset_after=False) "
            f"and ONNX GRU (linear_before_reset=0) can hold it exactly.")


def require_standard_cell(model: RecurrentSpec, framework: str) -> None:
    """torch and Gluon layers have sigmoid gates and a tanh GRU/LSTM cell, and no option to change them."""
    if model.cell == "rnn":
        return
    for name, default in (("gate_activation", "sigmoid"), ("nonlinearity", "tanh")):
        if getattr(model, name) != default:
            raise UnrepresentableError(
                f"{framework} GRU/LSTM layers have sigmoid gates and a tanh cell; {name}="
                f"{getattr(model, name)!r} cannot be expressed there (representable: {name}={default!r}). "
                f"Keras, Flax and ONNX can hold it.")


def require_standard_directions(model: RecurrentSpec, framework: str) -> None:
    """torch and Gluon layers run forward or both ways, concatenating the two directions' outputs."""
    if model.reverse:
        raise UnrepresentableError(f"{framework} has no reverse-only recurrent layer: reverse=True cannot be "
                                   "expressed there (ONNX direction='reverse', Keras go_backwards and "
                                   "Flax reverse=True can hold it)")
    if model.merge_mode != "concat":
        raise UnrepresentableError(f"{framework} bidirectional layers concatenate the two directions: "
                                   f"merge_mode={model.merge_mode!r} cannot be expressed there (Keras can)")


def require_no_learned_state(model: RecurrentSpec, framework: str) -> None:
    """A framework layer without an initial-state parameter cannot hold h_0/c_0."""
    if model.learn_initial_state:
        raise UnrepresentableError(
            f"learn_initial_state=True: a {framework} recurrent layer has no learned initial state, so "
            f"h_0{'/c_0' if model.cell == 'lstm' else ''} cannot be written there (ONNX can: to_onnx writes "
            f"an Expand of a stored initial_h; or pass the state explicitly)")


def require_no_projection(model: RecurrentSpec, framework: str) -> None:
    """A framework LSTM whose h is its cell output (no projection matrix) cannot hold W_proj."""
    if model.proj_size:
        raise UnrepresentableError(
            f"proj_size={model.proj_size}: the {framework} LSTM has no projection of its hidden state "
            f"(h_t = (o * tanh(c_t)) W_proj), so W_proj cannot be written there; representable: "
            f"proj_size=0 (torch nn.LSTM(proj_size=) and Gluon rnn.LSTM(projection_size=) hold it)")


# ---- the spec as JSON, for file metadata: multirnn.checkpoint's one serialized form ----

def spec_to_json(model: RecurrentSpec) -> str:
    from multirnn.checkpoint import spec_to_dict

    return json.dumps(spec_to_dict(model), sort_keys=True)


def spec_from_json(text: str) -> RecurrentSpec:
    """Inverse of spec_to_json; also reads multirnn 0.1's flat ``{field: value}`` form."""
    from multirnn.checkpoint import spec_from_dict

    try:
        stored = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"spec metadata is not valid JSON: {exc}") from exc
    if isinstance(stored, dict) and "class" not in stored:  # the 0.1 form: RecurrentSpec's fields
        stored = {"class": "RecurrentSpec", "fields": stored}
    return spec_from_dict(stored)


def make_spec(inferred: dict, overrides: dict | None, source: str) -> RecurrentSpec:
    """A spec from fields inferred from weights, completed or checked by the caller's ``overrides``
    (None values are ignored). A given field that disagrees with the weights is an error."""
    fields = dict(inferred)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name in inferred and inferred[name] != value:
            raise SpecFieldError(f"{name}={value!r} disagrees with the {source} weights, which have "
                             f"{name}={inferred[name]!r}")
        fields[name] = value
    if fields.get("cell") == "rnn" and "nonlinearity" not in fields:
        raise SpecFieldError(f"the {source} weights do not say the rnn nonlinearity: pass nonlinearity "
                         f"'tanh' or 'relu' (CLI: --nonlinearity)")
    return RecurrentSpec(**fields)


def spec_from_known(known: dict, source: str):
    try:
        return make_spec({}, known, source)
    except TypeError as exc:  # a required field is missing
        raise SpecFieldError(f"{source} files do not record the model: give cell, num_inputs, num_hiddens "
                         f"(CLI: --cell --inputs --hidden, and --layers, --bidirectional, ... as needed); "
                         f"{exc}") from exc
