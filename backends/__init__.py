"""Backend registry. Installed as ``multirnn.backends`` (pyproject maps this folder there).

Each framework adapter lives in its own module, imported only when that backend is first asked for, so
``import multirnn`` imports no framework. A missing or broken framework surfaces as BackendUnavailable
naming the extra to install.
"""
from __future__ import annotations

import importlib
import sys
import warnings

# Order matters where a process loads several: torch must be imported before tensorflow (importing
# it after tensorflow is a known segfault/hang with some builds), and compare/available()/load() walk
# backends in this order.
NAMES = ("numpy", "torch", "tensorflow", "jax", "mxnet")
FRAMEWORKS = ("torch", "tensorflow", "jax", "mxnet")  # NAMES less the reference

_loaded: dict = {}
_failed: dict = {}


class BackendUnavailable(ImportError):
    """A backend's framework is missing or fails to import or run."""


def install_hint(name: str) -> str:
    return f"pip install 'multirnn[{name}]'"


def get(name: str):
    """The backend object for ``name``, importing its framework on first use."""
    if name not in NAMES:
        raise ValueError(f"backend must be one of {NAMES}, got {name!r}")
    if name in _loaded:
        return _loaded[name]
    if name in _failed:  # a half-imported framework is not retried: the first error stands
        raise _failed[name]
    _check_import_order(name)
    try:
        backend = importlib.import_module(f"{__name__}.{name}_backend").Backend()
    except Exception as exc:  # noqa: BLE001 - a broken install can raise anything at import
        error = BackendUnavailable(
            f"backend {name!r} is unavailable ({type(exc).__name__}: {exc}); install it with: "
            f"{install_hint(name)} (see constraints.txt for versions verified together)")
        error.__cause__ = exc
        _failed[name] = error
        raise error from exc
    _loaded[name] = backend
    return backend


def load(*names: str) -> list:
    """Several backends a process means to use, imported in the order that is safe together (NAMES
    order: torch before tensorflow); returned in the order asked."""
    for name in sorted(names, key=lambda n: NAMES.index(n) if n in NAMES else -1):
        get(name)
    return [get(name) for name in names]


def _check_import_order(name: str) -> None:
    """torch must be imported before tensorflow in a process that loads both. Importing torch just
    because it is installed would cost every TensorFlow user seconds, so the registry imports only
    what is asked for, and says so when the order comes out wrong (load() orders several)."""
    if name == "torch" and "tensorflow" in sys.modules and "torch" not in sys.modules:
        warnings.warn("torch is imported after tensorflow, which hangs or crashes with some builds; "
                      "ask for torch first (multirnn.backends.load('torch', 'tensorflow'))",
                      RuntimeWarning, stacklevel=3)


def available() -> list[str]:
    """Backends that import and run a tiny forward pass here, in NAMES order."""
    names = []
    for name in NAMES:
        try:
            get(name).smoke_test()
        except BackendUnavailable:
            continue
        names.append(name)
    return names
