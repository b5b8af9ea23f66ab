import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import data
from tfvitmae.data.image_processor import ViTMAEImageProcessor
from tfvitmae.training.callbacks import DataEpoch


def write_images(folder, count=6, size=(40, 50), classes=("cats", "dogs")):
    """A folder of real PNG/JPEG/BMP files in class sub-folders, plus junk."""
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
            encoded = [tf.io.encode_png, tf.io.encode_jpeg][i % 2](pixels)
            tf.io.write_file(str(folder / name / f"{i}.{'png' if i % 2 == 0 else 'jpg'}"), encoded)
    gray = tf.io.encode_png(rng.integers(0, 256, size=(30, 30, 1), dtype=np.uint8))
    tf.io.write_file(str(folder / classes[0] / "gray.png"), gray)
    rgba = tf.io.encode_png(rng.integers(0, 256, size=(20, 60, 4), dtype=np.uint8))
    tf.io.write_file(str(folder / classes[1] / "rgba.png"), rgba)
    (folder / "notes.txt").write_text("not an image")
    (folder / classes[0] / "fake.jpg").write_text("also not an image")
    return 2 * count + 2


def test_folder_pipeline_shapes_ranges_and_labels(tmp_path):
    n = write_images(tmp_path)
    paths, labels, classes, skipped = data.list_image_files(str(tmp_path))
    assert len(paths) == n and classes == ["cats", "dogs"] and skipped == 2
    assert sorted(set(labels)) == [0, 1]
    ds, info = data.make_dataset(str(tmp_path), 32, 4, with_labels=True, seed=0, return_info=True)
    assert info == dict(num_examples=n, skipped=2, class_names=["cats", "dogs"], unreadable=[])
    batches = list(ds)
    assert sum(len(y) for _, y in batches) == n
    x, y = batches[0]
    assert x.shape == (4, 3, 32, 32) and x.dtype == tf.float32
    # ImageNet-normalised uint8 pixels stay within these bounds.
    low = (0 - max(data.IMAGENET_MEAN)) / min(data.IMAGENET_STD)
    high = (1 - min(data.IMAGENET_MEAN)) / min(data.IMAGENET_STD)
    assert low - 1e-4 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= high + 1e-4


def test_truncated_images_are_named_skipped_and_not_counted(tmp_path):
    write_images(tmp_path, count=2)
    good = (tmp_path / "cats" / "0.png").read_bytes()
    broken = [tmp_path / "cats" / "broken.png", tmp_path / "dogs" / "cut.png"]
    for path in broken:
        path.write_bytes(good[: len(good) // 2])  # right header, broken data
    with pytest.warns(UserWarning, match=r"Skipping 2 of the 8 images .*broken.png.*cut.png"):
        ds, info = data.make_dataset(
            str(tmp_path), 16, 3, augment=False, shuffle=False, return_info=True
        )
    assert info["num_examples"] == 6 and info["unreadable"] == [str(p) for p in broken]
    assert sum(int(b.shape[0]) for b in ds) == 6  # 4 + gray + rgba
    # Without the check, broken files are still dropped (while training), just not named.
    unchecked = data.make_dataset(str(tmp_path), 16, 3, augment=False, verify_images=False)
    assert sum(int(b.shape[0]) for b in unchecked) == 6


def test_a_folder_of_only_broken_images_is_refused(tmp_path):
    (tmp_path / "cats").mkdir()
    for i in range(3):
        (tmp_path / "cats" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"None of the 3 images in .* could be decoded.*0.png"):
        data.make_dataset(str(tmp_path), 16, 2)


def test_deterministic_under_seed_and_new_each_epoch():
    images = np.random.default_rng(1).integers(0, 256, size=(10, 40, 50, 3), dtype=np.uint8)
    a = [b.numpy() for b in data.make_dataset(images, 24, 4, seed=7)]
    b = [b.numpy() for b in data.make_dataset(images, 24, 4, seed=7)]
    c = [b.numpy() for b in data.make_dataset(images, 24, 4, seed=8)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    ds = data.make_dataset(images, 24, 4, seed=7)
    first, second = [next(iter(ds)).numpy() for _ in range(2)]
    assert not np.array_equal(first, second)  # a new shuffle and augmentation each epoch


def test_eval_preprocessing_is_the_processors_resize_and_normalisation():
    """Checked against PIL's bicubic resize (what transformers uses) on real
    photographs: within a few levels of 255 (PIL rounds to uint8 between its
    horizontal and vertical passes), and mostly equal."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = np.stack([photo[100:160, 200:290] for photo in load_sample_images().images])
    ds = data.make_dataset(
        images, (16, 24), 2, augment=False, shuffle=False, data_format="channels_last"
    )
    resized = np.stack(
        [np.asarray(Image.fromarray(i).resize((24, 16), Image.BICUBIC)) for i in images]
    )
    expected = (resized / 255 - np.array(data.IMAGENET_MEAN)) / np.array(data.IMAGENET_STD)
    got = next(iter(ds)).numpy()
    levels = np.abs(got - expected) * np.array(data.IMAGENET_STD) * 255
    assert levels.max() <= 4 and levels.mean() < 0.3 and np.mean(levels < 0.5) > 0.7


def test_the_processor_sets_size_method_and_statistics():
    processor = ViTMAEImageProcessor(size=(12, 10), resample=2, image_mean=[0.2], image_std=[0.5])
    images = np.random.default_rng(3).integers(0, 256, size=(2, 30, 20, 1), dtype=np.uint8)
    ds = data.make_dataset(
        images, batch_size=2, processor=processor, num_channels=1, augment=False, shuffle=False
    )
    x = next(iter(ds)).numpy()
    assert x.shape == (2, 1, 12, 10)
    expected = processor.preprocess(images).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert float(x.min()) >= -0.4 - 1e-6 and float(x.max()) <= 1.6 + 1e-6  # (0 or 1 - 0.2) / 0.5


def test_any_keras_preprocessing_layer_plugs_in(tmp_path):
    """An augmenter sees each batch's pixels in [0, 255] (channels last) with its
    labels, as Keras and keras-cv layers expect; keras-cv is a plug-in, not a dependency."""
    import keras_cv

    images = np.random.default_rng(4).integers(0, 256, size=(4, 24, 24, 3), dtype=np.uint8)
    seen = []

    def spy(batch):
        seen.append(batch)
        return {"images": 255.0 - batch["images"], "labels": batch["labels"]}

    common = dict(augment=False, shuffle=False, data_format="channels_last", with_labels=True)
    plain, _ = next(iter(data.make_dataset(images, 24, 4, **common)))
    inverted, labels = next(iter(data.make_dataset(images, 24, 4, augmenter=spy, **common)))
    assert seen and set(seen[0]) == {"images", "labels"}
    mean, std = np.array(data.IMAGENET_MEAN), np.array(data.IMAGENET_STD)
    inverted_expected = ((255.0 - images) / 255 - mean) / std  # by hand, not data.normalize
    np.testing.assert_allclose(inverted, inverted_expected, atol=1e-5)
    assert not np.allclose(inverted, plain)
    for layer in (
        keras_cv.layers.RandomChannelShift(value_range=(0, 255), factor=0.5, seed=1),
        keras.layers.RandomContrast(0.5, value_range=(0, 255), seed=1),
    ):
        ds = data.make_dataset(images, 24, 4, augmenter=layer, seed=3, **common)
        first = next(iter(ds))[0].numpy()
        assert first.shape == (4, 24, 24, 3) and np.isfinite(first).all()
        assert not np.allclose(first, plain)  # the layer changed the images


def test_file_paths_are_shuffled_before_decoding(tmp_path):
    """Class-sorted folders still give mixed batches: the shuffle runs over all
    file paths (cheap), not over a buffer of decoded images."""
    write_images(tmp_path, count=20, size=(8, 8))
    ds = data.make_dataset(str(tmp_path), 8, 10, with_labels=True, augment=False, seed=0)
    first_labels = next(iter(ds))[1].numpy()
    assert set(first_labels) == {0, 1}
    stages = _epoch_stages(ds)  # each pass permutes the paths, then decodes them
    assert stages.index("StatelessShuffle") < stages.index("TensorSliceDataset")
    assert stages.index("TensorSliceDataset") < stages.index("IgnoreErrorsDataset")


def _pipeline(ds):
    """The datasets of a pipeline, source first."""
    chain = [ds]
    while chain[-1]._inputs():
        chain.append(chain[-1]._inputs()[0])
    return chain[::-1]


def _epoch_stages(ds):
    """The op types that build one pass's elements (the function that
    `make_dataset` flat-maps over epoch numbers), in order."""
    flat_map = [d for d in _pipeline(ds) if type(d).__name__ == "_FlatMapDataset"][-1]
    return [op.type for op in flat_map._map_func.function.graph.get_operations()]


def test_random_resized_crop_follows_the_recipe():
    image = tf.reshape(tf.range(100 * 80, dtype=tf.float32) % 251, (100, 80, 1))
    for i in range(20):
        out = data.random_resized_crop(image, (32, 32), tf.constant([i, 3]))
        assert out.shape == (32, 32, 1)
        assert 0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255
    # The same seed gives the same crop.
    a = data.random_resized_crop(image, (32, 32), tf.constant([5, 5]))
    b = data.random_resized_crop(image, (32, 32), tf.constant([5, 5]))
    np.testing.assert_array_equal(a, b)
    # An image far outside the aspect range falls back to a centre crop.
    thin = tf.ones((4, 300, 3))
    assert data.random_resized_crop(thin, (16, 16), tf.constant([1, 1])).shape == (16, 16, 3)


def test_arrays_datasets_and_channel_conversion():
    gray = np.random.default_rng(3).random((5, 20, 20)).astype("float32")  # floats in [0, 1]
    x = next(iter(data.make_dataset(gray, 16, 5, augment=False, shuffle=False)))
    assert x.shape == (5, 3, 16, 16)
    rgba = np.random.default_rng(4).integers(0, 256, size=(4, 20, 20, 4), dtype=np.uint8)
    x = next(iter(data.make_dataset(rgba, 16, 4, num_channels=1, augment=False)))
    assert x.shape == (4, 1, 16, 16)
    source = tf.data.Dataset.from_tensor_slices({"image": rgba[..., :3], "label": np.arange(4)})
    x, y = next(
        iter(data.make_dataset(source, 16, 4, with_labels=True, shuffle=False, augment=False))
    )
    assert x.shape == (4, 3, 16, 16) and list(y.numpy()) == [0, 1, 2, 3]
    pairs = tf.data.Dataset.from_tensor_slices((rgba[..., :3], np.arange(4) + 5))
    x, y = next(iter(data.make_dataset(pairs, 16, 4, with_labels=True, shuffle=False)))
    assert x.shape == (4, 3, 16, 16) and list(y.numpy()) == [5, 6, 7, 8]
    alone = tf.data.Dataset.from_tensor_slices(rgba[..., :3])
    x, y = next(iter(data.make_dataset(alone, 16, 4, with_labels=True, shuffle=False)))
    assert x.shape == (4, 3, 16, 16) and list(y.numpy()) == [0, 0, 0, 0]


def test_mixup_cutmix_mix_images_and_labels():
    """Each batch gets MixUp or CutMix: the labels become soft (summing to 1,
    with the image's own class kept) and the images differ from the same
    pipeline without mixing, which is otherwise reproducible."""
    images = np.random.default_rng(5).integers(0, 256, size=(8, 20, 20, 3), dtype=np.uint8)
    # One class per image: a row stays one-hot only where an image is mixed with itself.
    common = dict(labels=np.arange(8), with_labels=True, num_classes=8, seed=1)

    def batches(**mixing):
        return [
            (x.numpy(), y.numpy()) for x, y in data.make_dataset(images, 16, 4, **common, **mixing)
        ]

    mixed = batches(mixup_alpha=0.8, cutmix_alpha=1.0)
    plain, again = batches(), batches()
    assert len(mixed) == len(plain) == 2
    for (x, y), (x_again, y_again) in zip(plain, again):  # same seed, same images
        np.testing.assert_array_equal(x, x_again)
        np.testing.assert_array_equal(y, y_again)
    soft_rows = 0
    for (x, y), (plain_x, plain_y) in zip(mixed, plain):
        assert y.shape == (4, 8) and plain_y.shape == (4,)
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
        assert (y >= 0).all()
        assert (y[np.arange(4), plain_y] > 0).all()  # the image's own class keeps a share
        soft_rows += int(((y > 1e-6) & (y < 1 - 1e-6)).any(-1).sum())
        assert not np.allclose(x, plain_x)  # the images were mixed too
    assert soft_rows >= 4, [y for _, y in mixed]  # most rows hold two classes


@pytest.mark.parametrize(
    "labels, pattern",
    [
        ([0, 1, 7, -1], r"in \[0, 2\) .*received 2 outside it: \[-1, 7\]"),
        ([0, 1, 0.5, 1], r"whole numbers .*received \[0.5\]"),
        (["cat", "dog", "cat", "dog"], r"received <U3 values such as \['cat', 'dog', 'cat'\]"),
    ],
)
def test_labels_must_be_class_indices(labels, pattern):
    """Out-of-range labels used to become all-zero one-hot rows under MixUp,
    and float or string labels were taken as they were."""
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=pattern):
        data.make_dataset(images, 8, 2, labels=labels, with_labels=True, num_classes=2,
                          mixup_alpha=0.8)  # fmt: skip


def test_whole_float_labels_are_indices_and_datasets_are_checked_as_read():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    whole = data.make_dataset(images, 8, 4, labels=[0.0, 1.0, 1.0, 0.0], with_labels=True)
    assert next(iter(whole))[1].dtype == tf.int64  # whole floats are read as indices
    # A dataset's labels are checked as they are read.
    bad = tf.data.Dataset.from_tensor_slices((images, np.array([0, 1, 7, -1])))
    pipeline = data.make_dataset(bad, 8, 4, with_labels=True, num_classes=2, augment=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be .*\[0, 2\)"):
        next(iter(pipeline))
    strings = tf.data.Dataset.from_tensor_slices((images, np.array(list("abcd"))))
    with pytest.raises(ValueError, match=r"labels must be .* received string"):
        data.make_dataset(strings, 8, 4, with_labels=True)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda d: data.make_dataset(str(d / "empty"), 16, 2), r"No images found in .*empty"),
        (lambda d: data.make_dataset(str(d / "missing"), 16, 2), r"not a directory"),
        (
            lambda d: data.make_dataset(
                np.zeros((2, 8, 8, 3), "uint8"), 16, 4, drop_remainder=True
            ),
            r"batch_size 4 is larger than the dataset \(2 images\)",
        ),
        (lambda d: data.make_dataset(np.zeros((2, 8), "uint8"), 16, 2), r"received shape \(2, 8\)"),
        (
            lambda d: data.make_dataset(np.zeros((2, 8, 8, 3), "uint8"), 16, 0),
            r"batch_size must be a positive integer, received 0",
        ),
        (
            lambda d: data.make_dataset(np.zeros((2, 8, 8, 3), "uint8"), 16, 2, labels=[1]),
            r"one label per image",
        ),
        (
            lambda d: data.make_dataset(np.zeros((2, 8, 8, 3), "uint8"), 16, 2, mixup_alpha=0.8),
            r"num_classes",
        ),
    ],
)
def test_bad_input(tmp_path, call, pattern):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=pattern):
        call(tmp_path)


def test_channel_stats():
    mean, std = data.channel_stats(data.IMAGENET_MEAN, data.IMAGENET_STD, 3)
    np.testing.assert_allclose(mean, data.IMAGENET_MEAN)
    np.testing.assert_allclose(std, data.IMAGENET_STD)
    mean, std = data.channel_stats(
        data.IMAGENET_MEAN, data.IMAGENET_STD, 1
    )  # grayscale: the RGB average
    np.testing.assert_allclose(mean, [np.mean(data.IMAGENET_MEAN)], rtol=1e-6)
    np.testing.assert_allclose(std, [np.mean(data.IMAGENET_STD)], rtol=1e-6)


def test_every_epoch_reshuffles_and_can_be_replayed_on_its_own():
    """A pass is a function of the seed and the epoch's number: a new pipeline
    told `set_epoch(2)` gives what an uninterrupted one gave in its third pass
    (shuffle, crop, flip, MixUp and CutMix alike)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)

    def pipeline():
        return data.make_dataset(
            images, 8, 4, labels=np.arange(12) % 3, with_labels=True, num_classes=3,
            mixup_alpha=0.8, cutmix_alpha=1.0, seed=7,
        )  # fmt: skip

    def one_pass(ds):
        batches = list(ds)
        return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])

    straight = pipeline()
    passes = [one_pass(straight) for _ in range(3)]
    assert not np.allclose(passes[0][0], passes[1][0])  # a new order and new crops each epoch
    assert int(straight.cardinality()) == 3
    resumed = pipeline()
    assert data.set_epoch(resumed, 2)
    x, y = one_pass(resumed)
    np.testing.assert_array_equal(x, passes[2][0])
    np.testing.assert_array_equal(y, passes[2][1])
    x, y = one_pass(pipeline())  # and a fresh one starts at epoch 0
    np.testing.assert_array_equal(x, passes[0][0])
    assert not data.set_epoch(tf.data.Dataset.range(3), 1)  # not ours: left alone


@pytest.mark.parametrize(
    "count, drop_remainder, repeat",
    [(8, False, True), (10, False, True), (10, True, True), (10, False, False), (10, True, False)],
)
def test_set_epoch_replays_any_pass_exactly(count, drop_remainder, repeat):
    """Pass k of an uninterrupted iteration (over passes 0..k, in one
    iterator with `repeat`, one iterator a pass without) is what a new
    pipeline told `set_epoch(k)` gives first: the same order, crops, flips,
    MixUp and CutMix, batch for batch, with the pass's short last batch.
    With 8 images the batches line up across passes whatever the batching,
    so there only the mixing's seeds are observed."""
    images = np.random.default_rng(2).integers(0, 256, (count, 12, 12, 3), dtype=np.uint8)
    batch, passes = 4, 3

    def pipeline():
        return data.make_dataset(
            images, 8, batch, labels=np.arange(count) % 3, with_labels=True, num_classes=3,
            mixup_alpha=0.8, cutmix_alpha=1.0, seed=5, repeat=repeat,
            drop_remainder=drop_remainder,
        )  # fmt: skip

    per_pass = count // batch if drop_remainder else -(-count // batch)
    straight = pipeline()
    assert data.steps_per_pass(straight) == per_pass
    if repeat:
        stream = iter(straight)
        uninterrupted = [[next(stream) for _ in range(per_pass)] for _ in range(passes)]
    else:
        uninterrupted = [list(straight) for _ in range(passes)]
    for k in range(passes):
        replay = pipeline()
        assert data.set_epoch(replay, k)
        replayed = list(replay.take(per_pass))
        assert len(uninterrupted[k]) == len(replayed) == per_pass
        for (x, y), (x_again, y_again) in zip(uninterrupted[k], replayed):
            np.testing.assert_array_equal(x, x_again)
            np.testing.assert_array_equal(y, y_again)
    assert not np.allclose(uninterrupted[0][0][0], uninterrupted[1][0][0])  # passes differ


def test_data_epoch_pins_each_pass_to_the_epoch_number():
    """`fit` iterates the pipeline anew each epoch, after `on_epoch_begin`:
    the pass then belongs to that epoch, whatever passes came before."""
    images = np.random.default_rng(1).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    source = data.make_dataset(images, 8, 4, seed=3)
    callback = DataEpoch(source)
    order = []
    for epoch in (0, 1, 2):
        callback.on_epoch_begin(epoch)
        order.append(np.concatenate(list(source)))
    list(source)  # an extra pass (a preview, say) does not shift the epochs
    callback.on_epoch_begin(1)  # epoch 1 again, as after a resume
    np.testing.assert_array_equal(np.concatenate(list(source)), order[1])
    assert not np.allclose(order[0], order[1])


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_repeat_runs_pass_after_pass_each_in_its_own_batches(drop_remainder):
    """One pass is one epoch's batches: its last batch is short (or dropped
    with `drop_remainder`), never filled from the next pass."""
    images = (np.arange(5)[:, None, None, None] * np.ones((5, 8, 8, 3))).astype(np.uint8)
    ds = data.make_dataset(images, 8, 2, augment=False, repeat=True, with_labels=True, seed=1,
                           labels=np.arange(5), drop_remainder=drop_remainder)  # fmt: skip
    assert int(ds.cardinality()) == tf.data.INFINITE_CARDINALITY
    sizes = [2, 2] if drop_remainder else [2, 2, 1]
    assert data.steps_per_pass(ds) == len(sizes)
    batches = [y.numpy() for _, y in ds.take(4 * len(sizes))]  # 4 passes
    assert [len(y) for y in batches] == sizes * 4
    passes = [
        np.concatenate(batches[i : i + len(sizes)]) for i in range(0, len(batches), len(sizes))
    ]
    for one_pass in passes:
        assert len(set(one_pass)) == len(one_pass) == sum(sizes)  # each image at most once
    assert len({tuple(p) for p in passes}) > 1  # in a new order


def _within(seconds, work):
    """`work()`'s result, or its exception raised here; a test failure if it
    takes longer than `seconds` (it then spins on in a daemon thread)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = work()
        except Exception as e:  # noqa: BLE001 (re-raised below)
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@pytest.mark.parametrize("source", ["empty", "filtered", "broken files"])
def test_repeating_data_that_yields_nothing_is_refused_not_spun(tmp_path, source):
    """An endless pipeline over no images would read empty passes forever."""
    images = np.zeros((3, 8, 8, 3), np.uint8)
    if source == "empty":
        data_source = tf.data.Dataset.from_tensor_slices(images[:0])
    elif source == "filtered":
        data_source = tf.data.Dataset.from_tensor_slices(images).filter(lambda x: False)
    else:
        for i in range(3):
            (tmp_path / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        data_source = str(tmp_path)

    def first_batch():
        ds = data.make_dataset(data_source, 8, 2, repeat=True, verify_images=False)
        return next(iter(ds))

    with pytest.raises(ValueError, match=r"repeat=True.* (empty|none of its 3 image files)"):
        _within(20, first_batch)


@pytest.mark.parametrize(
    "array, pattern",
    [
        (
            np.full((2, 8, 8, 3), 1000, np.uint16),
            r"uint8 \(0-255\) or floats in \[0, 1\], received uint16",
        ),
        (np.ones((2, 8, 8, 3), bool), r"received bool"),
        (np.full((2, 8, 8, 3), -3, np.int64), r"received int64"),
        (
            np.full((2, 8, 8, 3), 0.5, np.float32) + np.eye(8)[None, :, :, None] * 0.5001,
            r"\[0, 1\]",
        ),
        (np.full((2, 8, 8, 3), np.nan, np.float32), r"NaN or infinite"),
    ],
)
def test_arrays_are_read_by_an_explicit_rule_never_guessed(array, pattern):
    """uint8 means 0-255 and floats mean [0, 1]; anything else is refused."""
    with pytest.raises(ValueError, match=pattern):
        data.make_dataset(array, 8, 2, augment=False)


def test_float_arrays_in_the_unit_range_are_scaled_as_uint8_ones():
    uint8 = np.random.default_rng(6).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    options = dict(batch_size=2, augment=False, shuffle=False)
    from_uint8 = next(iter(data.make_dataset(uint8, 8, **options)))
    from_float = next(iter(data.make_dataset(uint8 / 255.0, 8, **options)))
    np.testing.assert_allclose(from_float, from_uint8, atol=1e-5)


def test_the_mixup_or_cutmix_choice_changes_from_pass_to_pass():
    """With both on, a coin picks one per batch; it repeated every epoch. Each
    image is one flat colour, so a MixUp batch holds flat images (a blend of
    two flat colours) and a CutMix batch holds images with a pasted box."""
    levels = np.linspace(0, 255, 8).astype(np.uint8)
    images = np.broadcast_to(levels[:, None, None, None], (8, 12, 12, 3)).copy()
    choices = []
    for k in range(6):
        pipeline = data.make_dataset(
            images, 8, 4, labels=np.arange(8) % 2, with_labels=True, num_classes=2,
            mixup_alpha=0.8, cutmix_alpha=1.0, seed=5,
        )  # fmt: skip
        assert data.set_epoch(pipeline, k)
        for x, _ in pipeline:
            flat = [len(np.unique(np.round(image, 3))) <= 3 for image in np.asarray(x)]
            choices.append("mixup" if all(flat) else "cutmix")
    per_pass = [tuple(choices[i : i + 2]) for i in range(0, len(choices), 2)]
    assert {"mixup", "cutmix"} <= set(choices)
    assert len(set(per_pass)) > 1, per_pass


@pytest.mark.parametrize("count, processes", [(21, 2), (16, 4)])
def test_each_process_reads_its_rows_of_every_global_batch(count, processes):
    """A process's part of the images: rows `i * batch / processes` on of
    each global batch, with the crops, flips and order one process gives,
    pass after pass: the parts together are the global batches. (Files are
    split the same way, before they are decoded.)"""
    images = np.random.default_rng(3).integers(0, 256, (count, 40, 40, 3), dtype=np.uint8)
    options = dict(image_size=32, batch_size=8, seed=0, drop_remainder=True, repeat=True)
    whole = data.make_dataset(images, **options)
    parts = [
        data.make_dataset(images, process_index=i, process_count=processes, **options)
        for i in range(processes)
    ]
    assert [data.steps_per_pass(p) for p in parts] == [data.steps_per_pass(whole)] * processes
    assert [data.process_part(p) for p in parts] == [(i, processes) for i in range(processes)]
    assert data.process_part(whole) is None
    steps = 3 * data.steps_per_pass(whole)  # three passes, each shuffled anew
    expected = [batch.numpy() for batch in whole.take(steps)]
    got = [[batch.numpy() for batch in part.take(steps)] for part in parts]
    for step in range(steps):
        assert {g[step].shape[0] for g in got} == {8 // processes}
        np.testing.assert_array_equal(np.concatenate([g[step] for g in got]), expected[step])


@pytest.mark.parametrize(
    "options, pattern",
    [
        (dict(process_index=2, process_count=2), r"process_index must lie in \[0, process_count\)"),
        (dict(process_index=0, process_count=3), "multiple of process_count 3"),
        (dict(process_index=0, process_count=2, drop_remainder=False), "needs drop_remainder"),
        (dict(process_index=True, process_count=2), "process_index must be an int"),
    ],
)
def test_process_parts_that_cannot_be_read_in_step_are_refused(options, pattern):
    images = np.zeros((16, 12, 12, 3), np.uint8)
    options = {"drop_remainder": True, **options}
    with pytest.raises((ValueError, TypeError), match=pattern):
        data.make_dataset(images, 8, 8, **options)
    with pytest.raises(ValueError, match="needs verify_images"):
        data.make_dataset(
            ["a.png", "b.png"], 8, 8, process_index=0, process_count=2, drop_remainder=True,
            verify_images=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"shard the dataset yourself"):
        data.make_dataset(
            tf.data.Dataset.from_tensor_slices(images), 8, 8, process_index=0, process_count=2,
            drop_remainder=True,
        )  # fmt: skip
