"""Checkpoint files: every reader and writer, and the file names looked for.

Readers return `{name: numpy array}` in the checkpoint's own naming; the name
table in `weight_names.py` maps those names onto a model. Nothing here knows a
model class. Writers go through `utils.files.atomic_write`, so an interrupted save
never leaves a partial file.
"""

import json
import os
import re
from collections.abc import Mapping

import numpy as np

from ..utils.files import atomic_write
from ..utils.types import PathLike

__all__ = [
    "CONFIG_NAME",
    "CheckpointError",
    "KERAS_WEIGHTS_NAME",
    "PREPROCESSOR_NAME",
    "PT_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "TF_LEGACY_WEIGHTS_NAME",
    "WEIGHT_FILES",
    "inside_folder",
    "read_checkpoint",
    "read_keras_weights",
    "shard_names",
    "write_safetensors",
    "write_torch_bin",
]

CONFIG_NAME = "config.json"  # the model config, Hugging Face's format
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
TF_LEGACY_WEIGHTS_NAME = "tf_model.h5"
KERAS_WEIGHTS_NAME = "model.weights.h5"
PREPROCESSOR_NAME = "preprocessor_config.json"  # the image processor, beside config.json

# Looked for in this order; the first present is loaded.
WEIGHT_FILES = (
    KERAS_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    TF_LEGACY_WEIGHTS_NAME,
)


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
        raise CheckpointError(
            f"Cannot read {path}: {e} (truncated or not a safetensors file?)"
        ) from None


def _read_safetensors_bfloat16(path):
    """Read a safetensors file holding bfloat16 tensors, upcast to float32.

    The format is an 8-byte little-endian header length, a JSON header of
    `{name: {dtype, shape, data_offsets}}`, then the raw data.
    """
    import ml_dtypes  # a TensorFlow dependency

    dtypes = {
        "BF16": ml_dtypes.bfloat16,
        "F16": np.float16,
        "F32": np.float32,
        "F64": np.float64,
        "I64": np.int64,
        "I32": np.int32,
        "I16": np.int16,
        "I8": np.int8,
        "U8": np.uint8,
        "BOOL": np.bool_,
    }
    with open(path, "rb") as f:
        data = f.read()
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        body = memoryview(data)[8 + size :]
        state = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            array = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(
                info["shape"]
            )
            state[name] = array.astype(np.float32) if info["dtype"] == "BF16" else array.copy()
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"Cannot read {path}: {e} (truncated or not a safetensors file?)"
        ) from None
    return state


def _shown(name: object) -> str:
    """`name` for an error message: as written if short and printable, else
    its `repr`, cut short (an index may hold anything)."""
    if isinstance(name, str) and name.isprintable() and len(name) <= 200:
        return name
    text = repr(name)
    return text if len(text) <= 200 else text[:200] + "..."


def _cache_blobs(folder: str) -> str | None:
    """The `blobs` folder of the huggingface_hub cache repo that `folder`
    (a real path) is a snapshot of, or any folder inside one, else `None`.
    A snapshot's files are links to `../../blobs/<hash>`."""
    parts = folder.split(os.sep)
    for i in range(len(parts) - 2, 0, -1):  # .../models--org--name/snapshots/<revision>/...
        if parts[i] == "snapshots" and parts[i - 1].startswith(("models--", "datasets--")):
            return os.sep.join(parts[:i] + ["blobs"])
    return None


def inside_folder(folder: PathLike, name: str, what: str = "Refused") -> str:
    """`folder/name`, once checked to stay inside `folder`: `name` is a
    relative path without `..`, and it resolves (through any links) inside
    `folder`, or, for a huggingface_hub cache snapshot, inside its cache
    repo's `blobs`.

    Nothing outside `folder` is opened, and the error does not depend on what
    exists outside it.

    Raises:
        CheckpointError: `name` leads outside `folder`; the message, which
            starts with `what`, names `name` as written, never what it resolves to.
    """
    folder = os.fspath(folder)
    refused = CheckpointError(
        f"{what} {_shown(name)}: it leads outside the checkpoint folder {folder}; a "
        "checkpoint's files, shards and links must stay inside its folder"
    )
    if (
        not isinstance(name, str)
        or not name
        or "\0" in name
        or os.path.isabs(name)
        or ".." in name.split(os.sep)
        or len(name) > 4096
    ):
        raise refused
    path = os.path.join(folder, name)
    real, root = os.path.realpath(path), os.path.realpath(folder)
    roots = [root] + [b for b in [_cache_blobs(root)] if b is not None]
    if not any(os.path.commonpath([real, r]) == r for r in roots):
        raise refused
    return path


def shard_names(path: PathLike) -> list[str]:
    """The shard files that the safetensors index at `path` lists, each
    checked to lie inside the index's folder (see `inside_folder`)."""
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(f"Cannot read the shard index {path}: {e}") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(
            f"{path}: weight_map must map tensor names to shard files, "
            f"found a {type(weight_map).__name__}"
        )
    shards = set()
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(
                f"{path}: weight_map maps {_shown(key)} to {_shown(shard)}, "
                "expected a shard file name"
            )
        shards.add(shard)
    folder = os.path.dirname(os.fspath(path))
    for shard in sorted(shards):
        inside_folder(folder, shard, what=f"{path} lists the shard")
    return sorted(shards)


def _read_safetensors_index(path):
    state = {}
    folder = os.path.dirname(path)
    for shard in shard_names(path):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointError(f"{path} lists the shard {_shown(shard)}, which is missing")
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
    others = {k: type(v).__name__ for k, v in data.items() if not isinstance(v, torch.Tensor)}
    if others:
        shown = ", ".join(f"{k!r} ({t})" for k, t in list(others.items())[:5])
        raise CheckpointError(
            f"{path} is not a plain state dict: besides tensors it holds {shown}"
            f"{', ...' if len(others) > 5 else ''}. Save model.state_dict() alone, or put the "
            "weights under a 'model' or 'state_dict' key"
        )
    return {
        k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
        for k, v in data.items()
    }


def read_keras_weights(path: PathLike) -> dict[str, list[np.ndarray]]:
    """The variables of a Keras `.weights.h5` file, by layer path.

    Keras stores each layer's own variables as `vars/0`, `vars/1`, ... in a
    group carrying the layer's name; the chain of names from the model's
    top-level layers down gives the layer path (`"vit/layer_0/attention/qkv"`).
    Reading needs no model: `state_dicts.keras_state` names the variables.
    The optimizer state that a compiled model's file also holds is skipped.

    Returns:
        `{layer path: [arrays in the layer's variable order]}`.
    """
    import h5py

    layers: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as f:

            def visit(group, names):
                own = group.get("vars")
                if isinstance(own, h5py.Group) and group.name != "/":  # "/" is the model
                    name = own.attrs.get("name")
                    names = names + [name.decode() if isinstance(name, bytes) else str(name)]
                    arrays = [np.asarray(own[k]) for k in sorted(own, key=int)]
                    if arrays:
                        layers["/".join(names)] = arrays
                for key, child in group.items():
                    # A compiled model's file also holds its optimizer's state.
                    skip = key == "vars" or (group.name == "/" and key == "optimizer")
                    if not skip and isinstance(child, h5py.Group):
                        visit(child, names)

            visit(f, [])
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"Cannot read {path}: {e} (truncated or not a Keras weights file?)"
        ) from None
    if not layers:
        raise CheckpointError(f"{path} holds no Keras layer weights")
    return layers


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


def read_checkpoint(path: PathLike) -> dict[str, np.ndarray]:
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
    raise CheckpointError(
        f"Unknown checkpoint type {name!r}: expected .safetensors, .bin, .pth or .h5"
    )


def _write_error(path: PathLike, error: Exception) -> OSError:
    """An `OSError` naming `path` for a writer's own error type, with the
    system's error number where the message holds one ("... (os error 28)")."""
    found = re.search(r"os error (\d+)", str(error))
    if found:
        code = int(found.group(1))
        return OSError(code, f"Could not write {os.fspath(path)}: {os.strerror(code)}")
    return OSError(f"Could not write {os.fspath(path)}: {error}")


def write_safetensors(state: Mapping[str, np.ndarray], path: PathLike) -> None:
    """Write `state` to `path` atomically (temporary file, then rename).

    Raises:
        OSError: The file could not be written (a full disk, say); it names `path`.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    try:
        atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata={"format": "pt"}))
    except SafetensorError as e:  # what a full disk gives
        raise _write_error(path, e) from None


def write_torch_bin(state: Mapping[str, np.ndarray], path: PathLike) -> None:
    """Write `state` to `path` with `torch.save`, atomically.

    Raises:
        OSError: The file could not be written (a full disk, say); it names `path`.
    """
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    try:
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
    except RuntimeError as e:  # torch's "[enforce fail ...]" on a full disk
        raise _write_error(path, e) from None
