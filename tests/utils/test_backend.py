import importlib
import os
import subprocess
import sys

import tensorflow as tf

from tfvitmae.utils.backend import tensorflow


def test_tensorflow_in_a_traced_function_uses_no_import_machinery(monkeypatch):
    """AutoGraph converted `importlib.import_module` there and warned that it
    could not transform `_gcd_import`, on every CLI run."""
    imports = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda *a, **k: imports.append(a) or real(*a))

    @tf.function
    def traced(x):
        return tensorflow("a traced function").identity(x)

    assert float(traced(tf.constant(1.0))) == 1.0
    assert imports == []


def test_a_quiet_import_holds_back_tensorflows_start_up_lines():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    code = (
        "from tfvitmae.utils.backend import import_tensorflow_quietly as q; q(); "
        "import tensorflow as tf; print(float(tf.constant(2.0) + 1))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "3.0\n"
    assert run.stderr == ""


def test_a_failed_quiet_import_shows_what_was_held_back(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'native: library missing\\n')\nraise ImportError('broken')\n"
    )
    code = "from tfvitmae.utils.backend import import_tensorflow_quietly as q; q()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 1
    assert "native: library missing" in run.stderr
    assert "ImportError: broken" in run.stderr
