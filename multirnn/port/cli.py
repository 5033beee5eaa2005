"""``multirnn convert SRC --from torch --to keras -o OUT``: move saved recurrent weights between formats;
``multirnn verify A B``: do two saved models compute the same function."""
from __future__ import annotations

import argparse
import sys

from .files import FORMATS, guess_format

# CLI flag -> spec field: what a source file may not record (see multirnn.port.files).
SPEC_FLAGS = {"cell": "cell", "inputs": "num_inputs", "hidden": "num_hiddens", "layers": "num_layers",
              "bidirectional": "bidirectional", "reset_after": "reset_after", "nonlinearity": "nonlinearity",
              "bias": "bias", "batch_first": "batch_first"}


def _spec_flags(parser) -> None:
    spec = parser.add_argument_group("spec (only where the source cannot say)")
    spec.add_argument("--cell", choices=["rnn", "gru", "lstm"])
    spec.add_argument("--inputs", type=int, help="num_inputs")
    spec.add_argument("--hidden", type=int, help="num_hiddens")
    spec.add_argument("--layers", type=int, help="num_layers")
    spec.add_argument("--nonlinearity", choices=["tanh", "relu"], help="rnn cells")
    for flag in ("bidirectional", "reset-after", "bias", "batch-first"):
        spec.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)


def _known(args) -> dict:
    known = {field: getattr(args, flag) for flag, field in SPEC_FLAGS.items()}
    return {k: v for k, v in known.items() if v is not None}


def register(subparsers) -> None:
    _register_convert(subparsers)
    _register_verify(subparsers)


def _register_convert(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert saved RNN/GRU/LSTM weights between npz, torch, keras, flax, gluon, onnx",
        description="Move saved recurrent weights between formats. The format is guessed from the extension when --from/--to is left out "
        "(.npz .pt/.pth .keras/.weights.h5 .msgpack .params .onnx). Spec flags complete what a source "
        "file does not record (e.g. --nonlinearity of a torch RNN) and are checked against what it does: a flag "
        "that contradicts the file is an error. Where the source can run (ONNX, a .keras model), it is run "
        "on seeded probes and compared with the converted model; the result is printed and recorded in an "
        "npz output's metadata.")
    p.add_argument("src", help="the saved source file")
    p.add_argument("--from", dest="src_format", choices=FORMATS)
    p.add_argument("--to", dest="dst_format", choices=FORMATS)
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--prefix", help="torch: strip this prefix from state_dict keys (e.g. 'rnn.')")
    _spec_flags(p)
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not run the source to prove the conversion (it is run by default where it can)")
    p.set_defaults(func=convert_command)


def convert_command(args) -> int:
    from . import files
    from .front import load

    try:
        src_format = args.src_format or guess_format(args.src)
        dst_format = args.dst_format or guess_format(args.output)
        known = _known(args)
        if args.prefix is not None:
            known["prefix"] = args.prefix
        loaded = load(args.src, format=src_format, verify=args.verify, **known)
        proof = _proof(loaded, args.verify)
        files.write(dst_format, args.output, loaded.model, loaded.params,
                    initial_state=loaded.initial_state,
                    converted_from={"format": src_format, "file": str(args.src), "verification": proof})
    except (ValueError, TypeError, OSError, ImportError) as exc:  # ImportError: framework missing
        print(f"multirnn convert: error: {exc}", file=sys.stderr)
        return 2
    print(f"{src_format} -> {dst_format}: {loaded.model} -> {args.output}")
    if loaded.verification is not None:
        print(loaded.verification)
    elif loaded.run is not None:
        print(proof)
    for note in loaded.notes:
        print(f"note: {note}")
    return 0


def _proof(loaded, verify: bool):
    """What the conversion was proven by (the verification's numbers), or why it was not."""
    if loaded.verification is not None:
        return loaded.verification.as_dict()
    if loaded.native:
        return f"nothing to verify: {loaded.origin} is multirnn's own format"
    if loaded.run is None:
        return (f"not verified: {loaded.origin or 'the source'} cannot run (weights only); its spec comes "
                "from the file and the flags given")
    return "not verified: --no-verify"


# ---- multirnn verify A B ----

def _register_verify(subparsers) -> None:
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
    _spec_flags(p)
    p.set_defaults(func=verify_command)


def verify_command(args) -> int:
    import json

    from .front import load
    from .pair import compare_pair, format_report

    known = _known(args)
    loaders = [lambda path=path, fmt=fmt: load(path, format=fmt or guess_format(path), **known)
               for path, fmt in ((args.a, args.from_a), (args.b, args.from_b))]
    try:
        report = compare_pair((args.a, args.b), loaders, seed=args.seed)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"multirnn verify: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0 if report["pass"] else 1
