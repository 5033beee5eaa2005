"""``multirnn verify A B``: do two saved models compute the same function?

Each side is loaded through the front door (``port.load``, which proves its own conversion) and run by
its own framework -- or, for a weights-only file, by the NumPy reference on its converted params -- on
the same seeded probes; every side is held against the float64 reference of side A's params.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from multirnn.compare import TOLERANCES, error

from .verify import (PROBE_SHAPES, ConversionMismatch, broadcast_state, flat_arrays, last_outputs,
                     probe_inputs)

# Spec fields that do not change the computed function (layout is handled by the probes, dropout is
# inactive at inference, sigma only draws initial weights).
_NOT_THE_FUNCTION = ("batch_first", "dropout", "sigma")


def _function_fields(model) -> dict:
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in _NOT_THE_FUNCTION}


def _to_layout(model, x):
    return np.ascontiguousarray(x.swapaxes(0, 1)) if model.batch_first else x


def _side_outputs(loaded, inputs, state, batch):
    """(outputs in time-major layout or last-state form, state or None, kind, dtype) of one side."""
    from multirnn import api
    from multirnn.state import map_state

    model, run = loaded.model, loaded.run
    if run is None:  # weights only: the converted params on the reference
        params = {k: np.asarray(v, np.float64) for k, v in loaded.params.items()}
        start = state if state is not None else broadcast_state(model, loaded.initial_state, batch)
        out, final = api.forward(model, params, _to_layout(model, inputs), start)
        dtype = next(iter(loaded.params.values())).dtype.name
        return _to_layout(model, out), final, "sequence", dtype
    cast = None if state is None else map_state(model, state, lambda a: a.astype(run.dtype))
    out, final = run.call(_to_layout(model, inputs).astype(run.dtype), cast)
    out = np.asarray(out)
    return (_to_layout(model, out) if run.outputs == "sequence" else out), final, run.outputs, run.dtype


def compare_pair(paths, loaders, seed: int = 0) -> dict:
    """The report of ``multirnn verify``: one row per side, each with its max errors against the
    float64 reference of the first side's params. ``loaders``: one zero-argument callable per side
    returning its ``Loaded`` (a ConversionMismatch or refusal there becomes that side's error)."""
    from multirnn import api

    sides, rows = [], []
    for label, path, load in zip("AB", paths, loaders):
        row = {"side": label, "file": str(path)}
        try:
            loaded = load()
        except ConversionMismatch as exc:
            rows.append({**row, "error": f"conversion mismatch: {exc}", "pass": False})
            continue
        run = loaded.run
        row.update(framework=run.framework if run else "weights only (NumPy reference)", 
                   model=repr(loaded.model), **{"pass": False})
        sides.append((row, loaded))
        rows.append(row)
    report = {"rows": rows, "pass": False}
    if len(sides) < 2:
        return report
    (_, a), (_, b) = sides
    fa, fb = _function_fields(a.model), _function_fields(b.model)
    if fa != fb:
        differ = {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}
        report["error"] = f"the specs differ: {differ} (A, B)"
        return report
    if a.mask_value != b.mask_value:  # a Keras Masking counts different steps on some inputs
        report["error"] = f"the masks differ: mask_value {a.mask_value} and {b.mask_value} (A, B)"
        return report
    reference = dataclasses.replace(a.model, batch_first=False)
    params64 = {k: np.asarray(v, np.float64) for k, v in a.params.items()}
    every_side_takes_state = all(s.run is None or s.run.takes_state for _, s in sides)
    fixed = [(s.run.steps, s.run.batch) for _, s in sides if s.run is not None]
    for index, (steps, batch) in enumerate(PROBE_SHAPES):
        steps = next((f[0] for f in fixed if f[0]), steps)
        batch = next((f[1] for f in fixed if f[1]), batch)
        inputs, random_state = probe_inputs(reference, steps, batch, seed + index)
        given = random_state if (index > 0 and every_side_takes_state) else None
        start = given if given is not None else broadcast_state(a.model, a.initial_state, batch)
        ref_out, ref_state = api.forward(reference, params64, inputs, start)
        for row, side in sides:
            out, final, kind, dtype = _side_outputs(side, inputs, given, batch)
            want = ref_out if kind == "sequence" else last_outputs(reference, ref_state)
            row["dtype"], row["tolerance"] = dtype, TOLERANCES[dtype]
            row["outputs"] = max(row.get("outputs", 0.0),
                                 error(out, want, dtype) if out.shape == want.shape else float("inf"))
            if final is not None:
                errors = [error(x, y, dtype) if x.shape == y.shape else float("inf")
                          for x, y in zip(flat_arrays(final), flat_arrays(ref_state))]
                row["states"] = max([row.get("states", 0.0)] + errors)
    for row, _ in sides:
        row["pass"] = all(row.get(k, 0.0) <= row["tolerance"] for k in ("outputs", "states"))
    report["pass"] = all(r["pass"] for r in rows)
    return report


def format_report(report: dict) -> str:
    lines = [f"{'side':<5} {'framework':<34} {'dtype':<8} {'outputs':>9} {'states':>9}  result  file"]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"{r['side']:<5} {'-':<34} {'-':<8} {'-':>9} {'-':>9}  FAIL    {r['file']}: {r['error']}")
            continue
        states = f"{r['states']:.2e}" if "states" in r else "-"
        outputs = f"{r['outputs']:.2e}" if "outputs" in r else "-"
        lines.append(f"{r['side']:<5} {r['framework']:<34} {r.get('dtype', '-'):<8} {outputs:>9} {states:>9}  "
                     f"{'pass' if r['pass'] else 'FAIL':<6}  {r['file']}")
    if "error" in report:
        lines.append(f"FAIL: {report['error']}")
    lines.append("same function" if report["pass"] else "NOT the same function (or a side failed to load)")
    lines.append("errors: against the float64 reference of A's params; float64 max abs, float32 max abs "
                 "relative to the largest reference magnitude")
    return "\n".join(lines)
