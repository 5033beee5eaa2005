"""Dropout between stacked layers, with masks drawn in NumPy so every backend drops the same units."""
from __future__ import annotations

import numpy as np

from .spec import RecurrentSpec


def dropout_masks(model: RecurrentSpec, steps: int, batch: int, seed, dtype) -> list[np.ndarray] | None:
    """Inverted-dropout masks for the inputs of layers 1..num_layers-1 (none after the last layer):
    each entry is 0 with probability ``model.dropout`` and ``1 / (1 - dropout)`` otherwise, so the
    expected activation is unchanged and eval mode is the identity. None when there is nothing to drop.
    ``seed`` None draws fresh masks (still identical across backends within one call)."""
    if model.dropout == 0 or model.num_layers == 1:
        return None
    rng = np.random.default_rng(seed)
    keep = 1.0 - model.dropout
    shape = (steps, batch, model.output_size)
    return [((rng.random(shape) < keep) / keep).astype(dtype) for _ in range(model.num_layers - 1)]
