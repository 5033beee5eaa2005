"""Forward + backward speed of multirnn against each framework's own fused layer and a d2l-style loop.

    .venv/bin/python benchmarks/run.py --quick       # one size, tanh RNN only, 3 repeats (~1 min)
    .venv/bin/python benchmarks/run.py --threads 1   # full table (~12 min on 2 cores); steadiest ratios
                                                     # on a shared CPU (see --threads)
    .venv/bin/python benchmarks/run.py --suite padded --threads 1   # padded / full-length batches
    .venv/bin/python benchmarks/run.py --suite lm --threads 1       # LM training step / a plain torch loop
    .venv/bin/python benchmarks/run.py --suite step --threads 1     # one time step: cells / framework cells

A benchmark, not a test: nothing here asserts a time.

Prints a table (backend x cell x direction x size: ms per pass, ratio to the fused layer, GFLOP/s),
writes benchmarks/results/bench.json and bench.png. Every path of one row is timed in one process,
interleaved (A, B, C, A, B, C, ...), after warm-up calls that also pay compilation; the median is kept.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # cases.py / d2l_loop.py beside this file

import multirnn  # noqa: E402
from multirnn import backends  # noqa: E402

SIZES = {  # name: (steps T, batch B, inputs D, hiddens H)
    "d2l-lm": (32, 1024, 28, 32),  # d2l's language model: 28 one-hot chars, 32 hiddens
    "issue": (64, 64, 128, 256),   # the size of the measurements
}
CELLS = ("rnn", "relu", "gru", "lstm")  # rnn: tanh; relu: the relu RNN (cell "rnn" too)
PATHS = ("multirnn", "generic", "api", "native", "eager")
GATES = {"rnn": 1, "relu": 1, "gru": 3, "lstm": 4}


def flops(cell, bidirectional, steps, batch, inputs, hiddens) -> float:
    """Matmul FLOPs of forward + backward: each step multiplies (B, D) by (D, G·H) and (B, H) by
    (H, G·H), 2 FLOPs per multiply-add; backward costs twice the forward (gradients for activations
    and for weights). Elementwise gate arithmetic is left out, so this is a lower bound."""
    forward = 2 * steps * batch * GATES[cell] * hiddens * (inputs + hiddens)
    return 3 * forward * (2 if bidirectional else 1)


def spec(cell, bidirectional, inputs, hiddens):
    # reset_after=True: the GRU every fused layer here implements (torch, Keras, Flax, Gluon).
    if cell == "relu":
        return multirnn.RecurrentSpec(inputs, hiddens, cell="rnn", nonlinearity="relu",
                                      bidirectional=bidirectional)
    return multirnn.RecurrentSpec(inputs, hiddens, cell=cell, bidirectional=bidirectional,
                                  reset_after=(cell == "gru"))


def time_interleaved(calls: dict, warmup: int, repeats: int) -> dict:
    """Median seconds of each callable; one call of each per round, the order rotated every round."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    samples = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            start = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


# suite -> its module beside this file
SUITES = {"layers": None, "padded": "padded", "lm": "lm_step", "step": "step"}


def available(names):
    """The backends of ``names`` that load here, in order; the others are reported and skipped."""
    for backend in names:
        try:
            backends.get(backend)
        except backends.BackendUnavailable as exc:
            print(f"skipping {backend}: {exc}", file=sys.stderr)
            continue
        yield backend


def measure_suite(module, args) -> list[dict]:
    """A suite module's rows: ``calls(backend)`` timed interleaved, one ``row`` per backend; a module's
    ``GROUPS`` (names of calls) are timed one group after the other, each interleaved within itself."""
    rows = []
    for backend in available(args.backends):
        calls = module.calls(backend)
        groups = getattr(module, "GROUPS", (tuple(calls),))
        ungrouped = set(calls) - {name for group in groups for name in group}
        if ungrouped:  # it would go untimed without a word
            raise ValueError(f"{module.__name__}.GROUPS names no group for {sorted(ungrouped)}")
        seconds = {}
        for group in groups:  # a group's names a backend lacks (torch's own LSTM elsewhere) skipped
            seconds.update(time_interleaved({name: calls[name] for name in group if name in calls},
                                            args.warmup, args.repeats))
        rows.append(module.row(backend, seconds))
        print(module.format_row(rows[-1]), flush=True)
    return rows


def measure(args) -> list[dict]:
    import cases

    rows = []
    for backend in available(args.backends):
        for size in args.sizes:
            steps, batch, inputs, hiddens = SIZES[size]
            for cell in args.cells:
                for bidirectional in args.directions:
                    model = spec(cell, bidirectional, inputs, hiddens)
                    calls = cases.build(backend, model, steps, batch)
                    calls = {p: calls[p] for p in args.paths if p in calls}
                    seconds = time_interleaved(calls, args.warmup, args.repeats)
                    work = flops(cell, bidirectional, steps, batch, inputs, hiddens)
                    row = {"backend": backend, "cell": cell, "bidirectional": bidirectional,
                           "size": size, "T": steps, "B": batch, "D": inputs, "H": hiddens,
                           "gflop": work / 1e9}
                    for path, sec in seconds.items():
                        row[f"{path}_ms"] = sec * 1e3
                        row[f"{path}_gflops"] = work / sec / 1e9
                    native = seconds.get("native")
                    for path in ("multirnn", "generic", "api"):
                        if native and path in seconds:
                            row[f"{path}_ratio"] = seconds[path] / native
                    if "eager" in seconds and "multirnn" in seconds:
                        row["eager_speedup"] = seconds["eager"] / seconds["multirnn"]
                    rows.append(row)
                    print(format_row(row), flush=True)
    return rows


COLUMNS = [  # (row key, header, width, format)
    ("backend", "backend", 10, "s"), ("cell", "cell", 4, "s"), ("dir", "dir", 3, "s"),
    ("size", "size", 6, "s"), ("multirnn_ms", "mrnn ms", 8, ".1f"), ("api_ms", "api ms", 8, ".1f"),
    ("generic_ms", "gen ms", 8, ".1f"), ("native_ms", "fused ms", 8, ".1f"),
    ("eager_ms", "eager ms", 8, ".1f"), ("multirnn_ratio", "ratio", 6, ".2f"),
    ("generic_ratio", "gen/f", 6, ".2f"), ("api_ratio", "api/f", 6, ".2f"),
    ("eager_speedup", "xeager", 6, ".1f"), ("multirnn_gflops", "GF/s", 6, ".1f"),
    ("native_gflops", "fGF/s", 6, ".1f")]


def format_row(row) -> str:
    row = dict(row, dir="bi" if row["bidirectional"] else "uni")
    return " ".join(f"{row[key]:{'<' if fmt == 's' else '>'}{width}{fmt}}" if key in row else " " * width
                    for key, _, width, fmt in COLUMNS)


def header() -> str:
    return " ".join(f"{title:{'<' if fmt == 's' else '>'}{width}}" for _, title, width, fmt in COLUMNS)


def markdown(rows) -> str:
    """The table as Markdown, for the README."""
    keys = [("multirnn_ms", ".1f"), ("native_ms", ".1f"), ("multirnn_ratio", ".2f"),
            ("generic_ratio", ".2f"), ("api_ratio", ".2f"), ("eager_ms", ".1f"), ("eager_speedup", ".1f"),
            ("multirnn_gflops", ".1f")]
    lines = ["| backend | cell | dir | size | multirnn ms | fused ms | ratio | generic ratio "
             "| gradients() ratio | eager ms | eager / multirnn | multirnn GFLOP/s |", "|" + "---|" * 12]
    for r in rows:
        cells = [r["backend"], r["cell"], "bi" if r["bidirectional"] else "uni", r["size"]]
        cells += [format(r[key], fmt) if key in r else "–" for key, fmt in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows) -> str:
    """Per backend: range (median) of each ratio over its rows, as a Markdown table."""
    def spread(values):
        values = sorted(values)
        if not values:
            return "–"
        return f"{values[0]:.2f}–{values[-1]:.2f} ({statistics.median(values):.2f})"

    lines = ["| backend | rows | multirnn / fused | generic / fused | gradients() / fused | eager / multirnn |",
             "|" + "---|" * 6]
    for name in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == name]
        cells = [spread([r[k] for r in mine if k in r])
                 for k in ("multirnn_ratio", "generic_ratio", "api_ratio", "eager_speedup")]
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path: Path, versions: dict) -> None:
    """One panel per backend: time / fused layer for each cell, direction and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["backend"] for r in rows))
    cols = min(2, len(names))
    fig, axes = plt.subplots((len(names) + cols - 1) // cols, cols, squeeze=False,
                             figsize=(6.5 * cols, 3.6 * ((len(names) + cols - 1) // cols)))
    for ax, name in zip(axes.flat, names):
        mine = [r for r in rows if r["backend"] == name]
        for offset, (key, label) in enumerate([("multirnn_ratio", "multirnn layer"),
                                               ("generic_ratio", "generic path (fused kernels off)"),
                                               ("api_ratio", "multirnn.gradients")]):
            ax.bar([i + 0.27 * offset - 0.27 for i in range(len(mine))],
                   [r.get(key, float("nan")) for r in mine], width=0.27, label=label)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(1.1, color="red", linewidth=0.8, linestyle="--", label="goal 1.1")
        ax.set_xticks(range(len(mine)), [f"{r['cell']}-{'bi' if r['bidirectional'] else 'uni'}\n{r['size']}"
                                         for r in mine], fontsize=7)
        ax.set_title(f"{name} {versions.get(name, '')}", fontsize=10)
        ax.set_ylabel("time / fused layer")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("multirnn forward + backward vs the framework's own fused layer (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--suite", default="layers", choices=list(SUITES),
                        help="layers: each layer against the fused layer (the table below); padded: padded "
                             "vs full-length batches; lm: the LM training step vs a plain torch loop; step: "
                             "one time step of the native cells vs the frameworks' own cells")
    parser.add_argument("--quick", action="store_true",
                        help="fast check: size 'issue', tanh RNN one direction, 3 repeats")
    parser.add_argument("--backends", default=",".join(backends.FRAMEWORKS))
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"from {list(SIZES)}")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--directions", default="uni,bi")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"from {PATHS}")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="cap every framework's compute threads (default: each framework's own)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--markdown", metavar="JSON",
                        help="print a saved bench.json (or a suite's padded/lm/step.json) as a Markdown table")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.cells, args.directions, args.repeats = "issue", "rnn", "uni", 3
    args.backends = [b for b in args.backends.split(",") if b]
    args.sizes, args.cells = args.sizes.split(","), args.cells.split(",")
    args.paths = args.paths.split(",")
    args.directions = [{"uni": False, "bi": True}[d] for d in args.directions.split(",")]
    for name, chosen, allowed in [("--backends", args.backends, backends.FRAMEWORKS),
                                  ("--sizes", args.sizes, SIZES), ("--cells", args.cells, CELLS),
                                  ("--paths", args.paths, PATHS)]:
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            parser.error(f"{name}: unknown {unknown}; choose from {list(allowed)}")
    return args


def limit_threads(n: int) -> None:
    """Cap every framework's compute threads (set before any framework loads). On a shared machine,
    oversubscribed OpenMP spin-waits can slow one framework far more than another: 1 thread gives the
    steadiest ratios there."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    xla = f"--xla_cpu_multi_thread_eigen={'false' if n == 1 else 'true'} intra_op_parallelism_threads={n}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla).strip()


def run_meta(args) -> dict:
    versions = {name: backends.get(name).version for name in args.backends if name in backends._loaded}
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "threads": args.threads or "default", "repeats": args.repeats, "warmup": args.warmup}


def main(argv=None) -> int:
    args = parse(argv)
    if args.markdown:  # re-render a saved run, measure nothing
        path = Path(args.markdown)
        rows = json.loads(path.read_text())["rows"]
        if SUITES.get(path.stem):  # a suite's run, saved as {suite}.json
            print(importlib.import_module(SUITES[path.stem]).markdown(rows))
        else:
            print(markdown(rows) + "\n\n" + summary(rows))
        return 0
    if args.threads:
        limit_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; threads {args.threads or 'default'}; median of {args.repeats} "
          f"after {args.warmup} warm-up calls")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.suite != "layers":
        module = importlib.import_module(SUITES[args.suite])
        rows = measure_suite(module, args)
        (out / f"{args.suite}.json").write_text(json.dumps({"meta": run_meta(args), "rows": rows}, indent=2))
        print("\n" + module.markdown(rows) + f"\n\nwrote {out / (args.suite + '.json')}")
        return 0
    print(header())
    rows = measure(args)
    meta = dict(run_meta(args), sizes={s: SIZES[s] for s in args.sizes},
                flops=flops.__doc__.split("\n\n")[0].strip())
    versions = meta["versions"]
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    try:
        plot(rows, out / "bench.png", versions)
    except ImportError:
        print("matplotlib missing: no PNG (pip install 'multirnn[bench]')", file=sys.stderr)
    print("\n" + summary(rows) + "\n")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
