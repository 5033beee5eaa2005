"""A gallery of Flax recurrent modules, each built with flax here and either converted exactly or refused
by name (issue 12: no public entry point returns weights that compute something other than the source).

Exact cases go through ``multirnn.port.load(module, variables=...)``, which proves the conversion by
running the module, AND compare flax's own output with ``multirnn.forward`` here (float32, 1e-5
relative). Refused cases must raise ``UnrepresentableError`` naming the attribute.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, load_backend

import multirnn
from multirnn.port import UnrepresentableError, load
from multirnn.port import flax as pflax
from multirnn.port import flax_nnx as pnnx
from multirnn.port.verify import prove

INPUTS, HIDDEN, STEPS, BATCH = 3, 4, 5, 2
LINEN_CELLS = ("SimpleCell", "GRUCell", "LSTMCell", "OptimizedLSTMCell")
NNX_CELLS = ("SimpleCell", "GRUCell", "LSTMCell", "OptimizedLSTMCell")
CELL_KIND = {"SimpleCell": "rnn", "GRUCell": "gru", "LSTMCell": "lstm", "OptimizedLSTMCell": "lstm"}


def inputs_for(time_major=False, seed=0, width=INPUTS):
    shape = (STEPS, BATCH, width) if time_major else (BATCH, STEPS, width)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def randomized(tree, seed=1):
    """Every array replaced by seeded noise (nonzero biases, weights that bend the nonlinearities)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(scale=0.6, size=a.shape), a.dtype), tree)


def linen_variables(module, x, seed=1):
    import jax

    return randomized(module.init(jax.random.key(0), x), seed)


def assert_matches_reference(loaded, flax_outputs, x):
    """flax's own outputs against multirnn.forward of the converted weights (NumPy float64 reference)."""
    params64 = {k: np.asarray(v, np.float64) for k, v in loaded.params.items()}
    reference, _ = multirnn.forward(loaded.model, params64, x.astype(np.float64))
    assert_close(np.asarray(flax_outputs), reference, "float32", "flax vs multirnn.forward")


def check_linen_exact(module, x, **expected_spec):
    loaded = load(module, variables=(variables := linen_variables(module, x)))
    assert loaded.verification is not None and loaded.verification.max_error <= 1e-5
    for field, value in expected_spec.items():
        assert getattr(loaded.model, field) == value, field
    out = module.apply(variables, x)
    assert_matches_reference(loaded, out[1] if isinstance(out, tuple) else out, x)
    return loaded


# ---- linen: exact ----

@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell_name", LINEN_CELLS)
def test_linen_every_cell_converts_exactly(cell_name, bidirectional):
    load_backend("jax")
    import flax.linen as nn

    cell = getattr(nn, cell_name)
    module = nn.Bidirectional(nn.RNN(cell(HIDDEN)), nn.RNN(cell(HIDDEN))) if bidirectional \
        else nn.RNN(cell(HIDDEN))
    check_linen_exact(module, inputs_for(), cell=CELL_KIND[cell_name], bidirectional=bidirectional,
                      num_layers=1, num_inputs=INPUTS, num_hiddens=HIDDEN, batch_first=True)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_linen_two_layer_sequential_converts_exactly(bidirectional):
    load_backend("jax")
    import flax.linen as nn

    def layer():
        rnn = lambda: nn.RNN(nn.GRUCell(HIDDEN))  # noqa: E731
        return nn.Bidirectional(rnn(), rnn()) if bidirectional else rnn()

    check_linen_exact(nn.Sequential([layer(), layer()]), inputs_for(), cell="gru", num_layers=2,
                      bidirectional=bidirectional)


def test_linen_simple_cell_relu_is_nonlinearity_relu():
    load_backend("jax")
    import flax.linen as nn

    check_linen_exact(nn.RNN(nn.SimpleCell(HIDDEN, activation_fn=nn.relu)), inputs_for(), cell="rnn",
                      nonlinearity="relu")


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("keep_order", [False, True])
def test_linen_reverse_is_spec_reverse(keep_order, layers):
    """nn.RNN(reverse=True): last step to first; keep_order=False (flax's default) hands the outputs on
    last step first, so a second reversed layer reads them in that order."""
    load_backend("jax")
    import flax.linen as nn

    rnns = [nn.RNN(nn.LSTMCell(HIDDEN), reverse=True, keep_order=keep_order) for _ in range(layers)]
    check_linen_exact(rnns[0] if layers == 1 else nn.Sequential(rnns), inputs_for(), reverse=True,
                      keep_order=keep_order, num_layers=layers)


@pytest.mark.parametrize("cell_name", ["GRUCell", "LSTMCell", "OptimizedLSTMCell"])
def test_linen_gate_fn_and_activation_fn_are_spec_fields(cell_name):
    """gate_fn=nn.hard_sigmoid (relu6(x + 3) / 6) is gate_activation="hard_sigmoid"; activation_fn=nn.relu
    (the GRU candidate, the LSTM cell input and output) is nonlinearity="relu"."""
    load_backend("jax")
    import flax.linen as nn

    cell = getattr(nn, cell_name)
    check_linen_exact(nn.RNN(cell(HIDDEN, gate_fn=nn.hard_sigmoid)), inputs_for(),
                      gate_activation="hard_sigmoid", nonlinearity="tanh")
    check_linen_exact(nn.Bidirectional(nn.RNN(cell(HIDDEN, activation_fn=nn.relu)),
                                       nn.RNN(cell(HIDDEN, activation_fn=nn.relu))), inputs_for(),
                      gate_activation="sigmoid", nonlinearity="relu")
    both = cell(HIDDEN, gate_fn=nn.hard_sigmoid, activation_fn=nn.relu)
    check_linen_exact(nn.RNN(both), inputs_for(), gate_activation="hard_sigmoid", nonlinearity="relu")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_linen_time_major_is_batch_first_false(bidirectional):
    load_backend("jax")
    import flax.linen as nn

    module = nn.Bidirectional(nn.RNN(nn.LSTMCell(HIDDEN)), nn.RNN(nn.LSTMCell(HIDDEN)), time_major=True) \
        if bidirectional else nn.RNN(nn.LSTMCell(HIDDEN), time_major=True)
    check_linen_exact(module, inputs_for(time_major=True), batch_first=False)


def test_linen_return_carry_and_its_final_state_match():
    load_backend("jax")
    import flax.linen as nn

    module = nn.Bidirectional(nn.RNN(nn.LSTMCell(HIDDEN)), nn.RNN(nn.LSTMCell(HIDDEN)), return_carry=True)
    x = inputs_for()
    loaded = check_linen_exact(module, x)
    (fwd, bwd), _ = module.apply(linen_variables(module, x), x)
    params64 = {k: np.asarray(v, np.float64) for k, v in loaded.params.items()}
    _, state = multirnn.forward(loaded.model, params64, x.astype(np.float64))
    for (c, h), (want_h, want_c) in zip((fwd, bwd), state):  # Flax's LSTM carry is (c, h)
        assert_close(np.asarray(h), want_h, "float32", "h")
        assert_close(np.asarray(c), want_c, "float32", "c")


def test_linen_inner_rnn_flags_and_scan_options_have_no_effect():
    """Inside nn.Bidirectional the inner RNNs' reverse/keep_order/time_major are the Bidirectional's to
    set; unroll and split_rngs (of RNG streams the cells do not use) do not change the function."""
    load_backend("jax")
    import flax.linen as nn

    module = nn.Bidirectional(nn.RNN(nn.GRUCell(HIDDEN), unroll=3,
                                     split_rngs={"params": False, "dropout": True}),
                              nn.RNN(nn.GRUCell(HIDDEN), reverse=True, keep_order=False, time_major=True))
    check_linen_exact(module, inputs_for(), bidirectional=True, batch_first=True)


def test_linen_shared_forward_and_backward_rnn_reads_the_one_cell_twice():
    load_backend("jax")
    import flax.linen as nn

    rnn = nn.RNN(nn.SimpleCell(HIDDEN))
    loaded = check_linen_exact(nn.Bidirectional(rnn, rnn), inputs_for(), bidirectional=True)
    np.testing.assert_array_equal(loaded.params["fwd.W_xh"], loaded.params["bwd.W_xh"])


def test_linen_bound_module_needs_no_variables():
    load_backend("jax")
    import flax.linen as nn

    module, x = nn.RNN(nn.GRUCell(HIDDEN)), inputs_for()
    variables = linen_variables(module, x)
    loaded = load(module.bind(variables))
    assert loaded.verification is not None
    assert_matches_reference(loaded, module.apply(variables, x), x)


# ---- linen: refused by name ----

def linen_refusals():
    import flax.linen as nn

    return {
        "reverse-in-one-layer": (lambda: nn.Sequential([nn.RNN(nn.GRUCell(HIDDEN), reverse=True),
                                                        nn.RNN(nn.GRUCell(HIDDEN))]), "reverse"),
        "keep-order-differs": (lambda: nn.Sequential([
            nn.RNN(nn.GRUCell(HIDDEN), reverse=True), nn.RNN(nn.GRUCell(HIDDEN), reverse=True, keep_order=True)]),
            "keep_order"),
        "gru-gate-fn": (lambda: nn.RNN(nn.GRUCell(HIDDEN, gate_fn=nn.hard_tanh)), "gate_fn"),
        "lstm-gate-fn": (lambda: nn.RNN(nn.LSTMCell(HIDDEN, gate_fn=nn.log_sigmoid)), "gate_fn"),
        "lstm-activation-fn": (lambda: nn.RNN(nn.LSTMCell(HIDDEN, activation_fn=nn.gelu)), "activation_fn"),
        "simple-residual": (lambda: nn.RNN(nn.SimpleCell(HIDDEN, residual=True)), "residual"),
        "simple-gelu": (lambda: nn.RNN(nn.SimpleCell(HIDDEN, activation_fn=nn.gelu)), "activation_fn"),
        "merge-fn": (lambda: nn.Bidirectional(nn.RNN(nn.GRUCell(HIDDEN)), nn.RNN(nn.GRUCell(HIDDEN)),
                                              merge_fn=lambda a, b: a + b), "merge_fn"),
        "mgu-cell": (lambda: nn.RNN(nn.MGUCell(HIDDEN)), "cell"),
        "carry-init": (lambda: nn.RNN(nn.GRUCell(HIDDEN, carry_init=nn.initializers.ones)), "carry_init"),
        "bfloat16": (lambda: nn.RNN(nn.GRUCell(HIDDEN, dtype="bfloat16")), "dtype"),
        "variable-axes": (lambda: nn.RNN(nn.SimpleCell(HIDDEN), variable_axes={"params": 0},
                                         variable_broadcast=False, split_rngs={"params": True}),
                          "variable_axes"),
        "mixed-features": (lambda: nn.Sequential([nn.RNN(nn.GRUCell(HIDDEN)),
                                                  nn.RNN(nn.GRUCell(HIDDEN + 1))]), "features"),
        "mixed-cells": (lambda: nn.Sequential([nn.RNN(nn.GRUCell(HIDDEN)), nn.RNN(nn.LSTMCell(HIDDEN))]),
                        "cell"),
        "mixed-directions": (lambda: nn.Sequential([nn.RNN(nn.GRUCell(HIDDEN)), nn.Bidirectional(
            nn.RNN(nn.GRUCell(HIDDEN)), nn.RNN(nn.GRUCell(HIDDEN)))]), "bidirectional"),
        # flax itself cannot run this one (the next layer is given (carry, outputs)): weights of its twin
        "carry-mid-stack": (lambda: nn.Sequential([nn.RNN(nn.GRUCell(HIDDEN), return_carry=True),
                                                   nn.RNN(nn.GRUCell(HIDDEN))]), "return_carry",
                            lambda: nn.Sequential([nn.RNN(nn.GRUCell(HIDDEN)), nn.RNN(nn.GRUCell(HIDDEN))])),
        "dense-in-stack": (lambda: nn.Sequential([nn.RNN(nn.GRUCell(HIDDEN)), nn.Dense(HIDDEN)]), "type"),
    }


LINEN_REFUSALS = ("reverse-in-one-layer", "keep-order-differs", "gru-gate-fn", "lstm-gate-fn", "lstm-activation-fn",
                  "simple-residual", "simple-gelu", "merge-fn", "mgu-cell", "carry-init", "bfloat16",
                  "variable-axes", "mixed-features", "mixed-cells", "mixed-directions", "carry-mid-stack",
                  "dense-in-stack")


@pytest.mark.parametrize("case", LINEN_REFUSALS)
def test_linen_unrepresentable_module_is_refused_by_name(case):
    load_backend("jax")
    make, attribute, *twin = linen_refusals()[case]
    module = make()
    variables = linen_variables((twin[0] if twin else make)(), inputs_for())
    with pytest.raises(UnrepresentableError, match=attribute):
        load(module, variables=variables)


def test_linen_leftover_and_missing_arrays_are_named():
    load_backend("jax")
    import flax.linen as nn

    module, x = nn.RNN(nn.GRUCell(HIDDEN)), inputs_for()
    params = dict(linen_variables(module, x)["params"])
    extra = {**params, "head": {"kernel": np.zeros((HIDDEN, 2), np.float32)}}
    with pytest.raises(ValueError, match="head/kernel"):
        load(module, variables={"params": extra})
    cell = dict(params["cell"])
    del cell["hn"]
    with pytest.raises(ValueError, match="cell/hn/bias"):
        load(module, variables={"params": {"cell": cell}})
    with pytest.raises(ValueError, match="batch_stats"):
        load(module, variables={"params": params, "batch_stats": {"mean": np.zeros(3)}})


def test_linen_without_variables_is_an_error():
    load_backend("jax")
    import flax.linen as nn

    with pytest.raises(ValueError, match="variables="):
        load(nn.RNN(nn.GRUCell(HIDDEN)))


# ---- nnx ----

def nnx_randomize(module, seed=1):
    from flax import nnx

    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, randomized(nnx.to_pure_dict(state), seed))
    nnx.update(module, state)
    return module


def nnx_rnn(cell_name, width=INPUTS, **cell_kwargs):
    from flax import nnx

    rngs = nnx.Rngs(0)
    return nnx.RNN(getattr(nnx, cell_name)(width, HIDDEN, rngs=rngs, **cell_kwargs), rngs=rngs)


def nnx_bidirectional(cell_name, width=INPUTS, **kwargs):
    from flax import nnx

    return nnx.Bidirectional(nnx_rnn(cell_name, width), nnx_rnn(cell_name, width), rngs=nnx.Rngs(0), **kwargs)


def check_nnx_exact(module, x, **expected_spec):
    nnx_randomize(module)
    loaded = load(module)
    assert loaded.verification is not None and loaded.verification.max_error <= 1e-5
    for field, value in expected_spec.items():
        assert getattr(loaded.model, field) == value, field
    out = module(x)
    assert_matches_reference(loaded, out[1] if isinstance(out, tuple) else out, x)
    return loaded


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell_name", NNX_CELLS)
def test_nnx_every_cell_converts_exactly(cell_name, bidirectional):
    load_backend("jax")
    module = nnx_bidirectional(cell_name) if bidirectional else nnx_rnn(cell_name)
    check_nnx_exact(module, inputs_for(), cell=CELL_KIND[cell_name], bidirectional=bidirectional,
                    num_inputs=INPUTS, num_hiddens=HIDDEN)


def test_nnx_sequential_and_list_of_layers_convert_exactly():
    load_backend("jax")
    from flax import nnx

    x = inputs_for()
    check_nnx_exact(nnx.Sequential(nnx_bidirectional("LSTMCell"), nnx_bidirectional("LSTMCell", 2 * HIDDEN)),
                    x, num_layers=2, bidirectional=True)
    # a list as nnx_layers builds it (return_carry on every layer): proven by running each layer
    model = multirnn.RecurrentSpec(INPUTS, HIDDEN, cell="gru", num_layers=2)
    layers = [nnx_randomize(layer, seed) for seed, layer in enumerate(pnnx.nnx_layers(model))]
    loaded = pnnx.read(layers)
    assert prove(loaded).max_error <= 1e-5 and loaded.model.num_layers == 2
    through_the_front_door = load(layers)  # a list of nnx layers is read as one stack
    assert through_the_front_door.model == loaded.model and through_the_front_door.verification is not None
    with pytest.raises(TypeError, match="a list of layers is read for"):
        load([layers[0], object()])
    carry, out = layers[0](x)
    assert_matches_reference(loaded, layers[1](out)[1], x)


def test_nnx_relu_and_time_major():
    load_backend("jax")
    from flax import nnx

    check_nnx_exact(nnx_rnn("SimpleCell", activation_fn=nnx.relu), inputs_for(), nonlinearity="relu")
    for keep_order in (False, True):
        rnn = nnx.RNN(nnx.GRUCell(INPUTS, HIDDEN, rngs=nnx.Rngs(0)), reverse=True, keep_order=keep_order)
        check_nnx_exact(rnn, inputs_for(), reverse=True, keep_order=keep_order)
    for name in ("GRUCell", "LSTMCell", "OptimizedLSTMCell"):  # gate_fn / activation_fn: spec fields
        check_nnx_exact(nnx_rnn(name, gate_fn=nnx.hard_sigmoid, activation_fn=nnx.relu), inputs_for(),
                        gate_activation="hard_sigmoid", nonlinearity="relu")
    module = nnx_bidirectional("GRUCell", time_major=True)
    check_nnx_exact(module, inputs_for(time_major=True), batch_first=False)


def nnx_refusals():
    from flax import nnx

    return {
        "reverse-in-one-layer": (lambda: nnx.Sequential(
            nnx.RNN(nnx.GRUCell(INPUTS, HIDDEN, rngs=nnx.Rngs(0)), reverse=True), nnx_rnn("GRUCell", HIDDEN)),
            "reverse"),
        "gru-gate-fn": (lambda: nnx_rnn("GRUCell", gate_fn=nnx.hard_tanh), "gate_fn"),
        "lstm-gate-fn": (lambda: nnx_rnn("LSTMCell", gate_fn=nnx.log_sigmoid), "gate_fn"),
        "optimized-lstm-activation": (lambda: nnx_rnn("OptimizedLSTMCell", activation_fn=nnx.gelu),
                                      "activation_fn"),
        "simple-residual": (lambda: nnx_rnn("SimpleCell", residual=True), "residual"),
        "merge-fn": (lambda: nnx_bidirectional("GRUCell", merge_fn=lambda a, b: a + b), "merge_fn"),
        "bfloat16": (lambda: nnx_rnn("GRUCell", dtype="bfloat16"), "dtype"),
        "carry-mid-stack": (lambda: nnx.Sequential(nnx.RNN(nnx.GRUCell(INPUTS, HIDDEN, rngs=nnx.Rngs(0)),
                                                           return_carry=True), nnx_rnn("GRUCell", HIDDEN)),
                            "return_carry"),
    }


NNX_REFUSALS = ("reverse-in-one-layer", "gru-gate-fn", "lstm-gate-fn", "optimized-lstm-activation",
                "simple-residual", "merge-fn", "bfloat16", "carry-mid-stack")


@pytest.mark.parametrize("case", NNX_REFUSALS)
def test_nnx_unrepresentable_module_is_refused_by_name(case):
    load_backend("jax")
    make, attribute = nnx_refusals()[case]
    with pytest.raises(UnrepresentableError, match=attribute):
        load(make())


def test_nnx_unknown_attribute_is_refused_and_extra_variables_are_named():
    load_backend("jax")
    from flax import nnx

    module = nnx_rnn("GRUCell")
    module.cell.clip = 5.0  # something a subclass or a newer flax might compute with
    with pytest.raises(UnrepresentableError, match="clip"):
        load(module)
    module = nnx_rnn("GRUCell")
    module.cell.stats = nnx.BatchStat(np.zeros(HIDDEN, np.float32))
    with pytest.raises(ValueError, match="stats"):
        load(module)


# ---- msgpack params: weights only ----

def test_msgpack_params_note_their_assumption_and_must_be_consumed_whole(tmp_path):
    load_backend("jax")
    from flax import serialization

    model = multirnn.RecurrentSpec(INPUTS, HIDDEN, cell="gru", bidirectional=True, reset_after=True)
    params = multirnn.init_params(model, 0, "float32")
    path = tmp_path / "gru.msgpack"
    pflax.write_file(path, model, params)
    loaded = load(path)
    assert loaded.model == model and loaded.verification is None
    assert any("gate_fn" in note and "reverse" in note for note in loaded.notes)
    assert any("not verified" in note for note in loaded.notes)
    tree = serialization.msgpack_restore(path.read_bytes())
    tree["head"] = {"kernel": np.zeros((2, 2), np.float32)}
    path.write_bytes(serialization.msgpack_serialize(tree))
    with pytest.raises(ValueError, match="head/kernel"):
        load(path)


# ---- float64: proven at the float64 tolerance ----

def test_float64_linen_and_nnx_modules_are_proven_in_float64():
    load_backend("jax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from multirnn.backends.jax_backend import precision

    x = inputs_for().astype(np.float64)
    with precision("float64"):
        cell = lambda: nn.LSTMCell(HIDDEN, param_dtype=jnp.float64)  # noqa: E731
        module = nn.Bidirectional(nn.RNN(cell()), nn.RNN(cell()))
        variables = randomized(module.init(jax.random.key(0), jnp.asarray(x)))
        nnx_module = nnx_randomize(nnx.RNN(nnx.GRUCell(INPUTS, HIDDEN, param_dtype=jnp.float64,
                                                       rngs=nnx.Rngs(0))))
    for loaded in (load(module, variables=variables), load(nnx_module)):
        assert loaded.verification.dtype == "float64" and loaded.verification.max_error <= 1e-10
        assert {a.dtype for a in loaded.params.values()} == {np.dtype(np.float64)}
