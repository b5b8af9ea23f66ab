"""`tfvitmae demo`, the README's first command, end to end."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForImageClassification, TFViTMAEForPreTraining
from tfvitmae.cli.demo import (
    DEMO_IMAGE_SIZE,
    demo_config,
    load_dataset,
    load_digits_images,
    masked_patch_mse,
    reconstruction_baselines,
    split_digits,
)
from tfvitmae.training.label_efficiency import METHODS

from ..helpers import numpy_mae_loss, numpy_patchify


def test_digits_are_real_images():
    images, labels = load_digits_images()
    assert images.shape == (1797, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE, 1) and images.dtype == np.uint8
    assert sorted(set(labels.tolist())) == list(range(10))
    assert images.max() > 200 and images.min() == 0  # ink on a blank background
    config = demo_config()
    assert config.num_channels == 1 and config.image_hw == (DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE)


def test_split_and_raw_pixels_are_scikit_learns_digits():
    train, test = split_digits(0)
    assert len(test) == 360 and len(set(train) | set(test)) == 1797
    images, _ = load_digits_images(8)
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(images[..., 0], np.round(load_digits().images * 255 / 16))


def test_masked_patch_mse_and_baselines():
    config = demo_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 1, 32, 32)).astype("float32")
    train = rng.normal(size=(5, 1, 32, 32)).astype("float32")
    noise = rng.random((3, config.num_patches)).astype("float32")
    out = model(x, noise=noise)
    mask = np.asarray(out.mask)
    # The masked-patch MSE of the model's prediction, in float64 NumPy.
    model_mse = numpy_mae_loss(x, out.logits, mask, 8, norm_pix_loss=False)
    assert masked_patch_mse(model, x, noise) == pytest.approx(model_mse, rel=1e-5)
    # With pixel targets the model's own loss is the masked-patch MSE.
    assert float(out.loss) == pytest.approx(model_mse, rel=1e-5)
    baselines = reconstruction_baselines(model, x, noise, train)
    mean_patches = numpy_patchify(np.broadcast_to(train.mean(0), x.shape), 8)
    per_patch = ((mean_patches - numpy_patchify(x, 8)) ** 2).mean(-1)
    expected = (per_patch * mask).sum() / mask.sum()
    assert baselines["mean_image"] == pytest.approx(expected, rel=1e-5)
    assert baselines["untrained"] == pytest.approx(model_mse, rel=1e-5)
    with pytest.raises(ValueError, match="norm_pix_loss"):
        masked_patch_mse(TFViTMAEForPreTraining(config.copy(norm_pix_loss=True)), x, noise)


def number(pattern, text):
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the demo's output:\n{text}"
    return float(found.group(1))


def table_rows(text):
    """The demo's label-efficiency rows: `{size: [(mean, std or None), ...]}` in METHODS order."""
    rows = {}
    for size, cells in re.findall(r"^\s+(1|5|10|all)\s+(.+?)\s+\(\d+s\)$", text, re.M):
        found = re.findall(r"([\d.]+)(?: ±([\d.]+))?", cells)
        rows[size] = [(float(mean), float(std) if std else None) for mean, std in found]
    return rows


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's main command, as a user runs it, with its default settings:
    it must show what issues 11 and 23 ask of it."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}  # a newcomer's
    out = subprocess.run(
        [sys.executable, "-m", "tfvitmae", "demo", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    text = out.stdout
    assert out.returncode == 0, text + out.stderr
    # The first screen is the demo's own (issue 30): no TensorFlow, absl or AutoGraph lines.
    for noise in ("absl", "cuda", "AutoGraph", "oneDNN", "tensorflow", "I0000", "E0000"):
        assert noise not in out.stderr + text, out.stderr
    assert "1437 real digit images" in text
    masked = number(r"masked-patch MSE on held-out digits ([\d.]+)", text)
    mean_image = number(r"against ([\d.]+) for the training set's mean image", text)
    untrained = number(r"and ([\d.]+) before training", text)
    assert masked <= mean_image / 2 and mean_image < untrained, text
    rows = table_rows(text)
    assert list(rows) == ["1", "5", "10", "all"], text
    for size, cells in rows.items():
        assert len(cells) == len(METHODS), text
        assert all((std is None) == (size == "all") for _, std in cells), text
    (finetuned, _), (probe, _), _, _, (pixels_lr, _), (pixels_nn, _) = rows["all"]
    # The pixel baselines at all labels, from scikit-learn's digits directly.
    digits = load_digits()
    train, test = split_digits(0)
    x, y = digits.data / 16, digits.target
    reference_lr = LogisticRegression(max_iter=5000, random_state=0).fit(x[train], y[train])
    assert pixels_lr == pytest.approx(100 * reference_lr.score(x[test], y[test]), abs=0.05)
    reference_nn = KNeighborsClassifier(1).fit(x[train], y[train])
    assert pixels_nn == pytest.approx(100 * reference_nn.score(x[test], y[test]), abs=0.05)
    # What the table shows (README): with all labels the probed MAE encoder is level with
    # the pixels' logistic regression or better; with 10 labels per class the pretrained
    # encoder beats the same network from random initialisation by far.
    assert probe >= pixels_lr, text
    ten = {method: mean for method, (mean, _) in zip(METHODS, rows["10"])}
    assert max(ten["fine-tuned"], ten["probe"]) >= ten["scratch"] + 20, text
    # ... and the pretraining, not the architecture alone, makes the probe: probing the
    # untrained network does worse with every number of labels.
    for cells in rows.values():
        assert cells[METHODS.index("probe")][0] > cells[METHODS.index("random probe")][0], text
    model = TFViTMAEForPreTraining.from_pretrained(tmp_path)
    assert model.config.num_channels == 1
    assert np.isfinite(float(model(np.zeros((1, 1, 32, 32), "float32")).loss))
    classifier = TFViTMAEForImageClassification.from_pretrained(tmp_path / "finetuned")
    images, labels = load_digits_images()
    predicted = classifier.predict_images(images[test])["top_k_indices"][:, 0]
    assert np.mean(predicted == labels[test]) == pytest.approx(finetuned / 100, abs=0.001)
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "reconstruction.png")))
    assert grid.shape[0] > 8 * 96 and grid.shape[1] == 4 * 96 + 3 * 2


def test_load_dataset_from_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        for i in range(5):
            image = rng.integers(0, 256, (20, 12, 3), dtype=np.uint8)
            (tmp_path / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    train_x, train_y, test_x, test_y, classes = load_dataset(
        str(tmp_path), image_size=16, test_size=4
    )
    assert classes == ["cats", "dogs"]
    assert train_x.shape == (6, 16, 16, 3) and test_x.shape == (4, 16, 16, 3)
    assert train_x.dtype == np.uint8
    assert sorted(test_y.tolist()) == [0, 0, 1, 1]  # stratified
    assert sorted(np.concatenate([train_y, test_y]).tolist()) == [0] * 5 + [1] * 5


def test_load_dataset_digits_matches_the_split():
    train_x, train_y, test_x, test_y, classes = load_dataset("digits")
    images, labels = load_digits_images()
    train, test = split_digits(0)
    np.testing.assert_array_equal(test_x, images[test])
    np.testing.assert_array_equal(train_y, labels[train])
    assert classes == [str(i) for i in range(10)]
