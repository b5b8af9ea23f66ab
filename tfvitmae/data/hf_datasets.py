"""🤗 Datasets to `tf.data`: what transformers' `prepare_tf_dataset` does.

Code written for transformers' TF models feeds `fit` with
`model.prepare_tf_dataset(dataset)`: the columns the model takes become its
inputs, a label column its targets, the rest is dropped. The models call
`to_tf_dataset` below with their input and label names.
"""

from collections.abc import Callable, Sequence
from typing import Any

from ..utils.backend import tensorflow

__all__ = ["to_tf_dataset"]


def to_tf_dataset(
    dataset: Any,
    *,
    input_names: Sequence[str],
    label_names: Sequence[str] = (),
    batch_size: int = 8,
    shuffle: bool = True,
    collate_fn: Callable | None = None,
    collate_fn_args: dict[str, Any] | None = None,
    drop_remainder: bool | None = None,
    prefetch: bool = True,
) -> Any:
    """A batched `tf.data.Dataset` of the columns of `dataset` a model takes.

    Args:
        dataset: A `datasets.Dataset` (for images, with a `pixel_values`
            column, e.g. from `dataset.with_transform(...)` and the model's
            image processor).
        input_names: The model's input names; the columns so named are kept
            (a dict of them, or the tensor itself when there is one).
        label_names: Label columns the model is trained on (the first present
            becomes the target); none for a self-supervised model.
        batch_size, shuffle, drop_remainder, prefetch: As in
            `datasets.Dataset.to_tf_dataset` (`drop_remainder` defaults to `shuffle`).
        collate_fn, collate_fn_args: A batch collator and its arguments
            (default: stack each column).

    Raises:
        ValueError: `dataset` is not a 🤗 Datasets dataset, or it has none of
            the model's inputs.
    """
    tensorflow("prepare_tf_dataset")  # datasets makes a tf.data.Dataset
    if not callable(getattr(dataset, "to_tf_dataset", None)) or not hasattr(dataset, "__len__"):
        raise ValueError(
            "prepare_tf_dataset expects a 🤗 Datasets `datasets.Dataset`, received "
            f"{type(dataset).__name__}; for folders, files or arrays use "
            "tfvitmae.data.make_dataset"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}")
    if len(dataset) == 0:
        raise ValueError("prepare_tf_dataset received an empty dataset")
    # The columns as the model will see them: a transform (`with_transform`) may make new ones.
    columns = list(dataset[:1])
    features = [name for name in columns if name in input_names]
    if not features:
        raise ValueError(
            f"The dataset has none of the model's inputs {list(input_names)}: its columns are "
            f"{columns}. Make `pixel_values` with the model's image processor, e.g. "
            "dataset.with_transform(lambda batch: model.image_processor(batch['image']))"
        )
    labels = [name for name in label_names if name in columns][:1]
    options = dict(collate_fn=collate_fn, collate_fn_args=collate_fn_args)
    return dataset.to_tf_dataset(
        columns=features[0] if len(features) == 1 else features,
        label_cols=labels[0] if labels else None,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_remainder=shuffle if drop_remainder is None else drop_remainder,
        prefetch=prefetch,
        **{k: v for k, v in options.items() if v is not None},
    )
