"""Training the language model: minibatch SGD with global-norm gradient clipping, on any backend.

The backend computes loss and gradients (its own autodiff); clipping and the update are plain NumPy in
the params' dtype, so from one seed every backend walks the same path (d2l's JAX trainer never clipped:
this one always does when ``max_norm`` is set). The position in the batch stream (epoch, batch index)
and the state carried by sequential partitioning are part of the trainer's state, so a run saved on one
backend resumes on another exactly where it stopped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import validate
from . import text
from ..clipping import global_norm, scaled
from .model import LanguageModel, check_lm, check_lm_params, time_major_loss_and_grads


@dataclass
class TrainConfig:
    scheme: str = "random"  # minibatch scheme of multirnn.lm.text: random | sequential
    batch_size: int = 32
    num_steps: int = 35
    lr: float = 1.0
    max_norm: float | None = 1.0  # global-norm clipping threshold; None = no clipping
    seed: int = 0  # seeds the batch stream (the params' seed is init_lm_params')

    def __post_init__(self):
        if self.scheme not in text.SCHEMES:
            raise ValueError(f"scheme must be one of {text.SCHEMES}, got {self.scheme!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.max_norm is not None and not (isinstance(self.max_norm, (int, float)) and self.max_norm > 0):
            raise ValueError(f"max_norm must be a positive number or None, got {self.max_norm!r}")


def clip_gradients(grads: dict, max_norm: float | None) -> tuple[dict, float]:
    """Scale all gradients by max_norm / ||g|| when the global L2 norm ||g|| exceeds max_norm (d2l's
    grad_clipping, via multirnn.clipping). Returns (clipped grads, norm before clipping)."""
    norm = global_norm(grads)
    if max_norm is None or norm <= max_norm:
        return grads, norm
    return scaled(grads, max_norm / norm), norm


def sgd_step(params: dict, grads: dict, lr: float) -> dict:
    return {name: (value - lr * grads[name]).astype(value.dtype, copy=False)
            for name, value in params.items()}


@dataclass
class Progress:
    """Where a run is: the next batch is batch ``batch`` of epoch ``epoch``; ``step`` updates so far.
    ``epoch_loss``/``epoch_batches`` accumulate the current epoch; ``history`` holds finished epochs."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    epoch_loss: float = 0.0
    epoch_batches: int = 0
    history: dict = field(default_factory=lambda: {"train_perplexity": [], "valid_perplexity": []})


class Trainer:
    """``Trainer(lm, params, corpus, config, backend).step()`` does one SGD update; ``run_epoch()`` the
    rest of the current epoch. ``params``/``progress``/``carried`` are what a checkpoint stores."""

    def __init__(self, lm: LanguageModel, params: dict, corpus: np.ndarray, config: TrainConfig,
                 backend: str = "numpy", progress: Progress | None = None, carried: list | None = None):
        from multirnn import backends

        self.lm = check_lm(lm)
        self.dtype = check_lm_params(lm, params)
        self.params = {name: np.array(value) for name, value in params.items()}
        self.corpus = np.asarray(corpus)
        self.config = config
        self.backend = backend
        self.impl = backends.get(backend)
        self.progress = progress or Progress()
        self.carried = carried  # flat state carried between sequential batches (None = zeros)
        self._epoch_cache: tuple[int, list] | None = None
        if not self.batches(self.progress.epoch):
            raise ValueError(f"corpus of {len(self.corpus)} tokens gives no batch of batch_size="
                             f"{config.batch_size} x num_steps={config.num_steps}")

    def batches(self, epoch: int) -> list:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            c = self.config
            self._epoch_cache = (epoch, text.epoch_batches(self.corpus, c.scheme, c.batch_size,
                                                           c.num_steps, c.seed, epoch))
        return self._epoch_cache[1]

    def step(self) -> dict:
        """One update. Returns {loss, grad_norm, tokens, epoch_done}."""
        p, c = self.progress, self.config
        x, y = self.batches(p.epoch)[p.batch]
        state = self.carried if (c.scheme == "sequential" and self.carried is not None) else \
            validate.check_state(self.lm.rnn, None, x.shape[0], self.dtype)
        loss, grads, _, finals = time_major_loss_and_grads(
            self.impl, self.lm, self.params, np.ascontiguousarray(x.T), np.ascontiguousarray(y.T), state)
        grads = {name: np.asarray(g, self.dtype) for name, g in grads.items()}
        grads, norm = clip_gradients(grads, c.max_norm)
        self.params = sgd_step(self.params, grads, c.lr)
        self.carried = [tuple(np.asarray(a, self.dtype) for a in unit) for unit in finals] \
            if c.scheme == "sequential" else None
        p.step += 1
        p.batch += 1
        p.epoch_loss += loss
        p.epoch_batches += 1
        done = p.batch == len(self.batches(p.epoch))
        return {"loss": loss, "grad_norm": norm, "tokens": x.size, "epoch_done": done}

    def finish_epoch(self, valid: np.ndarray | None = None, eval_batch_size: int = 16) -> dict:
        """Close the epoch: record train perplexity exp(mean batch loss) and, given ``valid`` tokens,
        the validation perplexity; move on to the next epoch with a fresh state."""
        from .model import perplexity

        p = self.progress
        train_ppl = math.exp(p.epoch_loss / max(p.epoch_batches, 1))
        valid_ppl = None
        if valid is not None and len(valid) > eval_batch_size:
            valid_ppl = perplexity(self.lm, self.params, valid, self.backend, eval_batch_size,
                                   self.config.num_steps)
        p.history["train_perplexity"].append(train_ppl)
        p.history["valid_perplexity"].append(valid_ppl)
        p.epoch, p.batch, p.epoch_loss, p.epoch_batches = p.epoch + 1, 0, 0.0, 0
        self.carried = None
        return {"epoch": p.epoch, "train_perplexity": train_ppl, "valid_perplexity": valid_ppl}

    def run_steps(self, count: int) -> list[float]:
        """``count`` updates (crossing epochs as needed); the loss of each."""
        losses = []
        for _ in range(count):
            info = self.step()
            losses.append(info["loss"])
            if info["epoch_done"]:
                self.finish_epoch()
        return losses


def config_to_dict(config: TrainConfig) -> dict:
    return asdict(config)
