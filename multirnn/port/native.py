"""The frameworks' own recurrent layers, each loaded with weights converted by multirnn.port and run
on NumPy inputs: what ``multirnn compare --native`` and the porting tests hold against the reference.
Every framework is imported only when its layer is asked for."""
from __future__ import annotations

# Native layer family -> the multirnn backend whose framework it needs.
FRAMEWORK_BACKEND = {"torch": "torch", "keras": "tensorflow", "flax": "jax", "nnx": "jax", "gluon": "mxnet",
                     "onnxruntime": None}
LAYERS = {"torch": "torch nn.RNN/GRU/LSTM", "keras": "Keras SimpleRNN/GRU/LSTM (+Bidirectional)",
          "flax": "Flax linen nn.RNN (+nn.Bidirectional)", "nnx": "Flax nnx RNN (+Bidirectional)",
          "gluon": "Gluon rnn.RNN/GRU/LSTM", "onnxruntime": "ONNX RNN/GRU/LSTM nodes in onnxruntime"}


def run_native(framework: str, model, params, inputs, state=None):
    """``(outputs, state)`` of ``framework``'s own layer(s) holding ``params`` converted by multirnn.port;
    UnrepresentableError where the framework cannot hold the model."""
    if framework == "torch":
        from . import torch as ptorch

        return ptorch.run_torch_layer(model, ptorch.torch_layer(model, params), inputs, state)
    if framework == "keras":
        from . import keras as pkeras

        return pkeras.run_keras_layers(model, pkeras.keras_layers(model, params), inputs, state)
    if framework == "flax":
        from . import flax as pflax

        return pflax.run_flax(model, pflax.to_flax(model, params), inputs, state)
    if framework == "nnx":
        from . import flax_nnx as pnnx

        return pnnx.run_nnx(model, pnnx.to_nnx(model, params), inputs, state)
    if framework == "gluon":
        from . import gluon as pgluon

        return pgluon.run_gluon_layer(model, pgluon.gluon_layer(model, params), inputs, state)
    if framework == "onnxruntime":
        from . import onnx as ponnx

        return ponnx.run_onnx(model, ponnx.to_onnx(model, params), inputs, state, engine="onnxruntime")
    raise ValueError(f"framework must be one of {sorted(FRAMEWORK_BACKEND)}, got {framework!r}")


def version(framework: str) -> str:
    """The version of the package that runs ``framework``'s layers (imports it)."""
    import importlib

    package = {"keras": "keras", "flax": "flax", "nnx": "flax", "gluon": "mxnet"}.get(framework, framework)
    backend = FRAMEWORK_BACKEND[framework]
    if backend is not None:
        from multirnn import backends

        backends.get(backend)  # the import order and numpy.bool alias the registry takes care of
    return importlib.import_module(package).__version__
