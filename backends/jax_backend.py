"""JAX adapter: ``jax.lax.scan``; ``compile`` is ``jax.jit`` (once per spec and shape; the spec is
closed over, i.e. static), ``value_and_grad`` is ``jax.value_and_grad``.

float64 runs inside JAX's x64 context (``precision``) rather than flipping JAX's global default for the
whole process (which would change every other JAX user's dtypes).
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from multirnn import recurrence, validate
from multirnn.params import init_params

from ._base import AbstractBackend


def _enable_x64():
    """JAX's x64 context manager: ``jax.enable_x64(True)`` since jax 0.8 (where
    ``jax.experimental.enable_x64`` was removed), ``jax.experimental.enable_x64()`` before."""
    if callable(getattr(jax, "enable_x64", None)):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def precision(dtype):
    """A context in which JAX computes in ``dtype``: x64 for float64, nothing to do for float32."""
    return _enable_x64() if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


@jax.tree_util.register_static
class _Static(tuple):
    """A tuple jax.jit takes as static (part of the key it traces for), not as traced leaves."""


class Backend(AbstractBackend):
    name = "jax"
    version = jax.__version__
    static_segments = True  # a trace per segment pattern (lax.scan has a static length)
    # Project inputs inside the scan: differentiating a scan over the hoisted (T, B, G·H) projection
    # made XLA:CPU 1.1-1.7x slower than Flax's cells (measured; README, "Performance").
    hoist_input_projection = False
    matmul = staticmethod(jnp.matmul)
    tanh = staticmethod(jnp.tanh)
    relu = staticmethod(jax.nn.relu)
    sigmoid = staticmethod(jax.nn.sigmoid)
    asarray = staticmethod(jnp.asarray)
    to_numpy = staticmethod(np.asarray)

    def compile(self, fn):
        return jax.jit(fn)

    def host_arg(self, a):
        return a  # jit's dispatch puts NumPy on the device in C++: 2 ms a call less than jnp.asarray
        # for an LSTM's arrays (measured at T=B=64, H=256, where a forward pass costs 28 ms)

    def static(self, value):
        return _Static(value)

    def value_and_grad(self, fn, seeded=False):
        if not seeded:
            return jax.value_and_grad(fn, has_aux=True)

        def seeded_loss(wrt, *rest):
            value, aux = fn(wrt, *rest[:-1])
            return jnp.sum(value * rest[-1]), (value, aux)
        value_and_grad_fn = jax.value_and_grad(seeded_loss, has_aux=True)

        def vjp(wrt, *rest):
            (_, value_and_aux), grads = value_and_grad_fn(wrt, *rest)
            return value_and_aux, grads
        return vjp

    def precision(self, dtype):
        return precision(dtype)

    def concat(self, xs, axis):
        return jnp.concatenate(xs, axis=axis)

    def split(self, x, n):
        return jnp.split(x, n, axis=-1)

    where = staticmethod(jnp.where)

    def zeros(self, shape, like):
        return jnp.zeros(shape, like.dtype)

    def take(self, x, indices, axis):
        return jnp.take(x, indices, axis=axis)

    def split_sizes(self, x, sizes, axis):
        return jnp.split(x, np.cumsum(sizes)[:-1], axis=axis)

    def padding_of(self, model, xs, lengths):
        """In graph ops, so a jitted Flax module takes traced lengths (checked when they are concrete)."""
        if not isinstance(lengths, jax.core.Tracer):
            validate.check_lengths(np.asarray(lengths), xs.shape[1], xs.shape[0])
        keep = (jnp.arange(xs.shape[0])[:, None] < jnp.asarray(lengths)[None, :])[:, :, None]
        return recurrence.Padding(jnp.asarray(lengths), keep, keep.astype(xs.dtype))

    def mask_padded(self, x, lengths):
        return jnp.where(jnp.arange(x.shape[0])[:, None, None] < lengths[:, None], x, 0)

    def last_valid(self, x, lengths):
        last = jnp.maximum(lengths, 1) - 1  # a sequence of length 0 reads step 0 (run_to_ends replaces it)
        return jnp.take_along_axis(x, last[None, :, None], axis=0)[0]

    def runs_forward_to_ends(self, model, dtype, masks) -> bool:
        return True  # three scans in coarse segments: 0.86x the masked scan's forward (measured)

    def reverse_padded(self, x, lengths):
        t = jnp.arange(x.shape[0])[:, None]
        index = jnp.where(t < lengths, lengths - 1 - t, t)  # (T, B): each sequence within its length
        return jnp.take_along_axis(x, index[:, :, None], axis=0)

    def swap01(self, x):
        return jnp.swapaxes(x, 0, 1)

    def zeros_state(self, xs, hidden):
        return jnp.zeros((xs.shape[1], hidden), xs.dtype)

    def one_hot(self, indices, depth, like):
        return jax.nn.one_hot(indices, depth, dtype=like.dtype)

    def take_rows(self, table, indices):
        return jnp.take(table, indices, axis=0)

    def log_softmax(self, x):
        return jax.nn.log_softmax(x, axis=-1)

    def sum_all(self, x):
        return jnp.sum(x)

    def scan(self, step, carry, xs, reverse=False):
        return jax.lax.scan(step, carry, xs, reverse=reverse)

    def native_layer(self, model, params=None, seed=0, dtype="float32", api="linen"):
        """A Flax linen module bound to ``params`` (or to the seeded init): call it like a function;
        with ``api="nnx"`` a Flax ``nnx.Module`` (backends/nnx_module.py). For float64, call either
        inside ``precision("float64")`` (JAX's x64 context)."""
        from .flax_module import RecurrentModule

        if params is not None:
            dtype = next(iter(params.values())).dtype
        if api == "nnx":
            from .nnx_module import RecurrentNNX

            with precision(dtype):  # else float64 weights would be cut to float32 here
                return RecurrentNNX(model, params if params is not None else init_params(model, seed, dtype))
        module = RecurrentModule(model, seed=seed, dtype=str(np.dtype(dtype)))
        with precision(dtype):  # else float64 weights would be cut to float32 here
            if params is None:
                return module.bind(module.init(jax.random.PRNGKey(0), jnp.zeros(
                    (1, 1, model.num_inputs), dtype)))
            return module.bind({"params": {k: jnp.asarray(v) for k, v in params.items()}})
