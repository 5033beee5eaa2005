"""Issue 15's spec options against the NumPy float64 reference on every backend (outputs, every final
state, every parameter gradient), the reference's hand-written BPTT against finite differences, and
the definitions against the frameworks' own functions.

The parity tests take the ``backend`` fixture, not ``backend_path``: no fused kernel computes these
options (``test_fused_kernels_decline_*``), so torch's and MXNet's "-generic" runs would repeat the
very same computation."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import (FUSED_KERNEL_BACKENDS, assert_close, check_against_reference, load_backend, make_case,
                      random_state)
from test_reference import finite_difference_check

import multirnn
from multirnn import recurrence
from multirnn.spec import RecurrentSpec
from multirnn.state import flatten_state

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


# Direction options: whole specs (reverse is for one direction; merge modes for two)
DIRECTIONS = {
    "rnn-reverse": dict(cell="rnn", reverse=True),
    "gru-reverse-2layer": dict(cell="gru", reset_after=True, reverse=True, num_layers=2),
    "rnn-reverse-computed-order": dict(cell="rnn", nonlinearity="relu", reverse=True, keep_order=False),
    "lstm-reverse-computed-order-2layer": dict(cell="lstm", reverse=True, keep_order=False, num_layers=2,
                                               gate_activation="hard_sigmoid"),
    "lstm-bi-sum-2layer": dict(cell="lstm", bidirectional=True, merge_mode="sum", num_layers=2),
    "gru-bi-mul": dict(cell="gru", bidirectional=True, merge_mode="mul"),
    "gru-bi-mul-2layer": dict(cell="gru", bidirectional=True, merge_mode="mul", num_layers=2, reset_after=True),
    "rnn-bi-ave-2layer": dict(cell="rnn", bidirectional=True, merge_mode="ave", num_layers=2),
}


@pytest.mark.parametrize("label", DIRECTIONS)
def test_direction_bptt_matches_finite_differences(label):
    model, params, inputs, state, cotangent = options_case(DIRECTIONS[label], "float64")
    finite_difference_check(model, params, inputs, state, cotangent)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("label", DIRECTIONS)
def test_directions_match_reference(backend, label, dtype):
    model, params, inputs, state, cotangent = options_case(DIRECTIONS[label], dtype)
    check_against_reference(model, params, inputs, state, backend, dtype, cotangent)


@pytest.mark.parametrize("label", ["gru-reverse-2layer", "lstm-reverse-computed-order-2layer",
                                   "gru-bi-mul-2layer"])
def test_directions_with_lengths_match_reference(backend, label):
    """Padded batches: a reversed direction reverses each sequence within its own length."""
    model, params, inputs, state, cotangent = options_case(DIRECTIONS[label], "float64")
    check_against_reference(model, params, inputs, state, backend, "float64", cotangent,
                            lengths=np.array([5, 3]))


def test_reverse_is_a_bidirectional_backward_half_and_keep_order_false_is_its_flip():
    bi = RecurrentSpec(3, 4, cell="gru", bidirectional=True)
    params, inputs = make_case(bi)
    bwd = {k[len("bwd."):]: v for k, v in params.items() if k.startswith("bwd.")}
    (out, (_, h_bwd)) = multirnn.forward(bi, params, inputs)
    aligned, h = multirnn.forward(RecurrentSpec(3, 4, cell="gru", reverse=True), bwd, inputs)
    np.testing.assert_array_equal(aligned, out[..., 4:])
    np.testing.assert_array_equal(h, h_bwd)
    computed, h2 = multirnn.forward(RecurrentSpec(3, 4, cell="gru", reverse=True, keep_order=False), bwd, inputs)
    np.testing.assert_array_equal(computed, aligned[::-1])
    np.testing.assert_array_equal(h2, h)
    merged = RecurrentSpec(3, 4, cell="gru", bidirectional=True, merge_mode="ave")
    np.testing.assert_allclose(multirnn.forward(merged, params, inputs)[0],
                               (out[..., :4] + out[..., 4:]) / 2, rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label", OPTIONS)
def test_bptt_matches_finite_differences(label, shape):
    model, params, inputs, state, cotangent = options_case({**OPTIONS[label], **SHAPES[shape]}, "float64")
    finite_difference_check(model, params, inputs, state, cotangent)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label", OPTIONS)
def test_options_match_reference(backend, label, shape, dtype):
    model, params, inputs, state, cotangent = options_case({**OPTIONS[label], **SHAPES[shape]}, dtype)
    check_against_reference(model, params, inputs, state, backend, dtype, cotangent)


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


@pytest.mark.parametrize("name", FUSED_KERNEL_BACKENDS)
@pytest.mark.parametrize("label", DIRECTIONS)
def test_fused_kernels_decline_the_directions(name, label):
    assert not recurrence.fused_path(load_backend(name), RecurrentSpec(3, 4, **DIRECTIONS[label]), np.float32)


def test_option_combinations_that_make_no_sense_are_refused():
    with pytest.raises(ValueError, match=r"reverse=True applies to one direction \(bidirectional=False\)"):
        RecurrentSpec(3, 4, reverse=True, bidirectional=True)
    with pytest.raises(ValueError, match=r"keep_order=False applies to reverse=True only"):
        RecurrentSpec(3, 4, keep_order=False)
    with pytest.raises(ValueError, match=r"merge_mode='sum' applies to bidirectional=True only"):
        RecurrentSpec(3, 4, merge_mode="sum")
    with pytest.raises(ValueError, match=r"merge_mode must be one of \('concat', 'sum', 'mul', 'ave'\), got None"):
        RecurrentSpec(3, 4, bidirectional=True, merge_mode=None)
    with pytest.raises(TypeError, match=r"reverse must be a bool, got 1"):
        RecurrentSpec(3, 4, reverse=1)
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


@pytest.mark.parametrize("fields, name", [(dict(reverse=True), "reverse=True"),
                                          (dict(bidirectional=True, merge_mode="mul"), "merge_mode='mul'")])
def test_torch_and_gluon_refuse_the_directions_by_name(fields, name):
    from multirnn.port import UnrepresentableError, flax, gluon, torch

    model = RecurrentSpec(3, 4, cell="lstm", **fields)
    params, _ = make_case(model)
    for convert in (torch.to_torch, gluon.to_gluon) + ((flax.to_flax,) if "merge_mode" in fields else ()):
        with pytest.raises(UnrepresentableError, match=name):
            convert(model, params)


# ---- a learned initial state: params h_0 (c_0) per unit, used when no state is passed ----

LEARNED = {
    "rnn": dict(cell="rnn"),
    "gru-bi-2layer": dict(cell="gru", reset_after=True, bidirectional=True, num_layers=2),
    "lstm-2layer": dict(cell="lstm", num_layers=2),
    "lstm-bi-mul": dict(cell="lstm", bidirectional=True, merge_mode="mul"),
    "gru-reverse-hard": dict(cell="gru", reverse=True, keep_order=False, gate_activation="hard_sigmoid"),
}


def learned_case(fields, dtype, seed=21):
    """A learn_initial_state model with nonzero h_0/c_0 (init_params starts them at zero)."""
    model = RecurrentSpec(3, 4, learn_initial_state=True, **fields)
    params, inputs = make_case(model, seed=seed, steps=5, batch=2, dtype=dtype, scale=10.0)
    rng = np.random.default_rng(seed + 3)
    for name, shape in model.param_shapes().items():
        if name.rsplit(".", 1)[-1] in ("h_0", "c_0"):
            params[name] = rng.normal(scale=0.5, size=shape).astype(dtype)
    cotangent = np.random.default_rng(seed + 2).normal(size=(5, 2, model.output_size)).astype(dtype)
    return model, params, inputs, cotangent


@pytest.mark.parametrize("label", LEARNED)
def test_learned_initial_state_bptt_matches_finite_differences(label):
    model, params, inputs, cotangent = learned_case(LEARNED[label], "float64")
    finite_difference_check(model, params, inputs, None, cotangent)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("label", LEARNED)
def test_learned_initial_state_matches_reference(backend, label, dtype):
    model, params, inputs, cotangent = learned_case(LEARNED[label], dtype)
    check_against_reference(model, params, inputs, None, backend, dtype, cotangent)


def test_learned_initial_state_is_h0_over_the_batch_and_a_given_state_wins():
    model, params, inputs, _ = learned_case(LEARNED["lstm-2layer"], "float64")
    plain = RecurrentSpec(3, 4, cell="lstm", num_layers=2)
    weights = {k: v for k, v in params.items() if not k.endswith(("h_0", "c_0"))}
    state = tuple((np.tile(params[f"l{k}.h_0"], (2, 1)), np.tile(params[f"l{k}.c_0"], (2, 1))) for k in (0, 1))
    want, want_state = multirnn.forward(plain, weights, inputs, state)
    got, got_state = multirnn.forward(model, params, inputs)
    np.testing.assert_array_equal(got, want)
    given = multirnn.forward(model, params, inputs, state=tuple((h * 0, c * 0) for h, c in state))[0]
    np.testing.assert_array_equal(given, multirnn.forward(plain, weights, inputs)[0])
    grads = multirnn.gradients(model, params, inputs, state=state)
    assert not np.any(grads["l0.h_0"]) and np.any(grads["l0.W_xi"])  # unused when a state is given
    _, empty_state = multirnn.forward(model, params, inputs[:0])  # zero steps: the learned state itself
    np.testing.assert_array_equal(empty_state[1][0], state[1][0])


@pytest.mark.parametrize("label", ["gru-bi-2layer", "gru-reverse-hard"])
def test_learned_initial_state_with_lengths(backend, label):
    model, params, inputs, cotangent = learned_case(LEARNED[label], "float64")
    lengths = np.array([5, 0])
    want, want_state = multirnn.forward(model, params, inputs, lengths=lengths)
    got, got_state = multirnn.forward(model, params, inputs, backend=backend, lengths=lengths)
    assert_close(got, want, "float64", "outputs")
    for a, b in zip(flatten_state(model, got_state), flatten_state(model, want_state)):
        for x, y in zip(a, b):
            assert_close(x, y, "float64", "state")
    want_grads = multirnn.gradients(model, params, inputs, cotangent=cotangent, lengths=lengths)
    got_grads = multirnn.gradients(model, params, inputs, backend=backend, cotangent=cotangent, lengths=lengths)
    for name in params:
        assert_close(got_grads[name], want_grads[name], "float64", f"d/d{name}")


def test_learned_initial_state_params_and_init():
    model = RecurrentSpec(3, 4, cell="lstm", bidirectional=True, learn_initial_state=True)
    shapes = model.param_shapes()
    assert shapes["fwd.h_0"] == shapes["bwd.c_0"] == (4,)
    params = multirnn.init_params(model, 0)
    assert not np.any(params["bwd.h_0"])
    plain = multirnn.init_params(RecurrentSpec(3, 4, cell="lstm", bidirectional=True), 0)
    for name, value in plain.items():  # the same weights: h_0/c_0 come after each unit's weights
        np.testing.assert_array_equal(params[name], value)


@pytest.mark.parametrize("name", FUSED_KERNEL_BACKENDS)
def test_fused_kernels_decline_a_learned_initial_state(name):
    model = RecurrentSpec(3, 4, cell="lstm", learn_initial_state=True)
    assert not recurrence.fused_path(load_backend(name), model, np.float32)


def test_frameworks_without_a_learned_initial_state_refuse_it_by_name():
    from multirnn.port import UnrepresentableError, flax, gluon, keras, torch

    model = RecurrentSpec(3, 4, cell="gru", reset_after=True, learn_initial_state=True)
    params, _ = make_case(model)
    for convert in (torch.to_torch, gluon.to_gluon, keras.to_keras, flax.to_flax):
        with pytest.raises(UnrepresentableError, match="learn_initial_state=True"):
            convert(model, params)
    with pytest.raises(ValueError, match="learn_initial_state=True: pass a state"):
        multirnn.validate.check_state(model, None, 2, np.float64)


def test_specs_written_before_the_new_fields_still_load():
    from multirnn.checkpoint import spec_from_dict, spec_to_dict

    old = {"class": "RecurrentSpec", "fields": {"num_inputs": 3, "num_hiddens": 4, "cell": "gru"}}
    model = spec_from_dict(old)
    assert (model.gate_activation, model.reverse, model.keep_order, model.merge_mode,
            model.learn_initial_state) == ("sigmoid", False, True, "concat", False)
    new = RecurrentSpec(3, 4, cell="lstm", gate_activation="hard_sigmoid", reverse=True, keep_order=False,
                        learn_initial_state=True)
    assert spec_from_dict(spec_to_dict(new)) == new


def test_a_learned_initial_state_travels_in_npz_and_torch_to_onnx(tmp_path):
    """npz: the spec field and the h_0 params, nothing extra; a torch learned-h0 module converted to
    ONNX (an Expand of the stored rows) and read back: exact, proven by onnxruntime."""
    from multirnn.port import files, load, onnx

    load_backend("torch")
    import torch

    torch.manual_seed(0)

    class LearnedH0(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 4, num_layers=2)
            self.h0 = torch.nn.Parameter(torch.randn(2, 1, 4))
            self.c0 = torch.nn.Parameter(torch.randn(2, 1, 4))

        def forward(self, x):
            size = (-1, x.shape[1], -1)
            return self.rnn(x, (self.h0.expand(*size).contiguous(), self.c0.expand(*size).contiguous()))

    loaded = load(LearnedH0())
    assert loaded.model.learn_initial_state and loaded.verification is not None
    files.write("npz", tmp_path / "m.npz", loaded.model, loaded.params)
    again = load(tmp_path / "m.npz")
    assert again.model == loaded.model and again.initial_state is None
    for name in loaded.params:
        np.testing.assert_array_equal(again.params[name], loaded.params[name])
    pytest.importorskip("onnxruntime")
    through_onnx = load(onnx.to_onnx(loaded.model, loaded.params))
    assert through_onnx.model == loaded.model and through_onnx.verification is not None
