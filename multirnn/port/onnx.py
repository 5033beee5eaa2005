"""ONNX ``RNN``/``GRU``/``LSTM`` nodes <-> canonical params, and whole-model export/import.

Per layer ONNX holds ``W`` (D, G·H, in), ``R`` (D, G·H, H), ``B`` (D, 2·G·H) = [input biases, recurrent
biases], direction index 0 forward, 1 backward; gates z, r, h (GRU) and i, o, f, c (LSTM). A GRU's
``linear_before_reset`` is multirnn's ``reset_after``; both GRU variants convert exactly. An RNN's
``b_h`` is exported as [b_h, 0] and the two halves are summed on import.

``to_onnx`` writes a graph (opset 17) that runs the whole model:
inputs ``X`` (steps, batch, in) — (batch, steps, in) when batch_first, by a Transpose, not the
``layout`` attribute, which onnxruntime does not run — ``initial_h`` (L·D, batch, H) and for LSTMs
``initial_c``; outputs ``Y`` (layout of X, D·H features), ``h_n`` and ``c_n`` (L·D, batch, H), units in
canonical (layer, direction) order like torch's. Layers are chained by Transpose + Reshape of ``Y``
(steps, D, batch, H) -> (steps, batch, D·H). The spec is stored in metadata ``multirnn.spec``.

Only the conversion of weights is framework-free; building, reading and running models imports onnx.
"""
from __future__ import annotations

import numpy as np

from ._common import (Fused, UnrepresentableError, check_export, expect_shape,
                      finish_import, fuse, make_spec, spec_from_json, spec_to_json, unfuse)

OP_TYPES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
CELLS = {v: k for k, v in OP_TYPES.items()}
OPSET = 17
METADATA_KEY = "multirnn.spec"
# Activations an ONNX node may list while meaning exactly the multirnn cell (per direction).
_DEFAULT_ACTS = {"gru": ["Sigmoid", "Tanh"], "lstm": ["Sigmoid", "Tanh", "Tanh"]}


def _layer_units(model, layer):
    return [u for u in model.units() if u[0] == layer]


def to_onnx_weights(model, params: dict) -> list[dict[str, np.ndarray]]:
    """Per layer ``{"W", "R"[, "B"]}`` arrays of the ONNX node."""
    check_export(model, params)
    layers = []
    for layer in range(model.num_layers):
        fused = [fuse(model, params, prefix, "onnx") for _, _, prefix, _ in _layer_units(model, layer)]
        entry = {"W": np.stack([f.wx.T for f in fused]), "R": np.stack([f.wh.T for f in fused])}
        if model.bias:
            entry["B"] = np.stack([np.concatenate([f.bx, f.bh]) for f in fused])
        layers.append(entry)
    return layers


def from_onnx_weights(model, layers) -> dict[str, np.ndarray]:
    """Canonical params from per-layer ``{"W", "R"[, "B"]}`` arrays."""
    if len(layers) != model.num_layers:
        raise ValueError(f"expected {model.num_layers} ONNX layers for {model}, got {len(layers)}")
    gh = {"rnn": 1, "gru": 3, "lstm": 4}[model.cell] * model.num_hiddens
    nd, params = len(model.directions), {}
    for layer, entry in enumerate(layers):
        if model.bias != ("B" in entry):
            raise ValueError(f"layer {layer}: B is {'missing' if model.bias else 'present'} but the "
                             f"model has bias={model.bias}")
        for d, (_, _, prefix, width) in enumerate(_layer_units(model, layer)):
            w = expect_shape(f"layer {layer} W", np.asarray(entry["W"]), (nd, gh, width))[d]
            r = expect_shape(f"layer {layer} R", np.asarray(entry["R"]), (nd, gh, model.num_hiddens))[d]
            b = expect_shape(f"layer {layer} B", np.asarray(entry["B"]), (nd, 2 * gh))[d] \
                if model.bias else None
            fused = Fused(w.T, r.T, None if b is None else b[:gh], None if b is None else b[gh:])
            params.update(unfuse(model, fused, prefix, "onnx"))
    return finish_import(model, params)


# ---- whole models (import onnx) ----

def to_onnx(model, params: dict, opset: int = OPSET):
    """An ``onnx.ModelProto`` computing ``multirnn.forward(model, params, X, state)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = check_export(model, params)
    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype.name]
    nd, hidden, op = len(model.directions), model.num_hiddens, OP_TYPES[model.cell]
    direction = "bidirectional" if model.bidirectional else "forward"
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    x = "X"
    if model.batch_first:
        nodes.append(helper.make_node("Transpose", ["X"], ["X_time_major"], perm=[1, 0, 2]))
        x = "X_time_major"
    const("reshape_merge_directions", np.array([0, 0, -1], np.int64))
    const("axis0", np.array([0], np.int64))
    states = ["h"] + (["c"] if model.cell == "lstm" else [])
    finals = {s: [] for s in states}
    for layer, weights in enumerate(to_onnx_weights(model, params)):
        names = {k: const(f"{k}_l{layer}", v) for k, v in weights.items()}
        initial = {}
        lo = const(f"start_l{layer}", np.array([layer * nd], np.int64))
        hi = const(f"end_l{layer}", np.array([(layer + 1) * nd], np.int64))
        for s in states:  # this layer's slice of the (L·D, batch, H) initial state
            nodes.append(helper.make_node("Slice", [f"initial_{s}", lo, hi, "axis0"], [f"{s}0_l{layer}"]))
            initial[s] = f"{s}0_l{layer}"
        attrs = {"hidden_size": hidden, "direction": direction}
        if model.cell == "gru":
            attrs["linear_before_reset"] = int(model.reset_after)
        if model.cell == "rnn" and model.nonlinearity != "tanh":
            attrs["activations"] = ["Relu"] * nd
        inputs = [x, names["W"], names["R"], names.get("B", ""), "", initial["h"]]
        if model.cell == "lstm":
            inputs.append(initial["c"])
        outputs = [f"Y_l{layer}"] + [f"{s}_n_l{layer}" for s in states]
        nodes.append(helper.make_node(op, inputs, outputs, name=f"{op.lower()}_l{layer}", **attrs))
        for s in states:
            finals[s].append(f"{s}_n_l{layer}")
        nodes.append(helper.make_node("Transpose", [f"Y_l{layer}"], [f"Y_l{layer}_t"], perm=[0, 2, 1, 3]))
        x = f"out_l{layer}"
        nodes.append(helper.make_node("Reshape", [f"Y_l{layer}_t", "reshape_merge_directions"], [x]))
    nodes.append(helper.make_node("Transpose", [x], ["Y"], perm=[1, 0, 2]) if model.batch_first
                 else helper.make_node("Identity", [x], ["Y"]))
    for s in states:
        nodes.append(helper.make_node("Concat", finals[s], [f"{s}_n"], axis=0))

    seq = ["batch", "steps"] if model.batch_first else ["steps", "batch"]
    state_shape = [model.num_layers * nd, "batch", hidden]
    graph = helper.make_graph(
        nodes, f"multirnn_{model.cell}",
        [helper.make_tensor_value_info("X", elem, seq + [model.num_inputs])]
        + [helper.make_tensor_value_info(f"initial_{s}", elem, state_shape) for s in states],
        [helper.make_tensor_value_info("Y", elem, seq + [model.output_size])]
        + [helper.make_tensor_value_info(f"{s}_n", elem, state_shape) for s in states],
        initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="multirnn")
    helper.set_model_props(proto, {METADATA_KEY: spec_to_json(model)})
    onnx.checker.check_model(proto)
    return proto


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


def _check_node(node, values: dict) -> dict:
    """Refuse what multirnn cannot represent; return the node's spec fields."""
    attrs = _attributes(node)
    where = f"ONNX {node.op_type} node {node.name or node.output[0]!r}"
    cell = CELLS[node.op_type]
    direction = _decode(attrs.get("direction", b"forward"))
    if direction == "reverse":
        raise UnrepresentableError(f"{where}: direction 'reverse' alone is not representable "
                                   "(multirnn runs forward, or both directions)")
    if "clip" in attrs:
        raise UnrepresentableError(f"{where}: cell clipping (clip={attrs['clip']}) is not representable")
    if attrs.get("input_forget", 0):
        raise UnrepresentableError(f"{where}: input_forget=1 (coupled gates) is not representable")
    if "activation_alpha" in attrs or "activation_beta" in attrs:
        raise UnrepresentableError(f"{where}: activation_alpha/beta are not representable")
    nd = 2 if direction == "bidirectional" else 1
    acts = [_decode(a) for a in attrs.get("activations", [])]
    fields = {"cell": cell, "num_hiddens": attrs["hidden_size"], "bidirectional": nd == 2}
    if cell == "rnn":
        acts = acts or ["Tanh"] * nd
        if len(set(acts)) != 1 or acts[0] not in ("Tanh", "Relu"):
            raise UnrepresentableError(f"{where}: activations {acts} are not representable "
                                       "(one of Tanh or Relu for every direction)")
        fields["nonlinearity"] = acts[0].lower()
    elif acts and acts != _DEFAULT_ACTS[cell] * nd:
        raise UnrepresentableError(f"{where}: activations {acts} are not representable "
                                   f"(only the defaults {_DEFAULT_ACTS[cell]})")
    if cell == "gru":
        fields["reset_after"] = bool(attrs.get("linear_before_reset", 0))
    if len(node.input) > 7 and node.input[7] and np.any(values.get(node.input[7], 1) != 0):
        raise UnrepresentableError(f"{where}: peephole weights P are not representable")
    return fields


def _constant_values(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            attrs = {a.name: a for a in node.attribute}
            if "value" in attrs:
                values[node.output[0]] = numpy_helper.to_array(attrs["value"].t)
    return values


def from_onnx(proto, **known):
    """``(model, params)`` from an ONNX model (a ModelProto or a path) whose recurrent nodes form one
    stack of RNN/GRU/LSTM layers (read in graph order; the ops between them are not interpreted).
    The spec comes from the nodes, completed by ``multirnn.spec`` metadata and ``known`` fields."""
    import onnx

    if not isinstance(proto, onnx.ModelProto):
        proto = onnx.load(str(proto))
    graph, values = proto.graph, _constant_values(proto.graph)
    nodes = [n for n in graph.node if n.op_type in CELLS]
    if not nodes:
        raise ValueError("the ONNX model has no RNN, GRU or LSTM node")
    fields = [_check_node(n, values) for n in nodes]
    if any(f != fields[0] for f in fields):
        raise UnrepresentableError(f"the recurrent nodes differ ({fields}): multirnn needs one cell, "
                                   "hidden size and direction setting for every layer")
    layers = []
    for node in nodes:
        entry = {}
        for key, index in (("W", 1), ("R", 2), ("B", 3)):
            name = node.input[index] if len(node.input) > index else ""
            if not name:
                continue
            if name not in values:
                raise ValueError(f"ONNX node {node.name!r}: {key} ({name!r}) is not an initializer or "
                                 "Constant; only stored weights can be converted")
            entry[key] = values[name]
        layers.append(entry)
    metadata = {p.key: p.value for p in proto.metadata_props}
    inferred = dict(fields[0], num_inputs=int(layers[0]["W"].shape[2]), num_layers=len(nodes),
                    bias="B" in layers[0])
    extra = {}
    if METADATA_KEY in metadata:
        stored = spec_from_json(metadata[METADATA_KEY])
        extra = {"batch_first": stored.batch_first, "sigma": stored.sigma}
        if stored.cell == "rnn":
            extra["nonlinearity"] = stored.nonlinearity
    extra.update({k: v for k, v in known.items() if v is not None})
    model = make_spec(inferred, extra, "ONNX")
    return model, from_onnx_weights(model, layers)


def run_onnx(model, proto, inputs: np.ndarray, state=None, engine: str = "reference"):
    """Run an exported model on NumPy inputs with a multirnn-convention state (None = zeros) using
    ``onnx.reference.ReferenceEvaluator`` or ``onnxruntime``; returns ``(outputs, state)``."""
    from multirnn.state import flatten_state, nest_state

    batch = inputs.shape[0 if model.batch_first else 1]
    units = len(list(model.units()))
    if state is None:
        flat = [tuple(np.zeros((batch, model.num_hiddens), inputs.dtype)
                      for _ in range(model.state_arrays))] * units
    else:
        flat = flatten_state(model, state)
    feeds = {"X": inputs, "initial_h": np.stack([u[0] for u in flat])}
    if model.cell == "lstm":
        feeds["initial_c"] = np.stack([u[1] for u in flat])
    names = ["Y", "h_n"] + (["c_n"] if model.cell == "lstm" else [])
    if engine == "reference":
        from onnx.reference import ReferenceEvaluator

        if model.cell == "lstm":  # onnx's reference LSTM never returns Y_c: C comes back as None
            proto, names = _without_cell_state(proto), names[:2]
        results = ReferenceEvaluator(proto).run(names, feeds)
        if model.cell == "lstm":
            results = list(results) + [None]
    elif engine == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        results = session.run(names, feeds)
    else:
        raise ValueError(f"engine must be 'reference' or 'onnxruntime', got {engine!r}")
    out, *finals = [None if r is None else np.asarray(r) for r in results]
    return out, nest_state(model, [tuple(None if f is None else f[i] for f in finals)
                                   for i in range(units)])


def _without_cell_state(proto):
    """A copy of an exported LSTM model without the c_n output (for engines that cannot give Y_c)."""
    import onnx

    trimmed = onnx.ModelProto()
    trimmed.CopyFrom(proto)
    graph = trimmed.graph
    keep = [n for n in graph.node if n.output[0] != "c_n"]
    for node in keep:
        if node.op_type == "LSTM" and len(node.output) > 2:
            del node.output[2]
    del graph.node[:]
    graph.node.extend(keep)
    outputs = [o for o in graph.output if o.name != "c_n"]
    del graph.output[:]
    graph.output.extend(outputs)
    return trimmed


def infer_onnx_spec(proto, **known):
    return from_onnx(proto, **known)[0]



# ---- files ----

def read_file(path, **known):
    from .source import Loaded

    model, params = from_onnx(path, **known)
    return Loaded(model, params, origin=f"ONNX file {str(path)!r}")


def write_file(path, model, params: dict) -> None:
    import onnx

    onnx.save(to_onnx(model, params), str(path))
