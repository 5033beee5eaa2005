"""The Keras 3 layer under every Keras backend: one subprocess per KERAS_BACKEND runs every check of
this file (``_checks``) against the float64 reference and reports each one; a test per (backend, check)
reads its report. ``jax-x64`` is Keras on jax with JAX_ENABLE_X64=1, where JAX computes float64."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import pytest
from conftest import assert_close, load_backend, make_case, random_state, to_float64

import multirnn
from multirnn.state import flatten_state

WORLDS = {"tensorflow": {}, "jax": {}, "jax-x64": {"JAX_ENABLE_X64": "1"}, "torch": {}}
MODELS = {
    "birnn_batch_first": multirnn.BiRNNScratch(3, 4, batch_first=True),
    "lstm_2layer_bi": multirnn.LSTMScratch(3, 4, num_layers=2, bidirectional=True),
    "gru_d2l_batch_first": multirnn.GRUScratch(3, 4, batch_first=True),
}
CHECKS = ("forward", "gradients", "fit", "lengths", "mask", "reported_sequential", "float64_needs_x64",
          "tensorflow_not_imported", "save_load")  # in this order: Keras's own saving may import tensorflow
ONLY = {"float64_needs_x64": ("jax",), "tensorflow_not_imported": ("jax", "jax-x64", "torch")}


def _dtypes(world):
    if world == "jax":
        return ["float32"]  # float64 needs x64 there: float64_needs_x64 checks the refusal
    return ["float64"] if world == "jax-x64" else ["float32", "float64"]


@pytest.fixture(scope="module")
def reports():
    cache = {}

    def report(world):
        if world not in cache:
            keras_backend = world.partition("-")[0]
            load_backend(keras_backend)  # skip (or fail where required) without the framework
            env = {**os.environ, "KERAS_BACKEND": keras_backend, "TF_CPP_MIN_LOG_LEVEL": "3", **WORLDS[world]}
            env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
            code = f"import test_native_keras as t; t.worker({world!r})"
            # outside the checkout: the repo root on sys.path would expose its bare backends/ folder
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                  cwd=tempfile.gettempdir(), timeout=900)
            assert done.returncode == 0, done.stderr[-4000:]
            cache[world] = json.loads(done.stdout.strip().splitlines()[-1])
        return cache[world]
    return report


@pytest.mark.parametrize("world, check", [(w, c) for w in WORLDS for c in CHECKS
                                           if w in ONLY.get(c, WORLDS)])
def test_keras_layer(reports, world, check):
    result = reports(world)[check]
    assert result == "ok", result


# ---- run inside the subprocess, with KERAS_BACKEND set ----

def worker(world):
    results = {}
    for check in CHECKS:
        if world not in ONLY.get(check, WORLDS):
            continue
        try:
            globals()[f"check_{check}"](world)
            results[check] = "ok"
        except Exception:  # noqa: BLE001 - reported to the parent test, traceback and all
            results[check] = traceback.format_exc()
    print(json.dumps(results))


def _layer(model, params, **options):
    return multirnn.native_layer(model, params, backend="tensorflow", **options)


def _cotangent(model, inputs, dtype):
    return np.random.default_rng(5).normal(size=inputs.shape[:2] + (model.output_size,)).astype(dtype)


def _numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


def _flat(model, state):
    return [_numpy(a) for unit in flatten_state(model, state) for a in unit]


def check_forward(world):
    import keras

    for dtype in _dtypes(world):
        for model in MODELS.values():
            params, inputs = make_case(model, dtype=dtype, scale=10.0)
            state = random_state(model, 3, seed=2, dtype=dtype)
            layer = _layer(model, params)
            assert keras.config.backend() == world.partition("-")[0]
            assert all(isinstance(w, keras.Variable) for w in layer.trainable_variables)
            out, new_state = layer(inputs, keras.tree.map_structure(keras.ops.convert_to_tensor, state))
            want, want_state = multirnn.forward(model, to_float64(params), to_float64(inputs),
                                                to_float64(state))
            assert _numpy(out).dtype == np.dtype(dtype)
            assert_close(_numpy(out), want, dtype, f"{model} outputs")
            for got, ref in zip(_flat(model, new_state), _flat(model, want_state), strict=True):
                assert_close(got, ref, dtype, f"{model} state")


def _framework_gradients(layer, inputs, cotangent):
    """d sum(outputs * cotangent) / d weights by the framework's own autodiff, by canonical name."""
    import keras

    weights = list(layer.canonical.values())
    assert [id(w) for w in layer.trainable_variables] == [id(w) for w in weights]
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(inputs)[0] * cotangent)
        grads = tape.gradient(loss, weights)
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss(values):
            (out, _), _ = layer.stateless_call(values, [], inputs)
            return jnp.sum(out * cotangent)
        grads = jax.grad(loss)([w.value for w in weights])
    else:
        import torch

        loss = torch.sum(layer(inputs)[0] * torch.from_numpy(cotangent))
        loss.backward()
        grads = [w.value.grad for w in weights]
    return {name: _numpy(g) for name, g in zip(layer.canonical, grads)}


def check_gradients(world):
    for dtype in _dtypes(world):
        for model in MODELS.values():
            params, inputs = make_case(model, dtype=dtype, scale=10.0)
            cotangent = _cotangent(model, inputs, dtype)
            got = _framework_gradients(_layer(model, params), inputs, cotangent)
            want = multirnn.gradients(model, to_float64(params), to_float64(inputs),
                                      cotangent=to_float64(cotangent))
            for name in want:
                assert_close(got[name], want[name], dtype, f"{model} d{name}")


def _sum_loss(dtype):
    import keras

    class SumLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.sum(y_true * y_pred)
    return SumLoss(dtype=dtype)  # a loss computes in floatx unless told


def check_fit(world):
    """One model.fit step of SGD(learning_rate=1) on loss sum(y_pred * y_true) moves every weight by
    exactly minus the reference's gradient for cotangent y_true."""
    import keras

    model = MODELS["lstm_2layer_bi"]
    for dtype in _dtypes(world):
        params, inputs = make_case(model, dtype=dtype, scale=10.0)
        cotangent = _cotangent(model, inputs, dtype)
        layer = _layer(model, params, return_state=False)
        net = keras.Sequential([keras.Input(inputs.shape[1:], dtype=dtype), layer])
        net.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss=_sum_loss(dtype))
        floatx = keras.config.floatx()
        keras.config.set_floatx(dtype)  # else fit's data adapter casts float64 arrays to float32
        try:
            net.fit(inputs, cotangent, batch_size=len(inputs), epochs=1, shuffle=False, verbose=0)
        finally:
            keras.config.set_floatx(floatx)
        want = multirnn.gradients(model, to_float64(params), to_float64(inputs),
                                  cotangent=to_float64(cotangent))
        for name, weight in layer.canonical.items():
            step = params[name].astype(np.float64) - _numpy(weight.value).astype(np.float64)
            assert_close(step, want[name], dtype, f"fit step of {name}")


def check_save_load(world):
    import keras

    model = MODELS["gru_d2l_batch_first"]
    dtype = _dtypes(world)[-1]
    params, inputs = make_case(model, dtype=dtype, scale=10.0)
    net = keras.Sequential([keras.Input(inputs.shape[1:], dtype=dtype),
                            _layer(model, params, return_state=False)])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        net.save(path)
        loaded = keras.models.load_model(path)
    again = loaded.layers[-1]
    assert type(again).__name__ == "RecurrentLayer" and again.model == model
    assert again.get_config() == net.layers[-1].get_config()
    np.testing.assert_array_equal(_numpy(loaded(inputs)), _numpy(net(inputs)))
    want, _ = multirnn.forward(model, to_float64(params), to_float64(inputs))
    assert_close(_numpy(loaded(inputs)), want, dtype, "reloaded outputs")


def check_lengths(world):
    for dtype in _dtypes(world):
        for model in MODELS.values():
            params, inputs = make_case(model, dtype=dtype, scale=10.0)
            lengths = np.array([5, 2, 0])
            out, state = _layer(model, params)(inputs, lengths=lengths)
            want, want_state = multirnn.forward(model, to_float64(params), to_float64(inputs),
                                                lengths=lengths)
            assert_close(_numpy(out), want, dtype, f"{model} outputs")
            for got, ref in zip(_flat(model, state), _flat(model, want_state), strict=True):
                assert_close(got, ref, dtype, f"{model} state")


def check_mask(world):
    """Keras's own Masking layer, with holes (not only suffix padding), runs with Keras' semantics:
    what multirnn.forward computes with the same ``mask`` (tests/test_masks.py; Keras itself: the
    gallery), for a unidirectional, a bidirectional and a go_backwards model."""
    import keras

    dtype = _dtypes(world)[0]
    keep = np.array([[True, False, True, True, False], [False, False, True, False, True],
                     [True, True, True, True, True]])
    for model in (MODELS["birnn_batch_first"], MODELS["gru_d2l_batch_first"],
                  multirnn.LSTMScratch(3, 4, batch_first=True, reverse=True, keep_order=False)):
        params, inputs = make_case(model, dtype=dtype, scale=10.0)
        padded = np.where(keep[:, :, None], inputs, 0).astype(dtype)
        net = keras.Sequential([keras.Input(inputs.shape[1:], dtype=dtype),
                                keras.layers.Masking(0.0, dtype=dtype),
                                _layer(model, params, return_state=False)])
        want, _ = multirnn.forward(model, to_float64(params), to_float64(padded), mask=keep)
        assert_close(_numpy(net(padded)), want, dtype, f"{model} masked outputs")
        out, state = _layer(model, params)(inputs, mask=keep)
        want, want_state = multirnn.forward(model, to_float64(params), to_float64(inputs), mask=keep)
        assert_close(_numpy(out), want, dtype, f"{model} outputs with mask=")
        for got, ref in zip(_flat(model, state), _flat(model, want_state), strict=True):
            assert_close(got, ref, dtype, f"{model} state with mask=")


def check_reported_sequential(world):
    """Issue 17's report: this failed under KERAS_BACKEND=jax and torch."""
    import keras

    model = multirnn.GRUScratch(3, 4, batch_first=True)
    dtype = _dtypes(world)[0]
    params, inputs = make_case(model, dtype=dtype, scale=10.0)
    net = keras.Sequential([keras.Input((5, 3), dtype=dtype),
                            multirnn.native_layer(model, params, backend="tensorflow")])
    out, _ = net(inputs)
    want, _ = multirnn.forward(model, to_float64(params), to_float64(inputs))
    assert_close(_numpy(out), want, dtype, "outputs")


def check_float64_needs_x64(world):
    params, _ = make_case(MODELS["birnn_batch_first"], dtype="float64")
    try:
        _layer(MODELS["birnn_batch_first"], params)
    except ValueError as error:
        assert "JAX_ENABLE_X64" in str(error), error
    else:
        raise AssertionError("float64 weights were accepted without x64 (Keras cuts them to float32)")


def check_tensorflow_not_imported(world):
    """native_layer(backend="tensorflow") names the Keras layer; on another Keras backend, after the
    checks before this one (building, calling, fitting), TensorFlow was never imported."""
    assert "tensorflow" not in sys.modules


def test_a_keras_backend_without_a_multirnn_backend_is_refused():
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    code = ("import multirnn\ntry:\n"
            "    multirnn.native_layer(multirnn.RNNScratch(2, 3), backend='tensorflow')\n"
            "except ValueError as error:\n    print(error)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), timeout=300)
    assert "runs on the Keras backends tensorflow, jax and torch; KERAS_BACKEND is 'numpy'" in done.stdout
