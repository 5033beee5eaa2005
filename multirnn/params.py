"""Seeded parameters: drawn once in NumPy, loaded into every backend (no framework RNG decides a weight)."""
from __future__ import annotations

import numpy as np

from .spec import RecurrentSpec

FLOAT_DTYPES = ("float32", "float64")


def check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.name not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype.name}")
    return dtype


def init_params(model: RecurrentSpec, seed: int, dtype="float32") -> dict[str, np.ndarray]:
    """d2l's init: weights ~ normal(0, model.sigma), biases (and a learned initial state) zero, in
    the canonical layout.

    Draws are made in float64 in canonical name order and only then cast, so the float32 and float64
    params of one seed are the same numbers up to rounding, and the same seed gives identical arrays.
    """
    if not isinstance(model, RecurrentSpec):
        raise TypeError(f"model must be a multirnn spec (e.g. RNNScratch), got {type(model).__name__}")
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in model.param_shapes().items():
        unprefixed = name.rsplit(".", 1)[-1]
        starts_at_zero = unprefixed.startswith("b_") or unprefixed in ("h_0", "c_0")
        values = np.zeros(shape) if starts_at_zero else rng.normal(0.0, model.sigma, size=shape)
        params[name] = values.astype(dtype)
    return params


def randomize_biases(model: RecurrentSpec, params: dict, seed: int, scale: float = 0.1) -> dict:
    """A copy of ``params`` with normal(0, scale) biases (and learned initial states): d2l's zero
    biases would leave bias bugs unseen."""
    rng = np.random.default_rng(seed)
    out = dict(params)
    for name, shape in model.param_shapes().items():
        unprefixed = name.rsplit(".", 1)[-1]
        if unprefixed.startswith("b_") or unprefixed in ("h_0", "c_0"):
            out[name] = rng.normal(0.0, scale, size=shape).astype(params[name].dtype)
    return out
