"""The recurrence, written once against a small array protocol (``Ops``) that each backend provides.

Backends never re-implement a cell: they supply ``matmul``/``tanh``/``scan``/... and this module builds
every network of the spec from them. The input projection X·W of a whole sequence is hoisted out of the
time loop into one big matmul (unless a backend opts out, see Ops.hoist_input_projection); the loop
body only does the recurrent matmul and the gate arithmetic.

Variable-length batches (``Padding``, like torch packed sequences / ONNX sequence_lens): sequence b is
valid for its first ``lengths[b]`` steps. A 0/1 step mask m (and 1-m) travels with the projected
inputs through ``scan`` (so ``scan`` keeps its one-array contract); a padded step keeps the state
(``h = m·h_new + (1-m)·h_old``, exact for m in {0, 1}), outputs are zeroed after the scan in one
multiply, and the backward direction reverses each sequence within its own length
(``Ops.reverse_padded``). With no padding, none of this runs.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Sequence

from .spec import CELL_GATES, RecurrentSpec

Array = Any


class Ops(Protocol):
    """What the recurrence needs from a framework. ``+``, ``-`` and ``*`` come from operator overloads."""

    def matmul(self, a: Array, b: Array) -> Array: ...  # contract a's last axis with b's first
    def tanh(self, x: Array) -> Array: ...
    def relu(self, x: Array) -> Array: ...
    def sigmoid(self, x: Array) -> Array: ...
    def concat(self, xs: Sequence[Array], axis: int) -> Array: ...
    def split(self, x: Array, n: int) -> list: ...  # n equal parts along the last axis
    def scan(self, step: Callable, carry: tuple, xs: Array,
             reverse: bool = False) -> tuple[tuple, Array]: ...
    # scan: carry, y = step(carry, xs[t]) for t in order (last to first when reverse); returns
    # (final carry, stacked ys) with ys[t] computed from xs[t], as jax.lax.scan. reverse runs the
    # backward direction without flipping the sequence and the outputs (two copies each).

    # Optional attribute, default True: compute X·W for the whole sequence before the loop. False
    # projects each step inside the loop instead, for compilers (XLA on CPU) where differentiating
    # the loop over a (T, B, G·H) input costs more than the per-step matmuls it saves.
    hoist_input_projection: bool
    # Optional pair: fused_layer(model, unit params (fwd[, bwd]), xs, unit states) -> (ys, unit final
    # states) runs one whole layer in the framework's fused kernel. run uses it where
    # kernel_computes(model), there is no padding and fused_layer_accepts(model, xs) (the backend's
    # own switch and exceptions).
    def fused_layer_accepts(self, model: RecurrentSpec, xs: Array) -> bool: ...
    def reverse_padded(self, x: Array, lengths: Array) -> Array: ...
    # reverse_padded: y[t, b] = x[lengths[b] - 1 - t, b] for t < lengths[b], else x[t, b]


class Padding(NamedTuple):
    """Per-sequence lengths of a padded time-major batch, as framework arrays.

    lengths: int (batch,); mask: (num_steps, batch, 2·num_hiddens) in the compute dtype, the blocks
    [m, 1 - m] with m = 1 where t < lengths[b] and 0 elsewhere. H-wide blocks, so they concatenate
    with the projected gates and split off again with the equal-parts ``split``; 1 - m is computed
    once here, not once per step.
    """

    lengths: Array
    mask: Array


def unit_params(params: dict, prefix: str) -> dict:
    """The unprefixed parameters of one (layer, direction) unit."""
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)
            and "." not in name[len(prefix):]}


def input_projection(ops: Ops, model: RecurrentSpec, p: dict) -> tuple[Array, Array | None]:
    """Weights and bias of the hoisted X·W for all gates at once, gates concatenated in canonical order.

    A recurrent bias that is only ever added (all but a reset-after GRU's candidate) is folded into the
    hoisted bias, so the time loop adds one bias less.
    """
    gates = CELL_GATES[model.cell]
    if model.cell == "rnn":
        return p["W_xh"], p.get("b_h")
    weight = ops.concat([p[f"W_x{g}"] for g in gates], axis=1)
    if not model.bias:
        return weight, None
    biases = [p[f"b_x{g}"] if (model.cell == "gru" and model.reset_after and g == "h")
              else p[f"b_x{g}"] + p[f"b_h{g}"] for g in gates]
    return weight, ops.concat(biases, axis=0)


def make_step(ops: Ops, model: RecurrentSpec, p: dict) -> Callable:
    """The per-step function ``(carry, projected x_t) -> (carry, h_t)`` of one unit."""
    gates = CELL_GATES[model.cell]
    if model.cell == "rnn":
        act = ops.tanh if model.nonlinearity == "tanh" else ops.relu
        w_hh = p["W_hh"]

        def rnn_step(carry, xp):
            h = act(xp + ops.matmul(carry[0], w_hh))
            return (h,), h
        return rnn_step

    w_h = ops.concat([p[f"W_h{g}"] for g in gates], axis=1)
    if model.cell == "lstm":
        def lstm_step(carry, xp):
            h, c = carry
            i, f, o, c_tilde = ops.split(xp + ops.matmul(h, w_h), 4)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(c_tilde)
            h = ops.sigmoid(o) * ops.tanh(c)
            return (h, c), h
        return lstm_step

    if model.reset_after:  # torch/cuDNN/Keras default: r multiplies (h W_hh + b_hh)
        b_hn = p["b_hh"] if model.bias else None

        def gru_after_step(carry, xp):
            (h,) = carry
            xz, xr, xn = ops.split(xp, 3)
            hz, hr, hn = ops.split(ops.matmul(h, w_h), 3)
            z, r = ops.sigmoid(xz + hz), ops.sigmoid(xr + hr)
            n = ops.tanh(xn + r * (hn if b_hn is None else hn + b_hn))
            h = n + z * (h - n)  # = z·h + (1 − z)·n in one op less
            return (h,), h
        return gru_after_step

    w_zr = ops.concat([p["W_hz"], p["W_hr"]], axis=1)
    w_hh = p["W_hh"]

    def gru_before_step(carry, xp):  # d2l / ONNX default: r multiplies h before the matmul
        (h,) = carry
        xz, xr, xn = ops.split(xp, 3)
        hz, hr = ops.split(ops.matmul(h, w_zr), 2)
        z, r = ops.sigmoid(xz + hz), ops.sigmoid(xr + hr)
        n = ops.tanh(xn + ops.matmul(r * h, w_hh))
        h = n + z * (h - n)
        return (h,), h
    return gru_before_step


def masked_step(ops: Ops, step: Callable, num_gates: int) -> Callable:
    """Wrap a step whose input carries [m, 1 - m] as two extra H-wide blocks after the gates: a padded
    step (m = 0) keeps the carry. Its output is zeroed after the scan, not here."""
    def step_with_mask(carry, xpm):
        *gates, keep_new, keep_old = ops.split(xpm, num_gates + 2)
        new_carry, h = step(carry, gates[0] if num_gates == 1 else ops.concat(gates, axis=-1))
        kept = tuple(keep_new * new + keep_old * old for new, old in zip(new_carry, carry))
        return kept, kept[0]
    return step_with_mask


def run_direction(ops: Ops, model: RecurrentSpec, p: dict, xs: Array, state: tuple,
                  reverse: bool = False, padding: Padding | None = None):
    """One unit over a time-major sequence, from the last step to the first when ``reverse``:
    returns (outputs (T, B, H) in the order of ``xs``, final state tuple). With ``padding`` the
    caller passes each sequence already reversed within its length instead of ``reverse``."""
    weight, bias = input_projection(ops, model, p)
    step = make_step(ops, model, p)
    if padding is not None:  # always hoisted: the mask rides along with the projected inputs
        projected = ops.matmul(xs, weight)
        if bias is not None:
            projected = projected + bias
        num_gates = len(CELL_GATES[model.cell])
        # two more H-wide blocks, so scan still sees a single array
        projected = ops.concat([projected, padding.mask], axis=-1)
        final, ys = ops.scan(masked_step(ops, step, num_gates), tuple(state), projected)
        return ys * ops.split(padding.mask, 2)[0], final  # zero outputs at padded steps
    if getattr(ops, "hoist_input_projection", True):
        projected = ops.matmul(xs, weight)  # (T, B, G·H) in one matmul, outside the loop
        if bias is not None:
            projected = projected + bias
        final, ys = ops.scan(step, tuple(state), projected, reverse=reverse)
        return ys, final

    def projecting_step(carry, x):
        xp = ops.matmul(x, weight)
        return step(carry, xp if bias is None else xp + bias)
    final, ys = ops.scan(projecting_step, tuple(state), xs, reverse=reverse)
    return ys, final


def run(ops: Ops, model: RecurrentSpec, params: dict, xs: Array, flat_state: list, masks=None,
        padding: Padding | None = None):
    """The whole network on time-major ``xs``; ``flat_state`` as in multirnn.state.

    Returns (outputs (T, B, output_size), flat final state). ``masks[k - 1]`` (optional, drawn by
    multirnn.dropout) scales the input of layer k: dropout between layers. ``padding`` (optional)
    gives per-sequence lengths: see the module docstring. A layer runs in ``ops.fused_layer`` when the
    backend has one and ``kernel_computes(model)`` (see there), else unit by unit through ``scan``.
    """
    kernel = getattr(ops, "fused_layer", None)
    use_kernel = (kernel is not None and padding is None and kernel_computes(model)
                  and ops.fused_layer_accepts(model, xs))
    units, finals, layer_in = list(model.units()), [], xs
    per_layer = len(model.directions)
    for layer in range(model.num_layers):
        if layer > 0 and masks is not None:
            layer_in = layer_in * masks[layer - 1]
        mine = range(layer * per_layer, (layer + 1) * per_layer)
        params_of = [unit_params(params, units[i][2]) for i in mine]
        if use_kernel:
            layer_in, layer_finals = kernel(model, params_of, layer_in, [flat_state[i] for i in mine])
            finals += layer_finals
            continue
        outputs = []
        for i, unit in zip(mine, params_of):
            reverse = units[i][1] == "bwd"
            if padding is None:
                ys, final = run_direction(ops, model, unit, layer_in, flat_state[i], reverse=reverse)
            else:  # each sequence reversed within its own length, not the whole padded block
                seq = ops.reverse_padded(layer_in, padding.lengths) if reverse else layer_in
                ys, final = run_direction(ops, model, unit, seq, flat_state[i], padding=padding)
                if reverse:
                    ys = ops.reverse_padded(ys, padding.lengths)
            outputs.append(ys)
            finals.append(final)
        layer_in = outputs[0] if len(outputs) == 1 else ops.concat(outputs, axis=-1)
    return layer_in, finals


# cuDNN's fused RNN kernels, and torch's and MXNet's that follow them, compute the tanh/relu RNN, the
# reset-after GRU and the LSTM with the canonical equations, gates in this order, weights (G·H, in).
KERNEL_GATES = {"rnn": "h", "gru": "rzh", "lstm": "ifco"}


def kernel_computes(model: RecurrentSpec) -> bool:
    """Whether a cuDNN-style fused kernel computes ``model`` exactly: all but d2l's reset-before GRU."""
    return model.cell != "gru" or model.reset_after


def kernel_weights(ops: Ops, model: RecurrentSpec, p: dict) -> tuple:
    """One unit's (W_ih, W_hh, b_ih, b_hh), gates concatenated in KERNEL_GATES order, canonical
    orientation (in, G·H) and (H, G·H): a backend transposes them for its kernel. Biases are None
    without bias; the RNN's single bias is b_ih and its b_hh None (the kernel's is zero)."""
    if model.cell == "rnn":
        return p["W_xh"], p["W_hh"], p.get("b_h"), None
    gates = KERNEL_GATES[model.cell]
    cat = lambda kind: ops.concat([p[f"{kind}{g}"] for g in gates], axis=-1)  # noqa: E731
    return cat("W_x"), cat("W_h"), *((cat("b_x"), cat("b_h")) if model.bias else (None, None))
