"""``multirnn compare``: one seeded spec on every backend (or every framework's own layer, --native),
held against the NumPy float64 reference and printed as a parity table."""
from __future__ import annotations

import json
import sys

from ._common import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="run one seeded spec on every backend and print the parity table",
        description="Run RNNScratch, BiRNNScratch and every cell x direction x depth on each backend, with "
        "one seeded weight set, and print the max error of outputs, final states and parameter gradients "
        "against the NumPy float64 reference. Exit status 1 when a row misses its tolerance or a backend "
        "cannot be loaded (its row says how to install it).")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", help="comma-separated subset (default: all frameworks)")
    p.add_argument("--models", help="comma-separated subset of model labels (default: all; "
                   "e.g. 'RNNScratch,BiRNNScratch,lstm bi x2')")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--generic", action="store_true",
                   help="switch off torch's and MXNet's fused kernels: every layer runs multirnn's "
                        "step-by-step recurrence")
    p.add_argument("--native", action="store_true",
                   help="compare the frameworks' own layers instead (torch nn.*, Keras, Flax linen and nnx, "
                        "Gluon, onnxruntime), each loaded with converted copies of one seeded weight set; "
                        "--backends then picks among torch,keras,flax,nnx,gluon,onnxruntime")
    p.set_defaults(func=run)


def _pick(option: str, given: str | None, choices) -> list[str]:
    names = [n.strip() for n in given.split(",")] if given else list(choices)
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise UsageError(f"{option}: unknown {unknown}; choose from {list(choices)}")
    return names


def run(args) -> int:
    from multirnn import backends, compare

    all_models = compare.default_models()
    models = {m: all_models[m] for m in _pick("--models", args.models, all_models)}
    if args.native:
        from multirnn.port import native

        names = _pick("--backends (with --native)", args.backends, native.FRAMEWORK_BACKEND)
        rows = compare.run_native(names, models, seed=args.seed, dtype=args.dtype)
    else:
        names = _pick("--backends", args.backends, backends.NAMES) if args.backends else list(backends.FRAMEWORKS)
        rows = compare.run(names, models, seed=args.seed, dtype=args.dtype, fused_kernels=not args.generic)
    if args.json:
        json.dump({"dtype": args.dtype, "seed": args.seed, "tolerance": compare.TOLERANCES[args.dtype],
                   "fused_kernels": not args.generic, "native": args.native, "rows": rows}, sys.stdout,
                  indent=2)
        print()
    else:
        print(compare.format_table(rows, args.dtype))
    return 0 if all(r["pass"] for r in rows) else 1
