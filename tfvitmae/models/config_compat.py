"""What `ViTMAEConfig` keeps of transformers' `PretrainedConfig`.

A `config.json` that transformers writes carries more than ViTMAE's fields:
class names (`id2label`), bookkeeping (`architectures`, `transformers_version`)
and settings of models ViTMAE is not (`is_decoder`). `ViTMAEConfig` reads and
writes them as transformers does, by way of this module:

- `PretrainedConfigCompat`, the base class of `ViTMAEConfig`: `PretrainedConfig`'s
  attributes read as its defaults, kept keys (`extra`), the class names and
  their rules, `use_return_dict`, and the memory estimate (`encoder_parameters`,
  `check_memory`).
- `check_extra_keys`: refused settings, keys that would replace a method or
  attribute, and misspelt fields.
- `merge_overrides`: `from_dict`'s overrides; another `num_labels` renames the
  classes, with a warning.

Why a base class, as transformers' configs subclass `PretrainedConfig`: class
names, kept keys and the rest are attributes and state of every config
(`config.id2label`, `config.architectures`, `config.use_return_dict`), and
users and models read them there. A base class gives them to `ViTMAEConfig`
without a line in `config.py`, which keeps its fields, derived sizes, I/O and
validation; helper functions would need a delegating method in the config for
each name. It is `ViTMAEConfig`'s base only: the memory estimate reads its
fields (`_fields` types `self` as the config).
"""

import copy
import difflib
import inspect
import os
import warnings
from collections.abc import Container
from typing import TYPE_CHECKING, Any, cast

from ..utils.checks import is_int

if TYPE_CHECKING:
    from .config import ViTMAEConfig

__all__ = [
    "DEFAULT_LABELS",
    "OUTPUT_FLAG_DEFAULTS",
    "PRETRAINED_DEFAULTS",
    "UNSUPPORTED",
    "PretrainedConfigCompat",
    "check_extra_keys",
    "merge_overrides",
]

# transformers' `PretrainedConfig` attributes that every config has, read as
# these defaults when a config does not set them. They are bookkeeping here
# (these models do not read them), kept and written back when given.
PRETRAINED_DEFAULTS: dict[str, Any] = {
    "architectures": None,
    "finetuning_task": None,
    "problem_type": None,
    "tokenizer_class": None,
    "prefix": None,
    "bos_token_id": None,
    "pad_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "task_specific_params": None,
    "torch_dtype": None,
    "use_bfloat16": False,
    "tf_legacy_loss": False,
    "tie_word_embeddings": True,
    "cross_attention_hidden_size": None,
    "is_decoder": False,
    "is_encoder_decoder": False,
    "add_cross_attention": False,
    "tie_encoder_decoder": False,
    "pruned_heads": {},
    "chunk_size_feed_forward": 0,
}
# The output flags' defaults (attributes `ViTMAEConfig.__init__` sets); `to_dict`
# writes a flag only when it differs.
OUTPUT_FLAG_DEFAULTS: dict[str, bool] = {
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict": True,
    "torchscript": False,
}
# `PretrainedConfig` settings that change what a transformers model computes
# and that these models do not have: only their defaults are accepted.
UNSUPPORTED: dict[str, str] = {
    "is_decoder": "ViTMAE is an encoder (and a pretraining decoder without causal masking)",
    "is_encoder_decoder": "ViTMAE is not a sequence-to-sequence model",
    "add_cross_attention": "ViTMAE has no cross-attention",
    "tie_encoder_decoder": "ViTMAE's decoder has its own weights",
    "pruned_heads": "head pruning is not implemented",
    "chunk_size_feed_forward": "feed-forward chunking is not implemented",
}
# transformers' classes of a config that names none (written only when others are set).
DEFAULT_LABELS: dict[int, str] = {0: "LABEL_0", 1: "LABEL_1"}


class PretrainedConfigCompat:
    """The base of `ViTMAEConfig`: `PretrainedConfig`'s attributes, kept keys
    and class names, as in transformers.

    A subclass lists its own names in `FIELDS` (a key that resembles one is a
    misspelling) and passes the keyword arguments its `__init__` did not take
    to `_keep_transformers_keys`.
    """

    LABEL_FIELDS: tuple[str, ...] = ("id2label", "label2id", "num_labels")
    FIELDS: tuple[str, ...] = LABEL_FIELDS
    _id2label: dict[int, str]
    return_dict: bool  # the output flags, set by the subclass
    torchscript: bool

    @property
    def _fields(self) -> "ViTMAEConfig":
        """`self`, typed as the subclass whose fields the memory estimate reads."""
        return cast("ViTMAEConfig", self)

    def _keep_transformers_keys(self, kwargs: dict[str, Any]) -> None:
        """Set the class names from `id2label`, `label2id` and `num_labels`,
        and keep every other key as an attribute (`check_extra_keys` refuses some)."""
        self._id2label = dict(DEFAULT_LABELS)
        id2label = kwargs.pop("id2label", None)
        self._set_labels(id2label, kwargs.pop("label2id", None))
        num_labels = kwargs.pop("num_labels", None)
        if num_labels is not None:
            _check_num_labels(num_labels)
            if id2label is not None and num_labels != len(self._id2label):
                raise ValueError(
                    f"ViTMAEConfig got num_labels={num_labels!r} and an id2label of "
                    f"{len(self._id2label)} classes; give one of them, or both alike"
                )
            self.num_labels = num_labels
        check_extra_keys(kwargs, type(self), taken=vars(self))
        for name, value in kwargs.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not set: `PretrainedConfig`'s
        # attributes read as its defaults, as in transformers.
        if name in PRETRAINED_DEFAULTS:
            return copy.deepcopy(PRETRAINED_DEFAULTS[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def extra(self) -> dict[str, Any]:
        """The keys that are not fields of this class, as given (read-only view)."""
        own = {*self.FIELDS, "model_type"}
        return {k: v for k, v in vars(self).items() if k not in own and not k.startswith("_")}

    @property
    def use_return_dict(self) -> bool:
        """Whether the models return output objects (`return_dict`, off under `torchscript`)."""
        return bool(self.return_dict) and not self.torchscript

    @use_return_dict.setter
    def use_return_dict(self, value: bool) -> None:
        self.return_dict = value

    @property
    def id2label(self) -> dict[int, str]:
        """Class names by index; `LABEL_0`, `LABEL_1` until set, as in transformers."""
        return dict(self._id2label)

    @id2label.setter
    def id2label(self, value: dict) -> None:
        self._set_labels(value, None)

    @property
    def label2id(self) -> dict[str, int]:
        """Class indices by name, the inverse of `id2label` unless given."""
        return {name: i for i, name in self._id2label.items()}

    @label2id.setter
    def label2id(self, value: dict) -> None:
        self._set_labels(self._id2label, value)

    @property
    def num_labels(self) -> int:
        """The number of classes, `len(id2label)`. Setting another number
        renames the classes `LABEL_0` ... , as in transformers."""
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        _check_num_labels(value)
        if len(self._id2label) != value:
            self._set_labels({i: f"LABEL_{i}" for i in range(value)}, None)

    def _set_labels(self, id2label: Any, label2id: Any) -> None:
        """Check and store class names (`label2id`, derived, must agree when given)."""
        ids, names = _label_maps(id2label, label2id)
        if ids is None and names is not None and names != self.label2id:
            raise ValueError("ViTMAEConfig got a label2id without an id2label; give both")
        self._id2label = dict(DEFAULT_LABELS) if ids is None else ids

    def _transformers_dict(self) -> dict[str, Any]:
        """What `to_dict` writes beside the fields: class names other than the
        default two (JSON keys are strings), then the kept keys."""
        out: dict[str, Any] = {}
        if self._id2label != DEFAULT_LABELS:
            out["id2label"] = {str(k): v for k, v in self._id2label.items()}
            out["label2id"] = self.label2id
        return {**out, **copy.deepcopy(self.extra)}

    def _transformers_defaults(self) -> dict[str, Any]:
        """Every `PretrainedConfig` attribute at its default, and this config's
        classes: what `to_json_string(use_diff=False)` writes under the config."""
        return dict(
            PRETRAINED_DEFAULTS,
            **OUTPUT_FLAG_DEFAULTS,
            id2label={str(k): v for k, v in self.id2label.items()},
            label2id=self.label2id,
        )

    @property
    def encoder_parameters(self) -> int:
        """The encoder's parameter count (every model has it; the decoder and a
        head come on top): patch and position embeddings, blocks, final norm."""
        config = self._fields
        h, i = config.hidden_size, config.intermediate_size
        qkv = 3 * h if config.qkv_bias else 0
        block = 4 * h * h + qkv + h + 2 * h * i + i + h + 4 * h
        embeddings = config.patch_dim * h + h + h + (config.num_patches + 1) * h
        return embeddings + config.num_hidden_layers * block + 2 * h

    def check_memory(self) -> None:
        """Raise a `MemoryError` that names the sizes when the encoder's float32
        weights alone would not fit in this machine's memory: building the
        model would fail in TensorFlow or NumPy after allocating what it could."""
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not a POSIX system: not checked
            return
        config, needed = self._fields, 4 * self.encoder_parameters
        if needed > memory:
            raise MemoryError(
                f"This config's encoder alone has {self.encoder_parameters:,} parameters "
                f"({needed / 2**30:,.1f} GiB in float32), more than this machine's "
                f"{memory / 2**30:,.1f} GiB of memory (hidden_size={config.hidden_size}, "
                f"num_hidden_layers={config.num_hidden_layers}, intermediate_size="
                f"{config.intermediate_size}, {config.num_patches:,} patches of "
                f"image_size={config.image_size} / patch_size={config.patch_size})"
            )


def _check_num_labels(value: object) -> None:
    if not is_int(value) or value < 1:
        raise ValueError(f"ViTMAEConfig.num_labels must be a positive integer, received {value!r}")


def _label_maps(
    id2label: Any, label2id: Any
) -> tuple[dict[int, str] | None, dict[str, int] | None]:
    """`id2label` and `label2id` checked, with int ids (JSON keys are strings)."""
    for name, value in (("id2label", id2label), ("label2id", label2id)):
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"ViTMAEConfig.{name} must be a dict, received {type(value).__name__}")
    try:
        ids = None if id2label is None else {int(k): v for k, v in id2label.items()}
        names = None if label2id is None else {k: int(v) for k, v in label2id.items()}
    except (TypeError, ValueError):
        raise ValueError(
            "ViTMAEConfig.id2label must map class indices to names, and label2id names to "
            f"indices, received id2label={id2label!r}, label2id={label2id!r}"
        ) from None
    if ids is not None and sorted(ids) != list(range(len(ids))):
        raise ValueError(
            f"ViTMAEConfig.id2label must have the indices 0 to {len(ids) - 1}, received "
            f"{sorted(ids)}"
        )
    if ids is not None and names is not None and names != {v: k for k, v in ids.items()}:
        raise ValueError(
            f"ViTMAEConfig.label2id must be the inverse of id2label, received "
            f"label2id={label2id!r} for id2label={id2label!r}"
        )
    return ids, names


def merge_overrides(config_dict: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`config_dict` with `overrides` over it, as `from_dict` builds a config.

    A new `id2label` drops the old `label2id`. A valid `num_labels` other than
    `config_dict`'s class count, given without class names, drops both and
    warns: the classes become `LABEL_0` ... , as in transformers.
    """
    merged = {**config_dict, **overrides}
    if "id2label" in overrides and "label2id" not in overrides:
        merged.pop("label2id", None)  # the old names' inverse, not the new ones'
    count = overrides.get("num_labels")
    if not is_int(count) or count < 1 or {"id2label", "label2id"} & set(overrides):
        return merged
    if isinstance(config_dict.get("id2label"), dict) and len(config_dict["id2label"]) != count:
        ids, _ = _label_maps(config_dict["id2label"], None)  # checked before it is dropped
        names = list((ids or {}).values())
        shown = ", ".join(repr(n) for n in names[:5])
        more = f", ... ({len(names) - 5} more)" if len(names) > 5 else ""
        warnings.warn(
            f"num_labels={count} replaces the {len(names)} classes of the config's id2label "
            f"({shown}{more}) with LABEL_0 ... LABEL_{count - 1}",
            stacklevel=3,  # the caller of `from_dict`
        )
        for key in ("id2label", "label2id"):
            merged.pop(key, None)
    return merged


def check_extra_keys(kwargs: dict[str, Any], cls: type, taken: Container[str] = ()) -> None:
    """Refuse a setting these models do not have, a key that would replace a
    method or attribute of `cls` (or one already `taken` by the instance), and
    a key that looks like a misspelt name of `cls.FIELDS`; keep every other key
    (a config may come from a newer transformers)."""
    own = {*getattr(cls, "FIELDS", ()), "model_type"}
    for name, value in kwargs.items():
        if name.startswith("__") or hasattr(cls, name) or name in taken:
            attribute = inspect.getattr_static(cls, name, None)
            if name.startswith("__"):
                which = "is a Python special name"
            elif isinstance(attribute, property):
                which = f"names a property of {cls.__name__}"
            elif callable(attribute) or isinstance(attribute, (classmethod, staticmethod)):
                which = f"names a method of {cls.__name__}"
            else:
                which = f"names an attribute of {cls.__name__}"
            raise ValueError(
                f"ViTMAEConfig got the key {name!r}, which {which}; a config cannot set it "
                "(remove it from config.json)"
            )
        if name in UNSUPPORTED and value != PRETRAINED_DEFAULTS[name]:
            raise ValueError(
                f"ViTMAEConfig does not support {name}={value!r}: {UNSUPPORTED[name]}; "
                f"only {PRETRAINED_DEFAULTS[name]!r} is accepted"
            )
        if name in PRETRAINED_DEFAULTS:
            continue
        close = difflib.get_close_matches(name, own, n=1, cutoff=0.85)
        if close:
            raise ValueError(
                f"ViTMAEConfig got the unknown key {name!r}; did you mean {close[0]!r}?"
            )
