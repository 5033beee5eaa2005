"""Arbitrary step masks (``mask=``, Keras semantics: multirnn.masking): every backend against the
NumPy reference (its own per-sequence implementation and BPTT), the semantics checked directly, and
the argument's validation. Keras itself is checked in tests/test_native_keras.py and the gallery."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import CELL_VARIANTS, check_padded_against_reference, flat_arrays, make_case, random_state

import multirnn

# (batch, steps): gaps, leading and trailing masked steps, one fully masked sequence, one full one.
MASK = np.array([[True, False, True, True, False],
                 [False, False, True, False, True],
                 [False, False, False, False, False],
                 [True, True, True, True, True]])

DIRECTIONS = {"forward": {}, "bidirectional": {"bidirectional": True},
              "reverse": {"reverse": True}, "go-backwards": {"reverse": True, "keep_order": False}}


def check_mask_against_reference(model, backend, dtype, mask=MASK, given_state=True):
    check_padded_against_reference(model, backend, dtype, *mask.shape, given_state, mask=mask)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("cell", list(CELL_VARIANTS))
def test_mask_matches_reference(backend_path, cell, direction):
    layers = 1 if direction == "go-backwards" else 2  # (a masked go_backwards stack is refused)
    model = multirnn.RecurrentSpec(3, 4, num_layers=layers, **DIRECTIONS[direction], **CELL_VARIANTS[cell])
    check_mask_against_reference(model, backend_path, "float64")


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_mask_float32_batch_first(backend_path, direction):
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", batch_first=True, **DIRECTIONS[direction])
    check_mask_against_reference(model, backend_path, "float32", given_state=False)


def test_mask_semantics_by_hand():
    """One sequence, written out: masked steps keep the state and repeat the previous output (zeros
    before the first counted step); bidirectional outputs are zero there; reversal is of the whole
    sequence."""
    mask = np.array([[False, True, False, True, False]])
    counted = [1, 3]
    for direction, options in DIRECTIONS.items():
        model = multirnn.RecurrentSpec(2, 3, cell="gru", reset_after=True, **options)
        params, inputs = make_case(model, seed=4, steps=5, batch=1)
        state = random_state(model, 1, seed=5, dtype="float64")
        out, final = multirnn.forward(model, params, inputs, state, mask=mask)
        alone, alone_final = multirnn.forward(model, params, inputs[counted], state)  # counted steps only
        np.testing.assert_array_equal(flat_arrays(model, final)[0], flat_arrays(model, alone_final)[0])
        if direction == "bidirectional":
            np.testing.assert_array_equal(out[counted], alone)
            np.testing.assert_array_equal(out[[0, 2, 4]], 0.0)
        elif direction == "go-backwards":  # output position t is input step 4 - t; computed order
            np.testing.assert_array_equal(out[0], 0.0)  # input step 4: masked, nothing run yet
            np.testing.assert_array_equal(out[[1, 2, 3, 4]], alone[[0, 0, 1, 1]])
        elif direction == "reverse":  # runs from step 4 down; outputs in input order
            np.testing.assert_array_equal(out[[0, 1, 2, 3]], alone[[0, 0, 1, 1]])
            np.testing.assert_array_equal(out[4], 0.0)
        else:
            np.testing.assert_array_equal(out[0], 0.0)
            np.testing.assert_array_equal(out[[1, 2, 3, 4]], alone[[0, 0, 1, 1]])


def test_full_mask_equals_no_mask(backend_or_numpy):
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", reverse=True)
    params, inputs = make_case(model, steps=5, batch=3)
    masked = multirnn.forward(model, params, inputs, backend=backend_or_numpy, mask=np.ones((3, 5), bool))
    plain = multirnn.forward(model, params, inputs, backend=backend_or_numpy)
    np.testing.assert_array_equal(masked[0], plain[0])


def test_bidirectional_suffix_mask_equals_lengths(backend_or_numpy):
    """A suffix mask of a bidirectional model is the padded batch of ``lengths`` (state kept through
    the padding the reversed run starts with): it takes that path, fused kernels included."""
    model = multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=True, bidirectional=True)
    params, inputs = make_case(model, steps=5, batch=3)
    lengths = np.array([5, 2, 0])
    by_mask = multirnn.forward(model, params, inputs, backend=backend_or_numpy,
                               mask=np.arange(5)[None, :] < lengths[:, None])
    by_lengths = multirnn.forward(model, params, inputs, backend=backend_or_numpy, lengths=lengths)
    np.testing.assert_array_equal(by_mask[0], by_lengths[0])


def test_unidirectional_suffix_mask_repeats_the_last_output():
    """Where lengths gives zeros after a sequence (torch/ONNX), a mask repeats its last output (Keras)."""
    model = multirnn.GRUScratch(3, 4)
    params, inputs = make_case(model, steps=5, batch=2)
    lengths = np.array([3, 5])
    by_mask, _ = multirnn.forward(model, params, inputs, mask=np.arange(5)[None, :] < lengths[:, None])
    by_lengths, _ = multirnn.forward(model, params, inputs, lengths=lengths)
    np.testing.assert_array_equal(by_lengths[3:, 0], 0.0)
    np.testing.assert_array_equal(by_mask[3:, 0], by_mask[[2, 2], 0])
    np.testing.assert_array_equal(by_mask[:3], by_lengths[:3])


@pytest.mark.parametrize("mask, error, match", [
    (np.ones((2, 3), int), TypeError, "mask must have dtype bool, got int"),
    (np.ones((3, 2), bool), ValueError, r"mask must have shape \(batch, num_steps\) = \(2, 3\)"),
    (np.ones(2, bool), ValueError, r"mask must have shape \(batch, num_steps\)"),
    ([[True] * 3] * 2, TypeError, "mask must be a bool numpy.ndarray of shape"),
])
@pytest.mark.parametrize("entry", ["forward", "gradients"])
def test_bad_mask(entry, mask, error, match, backend_or_numpy):
    model = multirnn.RNNScratch(3, 4)
    params, inputs = make_case(model, steps=3, batch=2)
    with pytest.raises(error, match=match):
        getattr(multirnn, entry)(model, params, inputs, backend=backend_or_numpy, mask=mask)


def test_mask_and_lengths_are_exclusive():
    model = multirnn.RNNScratch(3, 4)
    params, inputs = make_case(model, steps=3, batch=2)
    with pytest.raises(ValueError, match="pass lengths or mask, not both"):
        multirnn.forward(model, params, inputs, lengths=np.array([3, 1]), mask=np.ones((2, 3), bool))


def test_masked_go_backwards_stack_is_refused():
    model = multirnn.RecurrentSpec(3, 4, num_layers=2, reverse=True, keep_order=False)
    params, inputs = make_case(model, steps=3, batch=2)
    with pytest.raises(ValueError, match="mask is not supported with reverse=True, keep_order=False"):
        multirnn.forward(model, params, inputs, mask=MASK[:2, :3])
