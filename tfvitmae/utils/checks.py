"""Argument checks used across the package; each raises `ValueError` saying
what was expected and what was received."""

import numbers
from typing import TypeGuard

__all__ = [
    "DATA_FORMATS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "check_batch_size",
    "check_data_format",
    "is_int",
]

DATA_FORMATS = ("channels_first", "channels_last")
# Pillow's own `Image.MAX_IMAGE_PIXELS`: the default of `data.decoding.MAX_IMAGE_PIXELS`.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def is_int(value: object) -> TypeGuard[int]:
    """Whether `value` is a Python `int` (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_data_format(data_format: str) -> str:
    """Return `data_format` if it is `"channels_first"` or `"channels_last"`."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, received {data_format!r}")
    return data_format


def check_batch_size(batch_size: int) -> int:
    """Return `batch_size` if it is a positive integer (a bool is not)."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}")
    return int(batch_size)
