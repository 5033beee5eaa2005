"""multirnn.port.onnx: exported models run by onnx's ReferenceEvaluator and by onnxruntime against the
NumPy float64 reference; import is the exact inverse; unrepresentable nodes are refused.

onnx 1.17's ReferenceEvaluator runs one direction only, only Tanh for RNN, and never returns an LSTM's
Y_c: those cases are checked with onnxruntime (float32 only: its recurrent kernels have no float64).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CELL_VARIANTS, make_case, random_state, require_module
from porting import STRUCTURES, assert_matches_reference, assert_tree_equal, random_model

import multirnn
from multirnn.port import UnrepresentableError
from multirnn.port import onnx as ponnx


@pytest.fixture(autouse=True)
def _onnx():
    require_module("onnx")


def case(variant, structure, dtype="float32"):
    model = random_model(variant, structure)
    params, inputs = make_case(model, seed=structure, steps=4, batch=2, dtype=dtype, scale=10.0)
    state = random_state(model, 2, seed=7, dtype=dtype) if STRUCTURES[structure][4] else None
    return model, params, inputs, state


@pytest.mark.parametrize("structure", range(len(STRUCTURES)))
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_export_import_round_trip_is_exact(variant, structure, tmp_path):
    import onnx

    model, params, _, _ = case(variant, structure)
    path = tmp_path / "model.onnx"
    onnx.save(ponnx.to_onnx(model, params), str(path))
    loaded_model, loaded = ponnx.from_onnx(path)
    assert loaded_model == model
    assert_tree_equal(loaded, params)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("structure", [s for s, st in enumerate(STRUCTURES) if not st[1]])
@pytest.mark.parametrize("variant", [v for v in CELL_VARIANTS if v != "rnn-relu"])
def test_reference_evaluator_matches_spec(variant, structure, dtype):
    model, params, inputs, state = case(variant, structure, dtype)
    outputs, new_state = ponnx.run_onnx(model, ponnx.to_onnx(model, params), inputs, state, "reference")
    assert outputs.dtype == np.dtype(dtype)
    assert_matches_reference(model, params, inputs, state, outputs, new_state, "onnx reference")


@pytest.mark.parametrize("structure", range(len(STRUCTURES)))
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_onnxruntime_matches_spec(variant, structure):
    require_module("onnxruntime")
    model, params, inputs, state = case(variant, structure)
    outputs, new_state = ponnx.run_onnx(model, ponnx.to_onnx(model, params), inputs, state, "onnxruntime")
    assert_matches_reference(model, params, inputs, state, outputs, new_state, "onnxruntime")


def _set_initializer(proto, name, array):
    from onnx import numpy_helper

    for k, init in enumerate(proto.graph.initializer):
        if init.name == name:
            proto.graph.initializer[k].CopyFrom(numpy_helper.from_array(array, name))
            return
    raise KeyError(name)


@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_import_of_foreign_biases(variant):
    """Both ONNX bias halves nonzero (as another exporter writes them): the import computes the same."""
    require_module("onnxruntime")
    model, params, inputs, state = case(variant, 3)
    proto = ponnx.to_onnx(model, params)
    rng = np.random.default_rng(0)
    for layer in range(model.num_layers):
        shape = ponnx.to_onnx_weights(model, params)[layer]["B"].shape
        _set_initializer(proto, f"B_l{layer}", rng.normal(scale=0.5, size=shape).astype(np.float32))
    imported_model, imported = ponnx.from_onnx(proto)
    outputs, new_state = ponnx.run_onnx(model, proto, inputs, state, "onnxruntime")
    assert_matches_reference(imported_model, imported, inputs, state, outputs, new_state, "onnxruntime")


def test_spec_inferred_without_metadata():
    model = multirnn.RecurrentSpec(3, 4, cell="rnn", nonlinearity="relu", num_layers=2, bidirectional=True)
    params = multirnn.init_params(model, 0)
    proto = ponnx.to_onnx(model, params)
    del proto.metadata_props[:]
    inferred, loaded = ponnx.from_onnx(proto)
    assert inferred == model
    assert_tree_equal(loaded, params)
    # The graph's wiring says time-major, so a contradicting known field is an error, not an override.
    with pytest.raises(ValueError, match="batch_first=True disagrees .* batch_first=False"):
        ponnx.from_onnx(proto, batch_first=True)
    assert ponnx.from_onnx(proto, batch_first=False)[0] == model


def single_node(op, hidden=3, inputs=2, directions=1, with_p=False, **attrs):
    """A one-node ONNX model with stored weights, as another tool might write it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    rng = np.random.default_rng(0)
    arrays = {"W": (directions, gates * hidden, inputs), "R": (directions, gates * hidden, hidden),
              "B": (directions, 2 * gates * hidden)}
    if with_p:
        arrays["P"] = (directions, 3 * hidden)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), k) for k, s in arrays.items()]
    names = ["X", "W", "R", "B", "", ""] + (["", "P"] if with_p else [])
    node = helper.make_node(op, names, ["Y"], hidden_size=hidden, **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 1, inputs])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_foreign_single_node_imports():
    node = single_node("GRU", directions=2, linear_before_reset=1, direction="bidirectional")
    model, params = ponnx.from_onnx(node)
    assert model == multirnn.RecurrentSpec(2, 3, cell="gru", reset_after=True, bidirectional=True)
    assert sorted(params) == sorted(model.param_shapes())


@pytest.mark.parametrize("node, message", [
    (lambda: single_node("LSTM", with_p=True), "peephole"),
    (lambda: single_node("LSTM", clip=3.0), "clip"),
    (lambda: single_node("LSTM", input_forget=1), "input_forget"),
    (lambda: single_node("RNN", activations=["Sigmoid"]), "activations"),
    (lambda: single_node("GRU", activations=["HardSigmoid", "Affine"]), "activations"),
])
def test_unrepresentable_nodes_refused(node, message):
    with pytest.raises(UnrepresentableError, match=message):
        ponnx.from_onnx(node())


def test_reverse_node_imports():
    model, _ = ponnx.from_onnx(single_node("GRU", direction="reverse"))
    assert model.reverse and model.keep_order and not model.bidirectional


def test_zero_peepholes_are_accepted():
    from onnx import numpy_helper

    proto = single_node("LSTM", with_p=True)
    _set_initializer(proto, "P", np.zeros((1, 9), np.float32))
    assert numpy_helper.to_array(proto.graph.initializer[-1]).shape == (1, 9)
    model, _ = ponnx.from_onnx(proto)
    assert model.cell == "lstm"


def test_weights_shapes_checked():
    model = multirnn.RecurrentSpec(2, 3, cell="gru", reset_after=True)
    layers = ponnx.to_onnx_weights(model, multirnn.init_params(model, 0))
    with pytest.raises(ValueError, match=r"layer 0 R must have shape \(1, 9, 3\)"):
        ponnx.from_onnx_weights(model, [{**layers[0], "R": np.zeros((1, 9, 4), np.float32)}])
    with pytest.raises(ValueError, match="B is missing"):
        ponnx.from_onnx_weights(model, [{"W": layers[0]["W"], "R": layers[0]["R"]}])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.filterwarnings("ignore")  # the torch exporter's tracer and batch-size notes
def test_import_of_torch_onnx_export(cell):
    """An ONNX file written by another tool (torch.onnx's exporter): the imported params compute what
    the torch layer computes."""
    from conftest import assert_close, load_backend

    load_backend("torch")
    import io

    import onnx
    import torch

    torch.manual_seed(0)
    layer = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](
        3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    buffer = io.BytesIO()
    torch.onnx.export(layer, (x,), buffer, dynamo=False)
    model, params = ponnx.from_onnx(onnx.load_from_string(buffer.getvalue()))
    assert model == multirnn.RecurrentSpec(3, 4, cell=cell, num_layers=2, bidirectional=True,
                                           reset_after=cell == "gru")
    with torch.no_grad():
        expected = layer(x)[0].numpy()
    assert_close(multirnn.forward(model, params, x.numpy())[0], expected.astype(np.float64), "float32",
                 "torch.onnx export imported")
