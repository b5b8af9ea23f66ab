"""Image folders as file lists: one scan, class labels from sub-folder names,
and train/validation splits stratified by class."""

import os
import stat
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from ..utils.types import PathLike

__all__ = [
    "RUN_MARKER",
    "check_labelled",
    "find_unreadable",
    "list_image_files",
    "split_files",
]

# Leading bytes of the formats `tf.io.decode_image` reads (WebP: "RIFF", size, "WEBP").
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_PROGRESS_EVERY = 5000
# A training run's output directory holds this file (`training.runs.RUN_FILE`):
# its checkpoints and reconstruction grids are never part of the data.
RUN_MARKER = "run.json"


def _is_image_file(path: str) -> bool:
    """Whether `path` is a regular file that starts like an image. Pipes and
    devices are never opened (reading a pipe would wait forever)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _walk(folder: str):
    """`os.walk(folder)` in sorted order, following symlinked folders (each real
    folder once, so a link cycle ends) and leaving out training runs' outputs."""
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or (root != folder and RUN_MARKER in files):
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        yield root, sorted(files)


def list_image_files(
    folder: str | os.PathLike, progress: TextIO | None = None
) -> tuple[list[str], list[int], list[str], int]:
    """Image files under `folder`, with class labels from sub-folder names.

    Files are recognised by content (JPEG, PNG, GIF, BMP, WebP), not by
    extension; only regular files are opened. Symlinked folders are followed,
    and a training run's output folder inside `folder` (one holding
    `run.json`) is left out, so a run never trains on its own pictures.

    Args:
        folder: The folder to scan (once; nothing is decoded).
        progress: A stream for a running count on large folders (every
            5000 files), e.g. `sys.stderr`; `None` is silent.

    Returns:
        `(paths, labels, class_names, skipped)`: sorted paths, an int label
        per path (the index of its top-level sub-folder in `class_names`;
        images directly in `folder` get 0 when there are no class folders,
        and -1, no class, beside class folders), and the number of other
        files skipped.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(
            f"Expected a folder of images, received {folder!r}, which is not a directory"
        )
    if os.path.isfile(os.path.join(folder, RUN_MARKER)):
        raise ValueError(
            f"{folder} is a training run's output directory ({RUN_MARKER}), not a folder of data"
        )
    paths, skipped = [], 0
    for root, files in _walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if _is_image_file(path):
                paths.append(path)
            else:
                skipped += 1
            seen = len(paths) + skipped
            if progress is not None and seen % _PROGRESS_EVERY == 0:
                print(f"scanning {folder}: {len(paths)} images so far", file=progress, flush=True)
    if not paths:
        raise ValueError(
            f"No images found in {folder!r} (JPEG, PNG, GIF, BMP or WebP; {skipped} other files "
            "skipped)"
        )
    if progress is not None:
        print(
            f"scanned {folder}: {len(paths)} images"
            + (f", {skipped} other files skipped" if skipped else ""),
            file=progress,
            flush=True,
        )
    top = [os.path.relpath(p, folder).split(os.sep) for p in paths]
    class_names = sorted({parts[0] for parts in top if len(parts) > 1})
    index = {name: i for i, name in enumerate(class_names)}
    stray = -1 if class_names else 0
    labels = [index[parts[0]] if len(parts) > 1 else stray for parts in top]
    return paths, labels, class_names, skipped


def check_labelled(paths: Sequence[str], labels: Sequence[int], folder: PathLike) -> None:
    """Refuse images of a labelled folder that belong to no class (label -1:
    files directly in `folder`, beside its class sub-folders)."""
    stray = [p for p, label in zip(paths, labels) if label < 0]
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise ValueError(
            f"{len(stray)} images in {os.fspath(folder)} are in no class sub-folder ({shown}); "
            "move them into one, or out of the folder"
        )


def split_files(
    paths: Sequence[str], labels: Sequence[int], val_fraction: float, *, seed: int = 0
) -> tuple[tuple[list[str], list[int]], tuple[list[str], list[int]]]:
    """Deterministic train/validation split, stratified by label.

    Validation gets `round(n * val_fraction)` files, shared among the classes
    in proportion to their sizes (largest remainders first). A class of two or
    more files gives at least one when `val_fraction > 0`, and never all of them.

    Returns:
        `((train_paths, train_labels), (val_paths, val_labels))`, each
        shuffled by `seed`.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), received {val_fraction}")
    if len(paths) != len(labels):
        raise ValueError(f"Expected one label per path ({len(paths)}), received {len(labels)}")
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    classes = np.unique(labels_array)
    members = [rng.permutation(np.flatnonzero(labels_array == c)) for c in classes]
    quotas = np.array([len(m) * val_fraction for m in members])
    counts = np.floor(quotas).astype(int)
    leftover = int(round(len(paths) * val_fraction)) - counts.sum()
    order = np.lexsort((rng.random(len(classes)), -(quotas - counts)))  # largest remainder first
    counts[order[: max(leftover, 0)]] += 1
    sizes = np.array([len(m) for m in members])
    if val_fraction > 0:
        counts = np.where(sizes >= 2, np.maximum(counts, 1), counts)
    counts = np.minimum(counts, np.maximum(sizes - 1, 0))
    val = np.concatenate([m[:k] for m, k in zip(members, counts)] + [np.zeros(0, int)])
    train = np.concatenate([m[k:] for m, k in zip(members, counts)] + [np.zeros(0, int)])

    def pick(indices):
        indices = rng.permutation(indices.astype(np.int64))
        return [paths[i] for i in indices], [labels[i] for i in indices]

    return pick(train), pick(val)


def find_unreadable(paths: Sequence[str], num_channels: int = 3) -> list[str]:
    """The files among `paths` that do not decode (a right header with broken
    data): one parallel decoding pass with `tf.data`, in C++.

    Returns:
        The unreadable paths, in the order given.
    """
    import tensorflow as tf

    from .decoding import decode_image

    def check(path):
        image = decode_image(tf.io.read_file(path), num_channels)
        # Its height, so that the decode runs (a bare control dependency gets pruned).
        return path, tf.shape(image)[0]

    readable = (
        tf.data.Dataset.from_tensor_slices(list(paths))
        .map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        .ignore_errors()
    )
    good = {path.decode() for path, _ in readable.as_numpy_iterator()}
    return [path for path in paths if path not in good]
