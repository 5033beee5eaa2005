"""``multirnn convert SRC --from torch --to keras -o OUT``: move saved recurrent weights between formats."""
from __future__ import annotations

import argparse
import sys

from .files import FORMATS, guess_format

# CLI flag -> spec field: what a source file may not record (see multirnn.port.files).
SPEC_FLAGS = {"cell": "cell", "inputs": "num_inputs", "hidden": "num_hiddens", "layers": "num_layers",
              "bidirectional": "bidirectional", "reset_after": "reset_after", "nonlinearity": "nonlinearity",
              "bias": "bias", "batch_first": "batch_first"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert saved RNN/GRU/LSTM weights between npz, torch, keras, flax, gluon, onnx",
        description=__doc__ + " The format is guessed from the extension when --from/--to is left out "
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
    spec = p.add_argument_group("spec (only where the source cannot say)")
    spec.add_argument("--cell", choices=["rnn", "gru", "lstm"])
    spec.add_argument("--inputs", type=int, help="num_inputs")
    spec.add_argument("--hidden", type=int, help="num_hiddens")
    spec.add_argument("--layers", type=int, help="num_layers")
    spec.add_argument("--nonlinearity", choices=["tanh", "relu"], help="rnn cells")
    for flag in ("bidirectional", "reset-after", "bias", "batch-first"):
        spec.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not run the source to prove the conversion (it is run by default where it can)")
    p.set_defaults(func=convert_command)


def convert_command(args) -> int:
    from . import files
    from .front import load

    try:
        src_format = args.src_format or guess_format(args.src)
        dst_format = args.dst_format or guess_format(args.output)
        known = {field: getattr(args, flag) for flag, field in SPEC_FLAGS.items()}
        known = {k: v for k, v in known.items() if v is not None}
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
    print(proof if isinstance(proof, str) else f"{loaded.verification}")
    for note in loaded.notes:
        print(f"note: {note}")
    return 0


def _proof(loaded, verify: bool):
    """What the conversion was proven by: the verification's numbers, or why there is none."""
    if loaded.verification is not None:
        return loaded.verification.as_dict()
    if loaded.run is None:
        return "not verified: the source cannot run (a weights-only file); the spec comes from the file and flags"
    return "not verified: --no-verify"
