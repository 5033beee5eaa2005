"""Padded batches against full-length ones: ``benchmarks/run.py --suite padded``.

Per backend, one forward + backward of ``multirnn.gradients`` (NumPy in and out) on an LSTM of the
issue's size, T=64 B=64 D=128 H=256, with lengths drawn uniformly from 32..64 (seeded) and without
lengths; interleaved medians as in run.py. The ratio padded / full is the row's number: a padded batch
computes fewer steps, so it should cost less. The same for ``multirnn.forward`` alone (inference, exact
final states), timed after them (``GROUPS``). For reference, torch's own packed-sequence LSTM
(``pack_padded_sequence`` + ``nn.LSTM``) against its full-length LSTM, timed in the same rounds.
"""
from __future__ import annotations

import numpy as np

import multirnn

STEPS, BATCH, INPUTS, HIDDENS = 64, 64, 128, 256
# Timed one group after the other (run.measure_suite): interleaving the forward calls with the
# gradient calls slowed some backends' full-batch gradient (MXNet's from 68 to 109 ms, measured).
GROUPS = (("full", "padded", "torch_full", "torch_packed"), ("forward_full", "forward_padded"))


def lengths(seed=0):
    return np.random.default_rng(seed).integers(STEPS // 2, STEPS + 1, size=BATCH)


def calls(backend: str) -> dict:
    model = multirnn.RecurrentSpec(INPUTS, HIDDENS, cell="lstm")
    params = multirnn.init_params(model, seed=0, dtype="float32")
    xs = np.random.default_rng(1).normal(size=(STEPS, BATCH, INPUTS)).astype("float32")
    padded = lengths()
    out = {"full": lambda: multirnn.gradients(model, params, xs, backend=backend),
           "padded": lambda: multirnn.gradients(model, params, xs, backend=backend, lengths=padded),
           "forward_full": lambda: multirnn.forward(model, params, xs, backend=backend),
           "forward_padded": lambda: multirnn.forward(model, params, xs, backend=backend, lengths=padded)}
    if backend == "torch":
        out.update(_torch_own(model, xs, padded))
    return out


def _torch_own(model, xs, padded):
    import torch

    layer = torch.nn.LSTM(model.num_inputs, model.num_hiddens)
    x, n = torch.from_numpy(xs), torch.from_numpy(padded)

    def full():
        layer.zero_grad(set_to_none=True)
        layer(x)[0].sum().backward()

    def packed():
        layer.zero_grad(set_to_none=True)
        sequences = torch.nn.utils.rnn.pack_padded_sequence(x, n, enforce_sorted=False)
        layer(sequences)[0].data.sum().backward()
    return {"torch_full": full, "torch_packed": packed}


def row(backend: str, seconds: dict) -> dict:
    out = {"backend": backend, "T": STEPS, "B": BATCH, "D": INPUTS, "H": HIDDENS,
           "mean_length": float(lengths().mean())}
    out.update({f"{name}_ms": sec * 1e3 for name, sec in seconds.items()})
    out["padded_ratio"] = seconds["padded"] / seconds["full"]
    out["forward_ratio"] = seconds["forward_padded"] / seconds["forward_full"]
    if "torch_packed" in seconds:
        out["torch_packed_ratio"] = seconds["torch_packed"] / seconds["torch_full"]
    return out


def format_row(r: dict) -> str:
    own = f"  torch packed / full {r['torch_packed_ratio']:.2f}" if "torch_packed_ratio" in r else ""
    return (f"{r['backend']:<10} padded {r['padded_ms']:7.1f} ms  full {r['full_ms']:7.1f} ms  "
            f"padded / full {r['padded_ratio']:.2f}  forward {r['forward_ratio']:.2f}{own}")


def markdown(rows) -> str:
    lines = ["| backend | padded ms | full ms | padded / full | forward: padded / full | torch packed / full |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        own = f"{r['torch_packed_ratio']:.2f}" if "torch_packed_ratio" in r else "–"
        forward = f"{r['forward_ratio']:.2f}" if "forward_ratio" in r else "–"  # runs before it had none
        lines.append(f"| {r['backend']} | {r['padded_ms']:.1f} | {r['full_ms']:.1f} | {r['padded_ratio']:.2f} "
                     f"| {forward} | {own} |")
    return "\n".join(lines)
