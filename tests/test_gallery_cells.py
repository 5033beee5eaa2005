"""A gallery of cells advanced one step at a time -- torch nn.*Cell, Keras *Cell, bare Flax linen cells,
Gluon rnn.*Cell -- alone and hand-stacked as a list, through ``multirnn.port.load``: each converts
exactly, proven by load (a Python loop of the framework's own cell calls) AND by running that loop again
on other inputs from a random state against ``multirnn.forward`` on the NumPy float64 reference; or it
is refused by name with ``UnrepresentableError``."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, load_backend, random_state, to_float64

import multirnn
import multirnn.port
from multirnn.port._common import UnrepresentableError
from multirnn.state import flatten_state


def assert_cells_exact(source, layers=1, **kwargs):
    loaded = multirnn.port.load(source, **kwargs)
    assert loaded.verification is not None, "the source loop must have run"
    model, dtype = loaded.model, loaded.verification.dtype
    assert model.num_layers == layers and not model.bidirectional
    inputs = np.random.default_rng(7).normal(size=(6, 2, model.num_inputs))
    state = random_state(model, 2, seed=8, dtype=dtype)
    out, final = loaded.run.call(inputs.astype(dtype), state)  # the user's loop of cell calls
    params64 = {k: v.astype(np.float64) for k, v in loaded.params.items()}
    want_out, want_state = multirnn.forward(model, params64, inputs, to_float64(state))
    assert_close(out, want_out, dtype, "outputs")
    for got, want in zip(flatten_state(model, final), flatten_state(model, want_state)):
        for a, b in zip(got, want):
            assert_close(a, b, dtype, "final state")
    return loaded


# ---- torch ----

def _torch():
    load_backend("torch")
    import torch

    torch.manual_seed(0)
    return torch


TORCH_EXACT = {
    "RNNCell tanh": lambda nn: nn.RNNCell(3, 4),
    "RNNCell relu": lambda nn: nn.RNNCell(3, 4, nonlinearity="relu"),
    "GRUCell": lambda nn: nn.GRUCell(3, 4),
    "LSTMCell": lambda nn: nn.LSTMCell(3, 4),
    "LSTMCell bias=False": lambda nn: nn.LSTMCell(3, 4, bias=False),
    "GRUCell float64": lambda nn: nn.GRUCell(3, 4).double(),
    "2 GRUCells": lambda nn: [nn.GRUCell(3, 4), nn.GRUCell(4, 4)],
    "3 LSTMCells": lambda nn: [nn.LSTMCell(3, 5), nn.LSTMCell(5, 5), nn.LSTMCell(5, 5)],
    "2 RNNCells relu": lambda nn: [nn.RNNCell(3, 4, nonlinearity="relu"), nn.RNNCell(4, 4, nonlinearity="relu")],
}


@pytest.mark.parametrize("row", sorted(TORCH_EXACT))
def test_torch_cells_exact(row):
    torch = _torch()
    source = TORCH_EXACT[row](torch.nn)
    assert_cells_exact(source, layers=len(source) if isinstance(source, list) else 1)


def _torch_refusals(nn):
    class Doubled(nn.GRUCell):
        def forward(self, input, hx=None):  # noqa: A002
            return 2 * super().forward(input, hx)

    hooked = nn.GRUCell(3, 4)
    hooked.register_forward_hook(lambda *args: None)
    return {
        "overridden forward": (Doubled(3, 4), "overrides forward"),
        "forward hook": (hooked, "forward hooks"),
        "half precision": (nn.GRUCell(3, 4).half(), "dtype"),
        "widths do not chain": ([nn.GRUCell(3, 4), nn.GRUCell(5, 4)], "cell 1 .* takes 5 inputs but cell 0 gives 4"),
        "mixed cells": ([nn.GRUCell(3, 4), nn.LSTMCell(4, 4)], "cell 1 .* has cell='lstm' but cell 0 has 'gru'"),
        "mixed hidden sizes": ([nn.GRUCell(3, 4), nn.GRUCell(4, 5)], "has num_hiddens=5"),
        "mixed nonlinearity": ([nn.RNNCell(3, 4), nn.RNNCell(4, 4, nonlinearity="relu")], "nonlinearity='relu'"),
        "mixed dtype": ([nn.GRUCell(3, 4), nn.GRUCell(4, 4).double()], "computes in float64"),
    }


@pytest.mark.parametrize("row", ["overridden forward", "forward hook", "half precision", "widths do not chain",
                                 "mixed cells", "mixed hidden sizes", "mixed nonlinearity", "mixed dtype"])
def test_torch_cells_refused_by_name(row):
    torch = _torch()
    source, match = _torch_refusals(torch.nn)[row]
    with pytest.raises(UnrepresentableError, match=match):
        multirnn.port.load(source)


@pytest.mark.parametrize("cls", ["RNNCell", "GRUCell", "LSTMCell"])
def test_torch_cell_state_dicts(cls, tmp_path):
    """A cell's state_dict has layer 0's keys without _l0: infer_torch_spec, from_torch and .pt files."""
    torch = _torch()
    from multirnn.port.torch import from_torch, infer_torch_spec

    cell = getattr(torch.nn, cls)(3, 4)
    known = {"nonlinearity": "tanh"} if cls == "RNNCell" else {}
    model = infer_torch_spec(cell.state_dict(), **known)
    assert (model.cell, model.num_inputs, model.num_hiddens, model.num_layers) == (cls[:-4].lower(), 3, 4, 1)
    proven = multirnn.port.load(cell)
    params = from_torch(model, cell.state_dict())
    for name, value in proven.params.items():
        np.testing.assert_array_equal(params[name], value)
    torch.save(cell.state_dict(), tmp_path / "cell.pt")
    from_file = multirnn.port.load(str(tmp_path / "cell.pt"), **known)
    assert from_file.model == model and from_file.run is None


def test_a_list_of_two_frameworks_is_refused():
    torch = _torch()
    load_backend("tensorflow")
    import keras

    with pytest.raises(TypeError, match="a list of layers is read for"):
        multirnn.port.load([torch.nn.GRUCell(3, 4), keras.layers.GRUCell(4)])


# ---- Keras ----

def _keras_cell(make, inputs, seed=0):
    """A built Keras cell with random weights (biases too: Keras starts them at zero)."""
    cell = make()
    cell.build((None, inputs))
    rng = np.random.default_rng(seed)
    cell.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in cell.get_weights()])
    return cell


def _keras():
    load_backend("tensorflow")
    import keras

    return keras


KERAS_EXACT = {
    "SimpleRNNCell tanh": lambda L: [(lambda: L.SimpleRNNCell(4), 3)],
    "SimpleRNNCell relu": lambda L: [(lambda: L.SimpleRNNCell(4, activation="relu"), 3)],
    "GRUCell reset_after": lambda L: [(lambda: L.GRUCell(4), 3)],
    "GRUCell reset_before": lambda L: [(lambda: L.GRUCell(4, reset_after=False), 3)],
    "LSTMCell": lambda L: [(lambda: L.LSTMCell(4), 3)],
    "LSTMCell no bias": lambda L: [(lambda: L.LSTMCell(4, use_bias=False), 3)],
    "GRUCell dropout (training only)": lambda L: [(lambda: L.GRUCell(4, dropout=0.3, recurrent_dropout=0.2), 3)],
    "GRUCell float64": lambda L: [(lambda: L.GRUCell(4, dtype="float64"), 3)],
    "2 LSTMCells": lambda L: [(lambda: L.LSTMCell(4), 3), (lambda: L.LSTMCell(4), 4)],
    "2 GRUCells reset_before": lambda L: [(lambda: L.GRUCell(5, reset_after=False), 3),
                                          (lambda: L.GRUCell(5, reset_after=False), 5)],
}


@pytest.mark.parametrize("row", sorted(KERAS_EXACT))
def test_keras_cells_exact(row):
    keras = _keras()
    cells = [_keras_cell(make, width, seed) for seed, (make, width) in enumerate(KERAS_EXACT[row](keras.layers))]
    loaded = assert_cells_exact(cells if len(cells) > 1 else cells[0], layers=len(cells))
    if "dropout" in row:
        assert any("dropout=0.3 is ignored" in note for note in loaded.notes)


@pytest.mark.parametrize("cell_cls, layer_cls, kwargs", [
    ("SimpleRNNCell", "SimpleRNN", {}), ("GRUCell", "GRU", {}), ("GRUCell", "GRU", {"reset_after": False}),
    ("LSTMCell", "LSTM", {})])
def test_keras_rnn_of_a_cell_after_another_recurrent_layer(cell_cls, layer_cls, kwargs):
    """keras.layers.RNN(cell) after a recurrent layer: read by multirnn.port.keras as a 2-layer stack."""
    keras = _keras()
    L = keras.layers
    net = keras.Sequential([keras.Input((None, 3)), getattr(L, layer_cls)(4, return_sequences=True, **kwargs),
                            L.RNN(getattr(L, cell_cls)(4, **kwargs), return_sequences=True)])
    rng = np.random.default_rng(0)
    net.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in net.get_weights()])
    loaded = multirnn.port.load(net)
    assert loaded.model.num_layers == 2 and loaded.verification is not None
    inputs = rng.normal(size=(2, 6, 3))
    want, _ = multirnn.forward(loaded.model, {k: v.astype(np.float64) for k, v in loaded.params.items()}, inputs)
    assert_close(np.asarray(net(inputs.astype("float32"))), want, "float32", "outputs")


def test_keras_cells_refused_by_name():
    keras = _keras()
    L = keras.layers
    with pytest.raises(UnrepresentableError, match="recurrent_activation"):
        multirnn.port.load(_keras_cell(lambda: L.LSTMCell(4, recurrent_activation="tanh"), 3))
    with pytest.raises(UnrepresentableError, match="has reset_after=False but cell 0 has True"):
        multirnn.port.load([_keras_cell(lambda: L.GRUCell(4), 3),
                            _keras_cell(lambda: L.GRUCell(4, reset_after=False), 4)])
    with pytest.raises(UnrepresentableError, match="dtype policy"):
        multirnn.port.load(_keras_cell(lambda: L.GRUCell(4, dtype="mixed_float16"), 3))
    with pytest.raises(ValueError, match="is not built"):
        multirnn.port.load(L.GRUCell(4))


# ---- Flax linen ----

def _flax_case(cell, inputs, seed=0, dtype="float32"):
    """A linen cell's variables, every array random (flax starts biases at zero)."""
    load_backend("jax")
    import jax
    import jax.numpy as jnp

    from multirnn.backends.jax_backend import precision

    with precision(dtype):
        x = jnp.ones((1, inputs), dtype)
        variables = cell.init(jax.random.PRNGKey(seed), cell.initialize_carry(jax.random.PRNGKey(1), x.shape), x)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: rng.normal(scale=0.5, size=a.shape).astype(a.dtype), variables)


def _linen():
    load_backend("jax")
    import flax.linen as nn

    return nn


FLAX_EXACT = {
    "SimpleCell": lambda nn: [(nn.SimpleCell(4), 3)],
    "SimpleCell relu": lambda nn: [(nn.SimpleCell(4, activation_fn=nn.relu), 3)],
    "GRUCell": lambda nn: [(nn.GRUCell(4), 3)],
    "LSTMCell": lambda nn: [(nn.LSTMCell(4), 3)],
    "OptimizedLSTMCell": lambda nn: [(nn.OptimizedLSTMCell(4), 3)],
    "2 GRUCells": lambda nn: [(nn.GRUCell(4), 3), (nn.GRUCell(4), 4)],
    "2 LSTMCells": lambda nn: [(nn.LSTMCell(5), 3), (nn.LSTMCell(5), 5)],
}


@pytest.mark.parametrize("row", sorted(FLAX_EXACT))
def test_flax_cells_exact(row):
    nn = _linen()
    pairs = FLAX_EXACT[row](nn)
    cells = [cell for cell, _ in pairs]
    variables = [_flax_case(cell, width, seed) for seed, (cell, width) in enumerate(pairs)]
    if len(cells) == 1:
        assert_cells_exact(cells[0], variables=variables[0])
        assert_cells_exact(cells[0].bind(variables[0]))  # a bound cell holds its own
    else:
        assert_cells_exact(cells, layers=len(cells), variables=variables)


def test_flax_float64_cell():
    nn = _linen()
    import jax.numpy as jnp

    cell = nn.GRUCell(4, dtype=jnp.float64, param_dtype=jnp.float64)
    loaded = assert_cells_exact(cell, variables=_flax_case(cell, 3, dtype="float64"))
    assert loaded.verification.dtype == "float64"


def test_flax_cells_refused_by_name():
    nn = _linen()
    with pytest.raises(UnrepresentableError, match="MGUCell"):
        multirnn.port.load(nn.MGUCell(4), variables=_flax_case(nn.MGUCell(4), 3))
    with pytest.raises(UnrepresentableError, match="residual"):
        cell = nn.SimpleCell(4, residual=True)
        multirnn.port.load(cell, variables=_flax_case(cell, 3))
    with pytest.raises(UnrepresentableError, match="takes 5 inputs"):
        multirnn.port.load([nn.GRUCell(4), nn.GRUCell(4)],
                           variables=[_flax_case(nn.GRUCell(4), 3), _flax_case(nn.GRUCell(4), 5)])
    with pytest.raises(ValueError, match="one entry per cell"):
        multirnn.port.load([nn.GRUCell(4), nn.GRUCell(4)], variables=[_flax_case(nn.GRUCell(4), 3)])
    with pytest.raises(ValueError, match="holds no weights"):
        multirnn.port.load(nn.GRUCell(4))


# ---- Gluon ----

def _gluon():
    load_backend("mxnet")
    import mxnet as mx

    return mx


def _gluon_cell(cell, seed=0, dtype="float32"):
    mx = _gluon()
    cell.initialize()
    if dtype != "float32":
        cell.cast(dtype)
    rng = np.random.default_rng(seed)
    for param in cell.collect_params().values():
        param.set_data(mx.nd.array(rng.normal(scale=0.5, size=param.shape), dtype=dtype))
    return cell


GLUON_EXACT = {
    "RNNCell tanh": lambda rnn: [rnn.RNNCell(4, input_size=3)],
    "RNNCell relu": lambda rnn: [rnn.RNNCell(4, activation="relu", input_size=3)],
    "GRUCell": lambda rnn: [rnn.GRUCell(4, input_size=3)],
    "LSTMCell": lambda rnn: [rnn.LSTMCell(4, input_size=3)],
    "2 GRUCells": lambda rnn: [rnn.GRUCell(4, input_size=3), rnn.GRUCell(4, input_size=4)],
}


@pytest.mark.parametrize("row", sorted(GLUON_EXACT))
def test_gluon_cells_exact(row):
    mx = _gluon()
    cells = [_gluon_cell(cell, seed) for seed, cell in enumerate(GLUON_EXACT[row](mx.gluon.rnn))]
    assert_cells_exact(cells if len(cells) > 1 else cells[0], layers=len(cells))


def test_gluon_sequential_cell_and_float64():
    mx = _gluon()
    rnn = mx.gluon.rnn
    stack = rnn.SequentialRNNCell()
    stack.add(rnn.LSTMCell(4, input_size=3))
    stack.add(rnn.LSTMCell(4, input_size=4))
    assert_cells_exact(_gluon_cell(stack), layers=2)
    loaded = assert_cells_exact(_gluon_cell(rnn.GRUCell(4, input_size=3), dtype="float64"))
    assert loaded.verification.dtype == "float64"


def test_gluon_cells_refused_by_name():
    mx = _gluon()
    rnn = mx.gluon.rnn
    with pytest.raises(UnrepresentableError, match="ZoneoutCell .* is not representable"):
        multirnn.port.load(_gluon_cell(rnn.ZoneoutCell(rnn.GRUCell(4, input_size=3), zoneout_outputs=0.5)))
    with pytest.raises(UnrepresentableError, match="activation='softsign'"):
        multirnn.port.load(_gluon_cell(rnn.RNNCell(4, activation="softsign", input_size=3)))
    with pytest.raises(UnrepresentableError, match="recurrent_activation='tanh'"):
        multirnn.port.load(_gluon_cell(rnn.LSTMCell(4, recurrent_activation="tanh", input_size=3)))
    with pytest.raises(UnrepresentableError, match="has cell='lstm' but cell 0 has 'gru'"):
        multirnn.port.load([_gluon_cell(rnn.GRUCell(4, input_size=3)), _gluon_cell(rnn.LSTMCell(4, input_size=4))])
