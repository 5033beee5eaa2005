"""Shared fixtures. A backend (or optional package such as onnx) that cannot load is skipped on a user's
machine but FAILS where it is required: a skipped backend must never count as a pass in CI.

Required: MULTIRNN_REQUIRE_BACKENDS, a comma list of names ("torch,tensorflow,jax,onnx,onnxruntime"),
"all" (or "1") or "none"; without it, everything under CI=true, nothing elsewhere."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import multirnn
from multirnn import backends
from multirnn.params import randomize_biases

FRAMEWORKS = backends.FRAMEWORKS
OPTIONAL_PACKAGES = ("onnx", "onnxruntime")  # imported directly by the ONNX tests


def _required() -> frozenset:
    everything = frozenset(FRAMEWORKS + OPTIONAL_PACKAGES)
    setting = os.environ.get("MULTIRNN_REQUIRE_BACKENDS", "").strip().lower()
    if not setting:
        return everything if os.environ.get("CI", "").lower() in ("1", "true", "yes") else frozenset()
    if setting in ("all", "1", "true"):
        return everything
    if setting == "none":
        return frozenset()
    names = frozenset(n.strip() for n in setting.split(",") if n.strip())
    unknown = sorted(names - everything)
    if unknown:
        raise pytest.UsageError(f"MULTIRNN_REQUIRE_BACKENDS names unknown {unknown}; known: {sorted(everything)}")
    return names


REQUIRED = _required()
REQUIRE_ALL = REQUIRED >= frozenset(FRAMEWORKS)


def _why_missing(name: str, exc: Exception) -> str:
    if name == "mxnet" and int(np.__version__.split(".")[0]) >= 2:
        return ("MXNet 1.9.1 (archived) needs numpy < 2, so it is not part of the current stack "
                "(constraints-current.txt); its tests run on the constraints.txt stack")
    return str(exc)

# The one table of cell variants every test draws from (label -> RecurrentSpec fields).
CELL_VARIANTS = {
    "rnn-tanh": {"cell": "rnn"},
    "rnn-relu": {"cell": "rnn", "nonlinearity": "relu"},
    "gru-reset-after": {"cell": "gru", "reset_after": True},
    "gru-reset-before": {"cell": "gru", "reset_after": False},  # d2l's GRUScratch
    "lstm": {"cell": "lstm"},
}

# Tolerances of the issue: float64 absolute, float32 relative to the reference's largest magnitude.
ATOL_FLOAT64 = 1e-10
RTOL_FLOAT32 = 1e-5


def load_backend(name: str):
    """The backend, or skip (user machine) / fail (CI) when its framework is missing."""
    try:
        backend = backends.get(name)
    except backends.BackendUnavailable as exc:
        if name in REQUIRED:
            pytest.fail(f"backend {name} is required here but unavailable: {exc}")
        pytest.skip(_why_missing(name, exc))
    return backend


def require_module(name: str):
    """Import an optional package (onnx, onnxruntime), or skip / fail like load_backend."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if name in REQUIRED:
            pytest.fail(f"{name} is required here but cannot be imported: {exc}")
        pytest.skip(f"{name} is not installed")


@pytest.fixture(autouse=True, scope="module")
def release_compiled_code():
    """After each test module, free JAX's compiled code. XLA:CPU maps three memory regions per compiled
    module and Linux allows a process 65530 (vm.max_map_count): the whole suite in one process passed
    that and segfaulted inside XLA's compiler (measured: ~140 maps per jitted spec, 31k at a fifth of
    the suite). Only costs recompiling in the next module."""
    yield
    if "jax" in sys.modules:
        import jax

        jax.clear_caches()  # also empties the jitted functions multirnn's backends keep


def pytest_sessionstart(session):
    """torch (with the triton of its CUDA builds) before tensorflow, whatever order the tests run in:
    the other order crashes some builds (backends/torch_backend.py)."""
    try:
        backends.get("torch")
    except backends.BackendUnavailable:
        pass  # reported by the tests that need it


@pytest.fixture(params=FRAMEWORKS)
def backend(request) -> str:
    load_backend(request.param)
    return request.param


# Backends that run whole layers in the framework's fused kernel where it computes the spec exactly
# (recurrence.fused_path); their generic step-by-step path must stay exact too.
FUSED_KERNEL_BACKENDS = ("torch", "mxnet")


@pytest.fixture(params=FRAMEWORKS + tuple(f"{name}-generic" for name in FUSED_KERNEL_BACKENDS))
def backend_path(request):
    """Like ``backend``, plus torch and MXNet with their fused kernels switched off: "torch-generic"
    runs the same backend through the generic recurrence. Yields the backend's name."""
    name, _, generic = request.param.partition("-")
    with load_backend(name).fused_kernels(not generic):
        yield name


@pytest.fixture(params=("numpy",) + FRAMEWORKS)
def backend_or_numpy(request) -> str:
    """Every backend including the NumPy reference: for behaviour all of them must share."""
    load_backend(request.param)
    return request.param


def max_error(actual: np.ndarray, expected: np.ndarray, dtype) -> float:
    """Absolute error for float64; for float32, error relative to the reference's largest magnitude."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), "non-finite values"
    err = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    if np.dtype(dtype) == np.float32:
        err /= max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    return err


def tolerance(dtype) -> float:
    return ATOL_FLOAT64 if np.dtype(dtype) == np.float64 else RTOL_FLOAT32


def assert_close(actual, expected, dtype, what=""):
    err = max_error(np.asarray(actual), np.asarray(expected), dtype)
    assert err <= tolerance(dtype), f"{what}: error {err:.3g} > {tolerance(dtype):.0e} ({np.dtype(dtype)})"


def make_case(model, seed=0, steps=5, batch=3, dtype="float64", scale=20.0):
    """Seeded params (weights scaled up from d2l's tiny sigma so the nonlinearities really bend,
    random biases so bias bugs show) and inputs in the model's layout."""
    params = multirnn.init_params(model, seed, "float64")
    params = randomize_biases(model, {k: v * scale for k, v in params.items()}, seed + 1, 0.5)
    rng = np.random.default_rng(seed + 2)
    shape = (batch, steps) if model.batch_first else (steps, batch)
    inputs = rng.normal(size=shape + (model.num_inputs,))
    cast = {k: v.astype(dtype) for k, v in params.items()}
    return cast, inputs.astype(dtype)


def random_state(model, batch, seed, dtype):
    """A nonzero state in the documented nested convention."""
    from multirnn.state import nest_state

    rng = np.random.default_rng(seed)
    flat = [tuple(rng.normal(scale=0.5, size=(batch, width)).astype(dtype) for width in model.state_widths)
            for _ in model.units()]
    return nest_state(model, flat)


def to_float64(tree):
    """Cast arrays (in dicts/tuples/lists) to float64: the reference runs there."""
    if isinstance(tree, dict):
        return {k: to_float64(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_float64(v) for v in tree)
    return None if tree is None else np.asarray(tree, np.float64)


FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "flax", "mxnet")


def run_python(code: str) -> str:
    # Run outside the checkout: the repo root on sys.path would expose its bare backends/ folder.
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          cwd=tempfile.gettempdir()).stdout.strip()


def flat_arrays(model, state):
    """The arrays of a nested state, unit by unit (multirnn.state's flat order)."""
    from multirnn.state import flatten_state

    return [a for unit in flatten_state(model, state) for a in unit]


def check_against_reference(model, params, inputs, state, backend, dtype, cotangent=None, **padding):
    """Outputs, every final state array and every gradient of ``backend`` against the float64
    reference; ``padding``: lengths= or mask=, passed to both."""
    ref_out, ref_state = multirnn.forward(model, to_float64(params), to_float64(inputs),
                                          to_float64(state), **padding)
    out, new_state = multirnn.forward(model, params, inputs, state, backend=backend, **padding)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref_out, dtype, "outputs")
    for k, (got, want) in enumerate(zip(flat_arrays(model, new_state), flat_arrays(model, ref_state),
                                        strict=True)):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype, f"state array {k}")

    ref_grads = multirnn.gradients(model, to_float64(params), to_float64(inputs), to_float64(state),
                                   cotangent=to_float64(cotangent), **padding)
    grads = multirnn.gradients(model, params, inputs, state, backend=backend, cotangent=cotangent, **padding)
    assert sorted(grads) == sorted(params)
    for name in params:
        assert grads[name].shape == params[name].shape
        assert np.any(ref_grads[name] != 0), f"reference gradient of {name} is all zero: weak test"
        assert_close(grads[name], ref_grads[name], dtype, f"d/d{name}")


def check_padded_against_reference(model, backend, dtype, batch, steps, given_state=True, **padding):
    """check_against_reference on a seeded case of (batch, steps) with a random cotangent."""
    params, inputs = make_case(model, seed=1, steps=steps, batch=batch, dtype=dtype)
    state = random_state(model, batch, seed=2, dtype=dtype) if given_state else None
    shape = (batch, steps) if model.batch_first else (steps, batch)
    cotangent = np.random.default_rng(3).normal(size=shape + (model.output_size,)).astype(dtype)
    check_against_reference(model, params, inputs, state, backend, dtype, cotangent, **padding)
