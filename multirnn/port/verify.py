"""Proof by execution: run the source in its own framework and the converted model on the NumPy float64
reference, on the same seeded probes, and compare. A conversion that computes something else raises
``ConversionMismatch`` -- it is never handed back.

Probes vary the sequence length and batch size (where the source allows) and start from a random
initial state (where the source takes one); the first probe starts from the source's own initial state.
Tolerances are the parity tolerances (``multirnn.compare.TOLERANCES``): float64 max absolute difference,
float32 max absolute difference relative to the reference's largest magnitude.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from multirnn.compare import TOLERANCES, error

from .source import Loaded

PROBE_SHAPES = ((4, 2), (1, 1), (9, 3))  # (steps, batch)


class ConversionMismatch(ValueError):
    """The converted model computes something other than its source (beyond the parity tolerance)."""


@dataclasses.dataclass(frozen=True)
class Verification:
    framework: str
    dtype: str
    probes: int
    max_error: float  # the largest error over all probes, outputs and states
    tolerance: float

    @property
    def measure(self) -> str:
        return "max abs diff" if self.dtype == "float64" else "max rel diff"

    def __str__(self) -> str:
        return (f"verified against {self.framework}: {self.measure} {self.max_error:.2g} "
                f"on {self.probes} probes (tolerance {self.tolerance:.0e}, {self.dtype})")

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "measure": self.measure}


def flat_arrays(state) -> list:
    """Every array of a nested state, in order ([] for None)."""
    if state is None:
        return []
    if isinstance(state, (tuple, list)):
        return [a for part in state for a in flat_arrays(part)]
    return [np.asarray(state)]


def broadcast_state(model, state, batch: int):
    """A stored state -- (W,), (1, W) or (batch, W) arrays, W each array's width (spec.state_widths) --
    as float64 (batch, W) arrays; None stays None."""
    from multirnn.state import flatten_state, nest_state

    if state is None:
        return None
    return nest_state(model, [tuple(np.broadcast_to(np.asarray(a, np.float64), (batch, width)).copy()
                                    for a, width in zip(unit, model.state_widths))
                              for unit in flatten_state(model, state)])


def last_outputs(model, state, mask=None) -> np.ndarray:
    """The final hidden state of the last layer, directions merged as the outputs are (Keras
    return_sequences=False: concatenated, or summed, multiplied, averaged by ``merge_mode``). With a
    ``mask`` (batch, steps), a sequence with no unmasked step gives zeros, as Keras does."""
    from multirnn.state import flatten_state

    units = [unit[0] for unit in flatten_state(model, state)[-len(model.directions):]]
    if mask is not None:
        units = [np.where(mask.any(axis=1)[:, None], unit, 0.0) for unit in units]
    if len(units) == 1 or model.merge_mode == "concat":
        return np.concatenate(units, axis=-1)
    forward, backward = units
    return {"sum": forward + backward, "mul": forward * backward,
            "ave": (forward + backward) / 2}[model.merge_mode]


def probe_mask(steps: int, batch: int) -> np.ndarray:
    """(batch, steps) bool for a masked source: a masked first and last step, holes (no suffix
    padding), and a sequence with no step at all where the batch has three."""
    keep = (np.arange(steps)[None, :] + 2 * np.arange(batch)[:, None]) % 3 != 0
    if batch >= 3:
        keep[2] = False
    return keep


def probe_inputs(model, steps: int, batch: int, seed: int):
    """Seeded float64 inputs in the model's layout and a random nested initial state."""
    from multirnn.state import nest_state

    rng = np.random.default_rng(seed)
    shape = (batch, steps) if model.batch_first else (steps, batch)
    inputs = rng.normal(size=shape + (model.num_inputs,))
    flat = [tuple(rng.normal(scale=0.5, size=(batch, width)) for width in model.state_widths)
            for _ in model.units()]
    return inputs, nest_state(model, flat)


def prove(loaded: Loaded, *, seed: int = 0) -> Verification:
    """Run ``loaded.run`` and the reference on the probes; raise ConversionMismatch beyond tolerance.
    Sets and returns ``loaded.verification``."""
    from multirnn import api
    from multirnn.state import map_state

    run = loaded.run
    if run is None:
        raise ValueError(f"{loaded.origin or 'this source'} cannot run, so the conversion cannot be proven")
    model, dtype, who = loaded.model, run.dtype, loaded.origin or "the source"
    params64 = {k: np.asarray(v, np.float64) for k, v in loaded.params.items()}
    tol, worst = TOLERANCES[dtype], 0.0
    for index, (steps, batch) in enumerate(PROBE_SHAPES):
        steps, batch = run.steps or steps, run.batch or batch
        inputs, random_state = probe_inputs(model, steps, batch, seed + index)
        given = random_state if (run.takes_state and index > 0) else None
        reference_state = broadcast_state(model, given if given is not None else loaded.initial_state, batch)
        mask = None
        if loaded.mask_value is not None:  # the source's masked steps: its inputs there are mask_value
            keep = probe_mask(steps, batch)
            inputs[~(keep if model.batch_first else keep.T)] = loaded.mask_value
            mask = loaded.mask_for(inputs)
        ref_out, ref_state = api.forward(model, params64, inputs, reference_state, mask=mask)
        cast = None if given is None else map_state(model, given, lambda a: a.astype(dtype))
        out, state = run.call(inputs.astype(dtype), cast)
        expected = ref_out if run.outputs == "sequence" else last_outputs(model, ref_state, mask)
        where = f"probe {index} (steps {steps}, batch {batch}, {'random' if given is not None else 'own'} " \
                f"initial state)"
        pairs = [("outputs", np.asarray(out), expected)]
        pairs += [(f"final state array {i}", a, b) for i, (a, b) in
                  enumerate(zip(flat_arrays(state), flat_arrays(ref_state)))] if state is not None else []
        for what, actual, want in pairs:
            if actual.shape != want.shape:
                raise ConversionMismatch(f"{who}: {where}: {what} have shape {actual.shape} in "
                                         f"{run.framework} but {want.shape} in the converted model")
            err = error(actual, want, dtype)
            if not err <= tol:
                raise ConversionMismatch(
                    f"{who}: the converted model differs from {run.framework} by {err:.3g} "
                    f"({'abs' if dtype == 'float64' else 'rel'}; tolerance {tol:.0e}) in {what}, {where}")
            worst = max(worst, err)
    loaded.verification = Verification(run.framework, dtype, len(PROBE_SHAPES), worst, tol)
    return loaded.verification
