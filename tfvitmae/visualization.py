"""Pictures of MAE at work: masked inputs and reconstructions, as arrays and
as a PNG grid."""

import os

import numpy as np
import tensorflow as tf

from .files import atomic_write


def reconstruct(model, pixel_values, seed=0, noise=None):
    """Run a `TFViTMAEForPreTraining` and return display-ready arrays.

    Returns:
        `(masked, reconstruction, pasted)`, each channels-last float in the
        normalised pixel space: the input with removed patches zeroed, the
        predicted image (see `reconstruct_image`), and the prediction with the
        visible patches replaced by the input's.
    """
    pixel_values = np.asarray(pixel_values, "float32")
    if noise is None:
        noise = (
            np.random.default_rng(seed)
            .random((len(pixel_values), model.config.num_patches))
            .astype("float32")
        )
    out = model(pixel_values, noise=noise)
    height, width = (
        pixel_values.shape[2:] if model.data_format == "channels_first" else pixel_values.shape[1:3]
    )
    visible = model.patchify(pixel_values) * (1.0 - out.mask[..., None])

    def channels_last(x):
        x = np.asarray(x)
        return np.transpose(x, (0, 2, 3, 1)) if model.data_format == "channels_first" else x

    return (
        channels_last(model.unpatchify(visible, (height, width))),
        channels_last(model.reconstruct_image(pixel_values, out.logits)),
        channels_last(model.reconstruct_image(pixel_values, out.logits, out.mask)),
    )


def reconstruction_grid(model, pixel_values, processor=None, seed=0):
    """The original / masked / reconstruction / pasted grid as a uint8
    `(height, width, channels)` image, one row per input image.

    Args:
        model: A `TFViTMAEForPreTraining`.
        pixel_values: A few normalised images in the model's layout.
        processor: The `ViTMAEImageProcessor` whose normalisation is undone
            for display (default: the model's).
        seed: Seed of the masking noise.
    """
    processor = processor or model.image_processor
    masked, reconstruction, pasted = reconstruct(model, pixel_values, seed=seed)
    original = np.asarray(pixel_values, "float32")
    if model.data_format == "channels_first":
        original = np.transpose(original, (0, 2, 3, 1))
    channels = original.shape[-1]
    zoom = max(1, 96 // original.shape[1])  # small images are enlarged (nearest) to stay visible
    rows = []
    for columns in zip(original, masked, reconstruction, pasted):
        tiles = [
            np.asarray(processor.denormalize(c)).repeat(zoom, 0).repeat(zoom, 1) for c in columns
        ]
        pad = np.full((tiles[0].shape[0], 2, channels), 255, "uint8")
        rows.append(np.concatenate(sum(([t, pad] for t in tiles), [])[:-1], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], channels), 255, "uint8"))
    return np.concatenate(rows[:-1], axis=0)


def write_png(path, image):
    """Write a uint8 `(height, width, channels)` image as a PNG (atomically); returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    png = tf.io.encode_png(image).numpy()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(png)

    return atomic_write(path, write)


def write_reconstruction_grid(model, pixel_values, path, processor=None, seed=0):
    """Write `reconstruction_grid` as a PNG at `path`; returns `path`."""
    return write_png(path, reconstruction_grid(model, pixel_values, processor, seed))
