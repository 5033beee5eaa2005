"""multirnn.step: one time step of a unidirectional spec. Stepping T times gives forward's outputs and
final state: exactly on the NumPy reference, within the parity tolerances on every framework."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CELL_VARIANTS, assert_close, make_case, random_state

import multirnn
from multirnn.spec import RecurrentSpec
from multirnn.state import flatten_state


def _step_all(model, params, inputs, state, backend, masks=None):
    """T calls of step; ``masks`` (forward's, one (T, B, units) array per layer after the first) in
    training mode, sliced at each step."""
    xs = inputs.swapaxes(0, 1) if model.batch_first else inputs
    outputs = []
    for t, x_t in enumerate(xs):
        training = {} if masks is None else {"training": True, "dropout_masks": [m[t] for m in masks]}
        y, state = multirnn.step(model, params, np.ascontiguousarray(x_t), state, backend=backend, **training)
        outputs.append(y)
    ys = np.stack(outputs)
    return (ys.swapaxes(0, 1) if model.batch_first else ys), state


def _state_arrays(model, state):
    return [a for unit in flatten_state(model, state) for a in unit]


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stepping_equals_forward(backend_or_numpy, variant, num_layers, dtype):
    model = RecurrentSpec(3, 4, num_layers=num_layers, **CELL_VARIANTS[variant])
    params, inputs = make_case(model, steps=6, batch=2, dtype=dtype)
    state = random_state(model, 2, seed=3, dtype=dtype)
    want_ys, want_state = multirnn.forward(model, params, inputs, state)  # the reference
    ys, final = _step_all(model, params, inputs, state, backend_or_numpy)
    if backend_or_numpy == "numpy":  # the reference stepped: the same arithmetic, bit for bit
        assert np.abs(ys - want_ys).max() <= 1e-14
        for a, b in zip(_state_arrays(model, final), _state_arrays(model, want_state)):
            assert np.abs(a - b).max() <= 1e-14
        return
    assert_close(ys, want_ys, dtype, "outputs")
    for k, (a, b) in enumerate(zip(_state_arrays(model, final), _state_arrays(model, want_state))):
        assert_close(a, b, dtype, f"state array {k}")


def test_state_none_is_zeros_and_batch_first_is_irrelevant(backend_or_numpy):
    model = RecurrentSpec(3, 4, cell="lstm", num_layers=2, batch_first=True)
    params, inputs = make_case(model, steps=4, batch=2)
    want_ys, want_state = multirnn.forward(model, params, inputs)
    ys, final = _step_all(model, params, inputs, None, backend_or_numpy)
    assert_close(ys, want_ys, "float64", "outputs")
    for a, b in zip(_state_arrays(model, final), _state_arrays(model, want_state)):
        assert_close(a, b, "float64", "state")


def test_returned_state_has_the_nested_convention():
    model = RecurrentSpec(2, 3, cell="lstm", num_layers=2)
    params, _ = make_case(model)
    y, state = multirnn.step(model, params, np.ones((5, 2)))
    assert y.shape == (5, 3) and len(state) == 2 and all(len(layer) == 2 for layer in state)
    y2, _ = multirnn.step(model, params, np.ones((5, 2)), state)  # feeds straight back
    assert not np.allclose(y, y2)


def test_bidirectional_is_refused():
    model = RecurrentSpec(2, 3, bidirectional=True)
    params, _ = make_case(model)
    with pytest.raises(ValueError, match="bidirectional.*backward direction"):
        multirnn.step(model, params, np.ones((1, 2)))


def test_reverse_is_refused():
    import dataclasses

    if "reverse" not in {f.name for f in dataclasses.fields(RecurrentSpec)}:
        pytest.skip("this spec has no reverse field")
    model = RecurrentSpec(2, 3, reverse=True)
    params, _ = make_case(model)
    with pytest.raises(ValueError, match="reverse=True"):
        multirnn.step(model, params, np.ones((1, 2)))
    with pytest.raises(ValueError, match="reverse=True"):
        multirnn.native_cell(model, params)


@pytest.mark.parametrize("variant", ["rnn-tanh", "gru-reset-after", "lstm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stepping_with_forwards_dropout_masks_equals_forward_in_training(backend_or_numpy, variant, dtype):
    model = RecurrentSpec(3, 4, num_layers=3, dropout=0.5, **CELL_VARIANTS[variant])
    params, inputs = make_case(model, steps=6, batch=2, dtype=dtype)
    state = random_state(model, 2, seed=3, dtype=dtype)
    want_ys, want_state = multirnn.forward(model, params, inputs, state, training=True, dropout_seed=7)
    eval_ys, _ = multirnn.forward(model, params, inputs, state)
    assert np.abs(want_ys - eval_ys).max() > 1e-2  # the masks change the outputs: the test can fail
    masks = multirnn.dropout_masks(model, 6, 2, seed=7, dtype=dtype)
    ys, final = _step_all(model, params, inputs, state, backend_or_numpy, masks)
    assert_close(ys, want_ys, dtype, "outputs")
    for k, (a, b) in enumerate(zip(_state_arrays(model, final), _state_arrays(model, want_state))):
        assert_close(a, b, dtype, f"state array {k}")


def test_training_dropout_needs_this_steps_masks_and_training_without_dropout_is_eval():
    model = RecurrentSpec(2, 3, num_layers=2, dropout=0.5)
    params, _ = make_case(model)
    with pytest.raises(ValueError, match="training=True with dropout between layers.*needs dropout_masks="):
        multirnn.step(model, params, np.ones((1, 2)), training=True)
    with pytest.raises(ValueError, match="dropout_masks applies only with training=True"):
        multirnn.step(model, params, np.ones((1, 2)), dropout_masks=[np.ones((1, 3))])
    with pytest.raises(TypeError, match="dropout_masks must be a list of 1 arrays.*got list of 2"):
        multirnn.step(model, params, np.ones((1, 2)), training=True, dropout_masks=[np.ones((1, 3))] * 2)
    with pytest.raises(ValueError, match=r"dropout_masks\[0\] must have shape \(1, 3\), got \(6, 1, 3\)"):
        multirnn.step(model, params, np.ones((1, 2)), training=True, dropout_masks=[np.ones((6, 1, 3))])
    with pytest.raises(TypeError, match=r"dropout_masks\[0\] must have dtype float64"):
        multirnn.step(model, params, np.ones((1, 2)), training=True,
                      dropout_masks=[np.ones((1, 3), np.float32)])
    eval_y, _ = multirnn.step(model, params, np.ones((1, 2)))
    kept, _ = multirnn.step(model, params, np.ones((1, 2)), training=True, dropout_masks=[np.ones((1, 3))])
    np.testing.assert_array_equal(eval_y, kept)  # masks of ones drop nothing
    plain = RecurrentSpec(2, 3, num_layers=2)
    train_y, _ = multirnn.step(plain, params, np.ones((1, 2)), training=True)
    np.testing.assert_array_equal(eval_y, train_y)
    with pytest.raises(TypeError, match="training must be a bool"):
        multirnn.step(plain, params, np.ones((1, 2)), training=1)


@pytest.mark.parametrize("x_t, error, match", [
    (np.ones((4, 3, 2)), ValueError, r"x_t must have shape \(\*, 2\)"),
    (np.ones((4, 5)), ValueError, r"x_t must have shape \(\*, 2\), got \(4, 5\)"),
    (np.ones((4, 2), np.float32), TypeError, "x_t must have dtype float64"),
    ([[1.0, 2.0]], TypeError, "x_t must be a numpy.ndarray"),
    (np.array([[np.nan, 1.0]]), ValueError, "x_t must be finite"),
])
def test_x_t_is_validated(x_t, error, match):
    model = RecurrentSpec(2, 3, cell="gru")
    params, _ = make_case(model)
    with pytest.raises(error, match=match):
        multirnn.step(model, params, x_t)


def test_state_and_params_are_validated():
    model = RecurrentSpec(2, 3, cell="lstm")
    params, _ = make_case(model)
    with pytest.raises(ValueError, match=r"state \(layer 0, fwd, C\) must have shape \(4, 3\)"):
        multirnn.step(model, params, np.ones((4, 2)), (np.zeros((4, 3)), np.zeros((1, 3))))
    with pytest.raises(TypeError, match="state: the state .*must be a tuple of 2"):
        multirnn.step(model, params, np.ones((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="params do not match"):
        multirnn.step(model, {}, np.ones((4, 2)))
    with pytest.raises(TypeError, match="model must be a multirnn spec"):
        multirnn.step("lstm", params, np.ones((4, 2)))
