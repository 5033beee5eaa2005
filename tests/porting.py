"""Cases and checks the porting tests share (test_port, test_port_onnx, test_port_cli): model
structures, seeded models, exact-tree equality and the comparison of a framework's run with the reference."""
from __future__ import annotations

import numpy as np
from conftest import CELL_VARIANTS, assert_close, to_float64

import multirnn
from multirnn.state import flatten_state

# (num_layers, bidirectional, batch_first, bias, initial state given): every structure at least once.
STRUCTURES = [(1, False, False, True, True), (1, True, True, True, False), (2, False, True, False, True),
              (2, True, False, True, True)]


def random_model(variant: str, structure: int) -> multirnn.RecurrentSpec:
    layers, bidirectional, batch_first, bias, _ = STRUCTURES[structure]
    rng = np.random.default_rng(100 * structure + len(variant))
    return multirnn.RecurrentSpec(int(rng.integers(1, 5)), int(rng.integers(1, 6)), num_layers=layers,
                                  bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                                  **CELL_VARIANTS[variant])


def assert_matches_reference(model, params, inputs, state, outputs, new_state, what):
    ref_out, ref_state = multirnn.forward(model, to_float64(params), to_float64(inputs), to_float64(state))
    assert outputs.shape == ref_out.shape
    assert_close(outputs, ref_out, "float32", f"{what} outputs")
    got = [a for unit in flatten_state(model, new_state) for a in unit]
    want = [a for unit in flatten_state(model, ref_state) for a in unit]
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        if g is not None:
            assert_close(g, w, "float32", f"{what} state array {k}")


def assert_tree_equal(a, b):
    """Exact equality of nested dicts/lists of arrays (same keys, shapes, dtypes and values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (list(a), list(b))
        for k in a:
            assert_tree_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_equal(x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
