"""Model output containers, readable by attribute, by key and as a tuple.

They follow Hugging Face's `ModelOutput`: fields left at `None` are absent
from the keys and from `to_tuple()`, and `output[0]` is the first present
field. They are registered with `keras.tree` (and JAX's tree functions on
that backend) and are `Mapping`s for `tf.nest`, so `predict`, `jit`,
`tf.function` and distribution strategies can traverse them.
"""

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, TypeVar

import keras

from ..utils.types import TensorLike

__all__ = [
    "ModelOutput",
    "TFViTMAEDecoderOutput",
    "TFViTMAEForPreTrainingOutput",
    "TFViTMAEModelOutput",
]


_Output = TypeVar("_Output", bound="ModelOutput")


def _register(cls):
    """Make `keras.tree` (optree, namespace "keras") traverse `cls` as a node,
    and JAX's own tree functions on the JAX backend (`jit` returns it)."""
    if keras.backend.backend() == "jax":
        import jax

        jax.tree_util.register_pytree_node_class(cls)
    register = getattr(keras.tree, "register_tree_node_class", None)
    if register is None:  # not exported by Keras <= 3.15
        import optree

        return optree.register_pytree_node_class(cls, namespace="keras")
    return register(cls)


class ModelOutput(OrderedDict[str, Any]):
    """Base class; subclasses list their field names in `FIELDS`."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # tf.nest rebuilds mappings as `type(x)(pairs)`, hence the positional form.
        items = OrderedDict(*args, **kwargs)
        unknown = set(items) - set(self.FIELDS)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no fields {sorted(unknown)}; fields are {self.FIELDS}"
            )
        super().__init__((name, items[name]) for name in self.FIELDS if items.get(name) is not None)

    def __getattr__(self, name: str) -> TensorLike | None:
        if name in type(self).FIELDS:
            return self.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[TensorLike, ...]:
        """The present fields, in declaration order."""
        return tuple(self.values())

    def tree_flatten(self) -> tuple[tuple[TensorLike, ...], tuple[str, ...]]:
        keys = tuple(self.keys())
        return tuple(self[k] for k in keys), keys

    @classmethod
    def tree_unflatten(
        cls: type[_Output], keys: Iterable[str], values: Iterable[TensorLike]
    ) -> _Output:
        return cls(zip(keys, values))

    def __reduce__(self) -> tuple[type["ModelOutput"], tuple[list[tuple[str, Any]]]]:
        return (type(self), (list(self.items()),))


@_register
class TFViTMAEModelOutput(ModelOutput):
    """Output of `TFViTMAEModel`.

    Attributes:
        last_hidden_state: `(batch, 1 + len_keep, hidden_size)` after the final
            LayerNorm; position 0 is the CLS token.
        mask: float32 `(batch, num_patches)`, 1 for removed patches.
        ids_restore: int32 `(batch, num_patches)`, the un-shuffling permutation.
        hidden_states: With `output_hidden_states`, a tuple of
            `num_hidden_layers + 1` tensors: the embeddings, then each block's
            output (before the final LayerNorm).
        attentions: With `output_attentions`, a tuple with one
            `(batch, num_heads, seq, seq)` tensor per block.
    """

    FIELDS: tuple[str, ...] = (
        "last_hidden_state",
        "mask",
        "ids_restore",
        "hidden_states",
        "attentions",
    )


@_register
class TFViTMAEDecoderOutput(ModelOutput):
    """Output of the pretraining decoder.

    Attributes:
        logits: float32 `(batch, num_patches, patch_h * patch_w * num_channels)`.
        hidden_states: With `output_hidden_states`, the decoder's per-block states.
        attentions: With `output_attentions`, the decoder's attention probabilities.
    """

    FIELDS: tuple[str, ...] = ("logits", "hidden_states", "attentions")


@_register
class TFViTMAEForPreTrainingOutput(ModelOutput):
    """Output of `TFViTMAEForPreTraining`.

    Attributes:
        loss: float32 scalar, the pixel MSE over the removed patches.
        logits: float32 `(batch, num_patches, patch_h * patch_w * num_channels)`,
            the predicted (possibly normalised) pixels of every patch.
        mask, ids_restore, hidden_states, attentions: The encoder's, as in
            `TFViTMAEModelOutput`.
    """

    FIELDS: tuple[str, ...] = (
        "loss",
        "logits",
        "mask",
        "ids_restore",
        "hidden_states",
        "attentions",
    )
