"""Keras 3 layer of a multirnn spec, for every Keras backend (tensorflow, jax, torch).

The recurrence is not rewritten for Keras: ``call`` runs ``multirnn.recurrence`` through the multirnn
backend named by ``keras.config.backend()``, whose Ops work on that framework's tensors, and a Keras
Variable's ``.value`` is such a tensor (a ``tf.Variable``, a jax array or traced value, a torch
``Parameter``). So ``model.fit`` differentiates it with the framework's own autodiff. Against a
keras.ops-based Ops (docs/native-layers.md) the backend's Ops were faster on torch (fused kernels) and
jax, and even on TensorFlow.

Import this module only after the matching multirnn backend is loaded (``multirnn.native_layer`` does:
the registry keeps torch-before-tensorflow order).
"""
from __future__ import annotations

import keras
from keras import ops

from multirnn import masking, recurrence
from multirnn.backends import get
from multirnn.checkpoint import spec_from_dict, spec_to_dict
from multirnn.params import init_params

KERAS_BACKENDS = ("tensorflow", "jax", "torch")  # the Keras backends with a multirnn backend


def keras_backend() -> str:
    name = keras.config.backend()
    if name not in KERAS_BACKENDS:
        raise ValueError(f"the multirnn Keras layer runs on the Keras backends {KERAS_BACKENDS}; "
                         f"KERAS_BACKEND is {name!r}")
    return name


@keras.saving.register_keras_serializable(package="multirnn")
class RecurrentLayer(keras.layers.Layer):
    """``layer(inputs, state=None, lengths=None) -> (outputs, state)``, or just ``outputs`` with
    ``return_state=False`` (what ``Sequential`` + ``fit`` want). The canonical params are trainable
    weights named with '.' written as '__'. A Keras mask (``Masking``, ``Embedding(mask_zero=True)``),
    in the inputs' layout, runs with Keras' own semantics (multirnn.masking, as ``multirnn.forward``'s
    ``mask``); ``lengths`` (torch/ONNX padding) takes precedence over it."""

    def __init__(self, model, params=None, seed=0, return_state=True, dtype=None, **kwargs):
        backend = keras_backend()  # refuses a Keras backend with no multirnn backend (numpy) up front
        if isinstance(model, dict):  # from_config
            model = spec_from_dict(model)
        if params is None:  # seeded like every backend; from_config then loads the saved weights
            params = init_params(model, seed, keras.dtype_policies.get(dtype).variable_dtype
                                 if dtype is not None else "float32")
        dtype = next(iter(params.values())).dtype.name
        if dtype == "float64" and backend == "jax":
            _require_jax_x64()
        super().__init__(dtype=dtype, **kwargs)
        self.model, self.seed, self.return_state = model, seed, return_state
        self.supports_masking = True
        self.canonical = {}
        for name, value in params.items():
            weight = self.add_weight(name=name.replace(".", "__"), shape=value.shape,
                                     initializer="zeros", dtype=dtype, trainable=True)
            weight.assign(value)
            self.canonical[name] = weight
        self.built = True  # every weight exists already: stateless_call and load_model need no build

    def get_config(self):
        # the spec and the seed; the weights travel in the .keras file's weight store
        return {**super().get_config(), "model": spec_to_dict(self.model), "seed": self.seed,
                "return_state": self.return_state}

    def call(self, inputs, state=None, lengths=None, mask=None, dropout_seed=None):
        """``lengths`` (ints (batch,)) and ``dropout_seed`` (training-mode dropout between layers with
        the masks of multirnn.forward(training=True, dropout_seed=...)) as in multirnn.forward."""
        impl = get(keras_backend())
        model = self.model
        params = {name: weight.value for name, weight in self.canonical.items()}
        if state is not None:
            state = keras.tree.map_structure(self._tensor, state)
        if lengths is not None:
            lengths = self._tensor(lengths, "int32")
        padding = None if lengths is not None or mask is None else _mask_padding(model, inputs, mask)
        ys, state = impl.run_user(model, params, inputs, state, lengths, dropout_seed, padding)
        return (ys, state) if self.return_state else ys

    def compute_mask(self, inputs, mask=None):
        return mask  # outputs are masked where the inputs were

    def _tensor(self, value, dtype=None):
        return ops.convert_to_tensor(value, dtype=dtype or self.compute_dtype)


def _require_jax_x64() -> None:
    import jax

    if not jax.config.read("jax_enable_x64"):  # Keras would silently cut the weights to float32
        raise ValueError("float64 on Keras's jax backend needs JAX's x64 mode: set JAX_ENABLE_X64=1 "
                         "(or jax.config.update('jax_enable_x64', True)) before building the layer")


def _mask_padding(model, inputs, mask):
    """recurrence.Padding of a Keras mask (in the inputs' layout), in keras.ops (so also symbolic),
    as backends/_base.py builds it for multirnn.forward's ``mask``."""
    if model.reverse and not model.keep_order and model.num_layers > 1:
        raise ValueError("a Keras mask is not supported with reverse=True, keep_order=False and "
                         "num_layers > 1 (each layer reads the previous one's outputs last step first)")
    keep = ops.cast(ops.swapaxes(mask, 0, 1) if model.batch_first else mask, "int32")  # (T, B)
    factor = masking.output_factor(model, keep, xp=ops)
    return recurrence.Padding(None, ops.expand_dims(ops.cast(keep, "bool"), 2),
                              ops.expand_dims(ops.cast(factor, inputs.dtype), 2))
