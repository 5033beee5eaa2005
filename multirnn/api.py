"""The public functions: one spec, any backend, NumPy arrays in and out."""
from __future__ import annotations

import numpy as np

from . import masking, validate
from .dropout import dropout_masks
from .spec import RecurrentSpec
from .state import learned_initial_state, nest_state


def _prepare(model, params, inputs, state, backend, lengths, mask, training, dropout_seed):
    """Validate everything before any backend runs; returns the backend and numpy, time-major
    arguments (lengths and mask None when every step counts: the unmasked fast path)."""
    from multirnn import backends  # the registry imports no framework itself

    validate.check_model(model)
    dtype = validate.check_params(model, params)
    xs = validate.check_inputs(model, inputs, dtype)
    flat = validate.check_state(model, state, xs.shape[1], dtype, learned=True)
    step_mask = validate.check_mask(model, mask, lengths, xs.shape[1], xs.shape[0])
    lengths = validate.check_lengths(lengths, xs.shape[1], xs.shape[0])
    if step_mask is not None and model.bidirectional and masking.is_suffix(step_mask):
        # the same numbers (padding first in the reversed run keeps the state): the fused kernels' path
        lengths, step_mask = step_mask.sum(axis=0), None
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    masks = dropout_masks(model, xs.shape[0], xs.shape[1], dropout_seed, dtype) if training else None
    return backends.get(backend), dtype, xs, flat, {"masks": masks, "lengths": lengths,
                                                     "step_mask": step_mask}


def _user_layout(model: RecurrentSpec, ys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ys.swapaxes(0, 1)) if model.batch_first else ys


def forward(model: RecurrentSpec, params: dict, inputs: np.ndarray, state=None, backend: str = "numpy",
            lengths=None, *, mask=None, training: bool = False, dropout_seed=None):
    """Run ``model`` with ``params`` on ``inputs`` using ``backend``; returns ``(outputs, state)``.

    inputs: (num_steps, batch, num_inputs), or (batch, num_steps, num_inputs) when model.batch_first,
    in the params' dtype. state: see multirnn.spec (None = zeros). outputs: same layout as inputs with
    model.output_size features. A zero-length sequence gives empty outputs and the state unchanged.

    lengths (optional, ints of shape (batch,), 0 <= lengths[b] <= num_steps) makes a padded batch, as
    torch packed sequences / ONNX sequence_lens: sequence b is its first lengths[b] steps; outputs at
    later steps are zero, its final state is the state after its own last step (the initial state
    when lengths[b] == 0), and a bidirectional backward direction reverses each sequence within its
    own length. Inputs, params and state must be finite.

    mask (optional, bool of shape (batch, num_steps) in either layout, not with ``lengths``) marks
    the steps that count, in any pattern, as a Keras mask: a masked step keeps every state; the
    outputs there are the previous output (zeros before the first counted step) of a unidirectional
    model and zeros for a bidirectional one; a reversed direction runs the whole padded sequence
    backwards (multirnn.masking, docs/parity.md#masks).

    With ``training=True`` and ``model.dropout > 0``, dropout masks between layers are drawn in NumPy
    from ``dropout_seed``, so every backend drops the same units.
    """
    impl, dtype, xs, flat, extras = _prepare(model, params, inputs, state, backend, lengths, mask,
                                             training, dropout_seed)
    if xs.shape[0] == 0:
        ys = np.zeros((0, xs.shape[1], model.output_size), dtype)
        if state is None and model.learn_initial_state:
            return _user_layout(model, ys), nest_state(model, learned_initial_state(model, params, xs.shape[1]))
        return _user_layout(model, ys), nest_state(model, [tuple(a.copy() for a in u) for u in flat])
    ys, finals = impl.forward(model, params, np.ascontiguousarray(xs), flat, **extras)
    return _user_layout(model, ys), nest_state(model, finals)


def gradients(model: RecurrentSpec, params: dict, inputs: np.ndarray, state=None,
              backend: str = "numpy", cotangent: np.ndarray | None = None, lengths=None, *,
              mask=None, training: bool = False, dropout_seed=None) -> dict[str, np.ndarray]:
    """Gradients of ``sum(outputs * cotangent)`` (cotangent defaults to ones) for every parameter,
    computed by the backend's own autodiff (by hand-written BPTT for ``numpy``). ``lengths``, ``mask``,
    ``training`` and ``dropout_seed`` as in forward: the cotangent at padded steps has no effect (at a
    masked step of a unidirectional model it reaches the output it repeats)."""
    impl, dtype, xs, flat, extras = _prepare(model, params, inputs, state, backend, lengths, mask,
                                             training, dropout_seed)
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


# The layer kinds each backend offers; the first is the default (api=None).
LAYER_APIS = {"torch": ("module",), "tensorflow": ("keras",), "jax": ("linen", "nnx"), "mxnet": ("gluon",)}


def native_layer(model: RecurrentSpec, params: dict | None = None, backend: str = "torch",
                 seed: int = 0, dtype="float32", *, api: str | None = None, **options):
    """The framework's own trainable layer for ``model`` holding ``params`` (or the seeded init).

    ``backend`` names the framework, ``api`` the kind of layer where it has several (LAYER_APIS):
    ``"torch"``: an ``nn.Module``; ``"tensorflow"``: a Keras 3 ``Layer``, which runs on whichever
    Keras backend is configured (``KERAS_BACKEND`` tensorflow, jax or torch); ``"jax"``: a bound Flax
    linen module (``api="linen"``, the default) or a Flax ``nnx.Module`` (``api="nnx"``); ``"mxnet"``:
    a Gluon ``HybridBlock``. Each returns ``(outputs, state)``. ``options`` go to the layer's
    constructor (Keras: ``return_state=False``, ``name=...``). See docs/native-layers.md."""
    from multirnn import backends

    validate.check_model(model)
    if params is not None:
        validate.check_params(model, params)
    if backend not in LAYER_APIS:
        raise ValueError(f"backend must be a framework for native_layer ({sorted(LAYER_APIS)}), "
                         f"got {backend!r}")
    api = api or LAYER_APIS[backend][0]
    if api not in LAYER_APIS[backend]:
        raise ValueError(f"backend {backend!r} has native layers {LAYER_APIS[backend]}, got api={api!r}")
    if api == "keras":
        backends.load(_keras_backend_name())  # the multirnn backend Keras's tensors need, torch first
        from multirnn.backends.keras_layer import RecurrentLayer

        if params is None:
            from .params import init_params

            params = init_params(model, seed, dtype)
        return RecurrentLayer(model, params, seed=seed, **options)
    return backends.get(backend).native_layer(model, params, seed=seed, dtype=dtype, api=api, **options)


def _keras_backend_name() -> str:
    """The Keras backend, read as Keras reads it but without importing keras (which would import its
    framework before the registry could order torch and tensorflow)."""
    import json
    import os
    import sys

    if "keras" in sys.modules:
        return sys.modules["keras"].config.backend()
    name = os.environ.get("KERAS_BACKEND")
    config = os.path.join(os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras"), "keras.json")
    if not name and os.path.exists(config):
        with open(config) as file:
            name = json.load(file).get("backend")
    name = name or "tensorflow"
    if name not in ("tensorflow", "jax", "torch"):
        raise ValueError(f"the multirnn Keras layer runs on the Keras backends tensorflow, jax and torch; "
                         f"KERAS_BACKEND is {name!r}")
    return name
