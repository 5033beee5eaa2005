"""The NumPy reference: forward and hand-written BPTT, the oracle every backend is tested against.

Written independently of multirnn.recurrence (plain per-gate equations, no fused weights, no folded
biases) so that a shared mistake is unlikely. It computes in the dtype of the params it is given; the
tests give it float64.

Everything here is time-major with the flat state of multirnn.state; multirnn.api adapts user input.
"""
from __future__ import annotations

import numpy as np

from .recurrence import unit_params
from .spec import CELL_GATES, HARD_SIGMOID_SLOPES, RecurrentSpec


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _gate(model, a):
    """The gate function of gru/lstm: the logistic sigmoid or a hard sigmoid clip(slope·a + 1/2, 0, 1)."""
    if model.gate_activation == "sigmoid":
        return _sigmoid(a)
    return np.clip(HARD_SIGMOID_SLOPES[model.gate_activation] * a + 0.5, 0.0, 1.0)


def _gate_slope(model, s):
    """d gate / d a from the gate's value s; a hard sigmoid's slope is 0 at and beyond its kinks
    (torch's hardsigmoid_backward, TF's and JAX's relu6)."""
    if model.gate_activation == "sigmoid":
        return s * (1 - s)
    return HARD_SIGMOID_SLOPES[model.gate_activation] * ((s > 0) & (s < 1))


def _act(model, a):
    """The cell's nonlinearity (rnn update, gru candidate, lstm cell input and output)."""
    return np.tanh(a) if model.nonlinearity == "tanh" else np.maximum(a, 0)


def _act_slope(model, y):
    """d act / d a from the value y (relu: 0 at 0, as every framework)."""
    return (1 - y ** 2) if model.nonlinearity == "tanh" else (y > 0)


def _affine(p, gate, x, h, bias):
    """x W_xg + h W_hg (+ both biases): the pre-activation of one gate."""
    a = x @ p[f"W_x{gate}"] + h @ p[f"W_h{gate}"]
    return a + p[f"b_x{gate}"] + p[f"b_h{gate}"] if bias else a


def _affine_backward(p, g, gate, da, x, h, bias):
    """Accumulate the gradients of _affine; return (dx, dh)."""
    g[f"W_x{gate}"] += x.T @ da
    g[f"W_h{gate}"] += h.T @ da
    if bias:
        g[f"b_x{gate}"] += da.sum(0)
        g[f"b_h{gate}"] += da.sum(0)
    return da @ p[f"W_x{gate}"].T, da @ p[f"W_h{gate}"].T


# ---- one time step of each cell: forward returns (new state, cache); backward accumulates into g ----

def _rnn_step(model, p, x, state):
    (h,) = state
    a = x @ p["W_xh"] + h @ p["W_hh"]
    if model.bias:
        a = a + p["b_h"]
    h_new = _act(model, a)
    return (h_new,), (x, h, h_new)


def _rnn_step_backward(model, p, g, cache, d_state):
    x, h, h_new = cache
    (dh_new,) = d_state
    da = dh_new * _act_slope(model, h_new)
    g["W_xh"] += x.T @ da
    g["W_hh"] += h.T @ da
    if model.bias:
        g["b_h"] += da.sum(0)
    return da @ p["W_xh"].T, (da @ p["W_hh"].T,)


def _gru_step(model, p, x, state):
    (h,) = state
    z = _gate(model, _affine(p, "z", x, h, model.bias))
    r = _gate(model, _affine(p, "r", x, h, model.bias))
    bx, bh = (p["b_xh"], p["b_hh"]) if model.bias else (0.0, 0.0)
    if model.reset_after:
        u = h @ p["W_hh"] + bh  # recurrent candidate term, multiplied by r
        n = _act(model, x @ p["W_xh"] + bx + r * u)
    else:
        u = r * h  # reset hidden state, multiplied by W_hh
        n = _act(model, x @ p["W_xh"] + bx + u @ p["W_hh"] + bh)
    h_new = z * h + (1 - z) * n
    return (h_new,), (x, h, z, r, n, u)


def _gru_step_backward(model, p, g, cache, d_state):
    x, h, z, r, n, u = cache
    (dh_new,) = d_state
    dh = dh_new * z
    dz = dh_new * (h - n)
    dan = dh_new * (1 - z) * _act_slope(model, n)
    g["W_xh"] += x.T @ dan
    dx = dan @ p["W_xh"].T
    if model.bias:
        g["b_xh"] += dan.sum(0)
    if model.reset_after:
        du = dan * r
        dr = dan * u
        g["W_hh"] += h.T @ du
        if model.bias:
            g["b_hh"] += du.sum(0)
        dh = dh + du @ p["W_hh"].T
    else:
        g["W_hh"] += u.T @ dan
        if model.bias:
            g["b_hh"] += dan.sum(0)
        du = dan @ p["W_hh"].T
        dr = du * h
        dh = dh + du * r
    for gate, s, ds in (("z", z, dz), ("r", r, dr)):
        dx_gate, dh_gate = _affine_backward(p, g, gate, ds * _gate_slope(model, s), x, h, model.bias)
        dx, dh = dx + dx_gate, dh + dh_gate
    return dx, (dh,)


def _lstm_step(model, p, x, state):
    h, c = state
    i = _gate(model, _affine(p, "i", x, h, model.bias))
    f = _gate(model, _affine(p, "f", x, h, model.bias))
    o = _gate(model, _affine(p, "o", x, h, model.bias))
    c_tilde = _act(model, _affine(p, "c", x, h, model.bias))
    c_new = f * c + i * c_tilde
    act_c = _act(model, c_new)
    h_new = o * act_c
    if model.proj_size:  # the projection: h is P wide, c stays H wide
        h_new = h_new @ p["W_proj"]
    return (h_new, c_new), (x, h, c, i, f, o, c_tilde, act_c)


def _lstm_step_backward(model, p, g, cache, d_state):
    x, h, c, i, f, o, c_tilde, act_c = cache
    dh_new, dc_new = d_state
    if model.proj_size:  # back through h = (o ⊙ act(c)) W_proj to the unprojected o ⊙ act(c)
        g["W_proj"] += (o * act_c).T @ dh_new
        dh_new = dh_new @ p["W_proj"].T
    dc = dc_new + dh_new * o * _act_slope(model, act_c)
    pre_activation_grads = {
        "i": dc * c_tilde * _gate_slope(model, i),
        "f": dc * c * _gate_slope(model, f),
        "o": dh_new * act_c * _gate_slope(model, o),
        "c": dc * i * _act_slope(model, c_tilde),
    }
    dx, dh = 0.0, 0.0
    for gate, da in pre_activation_grads.items():
        dx_gate, dh_gate = _affine_backward(p, g, gate, da, x, h, model.bias)
        dx, dh = dx + dx_gate, dh + dh_gate
    return dx, (dh, dc * f)


_STEPS = {"rnn": (_rnn_step, _rnn_step_backward),
          "gru": (_gru_step, _gru_step_backward),
          "lstm": (_lstm_step, _lstm_step_backward)}
assert set(_STEPS) == set(CELL_GATES)


# ---- a whole network ----

def _runs_backwards(model, direction) -> bool:
    """The unit reads its input from the last step to the first."""
    return direction == "bwd" or model.reverse


def _realigns_outputs(model, direction) -> bool:
    """The unit's outputs, computed last step first, are put back in input order."""
    return direction == "bwd" or (model.reverse and model.keep_order)


def _merge(model, outputs):
    """One layer's output from its directions' outputs (Keras' Bidirectional merge modes)."""
    if len(outputs) == 1 or model.merge_mode == "concat":
        return np.concatenate(outputs, axis=-1)
    f, b = outputs
    return {"sum": f + b, "mul": f * b, "ave": (f + b) / 2}[model.merge_mode]


def _unmerge(model, d_out, outputs):
    """The cotangent of each direction's output from the layer output's (inverse of _merge's VJP)."""
    hidden = model.h_size
    if len(outputs) == 1 or model.merge_mode == "concat":
        return [d_out[..., k * hidden:(k + 1) * hidden] for k in range(len(outputs))]
    f, b = outputs
    return {"sum": [d_out, d_out], "mul": [d_out * b, d_out * f],
            "ave": [d_out / 2, d_out / 2]}[model.merge_mode]


def _initial_unit_state(model, p, flat_state, index, batch):
    """A unit's initial state: the one given, or (None) its learned h_0 (c_0) over the batch."""
    if flat_state[index] is not None:
        return tuple(flat_state[index])
    return tuple(np.broadcast_to(p[name], (batch, width))
                 for name, width in zip(model.initial_state_names, model.state_widths))


def forward(model: RecurrentSpec, params: dict, xs: np.ndarray, flat_state: list, masks=None):
    """Time-major forward (num_steps >= 1). ``masks[k - 1]`` (optional) scales layer k's input
    (dropout); a None unit of ``flat_state`` starts from the model's learned h_0 (c_0).
    Returns (outputs, flat final state, tape for backward)."""
    step = _STEPS[model.cell][0]
    tape, finals, outputs, layer_in = [], [], [], xs
    for index, (layer, direction, prefix, _) in enumerate(model.units()):
        if direction == "fwd" and layer > 0:
            layer_in, outputs = _merge(model, outputs), []
            if masks is not None:
                layer_in = layer_in * masks[layer - 1]
        p = unit_params(params, prefix)
        seq = layer_in[::-1] if _runs_backwards(model, direction) else layer_in
        state, caches, ys = _initial_unit_state(model, p, flat_state, index, xs.shape[1]), [], []
        for x in seq:
            state, cache = step(model, p, x, state)
            caches.append(cache)
            ys.append(state[0])
        ys = np.stack(ys)
        outputs.append(ys[::-1] if _realigns_outputs(model, direction) else ys)
        finals.append(state)
        tape.append((caches, outputs[-1], flat_state[index] is None))
    return _merge(model, outputs), finals, tape


def backward(model: RecurrentSpec, params: dict, tape: list, d_outputs: np.ndarray,
             d_finals: list | None = None, masks=None):
    """BPTT through a forward tape (num_steps >= 1). ``d_outputs`` is the cotangent of the outputs,
    ``d_finals`` (optional) that of the flat final state.
    Returns (param grads, input grads, flat initial-state grads)."""
    step_backward = _STEPS[model.cell][1]
    units = list(model.units())
    per_layer = len(model.directions)
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    d_initial = [None] * len(units)
    d_layer_out = d_outputs
    for layer in reversed(range(model.num_layers)):
        d_layer_in = 0.0
        layer_outputs = [tape[layer * per_layer + k][1] for k in range(per_layer)]
        d_units = _unmerge(model, d_layer_out, layer_outputs)
        for d_index, direction in enumerate(model.directions):
            index = layer * per_layer + d_index
            prefix = units[index][2]
            p = unit_params(params, prefix)
            g = {name: np.zeros_like(value) for name, value in p.items()}
            dys = d_units[d_index]
            if _realigns_outputs(model, direction):  # back to the order the steps ran in
                dys = dys[::-1]
            if d_finals is None:
                d_state = tuple(np.zeros((dys.shape[1], width), dys.dtype) for width in model.state_widths)
            else:
                d_state = tuple(d_finals[index])
            dxs = []
            for t in reversed(range(len(dys))):
                d_state = (d_state[0] + dys[t],) + d_state[1:]  # h_t feeds the output and step t+1
                dx, d_state = step_backward(model, p, g, tape[index][0][t], d_state)
                dxs.append(dx)
            dxs = np.stack(dxs[::-1])
            d_layer_in = d_layer_in + (dxs[::-1] if _runs_backwards(model, direction) else dxs)
            d_initial[index] = d_state
            if tape[index][2]:  # started from the learned state: h_0 (c_0) fed every sequence
                for name, d in zip(model.initial_state_names, d_state):
                    g[name] += d.sum(0)
            for name, value in g.items():
                grads[prefix + name] += value
        d_layer_out = d_layer_in if (masks is None or layer == 0) else d_layer_in * masks[layer - 1]
    return grads, d_layer_out, d_initial


# ---- variable-length batches: each sequence on its own (an independent check of the masked scan) ----

def _sequence(flat_state, b):
    return [None if unit is None else tuple(a[b:b + 1] for a in unit) for unit in flat_state]


def _sequence_masks(masks, b, length):
    return None if masks is None else [m[:length, b:b + 1] for m in masks]


def forward_padded(model: RecurrentSpec, params: dict, xs: np.ndarray, flat_state: list,
                   lengths: np.ndarray, masks=None):
    """Sequence b runs alone over its first lengths[b] steps: outputs past it are zero and its final
    state is the state at its own last step (unchanged when lengths[b] == 0).
    Returns (outputs, flat final state)."""
    ys = np.zeros(xs.shape[:2] + (model.output_size,), xs.dtype)
    finals = [list(_initial_unit_state(model, unit_params(params, prefix), flat_state, index, xs.shape[1]))
              for index, (_, _, prefix, _) in enumerate(model.units())]
    finals = [tuple(a.copy() for a in unit) for unit in finals]
    for b, length in enumerate(lengths):
        if length == 0:
            continue
        out, final, _ = forward(model, params, xs[:length, b:b + 1], _sequence(flat_state, b),
                                _sequence_masks(masks, b, length))
        ys[:length, b] = out[:, 0]
        for unit, unit_final in zip(finals, final):
            for array, value in zip(unit, unit_final):
                array[b] = value[0]
    return ys, finals


def gradients_padded(model: RecurrentSpec, params: dict, xs: np.ndarray, flat_state: list,
                     lengths: np.ndarray, d_outputs: np.ndarray, masks=None) -> dict:
    """Param gradients of sum(outputs * d_outputs) under forward_padded: the sum of each sequence's
    own BPTT (padded steps contribute nothing)."""
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    for b, length in enumerate(lengths):
        if length == 0:
            continue
        sequence_masks = _sequence_masks(masks, b, length)
        _, _, tape = forward(model, params, xs[:length, b:b + 1], _sequence(flat_state, b),
                             sequence_masks)
        for name, value in backward(model, params, tape, d_outputs[:length, b:b + 1],
                                    masks=sequence_masks)[0].items():
            grads[name] += value
    return grads


# ---- arbitrary step masks (Keras): each sequence runs over its unmasked steps only ----

def _mask_sources(model, keep_b: np.ndarray) -> np.ndarray:
    """For one sequence's (T,) mask: the input step whose output each output position shows, -1 for
    zeros. Unmasked steps show their own; a unidirectional model's masked step shows the last unmasked
    step before it in the order the unit runs; a bidirectional model's shows zeros. Output position t
    is input step T-1-t where a reversed unit keeps its computed order (keep_order=False)."""
    steps = len(keep_b)
    sources = np.where(keep_b, np.arange(steps), -1)
    if not model.bidirectional:
        order = range(steps - 1, -1, -1) if model.reverse else range(steps)
        last = -1
        for t in order:
            last = t if keep_b[t] else last
            sources[t] = last
    return sources[::-1] if model.reverse and not model.keep_order else sources


def _compressed(model, keep_b, values_b):
    """The rows of (T, ...) ``values_b`` at the unmasked steps, in the order a compressed run's
    outputs come (reversed for a reversed unit that keeps its computed order)."""
    rows = values_b[keep_b]
    return rows[::-1] if model.reverse and not model.keep_order else rows


def _masked_sequence(model, params, xs, flat_state, keep, masks, b):
    """Sequence b run over its unmasked steps alone: (outputs, final state, tape), or None if none."""
    if not keep[:, b].any():
        return None
    sequence_masks = None if masks is None else [m[keep[:, b], b:b + 1] for m in masks]
    return forward(model, params, xs[keep[:, b], b:b + 1], _sequence(flat_state, b), sequence_masks), \
        sequence_masks


def forward_masked(model: RecurrentSpec, params: dict, xs: np.ndarray, flat_state: list,
                   keep: np.ndarray, masks=None):
    """Keras-masked forward (multirnn.masking): ``keep`` time-major (T, B) bool. Sequence b is run
    alone over its unmasked steps, its outputs placed per _mask_sources. Returns (outputs, finals)."""
    ys = np.zeros(xs.shape[:2] + (model.output_size,), xs.dtype)
    finals = [tuple(a.copy() for a in _initial_unit_state(model, unit_params(params, prefix), flat_state,
                                                           index, xs.shape[1]))
              for index, (_, _, prefix, _) in enumerate(model.units())]
    for b in range(xs.shape[1]):
        run = _masked_sequence(model, params, xs, flat_state, keep, masks, b)
        if run is None:
            continue
        (out, final, _), _ = run
        sources = _mask_sources(model, keep[:, b])
        by_step = np.zeros((xs.shape[0], model.output_size), xs.dtype)  # the output of each input step
        by_step[keep[:, b]] = out[::-1, 0] if model.reverse and not model.keep_order else out[:, 0]
        ys[sources >= 0, b] = by_step[sources[sources >= 0]]
        for unit, unit_final in zip(finals, final):
            for array, value in zip(unit, unit_final):
                array[b] = value[0]
    return ys, finals


def gradients_masked(model: RecurrentSpec, params: dict, xs: np.ndarray, flat_state: list,
                     keep: np.ndarray, d_outputs: np.ndarray, masks=None) -> dict:
    """Param gradients of sum(outputs * d_outputs) under forward_masked: each output position's
    cotangent goes to the step it shows, then each sequence's own BPTT."""
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    for b in range(xs.shape[1]):
        run = _masked_sequence(model, params, xs, flat_state, keep, masks, b)
        if run is None:
            continue
        (_, _, tape), sequence_masks = run
        sources = _mask_sources(model, keep[:, b])
        d_by_step = np.zeros((xs.shape[0], model.output_size), xs.dtype)
        np.add.at(d_by_step, sources[sources >= 0], d_outputs[sources >= 0, b])
        d_out = _compressed(model, keep[:, b], d_by_step)[:, None]
        for name, value in backward(model, params, tape, d_out, masks=sequence_masks)[0].items():
            grads[name] += value
    return grads
