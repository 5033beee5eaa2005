"""PyTorch ``nn.RNN``/``nn.GRU``/``nn.LSTM`` state_dicts <-> canonical params.

Keys ``weight_ih_l{k}[_reverse]`` (G·H, in), ``weight_hh_l{k}`` (G·H, H), ``bias_ih``/``bias_hh`` (G·H,);
gates r, z, n (GRU) and i, f, g, o (LSTM). An LSTM with ``proj_size = P`` adds ``weight_hr_l{k}`` (P, H),
the transposed ``W_proj``, and its ``weight_hh`` is (4·H, P). torch's GRU resets after the recurrent matmul, so only
``reset_after=True`` GRUs convert. An RNN has two biases in torch and one (``b_h``) here: importing sums
them (one float rounding), exporting writes ``bias_ih = b_h, bias_hh = 0``.

``read`` takes a live module: an ``nn.RNN/GRU/LSTM``, or a module whose only computation is one such
stack (proven with ``torch.fx``); every attribute and array is accounted for or refused by name, and the
``Loaded`` it returns runs the module itself (eval mode, ``torch.no_grad``) so the conversion is proven.

The conversion itself is NumPy only; ``read``, ``torch_layer`` and ``run_torch_layer`` import torch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import operator
import re
from typing import Callable

import numpy as np

from ._common import (Fused, GATES_PER_CELL, UnrepresentableError, as_numpy, check_export, expect_shape,
                      finish_import, fuse, infer_fused_sizes, make_spec, require_no_learned_state,
                      require_reset_after, require_standard_cell, require_standard_directions, unfuse)

_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def _suffix(layer: int, direction: str) -> str:
    return f"_l{layer}" + ("_reverse" if direction == "bwd" else "")


def to_torch(model, params: dict) -> dict[str, np.ndarray]:
    """The state_dict (NumPy arrays) of the torch layer ``torch_layer(model)`` holding ``params``."""
    check_export(model, params)
    require_reset_after(model, "torch")
    require_standard_cell(model, "torch")
    require_standard_directions(model, "torch")
    require_no_learned_state(model, "torch")
    state = {}
    for layer, direction, prefix, _ in model.units():
        f = fuse(model, params, prefix, "torch")
        sfx = _suffix(layer, direction)
        state["weight_ih" + sfx] = np.ascontiguousarray(f.wx.T)
        state["weight_hh" + sfx] = np.ascontiguousarray(f.wh.T)
        if model.bias:
            state["bias_ih" + sfx] = f.bx.copy()
            state["bias_hh" + sfx] = f.bh.copy()
        if model.proj_size:
            state["weight_hr" + sfx] = np.ascontiguousarray(params[prefix + "W_proj"].T)
    return state


def _strip(state_dict: dict, prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix`` (a submodule of a bigger model), prefix removed."""
    out = {key[len(prefix):]: as_numpy(value) for key, value in state_dict.items()
           if key.startswith(prefix)}
    if not out:
        raise ValueError(f"no state_dict key starts with prefix {prefix!r} (keys: {sorted(state_dict)[:6]})")
    from .cells_torch import as_layer_state_dict  # an nn.*Cell's keys are layer 0's without "_l0"

    return as_layer_state_dict(out)


def from_torch(model, state_dict: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Canonical params from a torch RNN/GRU/LSTM state_dict (tensors or arrays). With ``prefix``
    (e.g. ``"rnn."``) only that submodule's entries of a bigger model's state_dict are read."""
    require_reset_after(model, "torch")
    require_standard_cell(model, "torch")
    require_standard_directions(model, "torch")
    require_no_learned_state(model, "torch")
    sd = _strip(state_dict, prefix)
    if "weight_hr_l0" in sd and not model.proj_size:
        size = np.shape(sd["weight_hr_l0"])[0]
        raise ValueError(f"state_dict has weight_hr_l* (a torch LSTM with proj_size={size}) but the spec "
                         f"has proj_size=0: give proj_size={size}")
    expected = set(to_torch_shapes(model))
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        raise ValueError(f"state_dict does not match {model}: missing {missing}, unexpected {extra}")
    for key, shape in to_torch_shapes(model).items():
        expect_shape(f"state_dict[{key!r}]", sd[key], shape)
    params = {}
    for layer, direction, prefix_, _ in model.units():
        sfx = _suffix(layer, direction)
        fused = Fused(sd["weight_ih" + sfx].T, sd["weight_hh" + sfx].T,
                      sd.get("bias_ih" + sfx), sd.get("bias_hh" + sfx))
        params.update(unfuse(model, fused, prefix_, "torch"))
        if model.proj_size:
            params[prefix_ + "W_proj"] = sd["weight_hr" + sfx].T
    return finish_import(model, params)


def to_torch_shapes(model) -> dict[str, tuple]:
    gh = GATES_PER_CELL[model.cell] * model.num_hiddens
    shapes = {}
    for layer, direction, _, width in model.units():
        sfx = _suffix(layer, direction)
        shapes["weight_ih" + sfx] = (gh, width)
        shapes["weight_hh" + sfx] = (gh, model.h_size)
        if model.bias:
            shapes["bias_ih" + sfx] = (gh,)
            shapes["bias_hh" + sfx] = (gh,)
        if model.proj_size:
            shapes["weight_hr" + sfx] = (model.proj_size, model.num_hiddens)
    return shapes


def infer_torch_spec(state_dict: dict, prefix: str = "", **known):
    """The spec of a torch RNN/GRU/LSTM state_dict from its key names and shapes. ``known`` fields
    (e.g. nonlinearity, which weights cannot show) complete or check the inference."""
    sd = _strip(state_dict, prefix)
    matches = {k: _KEY.match(k) for k in sd}
    bad = sorted(k for k, m in matches.items() if m is None)
    if bad or "weight_ih_l0" not in sd:
        raise ValueError(f"not a torch RNN/GRU/LSTM state_dict (keys {bad or sorted(sd)[:4]})")
    projection = sd.get("weight_hr_l0")  # (P, H): weight_hh_l0 is (4·H, P)
    inferred = infer_fused_sizes("weight_ih_l0", sd["weight_ih_l0"], "weight_hh_l0", sd["weight_hh_l0"],
                                 hidden=None if projection is None else projection.shape[1])
    if projection is not None:
        inferred["proj_size"] = projection.shape[0]
    inferred.update({"num_layers": 1 + max(int(m.group(2)) for m in matches.values()),
                     "bidirectional": any(m.group(3) for m in matches.values()),
                     "bias": "bias_ih_l0" in sd})
    if inferred["cell"] == "gru":
        inferred["reset_after"] = True
    return make_spec(inferred, known, "torch")


# ---- torch's own layers (imports torch) ----

def torch_layer(model, params: dict | None = None, *, state_dict: dict | None = None, dtype="float32"):
    """An ``nn.RNN``/``nn.GRU``/``nn.LSTM`` of ``model`` loaded with canonical ``params`` (their dtype)
    or with a torch ``state_dict`` of NumPy arrays as is."""
    import torch

    if params is not None:
        dtype, state_dict = check_export(model, params), to_torch(model, params)
    dtype = np.dtype(dtype)
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[model.cell]
    kwargs = {"nonlinearity": model.nonlinearity} if model.cell == "rnn" else {}
    if model.proj_size:
        kwargs["proj_size"] = model.proj_size
    layer = cls(model.num_inputs, model.num_hiddens, num_layers=model.num_layers, bias=model.bias,
                batch_first=model.batch_first, bidirectional=model.bidirectional,
                dtype=getattr(torch, dtype.name), **kwargs)
    if state_dict is not None:
        layer.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype)) for k, v in state_dict.items()})
    return layer


def _torch_state(model, state, device=None):
    """A nested multirnn state as torch's hx: h0 (L·D, B, H), or (h0, c0) for an LSTM (h0 P wide
    with a projection)."""
    import torch

    from multirnn.state import flatten_state

    flat = flatten_state(model, state)
    stacked = [torch.from_numpy(np.ascontiguousarray(np.stack([unit[k] for unit in flat]))).to(device)
               for k in range(len(flat[0]))]
    return tuple(stacked) if model.cell == "lstm" else stacked[0]


def _nested_state(model, hn):
    """torch's h_n (or (h_n, c_n)), (L·D, B, H) with units in canonical order, as a nested state."""
    from multirnn.state import nest_state

    arrays = [a.detach().cpu().numpy() for a in (hn if model.cell == "lstm" else (hn,))]
    return nest_state(model, [tuple(a[i] for a in arrays) for i in range(arrays[0].shape[0])])


def run_torch_layer(model, layer, inputs: np.ndarray, state=None):
    """Run a torch layer on NumPy inputs with a state in the multirnn convention; returns
    ``(outputs, state)`` in that convention (torch's h_n is (L·D, B, H), units in canonical order)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(inputs))
    hx = None if state is None else _torch_state(model, state)
    with torch.no_grad():
        out, hn = layer(x, hx)
    return out.numpy(), _nested_state(model, hn)


# ---- live modules: read, proven by running (imports torch) ----

# Spec fields a live nn.RNN/GRU/LSTM states itself; a `known` value that differs is an error.
_CELL_OF_MODE = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "GRU": ("gru", None),
                 "LSTM": ("lstm", None)}
_FLOAT_DTYPES = ("float32", "float64")


def _describe(module, name: str) -> str:
    return f"module {name!r} ({type(module).__name__})" if name else f"the {type(module).__name__} module"


def _stack_classes():
    import torch

    return (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM)


def _refuse_hooks(module) -> None:
    """Hooks and parametrizations change what a module computes (or which weights it uses) without
    showing in its attributes or its fx graph."""
    import torch
    from torch.nn.modules import module as module_mod
    from torch.nn.utils import parametrize

    if isinstance(module, torch.jit.ScriptModule):
        raise UnrepresentableError(f"{type(module).__name__} is TorchScript: its code cannot be read; "
                                   f"representable: the eager module")
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        if getattr(module_mod, kind, None):
            raise UnrepresentableError(f"torch has global {kind[8:].replace('_', ' ')} registered "
                                       f"(nn.modules.module.register_module_{kind[8:-1]}): they can change "
                                       f"what every module computes; remove them to convert")
    for name, sub in module.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks"):
            if getattr(sub, kind, None):
                raise UnrepresentableError(
                    f"{_describe(sub, name)} has {kind[1:].replace('_', ' ')} (e.g. weight_norm, a hook "
                    f"registered with register{kind[:-1]}): they can change what it computes; representable: "
                    f"the module without hooks")
        if parametrize.is_parametrized(sub):
            raise UnrepresentableError(
                f"{_describe(sub, name)} has parametrizations on {sorted(sub.parametrizations)}: its weights "
                f"are computed, not stored; representable: the module after "
                f"torch.nn.utils.parametrize.remove_parametrizations")


def _stack_spec(rnn, name: str, known: dict):
    """The spec of one nn.RNN/GRU/LSTM from every attribute that changes what it computes."""
    where = _describe(rnn, name)
    base = next(cls for cls in _stack_classes() if isinstance(rnn, cls))
    if type(rnn).forward is not base.forward:
        raise UnrepresentableError(f"{where} subclasses nn.{base.__name__} and overrides forward: its "
                                   f"computation is its own; representable: nn.{base.__name__} itself")
    if rnn.mode not in _CELL_OF_MODE or _CELL_OF_MODE[rnn.mode][0] != base.__name__.lower():
        raise UnrepresentableError(f"{where} has mode={rnn.mode!r}, which is not nn.{base.__name__}'s")
    cell, nonlinearity = _CELL_OF_MODE[rnn.mode]
    if cell == "rnn" and getattr(rnn, "nonlinearity", nonlinearity) != nonlinearity:
        # forward picks the kernel from mode; a nonlinearity attribute changed afterwards is ignored
        raise ValueError(f"{where} has nonlinearity={rnn.nonlinearity!r} but mode={rnn.mode!r}, which is "
                         f"what it computes; make them agree")
    fields = {"cell": cell, "num_inputs": rnn.input_size, "num_hiddens": rnn.hidden_size,
              "num_layers": rnn.num_layers, "bidirectional": bool(rnn.bidirectional), "bias": bool(rnn.bias),
              "batch_first": bool(rnn.batch_first), "dropout": float(rnn.dropout)}
    if getattr(rnn, "proj_size", 0):  # an LSTM's weight_hr_l*: the spec's W_proj
        fields["proj_size"] = int(rnn.proj_size)
    if cell == "rnn":
        fields["nonlinearity"] = nonlinearity
    if cell == "gru":
        fields["reset_after"] = True  # torch's GRU resets after the recurrent matmul
    return make_spec(fields, known, f"torch {where}")


def _stack_dtype(rnn, name: str) -> str:
    dtypes = {p.dtype for p in rnn.parameters()}
    names = sorted(str(d).replace("torch.", "") for d in dtypes)
    if len(names) != 1 or names[0] not in _FLOAT_DTYPES:
        raise UnrepresentableError(f"{_describe(rnn, name)} has parameters of dtype {names}: multirnn "
                                   f"computes in one of {_FLOAT_DTYPES}; representable: .float() or .double()")
    return names[0]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How a module's forward uses its one recurrent stack, as the fx trace proved it."""

    rnn_name: str  # "" when the module is the stack itself
    takes_state: bool  # forward's second argument is the stack's hx
    state_attrs: tuple = ()  # parameters/buffers passed as the stack's initial state (h0[, c0])
    state_broadcast: bool = False  # state_attrs of shape (L·D, 1, H) expanded over the batch
    outputs: Callable = operator.itemgetter(0)  # forward's result -> the output sequence
    state: Callable | None = operator.itemgetter(1)  # forward's result -> h_n or (h_n, c_n), or None


def _fetch(module, target: str):
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


class _Refused(Exception):
    """A node of the traced graph that is not part of the one-recurrent-stack pattern."""


def _trace(module, concrete_args=None):
    import torch

    try:
        return torch.fx.symbolic_trace(module, concrete_args=concrete_args).graph
    except Exception as exc:  # noqa: BLE001 -- any tracing failure means: not provable
        raise UnrepresentableError(
            f"{type(module).__name__}.forward cannot be traced by torch.fx ({type(exc).__name__}: {exc}), so "
            f"it cannot be proven to compute one recurrent stack only; representable: an nn.RNN/GRU/LSTM, "
            f"or a module whose forward only calls one") from exc


def _node_text(module, node) -> str:
    if node.op == "call_module":
        return _describe(_fetch(module, node.target), node.target)
    if node.op == "call_method":
        return f"method .{node.target}()"
    if node.op == "get_attr":
        return f"attribute {node.target!r}"
    return f"function {getattr(node.target, '__name__', node.target)}"


# Tensor methods that broadcast a (L·D, 1, H) parameter over the batch without computing anything.
_BROADCAST_METHODS = ("expand", "repeat", "contiguous")


def _is_batch_size(node, x) -> bool:
    """``node`` reads a size of forward's input ``x``: x.shape[i], x.size(i) or x.size()[i] (which axis
    is the batch is left to the proof by running, which probes several batch sizes)."""
    if not hasattr(node, "op"):
        return False
    if node.op == "call_method" and node.target == "size":
        return node.args[:1] == (x,) and len(node.args) == 2 and isinstance(node.args[1], int)
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
        base = node.args[0]
        return (base.op == "call_function" and base.target is getattr and tuple(base.args) == (x, "shape")) \
            or (base.op == "call_method" and base.target == "size" and tuple(base.args) == (x,))
    return False


def _broadcast_source(node, x):
    """(the get_attr node, the nodes used) when ``node`` is a parameter expanded/repeated over the
    batch (sizes are ints or x's sizes, at least one of them) and made contiguous; else None."""
    used, batch_sizes = [], 0
    while hasattr(node, "op") and node.op == "call_method" and node.target in _BROADCAST_METHODS:
        used.append(node)
        for size in node.args[1:]:
            if _is_batch_size(size, x):
                batch_sizes += 1
                used += [size] + ([size.args[0]] if size.op == "call_function" else [])
            elif not isinstance(size, int):
                return None
        node = node.args[0]
    if hasattr(node, "op") and node.op == "get_attr" and batch_sizes:
        return node, used
    return None


def _broadcast_states(module, graph) -> dict:
    """{hx node: (attr target, helper nodes)} for each state entry of the stack call that broadcasts
    a learned parameter over the batch (torch's common learned-h0 pattern)."""
    stacks = _stack_classes()
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    found = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(_fetch(module, node.target), stacks) and placeholders:
            hx = node.args[1] if len(node.args) > 1 else node.kwargs.get("hx")
            for entry in (hx if isinstance(hx, (tuple, list)) else (hx,)):
                source = _broadcast_source(entry, placeholders[0])
                if source is not None:
                    found[entry] = (source[0].target, source[1])
    return found


def _refuse_transformed_state(module, graph, broadcast: dict) -> None:
    """A parameter/buffer that reaches a stack through other ops than a broadcast over the batch is a
    learned initial state computed: say so, rather than naming the first op."""
    stacks = _stack_classes()
    allowed = {n for _, helpers in broadcast.values() for n in helpers}
    for attr in (n for n in graph.nodes if n.op == "get_attr"):
        if all(user in allowed for user in attr.users):
            continue
        ops, todo, seen = [], [u for u in attr.users if u.op != "call_module"], set()
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            ops.append(_node_text(module, node))
            for user in node.users:
                feeds_state = user.args[:1] != (node,) and user.kwargs.get("input") is not node
                if user.op == "call_module" and isinstance(_fetch(module, user.target), stacks) and feeds_state:
                    raise UnrepresentableError(
                        f"{type(module).__name__}.forward passes {attr.target!r} to {user.target!r} through "
                        f"{', '.join(sorted(set(ops)))}: a learned initial state computed is not "
                        f"representable; representable: a parameter h0 (and c0) of shape (L·D, 1, H) "
                        f"expanded (or repeated) over the batch (the spec's learn_initial_state), one of "
                        f"shape (L·D, batch, H) passed as it is, or the stack with its state given")
                todo.append(user)


def _graph_facts(module, graph, specialized: str | None = None) -> dict:
    """Check the traced graph is placeholder(s) -> one stack call -> getitem(s) -> output, and say
    where the stack's input and hx come from and where forward's result holds its results."""
    stacks = _stack_classes()
    broadcast = _broadcast_states(module, graph)
    _refuse_transformed_state(module, graph, broadcast)
    helpers = {n for _, used in broadcast.values() for n in used}
    placeholders, attrs, paths, rnn_node, output = [], {}, {}, None, None
    for node in graph.nodes:
        if node in helpers:
            continue  # the broadcast of a learned initial state (read below)
        if node.op == "placeholder":
            placeholders.append(node)
        elif node.op == "get_attr":
            attrs[node] = node.target
        elif node.op == "call_module" and isinstance(_fetch(module, node.target), stacks):
            if rnn_node is not None:
                raise UnrepresentableError(
                    f"{type(module).__name__}.forward calls two recurrent stacks, {rnn_node.target!r} and "
                    f"{node.target!r}: one spec holds one stack; convert each stack on its own")
            rnn_node, paths[node] = node, ()
        elif node.op == "call_function" and node.target is operator.getitem and node.args[0] in paths:
            paths[node] = _result_path(module, rnn_node, paths[node.args[0]], node.args[1])
        elif (node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert_is_none"
              and node.args[0].op == "placeholder"):
            continue  # fx's check of an argument specialized to None
        elif node.op == "output":
            output = node.args[0]
        else:
            raise UnrepresentableError(
                f"{type(module).__name__}.forward: {_node_text(module, node)} computes more than one "
                f"recurrent stack; representable: a module whose forward only calls one nn.RNN/GRU/LSTM "
                f"and returns its results")
    if rnn_node is None:
        raise UnrepresentableError(f"{type(module).__name__}.forward calls no nn.RNN/GRU/LSTM")
    return {"rnn": rnn_node, "placeholders": placeholders, "attrs": attrs, "paths": paths,
            "output": output, "specialized": specialized,
            "broadcast": {node: target for node, (target, _) in broadcast.items()}}


def _result_path(module, rnn_node, path: tuple, index) -> tuple:
    """The path of ``getitem(index)`` into the stack's result (out, h_n) / (out, (h_n, c_n))."""
    lstm = isinstance(_fetch(module, rnn_node.target), _stack_classes()[2])
    valid = path == () or (path == (1,) and lstm)
    if not (valid and isinstance(index, int) and not isinstance(index, bool) and index in (0, 1)):
        what = "the output sequence" if path[:1] == (0,) else "the final state"
        raise UnrepresentableError(
            f"{type(module).__name__}.forward indexes {what} of {rnn_node.target!r} with [{index!r}]: a "
            f"slice of the stack's results is not the stack; representable: returning them whole")
    return path + (index,)


def _stack_inputs(module, facts) -> tuple:
    """(where hx comes from: None | ("placeholder", name) | ("attrs", names)) after checking that the
    stack's input is forward's first argument."""
    rnn, placeholders = facts["rnn"], facts["placeholders"]
    args, kwargs = list(rnn.args), dict(rnn.kwargs)
    if "input" in kwargs:
        args.insert(0, kwargs.pop("input"))
    hx = args[1] if len(args) > 1 else kwargs.pop("hx", None)
    if len(args) > 2 or kwargs or not args or not placeholders or args[0] is not placeholders[0]:
        raise UnrepresentableError(f"{type(module).__name__}.forward calls {rnn.target!r} with "
                                   f"{rnn.args}, {rnn.kwargs}: not (forward's first argument[, hx])")
    stack = _fetch(module, rnn.target)
    hx_nodes = hx if isinstance(hx, (tuple, list)) else (hx,)
    if hx is None:
        return None
    if len(placeholders) > 1 and hx is placeholders[1]:
        return ("placeholder", hx.target)
    entries = 2 if isinstance(stack, _stack_classes()[2]) else 1
    if all(n in facts["attrs"] for n in hx_nodes) and len(hx_nodes) == entries:
        return ("attrs", tuple(facts["attrs"][n] for n in hx_nodes))
    if all(n in facts["broadcast"] for n in hx_nodes) and len(hx_nodes) == entries:
        return ("broadcast", tuple(facts["broadcast"][n] for n in hx_nodes))
    raise UnrepresentableError(f"{type(module).__name__}.forward passes {hx} as the state of "
                               f"{rnn.target!r}: representable: forward's second argument, nothing, or "
                               f"parameters h0 (and c0) of shape (L·D, batch, H) as they are")


def _result_getters(module, facts, cell: str):
    """Functions from forward's result to the output sequence and to the final state (or None)."""
    positions = []

    def walk(arg, where):
        if hasattr(arg, "op") and arg in facts["paths"]:
            positions.append((where, facts["paths"][arg]))
        elif isinstance(arg, (tuple, list)):
            for i, item in enumerate(arg):
                walk(item, where + (i,))
        else:
            raise UnrepresentableError(f"{type(module).__name__}.forward returns {arg!r}, which is not a "
                                       f"result of its recurrent stack")

    walk(facts["output"], ())

    def getter(want):
        for where, path in positions:
            if want[:len(path)] == path:
                rest = want[len(path):]
                return lambda result: _index(_index(result, where), rest)
        return None

    outputs = getter((0,))
    if outputs is None:
        raise UnrepresentableError(f"{type(module).__name__}.forward does not return the output sequence of "
                                   f"{facts['rnn'].target!r} (only its final state); representable: a "
                                   f"forward that returns the outputs")
    if cell != "lstm":
        return outputs, getter((1,))
    h, c = getter((1, 0)), getter((1, 1))
    return outputs, (None if h is None or c is None else (lambda result: (h(result), c(result))))


def _index(value, path):
    for i in path:
        value = value[i]
    return value


def _trace_plan(module) -> _Plan:
    """Prove with torch.fx that ``module`` computes one recurrent stack and nothing else."""
    facts = _graph_facts(module, _trace(module))
    hx = _stack_inputs(module, facts)
    placeholders = facts["placeholders"]
    for node in placeholders[2 if hx and hx[0] == "placeholder" else 1:]:
        if not node.args:  # no default: forward could not be called with the inputs (and state) only
            raise UnrepresentableError(f"{type(module).__name__}.forward has a required argument "
                                       f"{node.target!r} that the recurrent stack does not use")
    stored = hx if hx and hx[0] in ("attrs", "broadcast") else None
    takes_state = bool(hx and hx[0] == "placeholder")
    if takes_state:  # what forward does when the state is None (fx traced it as given)
        none_facts = _graph_facts(module, _trace(module, {hx[1]: None}), hx[1])
        stored = _stack_inputs(module, none_facts)
        if none_facts["rnn"].target != facts["rnn"].target:
            raise UnrepresentableError(f"{type(module).__name__}.forward runs a different stack when the "
                                       f"state is None")
        facts_for_results = none_facts, facts
    else:
        facts_for_results = (facts,)
    cell = _CELL_OF_MODE[_fetch(module, facts["rnn"].target).mode][0]
    getters = [_result_getters(module, f, cell) for f in facts_for_results]
    if len({(g[1] is None) for g in getters}) > 1:
        raise UnrepresentableError(f"{type(module).__name__}.forward returns the final state only when the "
                                   f"state is given (or only when not)")
    outputs, state = getters[-1]
    return _Plan(facts["rnn"].target, takes_state, stored[1] if stored else (),
                 state_broadcast=bool(stored and stored[0] == "broadcast"), outputs=outputs, state=state)


def _initial_state(model, module, plan: _Plan, dtype: str):
    """The learned initial state the plan passes to the stack, nested, and the batch it fixes."""
    if not plan.state_attrs:
        return None, None
    import torch

    tensors = [_fetch(module, name) for name in plan.state_attrs]
    units = model.num_layers * len(model.directions)
    for name, tensor, width in zip(plan.state_attrs, tensors, model.state_widths):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or tensor.shape[0] != units \
                or tensor.shape[2] != width or str(tensor.dtype).replace("torch.", "") != dtype \
                or (plan.state_broadcast and tensor.shape[1] != 1):
            batch = 1 if plan.state_broadcast else "batch"
            raise UnrepresentableError(
                f"{type(module).__name__}.{name} (shape {tuple(getattr(tensor, 'shape', ()))}) is passed as "
                f"the initial state: representable: a {dtype} tensor of shape ({units}, {batch}, {width})")
    state = _nested_state(model, tuple(tensors) if model.cell == "lstm" else tensors[0])
    return state, int(tensors[0].shape[1])


def _learned_initial_state(model, params: dict, module, plan: _Plan):
    """The spec with learn_initial_state and params with each unit's h_0 (c_0) from parameters of
    shape (L·D, 1, H) that forward expands over the batch."""
    _initial_state(model, module, plan, next(iter(params.values())).dtype.name)  # checks the shapes
    learned = dataclasses.replace(model, learn_initial_state=True)
    tensors = [_fetch(module, name).detach().cpu().numpy() for name in plan.state_attrs]
    out = dict(params)
    for index, (_, _, prefix, _) in enumerate(learned.units()):
        for name, tensor in zip(learned.initial_state_names, tensors):
            out[prefix + name] = np.ascontiguousarray(tensor[index, 0])
    return learned, finish_import(learned, out)


def _require_consumed(module, plan: _Plan, rnn) -> tuple:
    """Every parameter and buffer is the stack's or its initial state; notes on unused submodules."""
    prefix = plan.rnn_name + "." if plan.rnn_name else ""
    consumed = {prefix + key for key in rnn.state_dict()} | set(plan.state_attrs)
    arrays = {name for name, _ in module.named_parameters(remove_duplicate=False)}
    arrays |= {name for name, _ in module.named_buffers(remove_duplicate=False)} | set(module.state_dict())
    unused = sorted(arrays - consumed)
    if unused:
        raise UnrepresentableError(
            f"{type(module).__name__} holds {unused}, which its recurrent stack does not use: a converted "
            f"model would drop them; representable: a module holding only the stack (and its initial state)")
    idle = [name for name, sub in module.named_modules() if name and sub is not rnn
            and not plan.rnn_name.startswith(name + ".")]
    return tuple(f"submodule {name!r} ({type(_fetch(module, name)).__name__}) is never called by forward"
                 for name in idle)


@contextlib.contextmanager
def _eval_mode(module):
    """Inference: dropout between layers is the identity. Every submodule's own mode is restored."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


def _source_run(module, model, plan: _Plan, dtype: str, batch):
    import torch

    from .source import SourceRun

    device = next(module.parameters()).device

    def call(inputs, state):
        args = [torch.from_numpy(np.ascontiguousarray(inputs)).to(device)]
        if plan.takes_state:
            args.append(None if state is None else _torch_state(model, state, device))
        with _eval_mode(module), torch.no_grad():
            result = module(*args)
        final = None if plan.state is None else _nested_state(model, plan.state(result))
        return plan.outputs(result).detach().cpu().numpy(), final

    return SourceRun(call, f"torch {torch.__version__}", dtype, takes_state=plan.takes_state, batch=batch)


def read(module, *, variables=None, **known):
    """A ``Loaded`` from a live torch module that runs it: an ``nn.RNN/GRU/LSTM``, or a module whose
    forward (proven with ``torch.fx``) only calls one and returns its results, optionally passing it a
    fixed learned initial state. Anything more is refused with ``UnrepresentableError`` by name."""
    import multirnn.backends

    multirnn.backends.get("torch")
    import torch

    from .source import Loaded

    if variables is not None:
        raise ValueError("variables= goes with a Flax linen module, not with a torch module")
    if known.get("prefix") is not None:
        raise ValueError("prefix= selects a submodule of a state_dict file; a live module is read whole")
    known = {k: v for k, v in known.items() if k != "prefix"}
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    _refuse_hooks(module)
    plan = _Plan("", True) if isinstance(module, _stack_classes()) else _trace_plan(module)
    rnn = _fetch(module, plan.rnn_name) if plan.rnn_name else module
    model = _stack_spec(rnn, plan.rnn_name, known)
    dtype = _stack_dtype(rnn, plan.rnn_name)
    params = from_torch(model, rnn.state_dict())
    notes = _require_consumed(module, plan, rnn)
    if plan.state_broadcast:
        model, params = _learned_initial_state(model, params, module, plan)
        initial_state, batch = None, None
    else:
        initial_state, batch = _initial_state(model, module, plan, dtype)
    if model.dropout:
        notes += (f"dropout={model.dropout} between layers is kept in the spec (training only); the source "
                  f"was verified in eval mode, where it is the identity",)
    origin = f"torch {_describe(rnn, plan.rnn_name)}" + (f" in {type(module).__name__}" if plan.rnn_name else "")
    return Loaded(model, params, initial_state, _source_run(module, model, plan, dtype, batch), origin,
                  notes=notes)


# ---- files (imports torch) ----

def read_file(path, prefix: str = "", **known):
    """A ``Loaded`` from a ``torch.save``d state_dict (optionally a ``{"state_dict": ...}`` checkpoint)."""
    import multirnn.backends

    multirnn.backends.get("torch")
    import torch

    from .source import Loaded

    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a saved state_dict, got {type(sd).__name__}")
    model = infer_torch_spec(sd, prefix=prefix, **known)
    return Loaded(model, from_torch(model, sd, prefix=prefix), origin=f"torch state_dict {str(path)!r}",
                  notes=weights_only_notes("a torch state_dict", _STATE_DICT_SHOWS, known))


# What a state_dict's key names and shapes say; every other spec field comes from flags (or defaults).
_STATE_DICT_SHOWS = frozenset({"cell", "num_inputs", "num_hiddens", "num_layers", "bidirectional", "bias",
                               "reset_after", "proj_size"})


def weights_only_notes(what: str, shown: frozenset, known: dict) -> tuple:
    """The notes of a weights-only file: what the spec came from, and which fields the flags completed."""
    notes = [f"weights only: {what} holds no layer config, so the spec comes from its array names and "
             f"shapes; the source cannot be run to prove the conversion"]
    completed = sorted(k for k, v in known.items() if v is not None and k not in shown)
    if completed:
        notes.append(f"spec completed from flags: {', '.join(completed)}")
    return tuple(notes)


def write_file(path, model, params: dict) -> None:
    import multirnn.backends

    state_dict = to_torch(model, params)  # NumPy only: refuses what torch cannot hold before torch loads
    multirnn.backends.get("torch")
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
