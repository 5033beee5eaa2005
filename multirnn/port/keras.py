"""Keras 3 ``SimpleRNN``/``GRU``/``LSTM`` (optionally in ``Bidirectional``) weights <-> canonical params.

The Keras form is the flat weight list of ``model.get_weights()`` for a stack of such layers, one per
layer (``keras_layers(model)``): per direction ``kernel`` (in, G·H), ``recurrent_kernel`` (H, G·H),
``bias``; a Bidirectional layer lists its forward layer's weights, then its backward layer's.
Gates z, r, h (GRU) and i, f, c, o (LSTM).

Biases: a GRU with reset_after=True has bias (2, 3H) = [input row, recurrent row], exact both ways.
Keras LSTMs and reset_after=False GRUs have one bias (G·H,): exporting writes ``b_x + b_h`` (one float
rounding; exact when either is zero), importing puts it in ``b_x`` and zeros in ``b_h``, so
Keras -> canonical -> Keras is exact. SimpleRNN's bias is ``b_h``.
"""
from __future__ import annotations

import numpy as np

from ._common import (Fused, UnrepresentableError, check_export, expect_shape, finish_import, fuse,
                      make_spec, spec_from_known, unfuse)


def _single_bias(model) -> bool:
    return model.cell == "lstm" or (model.cell == "gru" and not model.reset_after)


def keras_shapes(model) -> list[tuple]:
    """Shapes of the flat Keras weight list, in order."""
    gh = {"rnn": 1, "gru": 3, "lstm": 4}[model.cell] * model.num_hiddens
    shapes = []
    for _, _, _, width in model.units():
        shapes += [(width, gh), (model.num_hiddens, gh)]
        if model.bias:
            shapes.append((2, gh) if model.cell == "gru" and model.reset_after else (gh,))
    return shapes


def to_keras(model, params: dict) -> list[np.ndarray]:
    """The flat weight list for ``keras_layers(model)`` (``set_weights`` order)."""
    check_export(model, params)
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
    if model.cell == "rnn":
        kwargs["activation"] = model.nonlinearity
    if model.cell == "gru":
        kwargs["reset_after"] = model.reset_after
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
            rnn = keras.layers.Bidirectional(rnn, dtype=dtype)
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
    """The SimpleRNN/GRU/LSTM/Bidirectional layers of a list (e.g. a model's ``.layers``), in order."""
    import keras

    kinds = (keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM, keras.layers.Bidirectional)
    return [layer for layer in layers if isinstance(layer, kinds)]


def infer_keras_spec(layers, **known):
    """The spec of built Keras recurrent layers (a model's ``.layers`` may be passed: only its
    recurrent layers count), from their config. Refuses what the canonical spec cannot hold exactly."""
    import keras

    cells = {keras.layers.SimpleRNN: "rnn", keras.layers.GRU: "gru", keras.layers.LSTM: "lstm"}
    rnns = recurrent_layers(layers)  # other layers (a Dense head...) are not converted
    if not rnns:
        raise ValueError("no Keras SimpleRNN/GRU/LSTM/Bidirectional layer found")
    fields, num_inputs, bidirectional = [], None, []
    for rnn in rnns:
        bidirectional.append(isinstance(rnn, keras.layers.Bidirectional))
        parts = [rnn.forward_layer, rnn.backward_layer] if bidirectional[-1] else [rnn]
        if bidirectional[-1] and rnn.merge_mode != "concat":
            raise UnrepresentableError(f"Bidirectional merge_mode={rnn.merge_mode!r} is not representable "
                             "(multirnn concatenates [fwd, bwd])")
        for part in parts:
            cell = cells.get(type(part))
            if cell is None:
                raise ValueError(f"layer {part.name!r} ({type(part).__name__}) is not SimpleRNN/GRU/LSTM")
            cfg = part.get_config()
            entry = {"cell": cell, "num_hiddens": cfg["units"], "bias": cfg["use_bias"]}
            if cell == "rnn":
                entry["nonlinearity"] = cfg["activation"]
            else:
                if cfg["activation"] != "tanh" or cfg["recurrent_activation"] != "sigmoid":
                    raise UnrepresentableError(
                        f"layer {part.name!r}: activation {cfg['activation']!r}/"
                        f"{cfg['recurrent_activation']!r} is not representable (tanh/sigmoid)")
                if cell == "gru":
                    entry["reset_after"] = cfg["reset_after"]
            if cfg.get("go_backwards") and not bidirectional[-1]:
                raise UnrepresentableError(f"layer {part.name!r}: a go_backwards layer outside "
                                           "Bidirectional is not representable")
            fields.append(entry)
        if num_inputs is None:
            num_inputs = parts[0].get_weights()[0].shape[0] if parts[0].get_weights() else None
    if len({tuple(sorted(f.items())) for f in fields}) != 1:
        raise UnrepresentableError(f"layers differ ({fields}): multirnn needs one cell, size and setting "
                                   "for every layer and direction (per-direction hidden sizes are not "
                                   "representable)")
    if len(set(bidirectional)) != 1:
        raise UnrepresentableError("some layers are Bidirectional and some not: not representable")
    if num_inputs is None:
        raise ValueError("the Keras layers are not built: build them (or load the model) first")
    inferred = dict(fields[0], num_inputs=num_inputs, num_layers=len(rnns), bidirectional=bidirectional[0])
    known = dict(known)
    known.setdefault("batch_first", True)  # Keras layers are batch-major
    return make_spec(inferred, known, "keras")


# ---- files (import keras) ----

def read_file(path, **known):
    """A ``Loaded`` from a ``.keras`` model (spec from its config) or a ``.weights.h5`` (spec from
    ``known``)."""
    from .source import Loaded

    if str(path).endswith(".keras"):
        import multirnn.backends

        multirnn.backends.get("tensorflow")
        import keras

        layers = recurrent_layers(keras.saving.load_model(path, compile=False).layers)
        model = infer_keras_spec(layers, **known)
    else:
        model = spec_from_known(known, "Keras .weights.h5")
        net = keras_model(model)
        net.load_weights(path)
        layers = recurrent_layers(net.layers)
    return Loaded(model, from_keras(model, get_keras_weights(layers)), origin=f"Keras file {str(path)!r}")


def write_file(path, model, params: dict) -> None:
    path = str(path)
    if not (path.endswith(".keras") or path.endswith(".weights.h5")):
        raise ValueError(f"a Keras file must end in .keras (model + config) or .weights.h5, got {path!r}")
    net = keras_model(model, params)
    net.save(path) if path.endswith(".keras") else net.save_weights(path)
