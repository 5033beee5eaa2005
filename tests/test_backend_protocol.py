"""Every backend against the one declared protocol (backends/protocol.py): it has every member, none of
them is the base class's "does not provide" placeholder, and each operation does on tiny arrays what
NumPy does. A new backend learns from this file alone what it still lacks."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from conftest import FUSED_KERNEL_BACKENDS, load_backend

import multirnn
from multirnn import backends, recurrence
from multirnn.backends._base import AbstractBackend
from multirnn.backends.protocol import BackendProtocol

RNG = np.random.default_rng(0)
A = RNG.normal(size=(3, 2, 4)).astype("float32")  # (T, B, width)
W = RNG.normal(size=(4, 5)).astype("float32")
LENGTHS = np.array([3, 1])
TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(params=backends.NAMES)
def backend(request):
    return load_backend(request.param)


def test_protocol_members_each_say_what_they_do():
    methods = [n for n, v in vars(BackendProtocol).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert len(methods) > 25
    for name in methods:
        assert (getattr(BackendProtocol, name).__doc__ or "").strip(), f"{name} has no docstring"
        assert hasattr(AbstractBackend, name), f"AbstractBackend does not declare {name}"
    for name in BackendProtocol.__annotations__:
        assert hasattr(AbstractBackend, name), f"AbstractBackend has no default for {name}"


def test_a_missing_member_fails_with_a_sentence():
    class Partial(AbstractBackend):
        name = "partial"

    with pytest.raises(NotImplementedError, match="partial backend does not provide scan"):
        Partial().scan(None, (), None)


def test_conforms(backend):
    assert isinstance(backend, BackendProtocol)
    optional = set()
    if not backend.has_fused_kernel:
        optional.add("fused_kernel")
    if backend.is_reference:  # the hand-written BPTT is its autodiff; it has no native layer
        optional |= {"value_and_grad", "native_layer"}
    lacking = [n for n in dir(BackendProtocol) if getattr(getattr(type(backend), n, None), "lacking", False)]
    assert sorted(set(lacking) - optional) == [], f"{backend.name} backend lacks {lacking}"
    assert backend.name in backends.NAMES and isinstance(backend.version, str) and backend.version


def near(backend, got, want):
    np.testing.assert_allclose(backend.to_numpy(got), want, **TOL)


def test_conversion_and_elementwise(backend):
    x = backend.asarray(A)
    assert backend.dtype_of(x) == np.float32
    near(backend, x, A)
    near(backend, backend.tanh(x), np.tanh(A))
    near(backend, backend.relu(x), np.maximum(A, 0))
    near(backend, backend.sigmoid(x), 1 / (1 + np.exp(-A)))
    near(backend, backend.swap01(x), A.swapaxes(0, 1))
    near(backend, backend.zeros_state(x, 6), np.zeros((2, 6)))
    near(backend, backend.sum_all(x), A.sum())
    shifted = A - A.max(-1, keepdims=True)
    near(backend, backend.log_softmax(x), shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))


def test_matmul_concat_split(backend):
    x, w = backend.asarray(A), backend.asarray(W)
    near(backend, backend.matmul(x, w), A @ W)
    near(backend, backend.matmul(x[0], w), A[0] @ W)
    parts = backend.split(x, 2)
    assert len(parts) == 2
    for got, want in zip(parts, np.split(A, 2, axis=-1)):
        near(backend, got, want)
    near(backend, backend.concat(parts, axis=-1), A)
    near(backend, backend.concat([x, x], axis=0), np.concatenate([A, A], 0))


def test_select_gather_and_split(backend):
    x = backend.asarray(A)
    keep = np.array([[True], [False]])  # (batch, 1): row 0 new, row 1 old
    near(backend, backend.where(backend.asarray(keep), x[0], x[1]), np.where(keep, A[0], A[1]))
    near(backend, backend.zeros((2, 3, 1), x), np.zeros((2, 3, 1)))
    assert backend.dtype_of(backend.zeros((1,), x)) == np.float32
    order = backend.asindex(np.array([1, 0]))
    near(backend, backend.take(x, order, 1), A[:, ::-1])
    near(backend, backend.take(x[0], order, 0), A[0, ::-1])
    assert [backend.size(x, axis) for axis in range(3)] == list(A.shape)
    for sizes, axis in [((1, 2), 0), ((3,), 0), ((1, 1), 1)]:
        parts = backend.split_sizes(x, sizes, axis)
        assert len(parts) == len(sizes)
        for got, want in zip(parts, np.split(A, np.cumsum(sizes)[:-1], axis=axis)):
            near(backend, got, want)


def test_indexing(backend):
    tokens = np.array([[0, 2], [1, 1]])
    table = RNG.normal(size=(3, 4)).astype("float32")
    like = backend.asarray(table)
    near(backend, backend.one_hot(backend.asindex(tokens), 3, like), np.eye(3)[tokens])
    near(backend, backend.take_rows(like, backend.asindex(tokens)), table[tokens])
    flipped = backend.reverse_padded(backend.asarray(A), backend.asarray(LENGTHS))
    want = A.copy()
    want[:3, 0] = A[2::-1, 0]  # sequence 0: all 3 steps reversed; sequence 1: its one step stays
    near(backend, flipped, want)
    near(backend, backend.flip_time(backend.asarray(A)), A[::-1])
    masked = A.copy()
    masked[1:, 1] = 0  # sequence 1 has one valid step
    near(backend, backend.mask_padded(backend.asarray(A), backend.asarray(LENGTHS)), masked)
    near(backend, backend.last_valid(backend.asarray(A), backend.asarray(LENGTHS)), np.stack([A[2, 0], A[0, 1]]))


def test_scan_over_a_tuple(backend):
    def step(carry, x_and_scale):
        x, scale = x_and_scale
        h = backend.tanh(x * scale + carry[0])
        return (h,), h

    scales = RNG.normal(size=(3, 2, 1)).astype("float32")
    carry, ys = backend.scan(step, (backend.asarray(np.zeros((2, 4), "float32")),),
                             (backend.asarray(A), backend.asarray(scales)))
    h, want = np.zeros((2, 4)), np.zeros_like(A)
    for t in range(3):
        h = want[t] = np.tanh(A[t] * scales[t] + h)
    near(backend, ys, want)
    near(backend, carry[0], h)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan(backend, reverse):
    def step(carry, x):
        h = backend.tanh(x + carry[0] * 0.5)
        return (h,), h

    carry, ys = backend.scan(step, (backend.asarray(np.zeros((2, 4), "float32")),), backend.asarray(A),
                             reverse=reverse)
    h, want = np.zeros((2, 4)), np.zeros_like(A)
    for t in (range(2, -1, -1) if reverse else range(3)):
        h = want[t] = np.tanh(A[t] + h * 0.5)
    near(backend, ys, want)
    near(backend, carry[0], h)


def test_value_and_grad_and_compile(backend):
    def loss(wrt, x):
        return backend.sum_all(backend.tanh(backend.matmul(x, wrt["w"]))), None

    x = A[0]
    want_grad = x.T @ (1 - np.tanh(x @ W) ** 2)
    if backend.is_reference:
        with pytest.raises(NotImplementedError, match="numpy backend does not provide value_and_grad"):
            backend.value_and_grad(loss)
        return
    for fn in (backend.value_and_grad(loss), backend.compile(backend.value_and_grad(loss))):
        (value, aux), grads = fn({"w": backend.asarray(W)}, backend.asarray(x))
        assert aux is None
        near(backend, value, np.tanh(x @ W).sum())
        near(backend, grads["w"], want_grad)

    def outputs(wrt, x):
        return backend.tanh(backend.matmul(x, wrt["w"])), None

    seed = RNG.normal(size=(2, 5)).astype("float32")
    for fn in (backend.value_and_grad(outputs, seeded=True),
               backend.compile(backend.value_and_grad(outputs, seeded=True))):
        (value, aux), grads = fn({"w": backend.asarray(W)}, backend.asarray(x), backend.asarray(seed))
        near(backend, value, np.tanh(x @ W))
        near(backend, grads["w"], x.T @ ((1 - np.tanh(x @ W) ** 2) * seed))


def test_only_the_fused_kernel_backends_say_they_have_one(backend):
    assert backend.has_fused_kernel == (backend.name in FUSED_KERNEL_BACKENDS)


@pytest.mark.parametrize("name", FUSED_KERNEL_BACKENDS)
def test_fused_layer_equals_generic_scan(name):
    """Where a backend has a fused kernel, one layer in it equals the generic recurrence."""
    backend = load_backend(name)
    model = multirnn.RecurrentSpec(4, 3, cell="lstm", bidirectional=True)
    params = {k: backend.asarray(v) for k, v in multirnn.init_params(model, 0, "float32").items()}
    zeros = backend.asarray(np.zeros((2, 3), "float32"))
    states = [(zeros, zeros)] * 2
    assert recurrence.fused_path(backend, model, np.dtype("float32"))
    units = [recurrence.unit_params(params, prefix) for _, _, prefix, _ in model.units()]
    ys, finals = backend.fused_layer(model, units, backend.asarray(A), states)
    with backend.fused_kernels(False):
        assert not recurrence.fused_path(backend, model, np.dtype("float32"))
        want_ys, want_finals = recurrence.run(backend, model, params, backend.asarray(A), states)
    near(backend, ys, backend.to_numpy(want_ys))
    for got, want in zip(finals, want_finals):
        for a, b in zip(got, want):
            near(backend, a, backend.to_numpy(b))


def test_fused_path_rules():
    """The one fused decision, on a stand-in backend: every condition switches it off on its own."""
    class Fused(AbstractBackend):
        name, has_fused_kernel = "fused", True

        def fused_kernel_accepts(self, model, dtype):
            return dtype != np.float64

    ops, f32 = Fused(), np.dtype("float32")
    lstm = multirnn.RecurrentSpec(3, 4, cell="lstm")
    assert recurrence.fused_path(ops, lstm, f32)
    assert not recurrence.fused_path(ops, lstm, np.dtype("float64"))  # the backend's own exception
    assert not recurrence.fused_path(ops, multirnn.RecurrentSpec(3, 4, cell="gru"), f32)  # reset-before
    assert recurrence.fused_path(ops, multirnn.RecurrentSpec(3, 4, cell="gru", reset_after=True), f32)
    with ops.fused_kernels(False):
        assert not recurrence.fused_path(ops, lstm, f32)
    assert not recurrence.fused_path(AbstractBackend(), lstm, f32)  # no fused kernel at all


def test_step_is_forward_one_step_long(backend):
    """backend.step (what multirnn.step calls): NumPy in and out, dropout masks on layer 1's input."""
    model = multirnn.RecurrentSpec(4, 3, cell="gru", num_layers=2, dropout=0.5)
    params = multirnn.init_params(model, 0, "float32")
    state = [(RNG.normal(size=(2, 3)).astype("float32"),) for _ in range(2)]
    mask = np.array([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0]], "float32")
    y, finals = backend.step(model, params, A[0], state, [mask])
    want_ys, want_finals = backends.get("numpy").forward(model, params, A[:1], state, [mask[None]])
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, want_ys[0], **TOL)
    for got, want in zip(finals, want_finals):
        np.testing.assert_allclose(got[0], want[0], **TOL)
    unmasked, _ = backend.step(model, params, A[0], state)
    assert np.abs(unmasked - y).max() > 1e-3  # the mask was applied
