"""The one state convention (see multirnn.spec) and its flat form used inside the recurrence.

The flat form is a list with one tuple per (layer, direction) unit in canonical order; each tuple holds
that direction's arrays: (H,) or (H, C) (widths: spec.state_widths).
"""
from __future__ import annotations

from .spec import RecurrentSpec


def flatten_state(model: RecurrentSpec, state) -> list[tuple]:
    """Nested user state -> flat list of per-unit tuples (no validation: see multirnn.validate)."""
    layers = state if model.num_layers > 1 else (state,)
    flat = []
    for layer_state in layers:
        directions = layer_state if model.bidirectional else (layer_state,)
        for direction_state in directions:
            flat.append(tuple(direction_state) if model.cell == "lstm" else (direction_state,))
    return flat


def nest_state(model: RecurrentSpec, flat: list) -> object:
    """Flat list of per-unit tuples -> the nested user convention."""
    units = [tuple(unit) if model.cell == "lstm" else unit[0] for unit in flat]
    per_layer = len(model.directions)
    layers = [tuple(units[i:i + per_layer]) if model.bidirectional else units[i]
              for i in range(0, len(units), per_layer)]
    return tuple(layers) if model.num_layers > 1 else layers[0]


def learned_initial_state(model: RecurrentSpec, params: dict, batch: int) -> list[tuple]:
    """The flat initial state of a learn_initial_state model: each unit's h_0 (c_0) over the batch."""
    import numpy as np

    return [tuple(np.broadcast_to(params[prefix + name], (batch, width)).copy()
                  for name, width in zip(model.initial_state_names, model.state_widths))
            for _, _, prefix, _ in model.units()]


def map_state(model: RecurrentSpec, state, fn):
    """Apply fn to every array of a nested state, keeping the nesting."""
    return nest_state(model, [tuple(fn(a) for a in unit) for unit in flatten_state(model, state)])
