"""Reading an ONNX graph around its recurrent nodes by element tracing.

Which graph input is X and in which layout, which RNN/GRU/LSTM nodes form the stack, where their initial
states come from and what each graph output holds are found by running the graph on *tags* instead of
numbers: every element of a graph input and of each recurrent node's outputs gets a unique int64 tag,
and the ops between them are run on the tags (by onnx's reference evaluator, one node at a time). Ops
that only move data (Transpose, Reshape, Squeeze, Concat, Slice, Gather, ...) carry tags exactly, so a
node's input X is the previous layer's outputs -- or the graph input in some layout -- exactly when
its tags equal the expected arrangement; a graph output is the stack's outputs or states exactly when
its tags are theirs. Any other op that touches traced data (a ``Mul``, an ``Add``, a ``Relu``) is
refused by name. Ops on stored arrays and on shapes only (``Shape`` of the data, ``Expand`` of a
learned h0 to the batch, torch's ``Where``/``Equal`` shape arithmetic) are evaluated: they are constants.

A trace is done at concrete sizes (steps, batch); the reader traces at several and the runner re-traces
at the size of every call, so each conclusion is checked at every size it is used at.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ._common import UnrepresentableError

RECURRENT_OPS = ("RNN", "GRU", "LSTM")
# Ops that only move, select or copy elements: exact on tags.
LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Identity", "Slice", "Gather",
              "Expand", "Split", "Flatten", "Tile"}
# Ops whose result depends only on the shape of a traced tensor, not on its values.
SHAPE_OPS = {"Shape", "Size"}
# Ops that never give the same constant twice.
_RANDOM_PREFIXES = ("Random", "Bernoulli", "Multinomial")
# Which inputs of a layout op carry data (the rest are shapes, indices, axes: they must be constants).
_DATA_INPUTS = {"Concat": None, "Transpose": (0,), "Reshape": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
                "Identity": (0,), "Slice": (0,), "Gather": (0,), "Expand": (0,), "Split": (0,),
                "Flatten": (0,), "Tile": (0,), "Cast": (0,)}


class LayoutMismatch(Exception):
    """The graph does not fit one hypothesis (batch_first, sizes); another one may fit."""


def describe(node) -> str:
    return f"ONNX {node.op_type} node {node.name or node.output[0]!r}"


@dataclasses.dataclass(frozen=True)
class Data:
    """A traced tensor: int64 tags, one per element, naming the element of a base tensor it is."""

    tags: np.ndarray
    elem: int  # the ONNX element type of the real tensor


@dataclasses.dataclass(frozen=True)
class Base:
    """A tensor whose elements get tags: the graph input X, a state graph input, a node output.
    ``shape`` is in canonical coordinates: X (steps, batch, features); Y (steps, D, batch, H);
    Y_h, Y_c (D, batch, H); a state graph input its own shape."""

    kind: str  # "X", "input", "Y", "Y_h", "Y_c"
    name: str  # the graph input or node output name
    layer: int  # the recurrent layer for node outputs, -1 for graph inputs
    shape: tuple
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def canonical_tags(self) -> np.ndarray:
        return self.offset + np.arange(self.size, dtype=np.int64).reshape(self.shape)


@dataclasses.dataclass
class Layer:
    node: object
    fields: dict  # spec fields from the attributes
    layout: int
    weights: dict  # "W", "R", optional "B", "P": constant arrays
    initial: dict  # "h"/"c" -> None (zeros), a constant (D, batch, H), or Data tags (D, batch, H)


@dataclasses.dataclass
class GraphInfo:
    """What does not depend on the traced sizes: constants, the live nodes, which input is X."""

    proto: object
    opset: int
    constants: dict  # initializers, Constant nodes' values, user-given variables
    nodes: list  # the nodes some graph output depends on, in graph order
    x_name: str
    x_elem: int
    input_dims: dict  # graph input name -> declared dims (int or str/None for dynamic)
    outputs: list  # graph output names
    variables: dict  # graph inputs the user gave values for (fed to every run)
    _evaluators: dict = dataclasses.field(default_factory=dict)

    def evaluate(self, node, inputs: list) -> list:
        """One node's outputs by onnx's reference evaluator (``inputs`` aligned with node.input)."""
        from onnx.reference import ReferenceEvaluator

        key = id(node)
        if key not in self._evaluators:
            self._evaluators[key] = ReferenceEvaluator(node, opsets={"": self.opset})
        feeds = {name: value for name, value in zip(node.input, inputs) if name}
        return list(self._evaluators[key].run(None, feeds))


def graph_info(proto, variables: dict | None) -> GraphInfo:
    from onnx import numpy_helper

    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ValueError("the ONNX model imports no default-domain opset")
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    variables = dict(variables or {})
    input_names = [i.name for i in graph.input if i.name not in constants]
    unknown = sorted(set(variables) - set(input_names))
    if unknown:
        raise ValueError(f"variables {unknown} are not graph inputs of the ONNX model "
                         f"(inputs: {input_names})")
    constants.update({k: np.asarray(v) for k, v in variables.items()})
    nodes = _live_nodes(graph)
    recurrent = [n for n in nodes if n.op_type in RECURRENT_OPS]
    if not recurrent:
        raise ValueError("the ONNX model has no RNN, GRU or LSTM node that its outputs depend on")
    dims = {i.name: _declared_dims(i) for i in graph.input}
    x_name = _x_input(graph, nodes, recurrent[0], constants)
    x_info = next(i for i in graph.input if i.name == x_name)
    if dims[x_name] is None or len(dims[x_name]) != 3:
        raise UnrepresentableError(f"graph input {x_name!r} (X of {describe(recurrent[0])}) must be declared "
                                   f"with 3 dims (steps/batch, batch/steps, features), got {dims[x_name]}")
    return GraphInfo(proto, opset, constants, nodes, x_name, x_info.type.tensor_type.elem_type, dims,
                     [o.name for o in graph.output], {k: np.asarray(v) for k, v in variables.items()})


def _declared_dims(value_info):
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


def _live_nodes(graph) -> list:
    """The nodes some graph output depends on, in graph order (the rest cannot change the outputs)."""
    producer = {out: node for node in graph.node for out in node.output if out}
    needed, stack, live = set(), [o.name for o in graph.output], set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in live:
            live.add(id(node))
            stack.extend(n for n in node.input if n)
    return [n for n in graph.node if id(n) in live]


def _x_input(graph, nodes, first, constants) -> str:
    """The graph input the first recurrent node's X is computed from (exactly one)."""
    producer = {out: node for node in nodes for out in node.output if out}
    inputs = {i.name for i in graph.input} - set(constants)
    found, seen, stack = set(), set(), [first.input[0]]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        elif name in producer:
            stack.extend(n for n in producer[name].input if n)
    if len(found) != 1:
        raise UnrepresentableError(f"X of {describe(first)} is computed from graph inputs {sorted(found)}; "
                                   "multirnn reads one input sequence")
    return found.pop()


# ---- one trace ----

class Trace:
    """The graph traced at one size under one hypothesis about X's layout."""

    def __init__(self, info: GraphInfo, batch_first: bool, steps: int, batch: int, check_node):
        self.info, self.batch_first, self.steps, self.batch = info, batch_first, steps, batch
        self.check_node = check_node  # attributes -> spec fields, refusing what cannot be represented
        self.bases: list[Base] = []
        self.layers: list[Layer] = []
        self.values: dict = dict(info.constants)
        self._tag_inputs()
        for node in info.nodes:
            self._run(node)

    # -- tags --

    def new_base(self, kind, name, layer, shape) -> Base:
        offset = self.bases[-1].offset + self.bases[-1].size if self.bases else 0
        base = Base(kind, name, layer, tuple(int(s) for s in shape), offset)
        self.bases.append(base)
        return base

    def decode(self, tags: np.ndarray):
        """(base index, flat index within the base) of each tag."""
        offsets = np.array([b.offset for b in self.bases], np.int64)
        which = np.searchsorted(offsets, tags, side="right") - 1
        return which, tags - offsets[which]

    def _tag_inputs(self):
        info = self.info
        x_dims = info.input_dims[info.x_name]
        features = x_dims[2]
        if not isinstance(features, int) or features <= 0:
            raise UnrepresentableError(f"graph input {info.x_name!r} must have a fixed feature size, "
                                       f"got {features!r}")
        sizes = (self.batch, self.steps) if self.batch_first else (self.steps, self.batch)
        for declared, size in zip(x_dims[:2], sizes):
            if isinstance(declared, int) and declared != size:
                raise LayoutMismatch(f"graph input {info.x_name!r} has dims {x_dims}")
        x = self.new_base("X", info.x_name, -1, (self.steps, self.batch, features)).canonical_tags()
        self.values[info.x_name] = Data(x.transpose(1, 0, 2) if self.batch_first else x, info.x_elem)
        named = {d: s for d, s in zip(x_dims[:2], sizes) if isinstance(d, str)}
        for value in info.proto.graph.input:
            if value.name in self.values:
                continue
            dims = info.input_dims[value.name]
            if dims is None:
                raise UnrepresentableError(f"graph input {value.name!r} has no declared shape")
            shape = [d if isinstance(d, int) else named.get(d, self.batch) for d in dims]
            base = self.new_base("input", value.name, -1, shape)
            self.values[value.name] = Data(base.canonical_tags(), value.type.tensor_type.elem_type)

    # -- nodes --

    def _run(self, node):
        inputs = [self.values.get(name) if name else None for name in node.input]
        missing = [name for name, v in zip(node.input, inputs) if name and v is None]
        if missing:
            raise ValueError(f"{describe(node)} reads {missing}, which nothing in the graph defines")
        if node.op_type in RECURRENT_OPS:
            return self._recurrent(node, inputs)
        if node.domain not in ("", "ai.onnx"):
            raise UnrepresentableError(f"{describe(node)} (domain {node.domain!r}) is not an ONNX "
                                       "standard op")
        if node.op_type.startswith(_RANDOM_PREFIXES):
            raise UnrepresentableError(f"{describe(node)} draws random numbers: its outputs are not stored")
        traced = [isinstance(v, Data) for v in inputs]
        if not any(traced):
            return self._store(node, self._constant(node, inputs))
        if node.op_type in SHAPE_OPS:
            shape = np.array(inputs[0].tags.shape, np.int64)
            return self._store(node, self.info.evaluate(node, [np.zeros(shape, np.int8)] + inputs[1:]))
        if node.op_type == "Cast":
            return self._cast(node, inputs[0])
        if node.op_type not in LAYOUT_OPS:
            raise UnrepresentableError(
                f"{describe(node)} computes on the data between the graph input and the outputs; only "
                f"the recurrent nodes and ops that re-lay out their data ({', '.join(sorted(LAYOUT_OPS))}, "
                f"Cast to the same type) are representable")
        data = _DATA_INPUTS[node.op_type]
        data = range(len(inputs)) if data is None else data
        for k, value in enumerate(inputs):
            if k not in data and isinstance(value, Data):
                raise UnrepresentableError(f"{describe(node)} takes input {k} ({node.input[k]!r}) from the "
                                           "model's data; only its data input may be traced data")
        if not all(isinstance(inputs[k], Data) for k in data if k < len(inputs) and inputs[k] is not None):
            raise UnrepresentableError(f"{describe(node)} mixes the model's data with stored values")
        elems = {inputs[k].elem for k in data if k < len(inputs) and inputs[k] is not None}
        if len(elems) != 1:
            raise UnrepresentableError(f"{describe(node)} mixes element types {sorted(elems)}")
        elem = elems.pop()
        plain = [v.tags if isinstance(v, Data) else v for v in inputs]
        try:
            results = self.info.evaluate(node, plain)
        except Exception as exc:  # a size the graph does not take (e.g. a fixed Reshape)
            raise LayoutMismatch(f"{describe(node)} fails at steps {self.steps}, batch {self.batch}: "
                                 f"{exc}") from exc
        self._store(node, [Data(np.asarray(r, np.int64), elem) for r in results])

    def _constant(self, node, inputs):
        try:
            return self.info.evaluate(node, inputs)
        except Exception as exc:  # a shape this size does not fit, or an op the evaluator lacks
            raise LayoutMismatch(f"{describe(node)} computes a constant that onnx's reference evaluator "
                                 f"cannot evaluate at steps {self.steps}, batch {self.batch}: {exc}") from exc

    def _cast(self, node, value: Data):
        from onnx import helper

        to = helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))
        if to != value.elem:
            raise UnrepresentableError(f"{describe(node)} casts the model's data from ONNX type {value.elem} "
                                       f"to {to}: the source computes in another precision")
        self._store(node, [value])

    def _store(self, node, results):
        for name, value in zip(node.output, results):
            if name:
                self.values[name] = value if isinstance(value, Data) else np.asarray(value)

    # -- recurrent nodes --

    def _recurrent(self, node, inputs):
        where = describe(node)
        fields = self.check_node(node)
        layout = int(_attribute(node, "layout", 0))
        nd = 2 if fields["bidirectional"] else 1
        weights = {}
        for key, index in (("W", 1), ("R", 2), ("B", 3), ("P", 7)):
            value = inputs[index] if len(inputs) > index else None
            if isinstance(value, Data):
                base = self.bases[self.decode(value.tags.ravel()[:1])[0][0]]
                raise ValueError(f"{where}: {key} comes from graph input {base.name!r}; give its value "
                                 f"in variables= (a dict of arrays) to convert it")
            if value is not None:
                weights[key] = value
        hidden = int(weights["R"].shape[-1])
        fields["num_hiddens"] = int(fields.pop("hidden_size", hidden))
        if fields["num_hiddens"] != hidden:
            raise ValueError(f"{where}: hidden_size={fields['num_hiddens']} but R has shape "
                             f"{weights['R'].shape}")
        if "P" in weights and np.any(weights["P"] != 0):
            raise UnrepresentableError(f"{where}: peephole weights P are not representable")
        lengths = inputs[4] if len(inputs) > 4 else None
        if lengths is not None:
            origin = "a stored constant" if not isinstance(lengths, Data) else "a graph input"
            raise UnrepresentableError(
                f"{where}: sequence_lens ({node.input[4]!r}) is {origin}; multirnn takes lengths at run "
                "time (multirnn.forward(..., lengths=)), not stored in the model: export without "
                "sequence_lens")
        layer = len(self.layers)
        self._check_x(node, layer, inputs[0], layout, weights["W"])
        initial = {}
        for kind, index in (("h", 5), ("c", 6)):
            if kind == "c" and node.op_type != "LSTM":
                continue
            initial[kind] = self._initial(node, kind, inputs[index] if len(inputs) > index else None,
                                          layout, nd, hidden)
        self.layers.append(Layer(node, fields, layout, weights, initial))
        self._tag_outputs(node, layer, layout, nd, hidden)

    def _check_x(self, node, layer, x, layout, w):
        if not isinstance(x, Data):
            raise UnrepresentableError(f"{describe(node)}: X is a stored constant, not the model's input")
        if layer == 0:
            expected = self.bases[0].canonical_tags()  # (steps, batch, features)
            layout_name = "batch-first" if self.batch_first else "time-major"
            source = f"graph input {self.info.x_name!r} in the {layout_name} layout"
        else:
            previous = next(b for b in self.bases if b.kind == "Y" and b.layer == layer - 1)
            y = previous.canonical_tags()  # (steps, D, batch, H)
            expected = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
            source = f"the outputs of layer {layer - 1}, directions concatenated"
        if layout == 1:
            expected = expected.transpose(1, 0, 2)
        if x.tags.shape != expected.shape or not np.array_equal(x.tags, expected):
            raise LayoutMismatch(f"{describe(node)}: X (layout={layout}) is not {source}")

    def _initial(self, node, kind, value, layout, nd, hidden):
        if value is None:
            return None
        name = f"initial_{kind}"
        tensor = value.tags if isinstance(value, Data) else np.asarray(value)
        expected = (self.batch, nd, hidden) if layout == 1 else (nd, self.batch, hidden)
        if tensor.shape != expected:
            raise LayoutMismatch(f"{describe(node)}: {name} has shape {tensor.shape}, not {expected} "
                                 f"(batch {self.batch})")
        tensor = tensor.transpose(1, 0, 2) if layout == 1 else tensor
        if not isinstance(value, Data):
            return tensor
        kinds = {self.bases[b].kind for b in np.unique(self.decode(tensor.ravel())[0])}
        if kinds != {"input"}:
            raise UnrepresentableError(f"{describe(node)}: {name} is computed from {sorted(kinds)} data, "
                                       "not from a state graph input or stored arrays")
        return Data(tensor, value.elem)

    def _tag_outputs(self, node, layer, layout, nd, hidden):
        elem = self.info.x_elem
        shapes = {"Y": (self.steps, nd, self.batch, hidden), "Y_h": (nd, self.batch, hidden),
                  "Y_c": (nd, self.batch, hidden)}
        perms = {"Y": (2, 0, 1, 3), "Y_h": (1, 0, 2), "Y_c": (1, 0, 2)}  # canonical -> layout=1
        for kind, name in zip(("Y", "Y_h", "Y_c"), node.output):
            if not name:
                continue
            tags = self.new_base(kind, name, layer, shapes[kind]).canonical_tags()
            self.values[name] = Data(tags.transpose(perms[kind]) if layout == 1 else tags, elem)


def _attribute(node, name, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# ---- what the graph outputs hold ----

@dataclasses.dataclass
class Coverage:
    """Where each element of a base tensor can be read: graph output index and flat position (-1: none)."""

    base: Base
    output: np.ndarray
    position: np.ndarray

    @property
    def complete(self) -> bool:
        return bool(np.all(self.output >= 0))

    def gather(self, outputs: list) -> np.ndarray:
        values = np.empty(self.base.size, np.asarray(outputs[int(self.output[0])]).dtype)
        for j in np.unique(self.output):
            mask = self.output == j
            values[mask] = np.asarray(outputs[int(j)]).ravel()[self.position[mask]]
        return values.reshape(self.base.shape)


def output_coverage(trace: Trace) -> dict:
    """Coverage of the last layer's Y and every layer's Y_h/Y_c by the graph outputs; refuses outputs
    holding anything else."""
    last = len(trace.layers) - 1
    allowed = {i for i, b in enumerate(trace.bases)
               if (b.kind == "Y" and b.layer == last) or b.kind in ("Y_h", "Y_c")}
    cover = {}
    for i in allowed:
        size = trace.bases[i].size
        cover[i] = Coverage(trace.bases[i], np.full(size, -1), np.zeros(size, np.int64))
    for j, name in enumerate(trace.info.outputs):
        value = trace.values[name]
        if not isinstance(value, Data):
            raise UnrepresentableError(f"graph output {name!r} is a constant, not an output of the recurrent "
                                       "stack")
        which, local = trace.decode(value.tags.ravel())
        for b in np.unique(which):
            if b not in allowed:
                base = trace.bases[b]
                what = {"X": "the graph input X", "input": f"graph input {base.name!r}",
                        "Y": f"layer {base.layer}'s sequence outputs (only the last layer's are the stack's)"}
                raise UnrepresentableError(f"graph output {name!r} holds {what[base.kind]}; representable "
                                           "outputs are the stack's sequence outputs and final states")
        positions = np.arange(which.size)
        for b in np.unique(which):
            mask = which == b
            cover[b].output[local[mask]] = j
            cover[b].position[local[mask]] = positions[mask]
    return {(b.kind, b.layer): c for c, b in ((c, c.base) for c in cover.values())}
