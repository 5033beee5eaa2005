"""Reading a live Keras object -- a recurrent layer, a ``Sequential`` or a functional ``Model`` -- as one
multirnn stack, accounting for every layer, graph edge and config field, or refusing by name.

What is exact (and so accepted):

- ``SimpleRNN``/``GRU``/``LSTM`` and ``keras.layers.RNN`` of a ``SimpleRNNCell``/``GRUCell``/``LSTMCell``
  (the same cells, so the same function); ``RNN(StackedRNNCells([...]))`` outside ``Bidirectional`` (one
  multirnn layer per cell: stepping cells in lock-step equals running the layers one after the other);
  ``Bidirectional`` with ``merge_mode`` concat, sum, mul or ave whose backward layer mirrors the forward
  one; ``go_backwards=True`` on plain layers (-> spec ``reverse=True, keep_order=False``, in every layer).
- ``Masking(mask_value)`` before the recurrent stack (-> ``Loaded.mask_value``: run the spec with
  ``mask=loaded.mask_for(inputs)``, Keras' mask semantics, multirnn.masking), unless the last layer's
  ``zero_output_for_mask`` differs from what multirnn computes (zeros for Bidirectional with
  return_sequences, the previous output otherwise) or a go_backwards stack has several layers.
- ``InputLayer`` first; ``Dropout`` (no noise_shape) with one rate in every gap between recurrent layers
  (-> spec ``dropout``, same inverted per-step dropout, identity at inference).
- Fields with no effect at inference (``unroll``, ``unit_forget_bias``, initializers, regularizers,
  constraints, ``dropout``/``recurrent_dropout`` -- noted), ``return_sequences=False`` on the last layer
  (-> ``SourceRun(outputs="last")``), ``return_state``, ``stateful`` (noted: the carried state is not
  part of the weights; the run starts every call from the given or zero state and restores the layer's).

Everything else is refused with ``UnrepresentableError`` naming the layer, the field and its value.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from multirnn.spec import MERGE_MODES

from ._common import UnrepresentableError

# RNN-wrapper config fields: the ones that change nothing multirnn computes, and the ones read below.
_WRAPPER_INERT = {"name", "trainable", "unroll", "zero_output_for_mask", "activity_regularizer",
                  "input_shape", "batch_input_shape", "input_dim", "input_length"}
_WRAPPER_READ = {"dtype", "return_sequences", "return_state", "go_backwards", "stateful", "time_major",
                 "cell"}
# Cell config fields that only matter when training or initializing.
_CELL_INERT = {"name", "trainable", "seed", "unit_forget_bias", "implementation"}
_CELL_TRAINING_ONLY = {"dropout", "recurrent_dropout"}
_CELL_READ = {"units", "activation", "recurrent_activation", "use_bias", "reset_after", "dtype"}
_INERT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_FLOAT_DTYPES = ("float32", "float64")
_SUPPORTED = ("multirnn converts one chain of SimpleRNN/GRU/LSTM/Bidirectional layers (or keras.layers.RNN "
              "of their cells), optionally after an InputLayer and with Dropout between them")


def _kinds():
    import keras

    L = keras.layers
    cells = {L.SimpleRNNCell: "rnn", L.GRUCell: "gru", L.LSTMCell: "lstm"}
    layers = {L.SimpleRNN: L.SimpleRNNCell, L.GRU: L.GRUCell, L.LSTM: L.LSTMCell, L.RNN: None}
    return keras, cells, layers


def describe(layer) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _refuse(where: str, field: str, value, representable: str):
    raise UnrepresentableError(f"{where}: {field}={value!r} is not representable; {representable}")


@dataclasses.dataclass
class Direction:
    """One Keras RNN layer (one direction of a chain entry): its cells, one per multirnn layer."""

    rnn: object  # the keras RNN layer (LSTM, GRU, SimpleRNN or RNN)
    cells: list  # the keras cells, in stacking order
    fields: dict  # the spec fields of its cells (cell, num_hiddens, bias, nonlinearity / reset_after)
    go_backwards: bool
    return_sequences: bool
    return_state: bool
    stateful: bool


@dataclasses.dataclass
class Recurrent:
    """One recurrent entry of the chain: a plain RNN layer or a Bidirectional pair."""

    layer: object
    directions: list  # [forward] or [forward, backward]
    fields: dict = dataclasses.field(default_factory=dict)  # reverse / keep_order / merge_mode

    @property
    def num_layers(self) -> int:
        return len(self.directions[0].cells)

    @property
    def return_sequences(self) -> bool:
        return self.directions[0].return_sequences

    @property
    def return_state(self) -> bool:
        return self.directions[0].return_state


@dataclasses.dataclass
class Chain:
    """A Keras source read as one stack: the spec fields it determines, its recurrent entries in order,
    Dropout layers (run at inference as identity), notes, and what the source object itself is."""

    source: object
    entries: list  # Recurrent or ("dropout", layer)
    inferred: dict
    dtype: str
    notes: tuple
    steps: int | None = None
    batch: int | None = None
    mask_value: float | None = None  # a Masking layer's: steps whose features all equal it are masked

    @property
    def recurrents(self) -> list:
        return [e for e in self.entries if isinstance(e, Recurrent)]

    def weights(self) -> list:
        """The flat Keras weight list (``from_keras`` order): per multirnn layer, per direction, the
        cell's kernel, recurrent_kernel (and bias)."""
        out = []
        for entry in self.recurrents:
            for index in range(entry.num_layers):
                for direction in entry.directions:
                    out += _cell_arrays(direction.cells[index])
        return out


# ---- one cell, one RNN layer ----

def _dtype_name(obj, where: str) -> str:
    policy = getattr(obj, "dtype_policy", None)
    compute, variable = getattr(policy, "compute_dtype", None), getattr(policy, "variable_dtype", None)
    if compute != variable or compute not in _FLOAT_DTYPES:
        _refuse(where, "dtype policy", getattr(policy, "name", policy),
                "multirnn computes in the weights' own float32 or float64 (no mixed precision)")
    return compute


def _activation(cfg: dict, key: str, where: str, allowed: tuple, representable: str) -> str:
    value = cfg.get(key)
    if not isinstance(value, str) or value not in allowed:
        _refuse(where, key, value, representable)
    return value


def _cell_fields(cell, where: str, notes: list) -> dict:
    """The spec fields one Keras cell determines; every config field is accounted for."""
    _, cells, _ = _kinds()
    kind = cells.get(type(cell))
    if kind is None:
        raise UnrepresentableError(f"{where}: cell {type(cell).__name__} is not representable; multirnn "
                                   "converts SimpleRNNCell, GRUCell and LSTMCell (not subclasses)")
    cfg = cell.get_config()
    for key, value in cfg.items():
        if key in _CELL_INERT or key.endswith(_INERT_SUFFIXES) or key in _CELL_READ:
            continue
        if key in _CELL_TRAINING_ONLY:
            if value:
                notes.append(f"{where}: {key}={value} is ignored (it drops inputs only while training; "
                             f"inference is unchanged and multirnn's spec does not hold it)")
            continue
        _refuse(where, f"cell config field {key}", value, "multirnn does not know what it computes")
    fields = {"cell": kind, "num_hiddens": cfg["units"], "bias": bool(cfg["use_bias"])}
    if kind == "rnn":
        fields["nonlinearity"] = _activation(
            cfg, "activation", where, ("tanh", "relu"), "a SimpleRNN's activation must be 'tanh' or 'relu'")
    else:
        fields["nonlinearity"] = _activation(
            cfg, "activation", where, ("tanh", "relu"),
            f"a {type(cell).__name__}'s activation must be 'tanh' or 'relu'")
        # Keras 3's hard_sigmoid is relu6(x + 3) / 6 (keras/src/backend/*/nn.py): spec "hard_sigmoid"
        fields["gate_activation"] = _activation(
            cfg, "recurrent_activation", where, ("sigmoid", "hard_sigmoid"),
            f"a {type(cell).__name__}'s recurrent_activation must be 'sigmoid' or 'hard_sigmoid'")
    if kind == "gru":
        fields["reset_after"] = bool(cfg["reset_after"])
    return fields


def _cell_arrays(cell) -> list:
    return [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])


def _check_cell_weights(cell, where: str) -> None:
    """Every variable of the cell is one multirnn reads (kernel, recurrent_kernel, bias)."""
    if not cell.built:
        raise ValueError(f"{where} is not built: build it (call it once, or load the model) first")
    expected = {id(v) for v in _cell_arrays(cell)}
    extra = [v.path for v in cell.weights if id(v) not in expected]
    if extra or len(cell.weights) != len(expected):
        raise UnrepresentableError(f"{where}: cell variables {extra} are not representable "
                                   f"(multirnn reads kernel, recurrent_kernel and bias)")


def _direction(rnn, where: str, notes: list) -> Direction:
    keras, _, layer_types = _kinds()
    if type(rnn) not in layer_types:
        raise UnrepresentableError(f"{where} is not representable; {_SUPPORTED}")
    cfg = rnn.get_config()
    cell_keys = set(rnn.cell.get_config()) if type(rnn) is not keras.layers.RNN else set()
    for key, value in cfg.items():
        if key in _WRAPPER_INERT or key in _WRAPPER_READ or key in cell_keys:
            continue
        _refuse(where, f"config field {key}", value, "multirnn does not know what it computes")
    if cfg.get("time_major"):
        _refuse(where, "time_major", True, "multirnn reads Keras layers as batch-major (time_major=False)")
    _dtype_name(rnn, where)
    stacked = isinstance(rnn.cell, keras.layers.StackedRNNCells)
    cells = list(rnn.cell.cells) if stacked else [rnn.cell]
    if stacked and type(rnn.cell) is not keras.layers.StackedRNNCells:
        raise UnrepresentableError(f"{where}: cell {type(rnn.cell).__name__} is not representable")
    fields = []
    for index, cell in enumerate(cells):
        cell_where = where if len(cells) == 1 else f"{where} cell {index} ({type(cell).__name__})"
        fields.append(_cell_fields(cell, cell_where, notes))
        _check_cell_weights(cell, cell_where)
        _dtype_name(cell, cell_where)
    _require_uniform(fields, where)
    if cfg.get("stateful"):
        notes.append(f"{where}: stateful=True: the state it carries between calls is not part of the "
                     f"weights; multirnn.forward takes the initial state explicitly (zeros when None), and "
                     f"the proof run starts each call from that state and then restores the layer's own")
    return Direction(rnn, cells, fields[0], bool(cfg.get("go_backwards")), bool(cfg["return_sequences"]),
                     bool(cfg["return_state"]), bool(cfg.get("stateful")))


def _require_uniform(fields: list, where: str) -> None:
    differing = sorted({k for f in fields for k in f if any(f.get(k) != g.get(k) for g in fields)})
    if differing:
        values = {k: [f.get(k) for f in fields] for k in differing}
        raise UnrepresentableError(
            f"{where}: {values} differ between layers/directions; multirnn needs one cell, size and setting "
            f"for every layer and direction (per-direction hidden sizes are not representable)")


def _recurrent(layer, notes: list) -> Recurrent:
    keras, _, _ = _kinds()
    where = describe(layer)
    if type(layer) is not keras.layers.Bidirectional:
        direction = _direction(layer, where, notes)
        if direction.go_backwards and len(direction.cells) > 1:
            # the cells step in lock-step over the reversed input: the second one does not read the
            # first one's outputs last step first, as a second reversed multirnn layer would
            _refuse(where, "go_backwards", True, "with StackedRNNCells it is not representable: use one "
                    "go_backwards layer per cell")
        # go_backwards: run from the last step to the first, outputs in that order
        return Recurrent(layer, [direction], {"reverse": direction.go_backwards,
                                              "keep_order": not direction.go_backwards})
    cfg = layer.get_config()
    unknown = set(cfg) - {"name", "trainable", "dtype", "merge_mode", "layer", "backward_layer"}
    if unknown:
        key = sorted(unknown)[0]
        _refuse(where, f"config field {key}", cfg[key], "multirnn does not know what it computes")
    if layer.merge_mode not in MERGE_MODES:  # None: two outputs, not one sequence
        _refuse(where, "merge_mode", layer.merge_mode,
                f"multirnn merges the two directions into one output sequence, merge_mode in {MERGE_MODES}")
    _dtype_name(layer, where)
    forward, backward = (_direction(half, f"{where} {kind} layer {half.name!r}", notes) for kind, half in
                         (("forward", layer.forward_layer), ("backward", layer.backward_layer)))
    if forward.go_backwards or not backward.go_backwards:
        _refuse(where, "go_backwards of (forward, backward)", (forward.go_backwards, backward.go_backwards),
                "only (False, True) -- the forward layer reading forward, the backward one reversed")
    if len(forward.cells) != 1 or len(backward.cells) != 1:
        raise UnrepresentableError(
            f"{where}: StackedRNNCells inside Bidirectional stacks each direction on its own; not "
            f"representable (multirnn's next layer sees both directions): use one Bidirectional per layer")
    _require_uniform([forward.fields, backward.fields],
                     f"{where}: backward_layer is not the mirror of the forward layer:")
    for attr in ("return_sequences", "return_state", "stateful"):
        if getattr(forward, attr) != getattr(backward, attr):
            values = (getattr(forward, attr), getattr(backward, attr))
            _refuse(where, f"{attr} of (forward, backward)", values, "both directions must agree")
    return Recurrent(layer, [forward, backward], {"merge_mode": layer.merge_mode})


# ---- the chain of layers ----

def _is_recurrent(layer) -> bool:
    keras, _, layer_types = _kinds()
    return type(layer) in layer_types or type(layer) is keras.layers.Bidirectional


def _input_info(layer) -> tuple:
    """(dtype, batch, steps) of an InputLayer, refusing inputs that are not a plain dense tensor."""
    cfg = layer.get_config()
    for key in ("sparse", "ragged", "optional"):
        if cfg.get(key):
            _refuse(describe(layer), key, True, "multirnn takes a dense (batch, steps, features) input")
    shape = tuple(cfg.get("batch_shape") or (None, None, None))
    return str(cfg.get("dtype")), shape[0], shape[1] if len(shape) == 3 else None


def _refuse_layer(layer, seen_recurrent: bool, recurrent_after: bool):
    keras, _, _ = _kinds()
    where = describe(layer)
    if isinstance(layer, keras.layers.Masking):
        place = "after a recurrent layer" if seen_recurrent else "after another Masking"
        raise UnrepresentableError(f"{where} {place} is not representable: one Masking before the "
                                   f"recurrent stack is")
    if isinstance(layer, keras.layers.Embedding):
        mask = (" (its mask_zero=True masks the steps whose token is 0: run the converted layers with "
                "multirnn.forward(..., mask=tokens != 0))") if layer.mask_zero else ""
        raise UnrepresentableError(f"{where}: an Embedding is not part of a recurrent stack{mask}; "
                                   f"{_SUPPORTED}: convert the recurrent layers alone, e.g. "
                                   f"keras.Sequential(model.layers[1:])")
    if seen_recurrent and recurrent_after:
        place = "between recurrent layers (multirnn feeds each layer's outputs straight to the next)"
    elif recurrent_after:
        place = "before the recurrent stack (it would change the stack's inputs)"
    else:
        place = ("after the recurrent stack (a head: the model computes more than the stack; convert the "
                 "recurrent layers alone, e.g. the layer objects or a Sequential of them)")
    raise UnrepresentableError(f"{where} {place} is not representable; {_SUPPORTED}")


def _stack_dropout(entries: list) -> float:
    """The spec dropout of the Dropout layers in ``entries``: one rate in every gap between recurrent
    layers, none before the first or after the last. Dropout(0) is no dropout."""
    gaps, current, seen = [], [], False
    for position, entry in enumerate(entries):
        if isinstance(entry, Recurrent):
            if seen:
                gaps.append([r for r in current if r > 0])
            seen, current = True, []
            continue
        layer = entry[1]
        if layer.noise_shape is not None:
            _refuse(describe(layer), "noise_shape", layer.noise_shape,
                    "multirnn drops each element independently (noise_shape=None)")
        inside = seen and any(isinstance(e, Recurrent) for e in entries[position:])
        if not inside and layer.rate:
            raise UnrepresentableError(
                f"{describe(layer)} outside the gaps between recurrent layers is not representable "
                f"(multirnn's dropout acts only between stacked layers)")
        current.append(float(layer.rate))
    rates = {gap[0] if gap else 0.0 for gap in gaps}
    if any(len(gap) > 1 for gap in gaps) or len(rates) > 1:
        raise UnrepresentableError(f"Dropout rates between recurrent layers {gaps} are not representable: "
                                   f"multirnn has one dropout rate, applied once between every two layers")
    rate = rates.pop() if rates else 0.0
    if rate and any(isinstance(e, Recurrent) and e.num_layers > 1 for e in entries):
        raise UnrepresentableError("Dropout between recurrent layers together with StackedRNNCells (which "
                                   "has no dropout between its cells) is not representable")
    return rate


def chain_of_layers(layers, source=None, input_info=(None, None, None)) -> Chain:
    """A Chain from layers in order (a Sequential's, a functional model's operations, or a list)."""
    keras, _, _ = _kinds()
    entries, notes, info, mask_value = [], [], input_info, None
    for position, layer in enumerate(layers):
        if type(layer) is keras.layers.InputLayer and position == 0:
            info = _input_info(layer)
        elif type(layer) is keras.layers.Masking and mask_value is None and not entries:
            mask_value = _mask_value(layer)
        elif type(layer) is keras.layers.Dropout:
            entries.append(("dropout", layer))
        elif _is_recurrent(layer):
            entries.append(_recurrent(layer, notes))
        else:
            _refuse_layer(layer, any(isinstance(e, Recurrent) for e in entries),
                          any(_is_recurrent(later) for later in layers[position + 1:]))
    recurrents = [e for e in entries if isinstance(e, Recurrent)]
    if not recurrents:
        raise ValueError(f"no Keras SimpleRNN/GRU/LSTM/Bidirectional layer found; {_SUPPORTED}")
    for entry in recurrents[:-1]:
        if not entry.return_sequences:
            _refuse(describe(entry.layer), "return_sequences", False,
                    "only the last recurrent layer may return its final output alone")
    fields = [d.fields for e in recurrents for d in e.directions]
    _require_uniform(fields, "the recurrent layers")
    bidirectional = {len(e.directions) == 2 for e in recurrents}
    if len(bidirectional) != 1:
        raise UnrepresentableError("some recurrent layers are Bidirectional and some are not: not "
                                   "representable (multirnn's layers all have the same directions)")
    _require_uniform([e.fields for e in recurrents], "the recurrent layers")
    dtypes = {_dtype_name(e.layer, describe(e.layer)) for e in recurrents}
    if len(dtypes) != 1:
        raise UnrepresentableError(f"the recurrent layers compute in different dtypes {sorted(dtypes)}")
    dtype = dtypes.pop()
    if info[0] not in (None, "None", dtype):
        _refuse("the model's input", "dtype", info[0], f"it must be the layers' dtype {dtype} (a cast would "
                "round the inputs)")
    first = recurrents[0].directions[0].cells[0]
    inferred = dict(fields[0], **recurrents[0].fields, num_inputs=int(first.kernel.shape[0]),
                    num_layers=sum(e.num_layers for e in recurrents), bidirectional=bidirectional.pop(),
                    batch_first=True, dropout=_stack_dropout(entries))
    batch = info[1]
    for entry in recurrents:
        for direction in entry.directions:
            if direction.stateful and direction.rnn.states is not None:
                batch = int(np.shape(direction.rnn.states[0])[0])
    if mask_value is not None:
        _check_masked(layers, recurrents, inferred, dtype, mask_value, notes)
    return Chain(source, entries, inferred, dtype, tuple(notes), steps=info[2], batch=batch,
                 mask_value=mask_value)


def _mask_value(layer) -> float:
    cfg = layer.get_config()
    unknown = sorted(set(cfg) - {"name", "trainable", "dtype", "mask_value"})
    if unknown:
        _refuse(describe(layer), "config fields", unknown, "only mask_value is read")
    return float(cfg["mask_value"])


def _check_masked(layers, recurrents, inferred, dtype, mask_value, notes) -> None:
    """What a Masking layer's mask does to the stack is what multirnn.masking computes, or refuse."""
    keras, _, _ = _kinds()
    masking = next(layer for layer in layers if type(layer) is keras.layers.Masking)
    if _dtype_name(masking, describe(masking)) != dtype:
        _refuse(describe(masking), "dtype", _dtype_name(masking, describe(masking)),
                f"it must be the layers' dtype {dtype} (a cast would round the inputs)")
    if keras.backend.backend() == "jax":  # its rnn repeats the state, not zeros, before the first step
        raise UnrepresentableError(f"{describe(masking)} on Keras' jax backend is not representable: "
                                   f"there a masked step before the first unmasked one outputs the initial "
                                   f"state (zeros on the tensorflow and torch backends, and in multirnn)")
    if inferred.get("reverse") and inferred["num_layers"] > 1:
        raise UnrepresentableError(f"{describe(masking)} before {inferred['num_layers']} go_backwards "
                                   f"layers is not representable (each layer reads the previous one's "
                                   f"outputs last step first, the mask in input order)")
    last = recurrents[-1]
    wanted = len(last.directions) == 2 and last.return_sequences  # zeros: what multirnn.masking gives
    for direction in last.directions:
        if bool(direction.rnn.zero_output_for_mask) != wanted:
            _refuse(f"{describe(direction.rnn)} after {describe(masking)}", "zero_output_for_mask",
                    direction.rnn.zero_output_for_mask,
                    f"with a mask multirnn outputs {'zeros' if wanted else 'the previous output'} at a "
                    f"masked step here (zero_output_for_mask={wanted}, as Keras' default)")
    notes.append(f"{describe(masking)}: a step whose features all equal {mask_value} is masked; run "
                 f"multirnn.forward(model, params, x, mask=loaded.mask_for(x))")


def _functional_layers(model) -> list:
    """The operations of a functional model if they form one chain: one input, each layer taking only
    the previous one's output sequence, the last one's output the model's only output."""
    keras, _, _ = _kinds()
    where = f"functional model {model.name!r}"
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnrepresentableError(f"{where} has {len(model.inputs)} inputs and {len(model.outputs)} "
                                   f"outputs; "
                                   f"only one input and one output are representable")
    previous, layers = None, []
    for op in model.operations:
        if not isinstance(op, keras.layers.Layer):
            raise UnrepresentableError(f"{where}: operation {op.name!r} ({type(op).__name__}) is not "
                                       f"representable; {_SUPPORTED}")
        nodes = op._inbound_nodes
        if len(nodes) != 1:
            raise UnrepresentableError(f"{where}: {describe(op)} is called {len(nodes)} times (a shared "
                                       f"layer); only one chain is representable")
        tensors = list(nodes[0].input_tensors)
        if previous is None:
            if tensors:
                raise UnrepresentableError(f"{where}: the graph does not start at its InputLayer")
        else:
            _check_edge(where, op, nodes[0], tensors, previous)
        previous = op
        layers.append(op)
    out = model.outputs[0]._keras_history
    if out.operation is not previous or out.tensor_index != 0:
        raise UnrepresentableError(f"{where}: its output is not the last layer's output sequence (tensor "
                                   f"{out.tensor_index} of {out.operation.name!r}); not representable")
    return layers


def _check_edge(where, op, node, tensors, previous) -> None:
    if len(tensors) != 1:
        raise UnrepresentableError(f"{where}: {describe(op)} takes {len(tensors)} graph tensors (an "
                                   f"initial_state or mask from the graph); not representable")
    history = tensors[0]._keras_history
    if history.operation is not previous or history.tensor_index != 0:
        raise UnrepresentableError(f"{where}: {describe(op)} takes tensor {history.tensor_index} of "
                                   f"{history.operation.name!r}, not the previous layer's output sequence")
    for key, value in node.arguments.kwargs.items():
        if key == "training" and value:
            _refuse(f"{where}: {describe(op)}", "training", value, "it is called in inference mode")
        elif key not in ("training", "mask") and value is not None:
            _refuse(f"{where}: {describe(op)}", f"call argument {key}", value, "not part of the spec")


def chain_of(source) -> Chain:
    """The Chain of a live Keras layer, ``Sequential`` or functional ``Model``."""
    keras, _, _ = _kinds()
    from keras.src.models.functional import Functional

    if isinstance(source, keras.Model):
        if type(source) is keras.Sequential:
            inputs = getattr(source, "_layers", [])[:1]
            info = _input_info(inputs[0]) if inputs and type(inputs[0]) is keras.layers.InputLayer else \
                (None, None, None)
            return chain_of_layers(source.layers, source, info)
        if type(source) is Functional:
            return chain_of_layers(_functional_layers(source), source)
        raise UnrepresentableError(f"a {type(source).__name__} (subclassed keras.Model) is not readable: its "
                                   f"call() is code; give its recurrent layers, a Sequential or a functional "
                                   f"Model")
    if not isinstance(source, keras.layers.Layer):
        raise TypeError(f"not a Keras layer or model: {type(source).__name__}")
    if not source.built:
        raise ValueError(f"{describe(source)} is not built: build it (call it once) first")
    return chain_of_layers([source], source)
