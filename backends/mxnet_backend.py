"""MXNet adapter: the recurrence hybridized into one cached graph per spec and input shape (see
mxnet_graph), recorded by ``mxnet.autograd`` (``value_and_grad``); NDArray Ops below for the eager path.

``compile`` stays the identity: hybridizing needs the recurrence traced on Symbols (mxnet_graph's
SymbolOps), not an arbitrary function of NDArrays, so the graph cache is an override of
``run_recurrence``, which forward, gradients and the Gluon block all go through."""
from __future__ import annotations

import numpy as np

# MXNet 1.9.1 (archived) still calls numpy.bool, removed in numpy 1.24. Restore the alias here, just
# before mxnet loads, and never at ``import multirnn``.
if "bool" not in vars(np):  # not hasattr(): numpy 1.26 warns on that lookup
    np.bool = bool
import mxnet as mx  # noqa: E402

from multirnn import recurrence  # noqa: E402
from multirnn.params import init_params  # noqa: E402

from ._base import AbstractBackend, tree_leaves, tree_map  # noqa: E402
from .mxnet_graph import GraphCache, fused_kernel, fused_kernel_accepts, take  # noqa: E402




class Backend(AbstractBackend):
    """Ops on NDArrays (the eager path, kept for reference and tests) plus the hybridized runner."""

    name = "mxnet"
    version = mx.__version__
    has_fused_kernel = True
    fused_kernel_accepts = staticmethod(fused_kernel_accepts)
    matmul = staticmethod(mx.nd.dot)  # contracts a's last axis with b's first, any rank

    # Activation runs oneDNN kernels: ~7x (tanh) and ~2.5x (sigmoid) faster than mx.nd.tanh/sigmoid here.
    @staticmethod
    def tanh(x):
        return mx.nd.Activation(x, act_type="tanh")

    @staticmethod
    def relu(x):
        return mx.nd.Activation(x, act_type="relu")

    @staticmethod
    def sigmoid(x):
        return mx.nd.Activation(x, act_type="sigmoid")

    def __init__(self):
        super().__init__()
        self._graphs = GraphCache()

    def run_recurrence(self, model, params, xs, flat_state, masks=None, padding=None):
        if masks is None and padding is None:
            return self._graphs.run(model, params, xs, flat_state, self.use_fused_kernels)
        use_kernel = recurrence.fused_path(self, model, self.dtype_of(xs))
        if masks is None and padding is not None and recurrence.reads_valid_steps_only(model, padding):
            # a padded gradient pass: it may run past each sequence's end, so it runs in a cached graph
            # too, built for recurrence.schedule's plan (a few coarse segments where the kernel runs:
            # a few shapes, few kernel calls; else the plain scan of the whole batch)
            plan = recurrence.schedule(self, model, padding, use_kernel)
            return self._graphs.run(model, params, xs, flat_state, self.use_fused_kernels,
                                    padding._replace(plan=plan))
        if padding is not None and recurrence.runs_to_ends(padding):
            # a padded forward pass (AbstractBackend.forward: runs_forward_to_ends): in a cached graph
            # too, each sequence running past its end in coarse segments (a few shapes, few kernel
            # calls), its outputs and final state exact (multirnn.packed.run_to_ends)
            return self._graphs.run(model, params, xs, flat_state, self.use_fused_kernels, padding)
        # dropout and the rest of padded batches take the eager NDArray path (not graph-compiled)
        return super().run_recurrence(model, params, xs, flat_state, masks, padding)

    def runs_forward_to_ends(self, model, dtype, masks) -> bool:
        """In the fused kernel only (its segments are few kernel calls), and without dropout (the
        graph takes no masks)."""
        return masks is None and recurrence.fused_path(self, model, dtype)

    def fused_kernel(self, model, units):
        return fused_kernel(mx.nd, model, [recurrence.kernel_weights(self, model, p) for p in units])

    def asarray(self, a):
        # mx.nd.array would default to float32; this NDArray has no bool: a 0/1 float mask (for where)
        return mx.nd.array(a, dtype=np.float32 if a.dtype == bool else a.dtype)

    def to_numpy(self, x):
        return x.asnumpy()

    def value_and_grad(self, fn, seeded=False):
        def value_and_grad_fn(wrt, *rest):
            for a in tree_leaves(wrt):
                a.attach_grad()
            with mx.autograd.record():
                value, aux = fn(wrt, *(rest[:-1] if seeded else rest))
            value.backward(rest[-1] if seeded else None)  # the seed: no sum(value * seed) op to record
            return (value, aux), tree_map(lambda a: a.grad, wrt)
        return value_and_grad_fn

    def concat(self, xs, axis):
        return mx.nd.concat(*xs, dim=axis)

    def split(self, x, n):  # slice_axis: split's backward is several times slower in this build
        width = x.shape[-1] // n
        return [mx.nd.slice_axis(x, axis=-1, begin=k * width, end=(k + 1) * width) for k in range(n)]

    @staticmethod
    def where(keep, new, old):
        return mx.nd.where(keep.reshape((-1,)), new, old)  # a (batch,) condition selects whole rows

    def zeros(self, shape, like):
        return mx.nd.zeros(shape, dtype=like.dtype, ctx=like.context)

    def take(self, x, indices, axis):
        return take(mx.nd, x, indices, axis)

    def split_sizes(self, x, sizes, axis):
        ends = np.cumsum(sizes)
        return [mx.nd.slice_axis(x, axis=axis, begin=int(end - size), end=int(end)) for size, end in zip(sizes, ends)]

    def mask_padded(self, x, lengths):
        return mx.nd.SequenceMask(x, sequence_length=lengths.astype(x.dtype), use_sequence_length=True)

    def reverse_padded(self, x, lengths):
        return mx.nd.SequenceReverse(x, sequence_length=lengths.astype(x.dtype), use_sequence_length=True)

    def swap01(self, x):
        return mx.nd.swapaxes(x, 0, 1)

    def zeros_state(self, xs, hidden):
        return mx.nd.zeros((xs.shape[1], hidden), dtype=xs.dtype)

    def asindex(self, tokens):
        return mx.nd.array(tokens, dtype="int32")  # what mx.nd.take / one_hot index with

    def one_hot(self, indices, depth, like):
        return mx.nd.one_hot(indices, depth, dtype=like.dtype)

    def take_rows(self, table, indices):
        return mx.nd.take(table, indices, axis=0)

    def log_softmax(self, x):
        return mx.nd.log_softmax(x, axis=-1)

    def sum_all(self, x):
        return mx.nd.sum(x)

    def scan(self, step, carry, xs, reverse=False):
        ys = []
        # One split op, not xs[t]: under autograd each slice's gradient is a full-size zero tensor.
        unstack = lambda a: mx.nd.split(a, num_outputs=a.shape[0], axis=0, squeeze_axis=True) \
            if a.shape[0] > 1 else [a[0]]  # noqa: E731
        steps = list(zip(*map(unstack, xs))) if isinstance(xs, tuple) else unstack(xs)
        for x in (reversed(steps) if reverse else steps):
            carry, y = step(carry, x)
            ys.append(y)
        return carry, mx.nd.stack(*(ys[::-1] if reverse else ys), axis=0)

    def native_layer(self, model, params=None, seed=0, dtype="float32", api="gluon"):
        from .gluon_block import RecurrentBlock

        return RecurrentBlock(model, params if params is not None else init_params(model, seed, dtype))
