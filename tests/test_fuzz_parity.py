"""Hypothesis: random configurations (cell, layers, direction, sizes, steps, lengths or mask, layout, state)
on every backend against the NumPy float64 reference. Few examples per backend keep CI fast; each new
example is a new spec/shape, so it also exercises the JAX/TF compile caches."""
from __future__ import annotations

import numpy as np
from conftest import CELL_VARIANTS, assert_close, random_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multirnn
from multirnn.params import randomize_biases
from multirnn.state import flatten_state


@st.composite
def configurations(draw):
    model = multirnn.RecurrentSpec(
        num_inputs=draw(st.integers(1, 5), label="num_inputs"),
        num_hiddens=draw(st.integers(1, 5), label="num_hiddens"),
        num_layers=draw(st.integers(1, 2), label="num_layers"),
        bidirectional=draw(st.booleans(), label="bidirectional"),
        bias=draw(st.booleans(), label="bias"),
        batch_first=draw(st.booleans(), label="batch_first"),
        **CELL_VARIANTS[draw(st.sampled_from(sorted(CELL_VARIANTS)), label="cell")])
    steps = draw(st.integers(1, 6), label="steps")
    batch = draw(st.integers(1, 4), label="batch")
    lengths = draw(st.none() | st.lists(st.integers(0, steps), min_size=batch, max_size=batch),
                   label="lengths")
    mask = None if lengths is not None else draw(st.none() | st.lists(
        st.lists(st.booleans(), min_size=steps, max_size=steps), min_size=batch, max_size=batch), label="mask")
    return model, steps, batch, (lengths, mask), draw(st.booleans(), label="given_state"), \
        draw(st.integers(0, 2**16), label="seed")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configurations())
def test_random_configurations_match_reference(backend, config):
    model, steps, batch, (lengths, mask), given_state, seed = config
    rng = np.random.default_rng(seed)
    params = {k: v * 30 for k, v in multirnn.init_params(model, seed, "float64").items()}
    params = randomize_biases(model, params, seed + 1, 0.5)
    layout = (batch, steps) if model.batch_first else (steps, batch)
    inputs = rng.normal(size=layout + (model.num_inputs,))
    cotangent = rng.normal(size=layout + (model.output_size,))
    state = random_state(model, batch, seed + 2, "float64") if given_state else None
    padding = {"lengths": None if lengths is None else np.array(lengths),
               "mask": None if mask is None else np.array(mask, bool)}

    ref_out, ref_state = multirnn.forward(model, params, inputs, state, **padding)
    out, new_state = multirnn.forward(model, params, inputs, state, backend=backend, **padding)
    assert_close(out, ref_out, "float64", "outputs")
    for got, want in zip(flatten_state(model, new_state), flatten_state(model, ref_state)):
        for a, b in zip(got, want):
            assert_close(a, b, "float64", "state")
    ref_grads = multirnn.gradients(model, params, inputs, state, cotangent=cotangent, **padding)
    grads = multirnn.gradients(model, params, inputs, state, backend=backend, cotangent=cotangent,
                               **padding)
    for name in params:
        assert_close(grads[name], ref_grads[name], "float64", f"d/d{name}")
