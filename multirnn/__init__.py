"""multirnn: recurrent networks defined once, run on PyTorch, TensorFlow, JAX/Flax and MXNet alike.

``import multirnn`` imports no framework; a backend's framework is imported the first time it is used.
"""
from . import checkpoint
from .api import forward, gradients, native_layer
from .clipping import clip_by_global_norm, global_norm
from .params import init_params
from .spec import BiRNNScratch, GRUScratch, LSTMScratch, RecurrentSpec, RNNScratch

__version__ = "0.1.0"

__all__ = ["RNNScratch", "BiRNNScratch", "GRUScratch", "LSTMScratch", "RecurrentSpec", "init_params",
           "forward", "gradients", "native_layer", "backends", "checkpoint", "clip_by_global_norm",
           "global_norm"]


def __getattr__(name):
    if name == "backends":  # the registry (imports no framework); loaded on first mention
        import importlib

        return importlib.import_module("multirnn.backends")
    raise AttributeError(f"module 'multirnn' has no attribute {name!r}")
