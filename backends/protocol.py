"""Everything a backend provides, declared in one place (tests/test_backend_protocol.py checks it).

A backend is array operations on its framework plus two hooks, ``value_and_grad`` (its autodiff) and
``compile`` (its tracer); ``forward``/``gradients``/``step``/``run_user`` are written once on top of
them in backends/_base.py, which also raises a sentence naming any member a backend lacks. Arrays are the
framework's own; ``+``, ``-``, ``*`` come from its operator overloads. Imports no framework.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Protocol, Sequence, runtime_checkable

Array = Any


@runtime_checkable
class BackendProtocol(Protocol):
    # ---- metadata ----
    name: str  # the registry name ("torch", ...)
    version: str  # the framework's version
    use_fused_kernels: bool  # switch: False runs every layer through the generic scan
    has_fused_kernel: bool  # whether fused_layer exists (torch, MXNet)
    hoist_input_projection: bool  # X·W for the whole sequence before the loop (False: per step)
    shrinking_scan: bool  # scan's step may compute a prefix of the batch (recurrence.shrinking_step)
    static_segments: bool  # a padded batch runs in multirnn.packed's coarse segments of static shape,
    # one trace per segment pattern (JAX: its scans have static lengths); see ``static``
    is_reference: bool  # forward/gradients/step are the NumPy oracle, not the recurrence (numpy only)

    # ---- array operations the recurrence and the LM head need ----
    def matmul(self, a: Array, b: Array) -> Array:
        """Contract a's last axis with b's first (a of rank 2 or 3, b of rank 2)."""

    def tanh(self, x: Array) -> Array:
        """Elementwise tanh."""

    def relu(self, x: Array) -> Array:
        """Elementwise max(x, 0)."""

    def sigmoid(self, x: Array) -> Array:
        """Elementwise 1 / (1 + exp(-x))."""

    def concat(self, xs: Sequence[Array], axis: int) -> Array:
        """Join arrays along ``axis``."""

    def split(self, x: Array, n: int) -> Sequence[Array]:
        """``n`` equal parts along the last axis."""

    def scan(self, step: Callable, carry: tuple, xs, reverse: bool = False) -> tuple[tuple, Array]:
        """carry, y = step(carry, xs[t]) for t in order (last to first if reverse): (carry, stacked ys[t]).
        ``xs`` is an array or a tuple of arrays of one length; then step gets the tuple of their x[t]."""

    def where(self, keep: Array, new: Array, old: Array) -> Array:
        """``new`` where ``keep`` (bool (batch, 1), broadcast over the last axis), else ``old``: a select,
        exact, whose gradient goes to the chosen side only."""

    def zeros(self, shape: tuple, like: Array) -> Array:
        """Zeros of ``shape`` in like's dtype (and device)."""

    def take(self, x: Array, indices: Array, axis: int) -> Array:
        """x's slices at integer ``indices`` (from asindex) along ``axis``: a gather, differentiable."""

    def split_sizes(self, x: Array, sizes: Sequence[int], axis: int) -> Sequence[Array]:
        """Consecutive parts of x along ``axis`` with the given sizes (summing to x.shape[axis]), in one op."""

    def size(self, x: Array, axis: int):
        """x's length along ``axis``: an int, or a traced int32 scalar where the trace does not know it
        (TensorFlow under a relaxed signature): multirnn.packed's segments may be traced."""

    def reverse_padded(self, x: Array, lengths: Array) -> Array:
        """y[t, b] = x[lengths[b] - 1 - t, b] for t < lengths[b], else x[t, b]."""

    def mask_padded(self, x: Array, lengths: Array) -> Array:
        """x with x[t, b] = 0 for t >= lengths[b] (a select: whatever x holds there)."""

    def last_valid(self, x: Array, lengths: Array) -> Array:
        """x[lengths[b] - 1, b] for each sequence b of positive length, (batch, ...); anything (read
        in range) where lengths[b] is 0."""

    def flip_time(self, x: Array) -> Array:
        """x[::-1]: the first (time) axis reversed."""

    def swap01(self, x: Array) -> Array:
        """Swap the first two axes (batch-major <-> time-major)."""

    def zeros_state(self, xs: Array, hidden: int) -> Array:
        """Zeros (batch, hidden) in xs's dtype, batch = xs.shape[1]."""

    def one_hot(self, indices: Array, depth: int, like: Array) -> Array:
        """Float one-hot of integer indices in like's dtype, a new last axis of size depth."""

    def take_rows(self, table: Array, indices: Array) -> Array:
        """table[indices]: an embedding lookup."""

    def log_softmax(self, x: Array) -> Array:
        """log softmax over the last axis."""

    def sum_all(self, x: Array) -> Array:
        """The sum of every element, a scalar array."""

    # ---- NumPy <-> framework ----
    def asarray(self, a) -> Array:
        """A framework array of a NumPy array, same dtype."""

    def asindex(self, a) -> Array:
        """A framework integer array of NumPy token indices, in the type its gathers take."""

    def runs_forward_to_ends(self, model, dtype, masks) -> bool:
        """Whether a padded forward pass on a batch sorted on the host may run past each sequence's
        end in coarse segments, its outputs and final states exact (multirnn.packed.run_to_ends;
        AbstractBackend.forward decides the rest: relu, the freeze margin); ``dtype`` NumPy's,
        ``masks`` the dropout masks or None."""

    def host_arg(self, a) -> Array:
        """A NumPy argument of ``compile``'s function (forward, gradients, step) as it takes it: the
        framework's array (``asarray``), or NumPy itself where the compiled call puts it on the
        device faster (JAX)."""

    def static(self, value: tuple) -> tuple:
        """A host tuple (a plan's coarse segments) as ``compile``'s function takes it as static, part
        of what it traces for, not a traced leaf (JAX: a pytree node without leaves); else itself."""

    def to_numpy(self, x: Array):
        """A NumPy array of a framework array (detached from any autodiff)."""

    def dtype_of(self, x: Array):
        """The NumPy dtype of a framework array."""

    def precision(self, dtype) -> ContextManager:
        """A context in which the framework computes in ``dtype`` (JAX's x64; a no-op elsewhere)."""

    # ---- fused kernel (where has_fused_kernel) ----
    def fused_kernel(self, model, units: list) -> Callable:
        """The framework's fused kernel for one layer's units (one direction, or both), its weights
        prepared once: ``run(xs, states) -> (ys, final state per unit)``; called once per segment of a
        padded batch (multirnn.packed), so nothing per call is repeated."""

    def fused_layer(self, model, units: list, xs: Array, states: list) -> tuple[Array, list]:
        """One whole layer (both directions) in the framework's fused kernel: (ys, final state per unit)."""

    def fused_kernel_accepts(self, model, dtype) -> bool:
        """The backend's own exceptions to its fused kernel (MXNet: float64 relu); True elsewhere."""

    def fused_kernels(self, enabled: bool) -> ContextManager:
        """``with backend.fused_kernels(False):`` sets use_fused_kernels inside, restores it after."""

    # ---- autodiff and compilation: the two hooks the shared code is written on ----
    def value_and_grad(self, fn: Callable, seeded: bool = False) -> Callable:
        """fn(wrt, *rest) -> (value, aux) becomes g(wrt, *rest[, seed]) -> ((value, aux), d value / d wrt);
        value a scalar, or with ``seeded`` any array and the gradient that of sum(value * seed) (a VJP)."""

    def compile(self, fn: Callable) -> Callable:
        """fn traced/compiled once per input signature (tf.function, jax.jit); identity when eager."""

    # ---- written once in backends/_base.py ----
    def run_recurrence(self, model, params: dict, xs: Array, flat_state: list, masks=None,
                       padding=None) -> tuple[Array, list]:
        """multirnn.recurrence.run on framework arrays (MXNet runs its hybridized graph here)."""

    def forward(self, model, params: dict, xs, flat_state: list, masks=None, lengths=None,
                step_mask=None) -> tuple:
        """NumPy time-major in, (outputs, flat final state) NumPy out. ``masks``: dropout; ``lengths``:
        padding; ``step_mask``: a (T, B) bool Keras mask (multirnn.masking)."""

    def gradients(self, model, params: dict, xs, flat_state: list, cotangent, masks=None,
                  lengths=None, step_mask=None) -> dict:
        """NumPy in, d sum(outputs * cotangent) / d params NumPy out."""

    def step(self, model, params: dict, x_t, flat_state: list, masks=None) -> tuple:
        """One time step of every layer of a unidirectional model, compiled once per spec: NumPy
        x_t (batch, in), flat state and ``masks`` (one (batch, units) array per layer after the
        first, or None) in; (top layer's h_t, flat new state) NumPy out."""

    def run_user(self, model, params: dict, inputs: Array, state=None, lengths=None,
                 dropout_seed=None, padding=None) -> tuple:
        """The recurrence on framework arrays in the user's layout and nested state (native layers);
        ``lengths`` (framework ints) and ``dropout_seed`` as in multirnn.forward(training=True);
        ``padding``: a recurrence.Padding the caller built instead (the Keras layer's mask)."""

    def padding_of(self, model, xs: Array, lengths: Array):
        """recurrence.Padding of framework ``lengths`` for time-major ``xs`` (eager: read on the host;
        traced backends: built in graph ops)."""

    def native_layer(self, model, params=None, seed: int = 0, dtype="float32"):
        """The framework's own trainable layer holding ``params`` (or the seeded init)."""

    def smoke_test(self) -> None:
        """A tiny forward pass; raises if the backend does not really run here."""
