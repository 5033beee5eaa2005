"""A torch ``nn.Module`` cell of a unidirectional multirnn spec, called like ``nn.GRUCell``:
``h = cell(x_t, h)`` (rnn/gru), ``(h, c) = cell(x_t, (h, c))`` (lstm); a stacked spec takes and returns
its nested state (multirnn.spec), the last layer's h being the output. Imported only through
multirnn.native_cell."""
from __future__ import annotations

import torch

from multirnn import stepping
from multirnn.backends import get
from multirnn.state import flatten_state, nest_state


class RecurrentCell(torch.nn.Module):
    """Parameters under the canonical names with '.' written as '__' (torch forbids dots), as
    backends.torch_backend.RecurrentModule. One step is multirnn.stepping over recurrence.make_step."""

    def __init__(self, model, params):
        super().__init__()
        self.model = model
        self.weights = torch.nn.ParameterDict(
            {name.replace(".", "__"): torch.nn.Parameter(torch.tensor(params[name]))
             for name in model.param_shapes()})
        self._prepared = (None, None)  # (parameter versions, stepping.prepare of them) for no_grad use

    def canonical_params(self) -> dict:
        return {name.replace("__", "."): value for name, value in self.weights.items()}

    def initial_state(self, batch: int):
        """Zeros in the nested convention (what ``cell(x_t)`` starts from)."""
        like = next(iter(self.weights.values()))
        zeros = like.new_zeros((batch, self.model.num_hiddens))
        return nest_state(self.model, [(zeros,) * self.model.state_arrays for _ in self.model.units()])

    def _layers(self):
        """The fused weights: rebuilt every call under autograd (the gradient flows through them),
        reused under no_grad until a parameter changes (an optimizer step bumps its version)."""
        ops = get("torch")
        if torch.is_grad_enabled():
            return stepping.prepare(ops, self.model, self.canonical_params())
        versions = tuple((id(p), p._version) for p in self.weights.values())
        if self._prepared[0] != versions:
            self._prepared = (versions, stepping.prepare(ops, self.model, self.canonical_params()))
        return self._prepared[1]

    def forward(self, input, hx=None):  # noqa: A002 -- nn.GRUCell's argument names
        state = self.initial_state(input.shape[0]) if hx is None else hx
        _, finals = stepping.advance(get("torch"), self._layers(), input, flatten_state(self.model, state))
        return nest_state(self.model, finals)

    def extra_repr(self) -> str:
        return str(self.model)


def native_cell(model, params):
    return RecurrentCell(model, params)
