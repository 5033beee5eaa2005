"""The NumPy reference as a backend (forward + hand-written BPTT), and NumPy Ops for the neutral recurrence."""
from __future__ import annotations

import numpy as np

from multirnn import reference

from ._base import FrameworkBackend


class NumpyOps(FrameworkBackend):
    """multirnn.recurrence on NumPy: lets the fused, backend-neutral code be checked with no framework."""

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

    def flip(self, x):
        return x[::-1]

    def swap01(self, x):
        return x.swapaxes(0, 1)

    def zeros_state(self, xs, hidden):
        return np.zeros((xs.shape[1], hidden), xs.dtype)

    def scan(self, step, carry, xs, reverse=False):
        ys = []
        for x in (xs[::-1] if reverse else xs):
            carry, y = step(carry, x)
            ys.append(y)
        return carry, np.stack(ys[::-1] if reverse else ys)


class Backend(NumpyOps):
    name = "numpy"

    def forward(self, model, params, xs, flat_state):
        ys, finals, _ = reference.forward(model, params, xs, flat_state)
        return ys, finals

    def gradients(self, model, params, xs, flat_state, cotangent):
        _, _, tape = reference.forward(model, params, xs, flat_state)
        return reference.backward(model, params, tape, cotangent)[0]
