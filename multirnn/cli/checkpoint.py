"""``multirnn checkpoint PATH``: verify a checkpoint (CRCs, SHA-256s, spec) and print what it holds."""
from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("checkpoint", help="verify a checkpoint file and print its spec, arrays "
                                                 "and metadata (exit 1 if it is corrupt)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_inspect)


def _inspect(args) -> int:
    from multirnn import checkpoint

    try:
        model, params, metadata, arrays = checkpoint.read(args.path)
    except (checkpoint.CheckpointError, OSError) as exc:
        print(f"multirnn checkpoint: {exc}", file=sys.stderr)
        return 1
    summary = {"path": args.path, "ok": True, "spec": repr(model), "metadata": metadata,
               "params": {k: list(v.shape) for k, v in params.items()},
               "arrays": {k: [str(v.dtype)] + list(v.shape) for k, v in arrays.items()}}
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.path}: OK\nspec: {model!r}")
    print(f"params: {len(params)} arrays, {sum(v.size for v in params.values())} values "
          f"({metadata['dtype']})")
    for name, value in arrays.items():
        print(f"array {name}: {value.dtype}{value.shape}")
    for key, value in metadata.items():
        print(f"{key}: {json.dumps(value)}")
    return 0
