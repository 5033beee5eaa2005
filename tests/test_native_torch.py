"""The torch module beyond eager use: under ``torch.compile``, and its state_dict in and out of torch's
own ``nn.RNN/GRU/LSTM`` (through multirnn.port.torch)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, load_backend, make_case, random_state, to_float64

import multirnn
from multirnn.state import flatten_state, map_state


@pytest.fixture(scope="module")
def torch():
    load_backend("torch")
    import torch

    return torch


def _flat(model, state):
    return [a.detach().numpy() for unit in flatten_state(model, state) for a in unit]


@pytest.mark.parametrize("model, compiler, dtype", [
    (multirnn.LSTMScratch(3, 4, num_layers=2, bidirectional=True), "inductor", "float32"),  # fused kernel
    (multirnn.GRUScratch(3, 4, batch_first=True), "aot_eager", "float64"),  # generic recurrence
], ids=["lstm_fused_inductor", "gru_d2l_aot_eager"])
def test_compiled_module_matches_reference(torch, model, compiler, dtype):
    params, inputs = make_case(model, dtype=dtype, scale=10.0)
    state = random_state(model, 3, seed=2, dtype=dtype)
    cotangent = np.random.default_rng(5).normal(size=inputs.shape[:2] + (model.output_size,)).astype(dtype)
    module = multirnn.native_layer(model, params, backend="torch")
    compiled = torch.compile(module, backend=compiler)
    out, new_state = compiled(torch.from_numpy(inputs), map_state(model, state, torch.from_numpy))
    (out * torch.from_numpy(cotangent)).sum().backward()
    ref = [to_float64(params), to_float64(inputs), to_float64(state)]
    want, want_state = multirnn.forward(model, *ref)
    assert_close(out.detach().numpy(), want, dtype, "outputs")
    want_flat = [a for unit in flatten_state(model, want_state) for a in unit]
    for got, expected in zip(_flat(model, new_state), want_flat, strict=True):
        assert_close(got, expected, dtype, "state")
    grads = multirnn.gradients(model, *ref, cotangent=to_float64(cotangent))
    for name, value in module.canonical_params().items():
        assert_close(value.grad.numpy(), grads[name], dtype, name)


@pytest.mark.parametrize("model", [
    multirnn.RNNScratch(3, 4, nonlinearity="relu", batch_first=True),
    multirnn.GRUScratch(3, 4, reset_after=True),
    multirnn.LSTMScratch(3, 4, num_layers=2, bidirectional=True),
], ids=["rnn_relu", "gru_after", "lstm_2layer_bi"])
def test_state_dict_round_trips_through_torch_layers(torch, model):
    params, inputs = make_case(model, dtype="float32", scale=10.0)
    module = multirnn.native_layer(model, params, backend="torch")
    kind = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[model.cell]
    extra = {"nonlinearity": model.nonlinearity} if model.cell == "rnn" else {}
    native = kind(3, 4, num_layers=model.num_layers, bidirectional=model.bidirectional,
                  batch_first=model.batch_first, **extra)
    native.load_state_dict(module.torch_state_dict())  # torch's own layer, strict keys
    want, _ = multirnn.forward(model, to_float64(params), to_float64(inputs))
    x = torch.from_numpy(inputs)
    assert_close(native(x)[0].detach().numpy(), want, "float32", "nn layer outputs")
    assert_close(module.to_torch_layer()(x)[0].detach().numpy(), want, "float32", "to_torch_layer outputs")
    with torch.no_grad():  # and back: torch's own init, read into the multirnn module
        for value in native.parameters():
            value.normal_(0, 0.5)
    module.load_torch_state_dict(native.state_dict())
    assert_close(module(x)[0].detach().numpy(), native(x)[0].detach().numpy().astype(np.float64), "float32",
                 "module after load_torch_state_dict")


def test_state_dict_refuses_what_torch_has_no_layer_for(torch):
    module = multirnn.native_layer(multirnn.GRUScratch(3, 4), backend="torch")  # d2l: reset before
    with pytest.raises(ValueError, match="reset_after"):
        module.torch_state_dict()
