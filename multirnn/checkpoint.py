"""Checkpoints in one framework-neutral format: a ``.npz`` (zip of ``.npy``) plus a JSON header.

Layout of the zip (uncompressed, fixed timestamps, so equal content gives equal bytes):

- ``params/<name>.npy``: the canonical parameters of the spec (multirnn.spec);
- ``arrays/<name>.npy``: any extra arrays (an embedding, an output layer, optimizer moments...);
- ``multirnn.json``: format name and version, multirnn version, the spec (class + fields), dtype, the
  user's JSON metadata (seed, step, vocabulary...), per array its shape, dtype and SHA-256, and the
  SHA-256 of the header itself (``header_sha256``, over its canonical JSON without that entry), so a
  hand-edited header is caught as surely as a damaged array. Version 1 files (no header hash) still load.

Any tool that reads npz reads it (``numpy.load(path, allow_pickle=False)``); nothing is ever unpickled.
Writes are atomic: a temp file in the same directory, fsync, then ``os.replace``, so a crash mid-write
leaves the previous checkpoint (or none), never a torn one. Reading checks the zip CRCs, every array's
SHA-256, the format version, and the arrays against the stored spec; anything off raises
``CheckpointError`` (a ValueError) saying what.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import validate
from .spec import RecurrentSpec

FORMAT = "multirnn-checkpoint"
FORMAT_VERSION = 2  # 2: the header carries its own SHA-256
HEADER_HASH = "header_sha256"
HEADER = "multirnn.json"
MAX_HEADER_BYTES = 16 << 20  # a header is a few kB; refuse to parse anything absurd
RESERVED_METADATA = ("multirnn_version", "format_version", "dtype", "spec")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # array names that are safe zip member names
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_ARRAY_KINDS = "biufcSU"  # numbers, bools and fixed-width strings: never object arrays


class CheckpointError(ValueError):
    """A file that is not a valid multirnn checkpoint: corrupt, truncated, or not matching its spec."""


class Checkpoint(NamedTuple):
    model: RecurrentSpec
    params: dict
    metadata: dict
    arrays: dict


def save(path, model: RecurrentSpec, params: dict, *, arrays: dict | None = None, **metadata) -> Path:
    """Write ``model``, ``params`` (canonical layout), optional extra ``arrays`` (name -> ndarray) and
    JSON-serialisable ``metadata`` (e.g. ``seed=0, step=100``) to ``path`` atomically. Returns the path.
    """
    path = Path(path)
    validate.check_model(model)
    dtype = validate.check_params(model, params, finite=False)  # a diverged run may still be saved
    arrays = _check_arrays(arrays)
    _check_metadata(metadata)
    members = {f"params/{name}.npy": params[name] for name in model.param_shapes()}
    members.update({f"arrays/{name}.npy": value for name, value in arrays.items()})
    blobs = {member: _npy_bytes(value) for member, value in members.items()}
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "multirnn_version": _version(),
        "spec": spec_to_dict(model), "dtype": dtype.name, "metadata": metadata,
        "arrays": {member: {"shape": list(members[member].shape), "dtype": members[member].dtype.str,
                            "sha256": hashlib.sha256(blob).hexdigest()}
                   for member, blob in blobs.items()},
    }
    blobs[HEADER] = json.dumps(seal(header), indent=1, sort_keys=True, allow_nan=False).encode()

    def write(file):
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            for member, blob in blobs.items():
                archive.writestr(zipfile.ZipInfo(member, _ZIP_TIME), blob)
    atomic_write(path, write)
    return path


def load(path, model: RecurrentSpec | None = None) -> tuple[RecurrentSpec, dict, dict]:
    """``(model, params, metadata)`` from a checkpoint; metadata holds the user's entries plus
    ``multirnn_version``, ``format_version`` and ``dtype``. Extra arrays: see ``read``. Given
    ``model``, the stored spec must equal it."""
    return read(path, model)[:3]


def read(path, model: RecurrentSpec | None = None) -> Checkpoint:
    """The whole checkpoint: ``Checkpoint(model, params, metadata, arrays)``; given ``model``, the
    stored spec must equal it."""
    if model is not None:
        validate.check_model(model)
    with open(path, "rb") as file:  # a missing file or a directory raises the usual OSError
        try:
            loaded = _read(file, str(path))
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged zip can fail anywhere inside zipfile/numpy
            raise CheckpointError(f"{path}: corrupt or truncated checkpoint "
                                  f"({type(exc).__name__}: {exc})") from exc
    if model is not None and loaded.model != model:
        raise CheckpointError(f"{path}: holds {loaded.model!r}, expected {model!r}")
    return loaded


# ---- reading ----

def _read(file, where: str) -> Checkpoint:
    def fail(message):
        raise CheckpointError(f"{where}: {message}")

    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        fail(f"not a multirnn checkpoint (not a valid .npz/zip file, truncated or corrupt: {exc})")
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        if HEADER not in infos:
            fail(f"not a multirnn checkpoint (no {HEADER} header; members: {sorted(infos)[:5]})")
        if infos[HEADER].file_size > MAX_HEADER_BYTES:
            fail(f"{HEADER} is {infos[HEADER].file_size} bytes, more than a header can be")
        header = json.loads(archive.read(HEADER).decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            fail(f"{HEADER} does not describe a {FORMAT}")
        version = header.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            fail(f"invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            fail(f"format version {version} is newer than this multirnn reads ({FORMAT_VERSION}); "
                 f"it was written by multirnn {header.get('multirnn_version')!r}: upgrade multirnn")
        if version >= 2 and header.get(HEADER_HASH) != _header_digest(header):
            fail(f"{HEADER} was edited or is corrupt (its {HEADER_HASH} does not match its content)")
        try:
            model = spec_from_dict(header.get("spec"))
        except ValueError as exc:
            fail(str(exc))
        index, metadata = header.get("arrays"), header.get("metadata")
        if not isinstance(index, dict) or not isinstance(metadata, dict):
            fail(f"{HEADER} lacks its 'arrays' index or 'metadata'")
        if set(infos) != set(index) | {HEADER}:
            fail(f"members do not match the index: missing {sorted(set(index) - set(infos))}, "
                 f"unexpected {sorted(set(infos) - set(index) - {HEADER})}")
        expected = {f"params/{name}.npy": shape for name, shape in model.param_shapes().items()}
        stored = {m: tuple(entry["shape"]) for m, entry in index.items() if m.startswith("params/")}
        if set(stored) != set(expected):
            fail(f"parameters do not match the stored spec {model}: missing "
                 f"{sorted(_strip(m) for m in set(expected) - set(stored))}, unexpected "
                 f"{sorted(_strip(m) for m in set(stored) - set(expected))}")
        for member, shape in expected.items():
            if stored[member] != shape:
                fail(f"params[{_strip(member)!r}] has shape {stored[member]} in the file but the stored "
                     f"spec needs {shape}")
        loaded = {member: _read_member(archive, member, index[member], fail) for member in index}
    params = {name: loaded[f"params/{name}.npy"] for name in model.param_shapes()}  # canonical order
    arrays = {_strip(m): v for m, v in loaded.items() if m.startswith("arrays/")}
    if len(params) + len(arrays) != len(loaded):
        fail(f"unknown members {sorted(m for m in loaded if not m.startswith(('params/', 'arrays/')))}")
    dtype = validate.check_params(model, params, finite=False)
    if dtype.name != header.get("dtype"):
        fail(f"params are {dtype.name} but the header says {header.get('dtype')!r}")
    info = {"multirnn_version": header.get("multirnn_version"), "format_version": version,
            "dtype": dtype.name}
    return Checkpoint(model, params, {**metadata, **info}, arrays)


def _read_member(archive, member, entry, fail) -> np.ndarray:
    blob = archive.read(member)  # zipfile checks the CRC-32
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        fail(f"{member} is corrupt (SHA-256 does not match the header)")
    array = np.lib.format.read_array(io.BytesIO(blob), allow_pickle=False)
    if list(array.shape) != list(entry["shape"]) or array.dtype.str != entry["dtype"]:
        fail(f"{member} is {array.dtype.str}{array.shape}, the header says "
             f"{entry['dtype']}{tuple(entry['shape'])}")
    return array


def _strip(member: str) -> str:
    return member.split("/", 1)[1][:-len(".npy")]


def _spec_classes() -> dict:
    """RecurrentSpec and every subclass defined so far, by name: only these are ever constructed."""
    found, todo = {}, [RecurrentSpec]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def spec_to_dict(model: RecurrentSpec) -> dict:
    """The one serialized form of a spec (checkpoints, ONNX metadata, LM configs): class + fields."""
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.init}
    return {"class": type(model).__name__, "fields": fields}


def spec_from_dict(spec) -> RecurrentSpec:
    """Inverse of spec_to_dict; ValueError naming what is wrong. Only RecurrentSpec and its subclasses
    are ever constructed."""
    if not isinstance(spec, dict) or not isinstance(spec.get("fields"), dict):
        raise ValueError(f"{HEADER} has no valid 'spec'")
    cls = _spec_classes().get(spec.get("class"))
    if cls is None:
        raise ValueError(f"unknown spec class {spec.get('class')!r} (known: {sorted(_spec_classes())}); "
                         f"import the module that defines it before loading")
    try:
        return cls(**spec["fields"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"stored spec {spec} is invalid: {exc}") from None


def _header_digest(header: dict) -> str:
    body = {k: v for k, v in header.items() if k != HEADER_HASH}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(header: dict) -> dict:
    """``header`` with its own SHA-256 set (as ``save`` writes it)."""
    return {**header, HEADER_HASH: _header_digest(header)}


# ---- writing ----

def _check_arrays(arrays) -> dict:
    if arrays is None:
        return {}
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> numpy.ndarray, got {type(arrays).__name__}")
    for name, value in arrays.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"arrays: name {name!r} must match {_NAME.pattern}")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"arrays[{name!r}] must be a numpy.ndarray, got {type(value).__name__}")
        if value.dtype.kind not in _ARRAY_KINDS or value.dtype.fields is not None:
            raise TypeError(f"arrays[{name!r}] must have a numeric, bool or string dtype, "
                            f"got {value.dtype} (object arrays would need pickle)")
    return arrays


def _check_metadata(metadata: dict) -> None:
    for key, value in metadata.items():
        if key in RESERVED_METADATA:
            raise ValueError(f"metadata key {key!r} is reserved (multirnn fills it in); reserved: "
                             f"{RESERVED_METADATA}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata[{key!r}] must be JSON-serialisable (no nan/inf), got "
                            f"{type(value).__name__}: {exc}") from None


def _npy_bytes(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
    return buffer.getvalue()


def _version() -> str:
    from . import __version__

    return __version__


def atomic_write(path: Path, write) -> None:
    """Write via a temp file in the same directory, fsync, rename over ``path``, fsync the directory."""
    directory = path.parent if str(path.parent) else Path(".")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # makes the rename itself durable; not possible everywhere
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
