"""Gradient clipping by global norm (as torch.nn.utils.clip_grad_norm_ / tf.clip_by_global_norm):
keeps an SGD step bounded when BPTT gradients explode."""
from __future__ import annotations

import numpy as np


def global_norm(grads: dict) -> float:
    """sqrt(sum of squares) over every array of ``grads``, computed in float64 without overflow."""
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of numpy arrays, got {type(grads).__name__}")
    for name, value in grads.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise TypeError(f"grads[{name!r}] must be a float numpy.ndarray, got "
                            f"{getattr(value, 'dtype', type(value).__name__)}")
    arrays = [np.asarray(v, np.float64).ravel() for v in grads.values()]
    if not arrays:
        return 0.0
    flat = np.concatenate(arrays)
    if not np.all(np.isfinite(flat)):
        raise ValueError("grads must be finite to be clipped, got nan/inf in "
                         f"{[k for k, v in grads.items() if not np.all(np.isfinite(v))]}")
    scale = np.max(np.abs(flat), initial=0.0)  # scaled sum of squares: no overflow for huge grads
    return 0.0 if scale == 0 else float(scale * np.sqrt(np.sum((flat / scale) ** 2)))


def clip_by_global_norm(grads: dict, max_norm: float) -> dict:
    """``grads`` scaled by ``min(1, max_norm / global_norm(grads))``: same direction, norm at most
    ``max_norm``. NumPy dict in, new NumPy dict out (dtypes kept). Non-finite grads raise ValueError:
    no scale factor can make them finite."""
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.floating)) \
            or not np.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    norm = global_norm(grads)
    factor = min(1.0, float(max_norm) / norm) if norm > 0 else 1.0
    return {name: (value * factor).astype(value.dtype) for name, value in grads.items()}
