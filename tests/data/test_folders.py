import io

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae.data import folders as image_folders
from tfvitmae.data.folders import list_image_files, split_files


def test_scan_reports_progress_on_large_folders(tmp_path, monkeypatch, capsys):
    png = tf.io.encode_png(np.zeros((4, 4, 3), "uint8")).numpy()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            (tmp_path / name / f"{i}.png").write_bytes(png)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    monkeypatch.setattr(image_folders, "_PROGRESS_EVERY", 4)
    stream = io.StringIO()
    paths, labels, classes, skipped = list_image_files(tmp_path, progress=stream)
    assert (len(paths), classes, skipped) == (10, ["a", "b"], 1)
    assert labels == [0] * 5 + [1] * 5
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("images so far") and len(lines) == 3  # at 4 and 8 files, then done
    assert lines[-1] == f"scanned {tmp_path}: 10 images, 1 other files skipped"
    list_image_files(tmp_path)  # no stream: silent
    assert capsys.readouterr() == ("", "")


def test_split_is_stratified_and_deterministic():
    labels = [0] * 60 + [1] * 30 + [2] * 8 + [3] * 2
    paths = [f"{i}.png" for i in range(len(labels))]
    (train, train_labels), (val, val_labels) = split_files(paths, labels, 0.1, seed=0)
    # Each class gives its share: 6, 3, 1 (0.8: the largest remainder takes the
    # tenth file) and 1 of 2 (at least one from every class of two or more).
    assert list(np.bincount(val_labels, minlength=4)) == [6, 3, 1, 1]
    assert len(val) == 11 and len(train) == 89 and not set(train) & set(val)
    assert set(train_labels) == {0, 1, 2, 3}  # no class leaves the training split
    assert [train_labels[train.index(p)] for p in train] == [labels[paths.index(p)] for p in train]
    again = split_files(paths, labels, 0.1, seed=0)
    assert again == ((train, train_labels), (val, val_labels))
    assert split_files(paths, labels, 0.1, seed=1)[1][0] != val
    assert split_files(paths, labels, 0.0)[1] == ([], [])


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), received 1.5"):
        split_files(["a.png"], [0], 1.5)
    with pytest.raises(ValueError, match=r"one label per path \(2\), received 1"):
        split_files(["a.png", "b.png"], [0], 0.5)
    with pytest.raises(ValueError, match=r"not a directory"):
        list_image_files(tmp_path / "missing")


def _png(path, value=0):
    path.write_bytes(tf.io.encode_png(np.full((4, 4, 3), value, "uint8")).numpy())


def test_pipes_are_never_opened_and_symlinked_class_folders_are_followed(tmp_path):
    import os

    data = tmp_path / "data"
    (data / "cats").mkdir(parents=True)
    _png(data / "cats" / "0.png")
    os.mkfifo(data / "cats" / "pipe.png")  # a reader of it would wait forever
    elsewhere = tmp_path / "dogs_on_another_disk"
    elsewhere.mkdir()
    _png(elsewhere / "0.png")
    (elsewhere / "loop").symlink_to(elsewhere)  # a link cycle ends
    (data / "dogs").symlink_to(elsewhere)
    webp = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(webp, "WEBP")
    (data / "cats" / "1.webp").write_bytes(webp.getvalue())
    paths, labels, classes, skipped = list_image_files(data)
    names = [os.path.relpath(p, data) for p in paths]
    assert names == ["cats/0.png", "cats/1.webp", "dogs/0.png"]
    assert (labels, classes, skipped) == ([0, 0, 1], ["cats", "dogs"], 1)


def test_images_beside_class_folders_have_no_class_and_labelled_uses_refuse_them(tmp_path):
    from tfvitmae.data import make_dataset

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _png(tmp_path / name / "0.png")
    _png(tmp_path / "stray.png")
    paths, labels, classes, _ = list_image_files(tmp_path)
    assert labels == [-1, 0, 1] and classes == ["a", "b"]  # stray.png first
    with pytest.raises(ValueError, match=r"1 images in .* are in no class sub-folder \(.*stray"):
        make_dataset(tmp_path, 4, 2, with_labels=True)
    assert len(list(make_dataset(tmp_path, 4, 3, augment=False))) == 1  # unlabelled: all three


def test_a_training_runs_output_is_never_part_of_its_data(tmp_path):
    from tfvitmae.training.runs import RUN_FILE

    assert image_folders.RUN_MARKER == RUN_FILE
    _png(tmp_path / "0.png")
    run = tmp_path / "mae-run"
    run.mkdir()
    (run / RUN_FILE).write_text("{}")
    _png(run / "reconstruction_epoch_1.png")
    paths, _, classes, _ = list_image_files(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["0.png"] and classes == []
    with pytest.raises(ValueError, match="is a training run's output directory"):
        list_image_files(run)
