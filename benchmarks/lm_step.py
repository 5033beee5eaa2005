"""One training step of the character language model: ``benchmarks/run.py --suite lm``.

GRU-256 char LM (one-hot inputs, reset-after GRU: what ``nn.GRU`` computes), batch 32 x 35 steps, SGD
lr 1 with global-norm clipping at 1: ``multirnn.lm.Trainer(...).step()`` on each backend against a plain
torch loop written as a torch user would (``nn.GRU`` + ``nn.Linear``, ``cross_entropy``, ``backward``,
``clip_grad_norm_``, an in-place SGD update). Both sides draw their batches the same way; interleaved
medians as in run.py.
"""
from __future__ import annotations

import numpy as np

from multirnn.lm import LanguageModel, Trainer, TrainConfig, init_lm_params
from multirnn.lm.text import load_corpus

HIDDENS, BATCH, STEPS = 256, 32, 35


def _setup():
    corpus, vocab = load_corpus(max_tokens=60_000)
    lm = LanguageModel.build(len(vocab), HIDDENS, cell="gru", reset_after=True)
    config = TrainConfig(batch_size=BATCH, num_steps=STEPS, lr=1.0, max_norm=1.0)
    return lm, init_lm_params(lm, seed=0), np.asarray(corpus), config


def calls(backend: str) -> dict:
    lm, params, corpus, config = _setup()
    trainer = Trainer(lm, params, corpus, config, backend=backend)
    # the torch loop in every backend's rounds, so each row's ratio is measured side by side
    return {"multirnn": trainer.step, "torch_loop": _torch_loop(lm, params, trainer)}


def _torch_loop(lm, params, trainer):
    import torch

    gru = torch.nn.GRU(lm.vocab_size, HIDDENS)
    head = torch.nn.Linear(HIDDENS, lm.vocab_size)
    weights = list(gru.parameters()) + list(head.parameters())
    batches = trainer.batches(0)
    position = [0]

    def step():
        x, y = batches[position[0] % len(batches)]
        position[0] += 1
        inputs = torch.nn.functional.one_hot(torch.from_numpy(x.T), lm.vocab_size).float()
        outputs, _ = gru(inputs)
        loss = torch.nn.functional.cross_entropy(head(outputs).reshape(-1, lm.vocab_size),
                                                 torch.from_numpy(y.T).reshape(-1))
        for w in weights:
            w.grad = None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        with torch.no_grad():
            for w in weights:
                w -= 1.0 * w.grad
        return loss.item()
    return step


def row(backend: str, seconds: dict) -> dict:
    return {"backend": backend, "H": HIDDENS, "batch": BATCH, "steps": STEPS,
            **{f"{name}_ms": sec * 1e3 for name, sec in seconds.items()},
            "ratio": seconds["multirnn"] / seconds["torch_loop"]}


def format_row(r: dict) -> str:
    return (f"{r['backend']:<10} Trainer.step {r['multirnn_ms']:6.1f} ms  plain torch loop "
            f"{r['torch_loop_ms']:6.1f} ms  ratio {r['ratio']:.2f}")


def markdown(rows) -> str:
    lines = ["| backend | Trainer.step ms | plain torch loop ms | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['multirnn_ms']:.1f} | {r['torch_loop_ms']:.1f} | {r['ratio']:.2f} |"
              for r in rows]
    return "\n".join(lines)
