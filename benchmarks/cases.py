"""For one backend and one model: zero-argument callables that each run ONE forward + backward pass
(loss = sum of outputs, gradients for every weight) and return only when the work is done.

  multirnn  the layer multirnn.native_layer gives (framework tensors in, the framework's autodiff)
  generic   the same layer with the backend's fused kernels switched off (torch and MXNet only: the
            generic recurrence, step by step, that reset-before GRUs and padded batches run)
  api       multirnn.gradients (NumPy in and out, so it includes the host copies)
  native    the framework's own fused layer: torch nn.RNN/GRU/LSTM, Keras SimpleRNN/GRU/LSTM in a
            tf.function, Flax nn.RNN(SimpleCell/GRUCell/OptimizedLSTMCell) jitted, Gluon rnn.* hybridized
  eager     the d2l-style per-step loop of benchmarks/d2l_loop.py, run eagerly
"""
from __future__ import annotations

import functools
import types

import numpy as np

import multirnn

from d2l_loop import d2l_forward


def inputs(model, steps, batch, seed=0):
    return np.random.default_rng(seed).normal(size=(steps, batch, model.num_inputs)).astype("float32")


def build(backend, model, steps, batch):
    params = multirnn.init_params(model, seed=0, dtype="float32")
    xs = inputs(model, steps, batch)
    cases = globals()[f"_{backend}"](model, params, xs)
    cases["api"] = lambda: multirnn.gradients(model, params, xs, backend=backend)
    if backend in ("torch", "mxnet"):
        cases["generic"] = without_fused_kernels(backend, cases["multirnn"])
    return cases


def without_fused_kernels(name, call):
    instance = multirnn.backends.get(name)

    def generic():
        with instance.fused_kernels(False):
            call()
    return generic


def _torch(model, params, xs):
    import torch

    x = torch.from_numpy(xs)
    layer = multirnn.native_layer(model, params, backend="torch")
    kind = {"rnn": functools.partial(torch.nn.RNN, nonlinearity=model.nonlinearity), "gru": torch.nn.GRU,
            "lstm": torch.nn.LSTM}[model.cell]
    native = kind(model.num_inputs, model.num_hiddens, bidirectional=model.bidirectional)

    def train_step(module):
        def step():
            module.zero_grad(set_to_none=True)
            module(x)[0].sum().backward()
        return step

    weights = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ops = types.SimpleNamespace(matmul=torch.matmul, tanh=torch.tanh, relu=torch.relu, sigmoid=torch.sigmoid,
                                stack=torch.stack, concat=lambda xs: torch.cat(xs, -1))
    zeros = torch.zeros(xs.shape[1], model.num_hiddens)

    def eager():
        for w in weights.values():
            w.grad = None
        d2l_forward(ops, model, weights, list(x.unbind(0)), zeros).sum().backward()

    return {"multirnn": train_step(layer), "native": train_step(native), "eager": eager}


def _tensorflow(model, params, xs):
    import multirnn.backends as b

    b.get("tensorflow")  # imports torch first where both are installed
    import keras
    import tensorflow as tf

    layer = multirnn.native_layer(model, params, backend="tensorflow")
    kind = {"rnn": functools.partial(keras.layers.SimpleRNN, activation=model.nonlinearity),
            "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[model.cell]
    native = kind(model.num_hiddens, return_sequences=True)
    if model.bidirectional:
        native = keras.layers.Bidirectional(native)
    x_time, x_batch = tf.constant(xs), tf.constant(xs.swapaxes(0, 1))  # Keras is batch-major only
    native(x_batch)  # build the weights

    def train_step(module, x, first_output):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                out = module(x)
                loss = tf.reduce_sum(out[0] if first_output else out)
            return tape.gradient(loss, module.trainable_variables)
        return lambda: step(x)

    weights = [tf.Variable(v) for v in params.values()]
    names = list(params)
    ops = types.SimpleNamespace(matmul=tf.matmul, tanh=tf.tanh, relu=tf.nn.relu, sigmoid=tf.sigmoid,
                                stack=tf.stack, concat=lambda xs: tf.concat(xs, -1))
    zeros = tf.zeros((xs.shape[1], model.num_hiddens))

    def eager():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(d2l_forward(ops, model, dict(zip(names, weights)), tf.unstack(x_time),
                                             zeros))
        tape.gradient(loss, weights)

    return {"multirnn": train_step(layer, x_time, True), "native": train_step(native, x_batch, False),
            "eager": eager}


def _jax(model, params, xs):
    import multirnn.backends as b

    b.get("jax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    unbound, variables = multirnn.native_layer(model, params, backend="jax").unbind()
    x_time = jnp.asarray(xs)
    x_batch = jnp.asarray(xs.swapaxes(0, 1))  # Flax nn.RNN is batch-major by default
    cell = {"rnn": functools.partial(nn.SimpleCell, activation_fn=getattr(nn, model.nonlinearity)),
            "gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}[model.cell]
    native = nn.RNN(cell(model.num_hiddens))
    if model.bidirectional:
        native = nn.Bidirectional(native, nn.RNN(cell(model.num_hiddens)))
    native_vars = native.init(jax.random.PRNGKey(0), x_batch)

    def train_step(loss, variables, x):
        grad = jax.jit(jax.grad(loss))
        return lambda: jax.block_until_ready(grad(variables, x))

    weights = {k: jnp.asarray(v) for k, v in params.items()}
    ops = types.SimpleNamespace(matmul=jnp.matmul, tanh=jnp.tanh, relu=jax.nn.relu, sigmoid=jax.nn.sigmoid,
                                stack=jnp.stack, concat=lambda xs: jnp.concatenate(xs, -1))
    zeros = jnp.zeros((xs.shape[1], model.num_hiddens))
    steps = list(x_time)
    eager_grad = jax.grad(lambda w: jnp.sum(d2l_forward(ops, model, w, steps, zeros)))

    return {"multirnn": train_step(lambda v, x: jnp.sum(unbound.apply(v, x)[0]), variables, x_time),
            "native": train_step(lambda v, x: jnp.sum(native.apply(v, x)), native_vars, x_batch),
            "eager": lambda: jax.block_until_ready(eager_grad(weights))}


def _mxnet(model, params, xs):
    import multirnn.backends as b

    b.get("mxnet")  # restores numpy.bool before mxnet loads
    import mxnet as mx
    from mxnet.gluon import rnn

    x = mx.nd.array(xs)
    # Unhybridized, the block runs the backend's cached graph: 6% faster here than hybridize(), which the
    # block offers for export (measured 21.5 vs 22.9 ms, tanh RNN T=64 B=64 D=128 H=256, 1 thread).
    layer = multirnn.native_layer(model, params, backend="mxnet")
    kind = {"rnn": lambda h, **kw: rnn.RNN(h, activation=model.nonlinearity, **kw), "gru": rnn.GRU,
            "lstm": rnn.LSTM}[model.cell]
    native = kind(model.num_hiddens, bidirectional=model.bidirectional, input_size=model.num_inputs)
    native.initialize()
    native.hybridize(static_alloc=True, static_shape=True)

    def train_step(module, first_output):
        def step():
            with mx.autograd.record():
                out = module(x)
                loss = (out[0] if first_output else out).sum()
            loss.backward()
            mx.nd.waitall()
        return step

    weights = {k: mx.nd.array(v) for k, v in params.items()}
    for w in weights.values():
        w.attach_grad()
    ops = types.SimpleNamespace(matmul=mx.nd.dot, tanh=mx.nd.tanh, relu=mx.nd.relu, sigmoid=mx.nd.sigmoid,
                                stack=lambda xs: mx.nd.stack(*xs),
                                concat=lambda xs: mx.nd.concat(*xs, dim=-1))
    zeros = mx.nd.zeros((xs.shape[1], model.num_hiddens))
    steps = [x[t] for t in range(xs.shape[0])]

    def eager():
        with mx.autograd.record():
            loss = d2l_forward(ops, model, weights, steps, zeros).sum()
        loss.backward()
        mx.nd.waitall()

    return {"multirnn": train_step(layer, True), "native": train_step(native, False), "eager": eager}
