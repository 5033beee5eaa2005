"""``multirnn train``: train the character (or word) language model on any backend, with checkpoints
after every epoch and a perplexity plot."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ._common import UsageError, failed


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a recurrent language model (bundled corpus by default)",
        description="Train a character (or word) language model: embedding or one-hot inputs, one "
        "recurrent spec, an output layer; minibatch SGD with gradient clipping on the chosen backend. The "
        "checkpoint is written atomically after every epoch and --resume continues exactly where it "
        "stopped (on any backend). The progress bar is shown on a terminal only.")
    p.add_argument("--backend", default="numpy", help="numpy | torch | tensorflow | jax | mxnet")
    p.add_argument("--cell", choices=["rnn", "gru", "lstm"], default="rnn")
    p.add_argument("--hidden", type=int, default=32, help="hidden units per layer")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--embed", type=int, default=0, help="embedding size; 0 = one-hot inputs")
    p.add_argument("--epochs", type=int, default=5, help="train until this many epochs are done in total")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-steps", type=int, default=35)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient-norm threshold; 0 = off")
    p.add_argument("--sampling", choices=["random", "sequential"], default="random")
    p.add_argument("--tokens", choices=["char", "word"], default="char")
    p.add_argument("--corpus", help="a text file (default: the bundled public-domain corpus)")
    p.add_argument("--max-tokens", type=int, help="use only the first N tokens of the corpus")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="tail of the corpus held out")
    p.add_argument("--seed", type=int, default=0, help="seeds the params and the batch stream")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--checkpoint", default="lm.npz", help="written atomically after every epoch")
    p.add_argument("--resume", help="continue from this checkpoint (model, data and config come from it)")
    p.add_argument("--plot", help="PNG of perplexity per epoch (default: the checkpoint's name .png)")
    p.add_argument("--max-steps", type=int, help="stop after this many updates in this run")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is shown on a terminal only)")
    p.set_defaults(func=_train)

def setup_error(command: str, exc: Exception) -> int:
    """A missing framework or a damaged checkpoint is a failure (1); any other bad value came from the
    command line (a usage error, 2)."""
    from multirnn import backends, checkpoint

    if isinstance(exc, (backends.BackendUnavailable, checkpoint.CheckpointError)):
        return failed(command, exc)
    raise UsageError(str(exc)) from None


def _setup(args):
    """(lm, params, vocab, config, progress, carried, data settings) for a new or resumed run."""
    from multirnn.lm import checkpoint as lm_checkpoint
    from multirnn.lm import text
    from multirnn.lm.model import LanguageModel, init_lm_params
    from multirnn.lm.train import Progress, TrainConfig

    if args.resume:
        lm, params, vocab, meta, carried = lm_checkpoint.load(args.resume)
        data = meta["data"]
        if args.corpus:
            data["corpus"] = args.corpus
        config = TrainConfig(**meta["config"])
        progress = Progress(**meta["progress"])
        corpus, _ = text.load_corpus(data["corpus"], data["tokens"], data["max_tokens"], vocab)
        return lm, params, vocab, config, progress, carried, data, corpus
    data = {"corpus": args.corpus, "tokens": args.tokens, "max_tokens": args.max_tokens,
            "valid_fraction": args.valid_fraction, "seed": args.seed, "dtype": args.dtype}
    corpus, vocab = text.load_corpus(args.corpus, args.tokens, args.max_tokens)
    lm = LanguageModel.build(len(vocab), args.hidden, cell=args.cell, num_layers=args.layers,
                             embed_size=args.embed or None)
    params = init_lm_params(lm, args.seed, args.dtype)
    config = TrainConfig(args.sampling, args.batch_size, args.num_steps, args.lr, args.clip or None,
                         args.seed)
    return lm, params, vocab, config, Progress(), None, data, corpus


def _save(path, trainer, vocab, data, unigram):
    from multirnn.lm import checkpoint as lm_checkpoint

    meta = {"config": asdict(trainer.config), "progress": asdict(trainer.progress), "data": data,
            "backend": trainer.backend, "unigram_perplexity": unigram}
    lm_checkpoint.save(path, trainer.lm, trainer.params, vocab, meta, trainer.carried)


def save_plot(path, history: dict, unigram: float | None) -> bool:
    """PNG of perplexity per epoch, written atomically; False (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("multirnn: no plot (matplotlib missing: pip install 'multirnn[lm]')", file=sys.stderr)
        return False
    path = Path(path)
    epochs = range(1, len(history["train_perplexity"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, history["train_perplexity"], marker="o", label="train")
    valid = [math.nan if v is None else v for v in history["valid_perplexity"]]
    if any(not math.isnan(v) for v in valid):
        ax.plot(epochs, valid, marker="s", label="validation")
    if unigram is not None:
        ax.axhline(unigram, color="gray", linestyle="--", label=f"unigram ({unigram:.1f})")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.legend()
    fig.tight_layout()
    from multirnn.checkpoint import atomic_write

    try:
        atomic_write(Path(path), lambda file: fig.savefig(file, format="png"))
    finally:
        plt.close(fig)
    return True


def _bar(epoch, epochs, done, total, loss_sum, count, tokens, seconds) -> str:
    width = 24
    filled = int(width * done / max(total, 1))
    loss = loss_sum / max(count, 1)
    return (f"\repoch {epoch}/{epochs} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"loss {loss:.3f} ppl {math.exp(loss):.2f} {tokens / max(seconds, 1e-9):,.0f} tok/s")


def _train(args) -> int:
    from multirnn import backends

    from multirnn.lm import text
    from multirnn.lm.train import Trainer

    try:
        lm, params, vocab, config, progress, carried, data, corpus = _setup(args)
        train, valid = text.split_corpus(corpus, data["valid_fraction"])
        trainer = Trainer(lm, params, train, config, args.backend, progress, carried)
    except (ValueError, TypeError, backends.BackendUnavailable) as exc:
        return setup_error("train", exc)
    unigram = text.unigram_perplexity(train, valid if len(valid) else train, lm.vocab_size)
    plot = args.plot or str(Path(args.checkpoint).with_suffix(".png"))
    steps_left = args.max_steps
    out = sys.stderr
    show_bar = not args.quiet and out.isatty()  # "\r" redraws belong on a terminal, not in a log
    print(f"{lm.rnn.cell} LM, vocab {lm.vocab_size}, hidden {lm.rnn.num_hiddens}, {len(train)} train / "
          f"{len(valid)} valid tokens, backend {args.backend}; unigram perplexity {unigram:.2f}", file=out)
    try:
        while progress.epoch < args.epochs and steps_left != 0:
            total = len(trainer.batches(progress.epoch))
            start, tokens, shown = time.perf_counter(), 0, 0.0
            while steps_left != 0:
                info = trainer.step()
                tokens += info["tokens"]
                steps_left = None if steps_left is None else steps_left - 1
                now = time.perf_counter()
                if show_bar and (now - shown > 0.2 or info["epoch_done"]):
                    shown = now
                    print(_bar(progress.epoch + 1, args.epochs, progress.batch, total, progress.epoch_loss,
                               progress.epoch_batches, tokens, time.perf_counter() - start), end="",
                          file=out, flush=True)
                if info["epoch_done"]:
                    result = trainer.finish_epoch(valid if len(valid) else None)
                    valid_text = ("" if result["valid_perplexity"] is None
                                  else f", valid perplexity {result['valid_perplexity']:.2f}")
                    print(("\n" if show_bar else "") + f"epoch {result['epoch']}: train perplexity "
                          f"{result['train_perplexity']:.2f}{valid_text} "
                          f"({tokens / max(time.perf_counter() - start, 1e-9):,.0f} tok/s)", file=out)
                    _save(args.checkpoint, trainer, vocab, data, unigram)
                    save_plot(plot, progress.history, unigram)
                    break
    except KeyboardInterrupt:
        _save(args.checkpoint, trainer, vocab, data, unigram)
        print(f"\ninterrupted: saved {args.checkpoint} at step {progress.step}", file=out)
        return 130
    _save(args.checkpoint, trainer, vocab, data, unigram)
    print(f"saved {args.checkpoint} (epoch {progress.epoch}, step {progress.step})", file=out)
    return 0
