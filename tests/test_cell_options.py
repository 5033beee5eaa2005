"""Issue 15's spec options against the NumPy float64 reference on every backend (outputs, every final
state, every parameter gradient), the reference's hand-written BPTT against finite differences, and
the definitions against the frameworks' own functions."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import FUSED_KERNEL_BACKENDS, load_backend, make_case, random_state
from test_parity import check_against_reference
from test_reference import finite_difference_check

from multirnn import recurrence
from multirnn.spec import RecurrentSpec

# label -> RecurrentSpec fields beyond (3, 4)
OPTIONS = {
    "gru-hard": dict(cell="gru", reset_after=True, gate_activation="hard_sigmoid"),
    "gru-before-legacy-relu": dict(cell="gru", gate_activation="hard_sigmoid_legacy", nonlinearity="relu"),
    "lstm-hard": dict(cell="lstm", gate_activation="hard_sigmoid"),
    "lstm-legacy": dict(cell="lstm", gate_activation="hard_sigmoid_legacy"),
    "lstm-relu": dict(cell="lstm", nonlinearity="relu"),
    "gru-relu": dict(cell="gru", reset_after=True, nonlinearity="relu"),
}
SHAPES = {"1uni": dict(), "2bi": dict(num_layers=2, bidirectional=True)}


def options_case(fields, dtype, seed=11):
    model = RecurrentSpec(3, 4, **fields)
    params, inputs = make_case(model, seed=seed, steps=5, batch=2, dtype=dtype, scale=10.0)
    state = random_state(model, 2, seed=seed + 1, dtype=dtype)
    cotangent = np.random.default_rng(seed + 2).normal(size=(5, 2, model.output_size)).astype(dtype)
    return model, params, inputs, state, cotangent


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label", OPTIONS)
def test_bptt_matches_finite_differences(label, shape):
    model, params, inputs, state, cotangent = options_case({**OPTIONS[label], **SHAPES[shape]}, "float64")
    finite_difference_check(model, params, inputs, state, cotangent)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label", OPTIONS)
def test_options_match_reference(backend_path, label, shape, dtype):
    model, params, inputs, state, cotangent = options_case({**OPTIONS[label], **SHAPES[shape]}, dtype)
    check_against_reference(model, params, inputs, state, backend_path, dtype, cotangent)


@pytest.mark.parametrize("name", FUSED_KERNEL_BACKENDS)
@pytest.mark.parametrize("label", OPTIONS)
def test_fused_kernels_decline_the_options(name, label):
    backend = load_backend(name)
    assert not recurrence.fused_path(backend, RecurrentSpec(3, 4, **OPTIONS[label]), np.float32)
    assert recurrence.fused_path(backend, RecurrentSpec(3, 4, cell=OPTIONS[label]["cell"], reset_after=True
                                                        if OPTIONS[label]["cell"] == "gru" else False),
                                 np.float32)


KINKS = {"hard_sigmoid": 3.0, "hard_sigmoid_legacy": 2.5}


def gate_values_and_slopes(kind):
    """Our gate function on torch (values and autograd slopes) on a grid including both kinks."""
    torch = pytest.importorskip("torch")
    ops = load_backend("torch")
    gate = recurrence.gate_function(ops, RecurrentSpec(3, 4, cell="gru", gate_activation=kind))
    kink = KINKS[kind]
    x = torch.tensor([-9.0, -kink, -1.0, 0.0, 0.7, kink, 9.0], dtype=torch.float64, requires_grad=True)
    y = gate(x)
    y.sum().backward()
    return x.detach().numpy(), y.detach().numpy(), x.grad.numpy()


def test_hard_sigmoid_is_torchs_and_jaxs_and_keras3s():
    torch = pytest.importorskip("torch")
    x, y, slope = gate_values_and_slopes("hard_sigmoid")
    t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.hardsigmoid(t).sum().backward()
    np.testing.assert_allclose(y, torch.nn.functional.hardsigmoid(torch.tensor(x)).numpy(), atol=1e-15)
    # 1/6 inside, 0 at the kinks and beyond (torch's own backward rounds 1/6 to float32)
    np.testing.assert_allclose(slope, t.grad.numpy(), rtol=1e-7, atol=0)
    assert list(slope) == [0, 0, 1 / 6, 1 / 6, 1 / 6, 0, 0]
    load_backend("jax")
    import jax

    with jax.enable_x64(True) if hasattr(jax, "enable_x64") else jax.experimental.enable_x64():
        xj = jax.numpy.asarray(x)
        np.testing.assert_allclose(y, jax.nn.hard_sigmoid(xj), atol=1e-15)
        np.testing.assert_array_equal(slope, jax.vmap(jax.grad(jax.nn.hard_sigmoid))(xj))
    load_backend("tensorflow")
    import keras

    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(keras.activations.hard_sigmoid(x)), atol=1e-15)


def test_legacy_hard_sigmoid_is_tf_keras_and_onnx_default():
    x, y, slope = gate_values_and_slopes("hard_sigmoid_legacy")
    np.testing.assert_allclose(y, np.clip(0.2 * x + 0.5, 0, 1), atol=1e-15)
    assert list(slope) == [0, 0, 0.2, 0.2, 0.2, 0, 0]
    load_backend("tensorflow")
    from keras.src.legacy import backend as legacy

    np.testing.assert_allclose(y, legacy.hard_sigmoid(__import__("tensorflow").constant(x)).numpy(), atol=1e-15)
    onnx = pytest.importorskip("onnx")
    schema = onnx.defs.get_schema("HardSigmoid")
    assert (schema.attributes["alpha"].default_value.f, schema.attributes["beta"].default_value.f) \
        == pytest.approx((0.2, 0.5))


def test_option_combinations_that_make_no_sense_are_refused():
    with pytest.raises(ValueError, match=r"gate_activation='hard_sigmoid' applies to cell='gru' or 'lstm'"):
        RecurrentSpec(3, 4, gate_activation="hard_sigmoid")
    with pytest.raises(ValueError, match=r"gate_activation must be one of \('sigmoid', 'hard_sigmoid', "
                                         r"'hard_sigmoid_legacy'\), got 'relu'"):
        RecurrentSpec(3, 4, cell="lstm", gate_activation="relu")


@pytest.mark.parametrize("label", OPTIONS)
def test_torch_and_gluon_refuse_the_options_by_name(label):
    """torch and Gluon layers have no gate or cell activation option: export and import refuse."""
    from multirnn.port import UnrepresentableError, gluon, torch

    model = RecurrentSpec(3, 4, **{**OPTIONS[label], "reset_after": OPTIONS[label]["cell"] == "gru"})
    params, _ = make_case(model)
    field = "gate_activation" if model.gate_activation != "sigmoid" else "nonlinearity"
    for convert in (torch.to_torch, gluon.to_gluon):
        with pytest.raises(UnrepresentableError, match=f"{field}="):
            convert(model, params)
