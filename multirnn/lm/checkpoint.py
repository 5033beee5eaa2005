"""Language-model checkpoints, stored in the one canonical format of multirnn.checkpoint.

The recurrent part is the checkpoint's spec and params; the head (``W_hq``, ``b_q``, ``W_embed``) and
the state carried by sequential partitioning (``state.<unit>.<k>``) are its extra arrays; the LM config,
vocabulary and training progress are its JSON metadata. So every guarantee of multirnn.checkpoint holds
(atomic write, no pickle, SHA-256-checked arrays, clear CheckpointError on a damaged file).
"""
from __future__ import annotations

from pathlib import Path

from .. import checkpoint
from .model import LanguageModel, check_lm_params
from .text import Vocab

KIND = "language-model"


def save(path, lm: LanguageModel, params: dict, vocab: Vocab, meta: dict | None = None,
         carried: list | None = None) -> Path:
    """Write the checkpoint to ``path`` atomically; returns the path. ``meta`` must be JSON-serialisable."""
    check_lm_params(lm, params)
    if len(vocab) != lm.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} tokens but the model's vocab_size is {lm.vocab_size}")
    rnn_names = lm.rnn.param_shapes()
    arrays = {name: value for name, value in params.items() if name not in rnn_names}
    for unit, arrays_of_unit in enumerate(carried or []):
        for k, array in enumerate(arrays_of_unit):
            arrays[f"state.{unit}.{k}"] = array
    return checkpoint.save(path, lm.rnn, {name: params[name] for name in rnn_names}, arrays=arrays,
                           kind=KIND, lm=lm.to_dict(), vocab=vocab.idx_to_token, meta=meta or {})


def load(path):
    """(lm, params, vocab, meta, carried) from a checkpoint written by save()."""
    if not Path(path).is_file():
        raise ValueError(f"checkpoint must be an existing file, got {str(path)!r}")
    stored = checkpoint.read(path)
    if stored.metadata.get("kind") != KIND:
        raise checkpoint.CheckpointError(f"{path}: not a language-model checkpoint (it holds a bare "
                                         f"{type(stored.model).__name__}; see multirnn.checkpoint)")
    lm = LanguageModel.from_dict(stored.metadata["lm"])
    if lm.rnn != stored.model:
        raise checkpoint.CheckpointError(f"{path}: LM config {lm.rnn!r} disagrees with the stored "
                                         f"spec {stored.model!r}")
    params = dict(stored.params)
    units: dict[int, dict[int, object]] = {}
    for name, value in stored.arrays.items():
        if name.startswith("state."):
            _, unit, k = name.split(".")
            units.setdefault(int(unit), {})[int(k)] = value
        else:
            params[name] = value
    check_lm_params(lm, params)
    carried = [tuple(units[u][k] for k in sorted(units[u])) for u in sorted(units)] or None
    return lm, params, Vocab(idx_to_token=stored.metadata["vocab"]), stored.metadata["meta"], carried
