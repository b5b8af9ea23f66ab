import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.cli import main


def test_help_lists_commands_and_is_fast():
    out = subprocess.run([sys.executable, "-m", "tfvitmae", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "pretrain", "probe", "finetune", "reconstruct", "convert"):
        assert command in out.stdout
    for command in ("pretrain", "probe", "finetune", "reconstruct"):
        help_text = subprocess.run([sys.executable, "-m", "tfvitmae", command, "--help"], capture_output=True,
                                   text=True, check=True).stdout
        assert "--model" in help_text and "usage:" in help_text
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
    """The README's main command, as a user runs it, with its default settings."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-m", "tfvitmae", "demo", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1437 real digit images" in out.stdout
    probe = re.search(r"pretrained encoder ([\d.]+)%, randomly initialised encoder ([\d.]+)%", out.stdout)
    assert probe, out.stdout
    pretrained, random_init = map(float, probe.groups())
    assert pretrained > random_init, out.stdout  # what the demo sets out to show
    model = TFViTMAEForPreTraining.from_pretrained(tmp_path)
    assert model.config.num_channels == 1
    assert np.isfinite(float(model(np.zeros((1, 1, 32, 32), "float32")).loss))
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "reconstruction.png")))
    assert grid.shape[0] > 8 * 32 and grid.shape[1] > 4 * 32


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "bright")):
        (folder / name).mkdir()
        for i in range(8):
            pixels = np.clip(rng.normal(60 + 120 * c, 30, size=(24 + i, 30, 3)), 0, 255).astype(np.uint8)
            tf.io.write_file(str(folder / name / f"{i}.png"), tf.io.encode_png(pixels))
    (folder / "dark" / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from .helpers import tiny_config

    folder = tmp_path_factory.mktemp("tiny")
    TFViTMAEForPreTraining(tiny_config(image_size=16, patch_size=4)).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_pretrain_probe_finetune_reconstruct_commands(image_folder, tiny_checkpoint, tmp_path, capsys):
    pre = tmp_path / "pre"
    assert main(["pretrain", str(image_folder), "--model", str(tiny_checkpoint), "--output-dir", str(pre),
                 "--epochs", "2", "--batch-size", "4", "--warmup-epochs", "1", "--reconstruction-every", "2"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 files that are not images" in out and "on 16 images" in out
    assert {"config.json", "model.weights.h5", "reconstruction_epoch_2.png"} <= set(os.listdir(pre))

    assert main(["probe", str(image_folder), "--model", str(pre), "--output-dir", str(tmp_path / "probe"),
                 "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25"]) == 0
    assert re.search(r"validation accuracy [\d.]+%", capsys.readouterr().out)
    from tfvitmae.classification import TFViTMAEForImageClassification

    probe = TFViTMAEForImageClassification.from_pretrained(tmp_path / "probe")
    assert probe.linear_probe and probe.id2label == {0: "bright", 1: "dark"}

    assert main(["finetune", str(image_folder), "--model", str(pre), "--output-dir", str(tmp_path / "ft"),
                 "--epochs", "1", "--batch-size", "4", "--mixup", "0.8", "--cutmix", "1.0"]) == 0
    assert "fine-tuning: 14 training and 2 validation images, 2 classes" in capsys.readouterr().out

    images = [str(image_folder / "dark" / "0.png"), str(image_folder / "bright" / "1.png")]
    png = tmp_path / "rec.png"
    assert main(["reconstruct", *images, "--model", str(pre), "--output", str(png), "--mask-ratio", "0.5"]) == 0
    assert "masked (50%)" in capsys.readouterr().out
    grid = tf.io.decode_png(tf.io.read_file(str(png)))
    assert grid.shape[-1] == 3 and grid.shape[0] > 2 * 16


def test_commands_report_bad_input(image_folder, tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pretrain", str(empty), "--model", str(tiny_checkpoint), "--output-dir", str(tmp_path / "o")]) == 1
    assert "No images found in" in capsys.readouterr().err
    assert main(["pretrain", str(image_folder), "--model", str(tiny_checkpoint), "--output-dir",
                 str(tmp_path / "o"), "--batch-size", "64"]) == 1
    assert "batch_size 64 is larger than the dataset (16 images)" in capsys.readouterr().err
    assert main(["probe", str(image_folder / "dark"), "--model", str(tiny_checkpoint), "--output-dir",
                 str(tmp_path / "p")]) == 1
    assert "needs one sub-folder per class" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["reconstruct", str(bad), "--model", str(tiny_checkpoint)]) == 1
    assert re.search(r"Cannot read .*bad\.png as an image", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(["pretrain", str(image_folder), "--output-dir", str(tmp_path), "--mixed-precision", "float8"])
