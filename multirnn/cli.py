"""The ``multirnn`` command. Each subcommand lives in its own module with ``register(subparsers)``."""
from __future__ import annotations

import argparse
import json
import sys

# Modules adding more subcommands, each with register(subparsers).
SUBCOMMAND_MODULES: list[str] = ["multirnn.port.cli", "multirnn.lm_cli", "multirnn.checkpoint_cli"]


def _compare(args) -> int:
    from multirnn import backends, compare

    names = args.backends.split(",") if args.backends else list(backends.FRAMEWORKS)
    unknown = [n for n in names if n not in backends.NAMES]
    if unknown and not args.native:
        raise SystemExit(f"multirnn compare: --backends: unknown {unknown}; choose from {backends.NAMES}")
    models = compare.default_models()
    if args.models:
        wanted = [m.strip() for m in args.models.split(",")]
        unknown = [m for m in wanted if m not in models]
        if unknown:
            raise SystemExit(f"multirnn compare: --models: unknown {unknown}; choose from {list(models)}")
        models = {m: models[m] for m in wanted}
    if args.native:
        from multirnn.port import native

        names = args.backends.split(",") if args.backends else list(native.FRAMEWORK_BACKEND)
        unknown = [n for n in names if n not in native.FRAMEWORK_BACKEND]
        if unknown:
            raise SystemExit(f"multirnn compare: --backends: unknown {unknown} with --native; choose from "
                             f"{list(native.FRAMEWORK_BACKEND)}")
        rows = compare.run_native(names, models, seed=args.seed, dtype=args.dtype)
    else:
        rows = compare.run(names, models, seed=args.seed, dtype=args.dtype, fused_kernels=not args.generic)
    if args.json:
        json.dump({"dtype": args.dtype, "seed": args.seed, "tolerance": compare.TOLERANCES[args.dtype],
                   "fused_kernels": not args.generic, "rows": rows}, sys.stdout, indent=2)
        print()
    else:
        print(compare.format_table(rows, args.dtype))
    return 0 if all(r["pass"] for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multirnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="run one seeded spec on every backend and print the parity table")
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
    p.set_defaults(func=_compare)
    import importlib

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
