"""The recurrence, written once against the array operations of backends.protocol (``Ops`` here).

Backends never re-implement a cell: they supply ``matmul``/``tanh``/``scan``/... and this module builds
every network of the spec from them. The input projection X·W of a whole sequence is hoisted out of the
time loop into one big matmul (unless the backend's ``hoist_input_projection`` is False); the loop body
only does the recurrent matmul and the gate arithmetic. Whether a layer runs in the backend's fused
kernel instead is decided in one place, ``fused_path``.

Variable-length batches (``Padding``, like torch packed sequences / ONNX sequence_lens): sequence b is
valid for its first ``lengths[b]`` steps. Where the backend packs them (multirnn.packed: the eager
fused kernels), the batch is sorted by length and only valid steps are computed. Where the backend's
scan takes a batch that changes size from step to step (``shrinking_scan``: TensorFlow, and torch's
generic path), the batch is sorted the same way and each step computes only the sequences still
running (``shrinking_step``).
Elsewhere a boolean step mask travels with the inputs through ``scan`` and a padded step keeps the
carry (``where``, a select: exact). Either way outputs are zeroed after the scan in one multiply, and
the backward direction reverses each sequence within its own length (``reverse_padded``). With no
padding, none of this runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from . import packed
from .spec import CELL_GATES, GATES_PER_CELL, HARD_SIGMOID_SLOPES, RecurrentSpec

if TYPE_CHECKING:  # the declared protocol; importing it at run time is not needed
    from multirnn.backends.protocol import BackendProtocol as Ops

Array = Any


class Padding(NamedTuple):
    """Per-sequence lengths of a padded time-major batch, as framework arrays.

    lengths: int (batch,); keep: bool (num_steps, batch, 1), True where t < lengths[b]; valid: keep in
    the compute dtype (1/0), to zero the outputs at padded steps; plan: a multirnn.packed.Plan where the
    backend runs padded batches through its fused kernel, else None.

    An arbitrary step mask (Keras, multirnn.masking) is a Padding with lengths None: keep is the mask,
    valid its multirnn.masking.output_factor, and a reversed unit scans the whole sequence backwards.
    """

    lengths: Array
    keep: Array
    valid: Array
    plan: Any = None
    # True: the caller reads only the outputs at valid steps (gradients: its cotangent is zero at
    # padded steps), so outputs at padded steps may be anything finite and final states None. Set
    # inside a trace, never passed in: None (not False) keeps it out of jax.jit's traced leaves.
    outputs_only: bool | None = None
    # A forward pass that runs past each sequence's end in a plan's coarse segments, with exact
    # outputs and final states (packed.run_to_ends; MXNet's graph, JAX): packed.freeze_margin as a
    # (1, 1) framework array (0 where nothing freezes: the GRU and tanh RNN); None elsewhere.
    freeze: Any = None


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


def activation(ops: Ops, model: RecurrentSpec) -> Callable:
    """The cell's nonlinearity: rnn update, gru candidate, lstm cell input and cell output."""
    return ops.tanh if model.nonlinearity == "tanh" else ops.relu


def gate_function(ops: Ops, model: RecurrentSpec) -> Callable:
    """The gru/lstm gate function. A hard sigmoid clip(slope·x + 1/2, 0, 1) is built from relu as
    1 − relu(1 − relu(slope·x + 1/2)): every backend has relu, and with relu'(0) = 0 (all of them)
    its slope is 0 at both kinks, as torch's Hardsigmoid and relu6 define it."""
    if model.gate_activation == "sigmoid":
        return ops.sigmoid
    slope = HARD_SIGMOID_SLOPES[model.gate_activation]

    def hard_sigmoid(x):
        return 1.0 - ops.relu(1.0 - ops.relu(x * slope + 0.5))
    return hard_sigmoid


def make_step(ops: Ops, model: RecurrentSpec, p: dict) -> Callable:
    """The per-step function ``(carry, projected x_t) -> (carry, h_t)`` of one unit."""
    gates = CELL_GATES[model.cell]
    act, gate = activation(ops, model), gate_function(ops, model)
    if model.cell == "rnn":
        w_hh = p["W_hh"]

        def rnn_step(carry, xp):
            h = act(xp + ops.matmul(carry[0], w_hh))
            return (h,), h
        return rnn_step

    w_h = ops.concat([p[f"W_h{g}"] for g in gates], axis=1)
    if model.cell == "lstm":
        w_proj = p["W_proj"] if model.proj_size else None

        def lstm_step(carry, xp):
            h, c = carry
            i, f, o, c_tilde = ops.split(xp + ops.matmul(h, w_h), GATES_PER_CELL["lstm"])
            c = gate(f) * c + gate(i) * act(c_tilde)
            h = gate(o) * act(c)
            if w_proj is not None:  # torch's proj_size: h (and the outputs) P wide, c stays H wide
                h = ops.matmul(h, w_proj)
            return (h, c), h
        return lstm_step

    if model.reset_after:  # torch/cuDNN/Keras default: r multiplies (h W_hh + b_hh)
        b_hn = p["b_hh"] if model.bias else None

        def gru_after_step(carry, xp):
            (h,) = carry
            xz, xr, xn = ops.split(xp, GATES_PER_CELL["gru"])
            hz, hr, hn = ops.split(ops.matmul(h, w_h), GATES_PER_CELL["gru"])
            z, r = gate(xz + hz), gate(xr + hr)
            n = act(xn + r * (hn if b_hn is None else hn + b_hn))
            h = n + z * (h - n)  # = z·h + (1 − z)·n in one op less
            return (h,), h
        return gru_after_step

    w_zr = ops.concat([p["W_hz"], p["W_hr"]], axis=1)
    w_hh = p["W_hh"]

    def gru_before_step(carry, xp):  # d2l / ONNX default: r multiplies h before the matmul
        (h,) = carry
        xz, xr, xn = ops.split(xp, GATES_PER_CELL["gru"])
        hz, hr = ops.split(ops.matmul(h, w_zr), 2)
        z, r = gate(xz + hz), gate(xr + hr)
        n = act(xn + ops.matmul(r * h, w_hh))
        h = n + z * (h - n)
        return (h,), h
    return gru_before_step


def masked_step(ops: Ops, step: Callable) -> Callable:
    """Wrap a step to take (x_t, keep_t): a padded step (keep False) keeps the carry. Its output is
    zeroed after the scan, not here."""
    def step_with_mask(carry, x_and_keep):
        x, keep = x_and_keep
        new_carry, _ = step(carry, x)
        kept = tuple(ops.where(keep, new, old) for new, old in zip(new_carry, carry))
        return kept, kept[0]
    return step_with_mask


def shrinking_step(ops: Ops, step: Callable) -> Callable:
    """Wrap a step to take (x_t, running_t) on a batch sorted longest first: only the first running_t
    rows, the sequences still running, are computed; the others keep their carry. Padded steps cost
    nothing, and a row's result is the same as in the whole batch (each row is its own matmul row)."""
    def step_on_running(carry, x_and_running):
        x, running = x_and_running
        new_carry, _ = step(tuple(a[:running] for a in carry), x[:running])
        kept = tuple(ops.concat([new, old[running:]], axis=0) for new, old in zip(new_carry, carry))
        return kept, kept[0]
    return step_on_running


def projecting_step(ops: Ops, step: Callable, weight, bias) -> Callable:
    """A step that projects its raw input itself (backends whose ``hoist_input_projection`` is False)."""
    def step_with_projection(carry, x):
        xp = ops.matmul(x, weight)
        return step(carry, xp if bias is None else xp + bias)
    return step_with_projection


def run_direction(ops: Ops, model: RecurrentSpec, p: dict, xs: Array, state: tuple,
                  reverse: bool = False, padding: Padding | None = None):
    """One unit over a time-major sequence, from the last step to the first when ``reverse``:
    returns (outputs (T, B, h_size) in the order of ``xs``, final state tuple). With ``lengths`` padding
    the caller passes each sequence already reversed within its length instead of ``reverse``."""
    weight, bias = input_projection(ops, model, p)
    step = make_step(ops, model, p)
    if ops.hoist_input_projection:
        xs = ops.matmul(xs, weight)  # (T, B, G·H) in one matmul, outside the loop
        if bias is not None:
            xs = xs + bias
    else:
        step = projecting_step(ops, step, weight, bias)
    if padding is None:
        final, ys = ops.scan(step, tuple(state), xs, reverse=reverse)
        return ys, final
    if shrinks(ops, padding, use_kernel=False):  # sorted longest first (run), never reversed here
        final, ys = ops.scan(shrinking_step(ops, step), tuple(state), (xs, padding.plan.running))
        if padding.outputs_only:  # padded steps hold a finished row's carry, finite and not read
            return ys, final
    else:
        final, ys = ops.scan(masked_step(ops, step), tuple(state), (xs, padding.keep), reverse=reverse)
    return ys * padding.valid, final  # zero outputs at padded steps


def run(ops: Ops, model: RecurrentSpec, params: dict, xs: Array, flat_state: list, masks=None,
        padding: Padding | None = None):
    """The whole network on time-major ``xs``; ``flat_state`` as in multirnn.state.

    Returns (outputs (T, B, output_size), flat final state). ``masks[k - 1]`` (optional, drawn by
    multirnn.dropout) scales the input of layer k: dropout between layers. ``padding`` (optional)
    gives per-sequence lengths: see the module docstring. A layer runs in ``ops.fused_layer`` where
    ``fused_path`` says so (a padded batch: in multirnn.packed's segments), else unit by unit through
    ``scan``.
    """
    use_kernel = fused_path(ops, model, ops.dtype_of(xs))
    flat_state = initial_state(ops, model, params, xs, flat_state)
    if padding is not None:
        padding = padding._replace(plan=schedule(ops, model, padding, use_kernel))
        if isinstance(padding.plan, packed.Plan):  # sorted longest first: the running sequences are
            # a prefix of the batch
            xs, flat_state, masks = packed.sort_batch(ops, padding.plan, xs, flat_state, masks)
            # keep is not read once sorted; valid only by the shrinking scan and run_to_ends (other
            # segments pad with zeros)
            valid = None
            if runs_to_ends(padding) or (not use_kernel and padding.plan.coarse is None):  # the
                # shrinking scan, or packed.run_to_ends
                order = padding.plan.order
                valid = padding.valid if order is None else ops.take(padding.valid, order, 1)
            padding = padding._replace(lengths=padding.plan.sorted_lengths, keep=None, valid=valid)
    units, finals, layer_in = list(model.units()), [], xs
    per_layer = len(model.directions)
    for layer in range(model.num_layers):
        if layer > 0 and masks is not None:
            layer_in = layer_in * masks[layer - 1]
        mine = range(layer * per_layer, (layer + 1) * per_layer)
        params_of = [unit_params(params, units[i][2]) for i in mine]
        if use_kernel and padding is None:
            layer_in, layer_finals = ops.fused_layer(model, params_of, layer_in,
                                                     [flat_state[i] for i in mine])
            finals += layer_finals
            continue
        outputs = []
        for i, unit in zip(mine, params_of):
            ys, final = run_unit(ops, model, unit, units[i][1], layer_in, flat_state[i], padding, use_kernel)
            outputs.append(ys)
            finals.append(final)
        layer_in = merge_directions(ops, model, outputs)
    if padding is not None and isinstance(padding.plan, packed.Plan):
        return packed.unsort_batch(ops, padding.plan, layer_in, finals)
    return layer_in, finals


def reads_valid_steps_only(model: RecurrentSpec, padding: Padding) -> bool:
    """Whether a padded batch may run past each sequence's end: only the valid steps' outputs are read
    (``Padding.outputs_only``: a gradient pass, its cotangent zero at padded steps). The valid steps
    stay exact (a step sees only the past; a reversed unit reads each sequence reversed within its
    length, so padding stays at the end), and the padded steps add exact zeros to every gradient;
    their final states are another sequence's and are not returned. Not for arbitrary masks (their
    masked outputs are read), and not with relu: its padded steps may overflow, and 0·inf would reach
    the gradients."""
    return padding.outputs_only is True and padding.lengths is not None and model.nonlinearity != "relu"


def schedule(ops: Ops, model: RecurrentSpec, padding: Padding, use_kernel: bool):
    """The one decision how ``run`` computes a padded batch: a multirnn.packed.Plan (the batch sorted
    longest first), WHOLE_BATCH (each layer's whole padded batch unmasked: one kernel call, or the
    plain scan), or None (the masked scan).

    Exact (forward): the plan where the sorted batch shrinks (``shrinks``: the kernel's segments, or
    the shrinking scan), else the masked scan. Where only the valid steps are read
    (``reads_valid_steps_only``): the plan's coarse segments where it has them (packed.run_past_ends:
    at most three kernel calls or scans on the running sequences rounded up; measured on torch's LSTM
    0.76-0.97x the full batch, where the exact plan's 26 calls cost 0.87-1.18x; TensorFlow's three
    scans 0.90-0.97x and 0.95-1.01x at 2 threads, where the shrinking scan cost 0.96-1.00x and
    1.08-1.17x), else the shrinking scan (the native layers' plans, which have no coarse segments),
    else the whole batch. A forward pass given ``Padding.freeze`` (``runs_to_ends``) runs its plan's
    coarse segments too, exactly (packed.run_to_ends). A Plan keeps ``coarse`` only where its coarse
    segments are what runs."""
    plan = padding.plan
    if not isinstance(plan, packed.Plan):
        if plan is packed.WHOLE_BATCH or not reads_valid_steps_only(model, padding):
            return plan  # WHOLE_BATCH as chosen before (MXNet's graph), or no plan: the masked scan
        return packed.WHOLE_BATCH
    if runs_to_ends(padding):
        return plan
    exact = plan._replace(coarse=None)
    if not reads_valid_steps_only(model, padding):
        return exact if shrinks(ops, padding, use_kernel) else None
    if plan.coarse is not None:
        return plan
    return exact if shrinks(ops, padding, use_kernel) and not use_kernel else packed.WHOLE_BATCH


def runs_to_ends(padding: Padding) -> bool:
    """Whether a forward pass runs its plan's coarse segments past each sequence's end, exactly
    (``Padding.freeze``: packed.run_to_ends)."""
    return (padding.freeze is not None and not padding.outputs_only and isinstance(padding.plan, packed.Plan)
            and padding.plan.coarse is not None)


def shrinks(ops: Ops, padding: Padding, use_kernel: bool) -> bool:
    """Whether a padded batch runs sorted, computing only the sequences still running: in
    multirnn.packed's kernel segments (``use_kernel``), or in a shrinking scan (``shrinking_step``)."""
    plan = padding.plan
    if not isinstance(plan, packed.Plan):
        return False
    return bool(plan.sizes) if use_kernel else (ops.shrinking_scan and plan.running is not None)


def run_unit(ops: Ops, model: RecurrentSpec, p: dict, direction: str, layer_in: Array, state: tuple,
             padding: Padding | None, use_kernel: bool):
    """One (layer, direction) unit: (outputs in the order the next layer reads them, final state);
    ``use_kernel``: run's ``fused_path``."""
    reverse = direction == "bwd" or model.reverse
    realign = direction == "bwd" or model.keep_order  # outputs back in input order
    if padding is None or padding.lengths is None:  # no padding, or a mask: whole-sequence reversal
        ys, final = run_direction(ops, model, p, layer_in, state, reverse=reverse, padding=padding)
        return (ys if realign else ops.flip_time(ys)), final  # else: last step first, handed on so
    # each sequence reversed within its own length, not the whole padded block
    seq = ops.reverse_padded(layer_in, padding.lengths) if reverse else layer_in
    if padding.plan is packed.WHOLE_BATCH:  # unmasked: padded steps are computed, and not read
        if use_kernel:
            ys, final = ops.fused_kernel(model, [p])(seq, [state])[0], None
        else:
            ys, final = run_direction(ops, model, p, seq, state)[0], None
    elif runs_to_ends(padding):  # a forward pass past each sequence's end (schedule)
        runner_of = ((lambda q: ops.fused_kernel(model, [q])) if use_kernel
                     else (lambda q: scan_runner(ops, model, q)))
        ys, final = packed.run_to_ends(ops, model, runner_of, p, padding.plan.coarse, seq, state,
                                       padding.lengths, padding.valid, padding.freeze)
    elif padding.plan is not None and padding.plan.coarse is not None:  # a gradient pass (schedule)
        runner = ops.fused_kernel(model, [p]) if use_kernel else scan_runner(ops, model, p)
        ys, final = packed.run_past_ends(ops, runner, padding.plan.coarse, seq, state), None
    elif use_kernel and padding.plan is not None:
        ys, final = packed.run_unit(ops, ops.fused_kernel(model, [p]), padding.plan, seq, state)
    else:  # the shrinking scan where padding has a plan (run kept it), else the masked one
        ys, final = run_direction(ops, model, p, seq, state, padding=padding)
    return (ops.reverse_padded(ys, padding.lengths) if reverse and realign else ys), final


def scan_runner(ops: Ops, model: RecurrentSpec, p: dict) -> Callable:
    """One unit's plain scan with a fused kernel's interface, ``(xs, [state]) -> (ys, [final])``, for
    multirnn.packed's segments."""
    def run(xs, states):
        ys, final = run_direction(ops, model, p, xs, states[0])
        return ys, [final]
    return run


def initial_state(ops: Ops, model: RecurrentSpec, params: dict, xs: Array, flat_state: list) -> list:
    """``flat_state`` with each None unit replaced by the model's learned h_0 (c_0) broadcast over
    the batch, in graph ops so gradients reach them."""
    if all(unit is not None for unit in flat_state):
        return flat_state
    zeros = [ops.zeros_state(xs, width) for width in model.state_widths]
    return [unit if unit is not None else tuple(zero + params[prefix + name]
                                                for zero, name in zip(zeros, model.initial_state_names))
            for unit, (_, _, prefix, _) in zip(flat_state, model.units())]


def merge_directions(ops: Ops, model: RecurrentSpec, outputs: list) -> Array:
    """One layer's output from its directions' (Keras' Bidirectional merge modes)."""
    if len(outputs) == 1:
        return outputs[0]
    if model.merge_mode == "concat":
        return ops.concat(outputs, axis=-1)
    forward, backward = outputs
    if model.merge_mode == "mul":
        return forward * backward
    merged = forward + backward
    return merged * 0.5 if model.merge_mode == "ave" else merged


# cuDNN's fused RNN kernels, and torch's and MXNet's that follow them, compute the tanh/relu RNN, the
# reset-after GRU and the LSTM with the canonical equations, gates in this order, weights (G·H, in).
KERNEL_GATES = {"rnn": "h", "gru": "rzh", "lstm": "ifco"}


def fused_path(ops: Ops, model: RecurrentSpec, dtype) -> bool:
    """The one decision whether ``run`` runs whole layers of ``model`` in the backend's fused kernel
    (what `multirnn compare` reports as the "fused" path; padded batches too, in multirnn.packed's
    segments): the backend has a fused kernel and it is switched on, the kernel computes the spec
    exactly (all but d2l's reset-before GRU and the options of ``kernel_computes``), and the backend's
    own exceptions allow it."""
    return (ops.has_fused_kernel and ops.use_fused_kernels
            and kernel_computes(model) and ops.fused_kernel_accepts(model, dtype))


def kernel_computes(model: RecurrentSpec) -> bool:
    """The cuDNN-style kernels have sigmoid gates, tanh gru/lstm cells and the reset-after GRU only,
    run forward or both ways with the directions concatenated."""
    standard_cell = model.cell == "rnn" or (model.nonlinearity == "tanh"
                                            and model.gate_activation == "sigmoid")
    standard_directions = not model.reverse and model.merge_mode == "concat"
    return (standard_cell and standard_directions and not model.learn_initial_state
            and (model.cell != "gru" or model.reset_after))


def kernel_weights(ops: Ops, model: RecurrentSpec, p: dict) -> tuple:
    """One unit's (W_ih, W_hh, b_ih, b_hh), gates concatenated in KERNEL_GATES order, canonical
    orientation (in, G·H) and (h_size, G·H): a backend transposes them for its kernel (a projected
    lstm's W_proj it takes as it is). Biases are None without bias; the RNN's single bias is b_ih and
    its b_hh None (the kernel's is zero)."""
    if model.cell == "rnn":
        return p["W_xh"], p["W_hh"], p.get("b_h"), None
    gates = KERNEL_GATES[model.cell]
    cat = lambda kind: ops.concat([p[f"{kind}{g}"] for g in gates], axis=-1)  # noqa: E731
    return cat("W_x"), cat("W_h"), *((cat("b_x"), cat("b_h")) if model.bias else (None, None))
