"""`tf.data` input pipelines: image folders, file lists, arrays or datasets in;
batches of normalised `pixel_values` (and labels) out.

- Every raw image goes through a `ViTMAEImageProcessor` (the model's, or one
  built from `image_size`, `mean` and `std`): its resize for evaluation, its
  rescale and normalisation always.
- MAE augmentation is a random resized crop (scale (0.2, 1), aspect (3/4, 4/3),
  resized with the processor's method) done here with stateless TF ops, and a
  horizontal flip. The flip, and MixUp/CutMix for fine-tuning, are Keras core
  layers; any other Keras preprocessing layer (keras-cv's included) plugs in
  as `augmenter`. Batch augmentation sees pixels in [0, 255], before normalising.
- Folders are scanned once (`image_folders`), and file paths are shuffled
  before anything is decoded.
- Everything is deterministic for a given `seed`.
"""

import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from .image_folders import (  # noqa: F401  (re-exported)
    find_unreadable,
    list_image_files,
    split_files,
)
from .image_processor import (  # noqa: F401  (re-exported: their first home)
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViTMAEImageProcessor,
    channel_stats,
    decode_image,
    match_channels,
)
from .inputs import check_data_format

CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def _processor(image_size=None, mean=None, std=None, processor=None):
    """`processor`, or MAE's, with `image_size`, `mean` and `std` where given."""
    processor = processor or ViTMAEImageProcessor()
    changes = {}
    if image_size is not None:
        changes["size"] = image_size
    if mean is not None or std is not None:
        changes["image_mean"] = processor.image_mean if mean is None else mean
        changes["image_std"] = processor.image_std if std is None else std
    return processor.copy(**changes) if changes else processor


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 (or float in [0, 255]) images -> float32 `(x / 255 - mean) / std`
    (`ViTMAEImageProcessor.normalize` with these statistics)."""
    return _processor(mean=mean, std=std).normalize(images)


def denormalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Inverse of `normalize` for display: channels-last float images ->
    uint8 in [0, 255] (rounded and clipped)."""
    return _processor(mean=mean, std=std).denormalize(images)


def preprocess_images(images, image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Evaluation preprocessing (`ViTMAEImageProcessor.preprocess`): bicubic
    resize to `image_size` (an int or `(height, width)`), then normalise."""
    return _processor(image_size, mean, std).preprocess(images)


def random_resized_crop(
    image, image_size, seed, scale=CROP_SCALE, ratio=CROP_RATIO, method="bicubic"
):
    """torchvision-style `RandomResizedCrop`, stateless (bicubic, as MAE's recipe).

    Tries 10 boxes with area fraction in `scale` and log-uniform aspect ratio in
    `ratio`; falls back to a centre crop clamped to `ratio`, as torchvision does.

    Args:
        image: `(height, width, channels)`.
        image_size: `(height, width)` of the output.
        seed: Shape-(2,) int seed for the stateless random ops.
        method: The `tf.image.resize` method (antialiased when shrinking).
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
    resized = tf.image.resize(tf.cast(crop, tf.float32), image_size, method=method, antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def _from_source(source, labels, num_channels, progress, verify_images=True):
    """`(dataset, decode, info)`: a dataset of `(image or file path, label)`, the
    function that turns an element into `(image (H, W, C), label)` (for file
    paths, after shuffling), and `{"num_examples", "skipped", "class_names",
    "unreadable"}`."""
    files = (
        isinstance(source, (list, tuple)) and source and isinstance(source[0], (str, os.PathLike))
    )
    if isinstance(source, (str, os.PathLike)) or files:
        if files:  # an explicit list of image files
            paths, folder_labels, class_names, skipped = [os.fspath(p) for p in source], None, [], 0
        else:
            paths, folder_labels, class_names, skipped = list_image_files(source, progress)
        labels = folder_labels if labels is None else list(labels)
        if labels is None:
            labels = [0] * len(paths)
        if len(labels) != len(paths):
            raise ValueError(f"Expected one label per image ({len(paths)}), received {len(labels)}")
        unreadable = find_unreadable(paths, num_channels) if verify_images else []
        if unreadable:
            _report_unreadable(source if not files else "the file list", paths, unreadable)
            bad = set(unreadable)
            kept = [(p, y) for p, y in zip(paths, labels) if p not in bad]
            paths, labels = [p for p, _ in kept], [y for _, y in kept]

        def decode(path, label):
            return decode_image(tf.io.read_file(path), num_channels), label

        info = dict(
            num_examples=len(paths),
            skipped=skipped,
            class_names=class_names,
            unreadable=unreadable,
        )
        return tf.data.Dataset.from_tensor_slices((paths, labels)), decode, info
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
        return ds, None, dict(num_examples=None, skipped=0, class_names=[], unreadable=[])
    array = np.asarray(source)
    if array.ndim == 3:  # (n, h, w) grayscale
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "Image arrays must be (n, height, width[, channels]) channels-last with 1, 3 or 4 "
            f"channels, received shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("The image array is empty")
    if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
        array = array * 255.0  # floats in [0, 1]
    array = match_channels(array, num_channels)
    y = np.zeros(len(array), np.int64) if labels is None else np.asarray(labels)
    if len(y) != len(array):
        raise ValueError(f"Expected one label per image ({len(array)}), received {len(y)}")
    info = dict(num_examples=len(array), skipped=0, class_names=[], unreadable=[])
    return tf.data.Dataset.from_tensor_slices((array, y)), None, info


def _report_unreadable(where, paths, unreadable):
    shown = ", ".join(unreadable[:10]) + (
        f" and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
    )
    if len(unreadable) == len(paths):
        raise ValueError(
            f"None of the {len(paths)} images in {where} could be decoded "
            f"(broken or truncated files): {shown}"
        )
    warnings.warn(
        f"Skipping {len(unreadable)} of the {len(paths)} images in {where} that could not be "
        f"decoded (broken or truncated files): {shown}"
    )


def make_dataset(
    source,
    image_size=None,
    batch_size=32,
    *,
    processor=None,
    labels=None,
    with_labels=False,
    augment=True,
    augmenter=None,
    shuffle=True,
    seed=0,
    num_channels=3,
    data_format="channels_first",
    mean=None,
    std=None,
    num_classes=None,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    drop_remainder=False,
    repeat=False,
    return_info=False,
    progress=None,
    verify_images=True,
):
    """Build a batched, prefetched `tf.data.Dataset` of `pixel_values`.

    Args:
        source: A folder of images (sub-folders are classes), a list of image
            files, an array `(n, height, width[, channels])` (uint8, or floats
            in [0, 1]), or a `tf.data.Dataset` of single images,
            `(image, label)` pairs or `{"image": ..., "label": ...}` dicts.
        image_size: Output `(height, width)` or an int (default: the
            processor's size).
        batch_size: Batch size (the global batch under a distribution strategy).
        processor: The `ViTMAEImageProcessor` (usually `model.image_processor`)
            that resizes and normalises; default MAE's.
        labels: Optional labels for an array or file-list source.
        with_labels: Yield `(pixel_values, labels)` instead of `pixel_values`.
        augment: MAE augmentation (random resized crop + horizontal flip);
            otherwise the processor's resize.
        augmenter: Any Keras preprocessing layer (keras-cv's too), or a
            function, applied to every batch as
            `augmenter({"images": images, "labels": labels})` (layers with
            `training=True`) on channels-last pixels in [0, 255], after the
            flip and MixUp/CutMix; it returns such a dict, or the images.
        shuffle: Shuffle the examples (file paths, before decoding) each epoch.
        seed: Makes shuffling and augmentation repeatable.
        num_channels: Channels of the output (images are converted).
        data_format: `"channels_first"` (the model default) or `"channels_last"`.
        mean, std: Override the processor's normalisation.
        num_classes: Needed with MixUp/CutMix (labels become one-hot).
        mixup_alpha, cutmix_alpha: Enable MixUp / CutMix (fine-tuning): each
            image's mixing weight is drawn from Beta(alpha, alpha); CutMix's
            alpha is at most 1 (MAE: 0.8 and 1.0). With both, each batch gets
            one of them, chosen at random.
        drop_remainder: Drop the last, smaller batch.
        repeat: Repeat forever (pair with `steps_per_epoch`; folders with
            undecodable images have no known length otherwise).
        return_info: Also return `{"num_examples", "skipped", "class_names",
            "unreadable"}`: the images used, the other files skipped, the classes,
            and the image files that did not decode.
        progress: A stream (e.g. `sys.stderr`) for the folder scan's count.
        verify_images: Decode every file once before training (in parallel)
            so that broken ones are named in a warning and not counted; a
            folder with no readable image is refused. Without it, broken files
            are dropped silently while training.
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}")
    check_data_format(data_format)
    processor = _processor(image_size, mean, std, processor).with_channels(num_channels)
    size = processor.size
    ds, decode, info = _from_source(source, labels, num_channels, progress, verify_images)
    if info["num_examples"] is not None and drop_remainder and info["num_examples"] < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the dataset ({info['num_examples']} images) "
            "and drop_remainder=True would leave no batch"
        )
    if shuffle:  # file paths, or in-memory images: never a buffer of decoded files
        buffer = info["num_examples"] or 10_000
        ds = ds.shuffle(min(buffer, 100_000 if decode else 10_000), seed=seed)
    if repeat:
        ds = ds.repeat()
    if decode is not None:
        # Files whose header looks right but whose data is broken are dropped
        # by ignore_errors() instead of stopping the epoch.
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors(log_warning=True)
    # One stateless seed per example, new each epoch, the same for the same `seed`.
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, randoms))

    def prepare(example, random_pair):
        image, label = example
        if augment:
            pair = tf.cast(random_pair % (2**31 - 1), tf.int32)
            image = random_resized_crop(image, size, pair, method=processor.method)
        else:
            image = processor.resize(image) if processor.do_resize else tf.cast(image, tf.float32)
        return tf.ensure_shape(image, size + (num_channels,)), label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment or mixup_alpha or cutmix_alpha or augmenter is not None:
        ds = _batch_augment(ds, augment, augmenter, seed, num_classes, mixup_alpha, cutmix_alpha)
    layout = (0, 3, 1, 2) if data_format == "channels_first" else (0, 1, 2, 3)

    def finish(images, labels):
        pixels = tf.transpose(processor.normalize(images), layout)
        return (pixels, labels) if with_labels else pixels

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return (ds, info) if return_info else ds


def _batch_augment(ds, flip, augmenter, seed, num_classes, mixup_alpha, cutmix_alpha):
    """Batch-level augmentation with Keras core layers (and `augmenter`), run
    sequentially so that it is repeatable; pixels are in [0, 255]."""
    options = dict(data_format="channels_last", dtype="float32")  # also under mixed precision
    flip_layer = keras.layers.RandomFlip("horizontal", seed=seed, **options) if flip else None
    mixers = []
    if mixup_alpha or cutmix_alpha:
        if not num_classes:
            raise ValueError("MixUp/CutMix need num_classes (labels become one-hot)")
        if mixup_alpha:
            mixers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=seed + 1, **options))
        if cutmix_alpha:
            if not 0 < cutmix_alpha <= 1:
                raise ValueError(f"cutmix_alpha must be in (0, 1], received {cutmix_alpha}")
            # Keras draws Beta(a, a) with a uniform in `factor`: a fixed range is CutMix's alpha.
            factor = (cutmix_alpha, cutmix_alpha)
            mixers.append(keras.layers.CutMix(factor=factor, seed=seed + 2, **options))

    def mix(layer, images, labels):
        data = {"images": images, "labels": labels}
        out = layer(data, training=True) if isinstance(layer, keras.layers.Layer) else layer(data)
        if isinstance(out, dict):
            return out["images"], out.get("labels", labels)
        return out, labels

    def apply(index, batch):
        images, labels = batch
        if flip_layer is not None:
            images = flip_layer(images, training=True)
        if mixers:
            labels = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
            if len(mixers) == 1:
                images, labels = mix(mixers[0], images, labels)
            else:
                coin = tf.random.stateless_uniform((), tf.stack([tf.cast(index, tf.int32), seed]))
                images, labels = tf.cond(
                    coin < 0.5,
                    lambda: mix(mixers[0], images, labels),
                    lambda: mix(mixers[1], images, labels),
                )
        if augmenter is not None:
            images, labels = mix(augmenter, images, labels)
            images = tf.cast(images, tf.float32)
        return images, labels

    return ds.enumerate().map(apply, num_parallel_calls=None)
