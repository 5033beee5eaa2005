"""multirnn.native_cell: each framework's own cell, advanced in a hand loop (as nn.GRUCell is), gives
multirnn.step's numbers and, differentiated through that loop, multirnn.gradients' gradients; inside
the framework's own RNN wrapper (keras.layers.RNN, flax.linen.RNN, Gluon unroll) it gives forward's."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CELL_VARIANTS, assert_close, load_backend, make_case, random_state

import multirnn
from multirnn.spec import RecurrentSpec
from multirnn.state import flatten_state, nest_state


def _flat(model, state):
    return [np.asarray(a) for unit in flatten_state(model, state) for a in unit]


def _as_list(model, state):
    return [a for unit in flatten_state(model, state) for a in unit]


def _nest(model, arrays):
    k = model.state_arrays
    return nest_state(model, [tuple(arrays[i:i + k]) for i in range(0, len(arrays), k)])


# ---- per framework: a hand loop of cell calls, and its gradient of sum(outputs) ----

def _loop_torch(model, cell, xs, state, grad=False):
    import torch

    from multirnn.state import map_state

    h = None if state is None else map_state(model, state, torch.from_numpy)
    ys = []
    for x_t in torch.from_numpy(xs).unbind(0):
        h = cell(x_t, h)  # nn.GRUCell's call: the new state back
        ys.append(flatten_state(model, h)[-1][0])
    ys = torch.stack(ys)
    if grad:
        ys.sum().backward()
        return {name: p.grad.numpy() for name, p in cell.canonical_params().items()}
    return ys.detach().numpy(), [a.detach().numpy() for a in _as_list(model, h)]


def _loop_tensorflow(model, cell, xs, state, grad=False):
    import tensorflow as tf

    states = (cell.get_initial_state(xs.shape[1]) if state is None
              else [tf.constant(a) for a in _as_list(model, state)])
    with tf.GradientTape() as tape:
        ys = []
        for x_t in xs:
            y, states = cell(tf.constant(x_t), states)
            ys.append(y)
        total = tf.reduce_sum(tf.stack(ys))
    if grad:
        weights = list(cell.canonical.values())
        return dict(zip(cell.canonical, (g.numpy() for g in tape.gradient(total, weights))))
    return np.stack([y.numpy() for y in ys]), [s.numpy() for s in states]


def _loop_jax(model, cell, xs, state, grad=False):
    import jax
    import jax.numpy as jnp

    from multirnn.backends.jax_backend import precision

    module, variables = cell.unbind()

    def run(params):
        carry = (module.initialize_carry(None, xs.shape[1:]) if state is None
                 else jax.tree_util.tree_map(jnp.asarray, state))
        ys = []
        for x_t in xs:
            carry, y = module.apply({"params": params}, carry, jnp.asarray(x_t))
            ys.append(y)
        return jnp.stack(ys), carry

    with precision(xs.dtype):
        if grad:
            from multirnn.backends.cells_flax import canonical_params

            grads = jax.grad(lambda p: jnp.sum(run(p)[0]))(variables["params"])  # gates side by side
            return canonical_params(model, {k: np.asarray(v) for k, v in grads.items()})
        ys, carry = run(variables["params"])
        return np.asarray(ys), [np.asarray(a) for a in _as_list(model, carry)]


def _loop_mxnet(model, cell, xs, state, grad=False):
    import mxnet as mx

    states = (cell.begin_state(batch_size=xs.shape[1]) if state is None
              else [mx.nd.array(a, dtype=a.dtype) for a in _as_list(model, state)])
    with mx.autograd.record(train_mode=False):
        ys = []
        for x_t in xs:
            y, states = cell(mx.nd.array(x_t, dtype=x_t.dtype), states)
            ys.append(y)
        total = mx.nd.sum(mx.nd.stack(*ys))
    if grad:
        total.backward()
        return cell.canonical_grads()
    return np.stack([y.asnumpy() for y in ys]), [s.asnumpy() for s in states]


LOOPS = {"torch": _loop_torch, "tensorflow": _loop_tensorflow, "jax": _loop_jax, "mxnet": _loop_mxnet}


def _stepped(model, params, xs, state):
    """multirnn.step on the NumPy float64 reference, T times."""
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    state = None if state is None else _nest(model, [a.astype(np.float64) for a in _flat(model, state)])
    ys = []
    for x_t in xs.astype(np.float64):
        y, state = multirnn.step(model, params64, x_t, state)
        ys.append(y)
    return np.stack(ys), _flat(model, state)


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hand_loop_equals_step(backend, variant, num_layers, dtype):
    model = RecurrentSpec(3, 4, num_layers=num_layers, **CELL_VARIANTS[variant])
    params, xs = make_case(model, steps=5, batch=2, dtype=dtype)
    cell = multirnn.native_cell(model, params, backend=backend)
    for state in (None, random_state(model, 2, seed=4, dtype=dtype)):
        ys, final = LOOPS[backend](model, cell, xs, state)
        want_ys, want_final = _stepped(model, params, xs, state)
        assert_close(ys, want_ys, dtype, "outputs")
        for k, (a, b) in enumerate(zip(final, want_final)):
            assert a.dtype == np.dtype(dtype)
            assert_close(a, b, dtype, f"state array {k}")


@pytest.mark.parametrize("variant", ["rnn-relu", "gru-reset-before", "lstm"])
def test_gradients_through_a_hand_loop(backend, variant):
    model = RecurrentSpec(3, 4, num_layers=2, **CELL_VARIANTS[variant])
    params, xs = make_case(model, steps=4, batch=2)  # float64: held at 1e-10
    cell = multirnn.native_cell(model, params, backend=backend)
    grads = LOOPS[backend](model, cell, xs, None, grad=True)
    want = multirnn.gradients(model, params, xs)  # of sum(outputs), the hand-written BPTT
    assert sorted(grads) == sorted(want)
    for name in want:
        assert_close(grads[name], want[name], "float64", name)


def _case32(model):
    params, xs = make_case(model, steps=5, batch=2, dtype="float32")
    return params, xs, multirnn.forward(model, {k: v.astype(np.float64) for k, v in params.items()},
                                        xs.astype(np.float64))


def test_torch_cell_is_called_like_nn_grucell():
    load_backend("torch")
    import torch

    model = RecurrentSpec(3, 4, cell="gru", reset_after=True)
    cell = multirnn.native_cell(model, backend="torch")
    assert isinstance(cell, torch.nn.Module) and len(list(cell.parameters())) == 12
    h = cell(torch.zeros(2, 3))  # hx=None: zeros, as nn.GRUCell
    assert isinstance(h, torch.Tensor) and h.shape == (2, 4)
    lstm = multirnn.native_cell(RecurrentSpec(3, 4, cell="lstm"), backend="torch")
    h, c = lstm(torch.zeros(2, 3))
    assert h.shape == c.shape == (2, 4)
    with torch.no_grad():  # the cached fused weights follow an in-place parameter update
        before = cell(torch.ones(1, 3))
        cell.weights["W_xh"].add_(1.0)
        assert not torch.equal(before, cell(torch.ones(1, 3)))


def test_keras_cell_inside_keras_rnn_and_saved():
    load_backend("tensorflow")
    import keras

    model = RecurrentSpec(3, 4, cell="lstm", num_layers=2, batch_first=True)
    params, xs, (want_ys, want_state) = _case32(model)
    cell = multirnn.native_cell(model, params, backend="tensorflow")
    assert cell.state_size == [4, 4, 4, 4] and cell.output_size == 4
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    ys, *states = rnn(xs)
    assert_close(np.asarray(ys), want_ys, "float32", "outputs")
    for a, b in zip(states, _flat(model, want_state)):
        assert_close(np.asarray(a), b, "float32", "state")
    clone = type(cell).from_config(cell.get_config())
    assert clone.model == cell.model and clone.state_size == cell.state_size


def test_keras_cell_saves_and_loads_in_a_model(tmp_path):
    load_backend("tensorflow")
    import keras

    model = RecurrentSpec(3, 4, cell="gru", batch_first=True)
    params, xs, (want_ys, _) = _case32(model)
    net = keras.Sequential([keras.Input((None, 3)),
                            keras.layers.RNN(multirnn.native_cell(model, params, backend="tensorflow"),
                                             return_sequences=True)])
    net.save(tmp_path / "cell.keras")
    loaded = keras.saving.load_model(tmp_path / "cell.keras")
    assert_close(np.asarray(loaded(xs)), want_ys, "float32", "outputs")


def test_flax_cell_inside_linen_rnn():
    load_backend("jax")
    import flax.linen as nn

    model = RecurrentSpec(3, 4, cell="gru", reset_after=True, num_layers=2, batch_first=True)
    params, xs, (want_ys, want_state) = _case32(model)
    cell = multirnn.native_cell(model, params, backend="jax")
    for name, value in cell.canonical_params().items():
        np.testing.assert_array_equal(value, params[name])
    module, variables = cell.unbind()
    carry, ys = nn.RNN(module, return_carry=True).apply({"params": {"cell": variables["params"]}}, xs)
    assert_close(np.asarray(ys), want_ys, "float32", "outputs")
    for a, b in zip(_as_list(model, carry), _flat(model, want_state)):
        assert_close(np.asarray(a), b, "float32", "state")


def test_gluon_cell_unroll_and_begin_state():
    load_backend("mxnet")
    import mxnet as mx

    model = RecurrentSpec(3, 4, cell="lstm", num_layers=2)
    params, xs, (want_ys, want_state) = _case32(model)
    cell = multirnn.native_cell(model, params, backend="mxnet")
    assert isinstance(cell, mx.gluon.rnn.RecurrentCell)
    begin = cell.begin_state(batch_size=2)
    assert len(begin) == 4 and begin[0].shape == (2, 4) and begin[0].dtype == np.float32
    ys, states = cell.unroll(5, mx.nd.array(xs), begin_state=begin, layout="TNC", merge_outputs=True)
    assert_close(ys.asnumpy(), want_ys, "float32", "outputs")
    for a, b in zip(states, _flat(model, want_state)):
        assert_close(a.asnumpy(), b, "float32", "state")


@pytest.mark.parametrize("variant", ["rnn-tanh", "gru-reset-before", "lstm"])
def test_gluon_cell_is_hybridized_holds_weights_transposed_and_computes_the_same_eagerly(variant):
    load_backend("mxnet")
    import mxnet as mx

    model = RecurrentSpec(3, 4, num_layers=2, **CELL_VARIANTS[variant])
    params, xs = make_case(model, steps=3, batch=2)
    cell = multirnn.native_cell(model, params, backend="mxnet", dtype="float64")
    assert cell._active  # one CachedOp per step (Gluon's hybridize)
    held = cell.canonical_params()  # the weights are held transposed, (out, in)
    assert sorted(held) == sorted(params)
    for name, value in held.items():
        np.testing.assert_array_equal(value, params[name])
    weight = next(name for name, value in params.items() if value.ndim == 2)
    assert cell.weights[weight].shape == params[weight].T.shape
    hybrid = _loop_mxnet(model, cell, xs, None)
    cell.hybridize(False)
    eager = _loop_mxnet(model, cell, xs, None)
    want_ys, want_final = _stepped(model, params, xs, None)
    for got in (hybrid, eager):
        assert_close(got[0], want_ys, "float64", "outputs")
        for a, b in zip(got[1], want_final):
            assert_close(a, b, "float64", "state")


def test_native_cell_refuses_what_it_cannot_be():
    with pytest.raises(ValueError, match="bidirectional"):
        multirnn.native_cell(RecurrentSpec(2, 3, bidirectional=True))
    with pytest.raises(ValueError, match="backend must be one of"):
        multirnn.native_cell(RecurrentSpec(2, 3), backend="numpy")


# ---- the nnx cell (multirnn.native_cell(..., backend="jax", api="nnx")) ----

def _loop_nnx(model, cell, xs, state, grad=False):
    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp

    from multirnn.backends.cells_flax import canonical_params
    from multirnn.backends.jax_backend import precision

    def run(c):
        carry = (c.initialize_carry(xs.shape[1:]) if state is None
                 else jax.tree_util.tree_map(jnp.asarray, state))
        ys = []
        for x_t in xs:
            carry, y = c(carry, jnp.asarray(x_t))
            ys.append(y)
        return jnp.stack(ys), carry

    with precision(xs.dtype):
        if grad:
            grads = nnx.grad(lambda c: jnp.sum(run(c)[0]))(cell)
            return canonical_params(model, {k: np.asarray(v.value) for k, v in grads["weights"].items()})
        ys, carry = run(cell)
        return np.asarray(ys), [np.asarray(a) for a in _as_list(model, carry)]


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nnx_hand_loop_equals_step_and_its_gradients(variant, dtype):
    load_backend("jax")
    model = RecurrentSpec(3, 4, num_layers=2, **CELL_VARIANTS[variant])
    params, xs = make_case(model, steps=5, batch=2, dtype=dtype)
    cell = multirnn.native_cell(model, params, backend="jax", api="nnx")
    for name, value in cell.canonical_params().items():
        np.testing.assert_array_equal(value, params[name])
    state = random_state(model, 2, seed=4, dtype=dtype)
    ys, final = _loop_nnx(model, cell, xs, state)
    want_ys, want_final = _stepped(model, params, xs, state)
    assert_close(ys, want_ys, dtype, "outputs")
    for k, (a, b) in enumerate(zip(final, want_final)):
        assert_close(a, b, dtype, f"state array {k}")
    if dtype == "float64":
        grads = _loop_nnx(model, cell, xs, None, grad=True)
        want = multirnn.gradients(model, params, xs)
        for name in want:
            assert_close(grads[name], want[name], "float64", name)


def test_nnx_cell_inside_nnx_rnn():
    load_backend("jax")
    import flax.nnx as nnx

    model = RecurrentSpec(3, 4, cell="lstm", num_layers=2, batch_first=True)
    params, xs, (want_ys, want_state) = _case32(model)
    cell = multirnn.native_cell(model, params, backend="jax", api="nnx")
    carry, ys = nnx.RNN(cell, return_carry=True)(xs)
    assert_close(np.asarray(ys), want_ys, "float32", "outputs")
    for a, b in zip(_as_list(model, carry), _flat(model, want_state)):
        assert_close(np.asarray(a), b, "float32", "state")
    with pytest.raises(ValueError, match="api= chooses"):
        multirnn.native_cell(model, params, backend="torch", api="nnx")
