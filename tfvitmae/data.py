"""`tf.data` input pipelines: image folders, arrays or datasets in; batches of
normalised `pixel_values` (and labels) out.

- Evaluation preprocessing (`preprocess_images`) resizes with bicubic
  interpolation and normalises with the ImageNet mean and std, as
  `ViTImageProcessor` does for the MAE checkpoints. Export reuses it.
- MAE augmentation is a random resized crop (scale (0.2, 1), aspect (3/4, 4/3),
  bicubic) and a horizontal flip. The crop is done here with stateless TF ops,
  because keras-cv's `RandomCropAndResize` supports only bilinear and nearest
  resizing. The flip, and MixUp/CutMix for fine-tuning, come from keras-cv,
  which is imported lazily in `_keras_cv_layers`, the one place that uses it.
- Everything is deterministic for a given `seed`.
"""

import math
import os

import numpy as np
import tensorflow as tf

from .inputs import check_data_format

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)

# Leading bytes of the formats `tf.io.decode_image` reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def _is_image_file(path):
    try:
        with open(path, "rb") as f:
            return f.read(8).startswith(_MAGIC)
    except OSError:
        return False


def list_image_files(folder):
    """Image files under `folder`, with class labels from sub-folder names.

    Files are recognised by content (JPEG, PNG, GIF, BMP), not by extension.

    Returns:
        `(paths, labels, class_names, skipped)`: sorted paths, an int label
        per path (the index of its top-level sub-folder in `class_names`; 0
        for images directly in `folder`), and the number of other files skipped.
    """
    if not os.path.isdir(folder):
        raise ValueError(
            f"Expected a folder of images, received {folder!r}, which is not a directory"
        )
    paths, skipped = [], 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if _is_image_file(path):
                paths.append(path)
            else:
                skipped += 1
    if not paths:
        raise ValueError(
            f"No images found in {folder!r} (JPEG, PNG, GIF or BMP; {skipped} other files skipped)"
        )
    top = [os.path.relpath(p, folder).split(os.sep) for p in paths]
    class_names = sorted({parts[0] for parts in top if len(parts) > 1})
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index[parts[0]] if len(parts) > 1 else 0 for parts in top]
    return paths, labels, class_names, skipped


def split_files(paths, labels, val_fraction, seed=0):
    """Deterministic train/validation split of file lists (stratification-free)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), received {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = int(round(len(paths) * val_fraction))
    pick = lambda idx: ([paths[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    return pick(order[n_val:]), pick(order[:n_val])


def decode_image(contents, num_channels=3):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 `(height, width, num_channels)`.

    Grayscale, RGBA and RGB inputs are all converted to `num_channels`.
    """
    image = tf.io.decode_image(contents, channels=num_channels, expand_animations=False)
    image.set_shape((None, None, num_channels))
    return image


def channel_stats(mean, std, channels):
    """Per-channel float32 `(mean, std)` for `channels` channels. Statistics
    for another channel count (ImageNet's RGB ones for a grayscale model) are
    replaced by their average on every channel."""
    mean, std = np.asarray(mean, "float32"), np.asarray(std, "float32")
    if len(mean) != channels:
        mean, std = (
            np.full(channels, mean.mean(), "float32"),
            np.full(channels, std.mean(), "float32"),
        )
    return mean, std


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (or float in [0, 255]) images -> float32 `(x / 255 - mean) / std`."""
    images = tf.cast(images, tf.float32) / 255.0
    mean, std = channel_stats(mean, std, images.shape[-1])
    return (images - mean) / std


def denormalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Inverse of `normalize` for display: channels-last float images ->
    uint8 in [0, 255] (rounded and clipped)."""
    images = tf.cast(images, tf.float32)
    mean, std = channel_stats(mean, std, images.shape[-1])
    return tf.cast(tf.clip_by_value(tf.round((images * std + mean) * 255.0), 0, 255), tf.uint8)


def preprocess_images(images, image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Evaluation preprocessing: bicubic resize to `image_size`, then normalise.

    Args:
        images: uint8 (or float in [0, 255]) channels-last images, one
            `(height, width, channels)` or a batch.
        image_size: `(height, width)` or an int.

    Returns:
        float32 channels-last images.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    resized = tf.image.resize(tf.cast(images, tf.float32), size, method="bicubic")
    return normalize(tf.clip_by_value(resized, 0.0, 255.0), mean, std)


def random_resized_crop(image, image_size, seed, scale=CROP_SCALE, ratio=CROP_RATIO):
    """torchvision-style `RandomResizedCrop` with bicubic resizing, stateless.

    Tries 10 boxes with area fraction in `scale` and log-uniform aspect ratio in
    `ratio`; falls back to a centre crop clamped to `ratio`, as torchvision does.

    Args:
        image: `(height, width, channels)`.
        image_size: `(height, width)` of the output.
        seed: Shape-(2,) int seed for the stateless random ops.
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area = height * width
    attempts = 10
    seeds = tf.random.experimental.stateless_split(seed, 3)
    target = area * tf.random.stateless_uniform((attempts,), seeds[0], scale[0], scale[1])
    log_ratio = tf.random.stateless_uniform(
        (attempts,), seeds[1], math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = tf.exp(log_ratio)
    crop_w = tf.round(tf.sqrt(target * aspect))
    crop_h = tf.round(tf.sqrt(target / aspect))
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))
    # Fallback: the largest centre crop with an aspect ratio inside `ratio`.
    in_ratio = width / height
    fallback_w = tf.where(
        in_ratio < ratio[0],
        width,
        tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width),
    )
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
    found = tf.reduce_any(fits)
    crop_h = tf.cast(tf.where(found, crop_h[first], fallback_h), tf.int32)
    crop_w = tf.cast(tf.where(found, crop_w[first], fallback_w), tf.int32)
    offsets = tf.random.stateless_uniform((2,), seeds[2], 0.0, 1.0)
    top = tf.where(
        found,
        tf.cast(offsets[0] * tf.cast(shape[0] - crop_h + 1, tf.float32), tf.int32),
        (shape[0] - crop_h) // 2,
    )
    left = tf.where(
        found,
        tf.cast(offsets[1] * tf.cast(shape[1] - crop_w + 1, tf.float32), tf.int32),
        (shape[1] - crop_w) // 2,
    )
    top = tf.minimum(top, shape[0] - crop_h)
    left = tf.minimum(left, shape[1] - crop_w)
    crop = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
    resized = tf.image.resize(tf.cast(crop, tf.float32), image_size, method="bicubic")
    return tf.clip_by_value(resized, 0.0, 255.0)


def _keras_cv_layers():
    """keras-cv, imported here only: the flip, MixUp and CutMix layers."""
    try:
        import keras_cv
    except ImportError as e:  # pragma: no cover - keras-cv is a declared dependency
        raise ImportError(f"Augmentation needs keras-cv (pip install keras-cv): {e}") from None
    return keras_cv.layers


def _from_source(source, labels, num_channels):
    """A dataset of `(uint8-or-float image (H, W, C), label)` and a description."""
    files = (
        isinstance(source, (list, tuple)) and source and isinstance(source[0], (str, os.PathLike))
    )
    if isinstance(source, (str, os.PathLike)) or files:
        if files:  # an explicit list of image files
            paths, folder_labels, class_names, skipped = (
                [os.fspath(p) for p in source],
                [0] * len(source),
                [],
                0,
            )
        else:
            paths, folder_labels, class_names, skipped = list_image_files(os.fspath(source))
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"Expected one label per image ({len(paths)}), received {len(labels)}")
        ds = tf.data.Dataset.from_tensor_slices(
            (paths, folder_labels if labels is None else list(labels))
        )
        # Images whose header looks right but whose data is broken are dropped
        # by ignore_errors() below instead of stopping the epoch.
        ds = ds.map(
            lambda p, y: (decode_image(tf.io.read_file(p), num_channels), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).ignore_errors(log_warning=True)
        info = dict(num_examples=len(paths), skipped=skipped, class_names=class_names)
        return ds, info
    if isinstance(source, tf.data.Dataset):
        spec = source.element_spec

        def split(element):
            if isinstance(element, dict):
                image = element.get("image", element.get("pixel_values"))
                label = element.get("label", element.get("labels", 0))
                return image, label
            if isinstance(element, tuple):
                return element[0], element[1] if len(element) > 1 else 0
            return element, 0

        if isinstance(spec, dict) and not ({"image", "pixel_values"} & set(spec)):
            raise ValueError(
                f"A dataset of dicts needs an 'image' key, received keys {sorted(spec)}"
            )
        ds = source.map(split)
        image_spec = ds.element_spec[0]
        if image_spec.shape.rank != 3:
            raise ValueError(
                "Dataset images must be single (height, width, channels) images, received shape "
                f"{image_spec.shape}"
            )
        return ds, dict(num_examples=None, skipped=0, class_names=[])
    array = np.asarray(source)
    if array.ndim == 3:  # (n, h, w) grayscale
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "Image arrays must be (n, height, width[, channels]) channels-last with 1, 3 or 4 "
            "channels, "
            f"received shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("The image array is empty")
    if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
        array = array * 255.0  # floats in [0, 1]
    array = _match_channels(array, num_channels)
    y = np.zeros(len(array), np.int64) if labels is None else np.asarray(labels)
    if len(y) != len(array):
        raise ValueError(f"Expected one label per image ({len(array)}), received {len(y)}")
    return tf.data.Dataset.from_tensor_slices((array, y)), dict(
        num_examples=len(array), skipped=0, class_names=[]
    )


def _match_channels(array, num_channels):
    channels = array.shape[-1]
    if channels == num_channels:
        return array
    if channels == 4 and num_channels == 3:
        return array[..., :3]
    if channels == 1 and num_channels == 3:
        return np.repeat(array, 3, axis=-1)
    if num_channels == 1:
        return array[..., :3].mean(axis=-1, keepdims=True) if channels >= 3 else array[..., :1]
    raise ValueError(f"Cannot convert {channels}-channel images to {num_channels} channels")


def make_dataset(
    source,
    image_size,
    batch_size,
    *,
    labels=None,
    with_labels=False,
    augment=True,
    shuffle=True,
    seed=0,
    num_channels=3,
    data_format="channels_first",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    num_classes=None,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    drop_remainder=False,
    repeat=False,
    return_info=False,
):
    """Build a batched, prefetched `tf.data.Dataset` of `pixel_values`.

    Args:
        source: A folder of images (sub-folders are classes), a list of image
            files, an array
            `(n, height, width[, channels])` (uint8, or floats in [0, 1]), or a
            `tf.data.Dataset` of single images, `(image, label)` pairs or
            `{"image": ..., "label": ...}` dicts.
        image_size: Output `(height, width)` or an int.
        batch_size: Batch size (the global batch under a distribution strategy).
        labels: Optional labels for an array source.
        with_labels: Yield `(pixel_values, labels)` instead of `pixel_values`.
        augment: MAE augmentation (random resized crop + horizontal flip);
            otherwise `preprocess_images` (bicubic resize).
        shuffle: Shuffle the examples each epoch.
        seed: Makes shuffling and augmentation repeatable.
        num_channels: Channels of the output (images are converted).
        data_format: `"channels_first"` (the model default) or `"channels_last"`.
        mean, std: Normalisation (ImageNet's by default, as `ViTImageProcessor`).
        num_classes: Needed with MixUp/CutMix (labels become one-hot).
        mixup_alpha, cutmix_alpha: Enable MixUp / CutMix (fine-tuning); with
            both, each batch gets one of them, chosen at random.
        drop_remainder: Drop the last, smaller batch.
        repeat: Repeat forever (pair with `steps_per_epoch`; folders with
            undecodable images have no known length otherwise).
        return_info: Also return `{"num_examples", "skipped", "class_names"}`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, received {batch_size}")
    check_data_format(data_format)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    ds, info = _from_source(source, labels, num_channels)
    if info["num_examples"] is not None and drop_remainder and info["num_examples"] < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the dataset ({info['num_examples']} images) "
            "and drop_remainder=True would leave no batch"
        )
    if shuffle:
        buffer = info["num_examples"] or 10_000
        ds = ds.shuffle(min(buffer, 10_000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # One stateless seed per example, new each epoch, the same for the same `seed`.
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, randoms))

    def prepare(example, random_pair):
        image, label = example
        if augment:
            image = random_resized_crop(image, size, tf.cast(random_pair % (2**31 - 1), tf.int32))
            image = normalize(image, mean, std)
        else:
            image = preprocess_images(image, size, mean, std)
        image = tf.ensure_shape(image, size + (num_channels,))
        return image, label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment or mixup_alpha or cutmix_alpha:
        ds = _batch_augment(ds, augment, seed, num_classes, mixup_alpha, cutmix_alpha)
    if data_format == "channels_first":
        ds = ds.map(lambda x, y: (tf.transpose(x, (0, 3, 1, 2)), y))
    if not with_labels:
        ds = ds.map(lambda x, y: x)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return (ds, info) if return_info else ds


def _batch_augment(ds, flip, seed, num_classes, mixup_alpha, cutmix_alpha):
    """Batch-level keras-cv augmentation, sequential so it is repeatable."""
    layers = _keras_cv_layers()
    flip_layer = layers.RandomFlip("horizontal", seed=seed) if flip else None
    mixers = []
    if mixup_alpha or cutmix_alpha:
        if not num_classes:
            raise ValueError("MixUp/CutMix need num_classes (labels become one-hot)")
        if mixup_alpha:
            mixers.append(layers.MixUp(alpha=mixup_alpha, seed=seed + 1))
        if cutmix_alpha:
            mixers.append(layers.CutMix(alpha=cutmix_alpha, seed=seed + 2))

    def mix(mixer, images, labels):
        mixed = mixer({"images": images, "labels": labels}, training=True)
        return mixed["images"], mixed["labels"]

    def apply(index, batch):
        images, labels = batch
        if flip_layer is not None:
            images = flip_layer(images, training=True)
        if mixers:
            labels = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
            if len(mixers) == 1:
                images, labels = mix(mixers[0], images, labels)
            else:
                coin = (
                    tf.random.stateless_uniform((), tf.stack([tf.cast(index, tf.int32), seed]))
                    < 0.5
                )
                images, labels = tf.cond(
                    coin,
                    lambda: mix(mixers[0], images, labels),
                    lambda: mix(mixers[1], images, labels),
                )
        return images, labels

    return ds.enumerate().map(apply, num_parallel_calls=None)
