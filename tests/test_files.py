import os

import pytest

from tfvitmae.files import (
    atomic_write,
    atomic_write_text,
    check_folder_path,
    publish_dir,
    staging_dir,
)


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
