import os

import pytest

from tfvitmae.utils.files import (
    atomic_write,
    atomic_write_text,
    check_folder_path,
    commit_files,
    finish_commits,
    publish_dir,
    staging_dir,
)


class Killed(BaseException):
    """Stands for a kill: nothing after it runs, as after SIGKILL (but `finally` does)."""


def stage(folder, files):
    staged = folder / ".tmp-save-1"
    staged.mkdir()
    for name, text in files.items():
        (staged / name).write_text(text)
    return staged


def contents(folder):
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    assert atomic_write_text(path, "first") == str(path)
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["out.txt"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("good")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, write)
    assert path.read_text() == "good" and os.listdir(tmp_path) == ["out.txt"]


def test_staging_dir_is_removed_whatever_happens(tmp_path):
    with pytest.raises(RuntimeError):
        with staging_dir(tmp_path / "parent") as folder:
            open(os.path.join(folder, "file"), "w").close()
            assert os.path.dirname(folder) == str(tmp_path / "parent")
            raise RuntimeError
    assert os.listdir(tmp_path / "parent") == []


def test_publish_dir_never_overwrites(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "saved_model.pb").write_text("x")
    (tmp_path / "empty").mkdir()
    publish_dir(str(staged), str(tmp_path / "empty"))  # an empty target is replaced
    assert os.listdir(tmp_path / "empty") == ["saved_model.pb"] and not staged.exists()
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(OSError):
        publish_dir(str(other), str(tmp_path / "empty"))
    assert os.listdir(tmp_path / "empty") == ["saved_model.pb"]


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("not a folder")
    for folder in (blocker, blocker / "vit_mae", blocker / "vit_mae" / "1"):
        with pytest.raises(NotADirectoryError, match=rf"{blocker}' is a file, not a folder"):
            check_folder_path(folder)
        with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
            atomic_write_text(folder / "config.json", "{}")
    check_folder_path(tmp_path / "new" / "deeper")  # missing folders are fine
    assert sorted(os.listdir(tmp_path)) == ["models"]


def test_commit_files_moves_all_files_or_finishes_later(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    old = {"weights": "old weights", "config": "old config", "stale.bin": "older"}
    for name, text in old.items():
        (folder / name).write_text(text)
    new = {"weights": "new weights", "config": "new config"}
    staged = stage(folder, new)
    replace, moves = os.replace, []

    def replace_then_die(src, dst):
        if os.path.dirname(src) == str(staged):
            if moves:
                raise Killed  # after the first file moved
            moves.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        commit_files(str(staged), str(folder), ["weights", "config"], remove=["stale.bin"])
    monkeypatch.setattr(os, "replace", replace)
    assert contents(folder) == {"weights": "new weights", "config": "old config"}  # mixed
    assert finish_commits(str(tmp_path)) == []  # another folder: untouched
    assert finish_commits(str(folder)) == [str(staged)]
    assert contents(folder) == new and not staged.exists()
    assert finish_commits(str(folder)) == []


def test_staging_without_a_plan_is_unfinished_and_only_removed_on_request(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").write_text("old")
    staged = stage(folder, {"weights": "half-written"})
    (folder / ".tmp-abc").write_text("a killed atomic_write")
    assert finish_commits(str(folder)) == [] and staged.exists()
    assert finish_commits(str(folder), remove_leftovers=True) == []
    assert os.listdir(folder) == ["weights"] and (folder / "weights").read_text() == "old"
    with staging_dir(folder) as other:  # a commit that succeeds leaves no staging folder
        (tmp_path / "x").write_text("")
        os.replace(tmp_path / "x", os.path.join(other, "x"))
        assert commit_files(other, str(folder), ["x"]) == [str(folder / "x")]
    assert sorted(os.listdir(folder)) == ["weights", "x"]


def test_a_published_folder_has_a_new_folders_mode_not_a_private_one(tmp_path):
    """Exports and backups are staged in mkdtemp's private (0700) folders; once
    published, a server running as another user must be able to read them."""
    old = os.umask(0o022)
    try:
        with staging_dir(tmp_path) as staged:
            assert os.stat(staged).st_mode & 0o777 == 0o700
            (tmp_path / "expected").mkdir()  # what mkdir gives under this umask
            target = publish_dir(staged, tmp_path / "published")
    finally:
        os.umask(old)
    assert os.stat(target).st_mode & 0o777 == os.stat(tmp_path / "expected").st_mode & 0o777
    assert os.stat(target).st_mode & 0o777 == 0o755
