"""The NumPy reference as a backend (forward + hand-written BPTT), and NumPy Ops for the neutral recurrence."""
from __future__ import annotations

import numpy as np

from multirnn import reference

from ._base import AbstractBackend


class NumpyOps(AbstractBackend):
    """multirnn.recurrence on NumPy: lets the fused, backend-neutral code be checked with no framework.
    NumPy has no autodiff, so it provides no value_and_grad."""

    name = "numpy-ops"
    version = np.__version__
    matmul = staticmethod(np.matmul)
    tanh = staticmethod(np.tanh)
    asarray = staticmethod(np.asarray)
    to_numpy = staticmethod(np.asarray)

    def relu(self, x):
        return np.maximum(x, 0)

    def sigmoid(self, x):
        return 1.0 / (1.0 + np.exp(-x))

    def concat(self, xs, axis):
        return np.concatenate(xs, axis=axis)

    def split(self, x, n):
        return np.split(x, n, axis=-1)

    where = staticmethod(np.where)

    def zeros(self, shape, like):
        return np.zeros(shape, like.dtype)

    def take(self, x, indices, axis):
        return np.take(x, indices, axis=axis)

    def split_sizes(self, x, sizes, axis):
        return np.split(x, np.cumsum(sizes)[:-1], axis=axis)

    def mask_padded(self, x, lengths):
        return np.where(np.arange(x.shape[0])[:, None, None] < lengths[:, None], x, 0)

    def reverse_padded(self, x, lengths):
        t = np.arange(x.shape[0])[:, None]
        index = np.where(t < lengths, lengths - 1 - t, t)  # (T, B): each sequence within its length
        return np.take_along_axis(x, index[:, :, None], axis=0)

    def swap01(self, x):
        return x.swapaxes(0, 1)

    def zeros_state(self, xs, hidden):
        return np.zeros((xs.shape[1], hidden), xs.dtype)

    def one_hot(self, indices, depth, like):
        return np.eye(depth, dtype=like.dtype)[indices]

    def take_rows(self, table, indices):
        return table[indices]

    def log_softmax(self, x):
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def sum_all(self, x):
        return x.sum()

    def scan(self, step, carry, xs, reverse=False):
        ys, steps = [], list(zip(*xs)) if isinstance(xs, tuple) else xs
        for x in (steps[::-1] if reverse else steps):
            carry, y = step(carry, x)
            ys.append(y)
        return carry, np.stack(ys[::-1] if reverse else ys)


class Backend(NumpyOps):
    """forward/gradients are multirnn.reference (its hand-written BPTT is numpy's "autodiff"), not the
    recurrence; multirnn.lm likewise uses multirnn.lm.reference where ``is_reference``."""

    name = "numpy"
    is_reference = True

    def forward(self, model, params, xs, flat_state, masks=None, lengths=None, step_mask=None):
        if step_mask is not None:
            return reference.forward_masked(model, params, xs, flat_state, step_mask, masks)
        if lengths is not None:
            return reference.forward_padded(model, params, xs, flat_state, lengths, masks)
        ys, finals, _ = reference.forward(model, params, xs, flat_state, masks)
        return ys, finals

    def step(self, model, params, x_t, flat_state, masks=None):
        # the reference itself, one step long: the same arithmetic as forward
        ys, finals = self.forward(model, params, x_t[None], flat_state,
                                  None if masks is None else [m[None] for m in masks])
        return ys[0], finals

    def gradients(self, model, params, xs, flat_state, cotangent, masks=None, lengths=None,
                  step_mask=None):
        if step_mask is not None:
            return reference.gradients_masked(model, params, xs, flat_state, step_mask, cotangent, masks)
        if lengths is not None:
            return reference.gradients_padded(model, params, xs, flat_state, lengths, cotangent, masks)
        _, _, tape = reference.forward(model, params, xs, flat_state, masks)
        return reference.backward(model, params, tape, cotangent, masks=masks)[0]
