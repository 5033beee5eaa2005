"""Keras 3 layer of a multirnn spec. Imported only through the tensorflow backend."""
from __future__ import annotations

import keras

from multirnn.backends import get


class RecurrentLayer(keras.layers.Layer):
    """``layer(inputs, state=None) -> (outputs, state)`` holding the canonical params as trainable
    weights (named with '.' written as '__')."""

    def __init__(self, model, params, **kwargs):
        dtype = next(iter(params.values())).dtype.name
        super().__init__(dtype=dtype, **kwargs)
        self.model = model
        self.canonical = {}
        for name, value in params.items():
            weight = self.add_weight(name=name.replace(".", "__"), shape=value.shape,
                                     initializer="zeros", dtype=dtype, trainable=True)
            weight.assign(value)
            self.canonical[name] = weight

    def call(self, inputs, state=None):
        params = {name: weight.value for name, weight in self.canonical.items()}
        return get("tensorflow").run_user(self.model, params, inputs, state)
