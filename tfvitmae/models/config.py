"""`ViTMAEConfig`: the model hyper-parameters, presets and validation.

Pure Python (no TensorFlow import), so configs can be read, validated and
written cheaply. The `config.json` format is the one Hugging Face uses for
`model_type: "vit_mae"`; keys this package does not know are kept verbatim.
"""

import copy
import json
import os

from .activations import ACTIVATIONS
from .files import atomic_write_text, read_json

CONFIG_NAME = "config.json"

# Hugging Face `PretrainedConfig` keys that carry no model structure; written
# so the file stays loadable by `transformers`, otherwise only passed through.
_HF_DEFAULTS = {"model_type": "vit_mae", "architectures": None}


def _pair(value):
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
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
        **kwargs: Further keys (for instance Hugging Face bookkeeping such as
            `architectures`, or `output_hidden_states`) kept as attributes and
            written back by `to_dict`.

    Example:
    >>> config = ViTMAEConfig.from_preset("base")
    >>> config.hidden_size
    768
    """

    model_type = "vit_mae"

    # Every field `from_dict` and `copy` accept by name (besides unknown keys,
    # which are kept verbatim): the structure, then Hugging Face's output flags.
    FIELDS = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "initializer_range",
        "layer_norm_eps",
        "image_size",
        "patch_size",
        "num_channels",
        "qkv_bias",
        "decoder_num_attention_heads",
        "decoder_hidden_size",
        "decoder_num_hidden_layers",
        "decoder_intermediate_size",
        "mask_ratio",
        "norm_pix_loss",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "use_return_dict",
    )

    def __init__(
        self,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        image_size=224,
        patch_size=16,
        num_channels=3,
        qkv_bias=True,
        decoder_num_attention_heads=16,
        decoder_hidden_size=512,
        decoder_num_hidden_layers=8,
        decoder_intermediate_size=2048,
        mask_ratio=0.75,
        norm_pix_loss=False,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.qkv_bias = qkv_bias
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_intermediate_size = decoder_intermediate_size
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.output_attentions = kwargs.pop("output_attentions", False)
        self.output_hidden_states = kwargs.pop("output_hidden_states", False)
        self.use_return_dict = kwargs.pop("return_dict", kwargs.pop("use_return_dict", True))
        # "vit" marks a transformers ViT (classification) config; the fields are the same.
        self.model_type = kwargs.pop("model_type", type(self).model_type)
        if self.model_type not in ("vit_mae", "vit"):
            raise ValueError(
                f"ViTMAEConfig.model_type must be 'vit_mae' or 'vit', received {self.model_type!r}"
            )
        self.extra = kwargs
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self):
        """Raise `ValueError` naming the first invalid field and its value."""

        def fail(field, expected):
            raise ValueError(
                f"ViTMAEConfig.{field} must be {expected}, received {getattr(self, field)!r}"
            )

        def positive_int(field):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                fail(field, "a positive integer")

        def non_negative_int(field):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(field, "a non-negative integer")

        def probability(field):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                fail(field, "a number in [0, 1)")

        for field in (
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "num_channels",
            "decoder_num_attention_heads",
            "decoder_hidden_size",
            "decoder_intermediate_size",
        ):
            positive_int(field)
        non_negative_int("num_hidden_layers")
        non_negative_int("decoder_num_hidden_layers")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "mask_ratio"):
            probability(field)
        for field in ("initializer_range", "layer_norm_eps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                fail(field, "a positive number")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            fail("hidden_act", f"one of {list(ACTIVATIONS)}")
        for field in ("qkv_bias", "norm_pix_loss"):
            if not isinstance(getattr(self, field), bool):
                fail(field, "True or False")
        for field in ("image_size", "patch_size"):
            value = getattr(self, field)
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            if isinstance(value, (list, tuple)):
                ok = len(value) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
                )
            if not ok:
                fail(field, "a positive integer or a (height, width) pair of them")
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
        if self.num_patches < 1:
            raise ValueError(f"ViTMAEConfig gives no patches: image_size={self.image_size!r}")
        if int(self.num_patches * (1 - self.mask_ratio)) < 1:
            raise ValueError(
                f"ViTMAEConfig.mask_ratio {self.mask_ratio} keeps none of the "
                f"{self.num_patches} patches, so the encoder would see nothing; it must be at "
                f"most {1 - 1 / self.num_patches:.4g} for this image and patch size"
            )

    # ------------------------------------------------------------ derived sizes
    @property
    def image_hw(self):
        """`(height, width)` of the input images."""
        return _pair(self.image_size)

    @property
    def patch_hw(self):
        """`(height, width)` of one patch."""
        return _pair(self.patch_size)

    @property
    def grid_size(self):
        """`(rows, cols)` of the patch grid."""
        (image_h, image_w), (patch_h, patch_w) = self.image_hw, self.patch_hw
        return image_h // patch_h, image_w // patch_w

    @property
    def num_patches(self):
        rows, cols = self.grid_size
        return rows * cols

    @property
    def patch_dim(self):
        """Length of one flattened patch, `patch_h * patch_w * num_channels`."""
        patch_h, patch_w = self.patch_hw
        return patch_h * patch_w * self.num_channels

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self):
        """The `config.json` content, Hugging Face compatible."""
        out = {
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "initializer_range": self.initializer_range,
            "layer_norm_eps": self.layer_norm_eps,
            "image_size": list(self.image_size)
            if isinstance(self.image_size, tuple)
            else self.image_size,
            "patch_size": list(self.patch_size)
            if isinstance(self.patch_size, tuple)
            else self.patch_size,
            "num_channels": self.num_channels,
            "qkv_bias": self.qkv_bias,
            "decoder_num_attention_heads": self.decoder_num_attention_heads,
            "decoder_hidden_size": self.decoder_hidden_size,
            "decoder_num_hidden_layers": self.decoder_num_hidden_layers,
            "decoder_intermediate_size": self.decoder_intermediate_size,
            "mask_ratio": self.mask_ratio,
            "norm_pix_loss": self.norm_pix_loss,
        }
        if self.output_attentions:
            out["output_attentions"] = True
        if self.output_hidden_states:
            out["output_hidden_states"] = True
        if not self.use_return_dict:
            out["return_dict"] = False
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_dict(cls, config_dict, **overrides):
        """Build a config from a dict such as a parsed `config.json`.

        `model_type` must be `"vit_mae"`, or `"vit"` (a transformers ViT, e.g.
        `ViTForImageClassification`, whose encoder fields are the same; the
        decoder fields then keep their defaults). Other types are rejected,
        since their keys would silently mean something else.
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
        merged = dict(config_dict)
        merged.update(overrides)
        return cls(**merged)

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory):
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
    def from_json_file(cls, path):
        return cls.from_dict(read_json(path))

    @classmethod
    def from_pretrained(cls, directory_or_file, **overrides):
        """Read a config from a directory holding `config.json`, or a json file."""
        path = directory_or_file
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
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
    def from_preset(cls, name, **overrides):
        """A published size (`"base"`, `"large"`, `"huge"`), optionally changed."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # --------------------------------------------------------------- python API
    def __eq__(self, other):
        return isinstance(other, ViTMAEConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"

    def copy(self, **overrides):
        """A new config with the given fields changed (and re-validated)."""
        return type(self).from_dict(self.to_dict(), **overrides)


# The released MAE sizes (He et al. 2021; `facebook/vit-mae-{base,large,huge}`).
# The decoder (512 wide, 8 blocks, 16 heads) is the same for every size.
PRESETS = {
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


def as_config(config):
    """`config` as a `ViTMAEConfig`: one is returned as is, a dict is parsed."""
    if isinstance(config, ViTMAEConfig):
        return config
    if isinstance(config, dict):
        return ViTMAEConfig.from_dict(config)
    raise ValueError(f"config must be a ViTMAEConfig or a dict, received {type(config).__name__}")
