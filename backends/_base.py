"""What every framework adapter shares: numpy in/out around multirnn.recurrence, and the smoke test."""
from __future__ import annotations

import contextlib

import numpy as np

from multirnn import recurrence
from multirnn.lm import head
from multirnn.state import flatten_state, nest_state


class FrameworkBackend:
    """Subclasses supply the Ops protocol of multirnn.recurrence plus asarray/to_numpy/zeros/swap01."""

    name = ""
    version = ""
    # Where the framework has a fused kernel (torch, MXNet) the recurrence runs whole layers in it
    # (recurrence.run); False runs every layer through the generic scan instead (tests, benchmarks).
    use_fused_kernels = True

    @contextlib.contextmanager
    def fused_kernels(self, enabled: bool):
        """``with backend.fused_kernels(False):`` runs the generic recurrence inside, then restores."""
        before, self.use_fused_kernels = self.use_fused_kernels, enabled
        try:
            yield self
        finally:
            self.use_fused_kernels = before

    def kernel_accepts(self, model, dtype) -> bool:
        """A backend's own exceptions to its fused kernel (MXNet: float64 relu)."""
        return True

    def fused_layer_accepts(self, model, xs) -> bool:
        """Whether recurrence.run may use this backend's fused_layer (where it has one)."""
        return self.use_fused_kernels and self.kernel_accepts(model, xs.dtype)

    def kernel_path(self, model, dtype) -> str:
        """"fused" where forward/gradients without ``lengths`` run whole layers of ``model`` in the
        framework's fused kernel, else "generic" (the step-by-step recurrence)."""
        fused = (hasattr(self, "fused_layer") and self.use_fused_kernels
                 and recurrence.kernel_computes(model) and self.kernel_accepts(model, np.dtype(dtype)))
        return "fused" if fused else "generic"

    def forward(self, model, params, xs, flat_state, masks=None, lengths=None):
        """Time-major numpy in, numpy out: (outputs, flat final state)."""
        ys, finals = self.run_recurrence(model, *self._to_framework(params, xs, flat_state, masks),
                                         padding=self._padding(model, xs, lengths))
        return self.to_numpy(ys), [tuple(self.to_numpy(a) for a in unit) for unit in finals]
    def _padding(self, model, xs, lengths):
        """numpy lengths (or None) -> recurrence.Padding of framework arrays (or None)."""
        if lengths is None:
            return None
        valid = np.arange(xs.shape[0])[:, None] < lengths[None, :]  # (T, B)
        blocks = np.concatenate([valid[:, :, None], ~valid[:, :, None]], axis=2)  # [m, 1 - m]
        mask = np.repeat(blocks, model.num_hiddens, axis=2).astype(xs.dtype)
        return recurrence.Padding(self.asarray(np.asarray(lengths, np.int64)), self.asarray(mask))

    def run_recurrence(self, model, params, xs, flat_state, masks=None, padding=None):
        """multirnn.recurrence.run on framework arrays; a backend may compile or cache it here."""
        return recurrence.run(self, model, params, xs, flat_state, masks, padding)

    def _to_framework(self, params, xs, flat_state, masks=None):
        """numpy -> framework arrays for the arguments of multirnn.recurrence.run."""
        return ({k: self.asarray(v) for k, v in params.items()}, self.asarray(xs),
                [tuple(self.asarray(a) for a in unit) for unit in flat_state],
                None if masks is None else [self.asarray(m) for m in masks])

    def asindex(self, tokens):
        """Integer token indices as a framework array (overridden where the framework wants another
        integer type)."""
        return self.asarray(tokens)

    def lm_logits(self, model, params, tokens, flat_state):
        """Language-model logits (multirnn.head): time-major numpy in, numpy out."""
        p, _, s, _ = self._to_framework(params, tokens, flat_state)
        out, finals = head.logits(self, model, p, self.asindex(tokens), s)
        return self.to_numpy(out), [tuple(self.to_numpy(a) for a in unit) for unit in finals]

    def run_user(self, model, params, inputs, state=None):
        """The recurrence on framework arrays in the user's conventions (batch_first, nested state);
        what the native layers call."""
        xs = self.swap01(inputs) if model.batch_first else inputs
        if state is None:
            zeros = self.zeros_state(xs, model.num_hiddens)
            flat = [(zeros,) * model.state_arrays for _ in model.units()]
        else:
            flat = flatten_state(model, state)
        ys, finals = self.run_recurrence(model, params, xs, flat)
        return (self.swap01(ys) if model.batch_first else ys), nest_state(model, finals)

    def smoke_test(self) -> None:
        """A tiny forward pass, so available() lists only backends that really run."""
        from multirnn.spec import RNNScratch  # local: keeps the import graph one-way at load time

        model = RNNScratch(2, 3)
        params = {k: np.full(s, 0.1, np.float32) for k, s in model.param_shapes().items()}
        xs = np.ones((2, 1, 2), np.float32)
        ys, _ = self.forward(model, params, xs, [(np.zeros((1, 3), np.float32),)])
        if ys.shape != (2, 1, 3) or not np.all(np.isfinite(ys)):
            raise RuntimeError(f"{self.name} smoke test gave {ys!r}")
