"""Input checks shared by every public entry point: fail early, name the argument, say what was expected."""
from __future__ import annotations

import numpy as np

from .params import FLOAT_DTYPES
from .spec import RecurrentSpec
from .state import flatten_state


def check_model(model) -> RecurrentSpec:
    if not isinstance(model, RecurrentSpec):
        raise TypeError(f"model must be a multirnn spec (e.g. RNNScratch), got {type(model).__name__}")
    return model


def check_finite(name: str, value: np.ndarray) -> np.ndarray:
    """No nan/inf: one would silently poison every later step, so fail here and say where."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(value)):  # fast path: nan/inf anywhere makes the sum non-finite
            return value
    if not np.all(np.isfinite(value)):  # the sum may also have overflowed: check exactly
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
        raise ValueError(f"{name} must be finite, got {value[bad]} at index {bad} "
                         f"({int(np.sum(~np.isfinite(value)))} non-finite values)")
    return value


def check_params(model: RecurrentSpec, params, finite: bool = True) -> np.dtype:
    """Exactly the canonical keys and shapes, one float dtype (and finite values unless
    ``finite=False``). Returns that dtype."""
    return check_param_dict(model.param_shapes(), params, f"the layout of {model}", finite)


def check_param_dict(expected: dict, params, layout: str, finite: bool = True) -> np.dtype:
    """``params`` has exactly the names and shapes of ``expected`` (described as ``layout`` in
    errors), one float dtype, finite values unless ``finite=False``. Returns that dtype."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of numpy arrays, got {type(params).__name__}")
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise ValueError(f"params do not match {layout}: missing {missing}, unexpected {extra}")
    dtypes = set()
    for name, shape in expected.items():
        value = params[name]
        if not isinstance(value, np.ndarray):
            raise TypeError(f"params[{name!r}] must be a numpy.ndarray, got {type(value).__name__}")
        if value.shape != shape:
            raise ValueError(f"params[{name!r}] must have shape {shape}, got {value.shape}")
        if value.dtype.name not in FLOAT_DTYPES:
            raise TypeError(f"params[{name!r}] must be float32 or float64, got {value.dtype}")
        if finite:
            check_finite(f"params[{name!r}]", value)
        dtypes.add(value.dtype)
    if len(dtypes) != 1:
        raise TypeError(f"params must share one dtype, got {sorted(d.name for d in dtypes)}")
    return dtypes.pop()


def check_array(name: str, value, shape: tuple, dtype: np.dtype, finite: bool = True) -> np.ndarray:
    """A numpy array of exactly ``shape`` (None = any size) and ``dtype``, finite unless told not."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(value).__name__}")
    shown = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        raise ValueError(f"{name} must have shape {shown}, got {value.shape}")
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (the params' dtype), got {value.dtype}")
    return check_finite(name, value) if finite else value


def check_inputs(model: RecurrentSpec, inputs, dtype: np.dtype) -> np.ndarray:
    """Returns the inputs time-major: (num_steps, batch, num_inputs)."""
    layout = ("batch", "num_steps") if model.batch_first else ("num_steps", "batch")
    if isinstance(inputs, np.ndarray) and inputs.ndim != 3:
        raise ValueError(f"inputs must have rank 3 {layout + ('num_inputs',)}, got shape {inputs.shape}")
    if isinstance(inputs, np.ndarray) and inputs.shape[2] != model.num_inputs:
        raise ValueError(f"inputs must have num_inputs={model.num_inputs} features on the last axis "
                         f"{layout + ('num_inputs',)}, got shape {inputs.shape}")
    check_array("inputs", inputs, (None, None, model.num_inputs), dtype)
    return inputs.swapaxes(0, 1) if model.batch_first else inputs


def check_state(model: RecurrentSpec, state, batch: int, dtype: np.dtype, learned: bool = False) -> list:
    """The user's nested state (or None = zeros) as the flat per-unit list of multirnn.state.

    A model with ``learn_initial_state`` starts from its params when no state is given: with
    ``learned=True`` each unit is then None (the recurrence broadcasts its h_0/c_0, differentiably);
    a caller that cannot do that gets a ValueError rather than a silent zero state."""
    if state is None and model.learn_initial_state:
        if not learned:
            raise ValueError("this model has learn_initial_state=True: pass a state, or run it through "
                             "multirnn.forward/gradients, which start from its h_0/c_0 params")
        return [None for _ in model.units()]
    if state is None:
        return [tuple(np.zeros((batch, width), dtype) for width in model.state_widths)
                for _ in model.units()]
    _check_nesting(model, state)
    flat = flatten_state(model, state)
    for (layer, direction, _, _), unit in zip(model.units(), flat):
        for k, array in enumerate(unit):
            where = f"state (layer {layer}, {direction}{', ' + 'HC'[k] if model.cell == 'lstm' else ''})"
            check_array(where, array, (batch, model.state_widths[k]), dtype)
    return flat


def check_lengths(lengths, batch: int, num_steps: int) -> np.ndarray | None:
    """Per-sequence lengths: ints of shape (batch,) with 0 <= length <= num_steps (None = all full).
    Returns an int64 array, or None when every sequence is full (the unmasked fast path)."""
    if lengths is None:
        return None
    array = np.asarray(lengths) if isinstance(lengths, (list, tuple)) else lengths
    if not isinstance(array, np.ndarray):
        raise TypeError(f"lengths must be an int numpy.ndarray of shape ({batch},), "
                        f"got {type(lengths).__name__}")
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise TypeError(f"lengths must have an integer dtype, got {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"lengths must have shape (batch,) = ({batch},), got {array.shape}")
    if array.size and (array.min() < 0 or array.max() > num_steps):
        raise ValueError(f"lengths must lie in [0, num_steps={num_steps}], got min {array.min()} "
                         f"max {array.max()}")
    array = array.astype(np.int64)
    return None if np.all(array == num_steps) else array


def check_mask(model: RecurrentSpec, mask, lengths, batch: int, num_steps: int) -> np.ndarray | None:
    """A step mask: bool of shape (batch, num_steps) whatever the input layout (Keras' layout), True
    where a step counts. Returns it time-major (num_steps, batch), or None when every step counts."""
    if mask is None:
        return None
    if lengths is not None:
        raise ValueError("pass lengths or mask, not both (lengths is the fast path for a suffix mask)")
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a bool numpy.ndarray of shape (batch, num_steps) = "
                        f"({batch}, {num_steps}), got {type(mask).__name__}")
    if mask.dtype != bool:
        raise TypeError(f"mask must have dtype bool, got {mask.dtype}")
    if mask.shape != (batch, num_steps):
        raise ValueError(f"mask must have shape (batch, num_steps) = ({batch}, {num_steps}) whatever "
                         f"the input layout, got {mask.shape}")
    if model.reverse and not model.keep_order and model.num_layers > 1:
        # each layer would read the previous one's outputs last step first, against the mask's order
        raise ValueError("mask is not supported with reverse=True, keep_order=False and num_layers > 1")
    return None if mask.all() else np.ascontiguousarray(mask.T)


def _check_nesting(model: RecurrentSpec, state) -> None:
    """Tuples where the convention has tuples, with the right lengths."""
    def expect(value, length, what):
        if not isinstance(value, (tuple, list)) or len(value) != length:
            raise TypeError(f"state: {what} must be a tuple of {length}, got {type(value).__name__}"
                            + (f" of {len(value)}" if isinstance(value, (tuple, list)) else ""))

    def check_direction(value, what):
        if model.cell == "lstm":
            expect(value, 2, f"{what} (an lstm state (H, C))")
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"state: {what} must be a numpy.ndarray H, got {type(value).__name__}")

    def check_layer(value, what):
        if model.bidirectional:
            expect(value, 2, f"{what} (bidirectional: (fwd_state, bwd_state))")
            for direction, part in zip(model.directions, value):
                check_direction(part, f"{what} {direction}")
        else:
            check_direction(value, what)

    if model.num_layers > 1:
        expect(state, model.num_layers, f"the model's state (one entry per layer, {model.num_layers})")
        for layer, value in enumerate(state):
            check_layer(value, f"layer {layer}")
    else:
        check_layer(state, "the state")
