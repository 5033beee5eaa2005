"""What every reader of a source model returns: the spec and canonical params it found, and -- where
the source can run -- a way to run it in its own framework, so the conversion can be proven.

A reader (``multirnn.port.<framework>.read``) must account for its whole source: every array is
consumed and every config field, attribute or graph op that can change the computed function is either
represented exactly or refused with ``UnrepresentableError`` naming it. Plain NumPy; no framework.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from multirnn.spec import RecurrentSpec

# What a source's outputs are: every step's outputs (multirnn.forward's outputs), or only the final
# hidden state of the last layer, directions concatenated (Keras return_sequences=False).
OUTPUT_KINDS = ("sequence", "last")


@dataclasses.dataclass(frozen=True)
class SourceRun:
    """The source model, run by its own framework on NumPy inputs.

    ``call(inputs, state) -> (outputs, state)``: inputs in the model's layout (``batch_first`` or
    time-major) and dtype; ``state`` in multirnn's nested convention, or None for the source's own
    initial state (zeros, or the stored one). It returns outputs (see ``outputs``) and the final state
    in the nested convention, or None for the state when the source does not expose it.
    """

    call: Callable[[Any, Any], tuple[Any, Any]]
    framework: str  # e.g. "keras 3.15.1", "onnxruntime 1.32.0"
    dtype: str = "float32"
    takes_state: bool = True  # False: the source always starts from its own initial state
    steps: int | None = None  # a fixed sequence length baked into the source, if any
    batch: int | None = None  # a fixed batch size baked into the source, if any
    outputs: str = "sequence"  # one of OUTPUT_KINDS

    def __post_init__(self):
        if self.outputs not in OUTPUT_KINDS:
            raise ValueError(f"outputs must be one of {OUTPUT_KINDS}, got {self.outputs!r}")


@dataclasses.dataclass
class Loaded:
    """A source model read into multirnn. Unpacks to ``(model, params)`` -- unless the source stores an
    initial state, which unpacking would drop: then unpacking raises and the attributes are the way.

    ``initial_state``: a state stored in the source (ONNX ``initial_h`` initializer, a learned torch h0),
    in the nested convention, or None when the source starts from zeros. Run the model with it to
    compute what the source computes: ``multirnn.forward(model, params, x, loaded.initial_state)``.
    ``mask_value``: the source masks a step whose input features all equal it (Keras ``Masking``), or
    None; run the model with ``multirnn.forward(model, params, x, mask=loaded.mask_for(x))``.
    ``run``: the source in its own framework (None for weights-only sources, which cannot run).
    ``origin``: what was read, for messages. ``verification``: set once the conversion is proven.
    """

    model: RecurrentSpec
    params: dict
    initial_state: Any = None
    run: SourceRun | None = None
    origin: str = ""
    verification: Any = None
    notes: tuple = ()  # facts the user should know (e.g. "spec completed from flags: cell, ...")
    native: bool = False  # multirnn's own file: nothing was converted, so there is nothing to prove
    why_not_run: str = "it holds weights only"  # when run is None: why the source cannot be run
    mask_value: float | None = None

    def mask_for(self, inputs):
        """The ``mask`` (bool (batch, num_steps)) the source computes from ``inputs`` (model layout):
        False where every feature equals ``mask_value`` (Keras Masking); None without a mask."""
        import numpy as np

        if self.mask_value is None:
            return None
        keep = np.any(np.asarray(inputs) != self.mask_value, axis=-1)
        return keep if self.model.batch_first else np.ascontiguousarray(keep.T)

    def __iter__(self):
        if self.initial_state is not None:  # (model, params) alone would start from zeros: not the source
            raise ValueError(f"{self.origin or 'the source'} has a stored initial state, so (model, params) "
                             "alone compute something else: use loaded.model, loaded.params and "
                             "loaded.initial_state (multirnn.forward(model, params, x, loaded.initial_state))")
        if self.mask_value is not None:  # (model, params) alone would count the masked steps
            raise ValueError(f"{self.origin or 'the source'} masks steps whose features equal "
                             f"{self.mask_value}, so (model, params) alone compute something else: use "
                             "multirnn.forward(loaded.model, loaded.params, x, mask=loaded.mask_for(x))")
        return iter((self.model, self.params))
