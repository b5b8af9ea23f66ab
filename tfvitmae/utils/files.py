"""Atomic writes: the one way this package puts files and folders on disk
(and `read_json`, the one way it reads a JSON file back).

Everything is first written under a temporary name in the destination's own
folder (so the final rename stays on one file system, where it is atomic),
then renamed into place. An interrupted or failed write leaves the
destination as it was, and no temporary file behind.

Several files that belong together (a `save_pretrained` checkpoint) are
moved in by `commit_files`, which first writes its plan beside them: a kill
during the moves leaves a plan that `finish_commits` carries out, so the
folder ends up wholly old or wholly new, never mixed.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from .types import PathLike

__all__ = [
    "COMMIT_PLAN",
    "atomic_write",
    "atomic_write_text",
    "check_folder_path",
    "commit_files",
    "finish_commits",
    "publish_dir",
    "read_json",
    "staging_dir",
]


def check_folder_path(folder: PathLike) -> None:
    """Raise `NotADirectoryError` if `folder`, or the nearest of its parents
    that exists, is a file (where `makedirs` would only say "File exists")."""
    existing = os.path.abspath(os.fspath(folder))
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(
            f"Cannot create the folder {os.fspath(folder)!r}: {existing!r} is a file, not a folder"
        )


COMMIT_PLAN = "commit-plan.json"


@contextlib.contextmanager
def staging_dir(parent: PathLike, prefix: str = ".tmp-") -> Iterator[str]:
    """A fresh temporary folder inside `parent` (created if missing), removed
    on exit whatever happens, unless it holds a commit that failed half-way
    (left for `finish_commits`). Move finished files out of it with
    `os.replace` or `commit_files`."""
    check_folder_path(parent)
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield folder
    finally:
        if not os.path.exists(os.path.join(folder, COMMIT_PLAN)):
            shutil.rmtree(folder, ignore_errors=True)


def commit_files(
    staged: PathLike, folder: PathLike, names: Collection[str], remove: Iterable[str] = ()
) -> list[str]:
    """Move the finished files `names` from the staging folder `staged` into
    `folder`, and delete the files `remove` from it, as one step: the plan is
    written into `staged` first, so that if the moves are interrupted,
    `finish_commits(folder)` completes them. Removes `staged`.

    Returns:
        The paths of the moved files.
    """
    plan = {"move": list(names), "remove": list(remove)}
    atomic_write_text(os.path.join(staged, COMMIT_PLAN), json.dumps(plan))
    _carry_out(staged, folder, plan)
    return [os.path.join(folder, name) for name in names]


def _carry_out(staged: PathLike, folder: PathLike, plan: dict[str, list[str]]) -> None:
    for name in plan["remove"]:
        with contextlib.suppress(FileNotFoundError):  # gone already (an earlier try)
            os.remove(os.path.join(folder, name))
    for name in plan["move"]:
        with contextlib.suppress(FileNotFoundError):  # moved already
            os.replace(os.path.join(staged, name), os.path.join(folder, name))
    shutil.rmtree(staged, ignore_errors=True)


def finish_commits(
    folder: PathLike, prefix: str = ".tmp-", remove_leftovers: bool = False
) -> list[str]:
    """Complete the `commit_files` moves that a kill interrupted in `folder`
    (in its staging folders named `prefix*`), and with `remove_leftovers`
    remove the other staging files and folders, which a killed write left
    unfinished.

    Returns:
        The staging folders whose commits were completed.
    """
    finished: list[str] = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if not name.startswith(prefix):
            continue
        path = os.path.join(folder, name)
        plan = os.path.join(path, COMMIT_PLAN)
        if os.path.isfile(plan):
            _carry_out(path, folder, read_json(plan))
            finished.append(path)
        elif remove_leftovers and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif remove_leftovers:
            os.remove(path)
    return finished


def atomic_write(path: PathLike, write: Callable[[str], object]) -> str:
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


def atomic_write_text(path: PathLike, text: str) -> str:
    """Write `text` (UTF-8) to `path` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def publish_dir(staged: PathLike, target: PathLike) -> PathLike:
    """Rename the finished folder `staged` to `target`, which must not exist
    or be empty (TF Serving versions, for instance, are never overwritten)."""
    if os.path.isdir(target):
        os.rmdir(target)  # raises if not empty
    # mkdtemp made the folder private (0700); published, it gets a new folder's
    # mode, so that a server running as another user can read an export.
    os.chmod(staged, 0o777 & ~_umask())
    os.rename(staged, target)
    return target


def _umask() -> int:
    """The process's file-mode creation mask (read by setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What `read_json` accepts. Our JSON files (configs, run records, shard
# indexes) are a few levels deep and at most megabytes; a deeper or larger
# file is refused before it can exhaust the stack or memory.
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 64 * 2**20
# A JSON string (skipped: brackets inside it do not nest), or a bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def read_json(path: PathLike) -> dict[str, Any]:
    """The JSON object at `path`; a `ValueError` naming the file if it is not
    UTF-8 JSON, not an object, larger than `MAX_JSON_BYTES` or nested deeper
    than `MAX_JSON_DEPTH` levels."""
    with open(path, "rb") as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(
            f"{path} is larger than {MAX_JSON_BYTES // 2**20} MiB, too large a JSON file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        if token.group() in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{path} is nested deeper than {MAX_JSON_DEPTH} levels")
        elif token.group() in ("]", "}"):
            depth -= 1
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:  # nesting the scan above missed in a malformed file
        raise ValueError(f"{path} is nested too deeply to read") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object: it holds a {type(value).__name__}")
    return value
