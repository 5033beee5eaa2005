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

Reading (``read``, ``from_onnx``, ``read_file``) accounts for the whole graph (``onnx_graph``: element
tracing): X's layout decides ``batch_first`` (``layout`` attributes and exporters' Transposes); every op
between the graph input, the recurrent nodes and the graph outputs must only re-lay out data, or it is
refused by name; attributes multirnn cannot hold (reverse, clip, input_forget, other activations,
nonzero peepholes, sequence_lens) are refused by name. A stored initial state (an initializer, torch's
learned h0 expanded to a fixed batch) is ``Loaded.initial_state``; a state graph input makes the source
run take a state. ``from_onnx`` returns the pair and refuses a stored nonzero state it cannot carry.

Only the conversion of weights is framework-free; building, reading and running models imports onnx.
"""
from __future__ import annotations

import numpy as np

from multirnn.spec import HARD_SIGMOID_SLOPES

from ._common import (Fused, GATES_PER_CELL, UnrepresentableError, check_export, expect_shape, finish_import,
                      fuse, make_spec, require_no_projection, spec_from_json, spec_to_json, unfuse)

OP_TYPES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
CELLS = {v: k for k, v in OP_TYPES.items()}
OPSET = 17
METADATA_KEY = "multirnn.spec"
# Activations an ONNX node may list while meaning exactly the multirnn cell (per direction).
_DEFAULT_ACTS = {"gru": ["Sigmoid", "Tanh"], "lstm": ["Sigmoid", "Tanh", "Tanh"]}
_NONLINEARITY_OPS = {"tanh": "Tanh", "relu": "Relu"}
# HardSigmoid(x) = max(0, min(1, alpha·x + beta)), defaults alpha=0.2, beta=0.5 (onnx.defs schema);
# ONNX attributes are float32, so alpha is matched to the spec's slopes at float32 precision.
_HARD_SIGMOID_DEFAULTS = (0.2, 0.5)


def _layer_units(model, layer):
    return [u for u in model.units() if u[0] == layer]


def to_onnx_weights(model, params: dict) -> list[dict[str, np.ndarray]]:
    """Per layer ``{"W", "R"[, "B"]}`` arrays of the ONNX node."""
    check_export(model, params)
    require_no_projection(model, "ONNX")  # its LSTM node has no projection input
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
    require_no_projection(model, "ONNX")
    if len(layers) != model.num_layers:
        raise ValueError(f"expected {model.num_layers} ONNX layers for {model}, got {len(layers)}")
    gh = GATES_PER_CELL[model.cell] * model.num_hiddens
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
    require_no_projection(model, "ONNX")  # its LSTM node has no projection input
    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype.name]
    nd, hidden, op = len(model.directions), model.num_hiddens, OP_TYPES[model.cell]
    direction = "bidirectional" if model.bidirectional else "reverse" if model.reverse else "forward"
    _require_onnx_directions(model)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    x = "X"
    if model.batch_first:
        nodes.append(helper.make_node("Transpose", ["X"], ["X_time_major"], perm=[1, 0, 2]))
        x = "X_time_major"
    const("reshape_merge_directions", np.array([0, 0, -1], np.int64))
    states = ["h"] + (["c"] if model.cell == "lstm" else [])
    finals = {s: [] for s in states}
    if model.learn_initial_state:  # (D, batch, H): the stored rows are expanded to X's batch
        nodes += _state_shape_nodes(helper, const, x, nd, hidden)
    else:
        const("axis0", np.array([0], np.int64))
    for layer, weights in enumerate(to_onnx_weights(model, params)):
        names = {k: const(f"{k}_l{layer}", v) for k, v in weights.items()}
        initial = {s: f"{s}0_l{layer}" for s in states}
        if model.learn_initial_state:
            for s in states:
                rows = np.stack([params[prefix + f"{s}_0"] for _, _, prefix, _ in _layer_units(model, layer)])
                stored = const(f"learned_{s}0_l{layer}", rows[:, None, :])  # (D, 1, H)
                nodes.append(helper.make_node("Expand", [stored, "state_shape"], [initial[s]]))
        else:
            lo = const(f"start_l{layer}", np.array([layer * nd], np.int64))
            hi = const(f"end_l{layer}", np.array([(layer + 1) * nd], np.int64))
            for s in states:  # this layer's slice of the (L·D, batch, H) initial state
                nodes.append(helper.make_node("Slice", [f"initial_{s}", lo, hi, "axis0"], [initial[s]]))
        attrs = {"hidden_size": hidden, "direction": direction}
        if model.cell == "gru":
            attrs["linear_before_reset"] = int(model.reset_after)
        attrs.update(_activation_attributes(model, nd, dtype))
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
        + [helper.make_tensor_value_info(f"initial_{s}", elem, state_shape) for s in states
           if not model.learn_initial_state],
        [helper.make_tensor_value_info("Y", elem, seq + [model.output_size])]
        + [helper.make_tensor_value_info(f"{s}_n", elem, state_shape) for s in states],
        initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="multirnn")
    helper.set_model_props(proto, {METADATA_KEY: spec_to_json(model)})
    onnx.checker.check_model(proto)
    return proto


def _state_shape_nodes(helper, const, x: str, nd: int, hidden: int) -> list:
    """Nodes computing "state_shape" = [D, batch of time-major ``x``, H], what a learned initial
    state is expanded to."""
    const("batch_axis", np.array([1], np.int64))
    const("state_directions", np.array([nd], np.int64))
    const("state_hidden", np.array([hidden], np.int64))
    return [helper.make_node("Shape", [x], ["x_shape"]),
            helper.make_node("Gather", ["x_shape", "batch_axis"], ["batch_size"], axis=0),
            helper.make_node("Concat", ["state_directions", "batch_size", "state_hidden"], ["state_shape"],
                             axis=0)]


def _require_onnx_directions(model) -> None:
    """ONNX's nodes return directions stacked (concatenated here) and reverse outputs aligned."""
    if model.merge_mode != "concat":
        raise UnrepresentableError(f"merge_mode={model.merge_mode!r}: an ONNX bidirectional node returns both "
                                   "directions; to_onnx writes them concatenated (merge_mode='concat')")
    if model.reverse and not model.keep_order:
        raise UnrepresentableError("keep_order=False: ONNX's direction='reverse' returns the outputs aligned "
                                   "with the inputs (keep_order=True)")


def _activation_attributes(model, nd: int, dtype) -> dict:
    """The node's ``activations`` (and HardSigmoid's ``activation_alpha``/``beta``) for the spec,
    or none when the ONNX defaults compute it. alpha and beta are consumed in order by the functions
    that take them (the ONNX spec; onnxruntime 1.32 does so, and uses HardSigmoid's defaults for
    missing ones), so one pair per HardSigmoid entry."""
    act = _NONLINEARITY_OPS[model.nonlinearity]
    if model.cell == "rnn":
        return {"activations": [act] * nd} if model.nonlinearity != "tanh" else {}
    if model.gate_activation == "sigmoid" and model.nonlinearity == "tanh":
        return {}
    gate = "Sigmoid" if model.gate_activation == "sigmoid" else "HardSigmoid"
    attrs = {"activations": ([gate] + [act] * (len(_DEFAULT_ACTS[model.cell]) - 1)) * nd}
    if gate == "HardSigmoid":
        require_float32_hard_sigmoid(model, dtype, "export float32 params")
        attrs["activation_alpha"] = [HARD_SIGMOID_SLOPES[model.gate_activation]] * nd
        attrs["activation_beta"] = [0.5] * nd
    return attrs


def require_float32_hard_sigmoid(model, dtype, instead: str) -> None:
    """HardSigmoid's alpha is a float32 attribute (0.2 -> 0.20000000298): the spec's slope exactly in
    float32 only (in float64 it would differ by ~1.5e-9·|x|, beyond the 1e-10 parity tolerance)."""
    if model.gate_activation != "sigmoid" and np.dtype(dtype) != np.float32:
        raise UnrepresentableError(
            f"gate_activation={model.gate_activation!r} in {np.dtype(dtype)}: ONNX's HardSigmoid "
            f"activation_alpha is a float32 attribute, so its slope is not the spec's exactly in "
            f"{np.dtype(dtype)}; {instead}")


def _gate_of(where: str, gate_ops: list, alphas: list, betas: list) -> str:
    """The spec's gate_activation for a node's gate functions f (one per direction), consuming one
    alpha and beta per HardSigmoid as ONNX does; anything else is refused by name."""
    if set(gate_ops) == {"Sigmoid"}:
        if alphas or betas:
            raise UnrepresentableError(f"{where}: activation_alpha={alphas}, activation_beta={betas} are not "
                                       "representable with Sigmoid gates (only HardSigmoid takes parameters)")
        return "sigmoid"
    if set(gate_ops) != {"HardSigmoid"}:
        raise UnrepresentableError(f"{where}: gate activations {gate_ops} are not representable "
                                   "(Sigmoid or HardSigmoid, the same for every direction)")
    pairs = [(alphas[k] if k < len(alphas) else _HARD_SIGMOID_DEFAULTS[0],
              betas[k] if k < len(betas) else _HARD_SIGMOID_DEFAULTS[1]) for k in range(len(gate_ops))]
    if len(alphas) > len(gate_ops) or len(betas) > len(gate_ops) or len(set(pairs)) != 1:
        raise UnrepresentableError(f"{where}: activation_alpha={alphas}, activation_beta={betas} are not "
                                   f"representable for activations with {len(gate_ops)} HardSigmoid "
                                   "(one alpha/beta pair, the same for every direction)")
    alpha, beta = pairs[0]
    for name, slope in HARD_SIGMOID_SLOPES.items():
        if abs(alpha - slope) <= 1e-7 and beta == 0.5:  # float32 attributes
            return name
    raise UnrepresentableError(f"{where}: HardSigmoid alpha={alpha}, beta={beta} is not representable "
                               "(alpha 0.2 or 1/6 with beta 0.5: the spec's hard_sigmoid_legacy, hard_sigmoid)")


def _gated_activations(where: str, cell: str, nd: int, attrs: dict) -> dict:
    """gate_activation and nonlinearity of a GRU ([f, g]) or LSTM ([f, g, h]) node per direction."""
    acts = [_decode(a) for a in attrs.get("activations", [])] or _DEFAULT_ACTS[cell] * nd
    per = len(_DEFAULT_ACTS[cell])
    if len(acts) != per * nd:
        raise UnrepresentableError(f"{where}: activations {acts} are not {per} per direction")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    gate = _gate_of(where, acts[::per], alphas, betas)
    cell_ops = {a for k, a in enumerate(acts) if k % per}
    if len(cell_ops) != 1 or next(iter(cell_ops)) not in ("Tanh", "Relu"):
        raise UnrepresentableError(
            f"{where}: activations {acts} are not representable: the spec has one cell nonlinearity, "
            f"Tanh or Relu, for the {'candidate' if cell == 'gru' else 'cell input g and output h'} "
            "of every direction")
    return {"gate_activation": gate, "nonlinearity": next(iter(cell_ops)).lower()}


def uses_non_default_activations(node) -> bool:
    attrs = _attributes(node)
    acts = [_decode(a) for a in attrs.get("activations", [])]
    cell = CELLS[node.op_type]
    return bool(acts) and set(acts) != set(_DEFAULT_ACTS.get(cell, ["Tanh"]))


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


def _check_node(node) -> dict:
    """Refuse what multirnn cannot represent; return the node's spec fields (and ``hidden_size`` when
    the attribute is given; the trace checks it against R)."""
    from .onnx_graph import describe

    attrs = _attributes(node)
    where = describe(node)
    cell = CELLS[node.op_type]
    direction = _decode(attrs.get("direction", b"forward"))
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{where}: unknown direction {direction!r}")
    if "clip" in attrs:
        raise UnrepresentableError(f"{where}: cell clipping (clip={attrs['clip']}) is not representable "
                                   "(multirnn never clips; export without clip)")
    if attrs.get("input_forget", 0):
        raise UnrepresentableError(f"{where}: input_forget=1 (coupled gates) is not representable "
                                   "(only input_forget=0)")
    if cell == "rnn":
        for name in ("activation_alpha", "activation_beta"):
            if name in attrs:
                raise UnrepresentableError(f"{where}: {name}={list(attrs[name])} is not representable "
                                           "(an RNN node's Tanh or Relu takes no parameters)")
    if attrs.get("layout", 0) not in (0, 1):
        raise ValueError(f"{where}: layout={attrs['layout']} is neither 0 nor 1")
    nd = 2 if direction == "bidirectional" else 1
    acts = [_decode(a) for a in attrs.get("activations", [])]
    # "reverse": last step to first, outputs aligned with the inputs (the spec's keep_order=True)
    fields = {"cell": cell, "bidirectional": nd == 2, "reverse": direction == "reverse"}
    if "hidden_size" in attrs:
        fields["hidden_size"] = int(attrs["hidden_size"])
    if cell == "rnn":
        acts = acts or ["Tanh"] * nd
        if len(set(acts)) != 1 or acts[0] not in ("Tanh", "Relu"):
            raise UnrepresentableError(f"{where}: activations {acts} are not representable "
                                       "(one of Tanh or Relu for every direction)")
        fields["nonlinearity"] = acts[0].lower()
    else:
        fields.update(_gated_activations(where, cell, nd, attrs))
    if cell == "gru":
        fields["reset_after"] = bool(attrs.get("linear_before_reset", 0))
    return fields


# ---- reading a whole graph ----

_PROBE_SIZES = ((4, 2), (9, 3))  # (steps, batch) the reader traces a graph with dynamic dims at


def read(source, *, variables=None, **known):
    """A ``Loaded`` from an ONNX model (a ModelProto or a path) whose graph is one stack of RNN/GRU/LSTM
    nodes between its input X and its outputs, with only re-layouts around them.

    The whole graph is read (see ``multirnn.port.onnx_graph``): X's layout (``layout`` attributes and
    exporters' Transposes) gives ``batch_first``; each node's attributes give the spec or are refused by
    name; a stored or computed-from-stored initial state becomes ``Loaded.initial_state``, a state graph
    input makes the run take a state; the graph outputs must be the stack's sequence outputs and/or
    final states. ``variables``: values of graph inputs that hold weights (as in ONNX's backend node
    tests, where W, R, B are inputs). ``known`` fields and ``multirnn.spec`` metadata complete the spec;
    a field contradicting the graph is a ValueError. ``Loaded.run`` runs the graph with onnxruntime
    (float32, layout 0) or onnx's reference evaluator."""
    import onnx

    from .onnx_graph import graph_info
    from .source import Loaded

    origin = "ONNX model" if isinstance(source, onnx.ModelProto) else f"ONNX file {str(source)!r}"
    proto = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    info = graph_info(proto, variables)
    metadata = {p.key: p.value for p in proto.metadata_props}
    stored = spec_from_json(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
    preferred = known.get("batch_first", None if stored is None else stored.batch_first)
    batch_first, traces, notes = _fit(info, preferred)
    layers = _consistent_layers(traces)
    first = layers[0]
    inferred = dict(first.fields, num_inputs=int(first.weights["W"].shape[2]), num_layers=len(layers),
                    bias=any("B" in layer.weights for layer in layers))
    if not notes:
        inferred["batch_first"] = batch_first
    extra = {}
    if stored is not None:
        extra = {"batch_first": stored.batch_first, "sigma": stored.sigma}
        extra["nonlinearity"] = stored.nonlinearity
    extra.update({k: v for k, v in known.items() if v is not None})
    if notes:
        extra.setdefault("batch_first", batch_first)
    model = make_spec(inferred, extra, "ONNX graph")
    params = from_onnx_weights(model, [_with_bias(layer, model) for layer in layers])
    require_float32_hard_sigmoid(model, next(iter(params.values())).dtype,
                                 "representable: a float32 graph, or Sigmoid gates")
    initial_state, takes_state = _initial_state(model, info, traces)
    if isinstance(initial_state, _LearnedState):  # expanded to a dynamic batch: part of the model
        model, params = _with_learned_state(model, params, initial_state)
        initial_state = None
    loaded = Loaded(model, params, initial_state=initial_state, origin=origin, notes=tuple(notes))
    loaded.run = _source_run(info, model, traces, takes_state, loaded)
    return loaded


def _sizes(info, batch_first: bool) -> list[tuple[int, int]]:
    """The (steps, batch) to trace at: the declared dims where they are fixed, else the probe sizes."""
    dims = info.input_dims[info.x_name]
    steps_dim, batch_dim = (dims[1], dims[0]) if batch_first else (dims[0], dims[1])
    sizes = []
    for steps, batch in _PROBE_SIZES:
        size = (steps_dim if isinstance(steps_dim, int) else steps,
                batch_dim if isinstance(batch_dim, int) else batch)
        if size not in sizes:
            sizes.append(size)
    return sizes


def _fit(info, preferred):
    """(batch_first, traces, notes): the layout of X that the graph's wiring fits, traced at each size.
    Both fit only when X is (1, 1, features): then both layouts compute the same."""
    from .onnx_graph import LayoutMismatch, Trace

    fits, reasons = {}, {}
    for batch_first in (False, True):
        try:
            fits[batch_first] = [Trace(info, batch_first, steps, batch, _check_node)
                                 for steps, batch in _sizes(info, batch_first)]
        except LayoutMismatch as exc:
            reasons[batch_first] = str(exc)
    if not fits:
        raise UnrepresentableError(
            "the ONNX graph is not one stack of recurrent nodes fed by graph input "
            f"{info.x_name!r}: as time-major X, {reasons[False]}; as batch-first X, {reasons[True]}")
    if len(fits) == 1:
        (batch_first, traces), = fits.items()
        return batch_first, traces, []
    first = fits[False][0].layers[0]
    batch_first = bool(first.layout) if preferred is None else bool(preferred)
    return batch_first, fits[batch_first], [
        f"graph input {info.x_name!r} has one step and one sequence, so both layouts compute the same; "
        f"batch_first={batch_first}"]


def _consistent_layers(traces):
    """The layers of the first trace, after checking every trace found the same stack and weights."""
    layers = traces[0].layers
    fields = [layer.fields for layer in layers]
    if any(f != fields[0] for f in fields):
        raise UnrepresentableError(f"the recurrent nodes differ ({fields}): multirnn needs one cell, "
                                   "hidden size and direction setting for every layer")
    for trace in traces[1:]:
        for a, b in zip(layers, trace.layers):
            same = a.weights.keys() == b.weights.keys() and all(
                np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
            if not same:
                raise UnrepresentableError(f"the weights of ONNX node {a.node.name!r} depend on the input's "
                                           "size; multirnn's weights are fixed arrays")
    return layers


def _with_bias(layer, model) -> dict:
    entry = {k: v for k, v in layer.weights.items() if k in ("W", "R", "B")}
    if model.bias and "B" not in entry:  # ONNX's absent B is zeros
        entry["B"] = np.zeros((len(model.directions), 2 * entry["R"].shape[1]), entry["R"].dtype)
    return entry


def _initial_state(model, info, traces):
    """(Loaded.initial_state, SourceRun.takes_state) from where the nodes' initial_h/c come from."""
    from multirnn.state import nest_state

    from .onnx_graph import Data

    first = traces[0].layers
    origins = {(k, s): ("input" if isinstance(v, Data) else "stored")
               for k, layer in enumerate(first) for s, v in layer.initial.items()}
    if set(origins.values()) == {"input"}:
        for trace in traces:
            _state_plan(trace)  # refuses a state input element feeding two state entries
        return None, True
    if "input" in origins.values():
        raise UnrepresentableError(
            f"initial states come partly from graph inputs and partly from stored arrays or zeros "
            f"({origins}): a source run takes the whole state or none of it")
    per_trace = [[tuple(np.zeros((t.batch, model.num_hiddens)) if layer.initial.get(s) is None
                        else layer.initial[s][d] for s in ("h", "c")[:model.state_arrays])
                  for layer in t.layers for d in range(len(model.directions))] for t in traces]
    if all(not np.any(a) for flat in per_trace for unit in flat for a in unit):
        return None, False
    batch_dim = info.input_dims[info.x_name][0 if model.batch_first else 1]
    if not isinstance(batch_dim, int) and _one_row_everywhere(per_trace):
        return _LearnedState([tuple(a[0] for a in unit) for unit in per_trace[0]]), False
    if not isinstance(batch_dim, int):
        raise UnrepresentableError(
            f"the stored initial state is expanded to the batch of graph input {info.x_name!r}, whose "
            "batch size is not fixed; multirnn's initial state holds one row per sequence of a fixed "
            "batch: export with a fixed batch size, or pass the state as a graph input")
    flat = per_trace[0]
    if any(not all(np.array_equal(a, b) for ua, ub in zip(flat, other) for a, b in zip(ua, ub))
           for other in per_trace[1:]):
        raise UnrepresentableError("the stored initial state depends on the number of steps")
    dtype = np.dtype(_float_dtype(info))
    return nest_state(model, [tuple(np.asarray(a, dtype) for a in unit) for unit in flat]), False


class _LearnedState(list):
    """A stored initial state that is one row per unit broadcast over any batch: the spec's
    learn_initial_state, its rows the h_0 (c_0) params."""


def _one_row_everywhere(per_trace) -> bool:
    """Every trace (each at its own batch size) gives each unit the same row for every sequence."""
    first = [tuple(a[0] for a in unit) for unit in per_trace[0]]
    return all(np.array_equal(a, np.broadcast_to(row, a.shape))
               for flat in per_trace for unit, rows in zip(flat, first) for a, row in zip(unit, rows))


def _with_learned_state(model, params: dict, rows: list):
    """The spec with learn_initial_state and params with each unit's h_0 (c_0) row."""
    import dataclasses

    learned = dataclasses.replace(model, learn_initial_state=True)
    out = dict(params)
    dtype = next(iter(params.values())).dtype
    for (_, _, prefix, _), unit in zip(learned.units(), rows):
        for name, row in zip(learned.initial_state_names, unit):
            out[prefix + name] = np.asarray(row, dtype)
    return learned, finish_import(learned, out)


def _float_dtype(info) -> str:
    from onnx import TensorProto

    names = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}
    if info.x_elem not in names:
        raise UnrepresentableError(f"graph input {info.x_name!r} has ONNX element type {info.x_elem}; "
                                   "multirnn converts float32 and float64 models")
    return names[info.x_elem]


def from_onnx(proto, *, variables=None, **known):
    """``(model, params)`` from an ONNX model (a ModelProto or a path); see ``read``, which this calls.
    A stored nonzero initial state cannot travel in the pair, so it is refused here: use
    ``multirnn.port.load`` or ``read``, whose ``Loaded.initial_state`` carries it."""
    loaded = read(proto, variables=variables, **known)
    if loaded.initial_state is not None:
        raise UnrepresentableError(
            "the ONNX graph stores a nonzero initial state, which (model, params) cannot hold; use "
            "multirnn.port.load(...) or multirnn.port.onnx.read(...) and run with Loaded.initial_state")
    return loaded.model, loaded.params


# ---- running the source graph ----

def _source_run(info, model, traces, takes_state: bool, loaded):
    from .source import SourceRun

    dtype = _float_dtype(info)
    dims = info.input_dims[info.x_name]
    steps_dim, batch_dim = (dims[1], dims[0]) if model.batch_first else (dims[0], dims[1])
    fixed_steps = steps_dim if isinstance(steps_dim, int) else None
    engine, why_not = _engine(dtype, traces[0].layers, fixed_steps)
    if engine is None:
        loaded.why_not_run = why_not
        return None
    runner = _GraphRun(info, model, engine, takes_state)
    kind = runner.output_kind(traces[0])
    return SourceRun(runner, runner.framework, dtype, takes_state, fixed_steps,
                     batch_dim if isinstance(batch_dim, int) else None, kind)


def _engine(dtype, layers, fixed_steps):
    """("onnxruntime" | "reference" | None, why not)."""
    if dtype == "float32" and all(layer.layout == 0 for layer in layers):
        try:
            import onnxruntime  # noqa: F401

            return "onnxruntime", ""
        except ImportError:
            pass
    if any(layer.fields["reverse"] for layer in layers):
        return None, ("onnx's ReferenceEvaluator ignores direction='reverse' (it runs the node forward); "
                      "onnxruntime runs it in float32 with layout=0 only")
    if any(layer.node.op_type != "RNN" and uses_non_default_activations(layer.node) for layer in layers):
        return None, ("onnx's ReferenceEvaluator ignores a GRU/LSTM node's activations (onnx 1.17 "
                      "op_gru.py/op_lstm.py); onnxruntime runs them in float32 with layout=0 only")
    if _legacy_reference():  # onnx's old reference RNNs: forward only, Tanh only, no Y_c
        for layer in layers:
            acts = _attributes(layer.node).get("activations")
            if layer.fields["bidirectional"]:
                return None, "this onnx's ReferenceEvaluator runs no bidirectional recurrent node"
            if acts and [_decode(a) for a in acts] != ["Tanh"] and layer.node.op_type == "RNN":
                return None, "this onnx's ReferenceEvaluator runs RNN nodes with Tanh only"
            if layer.layout == 1 and (fixed_steps != 1 or any(v is not None for v in layer.initial.values())):
                return None, ("this onnx's ReferenceEvaluator runs layout=1 nodes only for one step, "
                              "from zeros")
    return "reference", ""


def _legacy_reference() -> bool:
    """Whether onnx's reference RNN is the old one (no bidirectional); probed once."""
    global _LEGACY
    if _LEGACY is None:
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        node = helper.make_node("RNN", ["X", "W", "R"], ["Y"], hidden_size=1, direction="bidirectional")
        feeds = {"X": np.zeros((1, 1, 1), np.float32), "W": np.zeros((2, 1, 1), np.float32),
                 "R": np.zeros((2, 1, 1), np.float32)}
        try:
            ReferenceEvaluator(node, opsets={"": 17}).run(None, feeds)
            _LEGACY = False
        except NotImplementedError:
            _LEGACY = True
    return _LEGACY


_LEGACY = None


class _GraphRun:
    """``SourceRun.call``: feeds X (and the state graph inputs) and reads the stack's outputs and final
    states back from the graph outputs, re-tracing the graph at each call's size."""

    def __init__(self, info, model, engine: str, takes_state: bool):
        import onnx

        self.info, self.model, self.engine, self.takes_state = info, model, engine, takes_state
        self._traces, self._session = {}, None
        if engine == "onnxruntime":
            import onnxruntime

            self.framework = f"onnxruntime {onnxruntime.__version__}"
        else:
            self.framework = f"onnx.reference {onnx.__version__}"

    def trace(self, steps, batch):
        from .onnx_graph import Trace

        key = (steps, batch)
        if key not in self._traces:
            self._traces[key] = Trace(self.info, self.model.batch_first, steps, batch, _check_node)
        return self._traces[key]

    def output_kind(self, trace) -> str:
        from .onnx_graph import output_coverage

        cover = output_coverage(trace)
        last = len(trace.layers) - 1
        if cover.get(("Y", last)) is not None and cover[("Y", last)].complete:
            return "sequence"
        if self._last_coverage(trace, cover) is not None:
            return "last"
        raise UnrepresentableError(
            "the ONNX graph outputs hold neither the stack's sequence outputs nor the final hidden state "
            f"of its last layer (outputs {self.info.outputs})")

    def _last_coverage(self, trace, cover):
        """Per direction of the last layer, how to read its final h: from Y_h, or from Y's last step
        (first step for the backward direction); None when the outputs do not hold it."""
        last = len(trace.layers) - 1
        y_h, y = cover.get(("Y_h", last)), cover.get(("Y", last))
        ways = []
        for d in range(len(self.model.directions)):
            if y_h is not None and np.all(y_h.output.reshape(y_h.base.shape)[d] >= 0):
                ways.append(("Y_h", d))
            elif y is not None and np.all(y.output.reshape(y.base.shape)[-1 if d == 0 else 0, d] >= 0):
                ways.append(("Y", d))
            else:
                return None
        return ways

    def __call__(self, inputs, state):
        inputs = np.asarray(inputs)
        steps, batch = (inputs.shape[1], inputs.shape[0]) if self.model.batch_first else inputs.shape[:2]
        trace = self.trace(steps, batch)
        if state is not None and not self.takes_state:
            raise ValueError("this ONNX graph takes no initial state")
        outputs = self._execute(self._feeds(trace, inputs, state))
        return self._results(trace, outputs)

    def _feeds(self, trace, inputs, state) -> dict:
        from multirnn.state import flatten_state

        dtype = inputs.dtype
        feeds = {self.info.x_name: inputs}
        arrays = {b.name: np.zeros(b.shape, dtype) for b in trace.bases if b.kind == "input"}
        flat = flatten_state(self.model, state) if state is not None else None
        nd = len(self.model.directions)
        for k, s, name, mask, local in _state_plan(trace):
            if flat is not None:
                given = np.stack([flat[k * nd + d][0 if s == "h" else 1] for d in range(nd)])
                arrays[name].reshape(-1)[local] = given.ravel()[mask]
        feeds.update(arrays)
        feeds.update(self.info.variables)
        return feeds

    def _execute(self, feeds) -> list:
        names = self.info.outputs
        if self.engine == "onnxruntime":
            import onnxruntime

            if self._session is None:
                self._session = onnxruntime.InferenceSession(self.info.proto.SerializeToString(),
                                                             providers=["CPUExecutionProvider"])
            wanted = {i.name for i in self._session.get_inputs()}
            return self._session.run(names, {k: v for k, v in feeds.items() if k in wanted})
        from onnx.reference import ReferenceEvaluator

        if self._session is None:
            proto, self._kept = self.info.proto, names
            if _legacy_reference():  # its LSTM never returns Y_c: run without what needs it
                proto, self._kept = _without_lstm_cell_state(proto)
            self._session = ReferenceEvaluator(proto)
        results = dict(zip(self._kept, self._session.run(self._kept, feeds)))
        return [results.get(name) for name in names]

    def _results(self, trace, outputs):
        from multirnn.state import nest_state

        from .onnx_graph import output_coverage

        cover = output_coverage(trace)
        model, last, nd = self.model, len(trace.layers) - 1, len(self.model.directions)
        kind = self.output_kind(trace)
        if kind == "sequence":
            y = cover[("Y", last)].gather(outputs)  # (steps, D, batch, H)
            out = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
            out = out.transpose(1, 0, 2) if model.batch_first else out
        else:
            parts = []
            for source, d in self._last_coverage(trace, cover):
                full = cover[(source, last)].gather(outputs)
                parts.append(full[d] if source == "Y_h" else full[-1 if d == 0 else 0, d])
            out = np.concatenate(parts, axis=-1)
        kinds = ("Y_h", "Y_c")[:model.state_arrays]
        if not all(_readable(cover.get((s, k)), outputs) for k in range(len(trace.layers)) for s in kinds):
            return out, None
        finals = {(s, k): cover[(s, k)].gather(outputs) for k in range(len(trace.layers)) for s in kinds}
        flat = [tuple(finals[(s, k)][d] for s in kinds) for k in range(len(trace.layers)) for d in range(nd)]
        return out, nest_state(model, flat)


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


def _state_plan(trace) -> list:
    """Where each layer's initial h/c (canonical (D, batch, H)) is fed: (layer, "h"|"c", graph input,
    mask over the state's elements, flat positions in that input). Refuses an input element that
    feeds two state entries: multirnn's state holds one array per layer and direction."""
    from .onnx_graph import Data

    plan, used = [], {}
    for k, layer in enumerate(trace.layers):
        for s, value in layer.initial.items():
            if not isinstance(value, Data):
                continue
            which, local = trace.decode(value.tags.ravel())
            for b in np.unique(which):
                mask = which == b
                base = trace.bases[b]
                seen = used.setdefault(base.name, np.zeros(base.size, np.int64))
                np.add.at(seen, local[mask], 1)
                if np.any(seen > 1):
                    raise UnrepresentableError(
                        f"graph input {base.name!r} feeds more than one initial state entry (e.g. one h0 "
                        "broadcast over the batch or shared by layers); multirnn's state holds one array "
                        "per layer and direction, one row per sequence")
                plan.append((k, s, base.name, mask, local[mask]))
    return plan


def _readable(coverage, outputs) -> bool:
    return coverage is not None and coverage.complete and all(
        outputs[int(j)] is not None for j in np.unique(coverage.output))


def _without_lstm_cell_state(proto):
    """A copy of ``proto`` whose LSTM nodes return no Y_c, keeping the graph outputs that do not need
    it; returns (copy, kept output names)."""
    import onnx

    from .onnx_graph import _live_nodes

    trimmed = onnx.ModelProto()
    trimmed.CopyFrom(proto)
    graph = trimmed.graph
    dropped = {n.output[2] for n in graph.node if n.op_type == "LSTM" and len(n.output) > 2 and n.output[2]}
    for node in graph.node:
        if node.op_type == "LSTM" and len(node.output) > 2:
            del node.output[2:]
    changed = True
    while changed:  # whatever is computed from a dropped value is dropped too
        changed = False
        for node in graph.node:
            if any(i in dropped for i in node.input) and not set(node.output) <= dropped:
                dropped.update(o for o in node.output if o)
                changed = True
    outputs = [o for o in graph.output if o.name not in dropped]
    del graph.output[:]
    graph.output.extend(outputs)
    keep = _live_nodes(graph)
    del graph.node[:]
    graph.node.extend(keep)
    return trimmed, [o.name for o in outputs]


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
    return read(path, **known)


def write_file(path, model, params: dict) -> None:
    import onnx

    onnx.save(to_onnx(model, params), str(path))
