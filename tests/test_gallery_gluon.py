"""A gallery of real Gluon recurrent blocks through ``multirnn.port.load``: each converts exactly --
proven by load itself (it runs the block) AND by an explicit comparison of the block's own outputs and
final state with ``multirnn.forward`` on the NumPy float64 reference -- or is refused by name with
``UnrepresentableError``. MXNet is imported only inside the tests (via load_backend)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, load_backend, random_state, to_float64

import multirnn
import multirnn.port
from multirnn.port._common import UnrepresentableError


def _mx():
    load_backend("mxnet")  # restores numpy.bool before mxnet loads; skips/fails when unavailable
    import mxnet as mx

    return mx


def _block(kind, hidden=4, seed=0, input_size=3, **kwargs):
    """An initialized Gluon block with random weights AND biases (Gluon initializes biases to zero)."""
    mx = _mx()
    rnn = mx.gluon.rnn
    if kind.startswith("rnn_"):
        block = rnn.RNN(hidden, activation=kind[4:], input_size=input_size, **kwargs)
    else:
        block = {"gru": rnn.GRU, "lstm": rnn.LSTM}[kind](hidden, input_size=input_size, **kwargs)
    block.initialize()
    rng = np.random.default_rng(seed)
    for param in block.collect_params().values():
        param.set_data(mx.nd.array(rng.uniform(-0.6, 0.6, size=param.shape), dtype=param.dtype))
    return block


def _inputs(model, steps=5, batch=3, seed=0):
    shape = (batch, steps) if model.batch_first else (steps, batch)
    return np.random.default_rng(seed).normal(size=shape + (model.num_inputs,))


def assert_block_exact(block, dtype="float32", batch=3):
    """load() proves the conversion; then the block's own outputs and final state, from a random
    initial state, equal multirnn.forward's on the float64 reference."""
    mx = _mx()
    from multirnn.state import flatten_state

    loaded = multirnn.port.load(block)
    assert loaded.verification is not None and loaded.verification.dtype == dtype
    model = loaded.model
    inputs = _inputs(model, batch=batch)
    state = random_state(model, batch, seed=5, dtype=dtype)
    flat = flatten_state(model, state)
    begin = [mx.nd.array(np.stack([unit[k] for unit in flat]), dtype=dtype) for k in range(model.state_arrays)]
    out, states = block(mx.nd.array(inputs, dtype=dtype), begin)
    params64 = {k: v.astype(np.float64) for k, v in loaded.params.items()}
    ref_out, ref_state = multirnn.forward(model, params64, inputs, to_float64(state))
    assert_close(out.asnumpy(), ref_out, dtype, "outputs")
    for k, array in enumerate(states):
        want = np.stack([unit[k] for unit in flatten_state(model, ref_state)])
        assert_close(array.asnumpy(), want, dtype, f"final state array {k}")
    return loaded


@pytest.mark.parametrize("kind", ["rnn_relu", "rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_every_cell_direction_and_depth_is_exact(kind, bidirectional, layers):
    loaded = assert_block_exact(_block(kind, num_layers=layers, bidirectional=bidirectional))
    model = loaded.model
    assert (model.cell, model.num_layers, model.bidirectional) == (kind[:3] if kind != "lstm" else "lstm",
                                                                   layers, bidirectional)
    assert model.nonlinearity == (kind[4:] if kind.startswith("rnn_") else "tanh")
    assert model.reset_after == (kind == "gru") and not model.batch_first


@pytest.mark.parametrize("kind", ["rnn_relu", "gru", "lstm"])
def test_ntc_layout_is_exact_and_batch_first(kind):
    loaded = assert_block_exact(_block(kind, layout="NTC", bidirectional=True))
    assert loaded.model.batch_first


def test_the_rnn_activation_comes_from_the_block_and_a_contradiction_is_an_error():
    with pytest.raises(ValueError, match="nonlinearity='tanh' disagrees"):
        multirnn.port.load(_block("rnn_relu"), nonlinearity="tanh")
    assert multirnn.port.load(_block("rnn_relu"), nonlinearity="relu").model.nonlinearity == "relu"


def test_dropout_on_two_layers_is_exact_in_predict_mode():
    loaded = assert_block_exact(_block("lstm", num_layers=2, dropout=0.3))
    assert loaded.model.dropout == 0.3
    assert any("predict mode" in note for note in loaded.notes)


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_float64_blocks_are_exact(kind):
    loaded = assert_block_exact(_block(kind, num_layers=2, bidirectional=True, dtype="float64"), "float64")
    assert all(v.dtype == np.float64 for v in loaded.params.values())


def test_a_hybridized_block_is_exact():
    block = _block("lstm", num_layers=2, bidirectional=True)
    block.hybridize()
    assert_block_exact(block)


def test_any_block_prefix_is_accepted():
    mx = _mx()
    with mx.name.Prefix("encoder_"):
        block = _block("gru", num_layers=2)
    assert block.prefix.startswith("encoder_")
    assert_block_exact(block)


@pytest.mark.parametrize("fields", [dict(), dict(num_layers=2, bidirectional=True),
                                    dict(num_layers=2, layout="NTC")],
                         ids=["uni", "2layer-bi", "2layer-ntc"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_projection_size_is_exact(fields, dtype):
    """rnn.LSTM(projection_size=P): h2r_weight is the spec's W_proj (transposed); h is P wide."""
    block = _block("lstm", hidden=5, projection_size=2, dtype=dtype, **fields)
    loaded = assert_block_exact(block, dtype)
    assert loaded.model.proj_size == 2 and loaded.model.batch_first == (fields.get("layout") == "NTC")
    last = "l1.bwd." if fields.get("bidirectional") else ("l1." if fields else "")
    name = ("r1" if fields.get("bidirectional") else "l1" if fields else "l0") + "_h2r_weight"
    np.testing.assert_array_equal(loaded.params[last + "W_proj"], block._reg_params[name].data().asnumpy().T)


def test_projection_size_travels_both_ways_as_arrays_a_layer_and_a_params_file(tmp_path):
    from multirnn.port import gluon as pgluon

    block = _block("lstm", hidden=5, projection_size=2, num_layers=2, bidirectional=True)
    block.save_parameters(str(tmp_path / "lstmp.params"))  # MXNet 1.9's _unfused.<k>.<l|r>_cell. names
    saved = multirnn.port.load(str(tmp_path / "lstmp.params"))
    loaded = assert_block_exact(block)
    assert saved.model == loaded.model and saved.model.proj_size == 2
    for name, value in loaded.params.items():
        np.testing.assert_array_equal(saved.params[name], value)
    arrays = pgluon.to_gluon(loaded.model, loaded.params)
    assert arrays["r1_h2r_weight"].shape == (2, 5) and arrays["l1_h2h_weight"].shape == (20, 2)
    assert_block_exact(pgluon.gluon_layer(loaded.model, loaded.params))


def test_lstm_state_clipping_is_refused_by_name():
    with pytest.raises(UnrepresentableError, match="state_clip_min=-1.*state_clip_max=1"):
        multirnn.port.load(_block("lstm", state_clip_min=-1, state_clip_max=1))
    with pytest.raises(UnrepresentableError, match="state_clip_max=2"):
        multirnn.port.load(_block("lstm", state_clip_max=2))


def test_use_sequence_length_is_refused_by_name():
    with pytest.raises(UnrepresentableError, match="use_sequence_length"):
        multirnn.port.load(_block("gru", use_sequence_length=True))


def test_float16_and_non_recurrent_blocks_are_refused():
    mx = _mx()
    with pytest.raises(UnrepresentableError, match="dtype"):
        multirnn.port.load(_block("gru", dtype="float16"))
    dense = mx.gluon.nn.Dense(3, in_units=2)
    dense.initialize()
    with pytest.raises(UnrepresentableError, match="not a Gluon recurrent layer"):
        multirnn.port.load(dense)


def test_forward_hooks_and_overridden_computation_are_refused():
    mx = _mx()
    hooked = _block("gru")
    hooked.register_forward_hook(lambda block, inputs, outputs: None)
    with pytest.raises(UnrepresentableError, match="hooks"):
        multirnn.port.load(hooked)

    class Scaled(mx.gluon.rnn.GRU):
        def hybrid_forward(self, F, inputs, states, **kwargs):
            out, states = super().hybrid_forward(F, inputs, states, **kwargs)
            return 2 * out, states

    block = Scaled(4, input_size=3)
    block.initialize()
    with pytest.raises(UnrepresentableError, match="overrides hybrid_forward"):
        multirnn.port.load(block)


def test_an_uninitialized_deferred_block_is_an_error():
    mx = _mx()
    block = mx.gluon.rnn.GRU(4)
    block.initialize()
    with pytest.raises(ValueError, match="not initialized"):
        multirnn.port.load(block)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_save_parameters_file_is_weights_only_and_says_so(tmp_path, bidirectional):
    """save_parameters writes MXNet 1.9's unfused names (_unfused.0.i2h_weight, _unfused.0.r_cell.…)."""
    _mx()
    path = tmp_path / "rnn.params"
    block = _block("rnn_relu", num_layers=2, bidirectional=bidirectional)
    block.save_parameters(str(path))
    loaded = multirnn.port.load(path, nonlinearity="relu")
    assert loaded.run is None and loaded.verification is None
    assert any(note.startswith("weights only") for note in loaded.notes)
    assert "spec completed from flags: nonlinearity" in loaded.notes
    live = multirnn.port.load(block)
    assert loaded.model == live.model
    for name, value in live.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
