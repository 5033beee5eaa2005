"""Each backend's framework-native layer (torch nn.Module, Keras Layer, Flax module, Gluon Block), built
from the same canonical params, gives the reference's numbers and exposes them as trainable weights."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from conftest import assert_close, make_case, random_state, to_float64

import multirnn
from multirnn.state import flatten_state, map_state


def call_layer(backend, layer, inputs, state, **options):
    """Call a native layer on framework arrays; returns numpy outputs and the flat numpy state.
    ``options``: lengths (NumPy, passed as framework ints) and dropout_seed."""
    impl = multirnn.backends.get(backend)
    precision = contextlib.nullcontext()
    if backend == "jax" and inputs.dtype == np.float64:  # JAX computes float64 only under x64
        from multirnn.backends.jax_backend import precision as jax_precision

        precision = jax_precision("float64")
    with precision:
        state = None if state is None else map_state(layer.model, state, impl.asarray)
        if options.get("lengths") is not None:
            options["lengths"] = impl.asarray(options["lengths"])
        out, new_state = layer(impl.asarray(inputs), state, **options)
        return impl.to_numpy(out), [impl.to_numpy(a) for u in flatten_state(layer.model, new_state)
                                    for a in u]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", [
    multirnn.BiRNNScratch(3, 4, batch_first=True),
    multirnn.LSTMScratch(3, 4, num_layers=2, bidirectional=True),
    multirnn.GRUScratch(3, 4, reset_after=True),
], ids=["birnn_batch_first", "lstm_2layer_bi", "gru_after"])
def test_native_layer_forward_matches_reference(backend, model, dtype):
    params, inputs = make_case(model, dtype=dtype, scale=10.0)
    state = random_state(model, 3, seed=2, dtype=dtype)
    layer = multirnn.native_layer(model, params, backend=backend)
    out, flat = call_layer(backend, layer, inputs, state)
    ref_out, ref_state = multirnn.forward(model, to_float64(params), to_float64(inputs), to_float64(state))
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref_out, dtype, "outputs")
    ref_flat = [a for u in flatten_state(model, ref_state) for a in u]
    for got, want in zip(flat, ref_flat, strict=True):
        assert_close(got, want, dtype, "state")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_native_layer_takes_lengths_and_training_dropout(backend, dtype):
    """lengths and dropout_seed as multirnn.forward(lengths=..., training=True, dropout_seed=...):
    the padded batch (packed on the fused-kernel backends) and the same NumPy dropout masks."""
    model = multirnn.LSTMScratch(3, 4, num_layers=2, bidirectional=True, dropout=0.5, batch_first=True)
    params, inputs = make_case(model, dtype=dtype, scale=10.0, steps=6, batch=5)
    lengths = np.array([6, 2, 0, 4, 4])
    state = random_state(model, 5, seed=2, dtype=dtype)
    layer = multirnn.native_layer(model, params, backend=backend)
    out, flat = call_layer(backend, layer, inputs, state, lengths=lengths, dropout_seed=7)
    ref_out, ref_state = multirnn.forward(model, to_float64(params), to_float64(inputs), to_float64(state),
                                          lengths=lengths, training=True, dropout_seed=7)
    no_dropout, _ = multirnn.forward(model, to_float64(params), to_float64(inputs), to_float64(state),
                                     lengths=lengths)
    assert np.abs(ref_out - no_dropout).max() > 1e-3, "dropout should change the outputs: weak test"
    assert_close(out, ref_out, dtype, "outputs")
    for got, want in zip(flat, [a for u in flatten_state(model, ref_state) for a in u], strict=True):
        assert_close(got, want, dtype, "state")


def test_native_layer_seeded_init_equals_init_params(backend):
    """With no params, the layer draws the same seeded NumPy weights as multirnn.init_params."""
    model = multirnn.RNNScratch(3, 4)
    layer = multirnn.native_layer(model, backend=backend, seed=7)
    expected = multirnn.init_params(model, seed=7)
    params, inputs = make_case(model, dtype="float32")
    out, _ = call_layer(backend, layer, inputs, None)
    ref, _ = multirnn.forward(model, expected, inputs)
    assert_close(out, ref.astype(np.float64), "float32", "outputs")


def test_torch_module_trains_with_its_own_optimizer():
    from conftest import load_backend

    load_backend("torch")
    import torch

    model = multirnn.RNNScratch(3, 4)
    params, inputs = make_case(model, dtype="float32")
    module = multirnn.native_layer(model, params, backend="torch")
    assert {n for n, _ in module.named_parameters()} == {f"weights.{k}" for k in params}
    out, _ = module(torch.from_numpy(inputs))
    out.sum().backward()
    grads = multirnn.gradients(model, to_float64(params), to_float64(inputs))
    for name, value in module.canonical_params().items():
        assert_close(value.grad.numpy(), grads[name], "float32", name)


def test_flax_module_takes_traced_lengths_under_jit():
    from conftest import load_backend

    load_backend("jax")
    import jax
    import jax.numpy as jnp

    model = multirnn.GRUScratch(3, 4, reset_after=True, num_layers=2, dropout=0.3)
    params, inputs = make_case(model, dtype="float32", steps=5, batch=3)
    lengths = np.array([5, 1, 3])
    unbound, variables = multirnn.native_layer(model, params, backend="jax").unbind()
    run = jax.jit(lambda v, x, n: unbound.apply(v, x, lengths=n, dropout_seed=3)[0])
    out = np.asarray(run(variables, jnp.asarray(inputs), jnp.asarray(lengths)))
    ref, _ = multirnn.forward(model, to_float64(params), to_float64(inputs), lengths=lengths, training=True,
                              dropout_seed=3)
    assert_close(out, ref, "float32", "outputs")


def test_hybridized_gluon_block_refuses_lengths():
    from conftest import load_backend

    load_backend("mxnet")
    import mxnet as mx

    model = multirnn.RNNScratch(3, 4)
    params, inputs = make_case(model, dtype="float32")
    block = multirnn.native_layer(model, params, backend="mxnet")
    block.hybridize()
    block(mx.nd.array(inputs))
    with pytest.raises(ValueError, match="lengths and dropout_seed need the unhybridized block"):
        block(mx.nd.array(inputs), lengths=mx.nd.array([5, 1, 3]))
