"""PyTorch adapter: autograd over eager ops. Layers the fused kernels compute exactly run in torch's own
kernel (``torch.lstm`` etc., what nn.RNN/GRU/LSTM call: oneDNN's LSTM on CPU); the rest run a Python
time loop, torch's fastest non-fused option on CPU."""
from __future__ import annotations

import contextlib
import importlib.util
import sys

import numpy as np
import torch

# CUDA builds of torch (2.14.1 from the package index) ship triton, which torch.export / dynamo import
# lazily; triton's native library crashes the process when it is first loaded after tensorflow. Loading
# it with torch keeps the torch-before-tensorflow rule true for it too (~0.1 s, only where installed).
if importlib.util.find_spec("triton") is not None and "tensorflow" not in sys.modules:
    with contextlib.suppress(ImportError):
        import triton._C.libtriton  # noqa: F401

from multirnn import recurrence
from multirnn.backends import get
from multirnn.params import init_params

from ._base import AbstractBackend, tree_leaves, tree_map

_DTYPES = {torch.float16: np.dtype("float16"), torch.float32: np.dtype("float32"),
           torch.float64: np.dtype("float64")}


class Backend(AbstractBackend):
    """Eager: ``compile`` is the identity (the default); autograd is ``value_and_grad``."""

    name = "torch"
    version = torch.__version__
    has_fused_kernel = True
    # cells no kernel computes (d2l's GRU, hard sigmoid gates, ...): an eager step may slice off the
    # sequences that ended (0.78-0.97x the full batch forward, where the masked scan cost 0.94-1.17x)
    shrinking_scan = True
    matmul = staticmethod(torch.matmul)
    tanh = staticmethod(torch.tanh)
    relu = staticmethod(torch.relu)
    sigmoid = staticmethod(torch.sigmoid)

    def fused_kernel(self, model, units):
        """The kernel nn.RNN/GRU/LSTM call, on per unit W_ih (G·H, in), W_hh (G·H, h_size), then b_ih,
        b_hh if the model has biases, then a projected lstm's W_hr (P, H) (the kernel tells a projection
        from h's width) (transposed once here, not once per call)."""
        weights = []
        for p in units:
            w_ih, w_hh, b_ih, b_hh = recurrence.kernel_weights(self, model, p)
            weights += [w_ih.T.contiguous(), w_hh.T.contiguous()]  # what the kernels expect
            if model.bias:
                weights += [b_ih, torch.zeros_like(b_ih) if b_hh is None else b_hh]
            if model.proj_size:
                weights.append(p["W_proj"].T.contiguous())
        kernel = {"lstm": torch.lstm, "gru": torch.gru, "rnn": _RNN_KERNELS[model.nonlinearity]}[model.cell]

        def run(xs, states):
            initial = [torch.stack([s[i] for s in states]) for i in range(model.state_arrays)]  # (units, B, H)
            ys, *ends = _opaque_to_compile(kernel, xs, tuple(initial) if model.cell == "lstm" else initial[0],
                                           weights, model.bias, 1, 0.0, False, len(units) == 2, False)
            return ys, list(zip(*(a.unbind(0) for a in ends)))
        return run

    def asarray(self, a):
        return torch.from_numpy(np.ascontiguousarray(a))

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def dtype_of(self, x):
        return _DTYPES[x.dtype]

    def value_and_grad(self, fn, seeded=False):
        def value_and_grad_fn(wrt, *rest):
            seed = rest[-1] if seeded else None
            wrt = tree_map(lambda a: a.detach().requires_grad_(True), wrt)
            value, aux = fn(wrt, *(rest[:-1] if seeded else rest))
            grads = iter(torch.autograd.grad(value, tree_leaves(wrt), grad_outputs=seed))
            return (value.detach(), aux), tree_map(lambda _: next(grads), wrt)
        return value_and_grad_fn

    def concat(self, xs, axis):
        return torch.cat(list(xs), dim=axis)

    def split(self, x, n):
        return torch.chunk(x, n, dim=-1)

    where = staticmethod(torch.where)

    def zeros(self, shape, like):
        return like.new_zeros(shape)

    def take(self, x, indices, axis):
        return torch.index_select(x, axis, indices)

    def split_sizes(self, x, sizes, axis):
        return torch.split(x, list(sizes), dim=axis)

    def mask_padded(self, x, lengths):
        return torch.where(torch.arange(x.shape[0])[:, None, None] < lengths[:, None], x, 0)

    def reverse_padded(self, x, lengths):
        t = torch.arange(x.shape[0])[:, None]
        index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B): each sequence within its length
        return torch.gather(x, 0, index[:, :, None].expand(x.shape))

    def flip_time(self, x):
        return torch.flip(x, (0,))

    def swap01(self, x):
        return x.transpose(0, 1)

    def zeros_state(self, xs, hidden):
        return xs.new_zeros((xs.shape[1], hidden))

    def one_hot(self, indices, depth, like):
        return torch.nn.functional.one_hot(indices, depth).to(like.dtype)

    def take_rows(self, table, indices):
        return torch.nn.functional.embedding(indices, table)

    def log_softmax(self, x):
        return torch.log_softmax(x, dim=-1)

    def sum_all(self, x):
        return torch.sum(x)

    def scan(self, step, carry, xs, reverse=False):
        steps = list(zip(*(a.unbind(0) for a in xs))) if isinstance(xs, tuple) else xs.unbind(0)
        ys = []
        for x in (reversed(steps) if reverse else steps):
            carry, y = step(carry, x)
            ys.append(y)
        return carry, torch.stack(ys[::-1] if reverse else ys)

    def native_layer(self, model, params=None, seed=0, dtype="float32", api="module"):
        return RecurrentModule(model, params if params is not None else init_params(model, seed, dtype))


_RNN_KERNELS = {"tanh": torch.rnn_tanh, "relu": torch.rnn_relu}


@torch.compiler.disable
def _opaque_to_compile(kernel, *args):
    """The fused kernel runs as is under torch.compile, as dynamo runs nn.RNN/GRU/LSTM (allow_rnn=False):
    traced, torch 2.13's CPU LSTM (mkldnn_rnn_layer) fails in AOT autograd and inductor."""
    return kernel(*args)


class CanonicalParameters(torch.nn.Module):
    """A module holding a spec's parameters under the canonical names, '.' written as '__' (torch
    forbids dots): what the native layer and the native cell share."""

    def __init__(self, model, params):
        super().__init__()
        self.model = model
        self.weights = torch.nn.ParameterDict(
            {name.replace(".", "__"): torch.nn.Parameter(torch.tensor(params[name]))
             for name in model.param_shapes()})

    def canonical_params(self) -> dict:
        return {name.replace("__", "."): value for name, value in self.weights.items()}


class RecurrentModule(CanonicalParameters):
    """A torch ``nn.Module`` of any multirnn spec; ``forward(inputs, state=None) -> (outputs, state)``.

    Parameters: see CanonicalParameters. It runs under ``torch.compile`` (docs/native-layers.md gives the compile time). Where the spec is
    one of torch's own ``nn.RNN/GRU/LSTM``, ``torch_state_dict()`` is that layer's state_dict and
    ``load_torch_state_dict`` reads one back (through multirnn.port.torch).
    """

    def forward(self, inputs, state=None, lengths=None, dropout_seed=None):
        """``lengths`` (ints (batch,)) and ``dropout_seed`` (training-mode dropout between layers, the
        masks of multirnn.forward(training=True, dropout_seed=...)) as in multirnn.forward."""
        return get("torch").run_user(self.model, self.canonical_params(), inputs, state, lengths, dropout_seed)

    def numpy_params(self) -> dict:
        """The canonical params as NumPy arrays (what multirnn.forward and the converters take)."""
        return {name: value.detach().cpu().numpy() for name, value in self.canonical_params().items()}

    def torch_state_dict(self) -> dict:
        """The state_dict of the equivalent ``nn.RNN/GRU/LSTM`` (``multirnn.port.torch.torch_layer``);
        ValueError naming why where torch has no such layer (d2l's reset-before GRU)."""
        from multirnn.port.torch import to_torch

        return {key: torch.from_numpy(value)
                for key, value in to_torch(self.model, self.numpy_params()).items()}

    def to_torch_layer(self) -> torch.nn.Module:
        """torch's own ``nn.RNN/GRU/LSTM`` holding these weights."""
        from multirnn.port.torch import torch_layer

        return torch_layer(self.model, self.numpy_params())

    def load_torch_state_dict(self, state_dict: dict, prefix: str = "") -> None:
        """Copy an ``nn.RNN/GRU/LSTM`` state_dict (or a bigger model's, under ``prefix``) into this module."""
        from multirnn.port.torch import from_torch

        params = from_torch(self.model, state_dict, prefix)
        with torch.no_grad():
            for name, value in self.canonical_params().items():
                value.copy_(torch.from_numpy(params[name]))
