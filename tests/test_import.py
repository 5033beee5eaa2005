"""``import multirnn`` must import no framework (array-api-compat style), and stay quick."""
from conftest import FRAMEWORK_MODULES, run_python


def test_import_multirnn_imports_no_framework():
    loaded = run_python(
        "import sys, multirnn, multirnn.backends, multirnn.reference\n"
        "multirnn.RNNScratch(2, 3); multirnn.backends.NAMES\n"
        f"print(','.join(m for m in {FRAMEWORK_MODULES!r} if m in sys.modules))")
    assert loaded == ""


def test_import_does_not_touch_numpy_bool_alias():
    # The mxnet adapter restores numpy.bool (gone in numpy 1.24-1.26, numpy's own bool type again in 2.x);
    # a plain import, registry and reference included, must leave numpy as it found it.
    out = run_python("import numpy; before = vars(numpy).get('bool'); import multirnn, multirnn.backends; "
                     "multirnn.init_params(multirnn.RNNScratch(2, 3), 0); "
                     "print(vars(numpy).get('bool') is before)")
    assert out == "True"


def test_backends_install_under_multirnn_namespace():
    # backends/ is mapped to multirnn.backends; no bare top-level "backends" package is importable.
    out = run_python("import importlib.util, multirnn.backends as b; "
                     "print(importlib.util.find_spec('backends') is None, b.__name__)")
    assert out == "True multirnn.backends"


def test_import_multirnn_defers_numpy():
    # Keeps `import multirnn` near bare-interpreter speed (issue 6): NumPy loads on first computation.
    out = run_python("import sys, multirnn; a = 'numpy' in sys.modules; multirnn.init_params; "
                     "print(a, 'numpy' in sys.modules)")
    assert out == "False True"
