"""One time step of a whole unidirectional network, built on the recurrence's own step function.

``prepare`` does what does not change from step to step (``recurrence.input_projection`` and
``recurrence.make_step`` per layer: the weight concatenations); ``advance`` moves every layer one step,
as a hand loop of stacked cells does (``h1 = cell1(x_t, h1); h2 = cell2(h1, h2)``). Backend-neutral:
``ops`` is a backend (backends.protocol); imports no framework and no NumPy.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import recurrence
from .spec import RecurrentSpec


class PreparedLayer(NamedTuple):
    weight: Any  # (in, G·H): the input projection of all gates at once
    bias: Any  # (G·H,) with the foldable recurrent biases folded in, or None
    step: Any  # recurrence.make_step's (carry, projected x_t) -> (carry, h_t)


def refuse_unsteppable(model: RecurrentSpec) -> None:
    """A step needs the past only: a bidirectional model's backward half needs the future."""
    if model.bidirectional:
        raise ValueError(f"step/native_cell need a unidirectional model: {model} is bidirectional, and "
                         "its backward direction reads the sequence from its end; run the whole "
                         "sequence with multirnn.forward instead")
    if getattr(model, "reverse", False):  # a spec field of issue 15: one direction, last step first
        raise ValueError(f"step/native_cell need a model that runs forward in time: {model} has "
                         "reverse=True, whose first step reads the sequence's last input; run the whole "
                         "sequence with multirnn.forward instead")


def prepare(ops, model: RecurrentSpec, params: dict) -> list[PreparedLayer]:
    """Per layer, the projection weights and the step function of ``recurrence.make_step``."""
    layers = []
    for _, _, prefix, _ in model.units():
        unit = recurrence.unit_params(params, prefix)
        weight, bias = recurrence.input_projection(ops, model, unit)
        layers.append(PreparedLayer(weight, bias, recurrence.make_step(ops, model, unit)))
    return layers


def advance(ops, layers: list[PreparedLayer], x_t, flat_state: list, masks=None) -> tuple[Any, list]:
    """Every layer one step: x_t (batch, in) -> (top layer's h_t, new flat state). ``masks[k - 1]``
    (optional, (batch, units)) scales layer k's input, as recurrence.run scales it at every step."""
    layer_in, finals = x_t, []
    for k, (layer, carry) in enumerate(zip(layers, flat_state)):
        if k > 0 and masks is not None:
            layer_in = layer_in * masks[k - 1]
        projected = ops.matmul(layer_in, layer.weight)
        if layer.bias is not None:
            projected = projected + layer.bias
        carry, layer_in = layer.step(tuple(carry), projected)
        finals.append(carry)
    return layer_in, finals


def step_network(ops, model: RecurrentSpec, params: dict, x_t, flat_state: list,
                 masks=None) -> tuple[Any, list]:
    """``prepare`` then ``advance``: the function a backend compiles once per spec."""
    return advance(ops, prepare(ops, model, params), x_t, flat_state, masks)
