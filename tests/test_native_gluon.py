"""The Gluon HybridBlock: hybridized, its gradients are the reference's, a Trainer step is SGD on them,
and ``export`` + ``SymbolBlock.imports`` give the same numbers without multirnn."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, load_backend, make_case, random_state, to_float64

import multirnn
from multirnn.state import flatten_state, map_state

MODELS = [
    multirnn.LSTMScratch(3, 4, num_layers=2, bidirectional=True),  # fused RNN operator
    multirnn.GRUScratch(3, 4, batch_first=True),  # d2l's GRU: the unrolled graph
]
IDS = ["lstm_2layer_bi", "gru_d2l_batch_first"]


@pytest.fixture(scope="module")
def mx():
    load_backend("mxnet")  # restores numpy.bool before mxnet loads
    import mxnet

    return mxnet


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_hybridized_block_exports_and_reimports(mx, tmp_path, model, dtype):
    params, inputs = make_case(model, dtype=dtype, scale=10.0)
    block = multirnn.native_layer(model, params, backend="mxnet")
    block.hybridize()
    x = mx.nd.array(inputs, dtype=dtype)
    with mx.autograd.record():
        out, _ = block(x)
    out.backward()
    want, _ = multirnn.forward(model, to_float64(params), to_float64(inputs))
    assert_close(out.asnumpy(), want, dtype, "hybridized outputs")
    grads = multirnn.gradients(model, to_float64(params), to_float64(inputs))
    for name, param in block.canonical.items():
        assert_close(param.grad().asnumpy(), grads[name], dtype, name)
    block.export(str(tmp_path / "rnn"))
    imported = mx.gluon.SymbolBlock.imports(str(tmp_path / "rnn-symbol.json"), ["data"],
                                           str(tmp_path / "rnn-0000.params"))
    again = imported(x)
    assert len(again) == 1 + len(list(model.units())) * model.state_arrays  # outputs, then the flat state
    assert_close(again[0].asnumpy(), want, dtype, "re-imported outputs")
    np.testing.assert_array_equal(again[0].asnumpy(), out.asnumpy())


def test_hybridized_block_takes_a_state_and_new_lengths(mx):
    model = MODELS[0]
    params, inputs = make_case(model, dtype="float32", scale=10.0)
    state = random_state(model, 3, seed=2, dtype="float32")
    block = multirnn.native_layer(model, params, backend="mxnet")
    block.hybridize()
    for steps in (5, 2):  # another length rebuilds the cached graph
        out, new_state = block(mx.nd.array(inputs[:steps]), map_state(model, state, mx.nd.array))
        want, want_state = multirnn.forward(model, to_float64(params), to_float64(inputs[:steps]),
                                            to_float64(state))
        assert_close(out.asnumpy(), want, "float32", f"outputs, {steps} steps")
        got = [a.asnumpy() for u in flatten_state(model, new_state) for a in u]
        for a, b in zip(got, [a for u in flatten_state(model, want_state) for a in u], strict=True):
            assert_close(a, b, "float32", "state")


def test_hybridized_block_follows_the_fused_kernel_switch(mx):
    """The cached graph is rebuilt when fused kernels are switched off (it was kept: the benchmark's
    generic column then timed the fused kernel)."""
    model = MODELS[0]
    params, inputs = make_case(model, dtype="float32", scale=10.0)
    block = multirnn.native_layer(model, params, backend="mxnet")
    block.hybridize()
    want = multirnn.forward(model, to_float64(params), to_float64(inputs))[0]
    backend = multirnn.backends.get("mxnet")
    for fused in (True, False, True):
        with backend.fused_kernels(fused):
            out, _ = block(mx.nd.array(inputs))
        assert block._graph_key[2] is fused
        assert_close(out.asnumpy(), want, "float32", f"outputs, fused={fused}")


def test_trainer_step_is_sgd_on_the_reference_gradient(mx):
    model = MODELS[1]
    params, inputs = make_case(model, dtype="float32", scale=10.0)
    block = multirnn.native_layer(model, params, backend="mxnet")
    block.hybridize()
    trainer = mx.gluon.Trainer(block.collect_params(), "sgd", {"learning_rate": 1.0})
    with mx.autograd.record():
        loss = block(mx.nd.array(inputs))[0].sum()
    loss.backward()
    trainer.step(1)
    want = multirnn.gradients(model, to_float64(params), to_float64(inputs))
    for name, param in block.canonical.items():
        step = params[name].astype(np.float64) - param.data().asnumpy().astype(np.float64)
        assert_close(step, want[name], "float32", f"step of {name}")
