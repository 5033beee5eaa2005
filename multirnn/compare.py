"""``multirnn compare``: one seeded spec on every installed backend, held against the NumPy float64
reference. The measures are those of the test suite (see the tolerances below and docs/parity.md)."""
from __future__ import annotations

import numpy as np

from . import api, recurrence
from .params import init_params, randomize_biases
from .spec import RecurrentSpec

# float64: max absolute difference; float32: max absolute difference relative to the reference's
# largest magnitude (normwise, so values near zero do not blow the ratio up).
TOLERANCES = {"float64": 1e-10, "float32": 1e-5}


CELL_VARIANTS = {"rnn": {"cell": "rnn"}, "gru": {"cell": "gru"},
                 "gru-after": {"cell": "gru", "reset_after": True}, "lstm": {"cell": "lstm"}}


def default_models(num_inputs=8, num_hiddens=16) -> dict[str, RecurrentSpec]:
    """d2l's RNNScratch and BiRNNScratch, then every cell x direction x depth (1 or 2 layers).
    "gru" resets before the recurrent matmul (d2l, ONNX default), "gru-after" after it (torch, Keras)."""
    from .spec import BiRNNScratch, RNNScratch

    models = {"RNNScratch": RNNScratch(num_inputs, num_hiddens),
              "BiRNNScratch": BiRNNScratch(num_inputs, num_hiddens)}
    for label, kwargs in CELL_VARIANTS.items():
        for bidirectional in (False, True):
            for layers in (1, 2):
                if label == "rnn" and layers == 1:
                    continue  # that is RNNScratch / BiRNNScratch above
                name = f"{label} {'bi' if bidirectional else 'uni'} x{layers}"
                models[name] = RecurrentSpec(num_inputs, num_hiddens, num_layers=layers,
                                             bidirectional=bidirectional, **kwargs)
    # issue 15's options, one cheap row each (the generic recurrence: no fused kernel computes them)
    for name, kwargs in OPTION_ROWS.items():
        models[name] = RecurrentSpec(num_inputs, num_hiddens, **kwargs)
    if num_hiddens > 1:  # a projected LSTM (0 < proj_size < num_hiddens); torch's fused kernel runs it
        models["lstm bi proj x2"] = RecurrentSpec(num_inputs, num_hiddens, cell="lstm", bidirectional=True,
                                                  num_layers=2, proj_size=num_hiddens // 2)
    return models


OPTION_ROWS = {
    "gru-after hard-sigmoid": {"cell": "gru", "reset_after": True, "gate_activation": "hard_sigmoid"},
    "lstm relu legacy-hard-sigmoid": {"cell": "lstm", "nonlinearity": "relu",
                                      "gate_activation": "hard_sigmoid_legacy"},
    "gru reverse x2": {"cell": "gru", "reverse": True, "keep_order": False, "num_layers": 2},
    "lstm bi sum": {"cell": "lstm", "bidirectional": True, "merge_mode": "sum"},
    "lstm learned-h0": {"cell": "lstm", "learn_initial_state": True},
}


def error(actual, expected, dtype) -> float:
    err = float(np.max(np.abs(np.asarray(actual, np.float64) - expected), initial=0.0))
    if dtype == "float32":
        err /= max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    return err if np.all(np.isfinite(actual)) else float("inf")


def _state_arrays(state):
    if isinstance(state, (tuple, list)):
        return [a for part in state for a in _state_arrays(part)]
    return [state]


def seeded_case(model, seed, steps=16, batch=4):
    """float64 params, inputs and an output cotangent of one comparison. d2l's sigma=0.01 makes tanh
    nearly linear; scaled weights and random biases exercise the nonlinearity and the biases, so a
    wrong layout cannot hide."""
    base = randomize_biases(model, init_params(model, seed, "float64"), seed + 1, 0.5)
    params64 = {k: (v * 30 if k.rsplit(".", 1)[-1].startswith("W_") else v) for k, v in base.items()}
    rng = np.random.default_rng(seed + 2)
    shape = (batch, steps) if model.batch_first else (steps, batch)
    return params64, rng.normal(size=shape + (model.num_inputs,)), rng.normal(size=shape + (model.output_size,))


def compare_one(model, backend, seed, dtype, steps=16, batch=4) -> dict:
    """One model on one backend: the max errors of outputs, states and gradients vs the reference."""
    params64, inputs64, cot64 = seeded_case(model, seed, steps, batch)
    ref_out, ref_state = api.forward(model, params64, inputs64)
    ref_grads = api.gradients(model, params64, inputs64, cotangent=cot64)

    params = {k: v.astype(dtype) for k, v in params64.items()}
    out, state = api.forward(model, params, inputs64.astype(dtype), backend=backend)
    grads = api.gradients(model, params, inputs64.astype(dtype), backend=backend,
                          cotangent=cot64.astype(dtype))
    row = {"outputs": error(out, ref_out, dtype),
           "states": max(error(a, b, dtype) for a, b in zip(_state_arrays(state), _state_arrays(ref_state))),
           "gradients": max(error(grads[k], ref_grads[k], dtype) for k in params)}
    row["pass"] = all(row[k] <= TOLERANCES[dtype] for k in ("outputs", "states", "gradients"))
    return row


def path(backend, model, dtype) -> str:
    """What forward/gradients without ``lengths`` run: "fused" (recurrence.fused_path: whole layers in
    the framework's fused kernel), "generic" (the step-by-step recurrence) or "reference" (numpy)."""
    if backend.is_reference:
        return "reference"
    return "fused" if recurrence.fused_path(backend, model, np.dtype(dtype)) else "generic"


def run(backend_names, models, seed=0, dtype="float32", fused_kernels=True) -> list[dict]:
    """Rows for every backend x model; an unavailable backend gives one row saying how to install it.
    ``fused_kernels=False`` runs torch and MXNet through the generic recurrence too; each row's
    "path" says which ran ("fused": the framework's own fused kernel, see multirnn.recurrence)."""
    from multirnn import backends

    rows = []
    for name in backend_names:
        try:
            backend = backends.get(name)
        except backends.BackendUnavailable as exc:
            rows.append({"backend": name, "version": None, "model": None, "error": str(exc), "pass": False})
            continue
        with backend.fused_kernels(fused_kernels):
            for label, model in models.items():
                row = {"backend": name, "version": backend.version, "model": label, "dtype": dtype,
                       "path": path(backend, model, dtype), "tolerance": TOLERANCES[dtype]}
                row.update(compare_one(model, name, seed, dtype))
                rows.append(row)
    return rows


def run_native(frameworks, models, seed=0, dtype="float32") -> list[dict]:
    """Rows for every framework's own layer (multirnn.port.native) x model, each loaded with converted
    copies of one seeded weight set: forward outputs and final states vs the reference. A model the
    framework cannot hold gives a "refused" row with the converter's reason; a missing framework one row."""
    from multirnn.port import UnrepresentableError, native

    rows = []
    for name in frameworks:
        try:
            version = native.version(name)
        except ImportError as exc:
            rows.append({"backend": name, "version": None, "model": None, "error": str(exc), "pass": False})
            continue
        for label, model in models.items():
            row = {"backend": name, "version": version, "model": label, "dtype": dtype,
                   "path": native.LAYERS[name], "tolerance": TOLERANCES[dtype]}
            params64, inputs64, _ = seeded_case(model, seed)
            params = {k: v.astype(dtype) for k, v in params64.items()}
            ref_out, ref_state = api.forward(model, params64, inputs64)
            try:
                out, state = native.run_native(name, model, params, inputs64.astype(dtype))
            except UnrepresentableError as exc:
                rows.append({**row, "refused": str(exc), "pass": True})
                continue
            pairs = [(a, b) for a, b in zip(_state_arrays(state), _state_arrays(ref_state)) if a is not None]
            row.update(outputs=error(out, ref_out, dtype), states=max(error(a, b, dtype) for a, b in pairs),
                       gradients=None)
            row["pass"] = row["outputs"] <= TOLERANCES[dtype] and row["states"] <= TOLERANCES[dtype]
            rows.append(row)
    return rows


def format_table(rows, dtype) -> str:
    kind = "max abs diff" if dtype == "float64" else "max diff / max|ref|"
    header = ["backend", "version", "model", "path", "outputs", "states", "gradients", "result"]
    lines = [header]
    for r in rows:
        if r.get("error"):
            lines.append([r["backend"], "-", "-", "-", "-", "-", "-", "UNAVAILABLE"])
            continue
        if r.get("refused"):
            lines.append([r["backend"], r["version"], r["model"], r["path"], "-", "-", "-", "refused"])
            continue
        lines.append([r["backend"], r["version"], r["model"], r["path"], *("-" if r[k] is None else f"{r[k]:.2e}"
                      for k in ("outputs", "states", "gradients")), "pass" if r["pass"] else "FAIL"])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{dtype}: {kind} vs the NumPy float64 reference; tolerance {TOLERANCES[dtype]:.0e}",
             "path: fused = whole layers in the framework's own fused kernel; generic = multirnn's "
             "step-by-step recurrence (--generic forces it everywhere)"]
    notes += [f"{r['backend']}: {r['error']}" for r in rows if r.get("error")]
    refusals = {r["refused"].split(";")[0] for r in rows if r.get("refused")}
    notes += [f"refused: {reason}" for reason in sorted(refusals)]
    return "\n".join(text + [""] + notes)
