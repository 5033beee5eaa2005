"""Speed of one time step, ``benchmarks/run.py --suite step``: microseconds per step of each backend's
multirnn native cell against the framework's own cell, both called in the same Python loop, and of
multirnn.step (NumPy in and out).

    .venv/bin/python benchmarks/run.py --suite step --threads 1             # every backend
    .venv/bin/python benchmarks/run.py --suite step --backends mxnet --repeats 5

A benchmark, not a test. Inference steps (no autodiff recording), hidden 256, inputs 256, float32,
each cell (rnn, gru, lstm) at batch 1 and 64. Per backend, every path of every (cell, batch) is
timed in the same interleaved rounds (run.time_interleaved, medians):

- ``cell``: multirnn.native_cell(model, backend=...) called ``state = cell(x_t, state)``;
- ``own``: the framework's own cell (nn.GRUCell, keras.layers.GRUCell, flax.linen.GRUCell,
  gluon.rnn.GRUCell), called the same way. JAX: both ``apply`` functions under ``jax.jit``; Keras and
  Gluon: the framework's cells eager (not tf.function / hybridize), as a hand loop calls them;
- ``step``: multirnn.step(model, params, x_t, state, backend=...): NumPy to NumPy each step, with the
  argument validation of the public API (its honest overhead);
- ``reference``: multirnn.step on the NumPy reference, for scale.
"""
from __future__ import annotations

import numpy as np

import multirnn

STEPS_PER_CALL = 20  # one timed call = this many steps in a loop, so the timer's cost is small
CELLS = ("rnn", "gru", "lstm")
BATCHES = (1, 64)
HIDDEN = INPUTS = 256


def _model(cell):
    return multirnn.RecurrentSpec(INPUTS, HIDDEN, cell=cell, reset_after=cell == "gru")


def _loop(advance, x, state):
    def run():
        s = state
        for _ in range(STEPS_PER_CALL):
            s = advance(x, s)
        return s
    return run


def _step(model, params, x, backend):
    return _loop(lambda x_t, s: multirnn.step(model, params, x_t, s, backend=backend)[1], x, None)


def _calls_torch(model, params, x):
    import torch

    own = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[model.cell](INPUTS, HIDDEN)
    cell, xt = multirnn.native_cell(model, params, backend="torch"), torch.from_numpy(x)

    def no_grad(run):
        def wrapped():
            with torch.no_grad():
                return run()
        return wrapped
    return {"cell": no_grad(_loop(cell, xt, None)), "own": no_grad(_loop(own, xt, None))}


def _calls_tensorflow(model, params, x):
    import keras

    L = keras.layers
    own = {"rnn": L.SimpleRNNCell, "gru": L.GRUCell, "lstm": L.LSTMCell}[model.cell](HIDDEN)
    own.build((None, INPUTS))
    cell, xt = multirnn.native_cell(model, params, backend="tensorflow"), keras.ops.convert_to_tensor(x)

    def keras_loop(c):
        begin = c.get_initial_state(batch_size=x.shape[0])
        return _loop(lambda x_t, s: c(x_t, s)[1], xt, begin)
    return {"cell": keras_loop(cell), "own": keras_loop(own)}


def _calls_jax(model, params, x):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    own = {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[model.cell](HIDDEN)
    xt = jnp.asarray(x)
    carry = own.initialize_carry(jax.random.PRNGKey(0), xt.shape)
    own_vars = own.init(jax.random.PRNGKey(0), carry, xt)
    module, variables = multirnn.native_cell(model, params, backend="jax").unbind()

    def jitted(m, v, begin):
        apply = jax.jit(m.apply)
        return _loop(lambda x_t, s: jax.block_until_ready(apply(v, s, x_t)[0]), xt, begin)
    return {"cell": jitted(module, variables, module.initialize_carry(None, xt.shape)),
            "own": jitted(own, own_vars, carry)}


def _calls_mxnet(model, params, x):
    import mxnet as mx

    rnn = mx.gluon.rnn
    own = {"rnn": rnn.RNNCell, "gru": rnn.GRUCell, "lstm": rnn.LSTMCell}[model.cell](HIDDEN, input_size=INPUTS)
    own.initialize()
    cell, xt = multirnn.native_cell(model, params, backend="mxnet"), mx.nd.array(x)

    def gluon_loop(c):
        begin = c.begin_state(batch_size=x.shape[0])

        def run():
            s = _loop(lambda x_t, s: c(x_t, s)[1], xt, begin)()
            mx.nd.waitall()  # MXNet runs asynchronously: time the work, not the queueing
            return s
        return run
    return {"cell": gluon_loop(cell), "own": gluon_loop(own)}


BUILDERS = {"torch": _calls_torch, "tensorflow": _calls_tensorflow, "jax": _calls_jax, "mxnet": _calls_mxnet}
PATHS = ("cell", "own", "step", "reference")


def calls(backend: str) -> dict:
    """Every path of every (cell, batch), keyed ``"{cell} {batch} {path}"``."""
    out = {}
    for cell in CELLS:
        model = _model(cell)
        params = multirnn.init_params(model, 0, "float32")
        for batch in BATCHES:
            x = np.random.default_rng(0).normal(size=(batch, INPUTS)).astype(np.float32)
            paths = BUILDERS[backend](model, params, x)
            paths["step"] = _step(model, params, x, backend)
            paths["reference"] = _step(model, params, x, "numpy")
            out.update({f"{cell} {batch} {path}": run for path, run in paths.items()})
    return out


def row(backend: str, seconds: dict) -> dict:
    """One backend: µs per step of each path, and cell / own, step / own per (cell, batch)."""
    out = {"backend": backend, "H": HIDDEN, "D": INPUTS, "steps_per_call": STEPS_PER_CALL}
    for key, sec in seconds.items():
        out[key.replace(" ", "_") + "_us"] = sec / STEPS_PER_CALL * 1e6
    for cell in CELLS:
        for batch in BATCHES:
            own = out[f"{cell}_{batch}_own_us"]
            out[f"{cell}_{batch}_cell_ratio"] = out[f"{cell}_{batch}_cell_us"] / own
            out[f"{cell}_{batch}_step_ratio"] = out[f"{cell}_{batch}_step_us"] / own
    return out


def _lines(r: dict):
    for cell in CELLS:
        for batch in BATCHES:
            key = f"{cell}_{batch}"
            yield (cell, batch, *(r[f"{key}_{path}_us"] for path in PATHS), r[f"{key}_cell_ratio"],
                   r[f"{key}_step_ratio"])


def format_row(r: dict) -> str:
    return "\n".join(f"{r['backend']:<10} {cell:<4} B={batch:<2}  cell {c:7.0f} us  own {o:7.0f} us  "
                     f"step {s:7.0f} us  reference {n:6.0f} us  cell / own {cr:.2f}  step / own {sr:.2f}"
                     for cell, batch, c, o, s, n, cr, sr in _lines(r))


def markdown(rows) -> str:
    lines = ["| backend | cell | batch | cell µs | own µs | step µs | reference µs | cell / own | step / own |",
             "|" + "---|" * 9]
    for r in rows:
        for cell, batch, c, o, s, n, cr, sr in _lines(r):
            lines.append(f"| {r['backend']} | {cell} | {batch} | {c:.0f} | {o:.0f} | {s:.0f} | {n:.0f} "
                         f"| {cr:.2f} | {sr:.2f} |")
    return "\n".join(lines)
