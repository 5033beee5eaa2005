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
    with np.errstate(over="ignore", under="ignore"):  # both are caught below
        squares = sum(_sum_of_squares(value) for value in grads.values())
    if _SMALLEST_EXACT_SQUARES <= squares < np.inf:  # the training step's path: one pass per array
        return float(np.sqrt(squares))
    bad = [name for name, value in grads.items() if not np.all(np.isfinite(value))]
    if bad:
        raise ValueError(f"grads must be finite to be clipped, got nan/inf in {bad}")
    # float64 squares overflowed or underflowed: sum the squares scaled by the largest magnitude
    scale = max((float(np.max(np.abs(v), initial=0.0)) for v in grads.values()), default=0.0)
    if scale == 0:
        return 0.0
    with np.errstate(under="ignore"):  # squares below 1e-308 of the largest one's add nothing
        return float(scale * np.sqrt(sum(_sum_of_squares(v / scale) for v in grads.values())))


# a finite float64 sum of squares this large lost nothing that matters to underflow (float32 grads
# never reach either end: their squares fit float64 with room to spare)
_SMALLEST_EXACT_SQUARES = np.finfo(np.float64).tiny * 2.0 ** 53


def _sum_of_squares(value: np.ndarray) -> float:
    squares = np.array(value, np.float64, order="C").ravel()  # a C-order copy: squared in place, summed
    # in the same order whatever the layout a backend handed back
    np.multiply(squares, squares, out=squares)
    return float(np.sum(squares))


def clip_by_global_norm(grads: dict, max_norm: float) -> dict:
    """``grads`` scaled by ``min(1, max_norm / global_norm(grads))``: same direction, norm at most
    ``max_norm``. NumPy dict in, new NumPy dict out (dtypes kept). Non-finite grads raise ValueError:
    no scale factor can make them finite."""
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.floating)) \
            or not np.isfinite(max_norm) or max_norm <= 0:
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    norm = global_norm(grads)
    factor = min(1.0, float(max_norm) / norm) if norm > 0 else 1.0
    return scaled(grads, factor)


def scaled(grads: dict, factor: float) -> dict:
    """Every array of ``grads`` times ``factor`` (a Python float), dtypes kept, in new arrays."""
    return {name: (value * factor).astype(value.dtype, copy=False) for name, value in grads.items()}
