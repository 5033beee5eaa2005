"""Keras 3 ``SimpleRNN``/``GRU``/``LSTM`` (optionally in ``Bidirectional``) weights <-> canonical params.

The Keras form is the flat weight list of ``model.get_weights()`` for a stack of such layers, one per
layer (``keras_layers(model)``): per direction ``kernel`` (in, G·H), ``recurrent_kernel`` (H, G·H),
``bias``; a Bidirectional layer lists its forward layer's weights, then its backward layer's.
Gates z, r, h (GRU) and i, f, c, o (LSTM).

Biases: a GRU with reset_after=True has bias (2, 3H) = [input row, recurrent row], exact both ways.
Keras LSTMs and reset_after=False GRUs have one bias (G·H,): exporting writes ``b_x + b_h`` (one float
rounding; exact when either is zero), importing puts it in ``b_x`` and zeros in ``b_h``, so
Keras -> canonical -> Keras is exact. SimpleRNN's bias is ``b_h``.

Sources (``read`` for live objects, ``read_file`` for files): every layer, graph edge and config field
is accounted for by ``multirnn.port.keras_graph`` -- represented exactly or refused by name -- and a
live or full-config source comes with a ``SourceRun`` that runs the Keras object itself, so
``multirnn.port.load`` proves the conversion. ``.weights.h5`` files hold weights only: the spec comes
from the caller and every array in the file must belong to it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ._common import (Fused, GATES_PER_CELL, SpecFieldError, UnrepresentableError, check_export, expect_shape,
                      finish_import, fuse, make_spec, require_no_learned_state, require_no_projection,
                      spec_from_known,
                      unfuse)


def _single_bias(model) -> bool:
    return model.cell == "lstm" or (model.cell == "gru" and not model.reset_after)


def keras_shapes(model) -> list[tuple]:
    """Shapes of the flat Keras weight list, in order."""
    gh = GATES_PER_CELL[model.cell] * model.num_hiddens
    shapes = []
    for _, _, _, width in model.units():
        shapes += [(width, gh), (model.num_hiddens, gh)]
        if model.bias:
            shapes.append((2, gh) if model.cell == "gru" and model.reset_after else (gh,))
    return shapes


def to_keras(model, params: dict) -> list[np.ndarray]:
    """The flat weight list for ``keras_layers(model)`` (``set_weights`` order)."""
    check_export(model, params)
    require_no_learned_state(model, "Keras")
    require_no_projection(model, "Keras")
    weights = []
    for _, _, prefix, _ in model.units():
        f = fuse(model, params, prefix, "keras")
        weights += [f.wx.copy(), f.wh.copy()]
        if not model.bias:
            continue
        if model.cell == "rnn":
            weights.append(f.bx.copy())
        elif _single_bias(model):
            weights.append(f.bx + f.bh)  # Keras adds one bias per gate: fold (exact when one is 0)
        else:
            weights.append(np.stack([f.bx, f.bh]))
    return weights


def from_keras(model, weights) -> dict[str, np.ndarray]:
    """Canonical params from the flat Keras weight list (arrays or Keras variables)."""
    require_no_projection(model, "Keras")
    weights = [np.asarray(w) for w in weights]
    shapes = keras_shapes(model)
    if len(weights) != len(shapes):
        raise ValueError(f"weights must be a list of {len(shapes)} arrays for {model} "
                         f"(kernel, recurrent_kernel{', bias' if model.bias else ''} per direction), "
                         f"got {len(weights)}")
    for k, (w, shape) in enumerate(zip(weights, shapes)):
        expect_shape(f"weights[{k}]", w, shape)
    per_unit = 3 if model.bias else 2
    params = {}
    for index, (_, _, prefix, _) in enumerate(model.units()):
        kernel, recurrent, *bias = weights[index * per_unit:(index + 1) * per_unit]
        if not bias:
            bx = bh = None
        elif model.cell == "rnn" or _single_bias(model):
            bx, bh = bias[0], np.zeros_like(bias[0])
        else:
            bx, bh = bias[0][0], bias[0][1]
        params.update(unfuse(model, Fused(kernel, recurrent, bx, bh), prefix, "keras"))
    return finish_import(model, params)


# ---- Keras's own layers (import keras) ----

def _layer_kwargs(model) -> dict:
    kwargs = {"units": model.num_hiddens, "use_bias": model.bias, "return_sequences": True,
              "return_state": True}
    kwargs["activation"] = model.nonlinearity
    if model.cell != "rnn":
        if model.gate_activation == "hard_sigmoid_legacy":
            raise UnrepresentableError(
                "gate_activation='hard_sigmoid_legacy' (clip(0.2·x + 0.5, 0, 1), Keras 2's hard_sigmoid) "
                "has no Keras 3 activation (Keras 3's hard_sigmoid has slope 1/6); representable: "
                "'sigmoid', 'hard_sigmoid'")
        kwargs["recurrent_activation"] = model.gate_activation
    if model.cell == "gru":
        kwargs["reset_after"] = model.reset_after
    if model.reverse:
        if model.keep_order:
            raise UnrepresentableError(
                "reverse=True with keep_order=True (outputs aligned with the inputs) is not a Keras layer: "
                "go_backwards=True returns the outputs last step first; representable: keep_order=False")
        kwargs["go_backwards"] = True
    return kwargs


def keras_layers(model, params: dict | None = None, *, weights: list | None = None,
                 dtype="float32") -> list:
    """One built Keras layer per model layer (``SimpleRNN``/``GRU``/``LSTM``, wrapped in
    ``Bidirectional`` when bidirectional; return_sequences and return_state on), loaded with canonical
    ``params`` or with the flat Keras ``weights`` list as is."""
    import multirnn.backends

    multirnn.backends.get("tensorflow")  # keras after torch: the backend imports them in safe order
    import keras

    if params is not None:
        dtype, weights = check_export(model, params), to_keras(model, params)
    dtype = np.dtype(dtype).name
    cls = {"rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[model.cell]
    layers = []
    for layer in range(model.num_layers):
        width = model.num_inputs if layer == 0 else model.output_size
        rnn = cls(dtype=dtype, **_layer_kwargs(model))
        if model.bidirectional:
            rnn = keras.layers.Bidirectional(rnn, merge_mode=model.merge_mode, dtype=dtype)
        rnn.build((None, None, width))
        layers.append(rnn)
    if weights is not None:
        it = iter(weights)
        for rnn in layers:
            rnn.set_weights([np.asarray(next(it), dtype) for _ in rnn.get_weights()])
    return layers


def keras_model(model, params: dict | None = None, *, weights: list | None = None, dtype="float32"):
    """A functional ``keras.Model`` (inputs -> outputs of the last layer) around ``keras_layers``: the
    form ``multirnn convert`` saves (``.keras`` keeps the config, ``.weights.h5`` the weights)."""
    import keras

    layers = keras_layers(model, params, weights=weights, dtype=dtype)
    inputs = keras.Input((None, model.num_inputs), dtype=layers[0].dtype)
    x = inputs
    for rnn in layers:
        x = rnn(x)[0]
    return keras.Model(inputs, x)


def get_keras_weights(layers) -> list[np.ndarray]:
    return [np.asarray(w) for rnn in layers for w in rnn.get_weights()]


def run_keras_layers(model, layers, inputs: np.ndarray, state=None):
    """Run the Keras layers on NumPy inputs (model's layout) with a state in the multirnn convention;
    returns ``(outputs, state)`` in that convention. Keras is batch-major, so time-major is transposed."""
    from multirnn.state import flatten_state, nest_state

    x = inputs if model.batch_first else inputs.swapaxes(0, 1)
    flat = flatten_state(model, state) if state is not None else None
    finals, per_dir = [], len(model.directions)
    for layer, rnn in enumerate(layers):
        initial = None
        if flat is not None:
            initial = [a for unit in flat[layer * per_dir:(layer + 1) * per_dir] for a in unit]
        out, *states = rnn(x, initial_state=initial)
        states = [np.asarray(s) for s in states]
        k = model.state_arrays
        finals += [tuple(states[i:i + k]) for i in range(0, len(states), k)]
        x = np.asarray(out)
    out = x if model.batch_first else x.swapaxes(0, 1)
    return np.ascontiguousarray(out), nest_state(model, finals)


def recurrent_layers(layers) -> list:
    """The SimpleRNN/GRU/LSTM/Bidirectional layers of a list, in order (other layers are skipped: use
    ``infer_keras_spec`` or ``read`` to check that nothing else computes)."""
    import keras

    kinds = (keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM, keras.layers.Bidirectional)
    return [layer for layer in layers if isinstance(layer, kinds)]


def infer_keras_spec(layers, **known):
    """The spec of built Keras layers in order (a chain, e.g. a model's ``.layers``), from their config.
    Every layer must be part of the stack (InputLayer first, Dropout between recurrent layers); anything
    the canonical spec cannot hold exactly is refused (see ``multirnn.port.keras_graph``)."""
    from .keras_graph import chain_of_layers

    _import_keras()
    return make_spec(chain_of_layers(list(layers)).inferred, known, "keras")


# ---- live Keras objects: read and run (import keras) ----

def _import_keras():
    import multirnn.backends

    multirnn.backends.get("tensorflow")  # keras after torch: the backend imports them in safe order
    import keras

    return keras


def read(source, *, variables=None, **known):
    """A ``Loaded`` from a live Keras recurrent layer, ``Sequential`` or functional ``Model``: the spec
    from its config (``known`` fields must agree), params from its weights, and a ``SourceRun`` that runs
    the object itself, so ``multirnn.port.load`` proves the conversion."""
    from .keras_graph import chain_of, describe
    from .source import Loaded

    if variables is not None:
        raise ValueError("variables= goes with a Flax linen module; a Keras object holds its own weights")
    _import_keras()
    chain = chain_of(source)
    model = make_spec(chain.inferred, known, "keras")
    params = from_keras(model, [np.asarray(w) for w in chain.weights()])
    return Loaded(model, params, run=_source_run(chain, model), origin=f"Keras {describe(source)}",
                  notes=chain.notes, mask_value=chain.mask_value)


def _source_run(chain, model):
    import keras

    from .source import SourceRun

    def call(inputs, state):
        with _fresh_states(chain):
            if state is None:
                return _run_whole(chain, model, inputs)
            return _run_entries(chain, model, inputs, state)

    last = chain.recurrents[-1]
    return SourceRun(call, f"keras {keras.__version__} ({keras.backend.backend()})", dtype=chain.dtype,
                     takes_state=True, steps=chain.steps, batch=chain.batch,
                     outputs="sequence" if last.return_sequences else "last")


def _flat_arrays(nested) -> list:
    if isinstance(nested, (list, tuple)):
        return [a for part in nested for a in _flat_arrays(part)]
    return [np.asarray(nested)]


def _units(model, arrays: list) -> list:
    k = model.state_arrays
    return [tuple(arrays[i:i + k]) for i in range(0, len(arrays), k)]


def _run_whole(chain, model, inputs):
    """The source object itself on the inputs, from its own initial state. Its final state is returned
    only when it is the whole state (one recurrent layer that returns its state)."""
    from multirnn.state import nest_state

    result = chain.source(inputs)
    if not isinstance(result, (list, tuple)):
        return np.asarray(result), None
    out, *states = result
    whole = len(chain.recurrents) == 1 and chain.recurrents[0].return_state
    return np.asarray(out), nest_state(model, _units(model, _flat_arrays(states))) if whole else None


def _initial_state(direction, units: list) -> list:
    """A Keras RNN layer's initial_state: [h(, c)], or per cell [[h(, c)], ...] for StackedRNNCells."""
    import keras

    if isinstance(direction.rnn.cell, keras.layers.StackedRNNCells):
        return [list(unit) for unit in units]
    return list(units[0])


def _run_entries(chain, model, inputs, state):
    """The chain's layers one by one (each recurrent layer from its part of ``state``). The final state
    is returned when every recurrent layer returns its state."""
    from multirnn.state import flatten_state, nest_state

    units, x, finals, taken = flatten_state(model, state), inputs, [], 0
    mask = None if chain.mask_value is None else np.any(inputs != chain.mask_value, axis=-1)  # Masking's
    for entry in chain.entries:
        if not hasattr(entry, "directions"):  # ("dropout", layer): identity at inference, run anyway
            x = entry[1](x, training=False)
            continue
        initial = []
        for index, direction in enumerate(entry.directions):
            mine = units[taken + index:taken + entry.num_layers * len(entry.directions):len(entry.directions)]
            initial += _initial_state(direction, mine)
        taken += entry.num_layers * len(entry.directions)
        result = entry.layer(x, initial_state=initial, mask=mask)
        if entry.return_state:
            x, *states = result
            finals += _flat_arrays(states)
        else:
            x = result
    complete = all(entry.return_state for entry in chain.recurrents)
    return np.asarray(x), nest_state(model, _units(model, finals)) if complete else None


class _fresh_states:
    """Stateful layers start each proof call from zeros (or the given state) and get their own state
    back afterwards, so proving leaves the user's layer as it was."""

    def __init__(self, chain):
        self.rnns = [d.rnn for e in chain.recurrents for d in e.directions if d.stateful]

    def __enter__(self):
        import keras

        self.held = [[np.array(v) for v in keras.tree.flatten(rnn.states)] if rnn.states is not None else None
                     for rnn in self.rnns]
        for rnn in self.rnns:
            rnn.reset_state()

    def __exit__(self, *exc):
        import keras

        for rnn, values in zip(self.rnns, self.held):
            if values is not None:
                for variable, value in zip(keras.tree.flatten(rnn.states), values):
                    variable.assign(value)
        return False


# ---- files (import keras) ----

def read_file(path, **known):
    """A ``Loaded`` from a Keras file.

    ``.keras`` and legacy full-model ``.h5`` (``model.save("x.h5")``, with a ``model_config``): the model
    is loaded and read like a live one (its config is the spec; ``known`` must agree), and can run.
    ``.weights.h5`` (and legacy weights-only ``.h5``): weights only, so the spec comes from ``known``;
    every array in the file must belong to that spec's layers (a leftover layer is an error)."""
    keras = _import_keras()
    text = str(path)
    if text.endswith(".keras") or _is_full_h5(text):
        loaded = read(keras.saving.load_model(text, compile=False), **known)
        loaded.origin = f"Keras file {text!r}"
        if not text.endswith(".keras"):
            _legacy_hard_sigmoid(loaded, _h5_keras_version(text))
        return loaded
    return _read_weights_file(text, known)


def _h5_keras_version(path: str) -> str:
    import h5py

    with h5py.File(path, "r") as f:
        version = f.attrs.get("keras_version", "1")
    return version.decode() if isinstance(version, bytes) else str(version)


def _legacy_hard_sigmoid(loaded, keras_version: str) -> None:
    """A full-model .h5 written by Keras < 3 meant hard_sigmoid = clip(0.2·x + 0.5, 0, 1) (tf.keras's
    backend.hard_sigmoid); Keras 3 loads the name as its own relu6(x + 3) / 6. The file's meaning is
    the spec's "hard_sigmoid_legacy", which running the file in Keras 3 cannot prove."""
    major = int(keras_version.split(".")[0]) if keras_version.split(".")[0].isdigit() else 1
    if major >= 3 or loaded.model.gate_activation != "hard_sigmoid":
        return
    loaded.model = dataclasses.replace(loaded.model, gate_activation="hard_sigmoid_legacy")
    loaded.run, loaded.why_not_run = None, (
        f"it was written by Keras {keras_version}, whose hard_sigmoid is clip(0.2·x + 0.5, 0, 1), but "
        "Keras 3 runs it with its own hard_sigmoid, relu6(x + 3) / 6, so running it here cannot prove "
        "the file's meaning")
    loaded.notes += (f"recurrent_activation='hard_sigmoid' of a Keras {keras_version} file read as "
                     "gate_activation='hard_sigmoid_legacy' (0.2·x + 0.5, what Keras 2 computed); "
                     "Keras 3 itself would load it with slope 1/6",)


def _is_full_h5(path: str) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        return "model_config" in f.attrs


def _h5_arrays(path: str) -> dict:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset)
                     else None)
    return arrays


def _read_weights_file(path: str, known: dict):
    import h5py

    from .source import Loaded

    known = dict(known)
    known.setdefault("batch_first", True)  # Keras layers are batch-major
    model = spec_from_known(known, "Keras .weights.h5")
    net = keras_model(model)
    with h5py.File(path, "r") as f:
        legacy = "layer_names" in f.attrs
    if legacy:  # Keras 2 save_weights: Keras loads by topology and checks the layer count
        _check_legacy_layer_count(path, model)
    else:
        _check_weights_match(path, net, model)
    net.load_weights(path)
    weights = get_keras_weights(recurrent_layers(net.layers))
    return Loaded(model, from_keras(model, weights), origin=f"Keras weights file {path!r}")


def _check_weights_match(path: str, net, model) -> None:
    """Every array of the file is one of the spec's Keras layers' and none is missing (Keras itself
    would load a 1-layer spec from a 2-layer file and drop the second layer silently)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        reference = os.path.join(folder, "expected.weights.h5")
        net.save_weights(reference)
        expected = _h5_arrays(reference)
    found = _h5_arrays(path)
    if found == expected:
        return
    layer_of = lambda name: "/".join(name.split("/")[:2])  # noqa: E731 -- "layers/lstm_1"
    leftover = sorted({layer_of(n) for n in found if n not in expected})
    missing = sorted({layer_of(n) for n in expected if n not in found})
    shapes = sorted(f"{n}: file {found[n]}, spec {expected[n]}" for n in found
                    if n in expected and found[n] != expected[n])
    raise SpecFieldError(f"{path} does not hold exactly the weights of {model} (a spec from the flags given): "
                     + "; ".join(part for part in (
                         leftover and f"layers in the file the spec does not account for: {leftover} "
                                      f"(give the spec that has them, e.g. --layers, --bidirectional)",
                         missing and f"layers the spec needs but the file lacks: {missing}",
                         shapes and f"shapes differ: {shapes}") if part))


def _check_legacy_layer_count(path: str, model) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        weighted = [n for n in names if len(f[n].attrs.get("weight_names", [])) > 0]
    if len(weighted) != model.num_layers:
        raise SpecFieldError(f"{path} holds {len(weighted)} layers with weights {weighted}, but the spec {model} "
                         f"has {model.num_layers}: give the spec of every layer in the file")


def write_file(path, model, params: dict) -> None:
    path = str(path)
    if not (path.endswith(".keras") or path.endswith(".weights.h5")):
        raise ValueError(f"a Keras file must end in .keras (model + config) or .weights.h5, got {path!r}")
    net = keras_model(model, params)
    net.save(path) if path.endswith(".keras") else net.save_weights(path)
