"""`tf.data` input pipelines: image folders, file lists, arrays or datasets in;
batches of normalised `pixel_values` (and labels) out.

- Every raw image goes through a `ViTMAEImageProcessor` (the model's, or one
  built from `image_size`, `mean` and `std`): its resize for evaluation, its
  rescale and normalisation always.
- MAE augmentation (`augmentation`): a random resized crop (scale (0.2, 1),
  aspect (3/4, 4/3), resized with the processor's method) and a horizontal
  flip; MixUp/CutMix for fine-tuning; any Keras preprocessing layer as
  `augmenter`.
- Folders are scanned once (`folders.py`), and file paths are shuffled
  before anything is decoded.
- An epoch is one pass over the data: that pass's batches, the last one
  short (or dropped with `drop_remainder`), never filled from the next pass
  (`steps_per_pass`). Everything is deterministic for a given `seed`, and
  pass k (its order, crops, flips, MixUp and CutMix) is a function of the
  seed, k and the place in the pass alone: shuffled anew every pass, yet the
  same whenever that pass runs. `set_epoch` (or the `training.DataEpoch`
  callback, which `pretrain` and `train_classifier` add) says which pass the
  next one is, so a resumed run sees the data of the epochs it resumes.
"""

import dataclasses
import functools
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import keras
import numpy as np

from ..utils.backend import tensorflow
from ..utils.checks import check_batch_size, check_data_format
from ..utils.types import TensorLike
from .augmentation import batch_augment, mixers, pass_seed, random_flip, random_resized_crop
from .decoding import decode_image, match_channels
from .folders import check_labelled, find_unreadable, list_image_files
from .image_processor import IMAGENET_MEAN, IMAGENET_STD, ViTMAEImageProcessor
from .labels import assert_labels, check_labels

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("The tf.data pipeline (make_dataset)")

__all__ = [
    "denormalize",
    "make_dataset",
    "normalize",
    "process_part",
    "set_epoch",
    "steps_per_pass",
]


def _processor(
    processor: ViTMAEImageProcessor | None = None,
    *,
    image_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ViTMAEImageProcessor:
    """`processor`, or MAE's, with `image_size`, `mean` and `std` where given."""
    processor = processor or ViTMAEImageProcessor()
    changes: dict[str, object] = {}
    if image_size is not None:
        changes["size"] = image_size
    if mean is not None or std is not None:
        changes["image_mean"] = processor.image_mean if mean is None else mean
        changes["image_std"] = processor.image_std if std is None else std
    return processor.copy(**changes) if changes else processor


def normalize(
    images: TensorLike, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> tf.Tensor:
    """uint8 (or float in [0, 255]) images -> float32 `(x / 255 - mean) / std`
    (`ViTMAEImageProcessor.normalize` with these statistics)."""
    return _processor(mean=mean, std=std).normalize(images)


def denormalize(
    images: TensorLike, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> tf.Tensor:
    """Inverse of `normalize` for display: channels-last float images ->
    uint8 in [0, 255] (rounded and clipped)."""
    return _processor(mean=mean, std=std).denormalize(images)


# ------------------------------------------------------------ the sources
# Each gives `(examples, decode, info)`: the `(images or file paths, labels)`
# as a pair of arrays (a `tf.data.Dataset` of pairs for a dataset source),
# the function that turns a pair into `(image (H, W, C), label)` (for file
# paths, after shuffling; `None` otherwise), and `{"num_examples", "skipped",
# "class_names", "unreadable"}`.


def _from_source(source, labels, num_channels: int, *, progress, verify_images: bool = True):
    """`(examples, decode, info)` (see above) of any source `make_dataset` takes."""
    if isinstance(source, (str, os.PathLike)) or _is_file_list(source):
        return _from_files(
            source, labels, num_channels, progress=progress, verify_images=verify_images
        )
    if isinstance(source, tf.data.Dataset):
        return _from_dataset(source)
    return _from_arrays(source, labels, num_channels)


def _is_file_list(source) -> bool:
    """Whether `source` is a non-empty list or tuple of file paths."""
    return bool(
        isinstance(source, (list, tuple)) and source and isinstance(source[0], (str, os.PathLike))
    )


def _from_files(source, labels, num_channels: int, *, progress, verify_images: bool):
    """A folder (scanned once; labels from its sub-folders) or a list of image
    files, less the files that do not decode when `verify_images`."""
    if isinstance(source, (str, os.PathLike)):
        paths, folder_labels, class_names, skipped = list_image_files(source, progress)
        where = source
    else:  # an explicit list of image files
        paths, folder_labels, class_names, skipped = [os.fspath(p) for p in source], None, [], 0
        where = "the file list"
    labels = folder_labels if labels is None else list(labels)
    if labels is None:
        labels = [0] * len(paths)
    if len(labels) != len(paths):
        raise ValueError(f"Expected one label per image ({len(paths)}), received {len(labels)}")
    unreadable = find_unreadable(paths, num_channels) if verify_images else []
    if unreadable:
        _report_unreadable(where, paths, unreadable)
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


def _report_unreadable(where, paths: list[str], unreadable: list[str]) -> None:
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


def _from_dataset(source: tf.data.Dataset):
    """A dataset of single images, `(image, label)` pairs or dicts, as
    `(image, label)` pairs (of unknown number)."""
    spec = source.element_spec
    if isinstance(spec, dict) and not ({"image", "pixel_values"} & set(spec)):
        raise ValueError(f"A dataset of dicts needs an 'image' key, received keys {sorted(spec)}")
    ds = source.map(_image_and_label)
    image_spec = ds.element_spec[0]
    if image_spec.shape.rank != 3:
        raise ValueError(
            "Dataset images must be single (height, width, channels) images, received shape "
            f"{image_spec.shape}"
        )
    return ds, None, dict(num_examples=None, skipped=0, class_names=[], unreadable=[])


def _image_and_label(*components):
    """`(image, label)` of a dataset element (label 0 where it has none).
    `map` passes a tuple element's components as separate arguments."""
    element = components[0] if len(components) == 1 else components
    if isinstance(element, dict):
        image = element.get("image", element.get("pixel_values"))
        label = element.get("label", element.get("labels", 0))
        return image, label
    if isinstance(element, tuple):
        return element[0], element[1] if len(element) > 1 else 0
    return element, 0


def _from_arrays(source, labels, num_channels: int):
    """An array `(n, height, width[, channels])` (uint8, or floats in [0, 1]),
    as pixels in [0, 255] with `num_channels` channels."""
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
    array = match_channels(_pixels_0_255(array), num_channels)
    y = np.zeros(len(array), np.int64) if labels is None else np.asarray(labels)
    if len(y) != len(array):
        raise ValueError(f"Expected one label per image ({len(array)}), received {len(y)}")
    info = dict(num_examples=len(array), skipped=0, class_names=[], unreadable=[])
    return (array, y), None, info


def _pixels_0_255(array: np.ndarray) -> np.ndarray:
    """uint8 pixels as they are, float ones in [0, 1] scaled by 255; nothing
    else is guessed at (uint16 is not 0-255, and a float array with values
    past 1 may be either range)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind != "f":
        raise ValueError(
            f"Image arrays must be uint8 (0-255) or floats in [0, 1], received {array.dtype}; "
            "convert them first (16-bit images: (x // 257).astype('uint8'))"
        )
    if not np.isfinite(array).all():
        raise ValueError("The image array holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise ValueError(
            "Float image arrays must lie in [0, 1] (they are scaled by 255), received values "
            f"in [{low:g}, {high:g}]; pass 0-255 pixels as uint8"
        )
    return array * 255.0


# ------------------------------------------------------------ the pipeline
@dataclasses.dataclass(frozen=True)
class _Options:
    """`make_dataset`'s settings that its steps share."""

    processor: ViTMAEImageProcessor  # with statistics for `num_channels`
    num_channels: int
    seed: int
    shuffle: bool
    augment: bool
    batch_size: int
    drop_remainder: bool
    repeat: bool
    mix_layers: list[keras.layers.Layer]  # MixUp/CutMix (see `mixers`)
    augmenter: Callable | None
    num_classes: int | None
    data_format: str
    with_labels: bool
    process_index: int = 0
    process_count: int = 1

    @property
    def local_batch_size(self) -> int:
        """This process's part of each global batch."""
        return self.batch_size // self.process_count


def make_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike] | np.ndarray | tf.data.Dataset,
    image_size: int | Sequence[int] | None = None,
    batch_size: int = 32,
    *,
    processor: ViTMAEImageProcessor | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    with_labels: bool = False,
    augment: bool = True,
    augmenter: Callable | None = None,
    shuffle: bool = True,
    seed: int = 0,
    num_channels: int = 3,
    data_format: str = "channels_first",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    drop_remainder: bool = False,
    repeat: bool = False,
    return_info: bool = False,
    progress: TextIO | None = None,
    verify_images: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset | tuple[tf.data.Dataset, dict[str, Any]]:
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
        labels: Optional labels for an array or file-list source: class
            indices, in `[0, num_classes)` when `num_classes` is given
            (a dataset's labels are checked so as they are read).
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
        drop_remainder: Drop each pass's last, smaller batch.
        repeat: Repeat forever, pass after pass, each pass in its own batches
            (one epoch: `steps_per_epoch = steps_per_pass(dataset)`, which
            `pretrain` and `train_classifier` default to; tf.data cannot
            see a file source's length).
        return_info: Also return `{"num_examples", "skipped", "class_names",
            "unreadable"}`: the images used, the other files skipped, the classes,
            and the image files that did not decode.
        progress: A stream (e.g. `sys.stderr`) for the folder scan's count.
        verify_images: Decode every file once before training (in parallel)
            so that broken ones are named in a warning and not counted; a
            folder with no readable image is refused. Without it, broken files
            are dropped silently while training.
        process_index, process_count: Training in `process_count` processes
            (`keras.distribution.initialize`; `jax.process_index()` and
            `jax.process_count()`), this one yields its part of every global
            batch of `batch_size`: rows `process_index * batch_size /
            process_count` on, of the batch one process would yield. It reads
            and decodes only those images; the crops and flips are those of
            one process. Needs files or arrays, `drop_remainder`, for files
            `verify_images` (every process checks every file once, so that
            all drop the same ones), and a `batch_size` that `process_count`
            divides. MixUp, CutMix and
            `augmenter` mix within the process's part.
    """
    check_batch_size(batch_size)
    check_data_format(data_format)
    processor = _processor(processor, image_size=image_size, mean=mean, std=std)
    processor = processor.with_channels(num_channels)
    _check_process_part(
        process_index, process_count, batch_size, source, drop_remainder, verify_images
    )
    examples, decode, info = _from_source(
        source, labels, num_channels, progress=progress, verify_images=verify_images
    )
    if with_labels and labels is None and isinstance(source, (str, os.PathLike)):
        check_labelled(examples[0], examples[1], source)  # no image without a class
    if isinstance(examples, tf.data.Dataset):
        if with_labels or num_classes:
            examples = examples.map(lambda image, y: (image, assert_labels(y, num_classes)))
    elif labels is not None:
        examples = (examples[0], check_labels(examples[1], num_classes))
    if info["num_examples"] is not None and drop_remainder and info["num_examples"] < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the dataset ({info['num_examples']} images) "
            "and drop_remainder=True would leave no batch"
        )
    options = _Options(
        processor=processor,
        num_channels=num_channels,
        seed=seed,
        shuffle=shuffle,
        augment=augment,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
        repeat=repeat,
        mix_layers=mixers(num_classes, mixup_alpha, cutmix_alpha, seed=seed),
        augmenter=augmenter,
        num_classes=num_classes,
        data_format=data_format,
        with_labels=with_labels,
        process_index=process_index,
        process_count=process_count,
    )
    if repeat and not (verify_images and decode is not None):  # verified files decode
        _check_yields(examples, decode)
    examples, count = _as_tensors(examples, options)
    passes, next_epoch = _pass_numbers(repeat)
    # Each pass is batched on its own: its last batch is short (or dropped), never
    # filled from the next pass, so a pass's batches are the same whatever came before.
    out = passes.flat_map(
        lambda epoch: _pass_batches(epoch, examples, count, decode=decode, options=options)
    )
    out = _finish(
        _with_length(out, options, exact_count=None if decode is not None else count), options
    )
    _NEXT_EPOCH[out] = next_epoch
    # The batches in one pass, where the number of images is known (verified files too).
    if info["num_examples"] is not None and (decode is None or verify_images):
        _STEPS_PER_PASS[out] = _batches(info["num_examples"], options)
    if process_count > 1:
        _PROCESS_PART[out] = (process_index, process_count)
    return (out, info) if return_info else out


def _check_process_part(
    index, count, batch_size, source, drop_remainder: bool, verify_images: bool
) -> None:
    """Refuse a process part that is not one, or that the processes could not
    read in step (see `make_dataset`'s `process_index`)."""
    for name, value in (("process_index", index), ("process_count", count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, received {value!r}")
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"process_index must lie in [0, process_count) and process_count be at least 1, "
            f"received process_index={index}, process_count={count}"
        )
    if count == 1:
        return
    if batch_size % count:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) must be a multiple of process_count "
            f"{count}: every process reads an equal part"
        )
    if isinstance(source, tf.data.Dataset):
        raise ValueError(
            "make_dataset reads a process's part of files or arrays; of a tf.data.Dataset "
            "source its length is unknown: shard the dataset yourself "
            "(dataset.shard(process_count, process_index)), or pass files or arrays"
        )
    if not drop_remainder:
        raise ValueError(
            f"process_count {count} needs drop_remainder=True: a pass's last, short batch "
            "cannot be split evenly between the processes"
        )
    if not verify_images and (isinstance(source, (str, os.PathLike)) or _is_file_list(source)):
        raise ValueError(
            f"process_count {count} needs verify_images=True: a file dropped while training "
            "would shift one process's batches against the others'"
        )


def _check_yields(examples, decode) -> None:
    """Refuse data of which a pass yields no example (an empty or fully
    filtered dataset, or files none of which decodes): repeated, it would be
    read pass after pass forever without giving a batch. Reads the first
    example that decodes, so it costs one example (a pass where none does)."""
    if isinstance(examples, tf.data.Dataset):
        found = examples.take(1)
    elif decode is None:  # in-memory images: they are all there
        return
    else:
        found = tf.data.Dataset.from_tensor_slices(examples).map(decode).ignore_errors().take(1)
    if not any(True for _ in found):
        what = (
            "the dataset is empty (or filtered to nothing)"
            if isinstance(examples, tf.data.Dataset)
            else f"none of its {len(examples[0])} image files decodes"
        )
        raise ValueError(
            f"make_dataset(repeat=True) needs data that yields images, but {what}; "
            "repeating it would never give a batch"
        )


def _as_tensors(examples, options: _Options):
    """`(examples, count)`: array or file-list pairs as a pair of tensors and
    their number; a dataset source as it is (with tf.data's shuffle, whose
    order restarts on a resume) and `None`."""
    if isinstance(examples, tf.data.Dataset):
        if options.shuffle:
            examples = examples.shuffle(10_000, seed=options.seed)
        return examples, None
    return tuple(tf.constant(column) for column in examples), len(examples[0])


def _pass_numbers(repeat: bool):
    """`(passes, next_epoch)`: a dataset of the numbers of the passes to run
    (the next one; from it on, forever, with `repeat`) and the variable that
    holds the next one's number (each pass takes it, or `set_epoch` sets it)."""
    with tf.init_scope():
        next_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    passes = tf.data.Dataset.from_tensors(0).map(lambda _: next_epoch.assign_add(1) - 1)
    if repeat:  # one pass after another, batched across their ends
        passes = passes.flat_map(lambda first: tf.data.Dataset.range(first, 2**62))
    return passes, next_epoch


def _pass_batches(epoch, examples, count: int | None, *, decode, options: _Options):
    """Pass `epoch`'s batches `(images, labels, epochs)`: its examples in an
    order of the seed and `epoch` alone, prepared, batched and mixed (see
    `batch_augment`), each batch a function of `seed`, `epoch` and its place."""
    out = _one_pass(epoch, examples, count, options=options)
    out = _prepare_examples(out, decode, options)
    out = out.batch(options.local_batch_size, drop_remainder=options.drop_remainder)
    if options.mix_layers or options.augmenter is not None:
        out = batch_augment(
            out.enumerate(),  # the batch's place in this pass
            options.mix_layers,
            options.augmenter,
            seed=options.seed,
            num_classes=options.num_classes,
        )
    return out


def _one_pass(epoch, examples, count: int | None, *, options: _Options) -> tf.data.Dataset:
    """Pass `epoch`'s `(index, (image or path, label), epoch)`: `count`
    examples in an order drawn from the seed and `epoch` alone (a dataset
    source, `count` None, in its own order)."""
    if count is None:
        return examples.enumerate().map(lambda index, example: (index, example, epoch))
    # A permutation of the file paths or in-memory images (never a buffer of decoded files).
    positions = tf.range(count, dtype=tf.int64)
    order = positions
    if options.shuffle:
        order = tf.random.experimental.stateless_shuffle(order, pass_seed(options.seed, epoch, 0))
    if options.process_count > 1:  # this process's rows of every whole global batch
        positions = tf.constant(_process_positions(count, options))
        order = tf.gather(order, positions)
    columns = tuple(tf.gather(column, order) for column in examples)
    return tf.data.Dataset.from_tensor_slices(
        (positions, columns, tf.fill(tf.shape(positions), epoch))
    )


def _process_positions(count: int, options: _Options) -> np.ndarray:
    """The places in a pass of `count` examples that this process reads: rows
    `[index * part, (index + 1) * part)` of each whole global batch."""
    size, part = options.batch_size, options.local_batch_size
    places = np.arange(count // size * size, dtype=np.int64)
    return places[places % size // part == options.process_index]


def _prepare_examples(out: tf.data.Dataset, decode, options: _Options) -> tf.data.Dataset:
    """Every example decoded (with `decode`, for file paths) and prepared
    (see `_prepare_example`), in parallel and in order."""
    if decode is not None:
        # Files whose header looks right but whose data is broken are dropped
        # by ignore_errors() instead of stopping the epoch.
        out = out.map(
            lambda index, example, epoch: (index, decode(*example), epoch),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        out = out.ignore_errors(log_warning=True)
    prepare = functools.partial(_prepare_example, options=options)
    return out.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _prepare_example(index, example, epoch, *, options: _Options):
    """`(image, label, epoch)`, the image float32 at the output size: randomly
    cropped and flipped with `augment`, otherwise the processor's resize."""
    image, label = example
    processor = options.processor
    if options.augment:
        # The crop's and the flip's seeds: of `seed`, the epoch and the example alone.
        key = tf.random.experimental.stateless_fold_in(pass_seed(options.seed, epoch, 1), index)
        seeds = tf.random.experimental.stateless_split(key, 2)
        image = random_resized_crop(image, processor.size, seeds[0], method=processor.method)
        image = random_flip(image, seeds[1])
    else:
        image = processor.resize(image) if processor.do_resize else tf.cast(image, tf.float32)
    return tf.ensure_shape(image, processor.size + (options.num_channels,)), label, epoch


def _batches(num_examples: int, options: _Options) -> int:
    """The batches in one pass over `num_examples` examples."""
    size = options.batch_size
    return num_examples // size if options.drop_remainder else -(-num_examples // size)


def _with_length(out: tf.data.Dataset, options: _Options, *, exact_count: int | None):
    """`out` with the length that tf.data cannot see through the passes:
    infinite with `repeat`, else that of `exact_count` examples where it is known."""
    if options.repeat:
        return out.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    if exact_count:
        return out.apply(tf.data.experimental.assert_cardinality(_batches(exact_count, options)))
    return out


def _finish(out: tf.data.Dataset, options: _Options) -> tf.data.Dataset:
    """Normalised `pixel_values` in `data_format` (and the labels, with
    `with_labels`), prefetched; the pass numbers are dropped."""
    layout = (0, 3, 1, 2) if options.data_format == "channels_first" else (0, 1, 2, 3)

    def finish(images, labels, *epochs):
        pixels = tf.transpose(options.processor.normalize(images), layout)
        return (pixels, labels) if options.with_labels else pixels

    return out.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# make_dataset's pipelines -> their pass counters, and the batches in one pass
_NEXT_EPOCH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_STEPS_PER_PASS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROCESS_PART: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_epoch(dataset: tf.data.Dataset, epoch: int) -> bool:
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


def steps_per_pass(dataset: tf.data.Dataset) -> int | None:
    """The batches in one pass over `dataset` (from `make_dataset`): one
    epoch's `steps_per_epoch`. `None` where the number of images is unknown
    (a `tf.data.Dataset` source, or files with `verify_images=False`) or
    `dataset` is not `make_dataset`'s."""
    return _STEPS_PER_PASS.get(dataset)


def process_part(dataset: tf.data.Dataset) -> tuple[int, int] | None:
    """`(process_index, process_count)` of a `make_dataset` pipeline that
    reads one process's part of every batch; `None` for other data."""
    return _PROCESS_PART.get(dataset)
