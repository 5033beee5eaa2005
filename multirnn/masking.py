"""Arbitrary step masks (``mask=``), with the semantics of Keras 3 (checked against Keras itself, see
docs/parity.md#masks): a masked step keeps every unit's state; what a unit outputs there depends on the
spec as in Keras:

- unidirectional (also ``reverse``, Keras ``go_backwards``): the unit's previous output, zeros before
  its first unmasked step (Keras' default ``zero_output_for_mask=False``);
- bidirectional: zeros (Keras' ``Bidirectional`` switches ``zero_output_for_mask`` on).

A reversed unit reverses the whole padded sequence, mask included (not within a length, as ``lengths``
does). NumPy only: backends turn ``output_factor`` into framework arrays.
"""
from __future__ import annotations

import numpy as np


def is_suffix(keep: np.ndarray) -> bool:
    """Time-major (T, B) bool: each sequence's kept steps come first, padding after."""
    lengths = keep.sum(axis=0)
    return bool(np.array_equal(keep, np.arange(keep.shape[0])[:, None] < lengths[None, :]))


def output_factor(model, keep, xp=np):
    """(T, B, ...) 0/1 ints: where the recurrence's output (the carried state, at a masked step) is
    the unit's output, the rest being zeros. Bidirectional: the unmasked steps. Unidirectional: the
    steps at or after the first unmasked step in the order the unit runs (from the end when
    ``reverse``). ``keep``: 0/1 ints; ``xp``: numpy, or keras.ops for the Keras layer's tensors."""
    if model.bidirectional:
        return keep
    if model.reverse:
        return xp.flip(xp.minimum(xp.cumsum(xp.flip(keep, 0), axis=0), 1), 0)
    return xp.minimum(xp.cumsum(keep, axis=0), 1)
