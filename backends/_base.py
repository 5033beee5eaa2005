"""The base every backend extends (einops' AbstractBackend): each member of backends.protocol either has a
default here or raises a sentence naming what the backend lacks; forward, gradients, step and run_user
are written once, on the backend's ``value_and_grad`` and ``compile`` hooks."""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from multirnn import masking, packed, recurrence, stepping, validate
from multirnn.dropout import dropout_masks
from multirnn.state import flatten_state, nest_state


def tree_map(fn, tree):
    """``fn`` on every array of nested dicts/lists/tuples (None stays None)."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return None if tree is None else fn(tree)


def tree_leaves(tree) -> list:
    leaves = []
    tree_map(leaves.append, tree)
    return leaves


def valid_steps(steps: int, lengths) -> np.ndarray:
    """bool (steps, batch, 1): True where t < lengths[b], the steps of a padded batch that count."""
    return (np.arange(steps)[:, None] < np.asarray(lengths)[None, :])[:, :, None]


def _lacks(member):
    def missing(self, *args, **kwargs):
        raise NotImplementedError(f"{self.name or type(self).__name__} backend does not provide {member}")
    missing.__name__ = member
    return missing


def _sorted_batch(order, xs, flat_state, masks, cotangent, lengths):
    """Host arrays of a padded batch (NumPy, time-major) with their sequences in ``order`` (copies;
    the cotangent None in a forward pass)."""
    rows = lambda a, axis: None if a is None else np.take(a, order, axis=axis)  # noqa: E731
    return (rows(xs, 1), [None if unit is None else tuple(rows(a, 0) for a in unit) for unit in flat_state],
            None if masks is None else [rows(m, 1) for m in masks], rows(cotangent, 1), lengths[order])


def _unsorted(order, ys, finals):
    """A forward pass's host outputs (T, B, ...) and flat final state back in the batch's order. The
    outputs in place, a step at a time: a take along axis 1 into a new (64, 64, 256) array cost 6 ms
    here (its pages new), this 0.4 ms."""
    inverse = np.argsort(order)
    ys = ys if ys.flags.writeable else np.array(ys)
    for step in ys:
        step[...] = step[inverse]
    return ys, [None if unit is None else tuple(a[inverse] for a in unit) for unit in finals]


def _zero_padded_steps(cotangent, lengths) -> None:
    """``cotangent`` (T, B, ...; or inputs) zeroed in place at each sequence's padded steps, ``lengths``
    sorted longest first: one slice per run of equal lengths (a broadcast multiply by the (T, B, 1)
    mask cost 5x as much at T=64, B=64, H=256)."""
    lengths = [int(n) for n in lengths]
    start = 0
    for row in range(1, len(lengths) + 1):
        if row == len(lengths) or lengths[row] != lengths[start]:
            cotangent[lengths[start]:, start:row] = 0
            start = row


class AbstractBackend:
    name = ""
    version = ""
    use_fused_kernels = True
    has_fused_kernel = False
    hoist_input_projection = True
    shrinking_scan = False  # scan takes a carry whose batch changes from step to step
    static_segments = False  # padded batches in coarse segments of static shape (JAX; see ``static``)
    is_reference = False

    matmul = _lacks("matmul")
    tanh = _lacks("tanh")
    relu = _lacks("relu")
    sigmoid = _lacks("sigmoid")
    concat = _lacks("concat")
    split = _lacks("split")
    scan = _lacks("scan")
    where = _lacks("where")
    zeros = _lacks("zeros")
    take = _lacks("take")
    split_sizes = _lacks("split_sizes")
    reverse_padded = _lacks("reverse_padded")
    mask_padded = _lacks("mask_padded")
    swap01 = _lacks("swap01")
    zeros_state = _lacks("zeros_state")
    one_hot = _lacks("one_hot")
    take_rows = _lacks("take_rows")
    log_softmax = _lacks("log_softmax")
    sum_all = _lacks("sum_all")
    asarray = _lacks("asarray")
    to_numpy = _lacks("to_numpy")
    fused_kernel = _lacks("fused_kernel")
    value_and_grad = _lacks("value_and_grad")
    native_layer = _lacks("native_layer")

    def __init__(self):
        self._compiled: dict = {}

    def flip_time(self, x):
        return x[::-1]  # NumPy, TensorFlow, JAX and MXNet NDArrays slice with a negative step

    def last_valid(self, x, lengths):
        return self.reverse_padded(x, lengths)[0]  # each sequence's last valid step, reversed to t=0

    def asindex(self, a):
        return self.asarray(a)

    def static(self, value):
        return value

    def size(self, x, axis):
        return x.shape[axis]

    def dtype_of(self, x):
        return np.dtype(x.dtype)

    def precision(self, dtype):
        return contextlib.nullcontext()

    def fused_kernel_accepts(self, model, dtype) -> bool:
        return True

    @contextlib.contextmanager
    def fused_kernels(self, enabled: bool):
        before, self.use_fused_kernels = self.use_fused_kernels, enabled
        try:
            yield self
        finally:
            self.use_fused_kernels = before

    def compile(self, fn):
        return fn  # eager frameworks: nothing to trace

    def fused_layer(self, model, units, xs, states):
        return self.fused_kernel(model, units)(xs, states)

    # ---- written once ----

    def run_recurrence(self, model, params, xs, flat_state, masks=None, padding=None):
        return recurrence.run(self, model, params, xs, flat_state, masks, padding)

    def _run(self, model, params, xs, flat_state, masks=None, padding=None):
        """run_recurrence from ``flat_state``, its None units (learn_initial_state) made from the params
        first, in this backend's ops (so also before MXNet's cached graphs), differentiably."""
        flat = recurrence.initial_state(self, model, params, xs, flat_state)
        return self.run_recurrence(model, params, xs, flat, masks, padding)

    def _once(self, kind, model, build):
        """One compiled function per (kind, spec): tf.function/jax.jit then retrace only per shape."""
        key = (kind, model)
        if key not in self._compiled:
            self._compiled[key] = build()
        return self._compiled[key]

    def _outputs(self, model, params, xs, flat_state, masks, padding):
        """The gradients' function: its cotangent is zero at padded steps (``gradients``), so only the
        valid steps' outputs are read (set here, inside the trace: a static flag, not a traced leaf)."""
        if padding is not None:
            padding = padding._replace(outputs_only=True)
        return self._run(model, params, xs, flat_state, masks, padding)[0], None

    def forward(self, model, params, xs, flat_state, masks=None, lengths=None, step_mask=None):
        with self.precision(xs.dtype):
            run = self._once("forward", model,
                             lambda: self.compile(functools.partial(self._run, model)))
            order, margin = None, None
            if lengths is not None and self._plans(lengths):  # sorted longest first on the host, as
                # gradients sorts (NumPy takes, not gathers in the graph), the outputs unsorted after;
                # the padded steps' inputs are read by no valid step: zeros, which running past each
                # sequence's end needs (multirnn.packed.run_to_ends)
                order = np.argsort(-lengths, kind="stable")
                xs, flat_state, masks, _, lengths = _sorted_batch(order, xs, flat_state, masks, None, lengths)
                _zero_padded_steps(xs, lengths)
                margin = self._freeze_margin(model, params, flat_state, masks, xs.dtype)
            ys, finals = run(*self._to_framework(params, xs, flat_state, masks),
                             self._padding(model, xs, lengths, step_mask, freeze=margin))
            ys, finals = self.to_numpy(ys), tree_map(self.to_numpy, finals)
            return (ys, finals) if order is None else _unsorted(order, ys, finals)

    def gradients(self, model, params, xs, flat_state, cotangent, masks=None, lengths=None,
                  step_mask=None):
        with self.precision(xs.dtype):
            # seeded: the vector-Jacobian product with the cotangent, as the frameworks' backward(seed)
            grad = self._once("gradients", model, lambda: self.compile(
                self.value_and_grad(functools.partial(self._outputs, model), seeded=True)))
            if lengths is not None:  # sorted longest first here, as a plan would sort them: NumPy
                # takes, not gathers and their gradients in the graph (the parameters' gradients do
                # not depend on the batch's order); padded steps' outputs are not read (see
                # Padding.outputs_only), so their cotangent is zero
                xs, flat_state, masks, cotangent, lengths = _sorted_batch(
                    np.argsort(-lengths, kind="stable"), xs, flat_state, masks, cotangent, lengths)
                _zero_padded_steps(cotangent, lengths)
            _, grads = grad(*self._to_framework(params, xs, flat_state, masks),
                            self._padding(model, xs, lengths, step_mask, gradient=True),
                            self.host_arg(cotangent.astype(xs.dtype, copy=False)))
            return {name: self.to_numpy(value) for name, value in grads.items()}

    def step(self, model, params, x_t, flat_state, masks=None):
        with self.precision(x_t.dtype):
            run = self._once("step", model,
                             lambda: self.compile(functools.partial(stepping.step_network, self, model)))
            y, finals = run(*self._to_framework(params, x_t, flat_state, masks))
            return self.to_numpy(y), tree_map(self.to_numpy, finals)

    def run_user(self, model, params, inputs, state=None, lengths=None, dropout_seed=None, padding=None):
        xs = self.swap01(inputs) if model.batch_first else inputs
        if state is None and model.learn_initial_state:
            flat = [None for _ in model.units()]  # the recurrence starts from h_0 (c_0)
        elif state is None:
            zeros = tuple(self.zeros_state(xs, width) for width in model.state_widths)
            flat = [zeros for _ in model.units()]
        else:
            flat = flatten_state(model, state)
        if lengths is not None:
            padding = self.padding_of(model, xs, lengths)
        ys, finals = self._run(model, params, xs, flat, self._dropout(model, xs, dropout_seed), padding)
        return (self.swap01(ys) if model.batch_first else ys), nest_state(model, finals)

    def _dropout(self, model, xs, dropout_seed):
        """Training-mode dropout masks of a native layer call: drawn in NumPy from ``dropout_seed`` as
        multirnn.forward(training=True) draws them (the shapes are static, also under a tracer)."""
        if dropout_seed is None or model.dropout == 0 or model.num_layers == 1:
            return None
        steps, batch = xs.shape[0], xs.shape[1]
        if not isinstance(steps, int) or not isinstance(batch, int):
            raise ValueError(f"dropout_seed needs the inputs' steps and batch known when the layer is "
                             f"built or traced, got shape {tuple(xs.shape)}")
        return [self.asarray(m) for m in dropout_masks(model, steps, batch, dropout_seed, self.dtype_of(xs))]

    def runs_forward_to_ends(self, model, dtype, masks) -> bool:
        return False

    def _freeze_margin(self, model, params, flat_state, masks, dtype):
        """packed.freeze_margin of a sorted padded forward pass that runs past each sequence's end
        (multirnn.packed.run_to_ends), else None: where the backend runs it so
        (``runs_forward_to_ends``), not with relu (a padded step may overflow, and inf·0 is no zero)
        nor a learned initial state (the margin reads h_0 from ``flat_state``), and with a margin
        below packed.FREEZE_LIMIT (else absurd weights)."""
        if (model.nonlinearity == "relu" or model.learn_initial_state
                or not self.runs_forward_to_ends(model, np.dtype(dtype), masks)):
            return None
        margin = packed.freeze_margin(model, params, flat_state)
        return margin if margin < packed.FREEZE_LIMIT else None

    def _plans(self, lengths) -> bool:
        """Whether ``_padding`` makes a multirnn.packed plan of host ``lengths``: where this backend has
        a fused kernel, a shrinking scan or static segments, and a step to run (with none, the masked
        scan's outputs still hang on the params, zero gradients; a plan's zeros not)."""
        return (self.has_fused_kernel or self.shrinking_scan or self.static_segments) and lengths.max() > 0

    def padding_of(self, model, xs, lengths):
        """recurrence.Padding of framework ``lengths`` (ints (batch,)) for time-major ``xs``: eager
        backends read them on the host (checked there, and with multirnn.packed's plan)."""
        lengths = validate.check_lengths(np.asarray(self.to_numpy(lengths)), xs.shape[1], xs.shape[0])
        return self._padding(model, xs, lengths)

    def smoke_test(self) -> None:
        from multirnn.spec import RNNScratch  # local: keeps the import graph one-way at load time

        model = RNNScratch(2, 3)
        params = {k: np.full(s, 0.1, np.float32) for k, s in model.param_shapes().items()}
        xs = np.ones((2, 1, 2), np.float32)
        ys, _ = self.forward(model, params, xs, [(np.zeros((1, 3), np.float32),)])
        if ys.shape != (2, 1, 3) or not np.all(np.isfinite(ys)):
            raise RuntimeError(f"{self.name} smoke test gave {ys!r}")

    # ---- NumPy -> framework ----

    def host_arg(self, a):
        return self.asarray(a)

    def _to_framework(self, params, xs, flat_state, masks=None):
        """numpy -> the arguments of run_recurrence, as ``compile``'s function takes them (host_arg)."""
        return ({k: self.host_arg(v) for k, v in params.items()}, self.host_arg(xs),
                [None if unit is None else tuple(self.host_arg(a) for a in unit) for unit in flat_state],
                None if masks is None else [self.host_arg(m) for m in masks])

    def _padding(self, model, xs, lengths, step_mask=None, gradient=False, freeze=None):
        """numpy lengths or a time-major (T, B) step mask (or neither) -> recurrence.Padding of
        framework arrays (or None); lengths with the multirnn.packed plan where ``_plans``, and for a
        ``gradient`` pass (``gradients``: only the valid steps are read) its coarse segments, for a
        forward pass given a ``freeze`` margin (``_freeze_margin``) its forward segments, run past
        each sequence's end (recurrence.runs_to_ends). A mask's Padding has no lengths: see Padding."""
        dtype = self.dtype_of(xs) if not isinstance(xs, np.ndarray) else xs.dtype
        if step_mask is not None:
            factor = masking.output_factor(model, step_mask.astype(np.int64))[:, :, None]
            return recurrence.Padding(None, self.host_arg(step_mask[:, :, None]),
                                      self.host_arg(factor.astype(dtype)))
        if lengths is None:
            return None
        keep = valid_steps(xs.shape[0], lengths)
        plan = None
        if self._plans(lengths):
            steps, batch = xs.shape[:2]
            order, inverse, ordered, sizes, active, running = packed.make_plan(lengths, steps)
            traced = not self.has_fused_kernel  # TensorFlow, JAX: host ints retrace for each new value
            row_quantum = packed.quarter_rows(batch) if traced else None
            coarse = None
            if gradient:
                coarse = packed.coarse_segments(sizes, active, steps, batch, row_quantum=row_quantum)
                if coarse == ((steps,), (batch,)):
                    coarse = None  # one whole-batch call
            elif freeze is not None:  # even as one whole-batch segment: exact, and no masked steps
                coarse = packed.forward_segments(sizes, active, steps, batch, row_quantum=row_quantum)
            if traced:  # rows stay host ints, in quarters of the batch (a few traces): a segment of
                # unknown batch costs each elementwise op's gradient a broadcast reduction
                # (BroadcastGradientArgs, Sum, Reshape per step), measured in one process 1.08-1.09x
                # the full batch at 2 threads, 0.98-1.00x with host rows. Segment sizes go in as
                # framework scalars (TensorFlow's while loop runs any length), or static (JAX's scan
                # has a static length: a trace per pattern, 7 patterns in 500 batches of lengths
                # 32..64 at T=B=64, 20 for 1..64)
                sizes, active = (), ()
                if coarse is not None:
                    coarse = self.static(coarse) if self.static_segments else (
                        tuple(self.host_arg(np.int32(n)) for n in coarse[0]), coarse[1])
            # sorted already (gradients sorts on the host): no order to gather by
            index = lambda a: None if order == inverse == list(range(batch)) else self.asindex(  # noqa: E731
                np.asarray(a, np.int64))
            plan = packed.Plan(index(order), index(inverse), self.host_arg(np.asarray(ordered, np.int64)),
                               sizes, active, self.host_arg(np.asarray(running, np.int32))
                               if self.shrinking_scan else None, coarse)
        margin = None if plan is None or freeze is None else self.host_arg(np.full((1, 1), freeze, dtype))
        return recurrence.Padding(self.host_arg(np.asarray(lengths, np.int64)), self.host_arg(keep),
                                  self.host_arg(keep.astype(dtype)), plan, freeze=margin)
