"""multirnn: recurrent networks defined once, run on PyTorch, TensorFlow, JAX/Flax and MXNet alike.

``import multirnn`` imports no framework, and not even NumPy: the specs load at once, the functions
that compute (and NumPy with them) on first use; a backend's framework the first time it is used.
"""
import importlib

from .spec import BiRNNScratch, RecurrentSpec, RNNScratch

__version__ = "0.1.0"

__all__ = ["RNNScratch", "BiRNNScratch", "RecurrentSpec", "init_params", "forward", "gradients",
           "native_layer", "backends"]

# Public name -> module that defines it, imported on first access (PEP 562).
_LAZY = {"forward": "multirnn.api", "gradients": "multirnn.api", "native_layer": "multirnn.api",
         "init_params": "multirnn.params"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    if name == "backends":  # the registry (imports no framework)
        return importlib.import_module("multirnn.backends")
    raise AttributeError(f"module 'multirnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
