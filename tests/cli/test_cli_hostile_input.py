"""The command line against hostile or careless input: nested JSON, a
checkpoint that claims a head it lacks, output paths in the way, and Ctrl-C."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.cli import main
from tfvitmae.models.classification import TFViTMAEForImageClassification

from ..helpers import tiny_config


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    TFViTMAEForPreTraining(tiny_config(image_size=16, patch_size=4)).save_pretrained(folder)
    return folder


def test_a_deeply_nested_config_is_one_line_naming_the_file(tiny_checkpoint, tmp_path, capsys):
    """A config.json nested 200,000 deep was a RecursionError traceback."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    nested = json.dumps({**config, "task_specific_params": "X"})
    deep = "[" * 200_000 + "]" * 200_000
    (folder / "config.json").write_text(nested.replace('"X"', deep))
    for command in (["export", str(folder), str(tmp_path / "out.onnx"), "--format", "onnx"],
                    ["convert", str(folder), str(tmp_path / "converted")]):  # fmt: skip
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"{folder / 'config.json'} is nested deeper than 64 levels" in err


def test_a_recursion_error_is_one_line(monkeypatch, capsys):
    """What no reader caught (an HDF5 link cycle, say) is still no traceback."""
    from tfvitmae.cli import commands

    def recurse(args):
        return recurse(args)

    monkeypatch.setattr(commands, "convert", recurse)
    assert main(["convert", "src", "dst"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested too deeply" in err


def test_a_checkpoint_claiming_a_head_it_lacks_is_refused(tiny_checkpoint, tmp_path, capsys):
    """A pretraining checkpoint labelled a classifier exported a random head, with a warning."""
    folder = tmp_path / "claims-a-head"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["TFViTMAEForImageClassification"]
    (folder / "config.json").write_text(json.dumps(config))
    output = tmp_path / "model.onnx"
    assert main(["export", str(folder), str(output), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{folder / 'config.json'} names TFViTMAEForImageClassification" in err
    assert "the weights (model.weights.h5) have no classification head" in err
    assert "tfvitmae finetune" in err and not output.exists()
    # Starting a classifier from the pretrained encoder, deliberately, still works.
    with pytest.warns(UserWarning, match="has no head"):
        TFViTMAEForImageClassification.from_pretrained(folder)


def test_a_classifier_checkpoint_still_loads_as_a_classifier(tmp_path):
    from tfvitmae.cli.commands import load_any_model

    TFViTMAEForImageClassification(tiny_config(), num_labels=3).save_pretrained(tmp_path)
    model = load_any_model(tmp_path)
    assert isinstance(model, TFViTMAEForImageClassification) and model.config.num_labels == 3


def test_an_output_path_in_the_way_is_refused_before_anything_is_read(
    tmp_path, capsys, monkeypatch
):
    """`--output-dir` naming a file was found only after the data was scanned
    and the model built."""
    from tfvitmae.cli import demo

    def never(**kwargs):
        raise AssertionError("the demo ran")

    monkeypatch.setattr(demo, "run_demo", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("the user's")
    a_folder = tmp_path / "a-folder.onnx"
    a_folder.mkdir()
    missing = str(tmp_path / "missing")  # data and models: reading them would fail
    file_message = f"'{blocker}' is a file, not a folder"
    cases = [
        (["pretrain", missing, "--model", missing, "--output-dir", str(blocker)], "--output-dir"),
        (
            ["pretrain", missing, "--model", missing, "--output-dir", str(tmp_path / "o")]
            + ["--log-dir", str(blocker / "logs")],
            "--log-dir",
        ),
        (["probe", missing, "--model", missing, "--output-dir", str(blocker / "p")],
         "--output-dir"),
        (["finetune", missing, "--model", missing, "--output-dir", str(blocker)], "--output-dir"),
        (["export", missing, str(blocker)], "EXPORT_BASE"),
        (["export", missing, str(blocker / "m.onnx"), "--format", "onnx"], "EXPORT_BASE"),
        (["convert", missing, str(blocker)], "DST"),
        (["reconstruct", missing, "--model", missing, "--output", str(blocker / "r.png")],
         "--output"),
        (["demo", "--output-dir", str(blocker)], "--output-dir"),
    ]  # fmt: skip
    for argv, option in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: {option} " in err and file_message in err, err
    assert main(["export", missing, str(a_folder), "--format", "onnx"]) == 1
    assert f"EXPORT_BASE {a_folder} is a folder; expected a file" in capsys.readouterr().err
    assert blocker.read_text() == "the user's"


@pytest.mark.slow
def test_ctrl_c_in_pretrain_says_what_was_saved_and_how_to_resume(tiny_checkpoint, tmp_path):
    """Ctrl-C printed an 80-line traceback, though the backup was sound."""
    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        (data / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    out = tmp_path / "run"
    argv = ["pretrain", str(data), "--model", str(tiny_checkpoint), "--output-dir", str(out)]
    argv += ["--epochs", "1000", "--batch-size", "4", "--warmup-epochs", "1", "--no-jit-compile"]
    argv += ["--reconstruction-every", "0", "--overwrite"]
    logs = [open(tmp_path / name, "w+") for name in ("stdout", "stderr")]
    # As a newcomer runs it: no log-level variable set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tfvitmae", *argv],
        stdout=logs[0],
        stderr=logs[1],
        env=env,
        # As from a shell: a pytest-xdist worker ignores SIGINT, which its children inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "backup" / "epoch_1").is_dir():
            assert process.poll() is None and time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            status = "still running 120 s after Ctrl-C"
    finally:
        process.kill()
    logs[1].seek(0)
    err = logs[1].read()
    assert status == 130, err
    # The first screen: the command's own lines, no TensorFlow, absl or AutoGraph noise.
    lines = err.strip().splitlines()
    assert lines[0] == f"scanned {data}: 8 images", err
    assert len(lines) == 2, err
    last = lines[-1]
    assert last.startswith("tfvitmae pretrain: interrupted; epoch "), err
    epoch = int(last.split("epoch ")[1].split()[0])
    assert f"is backed up in {out / 'backup' / f'epoch_{epoch}'}; resume with: " in last
    assert (out / "backup" / f"epoch_{epoch}" / "state.weights.h5").is_file()
    # The command that resumes is this one, without --overwrite (which would start afresh).
    resume = shlex.split(last.split("resume with: ")[1])
    assert resume == ["tfvitmae", *argv[:-1]]


def test_ctrl_c_in_any_command_is_one_line_with_status_130(tmp_path, monkeypatch, capsys):
    """probe, finetune and demo (here stopped in place) say the same in one line."""
    from tfvitmae.cli import commands, demo

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    def run(argv):
        try:
            return main(argv)
        except KeyboardInterrupt:  # raised on: fail this test, not the session
            pytest.fail("Ctrl-C went through main as a traceback")

    monkeypatch.setattr(commands, "train_classifier", stopped)
    monkeypatch.setattr(demo, "run_demo", stopped)
    out = tmp_path / "probe"
    argv = ["probe", "my data", "--model", "m", "--output-dir", str(out), "--overwrite"]
    assert run(argv) == 130
    err = capsys.readouterr().err
    assert err == (
        "tfvitmae probe: interrupted before the first epoch was backed up; start again with: "
        f"tfvitmae probe 'my data' --model m --output-dir {out}\n"
    )
    (out / "backup" / "epoch_3").mkdir(parents=True)
    (out / "backup" / "epoch_3" / "state.weights.h5").write_bytes(b"")
    assert run(["finetune", *argv[1:-1], "--ov"]) == 130
    assert capsys.readouterr().err == (
        f"tfvitmae finetune: interrupted; epoch 3 is backed up in {out / 'backup' / 'epoch_3'}; "
        f"resume with: tfvitmae finetune 'my data' --model m --output-dir {out}\n"
    )
    assert run(["demo", "--output-dir", str(tmp_path / "demo")]) == 130
    assert capsys.readouterr().err == "tfvitmae demo: interrupted\n"
