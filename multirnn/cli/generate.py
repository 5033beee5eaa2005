"""``multirnn generate``: continue a prefix with a trained language model."""
from __future__ import annotations

from .train import setup_error


def register(subparsers) -> None:
    g = subparsers.add_parser(
        "generate", help="continue a prefix with a trained language model",
        description="Continue PREFIX with the language model of a checkpoint written by 'multirnn train': "
        "greedy by default, sampled with --temperature > 0 (seeded).")
    g.add_argument("--checkpoint", required=True)
    g.add_argument("--prefix", default="the ")
    g.add_argument("--num-preds", type=int, default=100)
    g.add_argument("--backend", default="numpy")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 samples")
    g.add_argument("--seed", type=int, default=0, help="seeds sampling")
    g.set_defaults(func=run)


def run(args) -> int:
    from multirnn import backends
    from multirnn.lm import checkpoint as lm_checkpoint
    from multirnn.lm.model import generate

    try:
        lm, params, vocab, meta, _ = lm_checkpoint.load(args.checkpoint)
        text_out = generate(lm, params, vocab, args.prefix, args.num_preds, args.backend,
                            meta.get("data", {}).get("tokens", "char"), args.temperature, args.seed)
    except (ValueError, TypeError, backends.BackendUnavailable) as exc:
        return setup_error("generate", exc)
    print(text_out)
    return 0
