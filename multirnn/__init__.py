"""multirnn: recurrent networks defined once, run on PyTorch, TensorFlow, JAX/Flax and MXNet alike.

``import multirnn`` imports no framework, and not even NumPy: the specs load at once, the functions
that compute (and NumPy with them) on first use; a backend's framework the first time it is used.
"""
import importlib

from .spec import BiRNNScratch, GRUScratch, LSTMScratch, RecurrentSpec, RNNScratch

__version__ = "0.1.0"

__all__ = ["RNNScratch", "BiRNNScratch", "GRUScratch", "LSTMScratch", "RecurrentSpec", "init_params",
           "forward", "gradients", "native_layer", "backends", "checkpoint", "clip_by_global_norm",
           "global_norm", "step", "native_cell", "dropout_masks"]

# Public name -> module that defines it, imported on first access (PEP 562).
_LAZY = {"forward": "multirnn.api", "gradients": "multirnn.api", "native_layer": "multirnn.api",
         "init_params": "multirnn.params", "clip_by_global_norm": "multirnn.clipping",
         "global_norm": "multirnn.clipping", "step": "multirnn.cells",
         "native_cell": "multirnn.cells", "dropout_masks": "multirnn.dropout"}
_SUBMODULES = ("backends", "checkpoint")  # imported on first mention; neither imports a framework


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"multirnn.{name}")
    raise AttributeError(f"module 'multirnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
