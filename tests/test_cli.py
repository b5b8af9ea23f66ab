import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.cli import main


def test_help_lists_commands_and_is_fast():
    out = subprocess.run([sys.executable, "-m", "tfvitmae", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout
    code = "import sys; from tfvitmae.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "--epochs must be at least 1, received 0" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's main command, as a user runs it (fewer epochs)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-m", "tfvitmae", "demo", "--epochs", "3", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1797 real digit images" in out.stdout and "loss" in out.stdout
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(model, TFViTMAEForPreTraining) and model.config.num_channels == 1
    x = np.zeros((1, 1, 32, 32), "float32")
    assert np.isfinite(float(model(x).loss))
    assert (tmp_path / "config.json").exists()
