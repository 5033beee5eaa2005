"""The ``multirnn`` command: one module per subcommand in this package, each with ``register(subparsers)``
and a handler returning the exit status.

Exit status, everywhere: 0 success; 1 the command ran and failed (a parity row, a refused or mismatched
conversion, a corrupt file, a missing framework); 2 the command line is wrong (argparse's own errors,
unknown names, spec flags that contradict a file or are missing).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ._common import UsageError

SUBCOMMANDS = ("compare", "convert", "verify", "train", "generate", "checkpoint")

DESCRIPTION = """\
Recurrent networks (RNN, GRU, LSTM; stacked, bidirectional) defined once and run with equal numbers
on PyTorch, TensorFlow, JAX/Flax and MXNet, each held against a NumPy float64 reference."""

EPILOG = """\
examples:
  multirnn compare                          parity table of every model on every installed backend
  multirnn compare --native                 the frameworks' own layers, on converted weights
  multirnn convert lstm.pt -o lstm.keras    port saved weights between frameworks (proven where it runs)
  multirnn verify model.onnx model.npz      do two saved models compute the same function?
  multirnn train --backend torch            train the character language model on the bundled corpus
  multirnn generate --checkpoint lm.npz     continue a prefix with the trained model
  multirnn checkpoint lm.npz                check a checkpoint file and print what it holds

'multirnn COMMAND --help' describes each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multirnn", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"multirnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
