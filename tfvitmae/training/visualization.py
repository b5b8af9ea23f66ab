"""Pictures of MAE at work: masked inputs and reconstructions, as arrays and
as a PNG grid."""

import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..utils.backend import tensorflow
from ..utils.files import atomic_write
from ..utils.types import PathLike, TensorLike

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("Reconstruction grids")

if TYPE_CHECKING:
    from ..data.image_processor import ViTMAEImageProcessor
    from ..models.vit_mae import TFViTMAEForPreTraining

__all__ = [
    "COLUMN_TITLES",
    "reconstruct",
    "reconstruction_grid",
    "IMAGE_SUFFIXES",
    "check_image_path",
    "write_image",
    "write_reconstruction_grid",
]


def reconstruct(
    model: "TFViTMAEForPreTraining",
    pixel_values: TensorLike,
    seed: int = 0,
    noise: TensorLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a `TFViTMAEForPreTraining` and return display-ready arrays.

    The mask comes from `model.reconstruct`: `seed` gives the masks that
    `predict_images(..., seed=seed)` and the SavedModel's
    `reconstruct_with_seed` give for the same images (`noise`, if given, wins).

    Returns:
        `(masked, reconstruction, pasted)`, each channels-last float in the
        normalised pixel space: the input with removed patches zeroed, the
        predicted image (see `reconstruct_image`), and the prediction with the
        visible patches replaced by the input's.
    """
    pixel_values = np.asarray(pixel_values, "float32")
    out = model.reconstruct(pixel_values, noise=noise, seed=None if noise is not None else seed)
    height, width = model.to_channels_last(out["predicted_image"]).shape[1:3]
    visible = model.patchify(pixel_values) * (1.0 - out["mask"][..., None])

    def channels_last(x):
        return np.asarray(model.to_channels_last(x))

    return (
        channels_last(model.unpatchify(visible, (height, width))),
        channels_last(out["predicted_image"]),
        channels_last(out["reconstructed_image"]),
    )


COLUMN_TITLES = ("original", "masked", "reconstruction", "reconstruction + visible")


def reconstruction_grid(
    model: "TFViTMAEForPreTraining",
    pixel_values: TensorLike,
    *,
    processor: "ViTMAEImageProcessor | None" = None,
    seed: int = 0,
    titles: bool = True,
) -> np.ndarray:
    """The original / masked / reconstruction / pasted grid as a uint8
    `(height, width, channels)` image, one row per input image.

    Args:
        model: A `TFViTMAEForPreTraining`.
        pixel_values: A few normalised images in the model's layout.
        processor: The `ViTMAEImageProcessor` whose normalisation is undone
            for display (default: the model's).
        seed: Seed of the masking noise.
        titles: Head the columns with `COLUMN_TITLES` (drawn with Pillow;
            without Pillow installed the grid has no header, and a warning says so).
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
    grid = np.concatenate(rows[:-1], axis=0)
    if titles:
        header = _title_row(COLUMN_TITLES, tile_width=tiles[0].shape[1], gap=2)
        if header is not None:
            header = np.repeat(header[..., None], channels, axis=-1)
            grid = np.concatenate([header[:, : grid.shape[1]], grid], axis=0)
    return grid


def _title_row(titles, tile_width, gap):
    """A white uint8 `(height, width)` strip with each title centred over its
    column (words wrapped to the column's width); `None` without Pillow."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        warnings.warn("Install Pillow to get column titles on reconstruction grids", stacklevel=3)
        return None
    font = ImageFont.load_default()
    lines_per_title = []
    for title in titles:
        lines = [""]
        for word in title.split():
            candidate = f"{lines[-1]} {word}".strip()
            if lines[-1] and font.getlength(candidate) > tile_width - 2:
                lines.append(word)
            else:
                lines[-1] = candidate
        lines_per_title.append(lines)
    line_height = font.getbbox("Ag")[3] + 2
    height = int(line_height * max(map(len, lines_per_title)) + 4)
    image = Image.new("L", (len(titles) * (tile_width + gap), height), 255)
    draw = ImageDraw.Draw(image)
    for column, lines in enumerate(lines_per_title):
        for row, line in enumerate(lines):
            left = column * (tile_width + gap) + (tile_width - font.getlength(line)) / 2
            draw.text((left, 2 + row * line_height), line, fill=0, font=font)
    return np.asarray(image, "uint8")


# The image formats `write_image` writes, by file name suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_image_path(path: PathLike) -> str:
    """`path` as a string if its suffix names a format `write_image` writes."""
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"An image's file name must end in {', '.join(IMAGE_SUFFIXES)} (the format is "
            f"chosen by it), received {path!r}"
        )
    return path


def write_image(path: PathLike, image: TensorLike) -> str:
    """Write a uint8 `(height, width, channels)` image atomically, as PNG or
    JPEG (quality 95) by the file name's suffix; returns `path`."""
    path = check_image_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.lower().endswith(".png"):
        encoded = tf.io.encode_png(image).numpy()
    else:
        encoded = tf.io.encode_jpeg(image, quality=95).numpy()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(encoded)

    return atomic_write(path, write)


def write_reconstruction_grid(
    model: "TFViTMAEForPreTraining",
    pixel_values: TensorLike,
    path: PathLike,
    *,
    processor: "ViTMAEImageProcessor | None" = None,
    seed: int = 0,
    titles: bool = True,
) -> str:
    """Write `reconstruction_grid` as a PNG at `path`; returns `path`."""
    grid = reconstruction_grid(model, pixel_values, processor=processor, seed=seed, titles=titles)
    return write_image(path, grid)
