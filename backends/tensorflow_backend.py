"""TensorFlow adapter: ``compile`` traces the recurrence once per spec into a ``tf.function`` (a
``tf.while_loop`` over a TensorArray, so long sequences do not unroll the graph); ``value_and_grad`` is
``tf.GradientTape``. The registry (backends/__init__.py) keeps torch-before-tensorflow import order."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep oneDNN/CPU-feature banners out of outputs
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from multirnn import packed, recurrence, validate  # noqa: E402
from multirnn.params import init_params  # noqa: E402

from ._base import AbstractBackend  # noqa: E402


class Backend(AbstractBackend):
    name = "tensorflow"
    version = tf.__version__
    # Project inputs inside the while loop, as Keras does: measured 1.05-1.3x faster here than
    # hoisting, whose gradient goes through a (T, B, G·H) TensorArray.
    hoist_input_projection = False
    # A padded batch's steps compute only the sequences still running: slicing a prefix of the batch
    # is one op in a graph (measured 0.91x the full batch where the masked scan costs 1.0x).
    shrinking_scan = True
    tanh = staticmethod(tf.tanh)
    relu = staticmethod(tf.nn.relu)
    sigmoid = staticmethod(tf.sigmoid)
    asarray = staticmethod(tf.convert_to_tensor)

    def to_numpy(self, x):
        return x.numpy()

    def dtype_of(self, x):
        return np.dtype(x.dtype.as_numpy_dtype)

    def compile(self, fn):
        # No AutoGraph: the recurrence's Python control flow reads host values only (packed._known
        # keeps traced segment sizes out of it), so converting it would only hide a mistake as a
        # tf.cond; and converting it once called run_unit's converted code for recurrence.scan_runner
        # (in the full test suite, test_gradient_pass_in_coarse_segments; not alone).
        return tf.function(fn, reduce_retracing=True, autograph=False)

    def value_and_grad(self, fn, seeded=False):
        def value_and_grad_fn(wrt, *rest):
            with tf.GradientTape() as tape:
                tape.watch(wrt)
                value, aux = fn(wrt, *(rest[:-1] if seeded else rest))
                target = tf.reduce_sum(value * rest[-1]) if seeded else value
            grads = tape.gradient(target, wrt)
            # an embedding's gradient comes back as IndexedSlices: make every gradient a dense tensor
            return (value, aux), tf.nest.map_structure(tf.convert_to_tensor, grads)
        return value_and_grad_fn

    def matmul(self, a, b):
        return tf.tensordot(a, b, axes=1) if a.shape.rank > 2 else tf.matmul(a, b)

    def concat(self, xs, axis):
        return tf.concat(list(xs), axis=axis)

    def split(self, x, n):
        return tf.split(x, n, axis=-1)

    where = staticmethod(tf.where)

    def zeros(self, shape, like):
        return tf.zeros(shape, like.dtype)

    def take(self, x, indices, axis):
        return tf.gather(x, indices, axis=axis)

    def split_sizes(self, x, sizes, axis):
        return tf.split(x, list(sizes), axis=axis)

    def size(self, x, axis):
        return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]

    def padding_of(self, model, xs, lengths):
        """In graph ops, so a tf.function takes symbolic lengths (checked when they are eager)."""
        lengths = tf.cast(lengths, tf.int64)
        if tf.executing_eagerly():
            validate.check_lengths(lengths.numpy(), xs.shape[1], xs.shape[0])
        steps = tf.range(tf.shape(xs, out_type=tf.int64)[0])[:, None]
        keep = (steps < lengths[None, :])[:, :, None]
        # multirnn.packed's plan in graph ops, for the shrinking scan: longest first, ties in batch order
        order = tf.argsort(-lengths, stable=True)
        ordered = tf.gather(lengths, order)
        running = tf.reduce_sum(tf.cast(steps < ordered[None, :], tf.int32), axis=1)
        plan = packed.Plan(order, tf.argsort(order), ordered, (), (), running)
        return recurrence.Padding(lengths, keep, tf.cast(keep, xs.dtype), plan)

    def mask_padded(self, x, lengths):  # sequence_mask: (B, T) True where t < lengths[b]
        keep = tf.transpose(tf.sequence_mask(lengths, tf.shape(x)[0]))[:, :, None]
        return tf.where(keep, x, tf.zeros_like(x))

    def reverse_padded(self, x, lengths):
        return tf.reverse_sequence(x, lengths, seq_axis=0, batch_axis=1)

    def swap01(self, x):
        return tf.experimental.numpy.swapaxes(x, 0, 1)

    def zeros_state(self, xs, hidden):
        return tf.zeros((tf.shape(xs)[1], hidden), xs.dtype)

    def one_hot(self, indices, depth, like):
        return tf.one_hot(indices, depth, dtype=like.dtype)

    def take_rows(self, table, indices):
        return tf.gather(table, indices)

    def log_softmax(self, x):
        return tf.nn.log_softmax(x, axis=-1)

    def sum_all(self, x):
        return tf.reduce_sum(x)

    def scan(self, step, carry, xs, reverse=False):
        arrays = xs if isinstance(xs, tuple) else (xs,)
        # A static length where the trace knows it, as Keras does: the outputs' shape is then static and
        # Grappler folds a constant output cotangent (a sum loss's) through the stack's gradient.
        steps = self.size(arrays[0], 0)
        # Read steps from a TensorArray, not xs[t]: the gradient of a slice inside the loop would be a
        # full-size (T, B, width) tensor per step (quadratic in T); a TensorArray read's is one write.
        inputs = [tf.TensorArray(a.dtype, size=steps, element_shape=a.shape[1:]).unstack(a) for a in arrays]
        outputs = tf.TensorArray(carry[0].dtype, size=steps, element_shape=carry[0].shape)

        def body(i, carry, outputs):
            t = steps - 1 - i if reverse else i
            x = tuple(a.read(t) for a in inputs)
            before = carry
            carry, y = step(carry, x if isinstance(xs, tuple) else x[0])
            for new, old in zip(carry, before):  # a shrinking step's concat loses the static batch
                new.set_shape(old.shape)
            return i + 1, carry, outputs.write(t, y)

        _, carry, outputs = tf.while_loop(lambda i, *_: i < steps, body, (0, carry, outputs))
        return carry, outputs.stack()

    def native_layer(self, model, params=None, seed=0, dtype="float32", api="keras", **options):
        """The Keras 3 layer (backends/keras_layer.py); it runs on the configured Keras backend."""
        from .keras_layer import RecurrentLayer

        return RecurrentLayer(model, params if params is not None else init_params(model, seed, dtype),
                              seed=seed, **options)
