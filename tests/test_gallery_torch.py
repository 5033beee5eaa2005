"""A gallery of real torch modules through ``multirnn.port.load``: each converts exactly -- proven by
load itself (it runs the module) AND by an explicit comparison of the module's own outputs and final
state with ``multirnn.forward`` on the NumPy float64 reference -- or is refused by name with
``UnrepresentableError``. Nothing in between: no module comes back computing something else."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_close, load_backend, random_state, to_float64

import multirnn
import multirnn.port
from multirnn.port._common import UnrepresentableError

CLASSES = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def _inputs(model, steps=5, batch=3, seed=0):
    shape = (batch, steps) if model.batch_first else (steps, batch)
    return np.random.default_rng(seed).normal(size=shape + (model.num_inputs,))


def _reference(loaded, inputs, state=None):
    """multirnn.forward on the NumPy float64 reference with the converted params."""
    params64 = {k: v.astype(np.float64) for k, v in loaded.params.items()}
    return multirnn.forward(loaded.model, params64, inputs, to_float64(state))


def _run(module, inputs, *args):
    """The module itself, as a user runs it for inference."""
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(torch.from_numpy(inputs), *args)
    finally:
        module.train(was_training)


def _assert_state_close(model, torch_state, expected, dtype):
    from multirnn.state import flatten_state

    arrays = torch_state if model.cell == "lstm" else (torch_state,)
    for k, array in enumerate(arrays):
        want = np.stack([unit[k] for unit in flatten_state(model, expected)])
        assert_close(array.numpy(), want, dtype, f"final state array {k}")


def assert_stack_exact(module, dtype="float32", batch=3):
    """load() proves the conversion; then the module's own outputs and final state, from a random
    initial state, equal multirnn.forward's."""
    from multirnn.port.torch import _torch_state

    loaded = multirnn.port.load(module)
    assert loaded.verification is not None and loaded.verification.dtype == dtype
    model = loaded.model
    inputs = _inputs(model, batch=batch)
    state = random_state(model, batch, seed=5, dtype=dtype)
    out, hn = _run(module, inputs.astype(dtype), _torch_state(model, state))
    ref_out, ref_state = _reference(loaded, inputs, state)
    assert_close(out.numpy(), ref_out, dtype, "outputs")
    _assert_state_close(model, hn, ref_state, dtype)
    return loaded


def _stack(cell, *args, seed=0, **kwargs):
    import torch

    torch.manual_seed(seed)
    return getattr(torch.nn, CLASSES[cell])(*args, **kwargs)


# ---- plain nn.RNN / nn.GRU / nn.LSTM ----

@pytest.mark.parametrize("cell", sorted(CLASSES))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_every_mode_direction_and_depth_is_exact(cell, bidirectional, layers):
    load_backend("torch")
    module = _stack(cell, 3, 5, num_layers=layers, bidirectional=bidirectional)
    loaded = assert_stack_exact(module)
    assert (loaded.model.cell, loaded.model.num_layers, loaded.model.bidirectional) == (cell, layers,
                                                                                         bidirectional)
    assert loaded.model.reset_after == (cell == "gru")
    assert loaded.initial_state is None and loaded.notes == ()


@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_batch_first_is_exact(cell):
    load_backend("torch")
    loaded = assert_stack_exact(_stack(cell, 3, 4, batch_first=True, bidirectional=True))
    assert loaded.model.batch_first


@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_bias_false_is_exact(cell):
    load_backend("torch")
    loaded = assert_stack_exact(_stack(cell, 3, 4, num_layers=2, bias=False))
    assert not loaded.model.bias and not any(k.startswith("b_") or ".b_" in k for k in loaded.params)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_relu_is_exact_and_read_from_the_module(bidirectional):
    load_backend("torch")
    loaded = assert_stack_exact(_stack("rnn", 3, 4, num_layers=2, nonlinearity="relu",
                                       bidirectional=bidirectional))
    assert loaded.model.nonlinearity == "relu"


def test_a_known_field_that_contradicts_the_module_is_an_error():
    load_backend("torch")
    with pytest.raises(ValueError, match="nonlinearity='tanh' disagrees"):
        multirnn.port.load(_stack("rnn", 3, 4, nonlinearity="relu"), nonlinearity="tanh")
    with pytest.raises(ValueError, match="num_hiddens=7 disagrees"):
        multirnn.port.load(_stack("gru", 3, 4), num_hiddens=7)
    assert multirnn.port.load(_stack("rnn", 3, 4, nonlinearity="relu"), nonlinearity="relu").verification


def test_dropout_on_two_layers_is_exact_in_eval_mode_and_the_mode_is_restored():
    load_backend("torch")
    module = _stack("lstm", 3, 4, num_layers=2, dropout=0.3)
    module.train()
    loaded = assert_stack_exact(module)
    assert loaded.model.dropout == 0.3
    assert module.training, "load must restore the module's training mode"
    assert any("eval mode" in note for note in loaded.notes)


@pytest.mark.parametrize("cell", sorted(CLASSES))
def test_float64_modules_are_exact(cell):
    load_backend("torch")
    loaded = assert_stack_exact(_stack(cell, 3, 4, num_layers=2, bidirectional=True).double(), "float64")
    assert all(v.dtype == np.float64 for v in loaded.params.values())


@pytest.mark.parametrize("fields", [dict(), dict(num_layers=2, bidirectional=True),
                                    dict(num_layers=2, batch_first=True, bias=False)],
                         ids=["uni", "2layer-bi", "2layer-batch-first-nobias"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_proj_size_is_exact(fields, dtype):
    """nn.LSTM(proj_size=P): weight_hr_l* is the spec's W_proj; h and the outputs are P wide."""
    load_backend("torch")
    module = _stack("lstm", 3, 5, proj_size=2, **fields)
    loaded = assert_stack_exact(module.double() if dtype == "float64" else module, dtype)
    assert loaded.model.proj_size == 2 and loaded.model.output_size == 2 * len(loaded.model.directions)
    prefix = "l1.bwd." if fields.get("bidirectional") else ("l1." if fields else "")
    np.testing.assert_array_equal(loaded.params[prefix + "W_proj"],
                                  getattr(module, "weight_hr_l1_reverse" if prefix == "l1.bwd." else
                                          "weight_hr_l1" if fields else "weight_hr_l0").detach().numpy().T)


def test_proj_size_travels_both_ways_as_a_state_dict_and_a_layer():
    load_backend("torch")
    from multirnn.port import torch as ptorch

    module = _stack("lstm", 3, 5, proj_size=2, num_layers=2, bidirectional=True)
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    model = ptorch.infer_torch_spec(sd)
    assert (model.proj_size, model.num_hiddens, model.num_layers) == (2, 5, 2)
    params = ptorch.from_torch(model, sd)
    back = ptorch.to_torch(model, params)
    assert sorted(back) == sorted(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    assert_stack_exact(ptorch.torch_layer(model, params))


def test_a_learned_h0_of_a_projected_lstm_is_p_wide():
    """The learned-h0 pattern with proj_size: h0 (L·D, 1, P), c0 (L·D, 1, H)."""
    load_backend("torch")
    import torch

    torch.manual_seed(2)
    members = {"rnn": _stack("lstm", 3, 5, proj_size=2, bidirectional=True),
               "h0": torch.nn.Parameter(torch.randn(2, 1, 2)), "c0": torch.nn.Parameter(torch.randn(2, 1, 5))}

    def forward(self, x):
        return self.rnn(x, (self.h0.expand(-1, x.shape[1], -1).contiguous(),
                            self.c0.expand(-1, x.shape[1], -1).contiguous()))

    loaded = multirnn.port.load(_wrapper(forward, **members))
    assert loaded.model.learn_initial_state and loaded.model.proj_size == 2 and loaded.verification
    assert loaded.params["bwd.h_0"].shape == (2,) and loaded.params["bwd.c_0"].shape == (5,)


def test_float16_is_refused_by_dtype():
    load_backend("torch")
    with pytest.raises(UnrepresentableError, match="dtype"):
        multirnn.port.load(_stack("gru", 3, 4).half())


def test_forward_hooks_and_parametrizations_are_refused():
    load_backend("torch")
    import torch

    hooked = _stack("gru", 3, 4)
    hooked.register_forward_hook(lambda module, args, out: out)
    with pytest.raises(UnrepresentableError, match="forward hooks"):
        multirnn.port.load(hooked)
    normed = torch.nn.utils.parametrizations.weight_norm(_stack("gru", 3, 4), "weight_hh_l0")
    with pytest.raises(UnrepresentableError, match="parametrizations"):
        multirnn.port.load(normed)


def test_a_subclass_overriding_forward_is_refused():
    load_backend("torch")
    import torch

    class Doubled(torch.nn.GRU):
        def forward(self, x, hx=None):
            out, h = super().forward(x, hx)
            return 2 * out, h

    with pytest.raises(UnrepresentableError, match="overrides forward"):
        multirnn.port.load(Doubled(3, 4))


def test_torchscript_is_refused():
    load_backend("torch")
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.14 deprecates torch.jit.script
        scripted = torch.jit.script(_stack("gru", 3, 4))
    with pytest.raises(UnrepresentableError, match="TorchScript"):
        multirnn.port.load(scripted)


# ---- modules whose only computation is one recurrent stack (proven with torch.fx) ----

def _wrapper(body, **members):
    """A module holding ``members`` whose forward is ``body(self, x, ...)``."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, value in members.items():
                setattr(self, name, value)

        forward = body

    return Wrapper()


def _assert_wrapper_exact(module, inputs, expected_out, expected_state=None, dtype="float32"):
    loaded = multirnn.port.load(module)
    assert loaded.verification is not None
    ref_out, ref_state = _reference(loaded, inputs, loaded.initial_state)
    assert_close(expected_out.numpy(), ref_out, dtype, "outputs")
    if expected_state is not None:
        _assert_state_close(loaded.model, expected_state, ref_state, dtype)
    return loaded


def test_a_wrapper_holding_only_a_gru_is_exact():
    load_backend("torch")
    module = _wrapper(lambda self, x: self.rnn(x), rnn=_stack("gru", 3, 4, num_layers=2))
    loaded = multirnn.port.load(module)
    inputs = _inputs(loaded.model)
    out, hn = _run(module, inputs.astype(np.float32))
    _assert_wrapper_exact(module, inputs, out, hn)
    assert "'rnn'" in loaded.origin and loaded.run.takes_state is False


def test_a_wrapper_returning_only_the_outputs_is_exact():
    load_backend("torch")

    def forward(self, x):
        out, _ = self.encoder(x)
        return out

    module = _wrapper(forward, encoder=_stack("lstm", 3, 4, bidirectional=True, batch_first=True))
    loaded = multirnn.port.load(module)
    inputs = _inputs(loaded.model)
    _assert_wrapper_exact(module, inputs, _run(module, inputs.astype(np.float32)))


def test_a_wrapper_passing_the_state_through_takes_it():
    from multirnn.port.torch import _torch_state

    load_backend("torch")

    def forward(self, x, state=None):
        out, (h, c) = self.rnn(x, state)
        return out, (h, c)

    module = _wrapper(forward, rnn=_stack("lstm", 3, 4, num_layers=2))
    loaded = multirnn.port.load(module)
    assert loaded.run.takes_state
    model, inputs = loaded.model, _inputs(loaded.model)
    state = random_state(model, 3, seed=9, dtype="float32")
    out, hn = _run(module, inputs.astype(np.float32), _torch_state(model, state))
    ref_out, ref_state = _reference(loaded, inputs, state)
    assert_close(out.numpy(), ref_out, "float32", "outputs")
    _assert_state_close(model, hn, ref_state, "float32")


def test_sequential_holding_one_gru_is_exact():
    load_backend("torch")
    import torch

    module = torch.nn.Sequential(_stack("gru", 3, 4))
    loaded = multirnn.port.load(module)
    inputs = _inputs(loaded.model)
    out, hn = _run(module, inputs.astype(np.float32))
    _assert_wrapper_exact(module, inputs, out, hn)


def test_a_linear_before_the_gru_is_refused_by_name():
    load_backend("torch")
    import torch

    module = _wrapper(lambda self, x: self.rnn(self.proj(x)), proj=torch.nn.Linear(3, 3),
                      rnn=_stack("gru", 3, 4))
    with pytest.raises(UnrepresentableError, match=r"module 'proj' \(Linear\) computes more than one "
                                                   r"recurrent stack"):
        multirnn.port.load(module)


def test_a_linear_after_the_stack_or_an_activation_is_refused_by_name():
    load_backend("torch")
    import torch

    head = _wrapper(lambda self, x: self.head(self.rnn(x)[0]), rnn=_stack("gru", 3, 4),
                    head=torch.nn.Linear(4, 2))
    with pytest.raises(UnrepresentableError, match=r"'head' \(Linear\)"):
        multirnn.port.load(head)
    relu = _wrapper(lambda self, x: torch.relu(self.rnn(x)[0]), rnn=_stack("gru", 3, 4))
    with pytest.raises(UnrepresentableError, match="function relu"):
        multirnn.port.load(relu)


def test_unused_parameters_are_refused_by_name():
    load_backend("torch")
    import torch

    module = _wrapper(lambda self, x: self.rnn(x), rnn=_stack("gru", 3, 4), head=torch.nn.Linear(4, 2))
    with pytest.raises(UnrepresentableError, match=r"\['head.bias', 'head.weight'\]"):
        multirnn.port.load(module)


def test_two_stacks_and_a_sliced_result_are_refused():
    load_backend("torch")
    two = _wrapper(lambda self, x: self.b(self.a(x)[0]), a=_stack("gru", 3, 4), b=_stack("gru", 4, 4))
    with pytest.raises(UnrepresentableError, match="two recurrent stacks"):
        multirnn.port.load(two)
    last = _wrapper(lambda self, x: self.rnn(x)[0][-1], rnn=_stack("gru", 3, 4))
    with pytest.raises(UnrepresentableError, match="indexes the output sequence"):
        multirnn.port.load(last)


def test_an_untraceable_forward_is_refused():
    load_backend("torch")

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot follow it
            return self.rnn(x)
        return self.rnn(-x)

    with pytest.raises(UnrepresentableError, match="cannot be traced by torch.fx"):
        multirnn.port.load(_wrapper(forward, rnn=_stack("gru", 3, 4)))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_learned_h0_broadcast_over_the_batch_is_learn_initial_state(cell):
    """torch's learned-h0 pattern: nn.Parameter (L·D, 1, H) expanded (or repeated) to the batch is the
    spec's learn_initial_state; load proves it at batches 2, 1 and 3."""
    load_backend("torch")
    import torch

    torch.manual_seed(1)
    members = {"rnn": _stack(cell, 3, 4, num_layers=2, bidirectional=True),
               "h0": torch.nn.Parameter(torch.randn(4, 1, 4))}
    if cell == "lstm":
        members["c0"] = torch.nn.Parameter(torch.randn(4, 1, 4))

    def forward(self, x):
        h0 = self.h0.expand(-1, x.shape[1], -1).contiguous()
        return self.rnn(x, (h0, self.c0.repeat(1, x.size(1), 1)) if hasattr(self, "c0") else h0)

    module = _wrapper(forward, **members)
    loaded = multirnn.port.load(module)
    assert loaded.model.learn_initial_state and loaded.initial_state is None
    assert loaded.verification is not None and loaded.run.batch is None
    np.testing.assert_array_equal(loaded.params["l1.bwd.h_0"], members["h0"].detach().numpy()[3, 0])
    inputs = _inputs(loaded.model)
    out, _ = _run(module, inputs.astype(np.float32))
    want, _ = multirnn.forward(loaded.model, {k: v.astype(np.float64) for k, v in loaded.params.items()},
                               inputs.astype(np.float64))
    assert_close(out, want, "float32", "torch vs multirnn.forward")


def test_a_learned_h0_computed_is_refused_with_the_reason():
    load_backend("torch")
    import torch

    def forward(self, x):
        return self.rnn(x, (2 * self.h0).expand(-1, x.shape[1], -1).contiguous())

    module = _wrapper(forward, rnn=_stack("gru", 3, 4), h0=torch.nn.Parameter(torch.randn(1, 1, 4)))
    with pytest.raises(UnrepresentableError, match="'h0'.*a learned initial state computed"):
        multirnn.port.load(module)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_learned_h0_of_fixed_shape_is_exact_with_initial_state(cell):
    load_backend("torch")
    import torch

    torch.manual_seed(3)
    members = {"rnn": _stack(cell, 3, 4, num_layers=2), "h0": torch.nn.Parameter(torch.randn(2, 3, 4))}
    if cell == "lstm":
        members["c0"] = torch.nn.Parameter(torch.randn(2, 3, 4))

    def forward(self, x, state=None):
        if state is None:
            state = (self.h0, self.c0) if hasattr(self, "c0") else self.h0
        return self.rnn(x, state)

    module = _wrapper(forward, **members)
    loaded = multirnn.port.load(module)
    assert loaded.initial_state is not None and loaded.run.batch == 3 and loaded.run.takes_state
    first_h = loaded.initial_state[0][0] if cell == "lstm" else loaded.initial_state[0]
    np.testing.assert_array_equal(first_h, members["h0"].detach().numpy()[0])
    inputs = _inputs(loaded.model)
    out, hn = _run(module, inputs.astype(np.float32))
    _assert_wrapper_exact(module, inputs, out, hn)


# ---- state_dict files: weights only ----

def test_a_state_dict_file_is_weights_only_and_says_so(tmp_path):
    load_backend("torch")
    import torch

    path = tmp_path / "rnn.pt"
    torch.save(_stack("rnn", 3, 4, nonlinearity="relu").state_dict(), path)
    loaded = multirnn.port.load(path, nonlinearity="relu")
    assert loaded.run is None and loaded.verification is None
    assert any(note.startswith("weights only") for note in loaded.notes)
    assert "spec completed from flags: nonlinearity" in loaded.notes
