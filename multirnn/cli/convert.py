"""``multirnn convert SRC -o OUT``: move saved recurrent weights between formats, proving the conversion
by running the source where it can run."""
from __future__ import annotations

from ._common import UsageError, add_spec_flags, failed, spec_fields

FORMATS = ("npz", "torch", "keras", "flax", "gluon", "onnx")  # multirnn.port.files.FORMATS (not imported: numpy)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert saved RNN/GRU/LSTM weights between npz, torch, keras, flax, gluon, onnx",
        description="Move saved recurrent weights between formats. The format is guessed from the extension "
        "when --from/--to is left out (.npz .pt/.pth .keras/.h5/.weights.h5 .msgpack .params .onnx). Spec "
        "flags complete what a source file does not record (e.g. --nonlinearity of a torch RNN); a flag "
        "that contradicts the file is an error. Where the source can run (ONNX, a .keras or full-model "
        ".h5 file), it is run on seeded probes and compared with the converted model; what was proven is "
        "printed and recorded in an npz output's metadata. Exit status 1 when the source cannot be "
        "represented exactly or the proof fails, 2 for a wrong command line.")
    p.add_argument("src", help="the saved source file")
    p.add_argument("--from", dest="src_format", choices=FORMATS)
    p.add_argument("--to", dest="dst_format", choices=FORMATS)
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--prefix", help="torch: strip this prefix from state_dict keys (e.g. 'rnn.')")
    add_spec_flags(p)
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not run the source to prove the conversion (it is run by default where it can)")
    p.set_defaults(func=run)


def formats_of(*pairs) -> list[str]:
    """The format of each (path, given format); an extension that says nothing is a usage error."""
    from multirnn.port.files import guess_format

    try:
        return [given or guess_format(path) for path, given in pairs]
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def load_source(path, fmt, verify=True, **known):
    """``multirnn.port.load``, with the caller's spec flags that contradict the file (or are missing) as
    usage errors."""
    from multirnn.port import load
    from multirnn.port._common import SpecFieldError

    try:
        return load(path, format=fmt, verify=verify, **known)
    except SpecFieldError as exc:
        raise UsageError(str(exc)) from None


def run(args) -> int:
    from multirnn.port import files

    src_format, dst_format = formats_of((args.src, args.src_format), (args.output, args.dst_format))
    known = spec_fields(args)
    if args.prefix is not None:
        known["prefix"] = args.prefix
    try:
        loaded = load_source(args.src, src_format, args.verify, **known)
        proof = _proof(loaded)
        if loaded.mask_value is not None:  # no file format keeps the mask rule: refuse, never drop it
            from multirnn.port import UnrepresentableError

            raise UnrepresentableError(f"{args.src} masks the steps whose features equal {loaded.mask_value} "
                                       f"(Keras Masking); no file written here holds a mask: convert the "
                                       f"recurrent layers alone and run them with mask=")
        files.write(dst_format, args.output, loaded.model, loaded.params, initial_state=loaded.initial_state,
                    converted_from={"format": src_format, "file": str(args.src), "verification": proof})
    except (ValueError, TypeError, OSError, ImportError) as exc:  # ImportError: framework missing
        return failed("convert", exc)
    print(f"{src_format} -> {dst_format}: {loaded.model} -> {args.output}")
    if loaded.verification is not None:
        print(loaded.verification)
    elif loaded.run is not None:
        print(proof)
    for note in loaded.notes:
        print(f"note: {note}")
    return 0


def _proof(loaded):
    """What the conversion was proven by (the verification's numbers), or why it was not."""
    if loaded.verification is not None:
        return loaded.verification.as_dict()
    if loaded.native:
        return f"nothing to verify: {loaded.origin} is multirnn's own format"
    if loaded.run is None:
        from multirnn.port.front import unverified

        return unverified(loaded)
    return "not verified: --no-verify"
