"""`tf.data` input pipelines: image folders, file lists, arrays or datasets in;
batches of normalised `pixel_values` (and labels) out.

- Every raw image goes through a `ViTMAEImageProcessor` (the model's, or one
  built from `image_size`, `mean` and `std`): its resize for evaluation, its
  rescale and normalisation always.
- MAE augmentation (`augmentation`): a random resized crop (scale (0.2, 1),
  aspect (3/4, 4/3), resized with the processor's method) and a horizontal
  flip; MixUp/CutMix for fine-tuning; any Keras preprocessing layer as
  `augmenter`.
- Folders are scanned once (`image_folders`), and file paths are shuffled
  before anything is decoded.
- Everything is deterministic for a given `seed`, and each pass over the data
  (epoch) is a function of the seed and the epoch's number: shuffled anew
  every epoch, yet the same whenever that epoch runs. `set_epoch` (or the
  `DataEpoch` callback, which `pretrain` and `train_classifier` add) says which
  epoch the next pass is, so a resumed run sees the data of the epochs it resumes.
"""

import os
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from .augmentation import (  # noqa: F401  (re-exported: their first home)
    CROP_RATIO,
    CROP_SCALE,
    batch_augment,
    mixers,
    random_flip,
    random_resized_crop,
)
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


def _from_source(source, labels, num_channels, progress, verify_images=True):
    """`(examples, decode, info)`: the `(images or file paths, labels)` as a
    pair of arrays (a `tf.data.Dataset` of pairs for a dataset source), the
    function that turns one into `(image (H, W, C), label)` (for file paths,
    after shuffling), and `{"num_examples", "skipped", "class_names",
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
        return (paths, np.asarray(labels)), decode, info
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
    return (array, y), None, info


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
    examples, decode, info = _from_source(source, labels, num_channels, progress, verify_images)
    if info["num_examples"] is not None and drop_remainder and info["num_examples"] < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the dataset ({info['num_examples']} images) "
            "and drop_remainder=True would leave no batch"
        )
    mix_layers = mixers(num_classes, mixup_alpha, cutmix_alpha, seed)
    if isinstance(examples, tf.data.Dataset):
        count = None
        if shuffle:  # tf.data's shuffle, whose order restarts on a resume
            examples = examples.shuffle(10_000, seed=seed)
    else:
        count = len(examples[0])
        examples = tuple(tf.constant(column) for column in examples)

    def prepare(index, example, epoch):
        image, label = example
        if augment:
            # The crop's and the flip's seeds: of `seed`, the epoch and the example alone.
            key = tf.random.experimental.stateless_fold_in(_epoch_seed(seed, epoch, 1), index)
            seeds = tf.random.experimental.stateless_split(key, 2)
            image = random_resized_crop(image, size, seeds[0], method=processor.method)
            image = random_flip(image, seeds[1])
        else:
            image = processor.resize(image) if processor.do_resize else tf.cast(image, tf.float32)
        return tf.ensure_shape(image, size + (num_channels,)), label, epoch

    def one_pass(epoch):
        """One pass's `(index, (image or path, label), epoch)`, in an order
        drawn from `seed` and `epoch` alone."""
        if count is None:
            return examples.enumerate().map(lambda index, example: (index, example, epoch))
        # A permutation of the file paths or in-memory images (never a buffer of decoded files).
        positions = tf.range(count, dtype=tf.int64)
        order = positions
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, _epoch_seed(seed, epoch, 0))
        columns = tuple(tf.gather(column, order) for column in examples)
        return tf.data.Dataset.from_tensor_slices((positions, columns, tf.fill([count], epoch)))

    with tf.init_scope():  # the number of the next pass: each takes the next, or set_epoch's
        next_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    passes = tf.data.Dataset.from_tensors(0).map(lambda _: next_epoch.assign_add(1) - 1)
    if repeat:  # one pass after another, batched across their ends
        passes = passes.flat_map(lambda first: tf.data.Dataset.range(first, 2**62))
    out = passes.flat_map(one_pass)  # the work per example runs outside, in parallel
    if decode is not None:
        # Files whose header looks right but whose data is broken are dropped
        # by ignore_errors() instead of stopping the epoch.
        out = out.map(
            lambda index, example, epoch: (index, decode(*example), epoch),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        out = out.ignore_errors(log_warning=True)
    out = out.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    out = out.batch(batch_size, drop_remainder=drop_remainder)
    if mix_layers or augmenter is not None:
        out = batch_augment(out.enumerate(), mix_layers, augmenter, seed, num_classes)
    # The length, which tf.data cannot see through the passes.
    if repeat:
        out = out.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    elif decode is None and count:
        batches = count // batch_size if drop_remainder else -(-count // batch_size)
        out = out.apply(tf.data.experimental.assert_cardinality(batches))
    layout = (0, 3, 1, 2) if data_format == "channels_first" else (0, 1, 2, 3)

    def finish(images, labels, *epochs):  # the pass numbers are dropped here
        pixels = tf.transpose(processor.normalize(images), layout)
        return (pixels, labels) if with_labels else pixels

    out = out.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    _NEXT_EPOCH[out] = next_epoch
    return (out, info) if return_info else out


def _epoch_seed(seed, epoch, stream):
    """The stateless seed (shape (2,), int64) of random `stream` in pass
    `epoch` (a tensor)."""
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64) * 2 + stream])


_NEXT_EPOCH = weakref.WeakKeyDictionary()  # make_dataset's pipelines -> their pass counters


def set_epoch(dataset, epoch):
    """Make the next pass over `dataset` (from `make_dataset`) its pass number
    `epoch` (counting from 0): the shuffle order and augmentation that an
    uninterrupted run would have used then.

    Returns:
        Whether `dataset` came from `make_dataset` (other datasets are left alone).
    """
    next_epoch = _NEXT_EPOCH.get(dataset)
    if next_epoch is None:
        return False
    next_epoch.assign(epoch)
    return True


class DataEpoch(keras.callbacks.Callback):
    """Keep a `make_dataset` pipeline in step with `fit`'s epochs (`set_epoch`
    at every epoch start), so a run resumed at epoch N sees the data an
    uninterrupted run saw in epoch N. `pretrain` and `train_classifier` add it."""

    on_every_worker = True  # train_loop: every worker reads its own pipeline

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        set_epoch(self.dataset, epoch)
