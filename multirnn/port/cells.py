"""Cells read one at a time (torch ``nn.GRUCell``, Keras ``GRUCell``, a bare Flax linen cell, a Gluon
``rnn.GRUCell``, ...) and hand-stacked lists of them, as a ``Loaded`` proven by a Python loop of the
framework's own cell calls. Plain NumPy; the per-framework readers (``cells_torch``, ``cells_keras``,
``cells_flax``, ``cells_gluon``) import their framework.

A list ``[cell1, cell2]`` is what the user means by ``h1 = cell1(x_t, h1); h2 = cell2(h1, h2)``: it
converts to a 2-layer spec when every cell computes the same kind of step (cell, sizes, options) and
each cell's input width is the previous cell's hidden size; else it is refused naming the cell and
the field.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from multirnn.spec import RecurrentSpec

from ._common import SpecFieldError, UnrepresentableError
from .source import Loaded, SourceRun


@dataclasses.dataclass(frozen=True)
class CellRead:
    """One cell: its one-layer spec and canonical params, and its own step on NumPy arrays."""

    model: RecurrentSpec  # num_layers 1, unidirectional, time-major
    params: dict
    dtype: str
    step: Callable  # (x_t (B, in), unit state tuple or None) -> unit state tuple, h first
    framework: str  # e.g. "torch 2.14.1"
    origin: str  # e.g. "torch GRUCell"
    notes: tuple = ()


def _stacked_spec(reads: list[CellRead]) -> RecurrentSpec:
    first = reads[0].model
    hidden = first.num_hiddens
    for index, read in enumerate(reads[1:], start=1):
        if read.model.num_inputs != hidden:
            raise UnrepresentableError(
                f"cell {index} ({read.origin}) takes {read.model.num_inputs} inputs but cell {index - 1} "
                f"gives {hidden}: a stack feeds each cell the previous cell's hidden state")
        for field in dataclasses.fields(RecurrentSpec):
            if field.name == "num_inputs":
                continue
            mine, theirs = getattr(read.model, field.name), getattr(first, field.name)
            if mine != theirs:
                raise UnrepresentableError(
                    f"cell {index} ({read.origin}) has {field.name}={mine!r} but cell 0 has {theirs!r}: "
                    f"one spec holds layers of one kind; representable: cells that differ only in input "
                    f"width")
        if read.dtype != reads[0].dtype:
            raise UnrepresentableError(f"cell {index} ({read.origin}) computes in {read.dtype} but cell 0 "
                                       f"in {reads[0].dtype}: one spec has one dtype")
    return dataclasses.replace(first, num_layers=len(reads))


def _check_known(model: RecurrentSpec, known: dict, origin: str) -> None:
    for name, value in known.items():
        if value is not None and getattr(model, name, value) != value:
            raise SpecFieldError(f"{name}={value!r} disagrees with {origin}, which has "
                                 f"{name}={getattr(model, name)!r}")
    unknown = sorted(k for k, v in known.items() if v is not None and not hasattr(model, k))
    if unknown:
        raise ValueError(f"unknown spec fields {unknown}")


def loaded_from_cells(reads: list[CellRead], known: dict) -> Loaded:
    """The ``Loaded`` of one cell or a hand-stacked list, run by the loop the user would write."""
    from multirnn.state import flatten_state, nest_state

    model = _stacked_spec(reads)
    origin = reads[0].origin if len(reads) == 1 else f"a stack of {len(reads)} cells [" + ", ".join(
        r.origin for r in reads) + "]"
    _check_known(model, known, origin)
    params = {}
    for layer, read in enumerate(reads):
        prefix = f"l{layer}." if len(reads) > 1 else ""
        params.update({prefix + name: value for name, value in read.params.items()})

    def call(inputs, state):
        flat = [None] * len(reads) if state is None else list(flatten_state(model, state))
        outputs = []
        for x_t in inputs:  # time-major: for t in range(T), each cell one step, as the user's loop
            for layer, read in enumerate(reads):
                flat[layer] = tuple(np.asarray(a) for a in read.step(np.ascontiguousarray(x_t), flat[layer]))
                x_t = flat[layer][0]
            outputs.append(x_t)
        return np.stack(outputs), nest_state(model, flat)

    notes = tuple(note for read in reads for note in read.notes)
    if len(reads) > 1:
        notes += (f"read as a {len(reads)}-layer stack: cell k takes cell k-1's new hidden state at every "
                  f"step (h1 = cell0(x_t, h1); h2 = cell1(h1, h2); ...)",)
    run = SourceRun(call, reads[0].framework, reads[0].dtype, takes_state=True)
    return Loaded(model, params, run=run, origin=origin, notes=notes)


def as_list(source) -> list:
    return list(source) if isinstance(source, (list, tuple)) else [source]
