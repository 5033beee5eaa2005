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
    weights named with '.' written as '__'. A Keras mask (``Masking``, ``Embedding(mask_zero=True)``)
    that is suffix padding becomes the spec's ``lengths``; any other mask is refused by name."""

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
        if lengths is None and mask is not None:
            lengths = suffix_lengths(mask, model.batch_first)
        if lengths is not None:
            lengths = self._tensor(lengths, "int32")
        ys, state = impl.run_user(model, params, inputs, state, lengths, dropout_seed)
        return (ys, state) if self.return_state else ys

    def compute_mask(self, inputs, mask=None):
        return mask  # outputs are padded where the inputs were (and zero there)

    def _tensor(self, value, dtype=None):
        return ops.convert_to_tensor(value, dtype=dtype or self.compute_dtype)


def _require_jax_x64() -> None:
    import jax

    if not jax.config.read("jax_enable_x64"):  # Keras would silently cut the weights to float32
        raise ValueError("float64 on Keras's jax backend needs JAX's x64 mode: set JAX_ENABLE_X64=1 "
                         "(or jax.config.update('jax_enable_x64', True)) before building the layer")


def suffix_lengths(mask, batch_first: bool):
    """Per-sequence lengths of a Keras mask that keeps a prefix of every sequence; ValueError otherwise
    (eagerly; inside a compiled step TensorFlow asserts and JAX raises through a debug callback)."""
    keep = ops.cast(mask, "int32")
    keep = keep if batch_first else ops.transpose(keep)  # (batch, steps)
    lengths = ops.sum(keep, axis=1)
    prefix = ops.cast(ops.expand_dims(ops.arange(ops.shape(keep)[1]), 0) < ops.expand_dims(lengths, 1),
                      "int32")
    _require(ops.all(ops.equal(keep, prefix)),
             "the Keras mask is not suffix padding (each sequence's kept steps first, padding after): "
             "only that mask maps to multirnn's lengths; arbitrary masks are not supported yet")
    return lengths


def _require(ok, message: str) -> None:
    try:
        concrete = bool(ok)
    except TypeError:  # traced (tf.function graph, jax jit): check when the step runs
        _require_traced(ok, message)
        return
    if not concrete:
        raise ValueError(message)


def _require_traced(ok, message: str) -> None:
    if keras_backend() == "tensorflow":
        import tensorflow as tf

        tf.debugging.Assert(ok, [message])
    elif keras_backend() == "jax":
        import jax

        def check(value):
            if not value:
                raise ValueError(message)
        jax.debug.callback(check, ok)
