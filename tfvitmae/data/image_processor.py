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
import numbers
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..checkpoints.formats import PREPROCESSOR_NAME
from ..checkpoints.hub import resolve_optional_file
from ..utils.backend import tensorflow
from ..utils.checks import DEFAULT_MAX_IMAGE_PIXELS
from ..utils.files import atomic_write_text, read_json
from ..utils.types import TensorLike

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESAMPLE_METHODS",
    "ViTMAEImageProcessor",
    "antialiased_resize",
    "channel_stats",
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
    mean: float | Sequence[float],
    std: float | Sequence[float],
    channels: int,
    *,
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel `(mean, std)` arrays for `channels` channels. A single
    number stands for every channel; statistics for another channel count
    (ImageNet's RGB ones for a grayscale model) are replaced by their average
    on every channel."""
    stats = []
    for stat in (mean, std):
        array = np.asarray(stat, dtype)
        if array.ndim == 1 and len(array) != channels:
            array = array.mean()
        if array.ndim > 1:
            raise ValueError(f"image_mean and image_std must be numbers or lists, received {stat}")
        stats.append(np.broadcast_to(array, (channels,)).copy())
    return stats[0], stats[1]


def _positive(name: str, value: Any) -> float:
    """`value` as a float if it is a positive, finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive number, received {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive, finite number, received {value!r}")
    return float(value)


# `image_mean` or `image_std`: one number for every channel, or one per channel.
Statistic = float | tuple[float, ...]


def _statistics(mean: Any, std: Any) -> tuple[Statistic, Statistic]:
    """`(image_mean, image_std)`, each a float or a tuple of floats. A single
    number (as `transformers` accepts, and writes back) stands for every
    channel and stays a number; the std must be positive (a std of 0 would
    normalise to infinities), and both finite, and as long when both are lists."""
    values: list[Statistic] = []
    for name, stat in (("image_mean", mean), ("image_std", std)):
        scalar = isinstance(stat, numbers.Real) and not isinstance(stat, bool)
        try:
            array = np.asarray([stat] if scalar else stat, "float64")
        except (TypeError, ValueError):
            array = np.asarray([])
        if array.ndim != 1 or not len(array) or not np.isfinite(array).all():
            raise ValueError(
                f"{name} must be a finite number or a list of them (one per channel), "
                f"received {stat!r}"
            )
        values.append(float(array[0]) if scalar else tuple(array.tolist()))
    mean_, std_ = values
    if isinstance(mean_, tuple) and isinstance(std_, tuple) and len(mean_) != len(std_):
        raise ValueError(
            f"image_mean and image_std must have one value per channel each, received "
            f"{len(mean_)} and {len(std_)} values"
        )
    if np.min(std_) <= 0:
        raise ValueError(f"image_std must be positive, received {std_}")
    return mean_, std_


def _channel_count(mean: Statistic, std: Statistic) -> int | None:
    """How many channels the statistics name; `None` for numbers, which fit any."""
    for stat in (mean, std):
        if isinstance(stat, tuple):
            return len(stat)
    return None


def antialiased_resize(images: TensorLike, size: Sequence[int], method: str) -> TensorLike:
    """`tf.image.resize(images, size, method, antialias=True)` (float32, one
    image or a batch), with no intermediate tensor larger than twice the
    larger of the input and the output.

    TensorFlow resizes the height first, through an `(out_height, in_width)`
    intermediate: a 1x1,000,000 image resized to 32x32 builds 32 times the
    image. Where that intermediate exceeds the bound, the width is resized
    first and the height after; the filter is separable, so the two orders
    differ only by float rounding.
    """
    tf = tensorflow("The image processor's resize")
    out_h, out_w = size
    shape = tf.shape(images)
    in_h, in_w = shape[-3], shape[-2]

    def direct():
        return tf.image.resize(images, size, method=method, antialias=True)

    def width_first():
        narrow = tf.image.resize(images, tf.stack([in_h, out_w]), method=method, antialias=True)
        return tf.image.resize(narrow, size, method=method, antialias=True)

    # (out_h * in_w) > 2 * max(in_h * in_w, out_h * out_w), without overflow
    large = tf.logical_and(out_h > 2 * in_h, in_w > 2 * out_w)
    return tf.cond(large, width_first, direct)


def _max_pixels() -> int:
    """`data.decoding.MAX_IMAGE_PIXELS`, as raised there; its default while
    that module (which needs TensorFlow) is not imported."""
    decoding = sys.modules.get(f"{__package__}.decoding")
    return DEFAULT_MAX_IMAGE_PIXELS if decoding is None else decoding.MAX_IMAGE_PIXELS


def _size_hw(size: _Size) -> tuple[int, int]:
    """`(height, width)` from an int, a pair, or a `{"height", "width"}` dict:
    positive, and within the pixel budget of a decoded image."""
    if isinstance(size, dict):
        if not set(size) >= {"height", "width"}:
            raise ValueError(
                f'size must be {{"height": H, "width": W}} (ViTImageProcessor\'s form), '
                f"received {size}"
            )
        hw: tuple[Any, ...] = size["height"], size["width"]
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        hw = tuple(size)
    elif isinstance(size, numbers.Integral) and not isinstance(size, bool):
        hw = size, size
    else:
        raise ValueError(f"size must be an int, (height, width) or a dict, received {size!r}")
    whole = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in hw)
    if not whole or min(int(v) for v in hw) < 1:
        raise ValueError(f"size must be positive whole numbers, received {size!r}")
    height, width = int(hw[0]), int(hw[1])
    if height * width > _max_pixels():
        raise ValueError(
            f"size {height}x{width} is {height * width:,} pixels, more than the pixel budget of "
            f"{_max_pixels():,} (tfvitmae.data.decoding.MAX_IMAGE_PIXELS)"
        )
    return height, width


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
        image_mean, image_std: One value per channel, or one number for
            every channel (kept as a number in `preprocessor_config.json`).
    """

    def __init__(
        self,
        size: _Size = 224,
        resample: int = 3,
        do_resize: bool = True,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] = IMAGENET_MEAN,
        image_std: float | Sequence[float] = IMAGENET_STD,
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
        """This processor with one statistic per channel for `num_channels`
        channels (see `channel_stats`): a number, one value, or RGB statistics
        (ImageNet's, say) for another channel count go onto every channel;
        any other count than the model's is refused."""
        count = _channel_count(self.image_mean, self.image_std)
        if count not in (None, 1, 3, num_channels):
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
            image_mean=_json_statistic(self.image_mean),
            image_std=_json_statistic(self.image_std),
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

    def resize(self, images: TensorLike, size: _Size | None = None) -> TensorLike:
        """Resize channels-last images (one or a batch) to `size` (default:
        the processor's); float32 out, clipped to [0, 255], and rounded to
        whole levels for uint8 input (as PIL, which `transformers` uses)."""
        tf = tensorflow("The image processor's resize")
        size = self.size if size is None else _size_hw(size)
        rounded = tf.as_dtype(images.dtype) == tf.uint8
        images = tf.cast(images, tf.float32)
        if tuple(images.shape[-3:-1]) == size:
            return images
        resized = antialiased_resize(images, size, self.method)
        if rounded:  # uint8 in, whole levels out, as PIL resizes uint8 images
            resized = tf.round(resized)
        return tf.clip_by_value(resized, 0.0, 255.0)

    def normalize(self, images: TensorLike) -> TensorLike:
        """Rescale and normalise (float32 out), without resizing."""
        tf = tensorflow("The image processor's normalize")
        images = tf.cast(images, tf.float32)
        if self.do_rescale:
            images = images * self.rescale_factor
        if self.do_normalize:
            mean, std = channel_stats(self.image_mean, self.image_std, images.shape[-1])
            images = (images - mean) / std
        return images

    def denormalize(self, pixel_values: TensorLike) -> TensorLike:
        """The inverse of `normalize`, for display: channels-last float images
        -> uint8 (rounded and clipped)."""
        tf = tensorflow("The image processor's denormalize")
        images = tf.cast(pixel_values, tf.float32)
        if self.do_normalize:
            mean, std = channel_stats(self.image_mean, self.image_std, images.shape[-1])
            images = images * std + mean
        if self.do_rescale:
            images = images / self.rescale_factor
        return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)

    def preprocess(self, images: TensorLike) -> TensorLike:
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
        an `(n, H, W, C)` array) of any sizes, converted to `num_channels`
        channels (default: as many as the statistics name; RGB where they are
        numbers).

        Returns:
            `{"pixel_values": float32 array}`, `(n, C, H, W)` by default or
            `(n, H, W, C)` with `data_format="channels_last"`, so that
            `model(**processor(images))` works.
        """
        if data_format not in ("channels_first", "channels_last"):
            raise ValueError(
                f"data_format must be 'channels_first' or 'channels_last', received {data_format!r}"
            )
        from .decoding import load_images  # TensorFlow's decoders

        tf = tensorflow("The image processor")
        # Statistics that are numbers fit any channel count: RGB then, as for transformers.
        channels = num_channels or _channel_count(self.image_mean, self.image_std) or 3
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


def _json_statistic(stat: Statistic) -> float | list[float]:
    """A statistic as `preprocessor_config.json` holds it: a number stays one."""
    return list(stat) if isinstance(stat, tuple) else stat
