import json

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae.data.decoding import load_images
from tfvitmae.data.image_processor import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPROCESSOR_NAME,
    ViTMAEImageProcessor,
)


def photos():
    """Two real photographs (427x640 RGB) that ship with scikit-learn."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def test_defaults_are_the_mae_checkpoints():
    processor = ViTMAEImageProcessor()
    assert processor.size == (224, 224) and processor.resample == 3  # bicubic
    assert processor.image_mean == IMAGENET_MEAN and processor.image_std == IMAGENET_STD
    assert processor.do_resize and processor.do_rescale and processor.do_normalize
    assert processor.rescale_factor == pytest.approx(1 / 255)


def test_file_round_trip_and_transformers_defaults(tmp_path):
    processor = ViTMAEImageProcessor(size=(48, 40), resample=2, image_mean=[0.3], image_std=[0.2])
    path = processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / PREPROCESSOR_NAME).read_text())
    assert path == str(tmp_path / PREPROCESSOR_NAME)
    assert saved["image_processor_type"] == "ViTImageProcessor"
    assert saved["size"] == {"height": 48, "width": 40} and saved["image_mean"] == [0.3]
    assert ViTMAEImageProcessor.from_pretrained(tmp_path) == processor
    assert ViTMAEImageProcessor.from_pretrained(tmp_path / PREPROCESSOR_NAME) == processor
    # A field the file leaves out means what it means to transformers.ViTImageProcessor.
    (tmp_path / PREPROCESSOR_NAME).write_text(json.dumps({"size": 32}))
    legacy = ViTMAEImageProcessor.from_pretrained(tmp_path)
    assert legacy.size == (32, 32) and legacy.resample == 2
    assert legacy.image_mean == (0.5, 0.5, 0.5) and legacy.image_std == (0.5, 0.5, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("resample", [2, 3])
@pytest.mark.parametrize("size", [(224, 200), (48, 64), (600, 500)])
def test_same_pixel_values_as_transformers(tmp_path, resample, size):
    """Files we write load in transformers' AutoImageProcessor (its PIL backend
    here) and give the same pixel_values on real photos, shrunk and enlarged:
    transformers resizes with PIL, we with tf.image.resize (antialiased, with
    the same kernel), so a pixel may differ by a level or so of 255."""
    from transformers import AutoImageProcessor

    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    ours = ViTMAEImageProcessor(size=size, resample=resample, image_mean=mean, image_std=std)
    ours.save_pretrained(tmp_path)
    theirs = AutoImageProcessor.from_pretrained(tmp_path)
    images = photos()
    expected = theirs(images, return_tensors="np")["pixel_values"]
    got = ours(images)["pixel_values"]
    assert got.shape == expected.shape == (2, 3, *size)
    levels = np.abs(got - expected) * np.array(std)[:, None, None] * 255  # in 0-255 levels
    assert np.mean(levels <= 1.01) > 0.99, np.quantile(levels, [0.5, 0.9, 0.99])
    assert levels.max() <= 8 and levels.mean() < 0.5
    # Without a resize the two agree exactly.
    same = ViTMAEImageProcessor(size=(427, 640), image_mean=mean, image_std=std)
    same.save_pretrained(tmp_path)
    np.testing.assert_allclose(
        same(images)["pixel_values"],
        AutoImageProcessor.from_pretrained(tmp_path)(images, return_tensors="np")["pixel_values"],
        atol=1e-5,
    )


def test_shrinking_antialiases():
    """A fine checkerboard shrunk 8x averages to grey, as PIL's resize does,
    instead of aliasing to black and white."""
    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype("uint8")[..., None]
    shrunk = ViTMAEImageProcessor(size=32, image_mean=[0.0], image_std=[1.0]).resize(board)
    assert np.abs(np.asarray(shrunk) - 127.5).max() < 3


@pytest.mark.parametrize("shape", [(1, 100_000), (2, 5_000), (100_000, 1)])
def test_wide_images_resize_without_a_large_intermediate(monkeypatch, shape):
    """tf.image.resize goes through an (out_height, in_width) intermediate: a
    1x100,000 image to 32x32 would build 32 times the image. No resize step
    here is larger than twice the larger of its input and output, and the
    result is the one-step resize's."""
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    processor = ViTMAEImageProcessor(size=32)
    expected = np.clip(
        np.round(tf.image.resize(image, (32, 32), "bicubic", antialias=True)), 0, 255
    )
    steps = []
    resize = tf.image.resize

    def recording(images, size, *args, **kwargs):
        (in_h, in_w), (out_h, out_w) = images.shape[-3:-1], [int(n) for n in size]
        steps.append((out_h * in_w, max(in_h * in_w, out_h * out_w)))
        return resize(images, size, *args, **kwargs)

    monkeypatch.setattr(tf.image, "resize", recording)
    got = processor.resize(image)
    assert steps and all(middle <= 2 * largest for middle, largest in steps), steps
    np.testing.assert_allclose(got, expected, atol=1)


def test_preprocess_normalize_denormalize():
    processor = ViTMAEImageProcessor(size=(8, 8))
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pixels = processor.preprocess(image).numpy()
    expected = (image / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(pixels, expected, atol=1e-5)
    np.testing.assert_array_equal(processor.denormalize(pixels).numpy(), image)
    # The statistics adapt to the channel count (ImageNet's RGB averages for gray).
    gray = processor.with_channels(1)
    assert gray.image_mean == pytest.approx([np.mean(IMAGENET_MEAN)])
    off = ViTMAEImageProcessor(size=4, do_rescale=False, do_normalize=False)
    np.testing.assert_array_equal(off.preprocess(np.full((4, 4, 3), 7, "uint8")), 7.0)


def test_call_takes_paths_pil_images_and_arrays_of_any_size(tmp_path):
    from PIL import Image

    first, second = photos()
    path = tmp_path / "china.jpg"
    tf.io.write_file(str(path), tf.io.encode_jpeg(first, quality=100))
    processor = ViTMAEImageProcessor(size=(64, 96))
    out = processor([str(path), Image.fromarray(second), second[:100, :50]])["pixel_values"]
    assert out.shape == (3, 3, 64, 96) and out.dtype == np.float32
    np.testing.assert_allclose(  # the PIL image and the array are the same pixels
        out[1], processor(second)["pixel_values"][0], atol=1e-6
    )
    last = processor(np.stack([first, first]), data_format="channels_last")["pixel_values"]
    assert last.shape == (2, 64, 96, 3)
    gray = load_images([first, Image.fromarray(second)], num_channels=1)
    assert [g.shape for g in gray] == [(427, 640, 1), (427, 640, 1)]


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: ViTMAEImageProcessor(resample=5), ValueError, r"resample must be a PIL code"),
        (
            lambda: ViTMAEImageProcessor(size={"shortest_edge": 224}),
            ValueError,
            r"size must be \{\"height\": H, \"width\": W\}.*received \{'shortest_edge': 224\}",
        ),
        (
            lambda: ViTMAEImageProcessor(image_mean=[0.5, 0.5], image_std=[0.5]),
            ValueError,
            r"one value per channel each, received 2 and 1 values",
        ),
        (
            lambda: ViTMAEImageProcessor.from_dict({"do_center_crop": True}),
            ValueError,
            r"do_center_crop",
        ),
        (lambda: ViTMAEImageProcessor()(np.zeros((4, 4, 3))), ValueError, r"uint8 images"),
        (
            lambda: ViTMAEImageProcessor()(np.zeros((4, 4, 2), "uint8")),
            ValueError,
            r"1, 3 or 4 channels, received ndarray of shape \(4, 4, 2\)",
        ),
        (lambda: ViTMAEImageProcessor()([]), ValueError, r"at least one image"),
        (
            lambda: ViTMAEImageProcessor(size=200_000),
            ValueError,
            r"size 200000x200000 is 40,000,000,000 pixels, more than the pixel budget",
        ),
        (lambda: ViTMAEImageProcessor(size=(0, 4)), ValueError, r"positive whole numbers"),
        (lambda: ViTMAEImageProcessor()("missing.png"), FileNotFoundError, r"missing.png"),
        (
            lambda: ViTMAEImageProcessor()(np.zeros((4, 4, 3), "uint8"), data_format="nchw"),
            ValueError,
            r"data_format must be",
        ),
    ],
)
def test_bad_input(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_unreadable_files_and_folders(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"Cannot read .*notes.png as an image"):
        ViTMAEImageProcessor()(str(tmp_path / "notes.png"))
    with pytest.raises(FileNotFoundError, match=r"No preprocessor_config.json"):
        ViTMAEImageProcessor.from_pretrained(tmp_path)
    (tmp_path / PREPROCESSOR_NAME).write_text("{broken")
    with pytest.raises(ValueError, match=r"not valid JSON"):
        ViTMAEImageProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "fields, pattern",
    [
        (
            dict(image_std=[0.5, 0.0, 0.5]),
            r"image_std must be positive, received \(0.5, 0.0, 0.5\)",
        ),
        (dict(image_std=[-0.2, 0.2, 0.2]), r"image_std must be positive"),
        (dict(image_mean=[float("nan")] * 3), r"image_mean must be a finite number or a list"),
        (dict(image_mean="0.5"), r"image_mean must be a finite number or a list"),
        (dict(do_normalize="false"), r"do_normalize must be true or false, received 'false'"),
        (dict(rescale_factor=0), r"rescale_factor must be a positive, finite number"),
    ],
)
def test_statistics_that_cannot_be_right_are_refused(fields, pattern):
    with pytest.raises(ValueError, match=pattern):
        ViTMAEImageProcessor(**fields)


def test_a_scalar_statistic_stands_for_every_channel_and_counts_must_fit_the_model(tmp_path):
    processor = ViTMAEImageProcessor(image_mean=0.5, image_std=0.25).with_channels(3)
    assert processor.image_mean == (0.5, 0.5, 0.5) and processor.image_std == (0.25,) * 3
    rgb_for_gray = ViTMAEImageProcessor().with_channels(1)  # ImageNet's averaged, as before
    assert rgb_for_gray.image_mean == pytest.approx((np.mean(IMAGENET_MEAN),))
    two = ViTMAEImageProcessor(image_mean=[0.5, 0.5], image_std=[0.5, 0.5])
    with pytest.raises(ValueError, match="have 2 values; images with 3 channels need 3"):
        two.with_channels(3)
    (tmp_path / PREPROCESSOR_NAME).write_text(json.dumps({"image_std": [0.2, 0, 0.2]}))
    with pytest.raises(ValueError, match=rf"{PREPROCESSOR_NAME}: image_std must be positive"):
        ViTMAEImageProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "image, pattern",
    [
        (np.full((8, 8, 3), 1000, np.uint16), r"Expected uint8 images \(0-255\), received uint16"),
        (np.ones((8, 8, 3), bool), r"received bool"),
        (np.zeros((0, 0, 3), np.uint8), r"an image with pixels, received shape \(0, 0, 3\)"),
    ],
)
def test_raw_arrays_are_uint8_images(image, pattern):
    with pytest.raises(ValueError, match=pattern):
        ViTMAEImageProcessor()(image)


def test_a_scalar_statistic_in_a_file_keeps_rgb_images_rgb(tmp_path):
    """`"image_mean": 0.5` in a `preprocessor_config.json` stands for every
    channel: RGB images stay RGB, and the file written back keeps the number,
    which transformers' ViTImageProcessor spreads over any channel count (a
    one-value list would be refused on RGB images there)."""
    (tmp_path / PREPROCESSOR_NAME).write_text(
        json.dumps({"size": 4, "image_mean": 0.5, "image_std": 0.5})
    )
    processor = ViTMAEImageProcessor.from_pretrained(tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pixels = processor(image)["pixel_values"]
    assert pixels.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(pixels[0], (image / 255 - 0.5).transpose(2, 0, 1) / 0.5, atol=1e-6)
    processor.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / PREPROCESSOR_NAME).read_text())
    assert saved["image_mean"] == 0.5 and saved["image_std"] == 0.5
    assert ViTMAEImageProcessor.from_pretrained(tmp_path / "again") == processor
    # A grayscale model's processor: the number on its one channel.
    gray = processor.with_channels(1)
    assert gray.image_mean == (0.5,) and gray(image)["pixel_values"].shape == (1, 1, 4, 4)
    # A number beside a list: the number goes on every channel the list names.
    mixed = ViTMAEImageProcessor(size=4, image_mean=0.5, image_std=[0.25, 0.5, 1.0])
    np.testing.assert_allclose(
        mixed.normalize(image).numpy(), (image / 255 - 0.5) / [0.25, 0.5, 1.0], atol=1e-6
    )


def test_a_size_over_the_pixel_budget_is_refused(tmp_path, monkeypatch):
    """README: an image processor `size` over the pixel budget is refused, made
    directly or read from a `preprocessor_config.json`, and the budget follows
    `MAX_IMAGE_PIXELS` when it is raised."""
    from tfvitmae.data import decoding

    budget = decoding.MAX_IMAGE_PIXELS
    side = int(budget**0.5) + 1  # side * side > budget
    pattern = rf"size {side}x{side} is {side * side:,} pixels, more than the pixel budget"
    with pytest.raises(ValueError, match=pattern):
        ViTMAEImageProcessor(size=side)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": side}))
    with pytest.raises(ValueError, match=pattern):
        ViTMAEImageProcessor.from_pretrained(tmp_path)
    assert ViTMAEImageProcessor(size=(1, budget)).size == (1, budget)  # at the budget: fine
    monkeypatch.setattr(decoding, "MAX_IMAGE_PIXELS", side * side)
    assert ViTMAEImageProcessor(size=side).size == (side, side)
