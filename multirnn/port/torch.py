"""PyTorch ``nn.RNN``/``nn.GRU``/``nn.LSTM`` state_dicts <-> canonical params.

Keys ``weight_ih_l{k}[_reverse]`` (G·H, in), ``weight_hh_l{k}`` (G·H, H), ``bias_ih``/``bias_hh`` (G·H,);
gates r, z, n (GRU) and i, f, g, o (LSTM). torch's GRU resets after the recurrent matmul, so only
``reset_after=True`` GRUs convert. An RNN has two biases in torch and one (``b_h``) here: importing sums
them (one float rounding), exporting writes ``bias_ih = b_h, bias_hh = 0``.

The conversion itself is NumPy only; ``torch_layer`` and ``run_torch_layer`` import torch.
"""
from __future__ import annotations

import re

import numpy as np

from ._common import (Fused, as_numpy, check_export, expect_shape, finish_import, fuse,
                      infer_fused_sizes, make_spec, require_reset_after, unfuse)

_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def _suffix(layer: int, direction: str) -> str:
    return f"_l{layer}" + ("_reverse" if direction == "bwd" else "")


def to_torch(model, params: dict) -> dict[str, np.ndarray]:
    """The state_dict (NumPy arrays) of the torch layer ``torch_layer(model)`` holding ``params``."""
    check_export(model, params)
    require_reset_after(model, "torch")
    state = {}
    for layer, direction, prefix, _ in model.units():
        f = fuse(model, params, prefix, "torch")
        sfx = _suffix(layer, direction)
        state["weight_ih" + sfx] = np.ascontiguousarray(f.wx.T)
        state["weight_hh" + sfx] = np.ascontiguousarray(f.wh.T)
        if model.bias:
            state["bias_ih" + sfx] = f.bx.copy()
            state["bias_hh" + sfx] = f.bh.copy()
    return state


def _strip(state_dict: dict, prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix`` (a submodule of a bigger model), prefix removed."""
    out = {key[len(prefix):]: as_numpy(value) for key, value in state_dict.items()
           if key.startswith(prefix)}
    if not out:
        raise ValueError(f"no state_dict key starts with prefix {prefix!r} (keys: {sorted(state_dict)[:6]})")
    return out


def from_torch(model, state_dict: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Canonical params from a torch RNN/GRU/LSTM state_dict (tensors or arrays). With ``prefix``
    (e.g. ``"rnn."``) only that submodule's entries of a bigger model's state_dict are read."""
    require_reset_after(model, "torch")
    sd = _strip(state_dict, prefix)
    if any(k.startswith("weight_hr") for k in sd):
        raise ValueError("state_dict has weight_hr_l*: an LSTM with proj_size > 0 has no multirnn "
                         "equivalent (its hidden state is projected)")
    expected = set(to_torch_shapes(model))
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        raise ValueError(f"state_dict does not match {model}: missing {missing}, unexpected {extra}")
    for key, shape in to_torch_shapes(model).items():
        expect_shape(f"state_dict[{key!r}]", sd[key], shape)
    params = {}
    for layer, direction, prefix_, _ in model.units():
        sfx = _suffix(layer, direction)
        fused = Fused(sd["weight_ih" + sfx].T, sd["weight_hh" + sfx].T,
                      sd.get("bias_ih" + sfx), sd.get("bias_hh" + sfx))
        params.update(unfuse(model, fused, prefix_, "torch"))
    return finish_import(model, params)


def to_torch_shapes(model) -> dict[str, tuple]:
    gh = {"rnn": 1, "gru": 3, "lstm": 4}[model.cell] * model.num_hiddens
    shapes = {}
    for layer, direction, _, width in model.units():
        sfx = _suffix(layer, direction)
        shapes["weight_ih" + sfx] = (gh, width)
        shapes["weight_hh" + sfx] = (gh, model.num_hiddens)
        if model.bias:
            shapes["bias_ih" + sfx] = (gh,)
            shapes["bias_hh" + sfx] = (gh,)
    return shapes


def infer_torch_spec(state_dict: dict, prefix: str = "", **known):
    """The spec of a torch RNN/GRU/LSTM state_dict from its key names and shapes. ``known`` fields
    (e.g. nonlinearity, which weights cannot show) complete or check the inference."""
    sd = _strip(state_dict, prefix)
    matches = {k: _KEY.match(k) for k in sd}
    bad = sorted(k for k, m in matches.items() if m is None)
    if bad or "weight_ih_l0" not in sd:
        raise ValueError(f"not a torch RNN/GRU/LSTM state_dict (keys {bad or sorted(sd)[:4]})")
    inferred = infer_fused_sizes("weight_ih_l0", sd["weight_ih_l0"], "weight_hh_l0", sd["weight_hh_l0"])
    inferred.update({"num_layers": 1 + max(int(m.group(2)) for m in matches.values()),
                     "bidirectional": any(m.group(3) for m in matches.values()),
                     "bias": "bias_ih_l0" in sd})
    if inferred["cell"] == "gru":
        inferred["reset_after"] = True
    return make_spec(inferred, known, "torch")


# ---- torch's own layers (imports torch) ----

def torch_layer(model, params: dict | None = None, *, state_dict: dict | None = None, dtype="float32"):
    """An ``nn.RNN``/``nn.GRU``/``nn.LSTM`` of ``model`` loaded with canonical ``params`` (their dtype)
    or with a torch ``state_dict`` of NumPy arrays as is."""
    import torch

    if params is not None:
        dtype, state_dict = check_export(model, params), to_torch(model, params)
    dtype = np.dtype(dtype)
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[model.cell]
    kwargs = {"nonlinearity": model.nonlinearity} if model.cell == "rnn" else {}
    layer = cls(model.num_inputs, model.num_hiddens, num_layers=model.num_layers, bias=model.bias,
                batch_first=model.batch_first, bidirectional=model.bidirectional,
                dtype=getattr(torch, dtype.name), **kwargs)
    if state_dict is not None:
        layer.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype)) for k, v in state_dict.items()})
    return layer


def run_torch_layer(model, layer, inputs: np.ndarray, state=None):
    """Run a torch layer on NumPy inputs with a state in the multirnn convention; returns
    ``(outputs, state)`` in that convention (torch's h_n is (L·D, B, H), units in canonical order)."""
    import torch

    from multirnn.state import flatten_state, nest_state

    x = torch.from_numpy(np.ascontiguousarray(inputs))
    hx = None
    if state is not None:
        flat = flatten_state(model, state)
        stacked = [torch.from_numpy(np.stack([unit[k] for unit in flat])) for k in range(len(flat[0]))]
        hx = tuple(stacked) if model.cell == "lstm" else stacked[0]
    with torch.no_grad():
        out, hn = layer(x, hx)
    arrays = [a.numpy() for a in (hn if model.cell == "lstm" else (hn,))]
    return out.numpy(), nest_state(model, [tuple(a[i] for a in arrays) for i in range(arrays[0].shape[0])])


# ---- files (imports torch) ----

def read_file(path, prefix: str = "", **known):
    """A ``Loaded`` from a ``torch.save``d state_dict (optionally a ``{"state_dict": ...}`` checkpoint)."""
    import multirnn.backends

    multirnn.backends.get("torch")
    import torch

    from .source import Loaded

    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a saved state_dict, got {type(sd).__name__}")
    model = infer_torch_spec(sd, prefix=prefix, **known)
    return Loaded(model, from_torch(model, sd, prefix=prefix), origin=f"torch state_dict {str(path)!r}")


def write_file(path, model, params: dict) -> None:
    import multirnn.backends

    state_dict = to_torch(model, params)  # NumPy only: refuses what torch cannot hold before torch loads
    multirnn.backends.get("torch")
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
