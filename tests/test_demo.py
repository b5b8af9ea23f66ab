"""`tfvitmae demo`, the README's first command, end to end."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.demo import DEMO_IMAGE_SIZE, demo_config, load_digits_images


def test_digits_are_real_images():
    images, labels = load_digits_images()
    assert images.shape == (1797, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE, 1) and images.dtype == np.uint8
    assert sorted(set(labels.tolist())) == list(range(10))
    assert images.max() > 200 and images.min() == 0  # ink on a blank background
    config = demo_config()
    assert config.num_channels == 1 and config.image_hw == (DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's main command, as a user runs it, with its default settings."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-m", "tfvitmae", "demo", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1437 real digit images" in out.stdout
    probe = re.search(
        r"pretrained encoder ([\d.]+)%, randomly initialised encoder ([\d.]+)%", out.stdout
    )
    assert probe, out.stdout
    pretrained, random_init = map(float, probe.groups())
    assert pretrained > random_init, out.stdout  # what the demo sets out to show
    model = TFViTMAEForPreTraining.from_pretrained(tmp_path)
    assert model.config.num_channels == 1
    assert np.isfinite(float(model(np.zeros((1, 1, 32, 32), "float32")).loss))
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "reconstruction.png")))
    assert grid.shape[0] > 8 * 32 and grid.shape[1] > 4 * 32
