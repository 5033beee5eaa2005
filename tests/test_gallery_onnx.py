"""A gallery of ONNX graphs as exporters write them: each one converts exactly -- ``multirnn.port.load``
proves it by running the graph, and the test compares the graph's own outputs with ``multirnn.forward``
once more -- or is refused by name with ``UnrepresentableError``.

Sources: ONNX's own backend node tests (shipped in the onnx wheel, with stored inputs and outputs),
torch.onnx.export (legacy and dynamo), multirnn's ``to_onnx``, and hand-built graphs for what must be
refused. float32 tolerance 1e-5 relative (conftest.assert_close).
"""
from __future__ import annotations

import dataclasses
import glob
import importlib
import io
import os
import warnings

import numpy as np
import pytest
from conftest import REQUIRE_ALL, assert_close, load_backend, random_state

import multirnn
from multirnn.port import UnrepresentableError
from multirnn.port import onnx as ponnx
from multirnn.state import flatten_state


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"{module} is required in CI: {exc}")
        pytest.skip(f"{module} is not installed")


@pytest.fixture(autouse=True)
def _onnx():
    require("onnx")


def reference(loaded, inputs, state=None):
    """multirnn.forward in float64 from the loaded initial state (or ``state``)."""
    params = {k: np.asarray(v, np.float64) for k, v in loaded.params.items()}
    start = loaded.initial_state if state is None else state
    start = None if start is None else _to64(start)
    return multirnn.forward(loaded.model, params, np.asarray(inputs, np.float64), start)


def _to64(tree):
    if isinstance(tree, (tuple, list)):
        return type(tree)(_to64(t) for t in tree)
    return np.asarray(tree, np.float64)


def assert_states_close(model, got, want, what):
    got, want = flatten_state(model, got), flatten_state(model, want)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        for j, (a, b) in enumerate(zip(g, w)):
            assert_close(a, b, "float32", f"{what} state unit {k} array {j}")


# ---- ONNX's backend node tests ----

def backend_case(name):
    onnx = require("onnx")
    from onnx import numpy_helper

    folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node", name)
    if not os.path.isdir(folder):
        pytest.skip(f"this onnx ships no {name}")
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    read = lambda pattern: [numpy_helper.to_array(onnx.load_tensor(f))  # noqa: E731
                            for f in sorted(glob.glob(os.path.join(folder, "test_data_set_0", pattern)))]
    inputs = dict(zip([i.name for i in proto.graph.input], read("input_*.pb")))
    outputs = dict(zip([o.name for o in proto.graph.output], read("output_*.pb")))
    return proto, inputs, outputs


def onnx_output_as_multirnn(name, array, layout):
    """A one-direction node's stored Y or Y_h in multirnn's layout (direction axis dropped)."""
    if name == "Y":
        return array[:, :, 0] if layout else array[:, 0]
    return array[:, 0] if layout else array[0]


EXACT_BACKEND_TESTS = ["test_simple_rnn_batchwise", "test_gru_batchwise", "test_lstm_batchwise",
                       "test_simple_rnn_defaults", "test_gru_defaults", "test_lstm_defaults",
                       "test_simple_rnn_with_initial_bias", "test_gru_with_initial_bias",
                       "test_lstm_with_initial_bias", "test_gru_seq_length", "test_rnn_seq_length"]


@pytest.mark.parametrize("name", EXACT_BACKEND_TESTS)
def test_onnx_backend_node_test_is_exact(name):
    proto, inputs, stored = backend_case(name)
    node = proto.graph.node[0]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    x = inputs.pop("X")
    loaded = multirnn.port.load(proto, variables=inputs)  # W, R, B are graph inputs there
    assert loaded.verification is not None
    assert loaded.model.batch_first == bool(layout) or x.shape[:2] == (1, 1)
    assert loaded.initial_state is None and not loaded.run.takes_state
    outputs, state = reference(loaded, x)
    last = flatten_state(loaded.model, state)[-1][0]
    for out_name, array in stored.items():
        want = onnx_output_as_multirnn(out_name, array, layout)
        assert_close(want, (outputs if out_name == "Y" else last), "float32", f"{name} stored {out_name}")
    got, _ = loaded.run.call(x, None)
    assert_close(got, outputs if loaded.run.outputs == "sequence" else last, "float32", name)


def test_onnx_backend_batchwise_ignoring_layout_would_be_wrong():
    """The issue's symptom: the batchwise tests read time-major compute something else."""
    proto, inputs, stored = backend_case("test_gru_batchwise")
    x = inputs.pop("X")
    loaded = multirnn.port.load(proto, variables=inputs)
    assert loaded.model.batch_first
    want = stored["Y"][:, :, 0]  # (batch 3, steps 1, H)
    assert_close(reference(loaded, x)[0], want, "float32", "batch-first")
    time_major = dataclasses.replace(loaded.model, batch_first=False)  # 3 steps of one sequence
    wrong, _ = multirnn.forward(time_major, loaded.params, x)
    assert wrong.shape == want.shape and not np.allclose(wrong, want, atol=1e-3)


def test_onnx_backend_peepholes_refused():
    proto, inputs, _ = backend_case("test_lstm_with_peepholes")
    x = inputs.pop("X")
    del x
    with pytest.raises(UnrepresentableError, match="peephole"):
        multirnn.port.load(proto, variables=inputs)
    zero_p = dict(inputs, P=np.zeros_like(inputs["P"]))
    with pytest.raises(UnrepresentableError, match="sequence_lens"):
        multirnn.port.load(proto, variables=zero_p)


# ---- torch.onnx.export ----

def torch_export(module, args, dynamo, **kwargs):
    onnx = require("onnx")
    import torch

    if dynamo:
        require("onnxscript")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(module, args, dynamo=True, **kwargs).model_proto
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, **kwargs)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_torch_batch_first_bidirectional_two_layer_lstm(dynamo):
    load_backend("torch")
    import torch

    torch.manual_seed(0)
    layer = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(2, 5, 3)
    proto = torch_export(layer, (x,), dynamo)
    loaded = multirnn.port.load(proto)
    assert loaded.model == multirnn.RecurrentSpec(3, 4, cell="lstm", num_layers=2, bidirectional=True,
                                                  batch_first=True)
    assert loaded.run.batch == 2 and loaded.run.steps == 5 and loaded.run.outputs == "sequence"
    with torch.no_grad():
        out, (h, c) = layer(x)
    outputs, state = reference(loaded, x.numpy())
    assert_close(outputs, out.numpy().astype(np.float64), "float32", "torch LSTM outputs")
    flat = flatten_state(loaded.model, state)
    assert_close(np.stack([u[0] for u in flat]), h.numpy(), "float32", "h_n")
    assert_close(np.stack([u[1] for u in flat]), c.numpy(), "float32", "c_n")


class LearnedH0GRU:
    """A torch module whose GRU starts from a learned nn.Parameter expanded to the batch."""

    @staticmethod
    def make():
        import torch

        class Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.gru = torch.nn.GRU(3, 4, batch_first=True)
                self.h0 = torch.nn.Parameter(torch.randn(1, 1, 4))

            def forward(self, x):
                return self.gru(x, self.h0.expand(1, x.shape[0], 4).contiguous())

        return Module()


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_torch_learned_initial_state(dynamo):
    load_backend("torch")
    import torch

    torch.manual_seed(0)
    module = LearnedH0GRU.make()
    x = torch.randn(2, 5, 3)
    proto = torch_export(module, (x,), dynamo)
    loaded = multirnn.port.load(proto)
    assert loaded.model == multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=True, batch_first=True)
    assert not loaded.run.takes_state
    h0 = module.h0.detach().numpy()[0, 0]
    assert_close(loaded.initial_state, np.stack([h0, h0]), "float32", "initial_state")
    with torch.no_grad():
        out, h = module(x)
    outputs, state = reference(loaded, x.numpy())
    assert_close(outputs, out.numpy().astype(np.float64), "float32", "outputs from learned h0")
    assert_close(state, h.numpy()[0], "float32", "h_n from learned h0")
    with pytest.raises(UnrepresentableError, match="initial state"):
        ponnx.from_onnx(proto)  # the pair cannot carry the state


def test_torch_learned_initial_state_with_dynamic_batch_refused():
    load_backend("torch")
    import torch

    torch.manual_seed(0)
    proto = torch_export(LearnedH0GRU.make(), (torch.randn(2, 5, 3),), False,
                         input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    with pytest.raises(UnrepresentableError, match="fixed batch"):
        multirnn.port.load(proto)


# ---- multirnn's own to_onnx ----

@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_to_onnx_round_trip_is_proven(cell, bidirectional, batch_first):
    require("onnxruntime")
    model = multirnn.RecurrentSpec(3, 4, cell=cell, num_layers=2, bidirectional=bidirectional,
                                   batch_first=batch_first, reset_after=cell == "gru")
    params = multirnn.init_params(model, 0, "float32")
    params = {k: v * 20 for k, v in params.items()}
    proto = ponnx.to_onnx(model, params)
    del proto.metadata_props[:]  # the layout must come from the graph, not from metadata
    loaded = multirnn.port.load(proto, sigma=model.sigma)
    assert loaded.model == model and loaded.run.takes_state
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 3) if batch_first else (6, 2, 3)).astype(np.float32)
    state = random_state(model, 2, seed=3, dtype="float32")
    got, got_state = ponnx.run_onnx(model, proto, x, state, "onnxruntime")
    want, want_state = reference(loaded, x, state)
    assert_close(got, want, "float32", "to_onnx outputs")
    assert_states_close(model, got_state, want_state, "to_onnx")


def test_to_onnx_file_through_load(tmp_path):
    require("onnxruntime")
    model = multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=False, batch_first=True)
    params = multirnn.init_params(model, 0, "float32")
    path = tmp_path / "m.onnx"
    ponnx.write_file(path, model, params)
    loaded = multirnn.port.load(path)
    assert loaded.model == model and loaded.verification is not None


def stored_state_graph(model, params, state):
    """to_onnx's graph with its initial_h/initial_c graph inputs turned into initializers."""
    from onnx import numpy_helper

    proto = ponnx.to_onnx(model, params)
    flat = flatten_state(model, state)
    stored = {"initial_h": np.stack([u[0] for u in flat])}
    if model.cell == "lstm":
        stored["initial_c"] = np.stack([u[1] for u in flat])
    keep = [i for i in proto.graph.input if i.name not in stored]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    proto.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in stored.items())
    return proto


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_stored_initial_state_initializer(cell):
    require("onnxruntime")
    model = multirnn.RecurrentSpec(3, 4, cell=cell, num_layers=2, bidirectional=True)
    params = multirnn.init_params(model, 0, "float32")
    state = random_state(model, 2, seed=5, dtype="float32")
    proto = stored_state_graph(model, params, state)
    for value in proto.graph.input:  # the stored state fixes the batch
        value.type.tensor_type.shape.dim[1].dim_value = 2
    loaded = multirnn.port.load(proto)
    assert not loaded.run.takes_state and loaded.run.batch == 2
    assert_states_close(model, loaded.initial_state, state, "stored initial state")


# ---- hand-built graphs ----

def one_node_graph(op="GRU", *, between=None, outputs=("Y", "Y_h"), hidden=3, inputs=2, **attrs):
    """X -> [between op] -> op node -> outputs, weights stored; ``between`` names an op applied to X."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    nd = 2 if attrs.get("direction") == "bidirectional" else 1
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), k) for k, s in
             (("W", (nd, gates * hidden, inputs)), ("R", (nd, gates * hidden, hidden)),
              ("B", (nd, 2 * gates * hidden)))]
    nodes, x = [], "X"
    if between is not None:
        inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
        nodes.append(helper.make_node(between, ["X", "two"], ["X2"], name="scale"))
        x = "X2"
    names = [x, "W", "R", "B"]
    if "sequence_lens" in attrs:
        inits.append(numpy_helper.from_array(np.asarray(attrs.pop("sequence_lens"), np.int32), "lens"))
        names.append("lens")
    nodes.append(helper.make_node(op, names, list(outputs), name="rec", hidden_size=hidden, **attrs))
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, inputs])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs
                               if o], initializer=inits)
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def squeezed_outputs_graph():
    """tf2onnx-style: Y and Y_h squeezed of their direction axis before leaving the graph."""
    from onnx import TensorProto, helper, numpy_helper

    proto = one_node_graph("LSTM", outputs=("Y", "Y_h", "Y_c"))
    graph = proto.graph
    graph.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "ax1"),
                              numpy_helper.from_array(np.array([0], np.int64), "ax0")])
    graph.node.extend([helper.make_node("Squeeze", ["Y", "ax1"], ["out"]),
                       helper.make_node("Squeeze", ["Y_h", "ax0"], ["h"]),
                       helper.make_node("Identity", ["Y_c"], ["c"])])
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("out", "h", "c"))
    return proto


def test_squeezed_outputs_are_exact():
    require("onnxruntime")
    loaded = multirnn.port.load(squeezed_outputs_graph())
    assert loaded.model.cell == "lstm" and loaded.run.outputs == "sequence"
    x = np.random.default_rng(0).normal(size=(5, 2, 2)).astype(np.float32)
    got, got_state = loaded.run.call(x, None)
    want, want_state = reference(loaded, x)
    assert_close(got, want, "float32", "squeezed Y")
    assert_states_close(loaded.model, got_state, want_state, "squeezed states")


def test_last_hidden_state_only():
    require("onnxruntime")
    loaded = multirnn.port.load(one_node_graph("GRU", outputs=("", "Y_h"), direction="bidirectional"))
    assert loaded.run.outputs == "last" and loaded.model.bidirectional


@pytest.mark.parametrize("make, message", [
    (lambda: one_node_graph(between="Mul"), "Mul node 'scale'"),
    (lambda: one_node_graph(between="Add"), "Add node 'scale'"),
    (lambda: one_node_graph(direction="reverse"), "reverse"),
    (lambda: one_node_graph("LSTM", clip=2.0), "clip"),
    (lambda: one_node_graph("RNN", activations=["Sigmoid"]), "activations"),
    (lambda: one_node_graph("GRU", activations=["Sigmoid", "Relu"]), "activations"),
    (lambda: one_node_graph("LSTM", activation_alpha=[0.5]), "activation_alpha"),
    (lambda: one_node_graph("GRU", sequence_lens=[5, 3]), "sequence_lens"),
])
def test_refused(make, message):
    with pytest.raises(UnrepresentableError, match=message):
        multirnn.port.load(make())


def test_intermediate_layer_output_refused():
    from onnx import TensorProto, helper

    model = multirnn.RecurrentSpec(3, 4, cell="gru", num_layers=2, reset_after=True)
    proto = ponnx.to_onnx(model, multirnn.init_params(model, 0, "float32"))
    proto.graph.output.append(helper.make_tensor_value_info("Y_l0", TensorProto.FLOAT, None))
    with pytest.raises(UnrepresentableError, match="layer 0's sequence outputs"):
        multirnn.port.load(proto)


def test_known_field_contradicting_graph():
    proto = one_node_graph()
    with pytest.raises(ValueError, match="batch_first=True disagrees"):
        multirnn.port.load(proto, batch_first=True)
