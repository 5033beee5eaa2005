"""An LSTM with a projection (spec proj_size, torch's proj_size, Gluon's projection_size): the
reference against the equations and finite differences, every backend against the reference
(outputs, every final state, every gradient), and the fused kernels that do or do not compute it."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import (FUSED_KERNEL_BACKENDS, assert_close, check_against_reference, load_backend, make_case,
                      random_state, require_module)
from test_reference import finite_difference_check

import multirnn
from multirnn import recurrence
from multirnn.spec import RecurrentSpec
from multirnn.state import flatten_state

# label -> RecurrentSpec fields beyond (3, 5, cell="lstm", proj_size=2)
SHAPES = {
    "1uni": dict(),
    "2bi": dict(num_layers=2, bidirectional=True),
    "2uni-batch-first-nobias": dict(num_layers=2, batch_first=True, bias=False),
    "bi-learned-state": dict(bidirectional=True, learn_initial_state=True),
    "2reverse-hard": dict(num_layers=2, reverse=True, gate_activation="hard_sigmoid"),
}


def projection_case(fields, dtype, seed=31, proj_size=2):
    model = RecurrentSpec(3, 5, cell="lstm", proj_size=proj_size, **fields)
    params, inputs = make_case(model, seed=seed, steps=5, batch=2, dtype=dtype, scale=5.0)
    rng = np.random.default_rng(seed + 3)
    for name, shape in model.param_shapes().items():  # init_params starts h_0/c_0 at zero
        if name.rsplit(".", 1)[-1] in ("h_0", "c_0"):
            params[name] = rng.normal(scale=0.5, size=shape).astype(dtype)
    state = None if model.learn_initial_state else random_state(model, 2, seed=seed + 1, dtype=dtype)
    shape = (2, 5) if model.batch_first else (5, 2)
    cotangent = np.random.default_rng(seed + 2).normal(size=shape + (model.output_size,)).astype(dtype)
    return model, params, inputs, state, cotangent


def torch_lstm_with_projection(inputs, p, h, c):
    """torch.nn.LSTM's documented equations with proj_size, transcribed: h_t = W_hr (o_t * tanh(c_t))."""
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    outputs = []
    for x in inputs:
        gate = {g: x @ p[f"W_x{g}"] + h @ p[f"W_h{g}"] + p[f"b_x{g}"] + p[f"b_h{g}"] for g in "ifoc"}
        c = sig(gate["f"]) * c + sig(gate["i"]) * np.tanh(gate["c"])
        h = (sig(gate["o"]) * np.tanh(c)) @ p["W_proj"]
        outputs.append(h)
    return np.stack(outputs), (h, c)


def test_spec_shapes_state_and_init():
    model = RecurrentSpec(3, 5, cell="lstm", proj_size=2, num_layers=2, bidirectional=True,
                          learn_initial_state=True)
    shapes = model.param_shapes()
    assert shapes["l0.fwd.W_xi"] == (3, 5) and shapes["l0.fwd.W_hi"] == (2, 5)
    assert shapes["l0.bwd.W_proj"] == (5, 2) and shapes["l1.fwd.W_xc"] == (4, 5)  # layer 1 reads 2·P
    assert shapes["l1.bwd.h_0"] == (2,) and shapes["l1.bwd.c_0"] == (5,)
    assert (model.h_size, model.output_size, model.state_widths) == (2, 4, (2, 5))
    params = multirnn.init_params(model, 0)
    assert params["l0.fwd.W_proj"].std() > 0 and not np.any(params["l0.fwd.h_0"])
    _, state = multirnn.forward(RecurrentSpec(3, 5, cell="lstm", proj_size=2), multirnn.init_params(
        RecurrentSpec(3, 5, cell="lstm", proj_size=2), 0), np.ones((4, 6, 3), np.float32))
    assert state[0].shape == (6, 2) and state[1].shape == (6, 5)


def test_bad_proj_sizes_and_states_are_refused_by_name():
    with pytest.raises(ValueError, match=r"proj_size=2 applies to cell='lstm' only"):
        RecurrentSpec(3, 5, cell="gru", proj_size=2)
    with pytest.raises(ValueError, match=r"proj_size must be smaller than num_hiddens=5 .*got 5"):
        RecurrentSpec(3, 5, cell="lstm", proj_size=5)
    with pytest.raises(ValueError, match=r"proj_size must be a non-negative int .*got -1"):
        RecurrentSpec(3, 5, cell="lstm", proj_size=-1)
    with pytest.raises(ValueError, match=r"proj_size must be a non-negative int .*got True"):
        RecurrentSpec(3, 5, cell="lstm", proj_size=True)
    model, params, inputs, _, _ = projection_case({}, "float64")
    full_width = (np.zeros((2, 5)), np.zeros((2, 5)))  # h must be P = 2 wide
    with pytest.raises(ValueError, match=r"state \(layer 0, fwd, H\) must have shape \(2, 2\), got \(2, 5\)"):
        multirnn.forward(model, params, inputs, full_width)


def test_reference_is_torchs_equations():
    model, params, inputs, state, _ = projection_case({}, "float64")
    outputs, (h, c) = multirnn.forward(model, params, inputs, state)
    want, (want_h, want_c) = torch_lstm_with_projection(inputs, params, *state)
    np.testing.assert_allclose(outputs, want, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h, want_h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c, want_c, rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_bptt_matches_finite_differences(shape):
    model, params, inputs, state, cotangent = projection_case(SHAPES[shape], "float64")
    finite_difference_check(model, params, inputs, state, cotangent)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_projection_matches_reference(backend_path, shape, dtype):
    model, params, inputs, state, cotangent = projection_case(SHAPES[shape], dtype)
    check_against_reference(model, params, inputs, state, backend_path, dtype, cotangent)


@pytest.mark.parametrize("shape", ["1uni", "2bi", "bi-learned-state"])
def test_projection_with_lengths_matches_reference(backend_path, shape):
    """Padded batches (torch's kernel in packed segments, the masked scan elsewhere): the P-wide h and
    the H-wide c both keep their values past a sequence's end."""
    backend = backend_path
    model, params, inputs, state, cotangent = projection_case(SHAPES[shape], "float64")
    check_against_reference(model, params, inputs, state, backend, "float64", cotangent,
                            lengths=np.array([5, 2]))


@pytest.mark.parametrize("name, computes", [("torch", True), ("mxnet", False)])
def test_torchs_kernel_computes_it_and_mxnets_cpu_kernel_does_not(name, computes):
    """torch.lstm takes weight_hr (the path nn.LSTM(proj_size=...) runs); MXNet 1.9.1's CPU RNN
    operator runs a projection forward only, so its unrolled graph runs it."""
    assert name in FUSED_KERNEL_BACKENDS
    model = RecurrentSpec(3, 5, cell="lstm", proj_size=2, bidirectional=True)
    assert recurrence.fused_path(load_backend(name), model, np.float32) is computes


@pytest.mark.parametrize("backend, api", [("torch", None), ("tensorflow", None), ("jax", None),
                                          ("jax", "nnx"), ("mxnet", None)])
def test_native_layers_run_a_projection(backend, api):
    """torch module, Keras layer, Flax linen and nnx modules, Gluon block: zero and given states."""
    from test_native_layers import call_layer

    from multirnn.state import map_state

    load_backend(backend)
    model, params, inputs, state, _ = projection_case(SHAPES["2bi"], "float64")
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    layer = multirnn.native_layer(model, params32, backend=backend, **({"api": api} if api else {}))
    for given in (None, map_state(model, state, lambda a: a.astype(np.float32))):
        out, flat = call_layer(backend, layer, inputs.astype(np.float32), given)
        want, want_state = multirnn.forward(model, params, inputs, None if given is None else state)
        assert out.shape == (5, 2, 4)
        assert_close(out, want, "float32", "outputs")
        for got, ref in zip(flat, [a for unit in flatten_state(model, want_state) for a in unit], strict=True):
            assert_close(got, ref, "float32", "state")


def test_step_runs_a_projection_and_native_cell_refuses_it_by_name(backend_or_numpy):
    backend = backend_or_numpy
    model, params, inputs, state, _ = projection_case(dict(num_layers=2), "float64")
    want, want_state = multirnn.forward(model, params, inputs, state)
    for t in range(len(inputs)):
        out, state = multirnn.step(model, params, inputs[t], state, backend=backend)
        assert_close(out, want[t], "float64", f"step {t}")
    for got, ref in zip(flatten_state(model, state), flatten_state(model, want_state)):
        for x, y in zip(got, ref):
            assert_close(x, y, "float64", "state")
    if backend != "numpy":
        with pytest.raises(ValueError, match="native_cell does not support proj_size=2"):
            multirnn.native_cell(model, params, backend=backend)


def test_hybridized_gluon_block_runs_a_projection():
    """The Symbol path (SymbolOps, the block's own zero state of widths P and H)."""
    mx = load_backend("mxnet") and pytest.importorskip("mxnet")
    model, params, inputs, _, _ = projection_case(SHAPES["2bi"], "float64")
    block = multirnn.native_layer(model, params, backend="mxnet")
    block.hybridize()
    out, (layer0, layer1) = block(mx.nd.array(inputs, dtype="float64"))
    want, want_state = multirnn.forward(model, params, inputs)
    assert_close(out.asnumpy(), want, "float64", "hybridized outputs")
    assert_close(layer1[1][0].asnumpy(), want_state[1][1][0], "float64", "l1.bwd h")
    assert_close(layer1[1][1].asnumpy(), want_state[1][1][1], "float64", "l1.bwd c")


def test_frameworks_without_a_projection_refuse_it_by_name():
    """Keras, Flax (linen and nnx) and ONNX LSTMs have no projection: export and import refuse it."""
    from multirnn.port import UnrepresentableError, flax, flax_nnx, keras

    model, params, _, _, _ = projection_case(SHAPES["2bi"], "float32")
    exports, reads = [keras.to_keras, flax.to_flax, flax_nnx.to_nnx], [keras.from_keras, flax.from_flax]
    require_module("onnx")  # multirnn.port.onnx imports onnx
    from multirnn.port import onnx

    exports += [onnx.to_onnx_weights, onnx.to_onnx]
    reads += [onnx.from_onnx_weights]
    for convert in exports:
        with pytest.raises(UnrepresentableError, match=r"proj_size=2: the (Keras|Flax|ONNX) LSTM has no projection"):
            convert(model, params)
    for read in reads:
        with pytest.raises(UnrepresentableError, match="proj_size=2"):
            read(model, [])


def test_compare_runs_the_projection_row(backend, capsys):
    import json

    from multirnn import cli

    code = cli.main(["compare", "--json", "--backends", backend, "--models", "lstm bi proj x2"])
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert code == 0 and row["pass"] and row["gradients"] <= 1e-5
    assert row["path"] == ("fused" if backend == "torch" else "generic")


@pytest.mark.parametrize("framework, exact", [("torch", True), ("gluon", True), ("keras", False),
                                              ("flax", False), ("nnx", False), ("onnxruntime", False)])
def test_compare_native_holds_torch_and_gluon_and_the_rest_refuse(framework, exact, capsys):
    import json

    from conftest import require_module

    from multirnn import cli
    from multirnn.port.native import FRAMEWORK_BACKEND

    if FRAMEWORK_BACKEND[framework]:
        load_backend(FRAMEWORK_BACKEND[framework])
    else:
        require_module(framework)
    code = cli.main(["compare", "--native", "--json", "--dtype", "float64", "--backends", framework,
                     "--models", "lstm bi proj x2"])
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert code == 0 and row["pass"]
    if exact:
        assert row["outputs"] <= 1e-10 and row["states"] <= 1e-10
    else:
        assert "proj_size=8: the" in row["refused"] and "LSTM has no projection" in row["refused"]


def test_a_projection_travels_in_checkpoints_npz_and_torch_files(tmp_path):
    """The new field round-trips (checkpoint, npz, torch .pt -> npz), and a spec written before it
    loads with proj_size=0."""
    from multirnn import checkpoint
    from multirnn.checkpoint import spec_from_dict, spec_to_dict
    from multirnn.port import files, load

    model, params, _, _, _ = projection_case(SHAPES["2bi"], "float32")
    assert spec_from_dict(spec_to_dict(model)) == model
    old = {"class": "RecurrentSpec", "fields": {"num_inputs": 3, "num_hiddens": 5, "cell": "lstm"}}
    assert spec_from_dict(old).proj_size == 0
    checkpoint.save(tmp_path / "ckpt.npz", model, params)
    got_model, got_params, _ = checkpoint.load(tmp_path / "ckpt.npz")
    assert got_model == model and all(np.array_equal(got_params[k], v) for k, v in params.items())
    files.save_npz(tmp_path / "lstmp.npz", model, params)
    from_npz = load(str(tmp_path / "lstmp.npz"))
    assert from_npz.model == model and np.array_equal(from_npz.params["l1.bwd.W_proj"], params["l1.bwd.W_proj"])
    load_backend("torch")  # the .pt round trip needs torch
    files.write("torch", tmp_path / "lstmp.pt", model, params)
    from_pt = load(str(tmp_path / "lstmp.pt"))
    assert from_pt.model == model and all(np.array_equal(from_pt.params[k], v) for k, v in params.items())


def test_keras_layer_with_lengths_runs_a_projection():
    """The Keras layer's own padding (its mask blocks are H wide; h is P wide)."""
    load_backend("tensorflow")
    model, params, inputs, _, _ = projection_case(dict(bidirectional=True, batch_first=True), "float32")
    layer = multirnn.native_layer(model, params, backend="tensorflow")
    lengths = np.array([5, 3])
    outputs, state = layer(inputs, lengths=lengths)  # return_state=True by default
    want, want_state = multirnn.forward(model, {k: v.astype(np.float64) for k, v in params.items()},
                                        inputs.astype(np.float64), lengths=lengths)
    assert_close(np.asarray(outputs), want, "float32", "outputs")
    for got, ref in zip(flatten_state(model, state), flatten_state(model, want_state)):
        for x, y in zip(got, ref):
            assert_close(np.asarray(x), y, "float32", "state")


def _step_mask():
    mask = np.ones((2, 5), bool)  # (batch, steps): one step dropped inside, one suffix
    mask[0, 1] = False
    mask[1, 3:] = False
    return mask


@pytest.mark.parametrize("shape", ["1uni", "2bi"])
def test_projection_with_a_step_mask_matches_reference(backend, shape):
    """Keras-style step masks (multirnn.masking): a masked step keeps the P-wide h and the H-wide c."""
    model, params, inputs, state, cotangent = projection_case(SHAPES[shape], "float64")
    mask = _step_mask()
    finite_difference_check(model, params, inputs, state, cotangent, mask=mask)
    check_against_reference(model, params, inputs, state, backend, "float64", cotangent, mask=mask)
