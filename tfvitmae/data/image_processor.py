"""`ViTMAEImageProcessor`: the one place that knows how raw images become `pixel_values`.

It holds what Hugging Face's `ViTImageProcessor` writes to
`preprocessor_config.json` (resize size and method, rescale factor, mean and
std), reads and writes that file, and does the work with TensorFlow ops, so
the same steps run in `tf.data`, in Python calls and inside exported
SavedModels. Models carry one (`model.image_processor`), saved beside their
weights and in their `.keras` config.
"""

import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from ..checkpoints.formats import PREPROCESSOR_NAME
from ..checkpoints.hub import resolve_optional_file
from ..utils.files import atomic_write_text, read_json
from ..utils.types import TensorLike

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESAMPLE_METHODS",
    "ViTMAEImageProcessor",
    "channel_stats",
    "MAX_IMAGE_PIXELS",
    "decode_image",
    "image_pixels",
    "tf_error_reason",
    "load_images",
    "match_channels",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL's resampling codes, as `preprocessor_config.json` stores them, and the
# `tf.image.resize` method of each (PIL's BOX is an area average; HAMMING has none).
RESAMPLE_METHODS = {0: "nearest", 1: "lanczos3", 2: "bilinear", 3: "bicubic", 4: "area"}
# What `transformers.ViTImageProcessor` assumes for a field its file leaves out.
_HF_DEFAULTS = dict(
    do_resize=True,
    size={"height": 224, "width": 224},
    resample=2,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
)
# An output size: an int (square), `(height, width)`, or `{"height": H, "width": W}`.
_Size = int | Sequence[int] | dict[str, int]


def channel_stats(
    mean: Sequence[float], std: Sequence[float], channels: int, *, dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel `(mean, std)` arrays for `channels` channels. Statistics
    for another channel count (ImageNet's RGB ones for a grayscale model) are
    replaced by their average on every channel."""
    means, stds = np.asarray(mean, dtype), np.asarray(std, dtype)
    if means.shape != stds.shape or means.ndim != 1:
        raise ValueError(
            f"image_mean and image_std must be lists of equal length, received {means} and {stds}"
        )
    if len(means) != channels:
        means = np.full(channels, means.mean(), dtype)
        stds = np.full(channels, stds.mean(), dtype)
    return means, stds


# The most pixels an encoded image may have to be decoded (PIL's own
# `Image.MAX_IMAGE_PIXELS`): a 23000x23000 PNG of zeros is 0.5 MB on disk and
# gigabytes decoded. Raise it here, before decoding or exporting, for larger images.
MAX_IMAGE_PIXELS = 89_478_485


def _uint(header: tf.Tensor, start: int, length: int, big_endian: bool = False) -> tf.Tensor:
    """The unsigned integer of `length` bytes at `start` of the header's bytes (int64)."""
    weights = [256**i for i in range(length)]
    weights = weights[::-1] if big_endian else weights
    return tf.reduce_sum(header[start : start + length] * tf.constant(weights, tf.int64))


def _starts_with(header: tf.Tensor, magic: bytes, at: int = 0) -> tf.Tensor:
    return tf.reduce_all(tf.equal(header[at : at + len(magic)], list(magic)))


def _bmp_pixels(header: tf.Tensor) -> tf.Tensor:
    # BITMAPCOREHEADER (12 bytes) has 16-bit sizes; the others signed 32-bit
    # ones, where a negative height means rows stored top-down.
    core = tf.equal(_uint(header, 14, 4), 12)
    width = tf.where(core, _uint(header, 18, 2), _uint(header, 18, 4))
    height = tf.where(core, _uint(header, 20, 2), _uint(header, 22, 4))
    height = tf.where(height >= 2**31, 2**32 - height, height)
    return width * height


def _webp_pixels(header: tf.Tensor) -> tf.Tensor:
    extended = (_uint(header, 24, 3) + 1) * (_uint(header, 27, 3) + 1)  # VP8X
    lossy = tf.bitwise.bitwise_and(_uint(header, 26, 2), 0x3FFF) * tf.bitwise.bitwise_and(
        _uint(header, 28, 2), 0x3FFF
    )  # VP8
    bits = _uint(header, 21, 4)  # VP8L: 14-bit width - 1, then 14-bit height - 1
    lossless = (tf.bitwise.bitwise_and(bits, 0x3FFF) + 1) * (
        tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1
    )
    return tf.where(
        _starts_with(header, b"VP8X", 12),
        extended,
        tf.where(_starts_with(header, b"VP8L", 12), lossless, lossy),
    )


_JPEG_XL_CONTAINER = b"\0\0\0\x0cJXL \r\n\x87\n"


def tf_error_reason(error: tf.errors.OpError) -> str:
    """The first line of a TensorFlow error, without its `{{function_node ...}}`
    prefix and `[Op:...]` suffix."""
    reason = error.message.splitlines()[0] if error.message else str(error)
    reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", reason)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", reason).strip()


def image_pixels(contents: TensorLike) -> tf.Tensor:
    """Height x width of an encoded JPEG, PNG, GIF, BMP or WebP image, read
    from its header without decoding it (int64; -1 for JPEG XL, whose size
    is not read here; 0 for other bytes, which do not decode)."""
    contents = tf.convert_to_tensor(contents, tf.string)
    # The first 32 bytes, once, as integers (short files read as zeros).
    raw = tf.io.decode_raw(tf.strings.substr(contents + b"\0" * 32, 0, 32), tf.uint8)
    header = tf.cast(tf.reshape(raw, (32,)), tf.int64)
    jpeg = _starts_with(header, b"\xff\xd8\xff")
    pixels = tf.cond(  # the one format whose size needs more than the first bytes
        jpeg,
        lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64)),
        lambda: tf.constant(0, tf.int64),
    )
    formats = (
        (
            _starts_with(header, b"\x89PNG\r\n\x1a\n"),
            _uint(header, 16, 4, True) * _uint(header, 20, 4, True),
        ),
        (
            tf.logical_or(_starts_with(header, b"GIF87a"), _starts_with(header, b"GIF89a")),
            _uint(header, 6, 2) * _uint(header, 8, 2),
        ),
        (_starts_with(header, b"BM"), _bmp_pixels(header)),
        (
            tf.logical_and(_starts_with(header, b"RIFF"), _starts_with(header, b"WEBP", 8)),
            _webp_pixels(header),
        ),
        (
            tf.logical_or(
                _starts_with(header, b"\xff\x0a"), _starts_with(header, _JPEG_XL_CONTAINER)
            ),
            tf.constant(-1, tf.int64),
        ),
    )
    for is_format, size in formats:  # the leading bytes exclude one another
        pixels = tf.where(is_format, size, pixels)
    return pixels


def decode_image(
    contents: TensorLike, num_channels: int = 3, *, max_pixels: int | None = None
) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 `(height, width, num_channels)`.

    Grayscale, RGBA and RGB inputs are all converted to `num_channels`. An
    image whose header gives more than `max_pixels` (default
    `MAX_IMAGE_PIXELS`) pixels is refused before it is decoded, with an
    `InvalidArgumentError` (`INVALID_ARGUMENT` from TF Serving): a few small
    files must not take gigabytes and minutes to decode.
    """
    budget = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    pixels = image_pixels(contents)
    known = tf.debugging.assert_non_negative(
        pixels,
        message="JPEG XL images are not read: their size cannot be checked before decoding; "
        "convert them to PNG or JPEG",
    )
    with tf.control_dependencies([known]):
        pixels = tf.identity(pixels)
    within = tf.debugging.assert_less_equal(
        pixels,
        tf.constant(budget, tf.int64),
        message=(
            f"the image is larger than the pixel budget of {budget:,} pixels "
            "(tfvitmae.data.image_processor.MAX_IMAGE_PIXELS); refused before decoding"
        ),
    )
    with tf.control_dependencies([within]):
        image = tf.io.decode_image(contents, channels=num_channels, expand_animations=False)
    image.set_shape((None, None, num_channels))
    return image


def _positive(name: str, value: Any) -> float:
    """`value` as a float if it is a positive, finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive number, received {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive, finite number, received {value!r}")
    return float(value)


def _statistics(mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`(image_mean, image_std)` as tuples of floats. A single number (as
    `transformers` accepts) stands for every channel; the std must be positive
    (a std of 0 would normalise to infinities), and both finite and as long."""
    values = []
    for name, stat in (("image_mean", mean), ("image_std", std)):
        stat = [stat] if isinstance(stat, (int, float)) and not isinstance(stat, bool) else stat
        try:
            array = np.asarray(stat, "float64")
        except (TypeError, ValueError):
            array = np.asarray([])
        if array.ndim != 1 or not len(array) or not np.isfinite(array).all():
            raise ValueError(
                f"{name} must be a finite number or a list of them (one per channel), "
                f"received {stat!r}"
            )
        values.append(tuple(array.tolist()))
    if len(values[0]) != len(values[1]):
        raise ValueError(
            f"image_mean and image_std must have one value per channel each, received "
            f"{len(values[0])} and {len(values[1])} values"
        )
    if min(values[1]) <= 0:
        raise ValueError(f"image_std must be positive, received {values[1]}")
    return values[0], values[1]


def _size_hw(size: _Size) -> tuple[int, int]:
    """`(height, width)` from an int, a pair, or a `{"height", "width"}` dict."""
    if isinstance(size, dict):
        if set(size) >= {"height", "width"}:
            return int(size["height"]), int(size["width"])
        raise ValueError(
            f'size must be {{"height": H, "width": W}} (ViTImageProcessor\'s form), received {size}'
        )
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be an int, (height, width) or a dict, received {size!r}")


class ViTMAEImageProcessor:
    """Resize, rescale and normalise images into a model's `pixel_values`.

    The defaults are those of the MAE checkpoints' `preprocessor_config.json`:
    224x224, bicubic, ImageNet mean and std. Shrinking resizes antialias, as
    PIL and torchvision do.

    Args:
        size: Output `(height, width)`, an int, or `{"height", "width"}`.
        resample: PIL resampling code (2 bilinear, 3 bicubic; 0 nearest,
            1 Lanczos, 4 box/area).
        do_resize, do_rescale, do_normalize: Which steps run.
        rescale_factor: Multiplies the pixels (1/255: uint8 to [0, 1]).
        image_mean, image_std: One value per channel.
    """

    def __init__(
        self,
        size: _Size = 224,
        resample: int = 3,
        do_resize: bool = True,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if resample not in RESAMPLE_METHODS:
            raise ValueError(
                f"resample must be a PIL code in {sorted(RESAMPLE_METHODS)} "
                f"({', '.join(f'{k}: {v}' for k, v in RESAMPLE_METHODS.items())}), "
                f"received {resample!r}"
            )
        for name, flag in (
            ("do_resize", do_resize),
            ("do_rescale", do_rescale),
            ("do_normalize", do_normalize),
        ):
            if not isinstance(flag, (bool, np.bool_)):  # "false" would read as true
                raise ValueError(f"{name} must be true or false, received {flag!r}")
        self.size = _size_hw(size)
        self.resample = int(resample)
        self.do_resize = bool(do_resize)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = _positive("rescale_factor", rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean, self.image_std = _statistics(image_mean, image_std)

    @classmethod
    def for_config(cls, config: Any, **overrides: Any) -> "ViTMAEImageProcessor":
        """The MAE preprocessing for `config`'s image size and channel count."""
        processor = cls(size=config.image_hw, **overrides)
        return processor.with_channels(config.num_channels)

    def with_channels(self, num_channels: int) -> "ViTMAEImageProcessor":
        """This processor with statistics for `num_channels` channels (see
        `channel_stats`): one value, or RGB statistics (ImageNet's, say) for
        another channel count, are averaged onto every channel; any other
        count than the model's is refused."""
        count = len(self.image_mean)
        if count not in (1, 3, num_channels):
            raise ValueError(
                f"image_mean and image_std have {count} values; images with {num_channels} "
                f"channels need {num_channels} (or 1 for every channel)"
            )
        mean, std = channel_stats(self.image_mean, self.image_std, num_channels, dtype="float64")
        return self.copy(image_mean=mean.tolist(), image_std=std.tolist())

    def copy(self, **changes: Any) -> "ViTMAEImageProcessor":
        """This processor with `changes` to its constructor's arguments."""
        return type(self)(**{**self.to_dict(hf_keys=False), **changes})

    # ------------------------------------------------------------ the file
    def to_dict(self, hf_keys: bool = True) -> dict[str, Any]:
        """The `preprocessor_config.json` fields (with `image_processor_type`
        when `hf_keys`, as `transformers` writes them)."""
        out = dict(
            do_resize=self.do_resize,
            size={"height": self.size[0], "width": self.size[1]},
            resample=self.resample,
            do_rescale=self.do_rescale,
            rescale_factor=self.rescale_factor,
            do_normalize=self.do_normalize,
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
        )
        if hf_keys:
            out["image_processor_type"] = "ViTImageProcessor"
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ViTMAEImageProcessor":
        """From `preprocessor_config.json` fields. A field the file leaves out
        takes `ViTImageProcessor`'s default, so files read as `transformers`
        reads them; other keys (`image_processor_type`, ...) are ignored."""
        if not isinstance(values, dict):
            raise ValueError(f"Expected a dict of processor fields, received {type(values)}")
        if values.get("do_center_crop"):
            raise ValueError("Center cropping (do_center_crop) is not supported by ViTMAE")
        fields = {k: values.get(k, default) for k, default in _HF_DEFAULTS.items()}
        return cls(**fields)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write `preprocessor_config.json` (atomically) into `save_directory`;
        returns the file's path."""
        os.makedirs(save_directory, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        return atomic_write_text(os.path.join(save_directory, PREPROCESSOR_NAME), text)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, **hub_kwargs: Any
    ) -> "ViTMAEImageProcessor":
        """Read `preprocessor_config.json` from a directory, the file itself, or a Hub repo id
        (`hub_kwargs`: `revision`, `token`, `cache_dir`, `local_files_only`)."""
        name_or_path = os.fspath(name_or_path)
        path = name_or_path if os.path.isfile(name_or_path) else None
        path = path or resolve_optional_file(name_or_path, PREPROCESSOR_NAME, **hub_kwargs)
        if path is None:
            raise FileNotFoundError(f"No {PREPROCESSOR_NAME} in {name_or_path!r}")
        return cls.from_json_file(path)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "ViTMAEImageProcessor":
        """Read a `preprocessor_config.json` file (see `from_dict`); an invalid
        one raises a `ValueError` naming the file."""
        values = read_json(path)
        try:
            return cls.from_dict(values)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict(hf_keys=False).items())
        return f"{type(self).__name__}({fields})"

    # ----------------------------------------------------------- the steps
    @property
    def method(self) -> str:
        """The `tf.image.resize` method of `resample`."""
        return RESAMPLE_METHODS[self.resample]

    def resize(self, images: TensorLike, size: _Size | None = None) -> tf.Tensor:
        """Resize channels-last images (one or a batch) to `size` (default:
        the processor's); float32 out, clipped to [0, 255], and rounded to
        whole levels for uint8 input (as PIL, which `transformers` uses)."""
        size = self.size if size is None else _size_hw(size)
        rounded = tf.as_dtype(images.dtype) == tf.uint8
        images = tf.cast(images, tf.float32)
        if tuple(images.shape[-3:-1]) == size:
            return images
        resized = tf.image.resize(images, size, method=self.method, antialias=True)
        if rounded:  # uint8 in, whole levels out, as PIL resizes uint8 images
            resized = tf.round(resized)
        return tf.clip_by_value(resized, 0.0, 255.0)

    def normalize(self, images: TensorLike) -> tf.Tensor:
        """Rescale and normalise (float32 out), without resizing."""
        images = tf.cast(images, tf.float32)
        if self.do_rescale:
            images = images * self.rescale_factor
        if self.do_normalize:
            mean, std = channel_stats(self.image_mean, self.image_std, images.shape[-1])
            images = (images - mean) / std
        return images

    def denormalize(self, pixel_values: TensorLike) -> tf.Tensor:
        """The inverse of `normalize`, for display: channels-last float images
        -> uint8 (rounded and clipped)."""
        images = tf.cast(pixel_values, tf.float32)
        if self.do_normalize:
            mean, std = channel_stats(self.image_mean, self.image_std, images.shape[-1])
            images = images * std + mean
        if self.do_rescale:
            images = images / self.rescale_factor
        return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)

    def preprocess(self, images: TensorLike) -> tf.Tensor:
        """uint8 (or float in [0, 255]) channels-last images, one or a batch,
        -> float32 channels-last `pixel_values`. TensorFlow ops only: runs in
        `tf.data`, `tf.function` and SavedModel signatures."""
        if self.do_resize:
            images = self.resize(images)
        return self.normalize(images)

    def __call__(
        self,
        images: TensorLike,
        data_format: str = "channels_first",
        num_channels: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Preprocess file paths, PIL images or uint8 arrays (one, or a list, or
        an `(n, H, W, C)` array) of any sizes.

        Returns:
            `{"pixel_values": float32 array}`, `(n, C, H, W)` by default or
            `(n, H, W, C)` with `data_format="channels_last"`, so that
            `model(**processor(images))` works.
        """
        if data_format not in ("channels_first", "channels_last"):
            raise ValueError(
                f"data_format must be 'channels_first' or 'channels_last', received {data_format!r}"
            )
        channels = num_channels or len(self.image_mean)
        batch = [self.preprocess(image) for image in load_images(images, channels)]
        if not self.do_resize and len({tuple(b.shape) for b in batch}) > 1:
            raise ValueError(
                "Images of different sizes need do_resize=True, received sizes "
                f"{sorted({tuple(b.shape[:2]) for b in batch})}"
            )
        pixels = tf.stack(batch).numpy()
        if data_format == "channels_first":
            pixels = pixels.transpose(0, 3, 1, 2)
        return {"pixel_values": pixels}


def load_images(images: TensorLike, num_channels: int = 3) -> list[np.ndarray]:
    """File paths, PIL images or uint8 arrays -> a list of uint8 `(H, W, num_channels)`.

    Accepts one image, a list of them, or an `(n, H, W[, C])` array.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ValueError("Expected at least one image, received none")
    return [_load_image(image, num_channels) for image in images]


def _load_image(image, num_channels: int) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No image file at {path!r}")
        try:
            return decode_image(tf.io.read_file(path), num_channels).numpy()
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(f"Cannot read {path} as an image: {tf_error_reason(e)}") from None
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("L" if num_channels == 1 else "RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "Expected a file path, a PIL image or a (height, width[, channels]) array with 1, 3 "
            f"or 4 channels, received {type(image).__name__} of shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            "Expected uint8 images (0-255), received a float array; for images already in "
            "[0, 1], pass (image * 255).astype('uint8')"
        )
    if array.dtype != np.uint8:  # uint16 is not 0-255, nor are bool or negative values
        raise ValueError(
            f"Expected uint8 images (0-255), received {array.dtype}; convert them first "
            "(16-bit images: (image // 257).astype('uint8'))"
        )
    if 0 in array.shape[:2]:
        raise ValueError(f"Expected an image with pixels, received shape {array.shape}")
    return match_channels(array, num_channels)


def match_channels(array: np.ndarray, num_channels: int) -> np.ndarray:
    """Channels-last `array` with `num_channels` channels: RGBA drops alpha,
    gray repeats to RGB, RGB averages to gray."""
    channels = array.shape[-1]
    if channels == num_channels:
        return array
    if channels == 4 and num_channels == 3:
        return array[..., :3]
    if channels == 1 and num_channels == 3:
        return np.repeat(array, 3, axis=-1)
    if num_channels == 1:
        gray = array[..., :3].mean(axis=-1, keepdims=True) if channels >= 3 else array[..., :1]
        return np.round(gray).astype(array.dtype) if array.dtype.kind in "ui" else gray
    raise ValueError(f"Cannot convert {channels}-channel images to {num_channels} channels")
