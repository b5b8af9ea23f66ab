"""The PyTorch <-> Keras weight-name table, and the checkpoint readers and writers.

One table maps every Keras variable to its name in each checkpoint layout and
to the transform between the two array layouts. It is read in both
directions: loading turns checkpoint arrays into Keras arrays, saving turns
Keras arrays into a `transformers`-loadable state dict.

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

import json
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

# Transforms from a PyTorch array to a Keras array, as axis permutations
# (inverted for saving).
NONE = "none"
LINEAR = "linear"  # (out, in) -> (in, out)
CONV = "conv"  # OIHW -> HWIO
_PERMUTATIONS = {NONE: None, LINEAR: (1, 0), CONV: (2, 3, 1, 0)}


def _to_keras(array, transform):
    perm = _PERMUTATIONS[transform]
    return array if perm is None else array.transpose(perm)


def _to_torch(array, transform):
    perm = _PERMUTATIONS[transform]
    return array if perm is None else array.transpose(np.argsort(perm))


def _torch_shape(keras_shape, transform, parts=1):
    """Shape of each of `parts` PyTorch tensors fused into a Keras variable."""
    shape = tuple(keras_shape[:-1]) + (keras_shape[-1] // parts,)
    perm = _PERMUTATIONS[transform]
    return shape if perm is None else tuple(shape[j] for j in np.argsort(perm))


FORMATS = ("transformers", "transformers-v5", "mae", "tf-legacy", "keras")

# Parameters of one transformer block: Keras suffix, transform, and the name in
# the transformers, transformers-v5 and original-MAE layouts.
BLOCK_TABLE = (
    ("attention/qkv/kernel", LINEAR,
     "attention.attention.{query,key,value}.weight", "attention.{q_proj,k_proj,v_proj}.weight", "attn.qkv.weight"),
    ("attention/qkv/bias", NONE,
     "attention.attention.{query,key,value}.bias", "attention.{q_proj,k_proj,v_proj}.bias", "attn.qkv.bias"),
    ("attention/output/kernel", LINEAR, "attention.output.dense.weight", "attention.o_proj.weight", "attn.proj.weight"),
    ("attention/output/bias", NONE, "attention.output.dense.bias", "attention.o_proj.bias", "attn.proj.bias"),
    ("mlp/intermediate/kernel", LINEAR, "intermediate.dense.weight", "mlp.fc1.weight", "mlp.fc1.weight"),
    ("mlp/intermediate/bias", NONE, "intermediate.dense.bias", "mlp.fc1.bias", "mlp.fc1.bias"),
    ("mlp/output/kernel", LINEAR, "output.dense.weight", "mlp.fc2.weight", "mlp.fc2.weight"),
    ("mlp/output/bias", NONE, "output.dense.bias", "mlp.fc2.bias", "mlp.fc2.bias"),
    ("layernorm_before/gamma", NONE, "layernorm_before.weight", "layernorm_before.weight", "norm1.weight"),
    ("layernorm_before/beta", NONE, "layernorm_before.bias", "layernorm_before.bias", "norm1.bias"),
    ("layernorm_after/gamma", NONE, "layernorm_after.weight", "layernorm_after.weight", "norm2.weight"),
    ("layernorm_after/beta", NONE, "layernorm_after.bias", "layernorm_after.bias", "norm2.bias"),
)

# Block stacks: Keras prefix, then the prefix in each layout ({i} = block index).
STACK_TABLE = (
    ("vit/layer_{i}/", "vit.encoder.layer.{i}.", "vit.layers.{i}.", "blocks.{i}."),
    ("decoder/layer_{i}/", "decoder.decoder_layers.{i}.", "decoder.decoder_layers.{i}.", "decoder_blocks.{i}."),
)

# Everything outside the blocks: Keras path, transform, transformers name
# (also transformers-v5's), original-MAE name.
MODEL_TABLE = (
    ("vit/embeddings/cls_token", NONE, "vit.embeddings.cls_token", "cls_token"),
    ("vit/embeddings/position_embeddings", NONE, "vit.embeddings.position_embeddings", "pos_embed"),
    ("vit/embeddings/patch_embeddings/projection/kernel", CONV,
     "vit.embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
    ("vit/embeddings/patch_embeddings/projection/bias", NONE,
     "vit.embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
    ("vit/layernorm/gamma", NONE, "vit.layernorm.weight", "norm.weight"),
    ("vit/layernorm/beta", NONE, "vit.layernorm.bias", "norm.bias"),
    ("decoder/decoder_embed/kernel", LINEAR, "decoder.decoder_embed.weight", "decoder_embed.weight"),
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
PARTS = {"vit": "vit", "decoder": "decoder", "classifier": "head", "fc_norm": "head", "probe_norm": "head"}

# Name variants that some writers produce: (alias, canonical name fragment).
_ALIASES = (
    # transformers 5 writes decoder blocks under this (non-loadable by 4.x) prefix.
    ("decoder.decoder_encoder.layer.", "decoder.decoder_layers."),
)


@dataclass
class Entry:
    """One Keras variable and where it lives in a checkpoint."""

    keras_path: str
    transform: str
    names: tuple  # one name, or several fused along the last Keras axis


def _expand(name):
    """`"a.{q,k}.w"` -> `("a.q.w", "a.k.w")`; a plain name -> `(name,)`."""
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return (name,)
    return tuple(name[: match.start()] + part + name[match.end():] for part in match.group(1).split(","))


def _legacy_tf_name(torch_name):
    """Hugging Face's TF-port name for a transformers name (`:0` omitted).

    `encoder.layer.3` became `encoder/layer_._3`, `decoder_layers.3` stayed
    one name, and Keras calls weights `kernel`, or `gamma`/`beta` in norms.
    """
    out = []
    for part in torch_name.split("."):
        if part.isdigit():
            owner = out.pop()
            out.append(f"layer_._{part}" if owner == "layer" else f"{owner}.{part}")
        else:
            out.append(part)
    last = out.pop()
    is_norm = bool(out) and "norm" in out[-1]
    out.append({"weight": "gamma" if is_norm else "kernel", "bias": "beta" if is_norm else "bias"}.get(last, last))
    return "/".join(out)


def part_of(keras_path):
    """`"vit"`, `"decoder"` or `"head"`: the model part a Keras path belongs to."""
    return PARTS[keras_path.split("/", 1)[0]]


def weight_table(config, fmt="transformers", parts=("vit", "decoder")):
    """The `Entry` list for the `parts` of a model of `config` in layout `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown checkpoint format {fmt!r}; expected one of {FORMATS}")
    column = {"transformers": 0, "tf-legacy": 0, "keras": 0, "transformers-v5": 1, "mae": 2}[fmt]
    entries = []
    for keras_path, transform, hf_name, mae_name in MODEL_TABLE + HEAD_TABLE:
        if part_of(keras_path) in parts:
            entries.append(Entry(keras_path, transform, _expand((hf_name, hf_name, mae_name)[column])))
    depths = (config.num_hidden_layers, config.decoder_num_hidden_layers if "decoder" in parts else 0)
    for (keras_prefix, *prefixes), depth in zip(STACK_TABLE, depths):
        for i in range(depth):
            for suffix, transform, *names in BLOCK_TABLE:
                if suffix.endswith("qkv/bias") and not config.qkv_bias:
                    continue
                name = prefixes[column].format(i=i) + names[column]
                entries.append(Entry(keras_prefix.format(i=i) + suffix, transform, _expand(name)))
    if fmt == "tf-legacy":
        entries = [Entry(e.keras_path, NONE, tuple(_legacy_tf_name(n) for n in e.names)) for e in entries]
    elif fmt == "keras":
        entries = [Entry(e.keras_path, NONE, (e.keras_path,)) for e in entries]
    return entries


def detect_format(keys):
    """The layout whose names cover most of `keys`."""
    keys = set(keys)
    markers = {
        "mae": ("cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "patch_embed.proj.weight"),
        "transformers-v5": ("vit.layers.0.attention.q_proj.weight", "vit.layers.0.mlp.fc1.weight"),
        "tf-legacy": ("vit/encoder/layer_._0/attention/attention/query/kernel", "vit/encoder/layer_._0/output/dense/kernel"),
        "keras": ("vit/layer_0/attention/qkv/kernel", "vit/layer_0/mlp/output/kernel"),
        "transformers": ("vit.embeddings.cls_token", "vit.encoder.layer.0.attention.attention.query.weight"),
    }
    scores = {fmt: sum(k in keys for k in names) for fmt, names in markers.items()}
    best = max(scores, key=scores.get)
    if scores[best] == 0:
        sample = sorted(keys)[:5]
        raise ValueError(f"Unrecognised checkpoint: no ViTMAE weight names found (first keys: {sample})")
    return best


def _add_model_prefix(state):
    """`ViTMAEModel` checkpoints lack the `vit.` prefix of `ViTMAEForPreTraining`."""
    if any(k.startswith(("vit.", "vit/")) for k in state):
        return state
    if "embeddings.cls_token" in state or "embeddings/cls_token" in state:
        sep = "/" if "embeddings/cls_token" in state else "."
        return {(k if k.startswith("decoder") else f"vit{sep}{k}"): v for k, v in state.items()}
    return state


@dataclass
class LoadReport:
    """What a checkpoint load did.

    Attributes:
        format: Checkpoint layout that was read.
        loaded: Keras variable paths that received a value.
        missing: Keras variable paths the checkpoint had no value for.
        unexpected: Checkpoint keys that map to no variable of this model.
        mismatched: `(key, expected_shape, found_shape)` for skipped tensors.
    """

    format: str
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    source: str = ""

    def summary(self):
        lines = [f"{len(self.loaded)} variables mapped from {self.source or 'the checkpoint'} ({self.format} layout)"]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                lines.append(f"{title}: {shown}")
        for key, expected, found in self.mismatched:
            lines.append(f"shape mismatch: {key} expected {expected}, found {found}")
        return "\n".join(lines)


def keras_variables(model):
    """`{path relative to the model: variable}`, e.g. `"vit/layer_0/attention/qkv/kernel"`."""
    out = {}
    for variable in model.weights:
        parts = variable.path.split("/")
        for i, part in enumerate(parts):
            if part in PARTS:
                out["/".join(parts[i:])] = variable
                break
    return out


def model_parts(model):
    """The parts (`"vit"`, `"decoder"`, `"head"`) that `model` has."""
    return tuple(sorted({part_of(path) for path in keras_variables(model)}))


def _canonical_names(state):
    """Rename aliased keys (see `_ALIASES`) to the table's names."""
    out = {}
    for key, value in state.items():
        for alias, canonical in _ALIASES:
            key = key.replace(alias, canonical)
        out[key] = value
    return out


def load_state_dict(model, state, fmt=None, strict=True, source=""):
    """Assign a checkpoint's arrays to `model`, all or nothing.

    Args:
        model: A `TFViTMAEModel` or `TFViTMAEForPreTraining`.
        state: `{name: numpy array}` in one of `FORMATS`.
        fmt: The layout; detected from the names when `None`.
        strict: Raise on missing variables, unused keys and shape mismatches.
            With `strict=False` what matches is loaded and the rest reported.
            Either way, a part (decoder, classification head) that the
            checkpoint lacks keeps its initialisation, and checkpoint weights of
            a part the model lacks are ignored, each with a warning.
        source: File name for messages.

    Returns:
        A `LoadReport`. Nothing is assigned when an error is raised.
    """
    state = _canonical_names(_add_model_prefix(dict(state)))
    fmt = fmt or detect_format(state)
    variables = keras_variables(model)
    parts = model_parts(model)
    # The full table, to tell keys of parts this model lacks from unknown keys.
    everything = weight_table(model.config, fmt, parts=("vit", "decoder", "head"))
    entries = [e for e in everything if e.keras_path in variables]
    other_parts = {n for e in everything if e.keras_path not in variables for n in e.names}
    report = LoadReport(format=fmt, source=source)
    used, assignments = set(), []
    where = f" in {source}" if source else ""
    for entry in entries:
        if any(n not in state for n in entry.names):
            report.missing.append(entry.keras_path)
            continue
        used.update(entry.names)
        variable = variables[entry.keras_path]
        expected = _torch_shape(variable.shape, entry.transform, len(entry.names))
        found = [tuple(np.shape(state[n])) for n in entry.names]
        if any(shape != expected for shape in found):
            bad = next(i for i, shape in enumerate(found) if shape != expected)
            report.mismatched.append((entry.names[bad], expected, found[bad]))
            continue
        arrays = [_to_keras(np.asarray(state[n]), entry.transform) for n in entry.names]
        value = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)
        assignments.append((variable, value.astype(variable.dtype)))
        report.loaded.append(entry.keras_path)
    unused = set(state) - used
    # Moving between the encoder, pretraining and classification models is
    # expected: a part only one side has is reported with a warning, not an error.
    ignored = sorted(unused & other_parts)
    report.unexpected = sorted(unused - other_parts)
    if ignored:
        warnings.warn(f"Ignored {len(ignored)} weights{where} of parts this model does not have: "
                      f"{', '.join(ignored[:6])}{', ...' if len(ignored) > 6 else ''}")
    for part in ("decoder", "head"):
        paths = [e.keras_path for e in entries if part_of(e.keras_path) == part]
        if part in parts and paths and all(p in report.missing for p in paths):
            report.missing = [p for p in report.missing if p not in paths]
            warnings.warn(
                f"The checkpoint{where} has no {part}; it keeps its initialisation. Not loaded: {', '.join(paths)}"
            )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointError(
            f"The checkpoint{where} does not fit this model ({model.config.num_hidden_layers} encoder / "
            f"{model.config.decoder_num_hidden_layers} decoder blocks); nothing was loaded.\n"
            f"{report.summary()}\nPass strict=False to load what matches."
        )
    for variable, value in assignments:
        variable.assign(value)
    if not strict and (report.missing or report.unexpected or report.mismatched):
        warnings.warn(f"Partial load: {report.summary()}")
    return report


def to_state_dict(model, fmt="transformers"):
    """The model's weights as `{name: numpy array}` in a PyTorch layout.

    For `TFViTMAEModel` the names lack the `vit.` prefix, like `ViTMAEModel`.
    """
    if fmt not in ("transformers", "mae"):
        raise ValueError(f"Can only write the 'transformers' or 'mae' layouts, received {fmt!r}")
    variables = keras_variables(model)
    state = {}
    for entry in weight_table(model.config, fmt, parts=model_parts(model)):
        if entry.keras_path not in variables:
            continue
        value = np.asarray(variables[entry.keras_path].numpy())
        for name, part in zip(entry.names, np.split(value, len(entry.names), axis=-1)):
            state[name] = np.ascontiguousarray(_to_torch(part, entry.transform))
    if model_parts(model) == ("vit",) and fmt == "transformers":
        state = {k[len("vit."):]: v for k, v in state.items()}
    return state


# ------------------------------------------------------------------ files
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
TF_LEGACY_WEIGHTS_NAME = "tf_model.h5"
KERAS_WEIGHTS_NAME = "model.weights.h5"

# Looked for in this order; the first present is loaded.
WEIGHT_FILES = (KERAS_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, PT_WEIGHTS_NAME, TF_LEGACY_WEIGHTS_NAME)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except TypeError:  # NumPy has no bfloat16: read those files through ml_dtypes
        return _read_safetensors_bfloat16(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"Cannot read {path}: {e} (truncated or not a safetensors file?)") from None


def _read_safetensors_bfloat16(path):
    """Read a safetensors file holding bfloat16 tensors, upcast to float32.

    The format is an 8-byte little-endian header length, a JSON header of
    `{name: {dtype, shape, data_offsets}}`, then the raw data.
    """
    import ml_dtypes  # a TensorFlow dependency

    dtypes = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    with open(path, "rb") as f:
        data = f.read()
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        body = memoryview(data)[8 + size:]
        state = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            array = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
            state[name] = array.astype(np.float32) if info["dtype"] == "BF16" else array.copy()
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"Cannot read {path}: {e} (truncated or not a safetensors file?)") from None
    return state


def _read_safetensors_index(path):
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"Cannot read the shard index {path}: {e}") from None
    state = {}
    folder = os.path.dirname(path)
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointError(f"{path} lists the shard {shard}, which is missing")
        state.update(_read_safetensors(shard_path))
    return state


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading {os.path.basename(path)} needs PyTorch (pip install torch); "
            "safetensors checkpoints load without it"
        ) from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"Cannot read {path}: {type(e).__name__}: {e}") from None
    for key in ("model", "state_dict"):  # original MAE releases nest the weights
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, expected a state dict")
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in data.items()}


def _read_tf_legacy(path):
    import h5py

    state = {}
    try:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    # "<group>/<model name>/vit/.../kernel:0" -> "vit/.../kernel"
                    parts = name.split("/")
                    for i, part in enumerate(parts):
                        if part in ("vit", "decoder") and i > 0:
                            state["/".join(parts[i:]).removesuffix(":0")] = np.asarray(obj)
                            return

            f.visititems(visit)
    except OSError as e:
        raise CheckpointError(f"Cannot read {path}: {e} (truncated or not an HDF5 file?)") from None
    return state


def read_checkpoint(path):
    """`{name: numpy array}` from a safetensors (or index), `.bin`/`.pth` or `tf_model.h5` file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"No checkpoint file at {path}")
    name = os.path.basename(path)
    if name.endswith(".index.json"):
        return _read_safetensors_index(path)
    if name.endswith(".safetensors"):
        return _read_safetensors(path)
    if name.endswith((".bin", ".pth", ".pt")):
        return _read_torch(path)
    if name.endswith(".h5"):
        return _read_tf_legacy(path)
    raise CheckpointError(f"Unknown checkpoint type {name!r}: expected .safetensors, .bin, .pth or .h5")


def _write_atomically(path, write):
    """Call `write(temporary_path)`, then rename into `path`; no partial file is left."""
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_safetensors(state, path):
    """Write `state` to `path` atomically (temporary file, then rename)."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    _write_atomically(path, lambda tmp: save_file(arrays, tmp, metadata={"format": "pt"}))


def write_torch_bin(state, path):
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    _write_atomically(path, lambda tmp: torch.save(tensors, tmp))


def infer_mae_config(state, **overrides):
    """A `ViTMAEConfig` for an original-MAE state dict (which carries no config).

    Shapes give every size but the head counts: those come from the published
    models (12 heads at width 768, 16 at 1024 and 1280; 16 in the decoder),
    else width / 64. LayerNorm eps is the original 1e-6. Pass overrides for
    anything else.
    """
    from .config import ViTMAEConfig

    def count(prefix):
        return len({k.split(".")[1] for k in state if k.startswith(prefix)})

    try:
        hidden = state["cls_token"].shape[-1]
        out_channels, channels, patch, _ = state["patch_embed.proj.weight"].shape
        grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
        intermediate = state["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"Not an original-MAE checkpoint: missing {e}") from None
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
    if "decoder_embed.weight" in state:
        decoder_hidden = state["decoder_embed.weight"].shape[0]
        values.update(
            decoder_hidden_size=decoder_hidden,
            decoder_num_hidden_layers=count("decoder_blocks."),
            decoder_num_attention_heads=16 if decoder_hidden % 16 == 0 else max(1, decoder_hidden // 64),
            decoder_intermediate_size=state["decoder_blocks.0.mlp.fc1.weight"].shape[0],
        )
    values.update(overrides)
    return ViTMAEConfig(**values)
