"""What the subcommands share: the usage-error convention and the spec flags of convert and verify."""
from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """The command line is wrong: ``multirnn`` prints the message and exits with status 2."""


def failed(command: str, exc: BaseException) -> int:
    """Print a failure of ``command`` and give its exit status (1)."""
    print(f"multirnn {command}: error: {exc}", file=sys.stderr)
    return 1


# CLI flag -> spec field: what a source file may not record (see multirnn.port.files).
SPEC_FLAGS = {"cell": "cell", "inputs": "num_inputs", "hidden": "num_hiddens", "layers": "num_layers",
              "bidirectional": "bidirectional", "reset_after": "reset_after", "nonlinearity": "nonlinearity",
              "bias": "bias", "batch_first": "batch_first"}


def add_spec_flags(parser) -> None:
    spec = parser.add_argument_group("spec (only what the source cannot say; checked against what it does)")
    spec.add_argument("--cell", choices=["rnn", "gru", "lstm"])
    spec.add_argument("--inputs", type=int, help="num_inputs")
    spec.add_argument("--hidden", type=int, help="num_hiddens")
    spec.add_argument("--layers", type=int, help="num_layers")
    spec.add_argument("--nonlinearity", choices=["tanh", "relu"], help="rnn cells")
    for flag in ("bidirectional", "reset-after", "bias", "batch-first"):
        spec.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)


def spec_fields(args) -> dict:
    known = {field: getattr(args, flag) for flag, field in SPEC_FLAGS.items()}
    return {k: v for k, v in known.items() if v is not None}
