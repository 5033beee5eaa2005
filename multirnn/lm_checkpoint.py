"""Language-model checkpoints: one ``.npz`` written atomically, readable with ``allow_pickle=False``.

Layout: ``param/<canonical name>`` arrays, ``state/<unit>/<k>`` (state carried by sequential
partitioning, if any), and ``metadata``: a one-element unicode array holding JSON (format, version, the
model spec, vocabulary, training config and progress). No pickles, so loading a file cannot run code.
The file is written to a temporary file in the same directory and moved into place with os.replace, so a
crash never leaves a half-written checkpoint under the real name.

(Kept separate from the general checkpoint work in multirnn/checkpoint.py so the two can be unified later.)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .lm import LanguageModel, check_lm_params
from .text import Vocab

FORMAT = "multirnn-lm"
VERSION = 1


def save(path, lm: LanguageModel, params: dict, vocab: Vocab, meta: dict | None = None,
         carried: list | None = None) -> Path:
    """Write the checkpoint to ``path`` atomically; returns the path. ``meta`` must be JSON-serialisable."""
    check_lm_params(lm, params)
    if len(vocab) != lm.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} tokens but the model's vocab_size is {lm.vocab_size}")
    path = Path(path)
    metadata = {"format": FORMAT, "version": VERSION, "model": lm.to_dict(),
                "vocab": vocab.idx_to_token, "meta": meta or {}}
    arrays = {f"param/{name}": np.asarray(value) for name, value in params.items()}
    for unit, arrays_of_unit in enumerate(carried or []):
        for k, array in enumerate(arrays_of_unit):
            arrays[f"state/{unit}/{k}"] = np.asarray(array)
    arrays["metadata"] = np.array([json.dumps(metadata)])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path):
    """(lm, params, vocab, meta, carried) from a checkpoint written by save()."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint must be an existing file, got {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"checkpoint {str(path)!r} is not a readable .npz file: {exc}") from exc
    if "metadata" not in arrays:
        raise ValueError(f"checkpoint {str(path)!r} has no metadata: not a {FORMAT} checkpoint")
    metadata = json.loads(str(arrays.pop("metadata")[0]))
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise ValueError(f"checkpoint {str(path)!r} is format {metadata.get('format')!r} version "
                         f"{metadata.get('version')!r}; expected {FORMAT!r} version {VERSION}")
    lm = LanguageModel.from_dict(metadata["model"])
    params = {name[len("param/"):]: value for name, value in arrays.items() if name.startswith("param/")}
    check_lm_params(lm, params)
    units: dict[int, dict[int, np.ndarray]] = {}
    for name, value in arrays.items():
        if name.startswith("state/"):
            _, unit, k = name.split("/")
            units.setdefault(int(unit), {})[int(k)] = value
    carried = [tuple(units[u][k] for k in sorted(units[u])) for u in sorted(units)] or None
    return lm, params, Vocab(idx_to_token=metadata["vocab"]), metadata["meta"], carried
