"""A torch ``nn.Module`` cell of a unidirectional multirnn spec, called like ``nn.GRUCell``:
``h = cell(x_t, h)`` (rnn/gru), ``(h, c) = cell(x_t, (h, c))`` (lstm); a stacked spec takes and returns
its nested state (multirnn.spec), the last layer's h being the output. Imported only through
multirnn.native_cell."""
from __future__ import annotations

import torch

from multirnn import recurrence, stepping
from multirnn.backends import get
from multirnn.state import flatten_state, nest_state

from .torch_backend import CanonicalParameters

# torch's own one-step kernels (what nn.RNNCell/GRUCell/LSTMCell call); weights (G·H, in), (G·H, H)
_CELL_KERNELS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn-tanh": torch.rnn_tanh_cell,
                 "rnn-relu": torch.rnn_relu_cell}


class RecurrentCell(CanonicalParameters):
    """Parameters as the native layer's (CanonicalParameters). One step runs torch's own cell kernel
    where it computes the spec exactly (the decision of recurrence.fused_path, as for whole layers), else
    multirnn.stepping over recurrence.make_step."""

    def __init__(self, model, params):
        super().__init__(model, params)
        dtype = next(iter(params.values())).dtype
        self.uses_kernel = recurrence.fused_path(get("torch"), model, dtype)
        key = model.cell if model.cell != "rnn" else f"rnn-{model.nonlinearity}"
        self._kernel = _CELL_KERNELS[key]
        self._prepared = (None, None)  # (parameter versions, prepared weights) for no_grad use
        self._parameters_in_order = list(self.weights.values())  # read per call: ParameterDict is slow

    def initial_state(self, batch: int):
        """Zeros in the nested convention (what ``cell(x_t)`` starts from)."""
        like = next(iter(self.weights.values()))
        zeros = like.new_zeros((batch, self.model.num_hiddens))
        return nest_state(self.model, [(zeros,) * self.model.state_arrays for _ in self.model.units()])

    def _prepare(self):
        ops, params = get("torch"), self.canonical_params()
        if not self.uses_kernel:
            return stepping.prepare(ops, self.model, params)
        layers = []
        for _, _, prefix, _ in self.model.units():
            w_ih, w_hh, b_ih, b_hh = recurrence.kernel_weights(ops, self.model,
                                                               recurrence.unit_params(params, prefix))
            layers.append((w_ih.T, w_hh.T, b_ih, b_hh))
        return layers

    def _layers(self):
        """The fused weights: rebuilt every call under autograd (the gradient flows through them),
        reused under no_grad until a parameter changes (an optimizer step bumps its version)."""
        if torch.is_grad_enabled():
            return self._prepare()
        versions = [p._version for p in self._parameters_in_order]
        if self._prepared[0] != versions:
            self._prepared = (versions, self._prepare())
        return self._prepared[1]

    def forward(self, input, hx=None):  # noqa: A002 -- nn.GRUCell's argument names
        state = self.initial_state(input.shape[0]) if hx is None else hx
        flat, layers = flatten_state(self.model, state), self._layers()
        if not self.uses_kernel:
            _, finals = stepping.advance(get("torch"), layers, input, flat)
            return nest_state(self.model, finals)
        finals, x = [], input
        for weights, carry in zip(layers, flat):
            carry = tuple(self._kernel(x, tuple(carry), *weights)) if self.model.cell == "lstm" \
                else (self._kernel(x, carry[0], *weights),)
            finals.append(carry)
            x = carry[0]
        return nest_state(self.model, finals)

    def extra_repr(self) -> str:
        return str(self.model)


def native_cell(model, params):
    return RecurrentCell(model, params)
