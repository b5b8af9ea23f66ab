"""MAE's augmentation, stateless where it can be: each image's random resized
crop and horizontal flip come from a seed that `data.make_dataset` derives
from its `seed`, the pass (epoch) and the image's place in it (`pass_seed`),
so a pass's augmentation is the same whenever it runs (a resumed run
included). MixUp/CutMix for fine-tuning are Keras core layers, reseeded
before every batch from the seed, the pass and the batch's place in it; any
other Keras preprocessing layer (keras-cv's included) plugs in as an
`augmenter`. Batch augmentation sees pixels in [0, 255], before normalising.
"""

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import keras

from ..utils.backend import tensorflow
from ..utils.types import TensorLike
from .image_processor import antialiased_resize
from .labels import assert_labels

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("MAE's tf.data augmentation")

__all__ = [
    "CROP_RATIO",
    "CROP_SCALE",
    "batch_augment",
    "mixers",
    "pass_seed",
    "random_flip",
    "random_resized_crop",
]

CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop(
    image: TensorLike,
    image_size: Sequence[int],
    seed: TensorLike,
    *,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    method: str = "bicubic",
) -> tf.Tensor:
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
    resized = antialiased_resize(tf.cast(crop, tf.float32), image_size, method)
    return tf.clip_by_value(resized, 0.0, 255.0)


def random_flip(image: TensorLike, seed: TensorLike) -> tf.Tensor:
    """Flip `image` `(height, width, channels)` left-right with probability
    1/2, drawn statelessly from the shape-(2,) int `seed`."""
    coin = tf.random.stateless_uniform((), seed)
    return tf.cond(coin < 0.5, lambda: tf.image.flip_left_right(image), lambda: image)


def mixers(
    num_classes: int | None, mixup_alpha: float, cutmix_alpha: float, *, seed: int
) -> list[keras.layers.Layer]:
    """The MixUp and CutMix layers asked for (none when both alphas are 0)."""
    options = dict(data_format="channels_last", dtype="float32")  # also under mixed precision
    layers = []
    if mixup_alpha or cutmix_alpha:
        if not num_classes:
            raise ValueError("MixUp/CutMix need num_classes (labels become one-hot)")
        if mixup_alpha:
            layers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=seed + 1, **options))
        if cutmix_alpha:
            if not 0 < cutmix_alpha <= 1:
                raise ValueError(f"cutmix_alpha must be in (0, 1], received {cutmix_alpha}")
            # Keras draws Beta(a, a) with a uniform in `factor`: a fixed range is CutMix's alpha.
            factor = (cutmix_alpha, cutmix_alpha)
            layers.append(keras.layers.CutMix(factor=factor, seed=seed + 2, **options))
    return layers


def pass_seed(seed: int, epoch: TensorLike, stream: int) -> tf.Tensor:
    """The stateless seed (shape (2,), int64) of random `stream` in pass
    `epoch` (a scalar tensor) of a pipeline seeded with `seed`: 0 shuffles,
    1 crops and flips, 2 mixes batches."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(key, stream)


def _reseed(layers: Sequence[keras.layers.Layer], key: tf.Tensor) -> tf.Tensor:
    """Set the random generators of `layers` (MixUp, CutMix) to states drawn
    from the stateless seed `key` alone; returns `True` once done."""
    assigned = []
    for i, layer in enumerate(layers):
        state = layer.generator.state
        start = tf.random.stateless_uniform(
            (2,), tf.random.experimental.stateless_fold_in(key, i), None, None, tf.int64
        )
        assigned.append(state.assign(tf.cast(start, state.dtype)))
    with tf.control_dependencies(assigned):
        return tf.constant(True)


def batch_augment(
    ds: tf.data.Dataset,
    mix_layers: Sequence[keras.layers.Layer],
    augmenter: Callable | None,
    *,
    seed: int,
    num_classes: int | None,
) -> tf.data.Dataset:
    """Batch-level augmentation: MixUp or CutMix (`mix_layers`, see `mixers`;
    with both, a coin picks one per batch) and `augmenter`, run sequentially
    so that it is repeatable. `ds` yields `(batch index, (images, labels,
    epochs))`: the batch's place in its pass and each example's pass number.
    Before every batch the layers are reseeded from `seed`, the pass and the
    index alone, so a batch is mixed alike whatever batches ran before it (a
    pass replayed by `set_epoch` included). The output is `(images, labels)`."""

    def mix(layer, images, labels):
        data = {"images": images, "labels": labels}
        out = layer(data, training=True) if isinstance(layer, keras.layers.Layer) else layer(data)
        if isinstance(out, dict):
            return out["images"], out.get("labels", labels)
        return out, labels

    def apply(index, batch):
        images, labels, epochs = batch
        epoch = epochs[0]
        if mix_layers:
            key = tf.random.experimental.stateless_fold_in(pass_seed(seed, epoch, 2), index)
            coin_seed, layer_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            with tf.control_dependencies([_reseed(mix_layers, layer_key)]):
                images = tf.identity(images)
            # An out-of-range label would become an all-zero row: no class at all.
            labels = tf.one_hot(tf.cast(assert_labels(labels, num_classes), tf.int32), num_classes)
            if len(mix_layers) == 1:
                images, labels = mix(mix_layers[0], images, labels)
            else:
                coin = tf.random.stateless_uniform((), coin_seed)
                images, labels = tf.cond(
                    coin < 0.5,
                    lambda: mix(mix_layers[0], images, labels),
                    lambda: mix(mix_layers[1], images, labels),
                )
        if augmenter is not None:
            images, labels = mix(augmenter, images, labels)
            images = tf.cast(images, tf.float32)
        return images, labels

    return ds.map(apply, num_parallel_calls=None)
