"""Property-based parity over shapes (hypothesis), num_steps = 1 and batch = 1 included."""
from __future__ import annotations

from conftest import assert_close, make_case, to_float64
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import multirnn
from multirnn.state import flatten_state

shapes = st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes, bidirectional=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**16))
@example(shape=(1, 1, 1, 1), bidirectional=True, relu=False, seed=0)
@example(shape=(1, 3, 2, 4), bidirectional=False, relu=True, seed=1)
def test_any_shape_matches_reference(backend, shape, bidirectional, relu, seed):
    steps, batch, inputs_size, hidden = shape
    spec = multirnn.BiRNNScratch if bidirectional else multirnn.RNNScratch
    model = spec(inputs_size, hidden, nonlinearity="relu" if relu else "tanh")
    params, inputs = make_case(model, seed=seed, steps=steps, batch=batch, dtype="float64")
    ref_out, ref_state = multirnn.forward(model, params, inputs)
    out, state = multirnn.forward(model, params, inputs, backend=backend)
    assert out.shape == (steps, batch, model.output_size)
    assert_close(out, ref_out, "float64", "outputs")
    for got, want in zip(flatten_state(model, state), flatten_state(model, ref_state), strict=True):
        assert got[0].shape == (batch, hidden)
        assert_close(got[0], want[0], "float64", "state")
    ref_grads = multirnn.gradients(model, to_float64(params), inputs)
    grads = multirnn.gradients(model, params, inputs, backend=backend)
    for name in params:
        assert_close(grads[name], ref_grads[name], "float64", name)
