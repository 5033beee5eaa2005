"""TensorFlow adapter: the recurrence traced once per spec into a ``tf.function`` (a ``tf.while_loop``
over a TensorArray, so long sequences do not unroll the graph), gradients from ``tf.GradientTape``."""
from __future__ import annotations

import functools
import importlib.util
import os

# torch must be imported before tensorflow in a process that may load both (else segfault/hang).
if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep oneDNN/CPU-feature banners out of outputs
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from multirnn import recurrence  # noqa: E402
from multirnn.lm import head  # noqa: E402
from multirnn.params import init_params  # noqa: E402

from ._base import FrameworkBackend  # noqa: E402


class Backend(FrameworkBackend):
    name = "tensorflow"
    version = tf.__version__
    # Project inputs inside the while loop, as Keras does: measured 1.05-1.3x faster here than
    # hoisting, whose gradient goes through a (T, B, G·H) TensorArray.
    hoist_input_projection = False
    tanh = staticmethod(tf.tanh)
    relu = staticmethod(tf.nn.relu)
    sigmoid = staticmethod(tf.sigmoid)
    asarray = staticmethod(tf.convert_to_tensor)

    def __init__(self):
        self._compiled: dict = {}

    def to_numpy(self, x):
        return x.numpy()

    def matmul(self, a, b):
        return tf.tensordot(a, b, axes=1) if a.shape.rank > 2 else tf.matmul(a, b)

    def concat(self, xs, axis):
        return tf.concat(list(xs), axis=axis)

    def split(self, x, n):
        return tf.split(x, n, axis=-1)


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
        steps = tf.shape(xs)[0]
        # Read steps from a TensorArray, not xs[t]: the gradient of a slice inside the loop would be a
        # full-size (T, B, width) tensor per step (quadratic in T); a TensorArray read's is one write.
        inputs = tf.TensorArray(xs.dtype, size=steps, element_shape=xs.shape[1:]).unstack(xs)
        outputs = tf.TensorArray(xs.dtype, size=steps, element_shape=carry[0].shape)

        def body(i, carry, outputs):
            t = steps - 1 - i if reverse else i
            carry, y = step(carry, inputs.read(t))
            return i + 1, carry, outputs.write(t, y)

        _, carry, outputs = tf.while_loop(lambda i, *_: i < steps, body, (0, carry, outputs))
        return carry, outputs.stack()

    def _function(self, kind, model):
        """One tf.function per (kind, spec); it retraces only for new shapes or dtypes."""
        key = (kind, model)
        if key not in self._compiled:
            self._compiled[key] = tf.function(functools.partial(getattr(self, kind), model),
                                              reduce_retracing=True)
        return self._compiled[key]

    def _run_graph(self, model, params, xs, flat_state, masks, padding):
        return recurrence.run(self, model, params, xs, flat_state, masks, padding)

    def _grad_graph(self, model, params, xs, flat_state, masks, padding, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(params)
            ys, _ = recurrence.run(self, model, params, xs, flat_state, masks, padding)
            loss = tf.reduce_sum(ys * cotangent)
        return tape.gradient(loss, params)

    def _lm_logits_graph(self, model, params, tokens, flat_state):
        return head.logits(self, model, params, tokens, flat_state)

    def _lm_grad_graph(self, model, params, tokens, targets, flat_state):
        with tf.GradientTape() as tape:
            tape.watch((params, flat_state))
            loss, finals = head.loss(self, model, params, tokens, targets, flat_state)
        d_params, d_state = tape.gradient(loss, (params, flat_state))
        # an embedding's gradient comes back as IndexedSlices: make every gradient a dense tensor
        return loss, {k: tf.convert_to_tensor(v) for k, v in d_params.items()}, d_state, finals

    def lm_logits(self, model, params, tokens, flat_state):
        p, _, s, _ = self._to_framework(params, tokens, flat_state)
        out, finals = self._function("_lm_logits_graph", model)(p, self.asarray(tokens), s)
        return self.to_numpy(out), [tuple(self.to_numpy(a) for a in unit) for unit in finals]

    def lm_loss_and_grads(self, model, params, tokens, targets, flat_state):
        p, _, s, _ = self._to_framework(params, tokens, flat_state)
        loss, d_params, d_state, finals = self._function("_lm_grad_graph", model)(
            p, self.asarray(tokens), self.asarray(targets), s)
        return (float(loss), {name: self.to_numpy(value) for name, value in d_params.items()},
                [tuple(self.to_numpy(a) for a in unit) for unit in d_state],
                [tuple(self.to_numpy(a) for a in unit) for unit in finals])

    def forward(self, model, params, xs, flat_state, masks=None, lengths=None):
        ys, finals = self._function("_run_graph", model)(
            *self._to_framework(params, xs, flat_state, masks), self._padding(model, xs, lengths))
        return self.to_numpy(ys), [tuple(self.to_numpy(a) for a in unit) for unit in finals]

    def gradients(self, model, params, xs, flat_state, cotangent, masks=None, lengths=None):
        grads = self._function("_grad_graph", model)(
            *self._to_framework(params, xs, flat_state, masks), self._padding(model, xs, lengths),
            self.asarray(cotangent))
        return {name: self.to_numpy(value) for name, value in grads.items()}

    def native_layer(self, model, params=None, seed=0, dtype="float32"):
        from .keras_layer import RecurrentLayer

        return RecurrentLayer(model, params if params is not None else init_params(model, seed, dtype))
