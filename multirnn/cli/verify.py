"""``multirnn verify A B``: do two saved models compute the same function?"""
from __future__ import annotations

import json

from ._common import add_spec_flags, failed, spec_fields
from .convert import FORMATS, formats_of, load_source


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="do two saved models compute the same function? (each run by its own framework)",
        description="Load A and B (any format convert reads), run each in its own framework on the same "
        "seeded probes (several lengths, random initial states where both take one) and compare both "
        "with the float64 reference of A's params. Exit status 1 when they differ.")
    p.add_argument("a", help="a saved model")
    p.add_argument("b", help="another saved model")
    p.add_argument("--from-a", choices=FORMATS, help="A's format (default: from its extension)")
    p.add_argument("--from-b", choices=FORMATS, help="B's format (default: from its extension)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe inputs and states")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_spec_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from multirnn.port.pair import compare_pair, format_report

    known = spec_fields(args)
    formats = formats_of((args.a, args.from_a), (args.b, args.from_b))
    loaders = [lambda path=path, fmt=fmt: load_source(path, fmt, **known)
               for path, fmt in zip((args.a, args.b), formats)]
    try:
        report = compare_pair((args.a, args.b), loaders, seed=args.seed)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        return failed("verify", exc)
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return 0 if report["pass"] else 1
