"""Long sequences, gradient clipping and determinism on every backend."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import assert_close, flat_arrays, make_case, random_state

import multirnn
from multirnn.state import flatten_state

LONG_MODEL = multirnn.RNNScratch(2, 3)
LONG_STEPS = 10_000


@pytest.fixture(scope="module")
def long_case():
    """10,000 steps, tiny sizes; the reference's outputs and gradients, computed once. The loss is
    the mean (cotangent 1/steps) so gradients stay O(1) and the absolute float64 tolerance applies."""
    params, inputs = make_case(LONG_MODEL, seed=0, steps=LONG_STEPS, batch=2, scale=5.0)
    cotangent = np.full((LONG_STEPS, 2, 3), 1.0 / LONG_STEPS)
    out, state = multirnn.forward(LONG_MODEL, params, inputs)
    grads = multirnn.gradients(LONG_MODEL, params, inputs, cotangent=cotangent)
    return params, inputs, cotangent, out, state, grads


def test_long_sequence_runs_without_recursion(backend_or_numpy, long_case):
    """10,000 steps forward and backward match the reference, under a recursion limit far below the
    sequence length (so nothing recurses per step) and with finite results."""
    params, inputs, cotangent, ref_out, ref_state, ref_grads = long_case
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(900)  # pytest + tracing use a few hundred frames; one per step would break
    try:
        out, state = multirnn.forward(LONG_MODEL, params, inputs, backend=backend_or_numpy)
        grads = multirnn.gradients(LONG_MODEL, params, inputs, backend=backend_or_numpy,
                                   cotangent=cotangent)
    finally:
        sys.setrecursionlimit(limit)
    assert out.shape == (LONG_STEPS, 2, 3)
    assert_close(out, ref_out, "float64", "outputs")
    assert_close(state, ref_state, "float64", "state")
    for name in params:
        assert_close(grads[name], ref_grads[name], "float64", f"d/d{name}")


def exploding_case(steps=60):
    """relu RNN with W_hh = 2·I: the gradient grows like 2**steps (about 1e19 here). The loss is
    -sum(outputs) (cotangent -1), so descent makes W_hh larger still: unclipped, one step overflows."""
    model = multirnn.RNNScratch(2, 3, nonlinearity="relu")
    params = {"W_xh": np.full((2, 3), 0.5), "W_hh": 2.0 * np.eye(3), "b_h": np.full(3, 0.1)}
    inputs = np.abs(np.random.default_rng(0).normal(size=(steps, 2, 2)))
    return model, params, inputs


def test_clipping_keeps_training_finite(backend_or_numpy):
    model, params, inputs = exploding_case()
    cotangent = -np.ones((inputs.shape[0], 2, 3))
    grads = multirnn.gradients(model, params, inputs, backend=backend_or_numpy, cotangent=cotangent)
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))  # independent
    assert norm > 1e15, "the case must really explode"
    assert multirnn.global_norm(grads) == pytest.approx(norm, rel=1e-12)

    clipped = multirnn.clip_by_global_norm(grads, max_norm=1.0)
    assert multirnn.global_norm(clipped) == pytest.approx(1.0, rel=1e-12)
    for name in grads:  # same direction, scaled by 1/norm
        np.testing.assert_allclose(clipped[name], grads[name] / norm, rtol=1e-12, atol=0)

    stepped = {k: params[k] - 0.1 * clipped[k] for k in params}
    out, _ = multirnn.forward(model, stepped, inputs, backend=backend_or_numpy)
    assert np.all(np.isfinite(out))
    naive = {k: params[k] - 0.1 * grads[k] for k in params}  # the unclipped step blows up
    with np.errstate(over="ignore", invalid="ignore"):
        out_naive, _ = multirnn.forward(model, naive, inputs, backend=backend_or_numpy)
    assert not np.all(np.isfinite(out_naive))


def test_clipping_leaves_small_gradients_alone():
    grads = {"a": np.array([0.3, 0.4], np.float32), "b": np.zeros((2, 2), np.float32)}
    clipped = multirnn.clip_by_global_norm(grads, 1.0)
    for name in grads:
        np.testing.assert_array_equal(clipped[name], grads[name])
        assert clipped[name].dtype == np.float32 and clipped[name] is not grads[name]
    assert multirnn.global_norm({"huge": np.array([1e200, 1e200])}) == pytest.approx(np.sqrt(2) * 1e200)


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e-160, 5e37, 1.0])
def test_global_norm_neither_overflows_nor_underflows(scale):
    # float64 squares of 1e200 overflow, of 1e-160 and 1e-200 underflow: the norm must not care
    dtype = np.float32 if scale == 5e37 else np.float64
    grads = {"a": np.array([3.0, 0.0], dtype) * dtype(scale), "b": np.array([[4.0]], dtype) * dtype(scale)}
    want = np.hypot(float(grads["a"][0]), float(grads["b"][0, 0]))  # 5 * scale, as rounded to dtype
    assert want == pytest.approx(5.0 * scale, rel=1e-7)
    assert multirnn.global_norm(grads) == pytest.approx(want, rel=1e-15, abs=0)


def test_global_norm_ignores_memory_layout():
    # a backend may hand back a transposed view; the norm is summed in one order all the same (a sum
    # in memory order differs in the last bit for about half of these draws)
    for seed in range(8):
        weights = np.random.default_rng(seed).normal(size=(300, 200)).astype(np.float32)
        transposed = np.ascontiguousarray(weights.T).T
        assert not transposed.flags.c_contiguous
        assert multirnn.global_norm({"w": transposed}) == multirnn.global_norm({"w": weights.copy()})
    assert multirnn.global_norm({}) == 0.0 and multirnn.global_norm({"z": np.zeros(3)}) == 0.0


@pytest.mark.parametrize("grads, max_norm, error, match", [
    ({"a": np.ones(2)}, 0.0, ValueError, r"max_norm must be a positive finite number, got 0.0"),
    ({"a": np.ones(2)}, float("inf"), ValueError, r"max_norm must be a positive finite number"),
    ({"a": np.ones(2)}, "1", ValueError, r"max_norm must be a positive finite number, got '1'"),
    ({"a": np.array([1.0, np.nan])}, 1.0, ValueError, r"grads must be finite .* \['a'\]"),
    ({"a": [1.0]}, 1.0, TypeError, r"grads\['a'\] must be a float numpy.ndarray, got list"),
    ([np.ones(2)], 1.0, TypeError, r"grads must be a dict of numpy arrays, got list"),
])
def test_clipping_bad_input(grads, max_norm, error, match):
    with pytest.raises(error, match=match):
        multirnn.clip_by_global_norm(grads, max_norm)


def test_same_seed_same_inputs_bit_identical(backend_or_numpy, dtype="float32"):
    """Twice the same call on one backend gives the very same bits (outputs, state, gradients)."""
    model = multirnn.RecurrentSpec(3, 4, cell="lstm", bidirectional=True)
    lengths = np.array([5, 3, 0])

    def run_once():
        params, inputs = make_case(model, seed=11, steps=5, batch=3, dtype=dtype)
        state = random_state(model, 3, seed=12, dtype=dtype)
        out, final = multirnn.forward(model, params, inputs, state, backend=backend_or_numpy,
                                      lengths=lengths)
        grads = multirnn.gradients(model, params, inputs, state, backend=backend_or_numpy,
                                   lengths=lengths)
        return [out] + [a for unit in flatten_state(model, final) for a in unit] + \
            [grads[k] for k in sorted(grads)]

    first, second = run_once(), run_once()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(multirnn.init_params(model, 5)["bwd.W_xc"],
                                  multirnn.init_params(model, 5)["bwd.W_xc"])



def digests(names) -> dict:
    """SHA-256 of outputs, state and gradients of a fixed float32 case with lengths, per backend."""
    import hashlib

    from multirnn.params import randomize_biases

    model = multirnn.RecurrentSpec(3, 4, cell="gru", num_layers=2, bidirectional=True, reset_after=True)
    params = randomize_biases(model, multirnn.init_params(model, 21, "float32"), 22, 0.5)
    inputs = np.random.default_rng(23).normal(size=(6, 3, 3)).astype("float32")
    lengths = np.array([6, 4, 1])
    result = {}
    for backend in names:
        digest = hashlib.sha256()
        out, state = multirnn.forward(model, params, inputs, backend=backend, lengths=lengths)
        grads = multirnn.gradients(model, params, inputs, backend=backend, lengths=lengths)
        for array in [out, *flat_arrays(model, state), *[grads[k] for k in sorted(grads)]]:
            digest.update(np.ascontiguousarray(array).tobytes())
        result[backend] = digest.hexdigest()
    return result


def test_bit_identical_across_processes():
    """Run to run means separate processes too: a fresh interpreter gives the very same bits as this
    one on every backend (one subprocess for all backends, to keep import time down)."""
    import subprocess
    import tempfile

    from conftest import load_backend

    from multirnn import backends

    names = ["numpy"]
    for name in backends.FRAMEWORKS:
        try:
            load_backend(name)
            names.append(name)
        except pytest.skip.Exception:
            pass
    fresh = subprocess.run([sys.executable, __file__, *names], check=True, text=True,
                           capture_output=True, cwd=tempfile.gettempdir()).stdout
    there = dict(parts for parts in map(str.split, fresh.splitlines())
                 if len(parts) == 2 and parts[0] in names)  # skip any framework chatter
    assert there == digests(names)


if __name__ == "__main__":  # the fresh process of test_bit_identical_across_processes
    for backend_name, hex_digest in digests(sys.argv[1:]).items():
        print(backend_name, hex_digest)
