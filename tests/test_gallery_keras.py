"""A gallery of Keras sources: each one converts exactly -- proven by ``multirnn.port.load`` (which runs
the Keras object) and checked again here against ``multirnn.forward`` -- or is refused by name.

Every case is built with keras here; weights are randomized (biases included) so that a wrong gate,
bias or direction cannot hide behind Keras's zero-bias initialization.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, load_backend

import multirnn
from multirnn.cli import main
from multirnn.port import UnrepresentableError, load
from multirnn.port import keras as pkeras
from multirnn.port.verify import last_outputs

NUM_INPUTS = 3


@pytest.fixture(scope="module")
def keras():
    load_backend("tensorflow")  # imports torch first where both are present
    import keras

    return keras


def randomized(obj, seed=0):
    rng = np.random.default_rng(seed)
    obj.set_weights([rng.normal(scale=0.6, size=w.shape).astype(w.dtype) for w in obj.get_weights()])
    return obj


def built(layer, dtype="float32"):
    layer(np.zeros((2, 3, NUM_INPUTS), dtype))
    return randomized(layer)


def keras_output(obj, x):
    got = obj(x)
    return np.asarray(got[0] if isinstance(got, (list, tuple)) else got)


def assert_exact(obj, batch=2, dtype="float32"):
    """load proves it by running obj; then obj's own output equals multirnn.forward's."""
    loaded = load(obj)
    assert loaded.verification is not None and loaded.verification.dtype == dtype
    model, params = loaded
    assert model.batch_first
    x = np.random.default_rng(7).normal(size=(batch, 6, NUM_INPUTS)).astype(dtype)
    out, state = multirnn.forward(model, {k: v.astype(np.float64) for k, v in params.items()},
                                  x.astype(np.float64))
    if loaded.run.outputs == "last":  # return_sequences=False: the last layer's final h, directions merged
        out = last_outputs(model, state)
    assert_close(keras_output(obj, x), out, dtype, f"keras vs multirnn.forward for {loaded.origin}")
    return loaded


# ---- exact ----

def _sequential(keras, *layers, batch_size=None):
    model = keras.Sequential([keras.Input((None, NUM_INPUTS), batch_size=batch_size), *layers])
    return randomized(model)


EXACT = {
    "lstm": lambda k: built(k.layers.LSTM(4, return_sequences=True)),
    "lstm return_sequences=False": lambda k: built(k.layers.LSTM(4)),
    "lstm return_state": lambda k: built(k.layers.LSTM(4, return_sequences=True, return_state=True)),
    "lstm unroll": lambda k: built(k.layers.LSTM(4, return_sequences=True, unroll=True)),
    "lstm use_bias=False": lambda k: built(k.layers.LSTM(4, return_sequences=True, use_bias=False)),
    "lstm training-only dropout": lambda k: built(k.layers.LSTM(4, return_sequences=True, dropout=0.3,
                                                                recurrent_dropout=0.2)),
    "gru reset_after=True": lambda k: built(k.layers.GRU(4, return_sequences=True, reset_after=True)),
    "gru reset_after=False": lambda k: built(k.layers.GRU(4, return_sequences=True, reset_after=False)),
    "simple_rnn tanh": lambda k: built(k.layers.SimpleRNN(4, return_sequences=True, return_state=True)),
    "simple_rnn relu": lambda k: built(k.layers.SimpleRNN(4, activation="relu", return_sequences=True)),
    "lstm hard_sigmoid": lambda k: built(k.layers.LSTM(4, recurrent_activation="hard_sigmoid",
                                                       return_sequences=True, return_state=True)),
    "lstm relu": lambda k: built(k.layers.LSTM(4, activation="relu", return_sequences=True)),
    "gru hard_sigmoid relu reset_after=False": lambda k: built(k.layers.GRU(
        4, activation="relu", recurrent_activation="hard_sigmoid", reset_after=False, return_sequences=True)),
    "bidirectional gru hard_sigmoid": lambda k: built(k.layers.Bidirectional(
        k.layers.GRU(4, recurrent_activation="hard_sigmoid", return_sequences=True))),
    "float64 gru": lambda k: built(k.layers.GRU(4, return_sequences=True, dtype="float64"), "float64"),
    "RNN(LSTMCell)": lambda k: built(k.layers.RNN(k.layers.LSTMCell(4), return_sequences=True,
                                                  return_state=True)),
    "RNN(GRUCell)": lambda k: built(k.layers.RNN(k.layers.GRUCell(4, reset_after=False),
                                                 return_sequences=True)),
    "RNN(SimpleRNNCell)": lambda k: built(k.layers.RNN(k.layers.SimpleRNNCell(4), return_sequences=True)),
    "RNN(StackedRNNCells)": lambda k: built(k.layers.RNN(
        k.layers.StackedRNNCells([k.layers.LSTMCell(4), k.layers.LSTMCell(4)]), return_sequences=True,
        return_state=True)),
    "bidirectional concat": lambda k: built(k.layers.Bidirectional(
        k.layers.GRU(4, return_sequences=True, return_state=True))),
    "bidirectional return_sequences=False": lambda k: built(k.layers.Bidirectional(k.layers.LSTM(4))),
    "bidirectional mirrored backward_layer": lambda k: built(k.layers.Bidirectional(
        k.layers.LSTM(4, return_sequences=True),
        backward_layer=k.layers.LSTM(4, return_sequences=True, go_backwards=True))),
    "go_backwards": lambda k: built(k.layers.LSTM(4, return_sequences=True, return_state=True,
                                                  go_backwards=True)),
    "go_backwards return_sequences=False": lambda k: built(k.layers.GRU(4, go_backwards=True)),
    "sequential go_backwards x2 with dropout": lambda k: _sequential(
        k, k.layers.GRU(4, return_sequences=True, go_backwards=True), k.layers.Dropout(0.2),
        k.layers.GRU(4, return_sequences=True, go_backwards=True)),
    "merge_mode sum": lambda k: built(k.layers.Bidirectional(
        k.layers.LSTM(4, return_sequences=True, return_state=True), merge_mode="sum")),
    "merge_mode mul x2": lambda k: _sequential(
        k, k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True), merge_mode="mul"),
        k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True), merge_mode="mul")),
    "merge_mode ave return_sequences=False": lambda k: built(k.layers.Bidirectional(
        k.layers.SimpleRNN(4), merge_mode="ave")),
    "sequential lstm lstm": lambda k: _sequential(k, k.layers.LSTM(4, return_sequences=True),
                                                  k.layers.LSTM(4, return_sequences=True)),
    "sequential with dropout between": lambda k: _sequential(
        k, k.layers.LSTM(4, return_sequences=True), k.layers.Dropout(0.25), k.layers.LSTM(4)),
}


@pytest.mark.parametrize("case", sorted(EXACT))
def test_exact(keras, case):
    obj = EXACT[case](keras)
    dtype = "float64" if "float64" in case else "float32"
    assert_exact(obj, dtype=dtype)


def test_dropout_between_layers_is_the_spec_dropout(keras):
    seq = EXACT["sequential with dropout between"](keras)
    assert load(seq).model.dropout == 0.25
    assert load(EXACT["sequential lstm lstm"](keras)).model.dropout == 0.0


def test_training_only_dropout_is_noted(keras):
    loaded = load(EXACT["lstm training-only dropout"](keras))
    assert any("dropout=0.3 is ignored" in note for note in loaded.notes)
    assert any("recurrent_dropout=0.2" in note for note in loaded.notes)


def test_stacked_cells_are_layers(keras):
    model = load(EXACT["RNN(StackedRNNCells)"](keras)).model
    assert (model.cell, model.num_layers, model.bidirectional) == ("lstm", 2, False)


def test_functional_model(keras):
    inputs = keras.Input((None, NUM_INPUTS))
    h = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True, return_state=True))(inputs)[0]
    h = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))(h)
    loaded = assert_exact(randomized(keras.Model(inputs, h)))
    assert (loaded.model.num_layers, loaded.model.bidirectional) == (2, True)


def test_stateful_layer_is_proven_from_zero_state_and_left_as_it_was(keras):
    seq = _sequential(keras, keras.layers.LSTM(4, return_sequences=True, stateful=True), batch_size=2)
    x = np.random.default_rng(3).normal(size=(2, 5, NUM_INPUTS)).astype("float32")
    seq(x)  # the layer now carries a nonzero state
    rnn = seq.layers[0]
    held = [np.array(v) for v in rnn.states]
    loaded = load(seq)
    assert loaded.run.batch == 2 and any("stateful=True" in note for note in loaded.notes)
    for before, after in zip(held, rnn.states):
        np.testing.assert_array_equal(before, np.asarray(after))
    rnn.reset_state()
    assert_exact(seq)


# ---- refused by name ----

def _head(k):
    return _sequential(k, k.layers.LSTM(4, return_sequences=True), k.layers.Dense(2))


def _subclassed(k):
    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.rnn = k.layers.LSTM(4, return_sequences=True)

        def call(self, x):
            return self.rnn(x) * 2.0

    net = Net()
    net(np.zeros((1, 2, NUM_INPUTS), "float32"))
    return net


def _graph_initial_state(k):
    inputs = k.Input((None, NUM_INPUTS))
    out, h, c = k.layers.LSTM(4, return_sequences=True, return_state=True)(inputs)
    return k.Model(inputs, k.layers.LSTM(4, return_sequences=True)(out, initial_state=[h, c]))


def _flip_between(k):
    inputs = k.Input((None, NUM_INPUTS))
    h = k.layers.LSTM(4, return_sequences=True)(inputs)
    return k.Model(inputs, k.layers.LSTM(4, return_sequences=True)(k.ops.flip(h, axis=1)))


REFUSED = {
    "go_backwards with StackedRNNCells": (lambda k: built(k.layers.RNN(k.layers.StackedRNNCells(
        [k.layers.GRUCell(4), k.layers.GRUCell(4)]), return_sequences=True, go_backwards=True)),
        "go_backwards=True"),
    "go_backwards in one layer of two": (lambda k: _sequential(
        k, k.layers.GRU(4, return_sequences=True, go_backwards=True), k.layers.GRU(4, return_sequences=True)),
        "'reverse': \\[True, False\\]"),
    "merge modes that differ": (lambda k: _sequential(
        k, k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True), merge_mode="sum"),
        k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True))), "'merge_mode': \\['sum', 'concat'\\]"),
    "backward_layer reading forward": (lambda k: built(k.layers.Bidirectional(
        k.layers.LSTM(4, return_sequences=True, go_backwards=True),
        backward_layer=k.layers.LSTM(4, return_sequences=True))), "go_backwards"),
    "backward_layer other size": (lambda k: built(k.layers.Bidirectional(
        k.layers.GRU(3, return_sequences=True),
        backward_layer=k.layers.GRU(4, return_sequences=True, go_backwards=True))),
        "per-direction hidden sizes"),
    "backward_layer other activation": (lambda k: built(k.layers.Bidirectional(
        k.layers.SimpleRNN(3, return_sequences=True),
        backward_layer=k.layers.SimpleRNN(3, activation="relu", return_sequences=True, go_backwards=True))),
        "not the mirror"),
    "merge_mode None": (lambda k: built(k.layers.Bidirectional(k.layers.LSTM(4, return_sequences=True),
                                                               merge_mode=None)), "merge_mode=None"),
    "masking zero_output_for_mask": (lambda k: _sequential(k, k.layers.Masking(), k.layers.LSTM(
        4, return_sequences=True, zero_output_for_mask=True)), "zero_output_for_mask=True"),
    "masking go_backwards x2": (lambda k: _sequential(
        k, k.layers.Masking(), k.layers.GRU(4, return_sequences=True, go_backwards=True),
        k.layers.GRU(4, return_sequences=True, go_backwards=True)), "Masking.*before 2 go_backwards"),
    "masking after a recurrent layer": (lambda k: _sequential(
        k, k.layers.LSTM(4, return_sequences=True), k.layers.Masking(), k.layers.LSTM(4)),
        "Masking.*after a recurrent layer"),
    "dense between": (lambda k: _sequential(k, k.layers.LSTM(4, return_sequences=True), k.layers.Dense(4),
                                            k.layers.LSTM(4)), "'dense.*' \\(Dense\\) between recurrent"),
    "dense before": (lambda k: _sequential(k, k.layers.Dense(4), k.layers.LSTM(4)), "Dense.*before"),
    "dense head": (_head, "Dense.*after the recurrent stack"),
    "embedding mask_zero": (lambda k: randomized(k.Sequential([
        k.Input((None,), dtype="int32"), k.layers.Embedding(10, NUM_INPUTS, mask_zero=True),
        k.layers.LSTM(4)])), r"Embedding.*mask_zero.*mask=tokens != 0"),
    "recurrent_activation relu": (lambda k: built(k.layers.LSTM(4, recurrent_activation="relu")),
                                  "recurrent_activation='relu'"),
    "lstm selu": (lambda k: built(k.layers.LSTM(4, activation="selu")), "activation='selu'"),
    "simple_rnn linear": (lambda k: built(k.layers.SimpleRNN(4, activation=None)), "activation='linear'"),
    "repeat_vector between": (lambda k: _sequential(k, k.layers.LSTM(4), k.layers.RepeatVector(3),
                                                    k.layers.LSTM(4)), "RepeatVector"),
    "stacked cells in bidirectional": (lambda k: built(k.layers.Bidirectional(k.layers.RNN(
        k.layers.StackedRNNCells([k.layers.GRUCell(4), k.layers.GRUCell(4)]), return_sequences=True))),
        "StackedRNNCells"),
    "mixed precision": (lambda k: built(k.layers.GRU(4, dtype="mixed_float16")), "dtype policy"),
    "dropout after the stack": (lambda k: _sequential(k, k.layers.LSTM(4), k.layers.Dropout(0.5)),
                                "Dropout.*outside the gaps"),
    "dropout noise_shape": (lambda k: _sequential(
        k, k.layers.LSTM(4, return_sequences=True), k.layers.Dropout(0.5, noise_shape=(None, 1, 4)),
        k.layers.LSTM(4)), "noise_shape"),
    "subclassed model": (_subclassed, "subclassed"),
    "initial_state from the graph": (_graph_initial_state, "takes 3 graph tensors"),
    "op between layers": (_flip_between, "operation"),
    "bidirectional and not": (lambda k: _sequential(k, k.layers.LSTM(4, return_sequences=True),
                                                    k.layers.Bidirectional(k.layers.LSTM(4))),
                              "Bidirectional"),
}


# Keras Masking before the stack: exact with multirnn.forward's mask= (Keras' semantics); load proves
# each on probes with masked first/last steps, holes and a fully masked sequence (verify.probe_mask).
MASKED = {
    "masking lstm": lambda k: _sequential(k, k.layers.Masking(0.0), k.layers.LSTM(4, return_sequences=True)),
    "masking bidirectional gru": lambda k: _sequential(
        k, k.layers.Masking(0.0), k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True))),
    "masking go_backwards": lambda k: _sequential(
        k, k.layers.Masking(-1.0), k.layers.LSTM(4, return_sequences=True, go_backwards=True)),
    "masking lstm return_sequences=False": lambda k: _sequential(k, k.layers.Masking(0.0), k.layers.LSTM(4)),
    "masking bidirectional return_sequences=False": lambda k: _sequential(
        k, k.layers.Masking(0.0), k.layers.Bidirectional(k.layers.LSTM(4), merge_mode="sum")),
    "masking stack with dropout": lambda k: _sequential(
        k, k.layers.Masking(0.0), k.layers.SimpleRNN(4, return_sequences=True), k.layers.Dropout(0.3),
        k.layers.SimpleRNN(4, return_sequences=True)),
}


@pytest.mark.parametrize("case", sorted(MASKED))
def test_masked_exact(keras, case):
    """Proven by load; then Keras on a mask with holes and multirnn.forward(mask=loaded.mask_for(x))."""
    obj = MASKED[case](keras)
    loaded = load(obj)
    assert loaded.verification is not None and loaded.mask_value is not None
    with pytest.raises(ValueError, match="mask=loaded.mask_for"):
        model, params = loaded  # (model, params) alone would count the masked steps
    x = np.random.default_rng(7).normal(size=(3, 6, NUM_INPUTS)).astype("float32")
    keep = np.array([[True, False, True, True, False, True], [False, True, True, False, True, False],
                     [True] * 6])
    x[~keep] = loaded.mask_value
    np.testing.assert_array_equal(loaded.mask_for(x), keep)
    model = loaded.model
    out, state = multirnn.forward(model, {k: v.astype(np.float64) for k, v in loaded.params.items()},
                                  x.astype(np.float64), mask=keep)
    if loaded.run.outputs == "last":
        out = last_outputs(model, state, keep)
    assert_close(keras_output(obj, x), out, "float32", f"keras vs multirnn.forward(mask=) for {case}")


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(keras, case):
    make, match = REFUSED[case]
    with pytest.raises(UnrepresentableError, match=match):
        load(make(keras))


def test_return_sequences_false_in_the_middle_of_a_list(keras):
    layers = [built(keras.layers.LSTM(4)), keras.layers.LSTM(4)]
    layers[1].build((None, None, 4))
    with pytest.raises(UnrepresentableError, match="return_sequences=False"):
        pkeras.infer_keras_spec(layers)


def test_flags_must_agree_with_the_config(keras):
    layer = built(keras.layers.SimpleRNN(4, activation="relu", return_sequences=True))
    with pytest.raises(ValueError, match="nonlinearity='tanh' disagrees"):
        load(layer, nonlinearity="tanh")
    with pytest.raises(ValueError, match="batch_first=False disagrees"):
        load(layer, batch_first=False)


# ---- files ----

def test_keras_file_round_trip(keras, tmp_path):
    seq = _sequential(keras, keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True)),
                      keras.layers.Bidirectional(keras.layers.GRU(4)))
    seq.save(tmp_path / "m.keras")
    loaded = load(tmp_path / "m.keras")
    assert loaded.verification is not None and loaded.run.outputs == "last"
    live = load(seq)
    assert loaded.model == live.model
    for name in live.params:
        np.testing.assert_array_equal(loaded.params[name], live.params[name])


def _legacy_h5(keras, path, layer):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _sequential(keras, layer).save(path)  # Keras 3 still writes the legacy full-model HDF5
    import h5py

    with h5py.File(path, "r") as f:
        assert "model_config" in f.attrs
    return path


def _written_by(path, keras_version):
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = keras_version
    return path


def test_legacy_h5_config_is_honoured(keras, tmp_path):
    hard = _legacy_h5(keras, tmp_path / "hard.h5", keras.layers.LSTM(4, recurrent_activation="hard_sigmoid"))
    with pytest.raises(ValueError, match="gate_activation='sigmoid' disagrees"):
        load(hard, gate_activation="sigmoid")  # flags cannot override the config
    loaded = load(hard)  # written by Keras 3: its own hard_sigmoid, proven by running it
    assert loaded.model.gate_activation == "hard_sigmoid" and loaded.verification is not None
    relu_lstm = _legacy_h5(keras, tmp_path / "relu_lstm.h5", keras.layers.LSTM(4, activation="relu"))
    assert load(relu_lstm).model.nonlinearity == "relu"
    relu = _legacy_h5(keras, tmp_path / "relu.h5", keras.layers.SimpleRNN(4, activation="relu",
                                                                          return_sequences=True))
    with pytest.raises(ValueError, match="nonlinearity='tanh' disagrees"):
        load(relu, nonlinearity="tanh")
    loaded = load(relu)
    assert loaded.model.nonlinearity == "relu" and loaded.verification is not None


def test_keras2_h5_hard_sigmoid_is_the_legacy_slope_and_not_claimed_verified(keras, tmp_path):
    """Keras 2 wrote hard_sigmoid meaning clip(0.2·x + 0.5, 0, 1); Keras 3 loads the name as its own
    relu6(x + 3) / 6, so running the file here cannot prove what it meant."""
    path = _written_by(_legacy_h5(keras, tmp_path / "k2.h5", keras.layers.LSTM(
        4, recurrent_activation="hard_sigmoid", return_sequences=True)), "2.15.0")
    loaded = load(path)
    assert loaded.model.gate_activation == "hard_sigmoid_legacy"
    assert loaded.verification is None and loaded.run is None
    assert any("Keras 3 itself would load it with slope 1/6" in note for note in loaded.notes)
    assert any("not verified" in note and "Keras 2.15.0" in note for note in loaded.notes)
    keras3 = load(_written_by(path, "3.15.1"))  # the same file, as Keras 3 means it
    assert keras3.model.gate_activation == "hard_sigmoid" and keras3.verification is not None
    for name in keras3.params:
        np.testing.assert_array_equal(loaded.params[name], keras3.params[name])
    # a Keras 2 file without hard_sigmoid means what Keras 3 computes: still proven
    plain = _written_by(_legacy_h5(keras, tmp_path / "k2_plain.h5", keras.layers.GRU(4)), "2.15.0")
    assert load(plain).verification is not None


def test_keras_export_of_gate_options(keras):
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", gate_activation="hard_sigmoid", nonlinearity="relu",
                                   batch_first=True)
    (layer,) = pkeras.keras_layers(model, multirnn.init_params(model, 0))
    assert (layer.cell.recurrent_activation.__name__, layer.cell.activation.__name__) == ("hard_sigmoid", "relu")
    assert load(layer).model == model
    legacy = multirnn.RecurrentSpec(3, 4, cell="gru", gate_activation="hard_sigmoid_legacy")
    with pytest.raises(UnrepresentableError, match="gate_activation='hard_sigmoid_legacy'"):
        pkeras.keras_layers(legacy, multirnn.init_params(legacy, 0))



def test_keras_export_of_directions(keras):
    """reverse with keep_order=False is go_backwards; merge modes are Bidirectional's."""
    for fields in (dict(reverse=True, keep_order=False, num_layers=2),
                   dict(bidirectional=True, merge_mode="ave", num_layers=2)):
        model = multirnn.RecurrentSpec(3, 4, cell="lstm", batch_first=True, **fields)
        net = pkeras.keras_model(model, multirnn.init_params(model, 0))
        assert load(net).model == model
    aligned = multirnn.RecurrentSpec(3, 4, cell="gru", reverse=True)
    with pytest.raises(UnrepresentableError, match="keep_order=True"):
        pkeras.keras_layers(aligned, multirnn.init_params(aligned, 0))


def test_keras_export_of_a_projection_is_refused(keras):
    """Keras' LSTM has no projection of its hidden state (torch's proj_size)."""
    model = multirnn.RecurrentSpec(3, 5, cell="lstm", proj_size=2)
    with pytest.raises(UnrepresentableError, match="proj_size=2: the Keras LSTM has no projection"):
        pkeras.keras_layers(model, multirnn.init_params(model, 0))


def _two_lstm_weights(keras, tmp_path):
    seq = _sequential(keras, keras.layers.LSTM(4, return_sequences=True),
                      keras.layers.LSTM(4, return_sequences=True))
    seq.save_weights(tmp_path / "two.weights.h5")
    return seq, tmp_path / "two.weights.h5"


def test_weights_file_must_match_the_spec(keras, tmp_path):
    seq, path = _two_lstm_weights(keras, tmp_path)
    spec = {"cell": "lstm", "num_inputs": NUM_INPUTS, "num_hiddens": 4}
    with pytest.raises(ValueError, match=r"does not account for: \['layers/lstm_1'\]"):
        load(path, num_layers=1, **spec)
    with pytest.raises(ValueError, match="lacks"):
        load(path, num_layers=3, **spec)
    loaded = load(path, num_layers=2, **spec)
    assert loaded.run is None and any("not verified" in note for note in loaded.notes)
    live = load(seq)
    for name in live.params:
        np.testing.assert_array_equal(loaded.params[name], live.params[name])


def test_cli_refuses_a_leftover_layer(keras, tmp_path, capsys):
    _, path = _two_lstm_weights(keras, tmp_path)
    args = ["convert", str(path), "-o", str(tmp_path / "out.npz"), "--cell", "lstm", "--inputs",
            str(NUM_INPUTS), "--hidden", "4"]
    assert main(args + ["--layers", "1"]) == 2
    assert "layers/lstm_1" in capsys.readouterr().err
    assert main(args + ["--layers", "2"]) == 0


def test_legacy_weights_only_h5_layer_count(keras, tmp_path):
    """A Keras 2 style ``save_weights("x.h5")`` file (layer_names, no model_config): loaded by topology,
    and its layer count must be the spec's."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    seq, _ = _two_lstm_weights(keras, tmp_path)
    with h5py.File(tmp_path / "legacy.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, seq)
    spec = {"cell": "lstm", "num_inputs": NUM_INPUTS, "num_hiddens": 4}
    with pytest.raises(ValueError, match=r"2 layers with weights \[.*\], but the spec .* has 1"):
        load(tmp_path / "legacy.h5", num_layers=1, **spec)
    loaded, live = load(tmp_path / "legacy.h5", num_layers=2, **spec), load(seq)
    for name in live.params:
        np.testing.assert_array_equal(loaded.params[name], live.params[name])


@pytest.mark.parametrize("destination", ["m.npz", "m.onnx", "m.pt"])
def test_convert_refuses_to_drop_a_mask(keras, tmp_path, capsys, destination):
    """No written format keeps Masking's rule (ONNX's sequence_lens is torch-style suffix padding:
    zeros after each sequence, not Keras' repeated output), so `multirnn convert` refuses rather than
    write weights that would count the masked steps."""
    _sequential(keras, keras.layers.Masking(0.0), keras.layers.LSTM(4, return_sequences=True)).save(
        tmp_path / "m.keras")
    assert main(["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / destination)]) == 1
    assert "holds a mask" in capsys.readouterr().err
    assert not (tmp_path / destination).exists()


def test_verify_tells_a_masked_model_from_an_unmasked_one(keras, tmp_path, capsys):
    """Same weights, but one counts every step: on the probes (no step equal to the mask value) the
    outputs agree, so `multirnn verify` compares the masks themselves."""
    masked = _sequential(keras, keras.layers.Masking(0.0), keras.layers.LSTM(4, return_sequences=True))
    plain = _sequential(keras, keras.layers.LSTM(4, return_sequences=True))
    plain.set_weights(masked.get_weights())
    masked.save(tmp_path / "masked.keras")
    plain.save(tmp_path / "plain.keras")
    assert main(["verify", str(tmp_path / "masked.keras"), str(tmp_path / "plain.keras")]) == 1
    assert "the masks differ: mask_value 0.0 and None" in capsys.readouterr().out
