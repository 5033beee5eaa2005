"""``multirnn.port.load``: the one front door for porting, for saved files and live framework objects.

It picks the reader of the source's framework (``multirnn.port.<framework>.read`` for live objects,
``read_file`` for paths), which accounts for the whole source or refuses by name, and -- where the
source can run -- proves the conversion by running it (``multirnn.port.verify``). No framework is
imported until a source of that framework is given.
"""
from __future__ import annotations

import importlib
import os

from .source import Loaded

# A live object's framework, from the top-level package its class (or a base class) comes from.
_LIVE_READERS = (
    ("torch", "torch"),
    ("keras", "keras"), ("tf_keras", "keras"), ("tensorflow", "keras"),
    ("flax.nnx", "flax_nnx"), ("flax.linen", "flax"),
    ("mxnet", "gluon"),
    ("onnx", "onnx"),
)

_LIST_READERS = ("flax_nnx",)  # readers that take a list of layer modules
# Readers of cells stepped one at a time (nn.GRUCell, ...), alone or as a hand-stacked list (port.cells).
_CELL_READERS = {"torch": "cells_torch", "keras": "cells_keras", "flax": "cells_flax", "gluon": "cells_gluon"}


def _reader_of(source) -> str | None:
    for cls in type(source).__mro__:
        module = cls.__module__ or ""
        for package, reader in _LIVE_READERS:
            if module == package or module.startswith(package + "."):
                return reader
    return None


def load(source, *, variables=None, verify: bool = True, format: str | None = None, **known) -> Loaded:
    """``(model, params)`` -- a ``Loaded``, which unpacks to those two -- from any supported source.

    source: a path (``.npz .pt/.pth .keras/.h5 .msgpack .params .onnx``, or ``format=``) or a live
    object: a torch ``nn.RNN/GRU/LSTM`` (or a module whose only computation is one such stack), a
    Keras layer / ``Sequential`` / functional ``Model``, a Flax linen module (with its ``variables``),
    an nnx module, a Gluon block, an ``onnx.ModelProto``.
    known: spec fields the source cannot say (e.g. ``nonlinearity`` of a torch RNN state_dict); a
    field that contradicts the source is an error.
    verify: run the source in its own framework on seeded probes and compare with the converted model
    on the NumPy float64 reference; ``ConversionMismatch`` beyond the parity tolerance. Sources that
    cannot run (weights-only files) are returned with a note saying so.
    """
    from .verify import prove

    if isinstance(source, (str, os.PathLike)):
        from .files import guess_format, read_loaded

        if variables is not None:
            raise ValueError("variables= goes with a live Flax linen module, not with a path")
        loaded = read_loaded(format or guess_format(source), source, **known)
    else:
        if format is not None:
            raise ValueError("format= applies to paths; a live object's framework is read from its type")
        reader = _reader_of(source)
        if isinstance(source, (list, tuple)) and source:  # layers given one by one (nnx_layers' list)
            readers = {_reader_of(layer) for layer in source}
            reader = readers.pop() if len(readers) == 1 else None
        if reader in _CELL_READERS and importlib.import_module(f"{__package__}.{_CELL_READERS[reader]}").is_cell(
                source):
            reader = _CELL_READERS[reader]
        elif isinstance(source, (list, tuple)) and source:
            if reader not in _LIST_READERS:
                raise TypeError(f"a list of layers is read for {sorted(_LIST_READERS)} modules and cells of "
                                f"{sorted(_CELL_READERS)} only; got "
                                f"{sorted(type(layer).__qualname__ for layer in source)}")
        if reader is None:
            raise TypeError(f"cannot read a {type(source).__module__}.{type(source).__qualname__}: give a "
                            f"path or a torch, Keras, Flax, Gluon or ONNX model")
        loaded = importlib.import_module(f"{__package__}.{reader}").read(source, variables=variables, **known)
    if verify and loaded.run is not None:
        prove(loaded)
    elif loaded.run is None and not loaded.native:
        loaded.notes += (unverified(loaded),)
    return loaded


def unverified(loaded: Loaded) -> str:
    """Why ``loaded`` could not be proven by running its source."""
    return (f"not verified: {loaded.origin or 'the source'} cannot be run here ({loaded.why_not_run}); the "
            "conversion rests on what the source says and the fields given")
