"""The d2l-style baseline: a plain eager per-step loop with per-gate matmuls (no hoisting, no fusing),
as in d2l's RNNScratch / GRUScratch / LSTMScratch. Written once against a tiny op namespace.

Deliberately independent of multirnn.recurrence: it is the "what people write by hand" yardstick.
"""
from __future__ import annotations


def d2l_direction(ops, cell, p, steps, h, c=None, nonlinearity="tanh"):
    """One direction over a list of (B, D) steps; returns the list of (B, H) outputs."""
    outputs = []
    for x in steps:
        if cell == "rnn":
            h = getattr(ops, nonlinearity)(ops.matmul(x, p["W_xh"]) + ops.matmul(h, p["W_hh"]) + p["b_h"])
        elif cell == "gru":  # d2l GRUScratch: reset before the recurrent matmul
            z = ops.sigmoid(ops.matmul(x, p["W_xz"]) + ops.matmul(h, p["W_hz"]) + p["b_xz"])
            r = ops.sigmoid(ops.matmul(x, p["W_xr"]) + ops.matmul(h, p["W_hr"]) + p["b_xr"])
            h_tilde = ops.tanh(ops.matmul(x, p["W_xh"]) + ops.matmul(r * h, p["W_hh"]) + p["b_xh"])
            h = z * h + (1 - z) * h_tilde
        else:  # d2l LSTMScratch
            i = ops.sigmoid(ops.matmul(x, p["W_xi"]) + ops.matmul(h, p["W_hi"]) + p["b_xi"])
            f = ops.sigmoid(ops.matmul(x, p["W_xf"]) + ops.matmul(h, p["W_hf"]) + p["b_xf"])
            o = ops.sigmoid(ops.matmul(x, p["W_xo"]) + ops.matmul(h, p["W_ho"]) + p["b_xo"])
            c_tilde = ops.tanh(ops.matmul(x, p["W_xc"]) + ops.matmul(h, p["W_hc"]) + p["b_xc"])
            c = f * c + i * c_tilde
            h = o * ops.tanh(c)
        outputs.append(h)
    return outputs


def d2l_forward(ops, model, params, steps, zeros):
    """All directions of a one-layer model; returns the (T, B, output_size) outputs."""
    prefixes = ["fwd.", "bwd."] if model.bidirectional else [""]
    per_direction = []
    for prefix in prefixes:
        p = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        seq = steps[::-1] if prefix == "bwd." else steps
        ys = d2l_direction(ops, model.cell, p, seq, zeros, zeros, model.nonlinearity)
        per_direction.append(ys[::-1] if prefix == "bwd." else ys)
    outputs = ops.stack(per_direction[0]) if len(per_direction) == 1 else ops.concat(
        [ops.stack(ys) for ys in per_direction])
    return outputs
