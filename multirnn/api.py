"""The public functions: one spec, any backend, NumPy arrays in and out."""
from __future__ import annotations

import numpy as np

from . import validate
from .dropout import dropout_masks
from .spec import RecurrentSpec
from .state import nest_state


def _prepare(model, params, inputs, state, backend, lengths, training, dropout_seed):
    """Validate everything before any backend runs; returns the backend and numpy, time-major
    arguments (lengths None when every sequence is full: the unmasked fast path)."""
    from multirnn import backends  # the registry imports no framework itself

    validate.check_model(model)
    dtype = validate.check_params(model, params)
    xs = validate.check_inputs(model, inputs, dtype)
    flat = validate.check_state(model, state, xs.shape[1], dtype)
    lengths = validate.check_lengths(lengths, xs.shape[1], xs.shape[0])
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    masks = dropout_masks(model, xs.shape[0], xs.shape[1], dropout_seed, dtype) if training else None
    return backends.get(backend), dtype, xs, flat, {"masks": masks, "lengths": lengths}


def _user_layout(model: RecurrentSpec, ys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ys.swapaxes(0, 1)) if model.batch_first else ys


def forward(model: RecurrentSpec, params: dict, inputs: np.ndarray, state=None, backend: str = "numpy",
            lengths=None, *, training: bool = False, dropout_seed=None):
    """Run ``model`` with ``params`` on ``inputs`` using ``backend``; returns ``(outputs, state)``.

    inputs: (num_steps, batch, num_inputs), or (batch, num_steps, num_inputs) when model.batch_first,
    in the params' dtype. state: see multirnn.spec (None = zeros). outputs: same layout as inputs with
    model.output_size features. A zero-length sequence gives empty outputs and the state unchanged.

    lengths (optional, ints of shape (batch,), 0 <= lengths[b] <= num_steps) makes a padded batch, as
    torch packed sequences / ONNX sequence_lens: sequence b is its first lengths[b] steps; outputs at
    later steps are zero, its final state is the state after its own last step (the initial state
    when lengths[b] == 0), and a bidirectional backward direction reverses each sequence within its
    own length. Inputs, params and state must be finite.

    With ``training=True`` and ``model.dropout > 0``, dropout masks between layers are drawn in NumPy
    from ``dropout_seed``, so every backend drops the same units.
    """
    impl, dtype, xs, flat, extras = _prepare(model, params, inputs, state, backend, lengths, training,
                                             dropout_seed)
    if xs.shape[0] == 0:
        ys = np.zeros((0, xs.shape[1], model.output_size), dtype)
        return _user_layout(model, ys), nest_state(model, [tuple(a.copy() for a in u) for u in flat])
    ys, finals = impl.forward(model, params, np.ascontiguousarray(xs), flat, **extras)
    return _user_layout(model, ys), nest_state(model, finals)


def gradients(model: RecurrentSpec, params: dict, inputs: np.ndarray, state=None,
              backend: str = "numpy", cotangent: np.ndarray | None = None, lengths=None, *,
              training: bool = False, dropout_seed=None) -> dict[str, np.ndarray]:
    """Gradients of ``sum(outputs * cotangent)`` (cotangent defaults to ones) for every parameter,
    computed by the backend's own autodiff (by hand-written BPTT for ``numpy``). ``lengths``,
    ``training`` and ``dropout_seed`` as in forward: the cotangent at padded steps has no effect."""
    impl, dtype, xs, flat, extras = _prepare(model, params, inputs, state, backend, lengths, training,
                                             dropout_seed)
    steps, batch = xs.shape[:2]
    out_shape = (batch, steps) if model.batch_first else (steps, batch)
    if cotangent is None:
        cotangent = np.ones(out_shape + (model.output_size,), dtype)
    cotangent = validate.check_array("cotangent", cotangent, out_shape + (model.output_size,), dtype)
    if steps == 0:
        return {name: np.zeros_like(value) for name, value in params.items()}
    cot = cotangent.swapaxes(0, 1) if model.batch_first else cotangent
    return impl.gradients(model, params, np.ascontiguousarray(xs), flat, np.ascontiguousarray(cot),
                          **extras)


def native_layer(model: RecurrentSpec, params: dict | None = None, backend: str = "torch",
                 seed: int = 0, dtype="float32"):
    """The framework's own trainable layer for ``model`` (torch nn.Module, Keras Layer, bound Flax
    module, Gluon Block) holding ``params`` (or the seeded init); it returns ``(outputs, state)``."""
    from multirnn import backends

    validate.check_model(model)
    if params is not None:
        validate.check_params(model, params)
    if backend == "numpy":
        raise ValueError("backend must be a framework for native_layer, got 'numpy'")
    return backends.get(backend).native_layer(model, params, seed=seed, dtype=dtype)
