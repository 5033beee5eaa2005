"""Speed of one time step: microseconds per step of each backend's multirnn native cell against the
framework's own cell, both called in the same Python loop, and of multirnn.step (NumPy in and out).

    .venv/bin/python benchmarks/run.py --suite step --quick       # gru only, 3 repeats (~1 min)
    .venv/bin/python benchmarks/run.py --suite step --threads 1   # rnn/gru/lstm x batch 1, 64 (steadiest ratios)

(``benchmarks/step.py`` takes the same options.)

A benchmark, not a test. Inference steps (no autodiff recording), hidden 256, inputs 256. Paths, per
(backend, cell, batch), timed interleaved in one process like benchmarks/run.py (median kept):

- ``cell``: multirnn.native_cell(model, backend=...) called ``state = cell(x_t, state)``;
- ``own``: the framework's own cell (nn.GRUCell, keras.layers.GRUCell, flax.linen.GRUCell,
  gluon.rnn.GRUCell), called the same way. JAX: both ``apply`` functions under ``jax.jit``; Keras and
  Gluon: both eager (not tf.function / hybridize);
- ``step``: multirnn.step(model, params, x_t, state, backend=...): NumPy to NumPy each step, with the
  argument validation of the public API (its honest overhead);
- numpy: multirnn.step on the reference (the only path there).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import multirnn  # noqa: E402
from multirnn import backends  # noqa: E402

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


def _numpy_step(model, params, x):
    return _loop(lambda x_t, s: multirnn.step(model, params, x_t, s)[1], x, None)


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


def measure(args) -> list[dict]:
    from run import time_interleaved, usable_backends

    rows = []
    for backend in usable_backends(args.backends):
        for cell in args.cells:
            model = _model(cell)
            params = multirnn.init_params(model, 0, "float32")
            for batch in args.batches:
                x = np.random.default_rng(0).normal(size=(batch, INPUTS)).astype(np.float32)
                if backend == "numpy":
                    calls = {"step": _numpy_step(model, params, x)}
                else:
                    calls = BUILDERS[backend](model, params, x)
                    calls["step"] = _loop(lambda x_t, s, b=backend: multirnn.step(model, params, x_t, s,
                                                                                  backend=b)[1], x, None)
                seconds = time_interleaved(calls, args.warmup, args.repeats)
                row = {"backend": backend, "cell": cell, "B": batch, "H": HIDDEN}
                row.update({f"{path}_us": sec / STEPS_PER_CALL * 1e6 for path, sec in seconds.items()})
                if "own_us" in row:
                    row["cell_ratio"] = row["cell_us"] / row["own_us"]
                    row["step_ratio"] = row["step_us"] / row["own_us"]
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


COLUMNS = [("backend", 10, "s"), ("cell", 4, "s"), ("B", 3, "d"), ("cell_us", 9, ".0f"), ("own_us", 9, ".0f"),
           ("step_us", 9, ".0f"), ("cell_ratio", 10, ".2f"), ("step_ratio", 10, ".2f")]


def format_row(row) -> str:
    return " ".join(f"{row[k]:{'<' if f == 's' else '>'}{w}{f}}" if k in row else " " * w for k, w, f in COLUMNS)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="gru only, 3 repeats")
    parser.add_argument("--backends", default="numpy," + ",".join(backends.FRAMEWORKS))
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="as benchmarks/run.py --threads")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.repeats = "gru", 3
    args.backends = [b for b in args.backends.split(",") if b]
    args.cells = args.cells.split(",")
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        from run import limit_threads

        limit_threads(args.threads)
    print(f"us per step (hidden {HIDDEN}, inputs {INPUTS}, float32, inference); median of {args.repeats} "
          f"calls of {STEPS_PER_CALL} steps after {args.warmup} warm-up calls")
    print(" ".join(f"{k:{'<' if f == 's' else '>'}{w}}" for k, w, f in COLUMNS))
    measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
