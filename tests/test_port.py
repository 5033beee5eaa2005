"""multirnn.port: each framework's own layer, loaded with converted weights, against the NumPy float64
reference; exact round trips; clear refusals of what a format cannot hold.

Frameworks' layers: torch nn.RNN/GRU/LSTM, Keras SimpleRNN/GRU/LSTM(+Bidirectional), Flax linen cells
in nn.RNN/nn.Bidirectional, Gluon rnn.RNN/GRU/LSTM. ONNX has its own file (test_port_onnx.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import CELL_VARIANTS, FRAMEWORK_MODULES, load_backend, make_case, random_state, run_python
from porting import STRUCTURES, assert_matches_reference, assert_tree_equal, random_model

import multirnn
from multirnn.port import UnrepresentableError
from multirnn.port import flax as pflax
from multirnn.port import flax_nnx as pnnx
from multirnn.port import gluon as pgluon
from multirnn.port import keras as pkeras
from multirnn.port import torch as ptorch
from multirnn.port.native import FRAMEWORK_BACKEND, run_native

CONVERTERS = {"torch": (ptorch.to_torch, ptorch.from_torch), "keras": (pkeras.to_keras, pkeras.from_keras),
              "flax": (pflax.to_flax, pflax.from_flax), "nnx": (pnnx.to_nnx, pnnx.from_nnx),
              "gluon": (pgluon.to_gluon, pgluon.from_gluon)}
# Frameworks whose GRU resets after the matmul only (the issue: refuse reset-before clearly).
RESET_AFTER_ONLY = ("torch", "flax", "nnx", "gluon")
ALWAYS_BIASED = ("flax", "nnx", "gluon")  # formats with biases even for a bias=False model


def representable(framework, model, params):
    """nnx's GRUCell lacks the candidate's recurrent bias: check the refusal, then zero b_hh."""
    if framework != "nnx" or model.cell != "gru" or not model.bias:
        return params
    with pytest.raises(UnrepresentableError, match="no recurrent bias for the candidate"):
        pnnx.to_nnx(model, params)
    return {k: np.zeros_like(v) if k.endswith("b_hh") else v for k, v in params.items()}


def run_native_weights(framework: str, model, native, inputs, state):
    """The framework's own layer(s) holding framework-format weights as they are (no conversion)."""
    dtype = inputs.dtype
    if framework == "torch":
        layer = ptorch.torch_layer(model, state_dict=native, dtype=dtype)
        return ptorch.run_torch_layer(model, layer, inputs, state)
    if framework == "keras":
        layers = pkeras.keras_layers(model, weights=native, dtype=dtype)
        return pkeras.run_keras_layers(model, layers, inputs, state)
    if framework == "flax":
        return pflax.run_flax(model, native, inputs, state)
    if framework == "nnx":
        return pnnx.run_nnx(model, native, inputs, state)
    return pgluon.run_gluon_layer(model, pgluon.gluon_layer(model, arrays=native, dtype=dtype), inputs, state)


def randomized(tree, rng):
    """Same structure, fresh normal values: weights as a framework might hold them (all slots nonzero)."""
    if isinstance(tree, dict):
        return {k: randomized(v, rng) for k, v in tree.items()}
    if isinstance(tree, list):
        return [randomized(v, rng) for v in tree]
    return rng.normal(scale=0.5, size=np.shape(tree)).astype(np.asarray(tree).dtype)


@pytest.mark.parametrize("structure", range(len(STRUCTURES)))
@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("framework", CONVERTERS)
def test_native_layer_matches_spec(framework, variant, structure):
    """Export: canonical params -> framework layer gives the reference's outputs and final states."""
    load_backend(FRAMEWORK_BACKEND[framework])
    model = random_model(variant, structure)
    params, inputs = make_case(model, seed=structure, steps=4, batch=2, dtype="float32", scale=10.0)
    state = random_state(model, 2, seed=7, dtype="float32") if STRUCTURES[structure][4] else None
    if framework in RESET_AFTER_ONLY and variant == "gru-reset-before":
        with pytest.raises(UnrepresentableError, match=r"reset_after=False.*Keras.*ONNX"):
            CONVERTERS[framework][0](model, params)
        return
    params = representable(framework, model, params)
    outputs, new_state = run_native(framework, model, params, inputs, state)
    assert_matches_reference(model, params, inputs, state, outputs, new_state, framework)


def _sums_two_rnn_biases(framework, model):
    # torch/Gluon keep two rnn biases where the spec has one: importing adds them (not invertible).
    return model.cell == "rnn" and model.bias and framework in ("torch", "gluon")


@pytest.mark.parametrize("structure", range(len(STRUCTURES)))
@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("framework", CONVERTERS)
def test_framework_weights_round_trip_exactly(framework, variant, structure):
    """Import: arbitrary framework-shaped weights -> canonical -> framework is the identity, and the
    imported canonical params compute what the framework's layer computes with those weights."""
    model = random_model(variant, structure)
    to_fw, from_fw = CONVERTERS[framework]
    params, inputs = make_case(model, seed=structure, steps=4, batch=2, dtype="float32", scale=10.0)
    if framework in RESET_AFTER_ONLY and variant == "gru-reset-before":
        with pytest.raises(UnrepresentableError, match="reset_after"):
            unbiased = {k: v * 0 if ".b_" in "." + k else v for k, v in params.items()}
            from_fw(model, to_fw(dataclasses.replace(model, reset_after=True), unbiased))
        return
    params = representable(framework, model, params)
    native = randomized(to_fw(model, params), np.random.default_rng(structure))
    if not model.bias and framework in ALWAYS_BIASED:  # random biases would be refused
        native = to_fw(model, params)
    canonical = from_fw(model, native)
    again = to_fw(model, canonical)
    if _sums_two_rnn_biases(framework, model):
        with pytest.raises(AssertionError):
            assert_tree_equal(again, native)
    else:
        assert_tree_equal(again, native)
    # The canonical -> framework -> canonical direction is exact once params are in imported form.
    assert_tree_equal(from_fw(model, again), canonical)

    load_backend(FRAMEWORK_BACKEND[framework])
    state = random_state(model, 2, seed=3, dtype="float32")
    outputs, new_state = run_native_weights(framework, model, native, inputs, state)
    assert_matches_reference(model, canonical, inputs, state, outputs, new_state, framework)


# Where the canonical layout survives a format exactly with arbitrary biases (the others fold a bias
# pair into one: Keras LSTM / reset-before GRU, Flax GRU r,z gates and LSTM).
LOSSLESS = {"torch": {"rnn", "gru", "lstm"}, "gluon": {"rnn", "gru", "lstm"},
            "keras": {"rnn", "gru-after"}, "flax": {"rnn"}, "nnx": {"rnn"}}


@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("framework", CONVERTERS)
def test_canonical_round_trip(framework, variant):
    model = random_model(variant, 3)
    params, _ = make_case(model, seed=5, dtype="float64")
    to_fw, from_fw = CONVERTERS[framework]
    if framework in RESET_AFTER_ONLY and variant == "gru-reset-before":
        return
    params = representable(framework, model, params)
    back = from_fw(model, to_fw(model, params))
    kind = "gru-after" if variant == "gru-reset-after" else model.cell
    if kind in LOSSLESS[framework]:
        assert_tree_equal(back, params)
    else:  # folded: same weights, each folded bias pair's sum kept (one rounding), the function unchanged
        for name, value in params.items():
            if not name.rsplit(".", 1)[-1].startswith("b_"):
                np.testing.assert_array_equal(back[name], value)
        for prefix in {n[: -len(n.rsplit(".", 1)[-1])] for n in params}:
            for gate in multirnn.spec.CELL_GATES[model.cell]:
                pair = (f"{prefix}b_x{gate}", f"{prefix}b_h{gate}")
                np.testing.assert_allclose(back[pair[0]] + back[pair[1]], params[pair[0]] + params[pair[1]],
                                           rtol=1e-15, atol=1e-15)


def test_reset_before_gru_refused_by_reset_after_frameworks():
    model = multirnn.RecurrentSpec(2, 3, cell="gru", reset_after=False)
    params = multirnn.init_params(model, 0)
    for to_fw in (ptorch.to_torch, pgluon.to_gluon, pflax.to_flax, pnnx.to_nnx):
        with pytest.raises(UnrepresentableError, match="linear_before_reset=0"):
            to_fw(model, params)


def test_torch_import_refuses_a_projection_the_spec_lacks_and_wrong_shapes():
    model = multirnn.RecurrentSpec(2, 3, cell="lstm")
    sd = ptorch.to_torch(model, multirnn.init_params(model, 0))
    with pytest.raises(ValueError, match=r"weight_hr_l\* \(a torch LSTM with proj_size=2\)"):
        ptorch.from_torch(model, {**sd, "weight_hr_l0": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match=r"weight_hh_l0.*shape \(12, 3\)"):
        ptorch.from_torch(model, {**sd, "weight_hh_l0": np.zeros((12, 4), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        ptorch.from_torch(model, {k: v for k, v in sd.items() if k != "bias_hh_l0"})


def test_torch_prefix_and_spec_inference():
    model = multirnn.RecurrentSpec(3, 4, cell="gru", num_layers=2, bidirectional=True, reset_after=True)
    params = multirnn.init_params(model, 1)
    sd = {"encoder." + k: v for k, v in ptorch.to_torch(model, params).items()}
    sd["head.weight"] = np.zeros((2, 8), np.float32)  # another submodule of the same model
    assert ptorch.infer_torch_spec(sd, prefix="encoder.") == model
    assert_tree_equal(ptorch.from_torch(model, sd, prefix="encoder."), params)
    rnn_sd = ptorch.to_torch(multirnn.RNNScratch(2, 3), multirnn.init_params(multirnn.RNNScratch(2, 3), 0))
    with pytest.raises(ValueError, match="nonlinearity"):
        ptorch.infer_torch_spec(rnn_sd)
    with pytest.raises(ValueError, match="num_hiddens=5 disagrees"):
        ptorch.infer_torch_spec(rnn_sd, nonlinearity="tanh", num_hiddens=5)


def test_bias_free_model_refuses_nonzero_always_present_biases():
    model = multirnn.RecurrentSpec(2, 3, cell="lstm", bias=False)
    arrays = pgluon.to_gluon(model, multirnn.init_params(model, 0))
    arrays["l0_h2h_bias"] = np.ones_like(arrays["l0_h2h_bias"])
    with pytest.raises(UnrepresentableError, match="l0_h2h_bias is nonzero.*bias=False"):
        pgluon.from_gluon(model, arrays)
    tree = pflax.to_flax(model, multirnn.init_params(model, 0))
    tree["cell"]["hf"]["bias"] = np.ones(3, np.float32)
    with pytest.raises(UnrepresentableError, match="hf/bias is nonzero"):
        pflax.from_flax(model, tree)


def test_gluon_accepts_block_prefix_and_infers_spec():
    model = multirnn.RecurrentSpec(2, 3, cell="lstm", num_layers=2, bidirectional=True)
    params = multirnn.init_params(model, 2)
    arrays = {"lstm0_" + k: v for k, v in pgluon.to_gluon(model, params).items()}
    assert pgluon.infer_gluon_spec(arrays) == model
    assert_tree_equal(pgluon.from_gluon(model, arrays), params)


def test_flax_infers_spec_and_accepts_params_wrapper():
    model = multirnn.RecurrentSpec(3, 2, cell="lstm", num_layers=2, bidirectional=True)
    params = multirnn.init_params(model, 3)
    tree = {"params": pflax.to_flax(model, params)}
    assert pflax.infer_flax_spec(tree) == model
    assert_tree_equal(pflax.from_flax(model, tree), params)


def test_keras_refuses_per_direction_hidden_sizes_and_other_activations():
    load_backend("tensorflow")
    import keras

    uneven = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True),
                                        backward_layer=keras.layers.GRU(4, return_sequences=True,
                                                                        go_backwards=True))
    uneven.build((None, None, 2))
    with pytest.raises(ValueError, match="per-direction hidden sizes"):
        pkeras.infer_keras_spec([uneven])
    hard = keras.layers.LSTM(3, activation="selu")
    hard.build((None, None, 2))
    with pytest.raises(ValueError, match="not representable"):
        pkeras.infer_keras_spec([hard])
    model = multirnn.RecurrentSpec(2, 3, cell="gru", num_layers=2, bidirectional=True, reset_after=False,
                                   batch_first=True)
    layers = pkeras.keras_layers(model, multirnn.init_params(model, 0))
    assert pkeras.infer_keras_spec(layers) == model


def test_keras_weight_list_checked():
    model = multirnn.RecurrentSpec(2, 3, cell="gru", reset_after=True)
    weights = pkeras.to_keras(model, multirnn.init_params(model, 0))
    assert weights[2].shape == (2, 9)  # [input row, recurrent row]
    with pytest.raises(ValueError, match="list of 3 arrays"):
        pkeras.from_keras(model, weights[:2])
    with pytest.raises(ValueError, match=r"weights\[2\] must have shape \(2, 9\)"):
        pkeras.from_keras(model, weights[:2] + [np.zeros(9, np.float32)])


def test_importing_multirnn_port_imports_no_framework():
    loaded = run_python(
        "import sys, multirnn.port, multirnn.port.torch, multirnn.port.keras, multirnn.port.flax, "
        "multirnn.port.gluon, multirnn.port.onnx, multirnn.port.flax_nnx, multirnn.port.files, "
        "multirnn.port.front, multirnn.port.verify, multirnn.port.pair, multirnn.port.native, multirnn.cli\n"
        "multirnn.cli.build_parser()\n"
        f"print(','.join(m for m in {FRAMEWORK_MODULES + ('onnx', 'mxnet')!r} if m in sys.modules))")
    assert loaded == ""
