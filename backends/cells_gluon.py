"""A Gluon recurrent cell of a unidirectional multirnn spec: ``begin_state(batch_size)``,
``output, states = cell(x_t, states)``, ``cell.unroll(...)``, as ``mxnet.gluon.rnn.GRUCell``. Imported only
through multirnn.native_cell (after backends.mxnet_backend, which makes MXNet importable)."""
from __future__ import annotations

import mxnet as mx

from multirnn import stepping
from multirnn.backends import get


class RecurrentCell(mx.gluon.rnn.RecurrentCell):
    """States are a list, one entry per state array: the flat state of multirnn.state, unit by unit,
    h before c. Parameters under the canonical names with '.' written as '__' (after Gluon's own
    block prefix), as backends.mxnet_backend.RecurrentBlock."""

    def __init__(self, model, params, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self._dtype = next(iter(params.values())).dtype
        self.canonical = {}
        with self.name_scope():
            for name, value in params.items():
                self.canonical[name] = self.params.get(name.replace(".", "__"), shape=value.shape,
                                                       dtype=value.dtype)
        self.initialize(mx.init.Zero())
        for name, value in params.items():
            self.canonical[name].set_data(mx.nd.array(value, dtype=value.dtype))

    def state_info(self, batch_size=0):
        info = {"shape": (batch_size, self.model.num_hiddens), "__layout__": "NC", "dtype": self._dtype}
        return [dict(info) for _ in range(self.model.state_arrays * self.model.num_layers)]

    def _alias(self):  # Gluon's default name prefix (called before __init__ has set self.model)
        return "multirnn_cell"

    def forward(self, inputs, states):
        self._counter += 1  # RecurrentCell's step counter (unroll and begin_state names use it)
        per_unit = self.model.state_arrays
        flat = [tuple(states[k:k + per_unit]) for k in range(0, len(states), per_unit)]
        params = {name: param.data() for name, param in self.canonical.items()}
        output, finals = stepping.step_network(get("mxnet"), self.model, params, inputs, flat)
        return output, [a for unit in finals for a in unit]


def native_cell(model, params):
    return RecurrentCell(model, params)
