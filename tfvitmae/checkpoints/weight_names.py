"""The PyTorch <-> Keras weight-name table.

One table maps every Keras variable to its name in each checkpoint layout and
to the transform between the two array layouts. It is read in both
directions (by `state_dicts`): loading turns checkpoint arrays into Keras
arrays, saving turns Keras arrays into a `transformers`-loadable state dict.

Layouts:
- `transformers`: Hugging Face `ViTMAEForPreTraining`, as on the Hub
  (`vit.encoder.layer.{i}.attention.attention.query.weight`, ...).
- `transformers-v5`: the same model's in-memory names in transformers 5
  (`vit.layers.{i}.attention.q_proj.weight`, ...), as in `torch.save(model.state_dict())`.
  transformers 5 also *saves* decoder blocks as `decoder.decoder_encoder.layer.{i}`;
  that prefix is accepted too.
- `mae`: the original MAE release (`blocks.{i}.attn.qkv.weight`, ...).
- `tf-legacy`: Hugging Face's removed TensorFlow port (`tf_model.h5`), whose
  names follow the `transformers` ones with `/` separators and Keras layouts.
- `keras`: this package's own variable paths (`vit/layer_{i}/attention/qkv/kernel`).

Names with `{a,b,c}` are stored as several tensors in the checkpoint and as one
fused Keras variable (concatenated along the last Keras axis), e.g. the
separate query/key/value projections of `transformers` versus our fused QKV.
"""

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .formats import CheckpointError

__all__ = [
    "ALIASES",
    "BLOCK_TABLE",
    "CONV",
    "Entry",
    "FORMATS",
    "HEAD_TABLE",
    "LINEAR",
    "MODEL_TABLE",
    "NONE",
    "PARTS",
    "STACK_TABLE",
    "add_model_prefix",
    "block_counts",
    "canonical_names",
    "detect_format",
    "keras_variables",
    "mae_config_values",
    "model_parts",
    "part_of",
    "to_keras_layout",
    "to_torch_layout",
    "torch_shape",
    "weight_table",
]

# Transforms from a PyTorch array to a Keras array, as axis permutations
# (inverted for saving).
NONE = "none"
LINEAR = "linear"  # (out, in) -> (in, out)
CONV = "conv"  # OIHW -> HWIO
_PERMUTATIONS: dict[str, tuple[int, ...] | None] = {NONE: None, LINEAR: (1, 0), CONV: (2, 3, 1, 0)}
_Value = TypeVar("_Value")


def to_keras_layout(array: np.ndarray, transform: str) -> np.ndarray:
    perm = _PERMUTATIONS[transform]
    return array if perm is None else array.transpose(perm)


def to_torch_layout(array: np.ndarray, transform: str) -> np.ndarray:
    perm = _PERMUTATIONS[transform]
    return array if perm is None else array.transpose(np.argsort(perm))


def torch_shape(keras_shape: Sequence[int], transform: str, parts: int = 1) -> tuple[int, ...]:
    """Shape of each of `parts` PyTorch tensors fused into a Keras variable."""
    shape = tuple(keras_shape[:-1]) + (keras_shape[-1] // parts,)
    perm = _PERMUTATIONS[transform]
    return shape if perm is None else tuple(shape[j] for j in np.argsort(perm))


FORMATS = ("transformers", "transformers-v5", "mae", "tf-legacy", "keras")

# Parameters of one transformer block: Keras suffix, transform, and the name in
# the transformers, transformers-v5 and original-MAE layouts.
BLOCK_TABLE = (
    (
        "attention/qkv/kernel",
        LINEAR,
        "attention.attention.{query,key,value}.weight",
        "attention.{q_proj,k_proj,v_proj}.weight",
        "attn.qkv.weight",
    ),
    (
        "attention/qkv/bias",
        NONE,
        "attention.attention.{query,key,value}.bias",
        "attention.{q_proj,k_proj,v_proj}.bias",
        "attn.qkv.bias",
    ),
    (
        "attention/output/kernel",
        LINEAR,
        "attention.output.dense.weight",
        "attention.o_proj.weight",
        "attn.proj.weight",
    ),
    (
        "attention/output/bias",
        NONE,
        "attention.output.dense.bias",
        "attention.o_proj.bias",
        "attn.proj.bias",
    ),
    (
        "mlp/intermediate/kernel",
        LINEAR,
        "intermediate.dense.weight",
        "mlp.fc1.weight",
        "mlp.fc1.weight",
    ),
    ("mlp/intermediate/bias", NONE, "intermediate.dense.bias", "mlp.fc1.bias", "mlp.fc1.bias"),
    ("mlp/output/kernel", LINEAR, "output.dense.weight", "mlp.fc2.weight", "mlp.fc2.weight"),
    ("mlp/output/bias", NONE, "output.dense.bias", "mlp.fc2.bias", "mlp.fc2.bias"),
    (
        "layernorm_before/gamma",
        NONE,
        "layernorm_before.weight",
        "layernorm_before.weight",
        "norm1.weight",
    ),
    ("layernorm_before/beta", NONE, "layernorm_before.bias", "layernorm_before.bias", "norm1.bias"),
    (
        "layernorm_after/gamma",
        NONE,
        "layernorm_after.weight",
        "layernorm_after.weight",
        "norm2.weight",
    ),
    ("layernorm_after/beta", NONE, "layernorm_after.bias", "layernorm_after.bias", "norm2.bias"),
)

# Block stacks: Keras prefix, then the prefix in each layout ({i} = block index).
STACK_TABLE = (
    ("vit/layer_{i}/", "vit.encoder.layer.{i}.", "vit.layers.{i}.", "blocks.{i}."),
    (
        "decoder/layer_{i}/",
        "decoder.decoder_layers.{i}.",
        "decoder.decoder_layers.{i}.",
        "decoder_blocks.{i}.",
    ),
)

# Everything outside the blocks: Keras path, transform, transformers name
# (also transformers-v5's), original-MAE name.
MODEL_TABLE = (
    ("vit/embeddings/cls_token", NONE, "vit.embeddings.cls_token", "cls_token"),
    ("vit/embeddings/position_embeddings", NONE, "vit.embeddings.position_embeddings", "pos_embed"),
    (
        "vit/embeddings/patch_embeddings/projection/kernel",
        CONV,
        "vit.embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.weight",
    ),
    (
        "vit/embeddings/patch_embeddings/projection/bias",
        NONE,
        "vit.embeddings.patch_embeddings.projection.bias",
        "patch_embed.proj.bias",
    ),
    ("vit/layernorm/gamma", NONE, "vit.layernorm.weight", "norm.weight"),
    ("vit/layernorm/beta", NONE, "vit.layernorm.bias", "norm.bias"),
    (
        "decoder/decoder_embed/kernel",
        LINEAR,
        "decoder.decoder_embed.weight",
        "decoder_embed.weight",
    ),
    ("decoder/decoder_embed/bias", NONE, "decoder.decoder_embed.bias", "decoder_embed.bias"),
    ("decoder/mask_token", NONE, "decoder.mask_token", "mask_token"),
    ("decoder/decoder_pos_embed", NONE, "decoder.decoder_pos_embed", "decoder_pos_embed"),
    ("decoder/decoder_norm/gamma", NONE, "decoder.decoder_norm.weight", "decoder_norm.weight"),
    ("decoder/decoder_norm/beta", NONE, "decoder.decoder_norm.bias", "decoder_norm.bias"),
    ("decoder/decoder_pred/kernel", LINEAR, "decoder.decoder_pred.weight", "decoder_pred.weight"),
    ("decoder/decoder_pred/bias", NONE, "decoder.decoder_pred.bias", "decoder_pred.bias"),
)

# Classification heads (`TFViTMAEForImageClassification`): Keras path, transform,
# transformers `ViTForImageClassification` name, original-MAE fine-tuning name.
# `fc_norm` (mean pooling) and `probe_norm` (linear probe) have no transformers
# counterpart; their names here are this package's.
HEAD_TABLE = (
    ("classifier/kernel", LINEAR, "classifier.weight", "head.weight"),
    ("classifier/bias", NONE, "classifier.bias", "head.bias"),
    ("fc_norm/gamma", NONE, "fc_norm.weight", "fc_norm.weight"),
    ("fc_norm/beta", NONE, "fc_norm.bias", "fc_norm.bias"),
    ("probe_norm/moving_mean", NONE, "probe_norm.running_mean", "head.0.running_mean"),
    ("probe_norm/moving_variance", NONE, "probe_norm.running_var", "head.0.running_var"),
)
# Top-level Keras layer -> model part; a model has "vit" and optionally the others.
PARTS = {
    "vit": "vit",
    "decoder": "decoder",
    "classifier": "head",
    "fc_norm": "head",
    "probe_norm": "head",
}

# Name variants that some writers produce: (alias, canonical name fragment).
ALIASES = (
    # transformers 5 writes decoder blocks under this (non-loadable by 4.x) prefix.
    ("decoder.decoder_encoder.layer.", "decoder.decoder_layers."),
)


@dataclass
class Entry:
    """One Keras variable and where it lives in a checkpoint."""

    keras_path: str
    transform: str
    names: tuple[str, ...]  # one name, or several fused along the last Keras axis
    # A Dense kernel: a matrix `(in, out)` in every layout, which a variable may
    # hold with `out` split into axes (the attention's query/key/value kernel
    # built for model parallelism: `models.layers.QKVProjection`).
    matrix: bool = False

    def layout_shape(self, variable_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of a variable of `variable_shape` in the table's Keras layout."""
        shape = tuple(variable_shape)
        return (shape[0], int(np.prod(shape[1:]))) if self.matrix else shape


def _expand(name: str) -> tuple[str, ...]:
    """`"a.{q,k}.w"` -> `("a.q.w", "a.k.w")`; a plain name -> `(name,)`."""
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return (name,)
    return tuple(
        name[: match.start()] + part + name[match.end() :] for part in match.group(1).split(",")
    )


def _legacy_tf_name(torch_name: str) -> str:
    """Hugging Face's TF-port name for a transformers name (`:0` omitted).

    `encoder.layer.3` became `encoder/layer_._3`, `decoder_layers.3` stayed
    one name, and Keras calls weights `kernel`, or `gamma`/`beta` in norms.
    """
    out: list[str] = []
    for part in torch_name.split("."):
        if part.isdigit():
            owner = out.pop()
            out.append(f"layer_._{part}" if owner == "layer" else f"{owner}.{part}")
        else:
            out.append(part)
    last = out.pop()
    is_norm = bool(out) and "norm" in out[-1]
    out.append(
        {"weight": "gamma" if is_norm else "kernel", "bias": "beta" if is_norm else "bias"}.get(
            last, last
        )
    )
    return "/".join(out)


def part_of(keras_path: str) -> str:
    """`"vit"`, `"decoder"` or `"head"`: the model part a Keras path belongs to."""
    return PARTS[keras_path.split("/", 1)[0]]


def weight_table(
    config: Any, fmt: str = "transformers", parts: Container[str] = ("vit", "decoder")
) -> list[Entry]:
    """The `Entry` list for the `parts` of a model of `config` in layout `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown checkpoint format {fmt!r}; expected one of {FORMATS}")
    column = {"transformers": 0, "tf-legacy": 0, "keras": 0, "transformers-v5": 1, "mae": 2}[fmt]
    entries = []
    for keras_path, transform, hf_name, mae_name in MODEL_TABLE + HEAD_TABLE:
        if part_of(keras_path) in parts:
            name = (hf_name, hf_name, mae_name)[column]
            entries.append(Entry(keras_path, transform, _expand(name), transform == LINEAR))
    depths = (
        config.num_hidden_layers,
        config.decoder_num_hidden_layers if "decoder" in parts else 0,
    )
    for (keras_prefix, *prefixes), depth in zip(STACK_TABLE, depths):
        for i in range(depth):
            for suffix, transform, *names in BLOCK_TABLE:
                if suffix.endswith("qkv/bias") and not config.qkv_bias:
                    continue
                name = prefixes[column].format(i=i) + names[column]
                path = keras_prefix.format(i=i) + suffix
                entries.append(Entry(path, transform, _expand(name), transform == LINEAR))
    if fmt == "tf-legacy":
        entries = [
            Entry(e.keras_path, NONE, tuple(_legacy_tf_name(n) for n in e.names), e.matrix)
            for e in entries
        ]
    elif fmt == "keras":
        entries = [Entry(e.keras_path, NONE, (e.keras_path,), e.matrix) for e in entries]
    return entries


def detect_format(keys: Iterable[str]) -> str:
    """The layout whose names cover most of `keys`."""
    keys = set(keys)
    markers = {
        "mae": ("cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "patch_embed.proj.weight"),
        "transformers-v5": ("vit.layers.0.attention.q_proj.weight", "vit.layers.0.mlp.fc1.weight"),
        "tf-legacy": (
            "vit/encoder/layer_._0/attention/attention/query/kernel",
            "vit/encoder/layer_._0/output/dense/kernel",
        ),
        "keras": ("vit/layer_0/attention/qkv/kernel", "vit/layer_0/mlp/output/kernel"),
        "transformers": (
            "vit.embeddings.cls_token",
            "vit.encoder.layer.0.attention.attention.query.weight",
        ),
    }
    scores = {fmt: sum(k in keys for k in names) for fmt, names in markers.items()}
    best = max(scores, key=lambda fmt: scores[fmt])
    if scores[best] == 0:
        sample = sorted(keys)[:5]
        raise ValueError(
            f"Unrecognised checkpoint: no ViTMAE weight names found (first keys: {sample})"
        )
    return best


def block_counts(names: Iterable[str], fmt: str) -> tuple[int, int]:
    """The encoder and decoder blocks that checkpoint `names` in layout `fmt`
    hold (canonical names, as `load_state_dict` reads them)."""
    column = {"transformers": 0, "tf-legacy": 0, "transformers-v5": 1, "mae": 2}.get(fmt)
    names = list(names)
    counts = []
    for keras_prefix, *prefixes in STACK_TABLE:
        example = (keras_prefix if column is None else prefixes[column]).format(i=0)
        if fmt == "tf-legacy":  # "vit.encoder.layer.0." -> "vit/encoder/layer_._0/"
            example = _legacy_tf_name(example + "weight")[: -len("kernel")]
        pattern = re.compile(re.escape(example).replace("0", r"(\d+)"))
        counts.append(len({m.group(1) for name in names if (m := pattern.match(name))}))
    return counts[0], counts[1]


def add_model_prefix(state: dict[str, _Value]) -> dict[str, _Value]:
    """`ViTMAEModel` checkpoints lack the `vit.` prefix of `ViTMAEForPreTraining`."""
    if any(k.startswith(("vit.", "vit/")) for k in state):
        return state
    if "embeddings.cls_token" in state or "embeddings/cls_token" in state:
        sep = "/" if "embeddings/cls_token" in state else "."
        return {(k if k.startswith("decoder") else f"vit{sep}{k}"): v for k, v in state.items()}
    return state


def canonical_names(state: Mapping[str, _Value]) -> dict[str, _Value]:
    """Rename aliased keys (see `ALIASES`) to the table's names."""
    out: dict[str, _Value] = {}
    for key, value in state.items():
        for alias, canonical in ALIASES:
            key = key.replace(alias, canonical)
        out[key] = value
    return out


def keras_variables(model: Any) -> dict[str, Any]:
    """`{path relative to the model: variable}`, e.g. `"vit/layer_0/attention/qkv/kernel"`.

    A path's part (see `PARTS`) is the component right below the model: the
    model's own name, and any scope above it, never is, so a model named
    `"vit"` or `"decoder"` keeps its paths.
    """
    prefix = f"{model.path or model.name}/"
    out: dict[str, Any] = {}
    for variable in model.weights:
        relative = variable.path.removeprefix(prefix)
        if variable.path.startswith(prefix) and relative.split("/", 1)[0] in PARTS:
            out[relative] = variable
    return out


def model_parts(model: Any) -> tuple[str, ...]:
    """The parts (`"vit"`, `"decoder"`, `"head"`) that `model` has."""
    return tuple(sorted({part_of(path) for path in keras_variables(model)}))


def mae_config_values(
    state: Mapping[str, np.ndarray | Sequence[int]], **overrides: Any
) -> dict[str, Any]:
    """The `ViTMAEConfig` fields of an original-MAE state dict (which carries
    no config), from its arrays or their shapes.

    Shapes give every size but the head counts: those come from the published
    models (12 heads at width 768, 16 at 1024 and 1280; 16 in the decoder),
    else width / 64. LayerNorm eps is the original 1e-6. Pass overrides for
    anything else.
    """

    def count(prefix: str) -> int:
        return len({k.split(".")[1] for k in state if k.startswith(prefix)})

    def shape(key: str) -> tuple[int, ...]:
        value = state[key]
        return tuple(value.shape) if hasattr(value, "shape") else tuple(value)

    decoder = "decoder_embed.weight" in state
    try:
        hidden = shape("cls_token")[-1]
        out_channels, channels, patch, _ = shape("patch_embed.proj.weight")
        grid = int(round((shape("pos_embed")[1] - 1) ** 0.5))
        intermediate = shape("blocks.0.mlp.fc1.weight")[0]
        if decoder:
            decoder_hidden = shape("decoder_embed.weight")[0]
            decoder_intermediate = shape("decoder_blocks.0.mlp.fc1.weight")[0]
    except KeyError as e:
        raise CheckpointError(f"Not an original-MAE checkpoint: missing {e}") from None
    except (ValueError, IndexError):
        raise CheckpointError(
            "Not an original-MAE checkpoint: its patch embedding, position embeddings or "
            "blocks do not have the ranks of MAE's"
        ) from None
    heads = {768: 12, 1024: 16, 1280: 16}.get(hidden, max(1, hidden // 64))
    values = dict(
        hidden_size=hidden,
        num_hidden_layers=count("blocks."),
        num_attention_heads=heads,
        intermediate_size=intermediate,
        image_size=grid * patch,
        patch_size=patch,
        num_channels=channels,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        layer_norm_eps=1e-6,
    )
    if decoder:
        values.update(
            decoder_hidden_size=decoder_hidden,
            decoder_num_hidden_layers=count("decoder_blocks."),
            decoder_num_attention_heads=16
            if decoder_hidden % 16 == 0
            else max(1, decoder_hidden // 64),
            decoder_intermediate_size=decoder_intermediate,
        )
    values.update(overrides)
    return values
