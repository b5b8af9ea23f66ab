import json
import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import PRESETS, TFViTMAEForPreTraining, ViTMAEConfig
from tfvitmae.cli import build_parser, main
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.utils.files import STAGING_MARKER

from ..helpers import FIXTURE, tiny_config


def test_help_lists_commands_and_is_fast():
    out = subprocess.run(
        [sys.executable, "-m", "tfvitmae", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("demo", "pretrain", "probe", "finetune", "reconstruct", "convert"):
        assert command in out.stdout
    for command in ("pretrain", "probe", "finetune", "reconstruct"):
        help_text = subprocess.run(
            [sys.executable, "-m", "tfvitmae", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "--model" in help_text and "usage:" in help_text
    code = (
        "import sys; from tfvitmae.cli import build_parser; build_parser(); "
        "print('tensorflow' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        == "False"
    )


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_pretrain_help_states_the_norm_pix_loss_default(capsys):
    """Presets train on plain pixel targets unless --norm-pix-loss is given,
    and the help says so."""
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    option = re.search(r"--norm-pix-loss, --no-norm-pix-loss (.*?) --warmup-epochs", help_text)
    assert option, help_text
    assert "on for presets" not in option.group(1)
    assert "off for presets" in option.group(1)
    args = build_parser().parse_args(["pretrain", "images/", "--output-dir", "out"])
    assert args.norm_pix_loss is None
    for preset in PRESETS:
        assert ViTMAEConfig.from_preset(preset).norm_pix_loss is False
        assert ViTMAEConfig.from_preset(preset, norm_pix_loss=True).norm_pix_loss is True


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--epochs", "0"], "--epochs: must be at least 1, received 0"),
        (["demo", "--draws", "0"], "--draws: must be at least 1, received 0"),
        (["demo", "--finetune-epochs", "3"], "unrecognized arguments: --finetune-epochs"),
        (
            ["pretrain", "d", "--output-dir", "o", "--base-lr", "-1"],
            "--base-lr: must be a positive",
        ),
        (["pretrain", "d", "--output-dir", "o", "--base-lr", "nan"], "received nan"),
        (["pretrain", "d", "--output-dir", "o", "--base-lr", "1e400"], "received 1e400"),
        (["pretrain", "d", "--output-dir", "o", "--reconstruction-every", "-1"], "0 or more"),
        (["pretrain", "d", "--output-dir", "o", "--image-std", "0.2", "0"], "--image-std: must"),
        (["pretrain", "d", "--output-dir", "o", "--mask-ratio", "1"], "in [0, 1), received 1"),
        (["pretrain", "d", "--output-dir", "o", "--accum-steps", "0"], "--accum-steps: must be"),
        (
            ["probe", "d", "--model", "m", "--output-dir", "o", "--accum-steps", "1.5"],
            "--accum-steps: must be at least 1, received '1.5'",
        ),
        (
            ["finetune", "d", "--model", "m", "--output-dir", "o", "--label-smoothing", "5"],
            "[0, 1)",
        ),
        (["finetune", "d", "--model", "m", "--output-dir", "o", "--layer-decay", "-1"], "(0, 1]"),
        (["finetune", "d", "--model", "m", "--output-dir", "o", "--mixup", "-0.5"], "0 or more"),
        (["probe", "d", "--model", "m", "--output-dir", "o", "--val-fraction", "1"], "[0, 1)"),
        (["export", "m", "e", "--top-k", "0"], "--top-k: must be at least 1"),
        (["export", "m", "e", "--max-batch", "0"], "--max-batch: must be at least 1"),
    ],
)
def test_bad_arguments_are_rejected(argv, message, capsys):
    """Values that cannot be right stop the command before it starts, naming the argument."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_running_out_of_memory_is_an_error_in_plain_words(monkeypatch, capsys):
    """TensorFlow's OOM ({{function_node ...}}) and NumPy's MemoryError were tracebacks."""
    from tfvitmae import TFViTMAEModel
    from tfvitmae.cli import commands

    def allocate_four_terabytes(args):
        return int(tf.reduce_sum(tf.zeros((2**40,), tf.float32)))

    def build_a_huge_model(args):
        return TFViTMAEModel(tiny_config(hidden_size=2**20, num_attention_heads=1))

    for command in (allocate_four_terabytes, build_a_huge_model):
        monkeypatch.setattr(commands, "reconstruct", command)
        assert main(["reconstruct", "x.png", "--model", "m", "--output", "y.png"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("tfvitmae reconstruct: error: out of memory: ")
        assert "function_node" not in err and "[Op:" not in err and "Traceback" not in err


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "bright")):
        (folder / name).mkdir()
        for i in range(8):
            pixels = np.clip(rng.normal(60 + 120 * c, 30, size=(24 + i, 30, 3)), 0, 255).astype(
                np.uint8
            )
            tf.io.write_file(str(folder / name / f"{i}.png"), tf.io.encode_png(pixels))
    (folder / "dark" / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    TFViTMAEForPreTraining(tiny_config(image_size=16, patch_size=4)).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_pretrain_probe_finetune_reconstruct_commands(
    image_folder, tiny_checkpoint, tmp_path, capsys
):
    pre = tmp_path / "pre"
    assert (
        main(
            [
                "pretrain",
                str(image_folder),
                "--model",
                str(tiny_checkpoint),
                "--output-dir",
                str(pre),
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--warmup-epochs",
                "1",
                "--reconstruction-every",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "skipped 1 files that are not images" in out and "on 16 images" in out
    assert {"config.json", "model.weights.h5", "reconstruction_epoch_2.png"} <= set(os.listdir(pre))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (
            main(
                [
                    "probe",
                    str(image_folder),
                    "--model",
                    str(pre),
                    "--output-dir",
                    str(tmp_path / "probe"),
                    "--epochs",
                    "2",
                    "--batch-size",
                    "4",
                    "--val-fraction",
                    "0.25",
                ]
            )
            == 0
        )
    # Keras warned after every validation pass over image files.
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert re.search(r"validation accuracy [\d.]+%", capsys.readouterr().out)
    probe = TFViTMAEForImageClassification.from_pretrained(tmp_path / "probe")
    assert probe.linear_probe and probe.id2label == {0: "bright", 1: "dark"}

    assert (
        main(
            [
                "finetune",
                str(image_folder),
                "--model",
                str(pre),
                "--output-dir",
                str(tmp_path / "ft"),
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--mixup",
                "0.8",
                "--cutmix",
                "1.0",
            ]
        )
        == 0
    )
    assert "fine-tuning: 14 training and 2 validation images, 2 classes" in capsys.readouterr().out

    images = [str(image_folder / "dark" / "0.png"), str(image_folder / "bright" / "1.png")]
    png = tmp_path / "rec.png"
    assert (
        main(
            [
                "reconstruct",
                *images,
                "--model",
                str(pre),
                "--output",
                str(png),
                "--mask-ratio",
                "0.5",
            ]
        )
        == 0
    )
    assert "masked (50%)" in capsys.readouterr().out
    grid = tf.io.decode_png(tf.io.read_file(str(png)))
    assert grid.shape[-1] == 3 and grid.shape[0] > 2 * 16


@pytest.mark.slow
def test_reruns_resume_refuse_or_start_afresh_and_runs_are_logged(
    image_folder, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    (tmp_path / "my_augment.py").write_text(
        "import keras\n"
        "def make():\n"
        "    return keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def pretrain(*extra):
        args = ["pretrain", str(image_folder), "--model", str(tiny_checkpoint)]
        args += ["--output-dir", str(out), "--batch-size", "4", "--warmup-epochs", "1"]
        args += ["--no-jit-compile"]  # reruns are the point: no XLA compile in every run
        code = main(args + list(extra))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, text = pretrain(
        "--epochs", "1", "--image-mean", "0.4", "--image-std", "0.2",
        "--augmenter", "my_augment:make", "--tensorboard",
    )  # fmt: skip
    assert code == 0 and f"starting a new run in {out}" in text
    assert "scanned" in text and "16 images" in text  # the folder scan's count
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.4, 0.4, 0.4] and saved["image_std"] == [0.2, 0.2, 0.2]
    log = (out / "training_log.csv").read_text().splitlines()
    assert log[0].split(",")[:3] == ["epoch", "learning_rate", "loss"] and len(log) == 2
    events = [str(p) for p in (out / "logs").rglob("events.out.tfevents.*")]
    assert any("/train/" in e for e in events) and any("/reconstructions/" in e for e in events)
    same = ("--epochs", "1", "--image-mean", "0.4", "--image-std", "0.2")
    same += ("--augmenter", "my_augment:make")

    code, text = pretrain(*same)  # the finished run, again: nothing to do, and it says why
    assert code == 1 and "has trained 1 epochs, and this one asks for 1" in text
    more = ("--epochs", "2", *same[2:])
    code, text = pretrain(*more)
    assert code == 1
    assert "holds a finished run (1 epochs) with other settings (epochs: 1 -> 2)" in text
    code, text = pretrain(*more, "--resume")
    assert code == 0 and "continuing the run" in text and "after epoch 1" in text
    log = (out / "training_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1"]  # appended: epochs 1 and 2
    code, text = pretrain("--epochs", "1", "--batch-size", "8")
    assert code == 1 and "batch_size: 4 -> 8" in text
    assert "augmenter: 'my_augment:make' -> None" in text
    code, text = pretrain("--epochs", "1", "--batch-size", "8", "--overwrite")
    assert code == 0 and "starting afresh" in text
    assert len((out / "training_log.csv").read_text().splitlines()) == 2
    assert json.loads((out / "preprocessor_config.json").read_text())["image_mean"] != [0.4] * 3

    probe = ["probe", str(image_folder), "--model", str(out), "--output-dir", str(tmp_path / "p")]
    probe += ["--batch-size", "4"]
    assert main(probe + ["--epochs", "1"]) == 0
    assert main(probe + ["--epochs", "2", "--resume"]) == 0
    assert "continuing the run" in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "run.json").read_text())["epochs_done"] == 2
    with pytest.raises(SystemExit):  # one or the other
        main(probe + ["--resume", "--overwrite"])
    assert "not allowed with argument" in capsys.readouterr().err
    code, text = pretrain("--epochs", "1", "--augmenter", "nowhere:make", "--overwrite")
    assert code == 1 and "--augmenter nowhere:make: cannot load make from nowhere" in text


def test_commands_report_bad_input(image_folder, tiny_checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(
            [
                "pretrain",
                str(empty),
                "--model",
                str(tiny_checkpoint),
                "--output-dir",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "No images found in" in capsys.readouterr().err
    assert (
        main(
            [
                "pretrain",
                str(image_folder),
                "--model",
                str(tiny_checkpoint),
                "--output-dir",
                str(tmp_path / "o"),
                "--batch-size",
                "64",
            ]
        )
        == 1
    )
    assert "batch_size 64 is larger than the dataset (16 images)" in capsys.readouterr().err
    assert (
        main(
            [
                "probe",
                str(image_folder / "dark"),
                "--model",
                str(tiny_checkpoint),
                "--output-dir",
                str(tmp_path / "p"),
            ]
        )
        == 1
    )
    assert "needs one sub-folder per class" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["reconstruct", str(bad), "--model", str(tiny_checkpoint)]) == 1
    assert re.search(r"Cannot read .*bad\.png as an image", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(
            [
                "pretrain",
                str(image_folder),
                "--output-dir",
                str(tmp_path),
                "--mixed-precision",
                "float8",
            ]
        )
    assert "argument --mixed-precision: invalid choice: 'float8'" in capsys.readouterr().err


# ------------------------------------------------------------------ convert
def test_convert_command_both_directions(tmp_path, capsys):
    assert main(["convert", str(FIXTURE), str(tmp_path / "keras")]) == 0
    out = capsys.readouterr().out
    # 2 + 2 blocks
    assert f"{14 + 12 * 4} variables mapped from model.safetensors (transformers layout)" in out
    assert "model.weights.h5" in out
    assert main(["convert", str(tmp_path / "keras"), str(tmp_path / "torch")]) == 0
    assert "transformers PyTorch layout" in capsys.readouterr().out
    import transformers

    torch_model, info = transformers.ViTMAEForPreTraining.from_pretrained(
        tmp_path / "torch", output_loading_info=True
    )
    assert not any(info.values())
    command = ["convert", str(FIXTURE), str(tmp_path / "enc"), "--encoder-only", "--to", "pytorch"]
    assert main([*command, "--bin"]) == 0
    from safetensors.numpy import load_file

    decoder_keys = [k for k in load_file(FIXTURE / "model.safetensors") if k.startswith("decoder.")]
    assert f"Ignored {len(decoder_keys)} weights in model.safetensors of parts" in (
        capsys.readouterr().out
    )
    assert sorted(os.listdir(tmp_path / "enc")) == [
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    ]
    assert main(["convert", str(FIXTURE), str(tmp_path / "vit"), "--to", "vit"]) == 0
    assert "transformers ViTModel layout (the encoder)" in capsys.readouterr().out
    vit, info = transformers.ViTModel.from_pretrained(tmp_path / "vit", output_loading_info=True)
    assert not info["unexpected_keys"] and vit.config.model_type == "vit"


def test_convert_command_reports_bad_input(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "tfvitmae convert: error: No file or directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


FULL_DISK = """
import hashlib, json, os, resource, signal, sys
from tfvitmae.cli import main

src, dst = sys.argv[1:]

def contents():
    return {n: hashlib.sha256(open(os.path.join(dst, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(dst)) if os.path.isfile(os.path.join(dst, n))}

before = contents()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
limit = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limit[1]))  # as if the disk were full
codes = [main(["convert", src, dst, "--to", to]) for to in ("keras", "pytorch")]
resource.setrlimit(resource.RLIMIT_FSIZE, limit)
unchanged = contents() == before and set(os.listdir(dst)) == {*before, ".tmp-save-k1ll3d_x"}
codes.append(main(["convert", src, dst, "--to", "keras"]))
print(json.dumps({"codes": codes, "unchanged": unchanged, "after": sorted(os.listdir(dst))}))
"""


@pytest.mark.slow
def test_convert_onto_a_full_disk_says_so_in_one_line_and_leaves_no_staging_folder(tmp_path):
    """h5py crashed the process (a segfault) when its writes failed; each
    failed save now names the folder in one line and changes nothing, and the
    next save that succeeds removes the staging folder that a crash left."""
    dst = tmp_path / "out"
    TFViTMAEForPreTraining(tiny_config()).save_pretrained(dst)
    crashed = dst / ".tmp-save-k1ll3d_x"  # as a save killed while writing leaves it
    crashed.mkdir()
    (crashed / STAGING_MARKER).touch()  # as staging_dir marks its folders
    (crashed / "model.weights.h5").write_bytes(b"partial")
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(FIXTURE), str(dst)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [1, 1, 0] and result["unchanged"]
    assert result["after"] == ["config.json", "model.weights.h5", "preprocessor_config.json"]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("tfvitmae convert")]
    assert len(errors) == 2
    for error, name in zip(errors, ("model.weights.h5", "model.safetensors")):
        assert re.fullmatch(
            rf"tfvitmae convert: error: Could not save TFViTMAEForPreTraining to {dst}: {name} "
            rf"needs ~\d+ KB, more than the file size limit \(ulimit -f\) allows\. {dst} is "
            "unchanged",
            error,
        ), error


# ------------------------------------------------------------------- export
def test_export_passes_the_batch_cap(monkeypatch, capsys):
    from tfvitmae.cli import commands
    from tfvitmae.serving import saved_model

    seen = {}
    monkeypatch.setattr(commands, "load_any_model", lambda name: keras.Model())
    monkeypatch.setattr(
        saved_model, "export_for_serving", lambda *args, **kwargs: seen.update(kwargs) or []
    )
    assert main(["export", "m", "e", "--max-batch", "1000"]) == 0
    assert seen["max_batch"] == 1000
    assert main(["export", "m", "e.onnx", "--format", "onnx", "--max-batch", "8"]) == 1
    assert "only --format tf_saved_model takes --max-batch" in capsys.readouterr().err


@pytest.mark.slow
def test_export_command(tmp_path, capsys):
    TFViTMAEForImageClassification(tiny_config(), num_labels=2).save_pretrained(tmp_path / "ckpt")
    command = ["export", str(tmp_path / "ckpt"), str(tmp_path / "serving"), "--version", "2"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "exported TFViTMAEForImageClassification" in out and "classify_image_bytes" in out
    assert (tmp_path / "serving" / "2" / "saved_model.pb").exists()
    assert main(command) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_export_command_onnx_litert_and_keras_hub(tmp_path, capsys):
    TFViTMAEForPreTraining(tiny_config()).save_pretrained(tmp_path / "ckpt")
    onnx_file, litert_file = tmp_path / "model.onnx", tmp_path / "model.tflite"
    assert main(["export", str(tmp_path / "ckpt"), str(onnx_file), "--format", "onnx"]) == 0
    assert "(onnx): reconstruct" in capsys.readouterr().out and onnx_file.stat().st_size
    command = ["export", str(tmp_path / "ckpt"), str(litert_file), "--format", "litert"]
    assert main([*command, "--signature", "features"]) == 0
    assert "(litert): features" in capsys.readouterr().out and litert_file.stat().st_size
    # What only a SavedModel has is refused, not ignored.
    assert main([*command, "--version", "2"]) == 1
    assert "only --format tf_saved_model takes --version" in capsys.readouterr().err
    preset = ["export", str(tmp_path / "ckpt"), str(tmp_path / "preset"), "--format", "keras-hub"]
    assert main(preset) == 0
    assert "(keras-hub): ViTBackbone" in capsys.readouterr().out
    assert (tmp_path / "preset" / "model.weights.h5").is_file()
    saved_model = ["export", str(tmp_path / "ckpt"), str(tmp_path / "serving")]
    assert main([*saved_model, "--signature", "features"]) == 1
    assert "--signature applies to --format onnx and litert" in capsys.readouterr().err
    assert not (tmp_path / "serving").exists()


@pytest.mark.slow
def test_pretrain_counts_only_usable_images_and_refuses_a_broken_folder(
    tiny_checkpoint, tmp_path, capsys
):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = ["--model", str(tiny_checkpoint), "--epochs", "1", "--batch-size", "4", "--no-augment"]
    with pytest.warns(UserWarning, match=r"Skipping 2 of the 10 images .*a\.png.*b\.png"):
        assert main(["pretrain", str(folder), "--output-dir", str(tmp_path / "ok"), *args]) == 0
    assert " on 8 images" in capsys.readouterr().out
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.png"):
        (broken / name).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["pretrain", str(broken), "--output-dir", str(tmp_path / "no"), *args]) == 1
    assert "None of the 2 images" in capsys.readouterr().err
    assert not (tmp_path / "no" / "model.weights.h5").exists()


def test_reconstruct_never_replaces_an_input_and_writes_the_format_it_names(
    tiny_checkpoint, tmp_path, capsys
):
    rng = np.random.default_rng(1)
    victim = tmp_path / "victim.png"
    victim.write_bytes(tf.io.encode_png(rng.integers(0, 256, (20, 20, 3), np.uint8)).numpy())
    original = victim.read_bytes()
    link = tmp_path / "link.png"
    link.symlink_to(victim)
    model = ["--model", str(tiny_checkpoint)]
    for output in (victim, link, tmp_path / "." / "victim.png"):
        assert main(["reconstruct", str(victim), *model, "--output", str(output)]) == 1
        assert "is one of the input images" in capsys.readouterr().err
    assert victim.read_bytes() == original
    assert main(["reconstruct", str(victim), *model, "--output", str(tmp_path / "grid.gif")]) == 1
    assert "must end in .png, .jpg, .jpeg" in capsys.readouterr().err
    assert not (tmp_path / "grid.gif").exists()
    for name, magic in (("grid.jpg", b"\xff\xd8\xff"), ("grid.PNG", b"\x89PNG\r\n\x1a\n")):
        assert main(["reconstruct", str(victim), *model, "--output", str(tmp_path / name)]) == 0
        written = (tmp_path / name).read_bytes()
        assert written.startswith(magic)
        assert tf.io.decode_image(written).shape[0] > 20  # the grid, not the input


def test_classes_too_small_to_validate_are_named(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """A class of one image is never held out: the run says which, and over
    what its validation accuracy was measured (it said "100.00%" alone)."""
    from tfvitmae.cli import commands
    from tfvitmae.training import recipes

    for name, count in (("many", 3), ("single", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(count):
            png = tf.io.encode_png(np.full((8, 8, 3), 40 * i, np.uint8))
            tf.io.write_file(str(tmp_path / "data" / name / f"{i}.png"), png)
    history = type("History", (), {"history": {"val_accuracy": [1.0]}})
    monkeypatch.setattr(recipes, "train_classifier", lambda *args, **kwargs: history)
    # Only the split and the report are tested: no pipeline is built.
    monkeypatch.setattr(commands, "_classifier_datasets", lambda *args, **kwargs: ("t", "v", 1))
    argv = ["probe", str(tmp_path / "data"), "--model", str(tiny_checkpoint)]
    options = ["--output-dir", str(tmp_path / "out"), "--batch-size", "2", "--val-fraction", "0.25"]
    assert main(argv + options) == 0
    out = capsys.readouterr().out
    assert "note: 1 of the 2 classes have no validation image" in out and ": single" in out
    assert "validation accuracy 100.00% on 1 images of 1 of the 2 classes" in out


def test_accum_steps_reach_every_training_recipe(
    image_folder, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    """`--accum-steps` reaches `pretrain` and `train_classifier` (which
    refuse an epoch of no whole updates: tests/training/test_recipes.py)."""
    from tfvitmae.cli import commands
    from tfvitmae.training import recipes

    seen = []
    history = type("History", (), {"history": {"loss": [1.0], "val_accuracy": [1.0]}})

    def recipe(model, data, **options):
        seen.append((options["batch_size"], options["accum_steps"]))
        return history

    monkeypatch.setattr(recipes, "pretrain", recipe)
    monkeypatch.setattr(recipes, "train_classifier", recipe)
    # Only the arguments are tested: no pipeline is built.
    info = {"num_examples": 16, "skipped": 0}
    monkeypatch.setattr(commands, "_pretraining_dataset", lambda *args: ("data", info))
    monkeypatch.setattr(commands, "_reconstruction_samples", lambda *args: None)
    monkeypatch.setattr(commands, "_classifier_datasets", lambda *args, **kwargs: ("t", "v", 1))
    base = ["--model", str(tiny_checkpoint), "--batch-size", "4", "--reconstruction-every", "0"]
    for command in ("pretrain", "probe", "finetune"):
        argv = [command, str(image_folder), *base[: 4 if command != "pretrain" else 6]]
        argv += ["--output-dir", str(tmp_path / command)]
        assert main([*argv, "--accum-steps", "2"]) == 0
        assert main(argv) == 0
    assert seen == [(4, 2), (4, 1)] * 3
    assert "2 batches of 4 per update (effective batch 8)" in capsys.readouterr().out


def test_remat_reaches_the_models_of_pretrain_probe_and_finetune(tiny_checkpoint, tmp_path):
    from tfvitmae.cli import commands

    for remat in ([], ["--remat"]):
        base = ["--model", str(tiny_checkpoint), "--output-dir", str(tmp_path), *remat]
        args = build_parser().parse_args(["pretrain", "images/", *base])
        assert commands.load_pretraining_model(args.model, args).remat is bool(remat)
        for command in ("probe", "finetune"):
            args = build_parser().parse_args([command, "images/", *base])
            classifier = commands._classifier_model(
                args, ["a", "b"], linear_probe=command == "probe"
            )
            assert classifier.remat is bool(remat)


def _saved_weights(folder) -> dict:
    """Every array in `folder`'s model.weights.h5, by its path in the file."""
    import h5py

    arrays = {}
    with h5py.File(folder / "model.weights.h5", "r") as f:
        f.visititems(
            lambda name, item: (
                arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


@pytest.mark.slow
def test_seed_makes_a_finetune_run_repeatable(image_folder, tiny_checkpoint, tmp_path):
    """`--seed` seeds everything random, the new head's initial weights too:
    the same seed twice gives the same final weights bit for bit (without XLA)."""

    def run(name):
        argv = ["finetune", str(image_folder), "--model", str(tiny_checkpoint)]
        argv += ["--output-dir", str(tmp_path / name), "--epochs", "1", "--batch-size", "8"]
        argv += ["--val-fraction", "0", "--seed", "3", "--no-jit-compile"]
        assert main(argv) == 0
        return _saved_weights(tmp_path / name)

    first, again = run("a"), run("b")
    assert len(first) > 10 and first.keys() == again.keys()
    for name, array in first.items():
        np.testing.assert_array_equal(array, again[name], err_msg=name)


@pytest.mark.parametrize("command", ["probe", "finetune"])
def test_seed_draws_the_new_head_and_jit_compile_reaches_probe_and_finetune(
    command, tiny_checkpoint, capsys
):
    """What `train_classifier` sets up before it builds the classifier: the same
    `--seed` gives the same new head, another seed another; and `probe` and
    `finetune` take `--jit-compile/--no-jit-compile` as `pretrain` does."""
    from tfvitmae.cli import commands

    def head(*extra):
        argv = [command, "images/", "--model", str(tiny_checkpoint), "--output-dir", "o"]
        args = build_parser().parse_args(argv + list(extra))
        commands.start_training(args)
        model = commands._classifier_model(args, ["a", "b"], linear_probe=command == "probe")
        return model.classifier.kernel.numpy()

    first, again, other = head("--seed", "5"), head("--seed", "5"), head("--seed", "6")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for extra, expected in (([], "auto"), (["--jit-compile"], True), (["--no-jit-compile"], False)):
        args = build_parser().parse_args(
            [command, "d", "--model", "m", "--output-dir", "o", *extra]
        )
        assert commands.jit_compile(args) == expected
    with pytest.raises(SystemExit):  # NumPy takes seeds in [0, 2**32)
        build_parser().parse_args(
            [command, "d", "--model", "m", "--output-dir", "o", "--seed", "-1"]
        )
    assert "--seed: must be an integer in [0, 2**32), received -1" in capsys.readouterr().err


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_brings_back_tensorflows_lines(verbose, tmp_path, monkeypatch):
    from tfvitmae.utils import backend

    quiet = []
    monkeypatch.setattr(backend, "import_tensorflow_quietly", lambda: quiet.append(True))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "unset after the test")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    argv = ["convert", str(FIXTURE), str(tmp_path / "out"), "--to", "keras"]
    assert main(argv + ["--verbose"] * verbose) == 0
    assert quiet == ([] if verbose else [True])
    assert ("TF_CPP_MIN_LOG_LEVEL" in os.environ) is not verbose


@pytest.mark.slow
def test_export_command_int8(tmp_path, capsys):
    TFViTMAEForPreTraining(tiny_config()).save_pretrained(tmp_path / "ckpt")
    base = ["export", str(tmp_path / "ckpt")]
    onnx_file = tmp_path / "model.onnx"
    exported = [*base, str(onnx_file), "--format", "onnx", "--signature", "features"]
    assert main([*exported, "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "(onnx): features" in out and "cosine similarity to float32" in out
    # Refused, naming the flag, and nothing written.
    refused = {
        "keras-hub": "--quantize applies to --format onnx and litert, received --format keras-hub",
        "tf_saved_model": "--quantize applies to --format onnx and litert",
    }
    for fmt, message in refused.items():
        assert main([*base, str(tmp_path / "out"), "--format", fmt, "--quantize", "int8"]) == 1
        assert message in capsys.readouterr().err
    command = [*base, str(tmp_path / "m.tflite"), "--format", "litert"]
    assert main([*command, "--quantize", "int4"]) == 1
    assert "expected 'int8' or None, received 'int4'" in capsys.readouterr().err
    assert main([*command, "--min-cosine", "0.5"]) == 1
    assert "--min-cosine applies to --quantize int8" in capsys.readouterr().err
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        image = np.random.default_rng(i).integers(0, 256, (20, 20, 3), np.uint8)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    features = [*base, str(tmp_path / "f.onnx"), "--format", "onnx", "--quantize", "int8"]
    calibrated = [*features, "--signature", "features", "--calibration-images", str(folder)]
    assert main([*calibrated, "--min-cosine", "1"]) == 1
    assert re.search(r"float32 0\.\d{4} \(the lowest of 3 images\)", capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "images", "model.onnx"]
