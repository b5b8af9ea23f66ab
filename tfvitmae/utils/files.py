"""Atomic writes: the one way this package puts files and folders on disk
(and `read_json`, the one way it reads a JSON file back).

Everything is first written under a temporary name in the destination's own
folder (so the final rename stays on one file system, where it is atomic),
then renamed into place. An interrupted or failed write leaves the
destination as it was, and no temporary file behind.

Several files that belong together (a `save_pretrained` checkpoint) are
moved in by `commit_files`, which first writes its plan beside them: a kill
during the moves leaves a plan that `finish_commits` carries out, so the
folder ends up wholly old or wholly new, never mixed. A plan is carried
out only if it is ours: it has our format marker, names only plain file
names inside the folder, and the staged files it names have the sizes it
records. `remove_staging_leftovers` removes only the staging folders that
`staging_dir` marked.
"""

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from .types import PathLike

__all__ = [
    "COMMIT_PLAN",
    "PLAN_FORMAT",
    "PLAN_VERSION",
    "STAGING_MARKER",
    "CommitPlanError",
    "atomic_write",
    "atomic_write_text",
    "check_folder_path",
    "commit_files",
    "finish_commits",
    "locked_folder",
    "pending_commits",
    "publish_dir",
    "read_commit_plan",
    "read_json",
    "remove_staging_leftovers",
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
# What marks a plan as ours: another tool's file of the same name lacks it.
PLAN_FORMAT = "tfvitmae-commit-plan"
PLAN_VERSION = 1
_MAX_PLAN_BYTES = 1 << 16  # a plan names a few files; a larger one is not ours
# Written into every staging folder: run start-up removes only the leftovers it marks.
STAGING_MARKER = ".tfvitmae-staging"


class CommitPlanError(ValueError):
    """A staging folder's plan is not one `commit_files` wrote, or does not fit
    the files beside it: it is not carried out, and nothing is changed."""


@contextlib.contextmanager
def staging_dir(parent: PathLike, prefix: str = ".tmp-") -> Iterator[str]:
    """A fresh temporary folder inside `parent` (created if missing), removed
    on exit whatever happens, unless it holds a commit that failed half-way
    (left for `finish_commits`). Move finished files out of it with
    `os.replace`, `commit_files` or `publish_dir`. It holds the empty file
    `STAGING_MARKER`, by which `remove_staging_leftovers` knows it as ours,
    and the marker is locked (`flock`) while in use, by which it knows it is
    not a leftover."""
    import fcntl

    check_folder_path(parent)
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
    # The marker file holds the lock, not the folder: NFS emulates flock with
    # POSIX locks, whose exclusive kind needs a descriptor open for writing,
    # which a folder cannot have. It is locked under another name, then
    # renamed: a marked folder is never seen unlocked.
    unmarked = os.path.join(folder, STAGING_MARKER + ".new")
    fd = os.open(unmarked, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(unmarked, os.path.join(folder, STAGING_MARKER))
        yield folder
    finally:
        if not os.path.lexists(os.path.join(folder, COMMIT_PLAN)):
            shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)  # releases the lock


def commit_files(
    staged: PathLike, folder: PathLike, names: Collection[str], remove: Iterable[str] = ()
) -> list[str]:
    """Move the finished files `names` from the staging folder `staged` into
    `folder`, and delete the files `remove` from it, as one step: the plan
    (with the staged files' sizes) is written into `staged` first, so that if
    the moves are interrupted, `finish_commits(folder)` completes them.
    Removes `staged`.

    Returns:
        The paths of the moved files.
    """
    plan: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "move": {name: os.lstat(os.path.join(staged, name)).st_size for name in names},
        "remove": list(remove),
    }
    plan_path = os.path.join(staged, COMMIT_PLAN)
    _check_plan(plan_path, plan, os.fspath(folder))  # what finish_commits will accept
    atomic_write_text(plan_path, json.dumps(plan))
    _carry_out(staged, folder, plan)
    return [os.path.join(folder, name) for name in names]


def _carry_out(staged: PathLike, folder: PathLike, plan: dict[str, Any]) -> None:
    """Make `plan` (checked by `read_commit_plan`) so, from wherever an earlier
    try stopped."""
    for name in plan["remove"]:
        with contextlib.suppress(FileNotFoundError):  # gone already (an earlier try)
            os.remove(os.path.join(folder, name))
    for name in plan["move"]:
        with contextlib.suppress(FileNotFoundError):  # moved already
            os.replace(os.path.join(staged, name), os.path.join(folder, name))
    shutil.rmtree(staged, ignore_errors=True)


def _plain_name_problem(name: object) -> str | None:
    """Why `name` is not a plain file name that stays inside a folder, or None."""
    if not isinstance(name, str):
        return f"{name!r} is not a file name"
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        return f"{name!r} is not a plain file name inside the folder"
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        return f"{name!r} is not a file name this system can write"
    if len(encoded) > 255:
        return f"{name[:40]!r}... is longer than a file name can be"
    return None


def _check_plan(plan_path: str, plan: Any, folder: str) -> None:
    """Raise `CommitPlanError` unless `plan` is one of ours for the files beside it."""

    def refuse(reason: str) -> CommitPlanError:
        return CommitPlanError(
            f"{plan_path} is not a plan this package wrote, or does not fit the files beside "
            f"it: {reason}. Nothing was changed; remove {os.path.dirname(plan_path)} if it is "
            "not yours"
        )

    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise refuse(f"it has no format {PLAN_FORMAT!r}")
    if plan.get("version") != PLAN_VERSION:
        raise refuse(f"its version is {plan.get('version')!r}, expected {PLAN_VERSION}")
    move, remove = plan.get("move"), plan.get("remove")
    if (
        not isinstance(move, dict)
        or not isinstance(remove, list)
        or set(plan) != {"format", "version", "move", "remove"}
    ):
        raise refuse(
            "expected exactly the keys format, version, move {name: size} and remove [names]"
        )
    staged = os.path.dirname(plan_path)
    for name in [*move, *remove]:
        problem = _plain_name_problem(name)
        if problem is not None:
            raise refuse(problem)
    for name in [*move, *remove]:
        if name == COMMIT_PLAN or name == STAGING_MARKER:
            raise refuse(f"it names its own bookkeeping file {name!r}")
        if _is_dir(os.path.join(folder, name)):
            raise refuse(f"{name!r} is a folder in {folder}")
    for name, size in move.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise refuse(f"the size of {name!r} is {size!r}, not a number of bytes")
        # Not yet moved: the staged file; moved already (an interrupted commit): the folder's.
        if os.path.lexists(os.path.join(staged, name)):
            found = _regular_size(os.path.join(staged, name))
            if found is None:
                raise refuse(f"the staged {name!r} is a link or a folder, not a file")
        else:
            found = _regular_size(os.path.join(folder, name))
            if found is None:
                raise refuse(f"{name!r} is neither staged nor a file in {folder}")
        if found != size:
            raise refuse(f"{name!r} has {found} bytes, the plan records {size}")


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _regular_size(path: str) -> int | None:
    """The size of the regular file (not a link) at `path`, or None."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def read_commit_plan(staged: PathLike, folder: PathLike) -> dict[str, Any]:
    """The plan that `commit_files` left in `staged` for `folder`, checked.

    Raises:
        CommitPlanError: The plan is not ours (no format marker, names that
            are not plain file names in `folder`, staged files missing or of
            other sizes than it records), naming the file and the entry.
    """
    staged, folder = os.fspath(staged), os.fspath(folder)
    plan_path = os.path.join(staged, COMMIT_PLAN)
    if os.path.islink(staged) or os.path.islink(plan_path):
        raise CommitPlanError(f"{plan_path} is reached through a link; a plan of ours never is")
    size = _regular_size(plan_path)
    if size is None or size > _MAX_PLAN_BYTES:
        raise CommitPlanError(
            f"{plan_path} is not a plan this package wrote: "
            + ("not a regular file" if size is None else f"{size} bytes, more than a plan holds")
        )
    try:
        plan = read_json(plan_path)
    except (ValueError, RecursionError) as e:  # (a UnicodeDecodeError is a ValueError)
        raise CommitPlanError(f"{plan_path} is not a plan this package wrote: {e}") from None
    _check_plan(plan_path, plan, folder)
    return plan


def pending_commits(folder: PathLike, prefix: str = ".tmp-") -> list[tuple[str, dict[str, Any]]]:
    """`[(staging folder, plan)]` of the `commit_files` moves that a kill
    interrupted in `folder` (in its staging folders named `prefix*`), every
    plan checked (`read_commit_plan`) before any is carried out."""
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        if name.startswith(prefix) and os.path.lexists(os.path.join(path, COMMIT_PLAN)):
            found.append((path, read_commit_plan(path, folder)))
    return found


def finish_commits(folder: PathLike, prefix: str = ".tmp-") -> list[str]:
    """Complete the `commit_files` moves that a kill interrupted in `folder`
    (in its staging folders named `prefix*`).

    Raises:
        CommitPlanError: A plan is not ours (see `read_commit_plan`); then
            nothing is changed.

    Returns:
        The staging folders whose commits were completed.
    """
    plans = pending_commits(folder, prefix)
    for staged, plan in plans:
        _carry_out(staged, folder, plan)
    return [staged for staged, _ in plans]


def remove_staging_leftovers(folder: PathLike, prefix: str = ".tmp-") -> list[str]:
    """Remove the staging folders named `prefix*` in `folder` that `staging_dir`
    made (marked with `STAGING_MARKER`) and a crashed or killed write left
    unfinished (no process holds them locked). Nothing else is touched: a
    user's `.tmp-notes.txt` or `.tmp-keep/` stays, and so does a folder
    holding a plan (`finish_commits` decides on it).

    Returns:
        The folders removed.
    """
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        if (
            name.startswith(prefix)
            and _is_dir(path)
            and _regular_size(os.path.join(path, STAGING_MARKER)) == 0
            and not os.path.lexists(os.path.join(path, COMMIT_PLAN))
            and not _in_use(path)
        ):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _in_use(folder: str) -> bool:
    """Whether a live `staging_dir` holds `folder`'s marker locked (a write under way)."""
    import fcntl

    try:
        fd = os.open(os.path.join(folder, STAGING_MARKER), os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:  # just published (publish_dir removes the marker)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def locked_folder(folder: PathLike, exclusive: bool) -> Iterator[None]:
    """A `flock` on the folder itself (no lock file is written): the moves of a
    `save_pretrained` or a run's clean-up (exclusive) and the reads of a load
    (shared) exclude one another, so a load sees one whole save. The kernel
    drops the lock of a killed process. Where the file system cannot lock a
    folder (NFS refuses an exclusive lock on a descriptor not open for
    writing), it warns once per folder and goes on unlocked: each file still
    arrives whole, by rename."""
    import errno
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not a local folder (a Hub id), or one we cannot open
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError as e:
            if e.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _warn_unlockable(os.fspath(folder), e)
        yield
    finally:
        os.close(fd)  # releases the lock


_UNLOCKABLE: set[str] = set()  # folders already warned about


def _warn_unlockable(folder: str, error: OSError) -> None:
    import warnings

    real = os.path.realpath(folder)
    if real not in _UNLOCKABLE:
        _UNLOCKABLE.add(real)
        warnings.warn(
            f"Cannot lock the folder {folder} on its file system ({error.strerror}): a save "
            "into it and a load from it are not kept apart (each file still arrives whole)",
            stacklevel=4,
        )


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
    with contextlib.suppress(FileNotFoundError):  # staging bookkeeping, not part of the result
        os.remove(os.path.join(staged, STAGING_MARKER))
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
