"""Exact weight converters between multirnn's canonical params and other frameworks' own layers.

``multirnn.port.<framework>`` modules (torch, keras, flax, gluon, onnx) each offer ``to_<fw>(model,
params)`` and ``from_<fw>(model, weights)`` on plain NumPy data; importing them imports no framework
(only the helpers that build or run a framework's layer do, lazily).
"""
from ._common import UnrepresentableError

__all__ = ["UnrepresentableError"]
