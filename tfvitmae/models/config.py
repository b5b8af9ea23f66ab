"""`ViTMAEConfig`: the model hyper-parameters, presets and validation.

Pure Python (no TensorFlow import), so configs can be read, validated and
written cheaply. The `config.json` format is the one Hugging Face uses for
`model_type: "vit_mae"`. What transformers' `PretrainedConfig` adds (kept keys,
class names, refused settings, the memory estimate) is in `config_compat.py`.
"""

import json
import math
import os
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar, cast

from ..checkpoints.formats import CONFIG_NAME, inside_folder
from ..utils.checks import is_int
from ..utils.files import atomic_write_text, read_json
from ..utils.types import PathLike
from . import config_compat as compat

__all__ = ["ACTIVATION_NAMES", "PRESETS", "ViTMAEConfig", "as_config"]

# The `hidden_act` names (Hugging Face's) that the models implement, in
# `activations.ACTIVATIONS`; listed here so that a config imports no Keras.
ACTIVATION_NAMES: tuple[str, ...] = (
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_fast",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
)

# An image or patch size: one side for a square, or `(height, width)` (a list in JSON).
_Size = int | tuple[int, int] | list[int]
_Config = TypeVar("_Config", bound="ViTMAEConfig")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_size(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return len(value) == 2 and all(is_int(v) and v > 0 for v in value)
    return is_int(value) and value > 0


# What each kind of field must be: the wording of the error, and the check.
_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "positive_int": ("a positive integer", lambda v: is_int(v) and v > 0),
    "non_negative_int": ("a non-negative integer", lambda v: is_int(v) and v >= 0),
    "probability": ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
    "positive_number": (
        "a positive, finite number",
        lambda v: _is_number(v) and v > 0 and math.isfinite(v),
    ),
    "bool": ("True or False", lambda v: isinstance(v, bool)),
    "size": ("a positive integer or a (height, width) pair of them", _is_size),
    "activation": (
        f"one of {list(ACTIVATION_NAMES)}",
        lambda v: isinstance(v, str) and v in ACTIVATION_NAMES,
    ),
}
# The fields, in `__init__`'s order (`ViTMAEConfig.STRUCTURE`, what `to_dict`
# writes), each with the kind of value it must be.
_FIELD_KINDS: dict[str, str] = {
    "hidden_size": "positive_int",
    "num_hidden_layers": "non_negative_int",
    "num_attention_heads": "positive_int",
    "intermediate_size": "positive_int",
    "hidden_act": "activation",
    "hidden_dropout_prob": "probability",
    "attention_probs_dropout_prob": "probability",
    "initializer_range": "positive_number",
    "layer_norm_eps": "positive_number",
    "image_size": "size",
    "patch_size": "size",
    "num_channels": "positive_int",
    "qkv_bias": "bool",
    "decoder_num_attention_heads": "positive_int",
    "decoder_hidden_size": "positive_int",
    "decoder_num_hidden_layers": "non_negative_int",
    "decoder_intermediate_size": "positive_int",
    "mask_ratio": "probability",
    "norm_pix_loss": "bool",
}


def _pair(value: _Size) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        # A pair once validated (`_is_size`).
        return cast("tuple[int, int]", tuple(int(v) for v in value))
    return (int(value), int(value))


class ViTMAEConfig(compat.PretrainedConfigCompat):
    """Configuration of a ViTMAE model (encoder and pretraining decoder).

    Every argument and default follows Hugging Face's `ViTMAEConfig`, so a
    `config.json` written by either library loads in the other.

    Args:
        hidden_size: Encoder width `D`.
        num_hidden_layers: Number of encoder blocks.
        num_attention_heads: Encoder attention heads; must divide `hidden_size`.
        intermediate_size: Width of the encoder MLP.
        hidden_act: MLP activation, one of `ACTIVATION_NAMES`. `"gelu"` is the
            exact erf GELU, as in PyTorch.
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
        **kwargs: As in transformers' `PretrainedConfig` (`config_compat`): the
            output flags (`output_attentions`, `output_hidden_states`,
            `return_dict`, `torchscript`), the class names (`id2label`,
            `label2id`, `num_labels`), and any other key (`architectures`), kept
            and written back. Settings these models do not have
            (`is_decoder=True`) and misspelt fields (`hiden_size`) raise.

    Example:
    >>> config = ViTMAEConfig.from_preset("base")
    >>> config.hidden_size
    768
    """

    model_type: str = "vit_mae"
    # `STRUCTURE`: the `__init__` arguments, in order (what `to_dict` writes).
    # `FIELDS`: every name `from_dict`, `copy` and `from_pretrained` accept: the
    # structure, transformers' output flags, and the class names.
    STRUCTURE: tuple[str, ...] = tuple(_FIELD_KINDS)
    OUTPUT_FLAGS: tuple[str, ...] = (*compat.OUTPUT_FLAG_DEFAULTS, "use_return_dict")
    FIELDS: tuple[str, ...] = STRUCTURE + OUTPUT_FLAGS + compat.PretrainedConfigCompat.LABEL_FIELDS

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
        # transformers' output flags, at `compat.OUTPUT_FLAG_DEFAULTS` unless given.
        self.output_attentions: bool = kwargs.pop("output_attentions", False)
        self.output_hidden_states: bool = kwargs.pop("output_hidden_states", False)
        self.return_dict: bool = kwargs.pop("return_dict", kwargs.pop("use_return_dict", True))
        self.torchscript: bool = kwargs.pop("torchscript", False)
        # "vit" marks a transformers ViT (classification) config; the fields are the same.
        self.model_type = kwargs.pop("model_type", type(self).model_type)
        if self.model_type not in ("vit_mae", "vit"):  # other types' keys mean other things
            raise ValueError(
                f"Expected a config with model_type 'vit_mae' (or 'vit'), received "
                f"{self.model_type!r}"
            )
        self._keep_transformers_keys(kwargs)  # class names, then the other keys
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise `ValueError` naming the first invalid field and its value."""
        for field, kind in _FIELD_KINDS.items():
            expected, is_valid = _KINDS[kind]
            value = getattr(self, field)
            if not is_valid(value):
                raise ValueError(f"ViTMAEConfig.{field} must be {expected}, received {value!r}")
        for name, width, heads in (
            ("hidden_size", self.hidden_size, self.num_attention_heads),
            ("decoder_hidden_size", self.decoder_hidden_size, self.decoder_num_attention_heads),
        ):
            if width % heads:
                raise ValueError(
                    f"ViTMAEConfig.{name} ({width}) must be divisible by the number of "
                    f"attention heads ({heads}), received {name}={width}"
                )
            if width % 4:  # the 2-D sin-cos position table splits the width in four
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

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content, Hugging Face compatible."""
        out: dict[str, Any] = {"model_type": self.model_type}
        for name in self.STRUCTURE:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        for flag, default in compat.OUTPUT_FLAG_DEFAULTS.items():
            if bool(getattr(self, flag)) != default:
                out[flag] = not default
        return {**out, **self._transformers_dict()}

    @classmethod
    def from_dict(cls: type[_Config], config_dict: dict[str, Any], **overrides: Any) -> _Config:
        """Build a config from a dict such as a parsed `config.json`, with
        `overrides` over it (`config_compat.merge_overrides`: another
        `num_labels` renames the classes, with a warning).

        `model_type` must be `"vit_mae"`, or `"vit"` (a transformers ViT, whose
        encoder fields are the same; the decoder fields keep their defaults).
        """
        if not isinstance(config_dict, dict):
            raise ValueError(
                f"ViTMAEConfig.from_dict expects a dict, received {type(config_dict).__name__}"
            )
        return cls(**compat.merge_overrides(config_dict, overrides))

    def to_json_string(self, use_diff: bool = True) -> str:
        """The `config.json` text. `use_diff=False` also writes every
        `PretrainedConfig` attribute that is at its default, as transformers does."""
        config = self.to_dict() if use_diff else {**self._transformers_defaults(), **self.to_dict()}
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


def as_config(config: ViTMAEConfig | dict[str, Any]) -> ViTMAEConfig:
    """`config` as a `ViTMAEConfig`: one is returned as is, a dict is parsed."""
    if isinstance(config, ViTMAEConfig):
        return config
    if isinstance(config, dict):
        return ViTMAEConfig.from_dict(config)
    raise ValueError(f"config must be a ViTMAEConfig or a dict, received {type(config).__name__}")
