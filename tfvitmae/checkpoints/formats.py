"""Checkpoint files: every reader and writer, and the file names looked for.

Readers return `{name: numpy array}` in the checkpoint's own naming; the name
table in `weight_names.py` maps those names onto a model. Nothing here knows a
model class. A file is opened and described (names, shapes) before any data is
read, so that its sizes can be checked first, and what a weights file never
holds (links out of the file, data kept elsewhere) is refused. Writers go
through `utils.files.atomic_write`, so an interrupted save never leaves a
partial file.
"""

import contextlib
import errno
import functools
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..utils.files import atomic_write, read_json
from ..utils.types import PathLike

__all__ = [
    "CHECKPOINT_SIZE_FACTOR",
    "CONFIG_NAME",
    "CheckpointError",
    "KERAS_WEIGHTS_NAME",
    "PREPROCESSOR_NAME",
    "PT_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "TF_LEGACY_WEIGHTS_NAME",
    "WEIGHT_FILES",
    "StoredArray",
    "StoredCheckpoint",
    "inside_folder",
    "keras_layers",
    "open_checkpoint",
    "read_checkpoint",
    "read_keras_weights",
    "save_keras_weights",
    "keras_weights_size",
    "write_failure",
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


# ------------------------------------------------------------------ reading
# Each reader first describes a file's arrays (names and shapes) without
# reading any data, and refuses what a weights file never holds: links out of
# the file, data kept in other files, types that are not numbers. The sizes
# are then checked (against the config, and against a budget) before a byte
# of data is read.

CHECKPOINT_SIZE_FACTOR = 4
"""A checkpoint may declare at most this many times the parameters of the
model its config describes (encoder, decoder and a classification head),
counted in values; `from_pretrained` and `load_pretrained_weights` refuse a
larger one before reading it. Raise it to load a checkpoint much larger than
the model with `strict=False`."""

_MAX_HDF5_DEPTH = 64  # groups within groups: Keras files nest about 8 deep
_MAX_HDF5_CHUNK = 2**20  # values in one chunk beyond the dataset's own size
_MAX_SAFETENSORS_HEADER = 100_000_000  # bytes, the safetensors library's own limit
# safetensors dtypes: NumPy's, and (upcast to float32) those only ml_dtypes has.
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
_SAFETENSORS_UPCAST = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}


class StoredArray(NamedTuple):
    """An array of an open checkpoint file: its shape, and how to read it."""

    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]


@dataclass
class StoredCheckpoint:
    """The arrays of an open weights file, described but not yet read."""

    path: str
    arrays: dict[str, StoredArray]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: array.shape for name, array in self.arrays.items()}

    def read(self, max_elements: int | None = None) -> dict[str, np.ndarray]:
        """`{name: numpy array}`; a `CheckpointError`, before anything is
        read, if the arrays hold more than `max_elements` values in all."""
        sizes = {name: math.prod(shape) for name, shape in self.shapes.items()}
        if max_elements is not None and sum(sizes.values()) > max_elements:
            largest = max(sizes, key=lambda name: sizes[name])
            raise CheckpointError(
                f"{self.path} declares {sum(sizes.values()):,} values in {len(sizes)} arrays "
                f"(the largest, {largest!r}, has shape {self.arrays[largest].shape}), more than "
                f"the {max_elements:,} allowed; nothing was read. A model's loader allows "
                f"CHECKPOINT_SIZE_FACTOR = {CHECKPOINT_SIZE_FACTOR} times the parameters its "
                "config implies (tfvitmae.checkpoints.formats.CHECKPOINT_SIZE_FACTOR)"
            )
        out = {}
        for name, array in self.arrays.items():
            try:
                out[name] = array.read()
            except CheckpointError:
                raise
            except (OSError, ValueError, RuntimeError, TypeError) as e:  # h5py, NumPy, torch
                raise CheckpointError(
                    f"Cannot read {name!r} from {self.path}: {type(e).__name__}: {e}"
                ) from None
        return out


def _refused(path: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is refused: {what}. A weights file holds only numeric arrays stored in the "
        "file itself; nothing was read"
    )


def _hdf5_objects(file: Any, path: str, skip: Container[str] = ()) -> dict[str, Any]:
    """`{HDF5 path: group or dataset}` of an open file, parents first, without
    reading any data or following any link: soft and external links, a second
    link to one object (a cycle), nesting past `_MAX_HDF5_DEPTH`, datasets
    kept elsewhere (external storage, virtual datasets), non-numeric dtypes and
    chunks far larger than their dataset are refused. Groups in `skip` are
    not entered."""
    import h5py

    root = file["/"]
    objects: dict[str, Any] = {"/": root}
    seen = {root.id: "/"}
    stack = [("", root)]
    while stack:
        prefix, group = stack.pop()
        if prefix.count("/") >= _MAX_HDF5_DEPTH:
            raise _refused(path, f"{prefix} is nested more than {_MAX_HDF5_DEPTH} groups deep")
        for key in sorted(group, reverse=True):  # popped in name order
            name = f"{prefix}/{key}"
            if name in skip:
                continue
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.SoftLink):
                raise _refused(path, f"{name} is a soft link")
            if isinstance(link, h5py.ExternalLink):
                raise _refused(path, f"{name} is an external link, to another file")
            if not isinstance(link, h5py.HardLink):
                raise _refused(path, f"{name} is a {type(link).__name__}")
            obj = group[key]
            if obj.id in seen:
                raise _refused(path, f"{name} is a second link to {seen[obj.id]}")
            seen[obj.id] = name
            if isinstance(obj, h5py.Dataset):
                _check_dataset(obj, name, path)
            elif isinstance(obj, h5py.Group):
                stack.append((name, obj))
            objects[name] = obj
    # Stack order visits a group's children after all of its siblings: sort by path.
    return dict(sorted(objects.items()))


def _check_dataset(dataset: Any, name: str, path: str) -> None:
    if dataset.shape is None:
        raise _refused(path, f"the dataset {name} has no data (an empty dataspace)")
    if dataset.external:
        raise _refused(path, f"the dataset {name} keeps its data in another file")
    if dataset.is_virtual:
        raise _refused(path, f"the dataset {name} is virtual (its data is in other datasets)")
    if dataset.dtype.kind not in "biuf":  # also compound, string and array types
        raise _refused(path, f"the dataset {name} holds {dataset.dtype} values, not numbers")
    chunk, size = math.prod(dataset.chunks or ()), math.prod(dataset.shape)
    if chunk > max(size, _MAX_HDF5_CHUNK):  # HDF5 reads whole chunks into memory
        raise _refused(path, f"the dataset {name} has {size:,} values in chunks of {chunk:,}")


@contextlib.contextmanager
def _open_hdf5(
    path: str, describe: Callable[[Any], dict[str, StoredArray]]
) -> Iterator[dict[str, StoredArray]]:
    """The open HDF5 file at `path`, described by `describe`."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"Cannot read {path}: {e} (truncated or not an HDF5 file?)") from None
    with file:
        try:
            arrays = describe(file)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:  # h5py's errors
            raise CheckpointError(f"Cannot read {path}: {type(e).__name__}: {e}") from None
        yield arrays


def _stored(dataset: Any) -> StoredArray:
    return StoredArray(tuple(dataset.shape), lambda: np.asarray(dataset[()]))


def _describe_keras_weights(file: Any, path: str) -> dict[str, StoredArray]:
    """Keras stores each layer's own variables as `vars/0`, `vars/1`, ... in a
    group carrying the layer's name; the chain of names from the model's
    top-level layers down gives the layer path. A compiled model's optimizer
    state is skipped."""
    import h5py

    objects = _hdf5_objects(file, path, skip={"/optimizer"})
    layer_paths = {"/": ""}  # of each group: the names of its layer and those above
    layers: dict[str, dict[int, Any]] = {}
    for name, obj in objects.items():
        parent, _, key = name.rpartition("/")
        parent = parent or "/"
        if isinstance(obj, h5py.Group) and name != "/":
            own = objects.get(f"{name}/vars")
            layer_path = layer_paths[parent]
            if key != "vars" and isinstance(own, h5py.Group):
                layer = own.attrs.get("name")
                layer = layer.decode() if isinstance(layer, bytes) else layer
                if not isinstance(layer, str) or not layer:
                    raise _refused(path, f"the group {name}/vars has no layer name")
                layer_path = f"{layer_path}/{layer}".lstrip("/")
            layer_paths[name] = layer_path
        elif isinstance(obj, h5py.Dataset) and parent.endswith("/vars"):
            owner = parent[: -len("/vars")]
            if not owner:  # "/vars": the model's own variables, which it has none of
                continue
            if not key.isdecimal():
                raise _refused(path, f"{name} is not a numbered variable")
            layers.setdefault(layer_paths[owner], {})[int(key)] = obj
    arrays = {
        f"{layer}/{i}": _stored(variables[index])
        for layer, variables in layers.items()
        for i, index in enumerate(sorted(variables))
    }
    if not arrays:
        raise CheckpointError(f"{path} holds no Keras layer weights")
    return arrays


def _describe_tf_legacy(file: Any, path: str) -> dict[str, StoredArray]:
    """Hugging Face's TF port: `<group>/<model name>/vit/.../kernel:0`,
    named `vit/.../kernel`."""
    import h5py

    arrays: dict[str, StoredArray] = {}
    for name, obj in _hdf5_objects(file, path).items():
        if isinstance(obj, h5py.Dataset):
            parts = name.strip("/").split("/")
            for i, part in enumerate(parts):
                if part in ("vit", "decoder") and i > 0:
                    key = "/".join(parts[i:]).removesuffix(":0")
                    if key in arrays:
                        raise _refused(path, f"two datasets give the weight {key}")
                    arrays[key] = _stored(obj)
                    break
    return arrays


def _open_safetensors(path: str) -> dict[str, StoredArray]:
    """The format: an 8-byte little-endian header length, a JSON header of
    `{name: {dtype, shape, data_offsets}}` (and `__metadata__`), then the
    data. Everything the header declares is checked against the file before
    any data is read; bfloat16 and float8 tensors (which NumPy lacks) are
    read through `ml_dtypes` and upcast to float32."""

    def unreadable(reason: str) -> CheckpointError:
        return CheckpointError(
            f"Cannot read {path}: {reason} (truncated or not a safetensors file?)"
        )

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= length <= min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise unreadable(f"a header of {length:,} bytes in a file of {size:,}")
            header = json.loads(f.read(length))
    except CheckpointError:
        raise
    except (OSError, ValueError, RecursionError) as e:  # (a JSON error is a ValueError)
        raise unreadable(f"{type(e).__name__}: {e}") from None
    if not isinstance(header, dict):
        raise unreadable("the header is not a JSON object")
    start, data_size = 8 + length, size - 8 - length
    arrays, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            if not isinstance(dtype_name, str) or not all(
                type(n) is int and n >= 0 for n in (*shape, begin, end)
            ):
                raise ValueError
        except (TypeError, KeyError, ValueError):
            raise unreadable(f"{name!r} is not {{dtype, shape, data_offsets}} in numbers") from None
        upcast = dtype_name in _SAFETENSORS_UPCAST
        if upcast:
            import ml_dtypes  # a TensorFlow dependency

            dtype = np.dtype(getattr(ml_dtypes, _SAFETENSORS_UPCAST[dtype_name]))
        elif dtype_name in _SAFETENSORS_DTYPES:
            dtype = np.dtype(_SAFETENSORS_DTYPES[dtype_name])
        else:
            raise CheckpointError(
                f"{path}: the tensor {name!r} has dtype {dtype_name!r}, which is not read; "
                f"expected one of {', '.join([*_SAFETENSORS_DTYPES, *_SAFETENSORS_UPCAST])}"
            )
        count = math.prod(shape)
        if not begin <= end <= data_size or end - begin != count * dtype.itemsize:
            raise unreadable(
                f"{name!r} ({dtype_name}, shape {shape}) would span bytes {begin:,} to {end:,} "
                f"of {data_size:,}"
            )
        read = functools.partial(_read_range, path, start + begin, dtype, tuple(shape), upcast)
        arrays[name] = StoredArray(tuple(shape), read)
        spans.append((begin, end))
    # As the format requires, the tensors cover the data exactly: no two share
    # bytes (which would read one file's bytes many times over), and no bytes
    # are left over.
    covered = 0
    for begin, end in sorted(spans):
        covered = end if begin == covered else -1
    if covered != data_size:
        raise unreadable(f"the tensors do not cover its {data_size:,} bytes of data exactly")
    return arrays


def _read_range(
    path: str, offset: int, dtype: np.dtype, shape: tuple[int, ...], upcast: bool
) -> np.ndarray:
    count = math.prod(shape)
    with open(path, "rb") as f:
        f.seek(offset)
        array = np.fromfile(f, dtype=dtype, count=count)
    if array.size != count:
        raise CheckpointError(f"Cannot read {path}: it ends inside a tensor (truncated?)")
    array = array.reshape(shape)
    return array.astype(np.float32) if upcast else array


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
        index = read_json(path)
    except (OSError, ValueError) as e:  # their messages name the file
        raise CheckpointError(f"Cannot read the shard index: {e}") from None
    if "weight_map" not in index:
        raise CheckpointError(f"The shard index {path} has no weight_map")
    weight_map = index["weight_map"]
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
        state.update(_open_safetensors(shard_path))
    return state


def _open_torch(path: str) -> dict[str, StoredArray]:
    """A `torch.save` zip archive, loaded with `weights_only=True` and mapped
    rather than read (`mmap=True`), so that only the tensors' descriptions are
    in memory until they are read. Its entries must be stored uncompressed,
    as `torch.save` writes them: a compressed one could inflate far past its
    size on disk."""
    import zipfile

    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading {os.path.basename(path)} needs PyTorch (pip install torch); "
            "safetensors checkpoints load without it"
        ) from None
    try:
        with zipfile.ZipFile(path) as archive:
            packed = [
                i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED
            ]
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"Cannot read {path}: {e}. PyTorch has saved zip archives since version 1.6; an "
            "older file is not read, as its sizes cannot be checked before loading: load it and "
            "torch.save it again with a current PyTorch"
        ) from None
    if packed:
        raise _refused(path, f"its entry {packed[0]} is compressed, which torch.save never does")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"Cannot read {path}: {type(e).__name__}: {e}") from None
    for key in ("model", "state_dict"):  # original MAE releases nest the weights
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, expected a state dict")
    others = {
        repr(k): type(v).__name__
        for k, v in data.items()
        if not (isinstance(k, str) and isinstance(v, torch.Tensor))
    }
    if others:
        shown = ", ".join(f"{k} ({t})" for k, t in list(others.items())[:5])
        raise CheckpointError(
            f"{path} is not a plain state dict: besides tensors it holds {shown}"
            f"{', ...' if len(others) > 5 else ''}. Save model.state_dict() alone, or put the "
            "weights under a 'model' or 'state_dict' key"
        )
    for key, tensor in data.items():
        kind = _unreadable_kind(tensor)
        if kind:
            raise CheckpointError(
                f"{path}: {key!r} is a {kind} tensor; expected dense floating-point or "
                "integer tensors"
            )
    return {
        key: StoredArray(tuple(tensor.shape), functools.partial(_torch_array, tensor))
        for key, tensor in data.items()
    }


def _unreadable_kind(tensor: Any) -> str:
    """What makes a tensor unreadable as a NumPy array, or `""`."""
    import torch

    if tensor.is_nested:
        return "nested"
    if tensor.layout != torch.strided:
        return f"sparse ({tensor.layout})"
    if tensor.is_meta:
        return "meta (shape-only, no data)"
    if tensor.is_quantized:
        return f"quantized ({tensor.dtype})"
    if tensor.is_complex():
        return f"complex ({tensor.dtype})"
    return ""


def _torch_array(tensor: Any) -> np.ndarray:
    """A NumPy copy (the tensor maps the file); floats as float32."""
    import torch

    tensor = tensor.detach()
    if tensor.is_floating_point():
        return tensor.to(torch.float32, copy=True).numpy()
    return tensor.clone().numpy()


@contextlib.contextmanager
def open_checkpoint(path: PathLike) -> Iterator[StoredCheckpoint]:
    """Open a weights file, and describe its arrays without reading them.

    Any weights file: safetensors (or a shard index), `.bin`/`.pth`/`.pt`,
    Hugging Face's `tf_model.h5`, or this package's `.weights.h5` (whose
    arrays are named `"<layer path>/<index>"`, see `keras_layers`). What a
    weights file never holds is refused here, with a `CheckpointError` that
    names the file: HDF5 soft and external links, external storage and
    virtual datasets; compressed torch archives; sparse, meta, quantized or
    complex tensors; non-numeric types.

    Example:
        with open_checkpoint(path) as checkpoint:
            check(checkpoint.shapes)
            arrays = checkpoint.read(max_elements=budget)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"No checkpoint file at {path}")
    name = os.path.basename(path)
    if name.endswith(".weights.h5"):
        with _open_hdf5(path, lambda f: _describe_keras_weights(f, path)) as arrays:
            yield StoredCheckpoint(path, arrays)
    elif name.endswith(".h5"):
        with _open_hdf5(path, lambda f: _describe_tf_legacy(f, path)) as arrays:
            yield StoredCheckpoint(path, arrays)
    elif name.endswith(".index.json"):
        yield StoredCheckpoint(path, _read_safetensors_index(path))
    elif name.endswith(".safetensors"):
        yield StoredCheckpoint(path, _open_safetensors(path))
    elif name.endswith((".bin", ".pth", ".pt")):
        yield StoredCheckpoint(path, _open_torch(path))
    else:
        raise CheckpointError(
            f"Unknown checkpoint type {name!r}: expected .safetensors, .bin, .pth or .h5"
        )


def read_checkpoint(path: PathLike, max_elements: int | None = None) -> dict[str, np.ndarray]:
    """`{name: numpy array}` from any weights file (see `open_checkpoint`),
    refused before any data is read if it declares more than `max_elements`
    values in all."""
    with open_checkpoint(path) as checkpoint:
        return checkpoint.read(max_elements)


def keras_layers(arrays: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """`{layer path: [arrays in the layer's variable order]}` from the
    `"<layer path>/<index>"` names of a `.weights.h5` file's arrays."""
    layers: dict[str, list[np.ndarray]] = {}
    for name, array in arrays.items():
        layers.setdefault(name.rpartition("/")[0], []).append(array)
    return layers


def read_keras_weights(
    path: PathLike, max_elements: int | None = None
) -> dict[str, list[np.ndarray]]:
    """The variables of a Keras `.weights.h5` file, by layer path.

    Keras stores each layer's own variables as `vars/0`, `vars/1`, ... in a
    group carrying the layer's name; the chain of names from the model's
    top-level layers down gives the layer path (`"vit/layer_0/attention/qkv"`).
    Reading needs no model: `state_dicts.keras_state` names the variables.
    The optimizer state that a compiled model's file also holds is skipped.

    Returns:
        `{layer path: [arrays in the layer's variable order]}`.
    """
    return keras_layers(read_checkpoint(path, max_elements))


def _write_error(path: PathLike, error: Exception) -> OSError:
    """An `OSError` naming `path` for a writer's own error type, with the
    system's error number where the message holds one ("... (os error 28)")."""
    found = re.search(r"os error (\d+)", str(error))
    if found:
        code = int(found.group(1))
        return OSError(code, f"Could not write {os.fspath(path)}: {os.strerror(code)}")
    return OSError(f"Could not write {os.fspath(path)}: {error}")


def keras_weights_size(model: Any) -> int:
    """A little more than the size of `model.save_weights`' file: the
    variables' bytes (the optimizer's too, which a compiled model's file
    holds) and HDF5's metadata (2.4 to 2.7 KB a variable, measured on ViTMAE
    models of 30 to 254 variables)."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.weights) + list(getattr(optimizer, "variables", None) or [])
    size = 0
    for v in variables:
        try:
            itemsize = np.dtype(v.dtype).itemsize
        except TypeError:  # a dtype NumPy lacks (bfloat16): no wider than 8 bytes
            itemsize = 8
        size += int(np.prod(v.shape)) * itemsize + 4096
    return size + 16384


def _reserve(path: str, size: int) -> None:
    """Claim `size` bytes for the file `path` before h5py writes it there: h5py
    crashes the process (a segfault) when a write fails, so a full disk or a
    file size limit must show here, as an `OSError`. The writer then
    truncates the file, which frees the space for itself."""
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)  # glibc emulates it where unsupported
            return
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
        except AttributeError:  # no posix_fallocate (macOS)
            pass
    if shutil.disk_usage(os.path.dirname(path)).free < size:  # all that is left to check
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.0f} KB"


def write_failure(error: BaseException, folder: PathLike, weights_name: str, needed: int) -> str:
    """Why writing `weights_name` (`needed` bytes) into `folder` failed, as a
    sentence: a full disk or a file size limit says what is needed and what is free."""
    code = getattr(error, "errno", None)
    if code == errno.EFBIG:
        return (
            f"{weights_name} needs ~{_size(needed)}, more than the file size limit "
            "(ulimit -f) allows."
        )
    free = shutil.disk_usage(folder).free
    if code in (errno.ENOSPC, errno.EDQUOT) or free < needed:
        return f"the disk is full ({weights_name} needs ~{_size(needed)}, {_size(free)} free)."
    return (
        f"writing {weights_name} and its config failed ({type(error).__name__}: {error}). "
        "Is the disk full?"
    )


def save_keras_weights(model: Any, path: PathLike) -> None:
    """`model.save_weights(path)` (a `.weights.h5`), after claiming the space
    the file needs (`keras_weights_size`): h5py crashes the process when a
    write fails, so a full disk or a file size limit shows here first, as an
    `OSError` (`write_failure` words it)."""
    _reserve(os.fspath(path), keras_weights_size(model))
    model.save_weights(path)


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
