"""Input checks shared by the models, the data pipeline and the export.

Every check raises `ValueError` saying what was expected and what was
received. They run at trace time too, so a `tf.function` or SavedModel
signature fails with the same message as an eager call.
"""

from typing import TYPE_CHECKING

import keras
from keras import ops

from ..utils.types import TensorLike

if TYPE_CHECKING:
    from .config import ViTMAEConfig

__all__ = [
    "all_finite",
    "check_noise",
    "check_pixel_values",
    "head_masks",
    "is_eager",
    "unpack_inputs",
]


def is_eager(x: TensorLike) -> bool:
    """Whether `x` holds values now (not a symbol of a graph being traced):
    the finite-value checks run only then."""
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    return True


def all_finite(x: TensorLike) -> bool:
    """Whether every value of the eager tensor `x` is finite."""
    return bool(ops.all(ops.isfinite(ops.cast(x, "float32"))))


def unpack_inputs(
    pixel_values: TensorLike | dict[str, TensorLike], noise: TensorLike | None = None
) -> tuple[TensorLike, TensorLike | None]:
    """`(pixel_values, noise)` from a tensor or a `{"pixel_values", "noise"}`
    dict, the form `fit` feeds dict batches in."""
    if isinstance(pixel_values, dict):
        unknown = set(pixel_values) - {"pixel_values", "noise"}
        if "pixel_values" not in pixel_values or unknown:
            raise ValueError(
                "A dict input must have the key 'pixel_values' (and optionally "
                f"'noise'), received keys {sorted(pixel_values)}"
            )
        if noise is None:
            noise = pixel_values.get("noise")
        pixel_values = pixel_values["pixel_values"]
    return pixel_values, noise


def check_pixel_values(
    pixel_values: TensorLike,
    config: "ViTMAEConfig",
    *,
    data_format: str = "channels_first",
    interpolate_pos_encoding: bool = False,
) -> TensorLike:
    """Validate model input images and return them channels-last.

    Args:
        pixel_values: Float images, `(batch, num_channels, height, width)` for
            `"channels_first"` or `(batch, height, width, num_channels)`.
        config: The model's `ViTMAEConfig`.
        data_format: The layout of `pixel_values`.
        interpolate_pos_encoding: Accept any positive multiple of the patch
            size, not only `config.image_size`.

    Returns:
        The images as a channels-last tensor `(batch, height, width, channels)`.
    """
    if pixel_values is None:
        raise ValueError("pixel_values is required")
    if not ops.is_tensor(pixel_values):
        pixel_values = ops.convert_to_tensor(pixel_values)
    if data_format == "channels_first":
        layout = "(batch, num_channels, height, width)"
    else:
        layout = "(batch, height, width, num_channels)"
    dtype = keras.backend.standardize_dtype(pixel_values.dtype)
    if "float" not in dtype:
        raise ValueError(
            "pixel_values must be a float tensor (normalised pixels), received dtype "
            f"{dtype}; convert and normalise images first"
        )
    if len(pixel_values.shape) != 4:
        raise ValueError(
            f"pixel_values must have rank 4 {layout} ({data_format}), "
            f"received shape {tuple(pixel_values.shape)}"
        )
    if data_format == "channels_first":
        pixel_values = ops.transpose(pixel_values, (0, 2, 3, 1))
    _, height, width, channels = pixel_values.shape
    if channels != config.num_channels:
        raise ValueError(
            f"pixel_values must have {config.num_channels} channels in layout {layout}, "
            f"received {channels} (input shape {tuple(ops.shape(pixel_values))} after "
            "moving channels last). For channels-last input, build the model with "
            "data_format='channels_last'."
        )
    if height is None or width is None:
        raise ValueError(
            f"pixel_values needs a static height and width, received {tuple(pixel_values.shape)}"
        )
    patch_h, patch_w = config.patch_hw
    if interpolate_pos_encoding:
        if height % patch_h or width % patch_w or height < patch_h or width < patch_w:
            raise ValueError(
                "With interpolate_pos_encoding=True, height and width must be positive "
                f"multiples of patch_size {config.patch_hw}, received {height}x{width}"
            )
    elif (height, width) != config.image_hw:
        image_h, image_w = config.image_hw
        raise ValueError(
            f"Input image size {height}x{width} does not match the model's "
            f"{image_h}x{image_w}; resize the images or pass interpolate_pos_encoding=True"
        )
    if is_eager(pixel_values) and not all_finite(pixel_values):
        raise ValueError("pixel_values contains NaN or infinite values")
    return pixel_values


def check_noise(
    noise: TensorLike | None, images: TensorLike, config: "ViTMAEConfig"
) -> TensorLike | None:
    """Validate masking noise for channels-last `images`; float32 or `None`."""
    if noise is None:
        return None
    if not ops.is_tensor(noise):
        noise = ops.convert_to_tensor(noise)
    dtype = keras.backend.standardize_dtype(noise.dtype)
    if "float" not in dtype:
        raise ValueError(f"noise must be a float tensor, received dtype {dtype}")
    patch_h, patch_w = config.patch_hw
    num_patches = (images.shape[1] // patch_h) * (images.shape[2] // patch_w)
    expected = (images.shape[0], num_patches)
    shape = tuple(noise.shape)
    if (
        len(shape) != 2
        or shape[1] != num_patches
        or (None not in (shape[0], expected[0]) and shape[0] != expected[0])
    ):
        raise ValueError(
            f"noise must have shape (batch, num_patches) = {expected}, received {shape}"
        )
    return ops.cast(noise, "float32")


def head_masks(
    head_mask: TensorLike | None, num_layers: int, num_heads: int
) -> list[TensorLike] | None:
    """Per-block `(num_heads,)` multipliers from a `(num_heads,)` or
    `(num_layers, num_heads)` mask; `None` stays `None`."""
    if head_mask is None:
        return None
    head_mask = ops.convert_to_tensor(head_mask, "float32")
    shape = tuple(head_mask.shape)
    if shape == (num_heads,):
        return [head_mask] * num_layers
    if shape == (num_layers, num_heads):
        return [head_mask[i] for i in range(num_layers)]
    raise ValueError(
        f"head_mask must have shape (num_heads,) = ({num_heads},) or (num_layers, "
        f"num_heads) = ({num_layers}, {num_heads}), received {shape}"
    )
