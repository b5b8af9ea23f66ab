"""`ViTMAEConfig`: the model hyper-parameters, presets and validation.

Pure Python (no TensorFlow import), so configs can be read, validated and
written cheaply. The `config.json` format is the one Hugging Face uses for
`model_type: "vit_mae"`; keys this package does not know are kept verbatim.
"""

import copy
import difflib
import inspect
import json
import math
import os
import warnings
from collections.abc import Container
from typing import Any, TypeGuard, TypeVar, cast

from ..checkpoints.formats import CONFIG_NAME, inside_folder
from ..utils.files import atomic_write_text, read_json
from ..utils.types import PathLike
from .activations import ACTIVATIONS

__all__ = ["PRESETS", "ViTMAEConfig", "as_config"]

# An image or patch size: one side for a square, or `(height, width)` (a list in JSON).
_Size = int | tuple[int, int] | list[int]
_Config = TypeVar("_Config", bound="ViTMAEConfig")


def _pair(value: _Size) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        # A pair once validated (`_is_size`).
        return cast("tuple[int, int]", tuple(int(v) for v in value))
    return (int(value), int(value))


class ViTMAEConfig:
    """Configuration of a ViTMAE model (encoder and pretraining decoder).

    Every argument and default follows Hugging Face's `ViTMAEConfig`, so a
    `config.json` written by either library loads in the other.

    Args:
        hidden_size: Encoder width `D`.
        num_hidden_layers: Number of encoder blocks.
        num_attention_heads: Encoder attention heads; must divide `hidden_size`.
        intermediate_size: Width of the encoder MLP.
        hidden_act: MLP activation, a key of `activations.ACTIVATIONS`. `"gelu"` is the exact
            erf GELU, as in PyTorch.
        hidden_dropout_prob: Dropout after each attention/MLP output projection.
        attention_probs_dropout_prob: Dropout on the attention probabilities.
        initializer_range: Standard deviation of the truncated-normal init of
            Dense kernels and of the CLS and mask tokens.
        layer_norm_eps: LayerNorm epsilon (1e-12 in Hugging Face checkpoints,
            1e-6 in the original MAE release).
        image_size: Input resolution, an int or `(height, width)`.
        patch_size: Patch size, an int or `(height, width)`.
        num_channels: Image channels.
        qkv_bias: Whether the query/key/value projections have a bias.
        decoder_num_attention_heads: Decoder attention heads.
        decoder_hidden_size: Decoder width.
        decoder_num_hidden_layers: Number of decoder blocks.
        decoder_intermediate_size: Width of the decoder MLP.
        mask_ratio: Fraction of patches removed, in `[0, 1)`.
        norm_pix_loss: Whether the loss target is each patch normalised by its
            own mean and (unbiased) variance.
        **kwargs: As in transformers' `PretrainedConfig`:
            `output_attentions`, `output_hidden_states` and `return_dict` (the
            models' defaults); `id2label`, `label2id` and `num_labels` (class
            names); and any other key (for instance `architectures`), kept as an
            attribute and written back by `to_dict`. `PretrainedConfig`'s other
            attributes read as its defaults when absent (`config.is_decoder` is
            False). Settings these models do not have (`is_decoder=True`,
            `pruned_heads`, ...) and keys that look like a misspelt field
            (`hiden_size`) raise.

    Example:
    >>> config = ViTMAEConfig.from_preset("base")
    >>> config.hidden_size
    768
    """

    model_type: str = "vit_mae"

    # `STRUCTURE` (the `__init__` arguments, in order; what `to_dict` writes)
    # and `FIELDS` (every field `from_dict`, `copy` and `from_pretrained`
    # accept by name: the structure, then Hugging Face's output flags) are
    # read from the signature below the class.
    STRUCTURE: tuple[str, ...] = ()
    FIELDS: tuple[str, ...] = ()
    OUTPUT_FLAGS: tuple[str, ...] = (
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "use_return_dict",
    )
    LABEL_FIELDS: tuple[str, ...] = ("id2label", "label2id", "num_labels")

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        image_size: _Size = 224,
        patch_size: _Size = 16,
        num_channels: int = 3,
        qkv_bias: bool = True,
        decoder_num_attention_heads: int = 16,
        decoder_hidden_size: int = 512,
        decoder_num_hidden_layers: int = 8,
        decoder_intermediate_size: int = 2048,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        **kwargs: Any,
    ):
        self.hidden_size: int = hidden_size
        self.num_hidden_layers: int = num_hidden_layers
        self.num_attention_heads: int = num_attention_heads
        self.intermediate_size: int = intermediate_size
        self.hidden_act: str = hidden_act
        self.hidden_dropout_prob: float = hidden_dropout_prob
        self.attention_probs_dropout_prob: float = attention_probs_dropout_prob
        self.initializer_range: float = initializer_range
        self.layer_norm_eps: float = layer_norm_eps
        self.image_size: _Size = image_size
        self.patch_size: _Size = patch_size
        self.num_channels: int = num_channels
        self.qkv_bias: bool = qkv_bias
        self.decoder_num_attention_heads: int = decoder_num_attention_heads
        self.decoder_hidden_size: int = decoder_hidden_size
        self.decoder_num_hidden_layers: int = decoder_num_hidden_layers
        self.decoder_intermediate_size: int = decoder_intermediate_size
        self.mask_ratio: float = mask_ratio
        self.norm_pix_loss: bool = norm_pix_loss
        self.output_attentions: bool = kwargs.pop("output_attentions", False)
        self.output_hidden_states: bool = kwargs.pop("output_hidden_states", False)
        self.return_dict: bool = kwargs.pop("return_dict", kwargs.pop("use_return_dict", True))
        # "vit" marks a transformers ViT (classification) config; the fields are the same.
        self.model_type = kwargs.pop("model_type", type(self).model_type)
        if self.model_type not in ("vit_mae", "vit"):
            raise ValueError(
                f"ViTMAEConfig.model_type must be 'vit_mae' or 'vit', received {self.model_type!r}"
            )
        self._id2label: dict[int, str] = dict(_DEFAULT_LABELS)
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
        _check_extra_keys(kwargs, type(self), taken=vars(self))
        for name, value in kwargs.items():
            setattr(self, name, value)
        self.validate()

    # ------------------------------------------------ transformers' attributes
    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not set: `PretrainedConfig`'s
        # attributes read as its defaults, as in transformers.
        if name in _PRETRAINED_DEFAULTS:
            return copy.deepcopy(_PRETRAINED_DEFAULTS[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def extra(self) -> dict[str, Any]:
        """The keys that are not fields of this class, as given (read-only view)."""
        return {k: v for k, v in vars(self).items() if k not in _OWN and not k.startswith("_")}

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
        """Check and store class names (`label2id`, derived, must agree when
        given). JSON keys are strings: ids become ints."""
        for name, value in (("id2label", id2label), ("label2id", label2id)):
            if value is not None and not isinstance(value, dict):
                raise ValueError(
                    f"ViTMAEConfig.{name} must be a dict, received {type(value).__name__}"
                )
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
        if ids is None and names is not None and names != self.label2id:
            raise ValueError("ViTMAEConfig got a label2id without an id2label; give both")
        self._id2label = dict(_DEFAULT_LABELS) if ids is None else ids

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise `ValueError` naming the first invalid field and its value."""
        for kind, fields in _FIELD_KINDS.items():
            expected, is_valid = _KINDS[kind]
            for field in fields:
                value = getattr(self, field)
                if not is_valid(value):
                    raise ValueError(f"ViTMAEConfig.{field} must be {expected}, received {value!r}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"ViTMAEConfig.hidden_act must be one of {list(ACTIVATIONS)}, "
                f"received {self.hidden_act!r}"
            )
        self._validate_shapes()

    def _validate_shapes(self) -> None:
        """The fields that must fit each other: widths, heads, image and patch sizes."""
        for name, width, heads in (
            ("hidden_size", self.hidden_size, self.num_attention_heads),
            ("decoder_hidden_size", self.decoder_hidden_size, self.decoder_num_attention_heads),
        ):
            if width % heads:
                raise ValueError(
                    f"ViTMAEConfig.{name} ({width}) must be divisible by the number of "
                    f"attention heads ({heads}), received {name}={width}"
                )
            if width % 4:
                # The 2-D sin-cos position table splits the width in four.
                raise ValueError(
                    f"ViTMAEConfig.{name} must be divisible by 4 for the 2-D sin-cos "
                    f"position embeddings, received {width}"
                )
        (image_h, image_w), (patch_h, patch_w) = self.image_hw, self.patch_hw
        if image_h % patch_h or image_w % patch_w:
            raise ValueError(
                f"ViTMAEConfig.image_size must be divisible by patch_size {self.patch_size!r}, "
                f"received image_size={self.image_size!r}"
            )
        if int(self.num_patches * (1 - self.mask_ratio)) < 1:
            raise ValueError(
                f"ViTMAEConfig.mask_ratio {self.mask_ratio} keeps none of the "
                f"{self.num_patches} patches, so the encoder would see nothing; it must be at "
                f"most {1 - 1 / self.num_patches:.4g} for this image and patch size"
            )

    # ------------------------------------------------------------ derived sizes
    @property
    def image_hw(self) -> tuple[int, int]:
        """`(height, width)` of the input images."""
        return _pair(self.image_size)

    @property
    def patch_hw(self) -> tuple[int, int]:
        """`(height, width)` of one patch."""
        return _pair(self.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """`(rows, cols)` of the patch grid."""
        (image_h, image_w), (patch_h, patch_w) = self.image_hw, self.patch_hw
        return image_h // patch_h, image_w // patch_w

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch, `patch_h * patch_w * num_channels`."""
        patch_h, patch_w = self.patch_hw
        return patch_h * patch_w * self.num_channels

    @property
    def encoder_parameters(self) -> int:
        """The encoder's parameter count (every model has it; the decoder and a
        head come on top): patch and position embeddings, blocks, final norm."""
        h, i = self.hidden_size, self.intermediate_size
        qkv = 3 * h if self.qkv_bias else 0
        block = 4 * h * h + qkv + h + 2 * h * i + i + h + 4 * h
        embeddings = self.patch_dim * h + h + h + (self.num_patches + 1) * h
        return embeddings + self.num_hidden_layers * block + 2 * h

    def check_memory(self) -> None:
        """Raise a `MemoryError` that names the sizes when the encoder's float32
        weights alone would not fit in this machine's memory: building the
        model would fail in TensorFlow or NumPy after allocating what it could."""
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not a POSIX system: not checked
            return
        needed = 4 * self.encoder_parameters
        if needed > memory:
            raise MemoryError(
                f"This config's encoder alone has {self.encoder_parameters:,} parameters "
                f"({needed / 2**30:,.1f} GiB in float32), more than this machine's "
                f"{memory / 2**30:,.1f} GiB of memory (hidden_size={self.hidden_size}, "
                f"num_hidden_layers={self.num_hidden_layers}, intermediate_size="
                f"{self.intermediate_size}, {self.num_patches:,} patches of "
                f"image_size={self.image_size} / patch_size={self.patch_size})"
            )

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content, Hugging Face compatible."""
        out: dict[str, Any] = {"model_type": self.model_type}
        for name in self.STRUCTURE:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        if self.output_attentions:
            out["output_attentions"] = True
        if self.output_hidden_states:
            out["output_hidden_states"] = True
        if not self.return_dict:
            out["return_dict"] = False
        if self._id2label != _DEFAULT_LABELS:  # other classes (JSON keys are strings)
            out["id2label"] = {str(k): v for k, v in self._id2label.items()}
            out["label2id"] = self.label2id
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_dict(cls: type[_Config], config_dict: dict[str, Any], **overrides: Any) -> _Config:
        """Build a config from a dict such as a parsed `config.json`.

        `model_type` must be `"vit_mae"`, or `"vit"` (a transformers ViT, e.g.
        `ViTForImageClassification`, whose encoder fields are the same; the
        decoder fields then keep their defaults). Other types are rejected,
        since their keys would silently mean something else. An `overrides`
        `num_labels` other than `config_dict`'s class count (given without
        an `id2label`) renames the classes `LABEL_0` ... with a warning, as
        transformers does; the two disagreeing in one dict are refused.
        """
        if not isinstance(config_dict, dict):
            raise ValueError(
                f"ViTMAEConfig.from_dict expects a dict, received {type(config_dict).__name__}"
            )
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type not in (cls.model_type, "vit"):
            raise ValueError(
                f"Expected a config with model_type {cls.model_type!r} (or 'vit'), received "
                f"{model_type!r}"
            )
        merged = {**config_dict, **overrides}
        if "id2label" in overrides and "label2id" not in overrides:
            merged.pop("label2id", None)  # the old names' inverse, not the new ones'
        if _relabels(config_dict, overrides):
            # transformers' way: another class count renames the classes (and warns).
            names = list(ViTMAEConfig(id2label=config_dict["id2label"]).id2label.values())
            warnings.warn(
                f"num_labels={overrides['num_labels']} replaces the {len(names)} classes of the "
                f"config's id2label ({_shown(names)}) with LABEL_0 ... "
                f"LABEL_{overrides['num_labels'] - 1}",
                stacklevel=2,
            )
            for key in ("id2label", "label2id"):
                merged.pop(key, None)
        return cls(**merged)

    def to_json_string(self, use_diff: bool = True) -> str:
        """The `config.json` text. `use_diff=False` also writes every
        `PretrainedConfig` attribute that is at its default, as transformers does."""
        config = self.to_dict()
        if not use_diff:  # the defaults first: what this config sets overrides them
            defaults = dict(
                _PRETRAINED_DEFAULTS,
                output_attentions=False,
                output_hidden_states=False,
                return_dict=True,
                id2label={str(k): v for k, v in self.id2label.items()},
                label2id=self.label2id,
            )
            config = {**defaults, **config}
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: PathLike, use_diff: bool = True) -> str:
        """Write the `config.json` text to `json_file_path` (atomically); return the path."""
        return atomic_write_text(os.fspath(json_file_path), self.to_json_string(use_diff))

    def update(self, config_dict: dict[str, Any]) -> None:
        """Set the given fields and keys, then re-validate; a failure changes nothing."""
        updated = self.copy(**config_dict)
        self.__dict__.clear()
        self.__dict__.update(updated.__dict__)

    def save_pretrained(self, save_directory: PathLike) -> str:
        """Write `config.json` into `save_directory` (created if missing).

        The file is written to a temporary name and moved into place, so an
        interrupted save never leaves a truncated `config.json`.
        """
        if os.path.isfile(save_directory):
            raise ValueError(
                f"save_directory must be a directory, received the file {save_directory!r}"
            )
        os.makedirs(save_directory, exist_ok=True)
        return atomic_write_text(os.path.join(save_directory, CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_json_file(cls: type[_Config], path: PathLike) -> _Config:
        """Read a `config.json`; an invalid one raises a `ValueError` naming the file."""
        try:
            return cls.from_dict(read_json(path))
        except ValueError as e:
            if os.fspath(path) in str(e):  # read_json names it already
                raise
            raise ValueError(f"{os.fspath(path)}: {e}") from None

    @classmethod
    def from_pretrained(
        cls: type[_Config],
        directory_or_file: PathLike,
        subfolder: str | None = None,
        **overrides: Any,
    ) -> _Config:
        """Read a config from a directory holding `config.json` (or its
        `subfolder`), or a json file; `overrides` change fields."""
        path = os.fspath(directory_or_file)
        if subfolder:  # what a folder holds stays inside it, links too
            path = inside_folder(path, subfolder, what="The subfolder")
        if os.path.isdir(path):
            path = inside_folder(path, CONFIG_NAME, what="Refused")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Expected a directory containing {CONFIG_NAME} or a JSON file, "
                f"found nothing at {path!r}"
            )
        config = cls.from_json_file(path)
        if overrides:
            config = cls.from_dict(config.to_dict(), **overrides)
        return config

    @classmethod
    def from_preset(cls: type[_Config], name: str, **overrides: Any) -> _Config:
        """A published size (`"base"`, `"large"`, `"huge"`), optionally changed."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # --------------------------------------------------------------- python API
    def __eq__(self, other: object) -> bool:
        return isinstance(other, ViTMAEConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def copy(self: _Config, **overrides: Any) -> _Config:
        """A new config with the given fields changed (and re-validated)."""
        return type(self).from_dict(self.to_dict(), **overrides)


# The released MAE sizes (He et al. 2021; `facebook/vit-mae-{base,large,huge}`).
# The decoder (512 wide, 8 blocks, 16 heads) is the same for every size.
PRESETS: dict[str, dict[str, int]] = {
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=16,
    ),
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        patch_size=16,
    ),
    "huge": dict(
        hidden_size=1280,
        num_hidden_layers=32,
        num_attention_heads=16,
        intermediate_size=5120,
        patch_size=14,
    ),
}


ViTMAEConfig.STRUCTURE = tuple(inspect.signature(ViTMAEConfig.__init__).parameters)[1:-1]
ViTMAEConfig.FIELDS = ViTMAEConfig.STRUCTURE + ViTMAEConfig.OUTPUT_FLAGS + ViTMAEConfig.LABEL_FIELDS
# transformers' classes of a config that names none (written only when others are set).
_DEFAULT_LABELS = {0: "LABEL_0", 1: "LABEL_1"}
# Attributes that are this class's own, not kept keys (`extra`).
_OWN = frozenset(ViTMAEConfig.FIELDS) | {"model_type"}

# transformers' `PretrainedConfig` attributes that every config has, read as
# these defaults when a config does not set them. They are bookkeeping here
# (these models do not read them), kept and written back when given.
_PRETRAINED_DEFAULTS: dict[str, Any] = {
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
    "torchscript": False,
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
# `PretrainedConfig` settings that change what a transformers model computes
# and that these models do not have: only their defaults are accepted.
_UNSUPPORTED = {
    "is_decoder": "ViTMAE is an encoder (and a pretraining decoder without causal masking)",
    "is_encoder_decoder": "ViTMAE is not a sequence-to-sequence model",
    "add_cross_attention": "ViTMAE has no cross-attention",
    "tie_encoder_decoder": "ViTMAE's decoder has its own weights",
    "pruned_heads": "head pruning is not implemented",
    "chunk_size_feed_forward": "feed-forward chunking is not implemented",
}


def _check_num_labels(value: object) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"ViTMAEConfig.num_labels must be a positive integer, received {value!r}")


def _relabels(config_dict: dict[str, Any], overrides: dict[str, Any]) -> bool:
    """Whether `overrides` gives a valid class count, without class names,
    that differs from the classes `config_dict` names."""
    count = overrides.get("num_labels")
    if not _is_int(count) or count < 1 or {"id2label", "label2id"} & set(overrides):
        return False
    id2label = config_dict.get("id2label")
    return isinstance(id2label, dict) and len(id2label) != count


def _shown(names: list[str], most: int = 5) -> str:
    """At most `most` class names, for a message."""
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(repr(n) for n in names[:most]) + more


def _check_extra_keys(kwargs: dict[str, Any], cls: type, taken: Container[str] = ()) -> None:
    """Refuse a setting these models do not have, a key that would replace a
    method or attribute of `cls` (or one already `taken` by the instance), and
    a key that looks like a misspelt field; keep every other key (a config may
    come from a newer transformers)."""
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
        if name in _UNSUPPORTED and value != _PRETRAINED_DEFAULTS[name]:
            raise ValueError(
                f"ViTMAEConfig does not support {name}={value!r}: {_UNSUPPORTED[name]}; "
                f"only {_PRETRAINED_DEFAULTS[name]!r} is accepted"
            )
        if name in _PRETRAINED_DEFAULTS:
            continue
        close = difflib.get_close_matches(name, _OWN, n=1, cutoff=0.85)
        if close:
            raise ValueError(
                f"ViTMAEConfig got the unknown key {name!r}; did you mean {close[0]!r}?"
            )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_size(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return len(value) == 2 and all(_is_int(v) and v > 0 for v in value)
    return _is_int(value) and value > 0


# What each kind of field must be: the wording of the error, and the check.
_KINDS = {
    "positive_int": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "non_negative_int": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "probability": ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
    "positive_number": (
        "a positive, finite number",
        lambda v: _is_number(v) and v > 0 and math.isfinite(v),
    ),
    "bool": ("True or False", lambda v: isinstance(v, bool)),
    "size": ("a positive integer or a (height, width) pair of them", _is_size),
}
_FIELD_KINDS = {
    "positive_int": (
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "num_channels",
        "decoder_num_attention_heads",
        "decoder_hidden_size",
        "decoder_intermediate_size",
    ),
    "non_negative_int": ("num_hidden_layers", "decoder_num_hidden_layers"),
    "probability": ("hidden_dropout_prob", "attention_probs_dropout_prob", "mask_ratio"),
    "positive_number": ("initializer_range", "layer_norm_eps"),
    "bool": ("qkv_bias", "norm_pix_loss"),
    "size": ("image_size", "patch_size"),
}


def as_config(config: ViTMAEConfig | dict[str, Any]) -> ViTMAEConfig:
    """`config` as a `ViTMAEConfig`: one is returned as is, a dict is parsed."""
    if isinstance(config, ViTMAEConfig):
        return config
    if isinstance(config, dict):
        return ViTMAEConfig.from_dict(config)
    raise ValueError(f"config must be a ViTMAEConfig or a dict, received {type(config).__name__}")
