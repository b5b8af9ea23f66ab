"""Atomic writes: the one way this package puts files and folders on disk
(and `read_json`, the one way it reads a JSON file back).

Everything is first written under a temporary name in the destination's own
folder (so the final rename stays on one file system, where it is atomic),
then renamed into place. An interrupted or failed write leaves the
destination as it was, and no temporary file behind.
"""

import contextlib
import json
import os
import shutil
import tempfile


def check_folder_path(folder):
    """Raise `NotADirectoryError` if `folder`, or the nearest of its parents
    that exists, is a file (where `makedirs` would only say "File exists")."""
    existing = os.path.abspath(os.fspath(folder))
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(
            f"Cannot create the folder {os.fspath(folder)!r}: {existing!r} is a file, not a folder"
        )


@contextlib.contextmanager
def staging_dir(parent, prefix=".tmp-"):
    """A fresh temporary folder inside `parent` (created if missing), removed
    on exit whatever happens. Move finished files out of it with `os.replace`."""
    check_folder_path(parent)
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def atomic_write(path, write):
    """Call `write(temporary_path)`, then rename the result to `path`.

    Args:
        path: The file to create or replace.
        write: A function that writes the whole file to the path it is given.

    Returns:
        `path`.
    """
    path = os.fspath(path)
    with staging_dir(os.path.dirname(os.path.abspath(path))) as folder:
        tmp = os.path.join(folder, os.path.basename(path))
        write(tmp)
        os.replace(tmp, path)
    return path


def atomic_write_text(path, text):
    """Write `text` (UTF-8) to `path` atomically."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def publish_dir(staged, target):
    """Rename the finished folder `staged` to `target`, which must not exist
    or be empty (TF Serving versions, for instance, are never overwritten)."""
    if os.path.isdir(target):
        os.rmdir(target)  # raises if not empty
    os.rename(staged, target)
    return target


def read_json(path):
    """The JSON document at `path`; a `ValueError` naming the file if it is not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
