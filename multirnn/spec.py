"""Backend-neutral model specs and the one canonical parameter layout.

A spec is a small frozen (hashable) dataclass: it says *what* network to run, never *how*. Every backend
and the NumPy reference read the same spec, so one spec object is one model everywhere.

Canonical parameter layout (a flat ``dict[str, numpy.ndarray]``)
-----------------------------------------------------------------
Names follow d2l. Matrices are ``(fan_in, num_hiddens)`` so a step is ``X @ W`` (not ``W @ X``):

=====  =====================================================================================
cell   names per direction (``in`` = layer input width, ``H`` = num_hiddens)
=====  =====================================================================================
rnn    ``W_xh (in, H)``, ``W_hh (H, H)``, ``b_h (H,)``
gru    for each gate g in z, r, h: ``W_xg (in, H)``, ``W_hg (H, H)``, ``b_xg (H,)``, ``b_hg (H,)``
lstm   for each gate g in i, f, o, c: ``W_xg (in, H)``, ``W_hg (H, H)``, ``b_xg (H,)``, ``b_hg (H,)``
=====  =====================================================================================

An lstm with ``proj_size = P > 0`` (torch's proj_size, Gluon's projection_size) projects its hidden
state: ``h_t = (o ⊙ tanh(c_t)) W_proj`` with ``W_proj (H, P)``, so h and the outputs are P wide per
direction while c stays H wide, and the recurrent matrices read the projected h: ``W_hg (P, H)``.

GRU and LSTM keep separate input and recurrent biases so that every framework's weights (torch has
two biases, a reset-after GRU needs ``b_hh`` inside the reset product) are representable exactly.
With ``bias=False`` no bias entries exist.

Each name gets a prefix: ``l{k}.`` when ``num_layers > 1`` and ``fwd.``/``bwd.`` when bidirectional,
in that order, e.g. ``W_xh`` (RNNScratch), ``bwd.W_hh`` (BiRNNScratch), ``l1.fwd.b_h`` (stacks).
Layer ``k > 0`` of a bidirectional stack takes ``2·H`` inputs ([fwd, bwd] outputs concatenated).

State convention (passed in and returned alike, so a returned state can be fed straight back):
one direction's state is ``H`` (an array ``(batch, H)``) for rnn/gru and the pair ``(H, C)`` for lstm
(h ``(batch, P)`` with a projection);
a layer's state is that, or ``(fwd_state, bwd_state)`` when bidirectional; the model's state is the
layer's state when ``num_layers == 1`` and otherwise a tuple with one entry per layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# Gate letters per cell, in canonical order. The rnn cell has one "gate": the hidden update itself.
CELL_GATES = {"rnn": ("h",), "gru": ("z", "r", "h"), "lstm": ("i", "f", "o", "c")}
GATES_PER_CELL = {cell: len(gates) for cell, gates in CELL_GATES.items()}  # blocks of width H
NONLINEARITIES = ("tanh", "relu")
# Gate functions of gru/lstm. "hard_sigmoid" is clip(x/6 + 1/2, 0, 1) (Keras 3, torch nn.Hardsigmoid,
# jax.nn.hard_sigmoid); "hard_sigmoid_legacy" is clip(0.2·x + 0.5, 0, 1) (Keras 2 / tf.keras, ONNX
# HardSigmoid's default alpha=0.2, beta=0.5). Both have slope 0 at their kinks, as torch's
# hardsigmoid_backward and relu6 define it (tf.keras 2's clip_by_value passed the gradient at the
# bounds: a difference on a set of measure zero).
GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "hard_sigmoid_legacy")
HARD_SIGMOID_SLOPES = {"hard_sigmoid": 1.0 / 6.0, "hard_sigmoid_legacy": 0.2}  # y = clip(slope·x + 1/2)
# How a bidirectional layer joins its two directions' outputs, as Keras' Bidirectional(merge_mode=...).
MERGE_MODES = ("concat", "sum", "mul", "ave")


@dataclass(frozen=True)
class RecurrentSpec:
    """Any recurrent network of the family: cell type, sizes, depth and direction."""

    num_inputs: int
    num_hiddens: int
    cell: str = "rnn"
    num_layers: int = 1
    bidirectional: bool = False
    nonlinearity: str = "tanh"  # rnn: the update; gru: the candidate; lstm: cell input and output
    bias: bool = True
    sigma: float = 0.01  # std of the normal(0, sigma) weight init, as in d2l
    batch_first: bool = False
    reset_after: bool = False  # gru only: reset gate after the recurrent matmul (torch/cuDNN/Keras)
    dropout: float = 0.0  # between stacked layers (not after the last), in training mode only
    gate_activation: str = "sigmoid"  # gru/lstm gates: one of GATE_ACTIVATIONS
    # One direction run from the last step to the first (ONNX direction="reverse", Flax reverse=True,
    # Keras go_backwards=True), in every layer. keep_order: outputs aligned with the inputs (ONNX,
    # Flax keep_order=True) or, when False, in the order computed, last input step first (Keras
    # go_backwards, Flax's default keep_order=False), so the next layer reads them in that order.
    reverse: bool = False
    keep_order: bool = True
    merge_mode: str = "concat"  # bidirectional: one of MERGE_MODES; sum/mul/ave give H features
    # The initial state is part of the model: params h_0 (and c_0 for lstm) of shapes state_widths per unit,
    # broadcast over the batch when no state is passed (torch's learned-h0 pattern, ONNX stored initial_h).
    learn_initial_state: bool = False
    # lstm only: h_t = (o ⊙ tanh(c_t)) W_proj, P = proj_size features (0 = no projection, torch's
    # convention); 0 < P < num_hiddens, as torch requires.
    proj_size: int = 0

    def __post_init__(self):
        for name in ("num_inputs", "num_hiddens", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("bidirectional", "bias", "batch_first", "reset_after", "reverse", "keep_order",
                     "learn_initial_state"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.cell, str) or self.cell not in CELL_GATES:
            raise ValueError(f"cell must be one of {sorted(CELL_GATES)}, got {self.cell!r}")
        if not isinstance(self.nonlinearity, str) or self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {self.nonlinearity!r}")
        if not isinstance(self.gate_activation, str) or self.gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"gate_activation must be one of {GATE_ACTIVATIONS}, "
                             f"got {self.gate_activation!r}")
        if self.gate_activation != "sigmoid" and self.cell == "rnn":
            raise ValueError(f"gate_activation={self.gate_activation!r} applies to cell='gru' or "
                             "'lstm' only (an rnn cell has no gates)")
        if isinstance(self.sigma, bool) or not (isinstance(self.sigma, (int, float))
                                                and math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a non-negative float, got {self.sigma!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a float in [0, 1), got {self.dropout!r}")
        if self.reset_after and self.cell != "gru":
            raise ValueError("reset_after applies to cell='gru' only")
        if self.reverse and self.bidirectional:
            raise ValueError("reverse=True applies to one direction (bidirectional=False); a bidirectional "
                             "layer already runs one direction in reverse")
        if not self.keep_order and not self.reverse:
            raise ValueError("keep_order=False applies to reverse=True only")
        if not isinstance(self.merge_mode, str) or self.merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {self.merge_mode!r}")
        if self.merge_mode != "concat" and not self.bidirectional:
            raise ValueError(f"merge_mode={self.merge_mode!r} applies to bidirectional=True only")
        if isinstance(self.proj_size, bool) or not isinstance(self.proj_size, int) or self.proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative int (0 = no projection), got {self.proj_size!r}")
        if self.proj_size and self.cell != "lstm":
            raise ValueError(f"proj_size={self.proj_size} applies to cell='lstm' only")
        if self.proj_size >= self.num_hiddens:
            raise ValueError(f"proj_size must be smaller than num_hiddens={self.num_hiddens} (as torch "
                             f"requires), got {self.proj_size}")

    @property
    def directions(self) -> tuple[str, ...]:
        return ("fwd", "bwd") if self.bidirectional else ("fwd",)

    @property
    def h_size(self) -> int:
        """Width of one direction's h (and its outputs): proj_size when projected, else num_hiddens."""
        return self.proj_size or self.num_hiddens

    @property
    def output_size(self) -> int:
        """Features of every layer's output: h_size per direction concatenated, h_size when merged
        otherwise."""
        return self.h_size * (len(self.directions) if self.merge_mode == "concat" else 1)

    @property
    def state_arrays(self) -> int:
        """Arrays in one direction's state: H, or (H, C) for lstm."""
        return 2 if self.cell == "lstm" else 1

    @property
    def state_widths(self) -> tuple[int, ...]:
        """Width of each array of one direction's state: (h_size,), or (h_size, num_hiddens) for lstm."""
        return (self.h_size, self.num_hiddens)[:self.state_arrays]

    def units(self):
        """(layer, direction, name prefix, input width) for each recurrent unit, in canonical order."""
        for layer in range(self.num_layers):
            width = self.num_inputs if layer == 0 else self.output_size
            for direction in self.directions:
                prefix = (f"l{layer}." if self.num_layers > 1 else "")
                prefix += (f"{direction}." if self.bidirectional else "")
                yield layer, direction, prefix, width

    @property
    def initial_state_names(self) -> tuple[str, ...]:
        """The unprefixed learned initial-state params of one unit (none unless learn_initial_state)."""
        if not self.learn_initial_state:
            return ()
        return ("h_0", "c_0") if self.cell == "lstm" else ("h_0",)

    def unit_shapes(self, width: int) -> dict[str, tuple[int, ...]]:
        """Unprefixed parameter shapes of one direction of one layer."""
        hidden, recurrent = self.num_hiddens, self.h_size  # the recurrent matrices read h
        shapes: dict[str, tuple[int, ...]] = {}
        if self.cell == "rnn":
            shapes = {"W_xh": (width, hidden), "W_hh": (hidden, hidden)}
            if self.bias:
                shapes["b_h"] = (hidden,)
        else:
            for gate in CELL_GATES[self.cell]:
                shapes[f"W_x{gate}"] = (width, hidden)
                shapes[f"W_h{gate}"] = (recurrent, hidden)
                if self.bias:
                    shapes[f"b_x{gate}"] = (hidden,)
                    shapes[f"b_h{gate}"] = (hidden,)
        if self.proj_size:
            shapes["W_proj"] = (hidden, self.proj_size)
        shapes.update({name: (size,) for name, size in zip(self.initial_state_names, self.state_widths)})
        return shapes

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every canonical parameter name with its shape, in canonical (= seeded draw) order."""
        return {prefix + name: shape
                for _, _, prefix, width in self.units()
                for name, shape in self.unit_shapes(width).items()}


@dataclass(frozen=True)
class RNNScratch(RecurrentSpec):
    """d2l's RNNScratch: H_t = φ(X_t W_xh + H_{t-1} W_hh + b_h), φ = tanh or relu."""

    cell: str = field(default="rnn", init=False)
    bidirectional: bool = field(default=False, init=False)
    reset_after: bool = field(default=False, init=False)


@dataclass(frozen=True)
class BiRNNScratch(RecurrentSpec):
    """d2l's BiRNNScratch: a forward RNN and one over the reversed inputs, outputs concatenated
    per step as [fwd, bwd] (width 2·num_hiddens); state is (H_fwd, H_bwd)."""

    cell: str = field(default="rnn", init=False)
    bidirectional: bool = field(default=True, init=False)
    reset_after: bool = field(default=False, init=False)


@dataclass(frozen=True)
class GRUScratch(RecurrentSpec):
    """GRU (gates z, r and candidate h). ``reset_after=False`` is d2l's GRUScratch (= ONNX
    linear_before_reset=0, Keras reset_after=False): H~ = tanh(X W_xh + b_xh + (R*H) W_hh + b_hh);
    ``reset_after=True`` is torch/cuDNN/MXNet/Flax/Keras-default: H~ = tanh(X W_xh + b_xh + R*(H W_hh + b_hh)).
    H_t = Z*H_{t-1} + (1-Z)*H~."""

    cell: str = field(default="gru", init=False)
    nonlinearity: str = field(default="tanh", init=False)


@dataclass(frozen=True)
class LSTMScratch(RecurrentSpec):
    """LSTM (input, forget, output gates, candidate c; memory cell C). State per direction is (H, C)."""

    cell: str = field(default="lstm", init=False)
    nonlinearity: str = field(default="tanh", init=False)
    reset_after: bool = field(default=False, init=False)
