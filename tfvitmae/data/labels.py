"""Class labels: whole numbers in `[0, num_classes)`, checked where they come in.

An out-of-range label trains silently (its one-hot row is all zeros, so
MixUp and label smoothing take it as no class at all) or surfaces as a NaN
loss far from its cause; a float or string label is no class index either.
Arrays and lists are checked in Python, datasets in `tf.data` (one
comparison an element).
"""

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils.backend import tensorflow
from ..utils.types import TensorLike

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["assert_labels", "check_label_batches", "check_labels"]


def _expected(num_classes: int | None) -> str:
    if num_classes is None:
        return "whole numbers of at least 0 (class indices)"
    return f"whole numbers in [0, {num_classes}) (class indices for num_classes={num_classes})"


def check_labels(
    labels: Any, num_classes: int | None = None, *, name: str = "labels"
) -> np.ndarray:
    """`labels` as an int64 array if they are class indices: whole numbers
    (integers, or floats without a fraction) in `[0, num_classes)` (or at
    least 0 when `num_classes` is `None`); otherwise a `ValueError` naming the
    first bad values and what was expected."""
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, received {num_classes!r}")
    array = np.asarray(labels)
    if array.dtype.kind not in "iuf":  # strings, objects, bools: no class index
        raise ValueError(
            f"{name} must be {_expected(num_classes)}, received {array.dtype} values "
            f"such as {array.reshape(-1)[:3].tolist()}"
        )
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            bad = np.unique(array[~whole])[:5].tolist()
            raise ValueError(f"{name} must be {_expected(num_classes)}, received {bad}")
    top = np.inf if num_classes is None else num_classes
    outside = (array < 0) | (array >= top)
    if outside.any():
        bad = np.unique(array[outside])[:5].tolist()
        raise ValueError(
            f"{name} must be {_expected(num_classes)}, received {len(array[outside])} outside "
            f"it: {bad}"
        )
    return array.astype(np.int64)


def assert_labels(labels: TensorLike, num_classes: int | None = None) -> "tf.Tensor":
    """`labels` (a tensor of integers, or whole floats) once checked in the
    graph to be class indices as `check_labels` says; an `InvalidArgumentError`
    with the bad values otherwise. Refuses string and bool labels at once."""
    tf = tensorflow("Checking labels in tf.data")  # arrays are checked without it
    labels = tf.convert_to_tensor(labels)
    if not (labels.dtype.is_integer or labels.dtype.is_floating):
        raise ValueError(f"labels must be {_expected(num_classes)}, received {labels.dtype.name}")
    message = f"labels must be {_expected(num_classes)}; received"
    checks = [tf.debugging.assert_non_negative(labels, message=message, summarize=16)]
    if num_classes is not None:
        checks.append(
            tf.debugging.assert_less(
                labels, tf.cast(num_classes, labels.dtype), message=message, summarize=16
            )
        )
    if labels.dtype.is_floating:
        checks.append(
            tf.debugging.assert_equal(labels, tf.round(labels), message=message, summarize=16)
        )
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def check_label_batches(dataset: "tf.data.Dataset", num_classes: int) -> "tf.data.Dataset":
    """`dataset` of `(inputs, integer labels)` with its labels checked
    (`assert_labels`) as they are read; other datasets as they are."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        return dataset
    return dataset.map(lambda x, y, *rest: (x, assert_labels(y, num_classes), *rest))
