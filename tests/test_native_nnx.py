"""The Flax nnx module (``native_layer(..., backend="jax", api="nnx")``): canonical nnx.Params, the
reference's numbers under nnx.jit, its gradients under nnx.grad, and an nnx.Optimizer step."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from conftest import assert_close, load_backend, make_case, random_state, to_float64

import multirnn
from multirnn.state import flatten_state, map_state

MODELS = [
    multirnn.BiRNNScratch(3, 4, batch_first=True),
    multirnn.LSTMScratch(3, 4, num_layers=2, bidirectional=True),
    multirnn.GRUScratch(3, 4),
]
IDS = ["birnn_batch_first", "lstm_2layer_bi", "gru_d2l"]


@pytest.fixture(scope="module")
def jax():
    load_backend("jax")
    import jax

    return jax


def precision(dtype):
    from multirnn.backends.jax_backend import precision as jax_precision

    return jax_precision(dtype) if dtype == "float64" else contextlib.nullcontext()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_nnx_module_matches_reference_under_jit_and_grad(jax, model, dtype):
    from flax import nnx
    import jax.numpy as jnp

    params, inputs = make_case(model, dtype=dtype, scale=10.0)
    state = random_state(model, 3, seed=2, dtype=dtype)
    cotangent = np.random.default_rng(5).normal(size=inputs.shape[:2] + (model.output_size,)).astype(dtype)
    with precision(dtype):
        module = multirnn.native_layer(model, params, backend="jax", api="nnx")
        assert isinstance(module, nnx.Module)
        x, s = jnp.asarray(inputs), map_state(model, state, jnp.asarray)
        out, new_state = nnx.jit(lambda m, x, s: m(x, s))(module, x, s)
        grads = nnx.grad(lambda m: jnp.sum(m(x, s)[0] * cotangent))(module)
    ref = [to_float64(params), to_float64(inputs), to_float64(state)]
    want, want_state = multirnn.forward(model, *ref)
    assert np.asarray(out).dtype == np.dtype(dtype)
    assert_close(np.asarray(out), want, dtype, "outputs")
    want_flat = [a for unit in flatten_state(model, want_state) for a in unit]
    for got, expected in zip([a for u in flatten_state(model, new_state) for a in u], want_flat, strict=True):
        assert_close(np.asarray(got), expected, dtype, "state")
    want_grads = multirnn.gradients(model, *ref, cotangent=to_float64(cotangent))
    for name, expected in want_grads.items():
        assert_close(np.asarray(grads["params"][name][...]), expected, dtype, name)


def test_nnx_params_are_the_canonical_layout(jax):
    from flax import nnx

    model = multirnn.LSTMScratch(3, 4, bidirectional=True)
    module = multirnn.native_layer(model, backend="jax", api="nnx", seed=7)
    expected = multirnn.init_params(model, seed=7)
    params = nnx.state(module, nnx.Param)["params"]
    assert set(params) == set(model.param_shapes())
    for name, value in expected.items():
        np.testing.assert_array_equal(np.asarray(params[name][...]), value)


def test_nnx_optimizer_step_is_sgd_on_the_reference_gradient(jax):
    from flax import nnx
    import jax.numpy as jnp
    import optax

    model = multirnn.GRUScratch(3, 4, reset_after=True)
    params, inputs = make_case(model, dtype="float32", scale=10.0)
    module = multirnn.native_layer(model, params, backend="jax", api="nnx")
    optimizer = nnx.Optimizer(module, optax.sgd(1.0), wrt=nnx.Param)

    @nnx.jit
    def train_step(module, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.sum(m(x)[0]))(module)
        optimizer.update(module, grads)
        return loss

    train_step(module, optimizer, jnp.asarray(inputs))
    want = multirnn.gradients(model, to_float64(params), to_float64(inputs))
    for name, param in module.params.items():
        step = params[name].astype(np.float64) - np.asarray(param[...], np.float64)
        assert_close(step, want[name], "float32", f"step of {name}")


def test_unknown_layer_api_is_refused_by_name():
    with pytest.raises(ValueError, match=r"has native layers \('linen', 'nnx'\), got api='haiku'"):
        multirnn.native_layer(multirnn.RNNScratch(3, 4), backend="jax", api="haiku")
    with pytest.raises(ValueError, match="backend must be a framework"):
        multirnn.native_layer(multirnn.RNNScratch(3, 4), backend="numpy")
