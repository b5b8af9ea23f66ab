"""Image folders as file lists: one scan, class labels from sub-folder names,
and train/validation splits stratified by class."""

import os
from collections.abc import Sequence
from typing import TextIO

import numpy as np

__all__ = [
    "find_unreadable",
    "list_image_files",
    "split_files",
]

# Leading bytes of the formats `tf.io.decode_image` reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_PROGRESS_EVERY = 5000


def _is_image_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8).startswith(_MAGIC)
    except OSError:
        return False


def list_image_files(
    folder: str | os.PathLike, progress: TextIO | None = None
) -> tuple[list[str], list[int], list[str], int]:
    """Image files under `folder`, with class labels from sub-folder names.

    Files are recognised by content (JPEG, PNG, GIF, BMP), not by extension.

    Args:
        folder: The folder to scan (once; nothing is decoded).
        progress: A stream for a running count on large folders (every
            5000 files), e.g. `sys.stderr`; `None` is silent.

    Returns:
        `(paths, labels, class_names, skipped)`: sorted paths, an int label
        per path (the index of its top-level sub-folder in `class_names`; 0
        for images directly in `folder`), and the number of other files skipped.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(
            f"Expected a folder of images, received {folder!r}, which is not a directory"
        )
    paths, skipped = [], 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
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
            f"No images found in {folder!r} (JPEG, PNG, GIF or BMP; {skipped} other files skipped)"
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
    labels = [index[parts[0]] if len(parts) > 1 else 0 for parts in top]
    return paths, labels, class_names, skipped


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

    from .image_processor import decode_image

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
