"""Porting between multirnn's canonical params and other frameworks' own recurrent layers.

The front door is ``multirnn.port.load(source)``: a saved file or a live framework object in, a
``Loaded`` (unpacks to ``(model, params)``) out, proven equal by running the source where it can run.
``multirnn.port.<framework>`` modules (torch, keras, flax, flax_nnx, gluon, onnx) also offer the
weights-only functions ``to_<fw>(model, params)`` / ``from_<fw>(model, weights)`` on plain NumPy data:
those trust the spec they are given. Importing them imports no framework (only the helpers that build,
read or run a framework's layer do, lazily).
"""
from ._common import UnrepresentableError
from .front import load
from .source import Loaded, SourceRun
from .verify import ConversionMismatch, Verification, prove

__all__ = ["ConversionMismatch", "Loaded", "SourceRun", "UnrepresentableError", "Verification", "load",
           "prove"]
