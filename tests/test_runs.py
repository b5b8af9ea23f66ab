import json

import pytest

from tfvitmae.runs import RUN_FILE, RunConflictError, RunProgress, read_run, start_run

SETTINGS = {"data": "/images", "batch_size": 8, "seed": 0}


def finish(folder, epochs):
    """What RunProgress records for a run that trained `epochs` epochs to the end."""
    progress = RunProgress(str(folder), epochs)
    for epoch in range(epochs):
        progress.on_epoch_end(epoch)
    progress.on_train_end()


def test_a_new_directory_starts_a_fresh_run(tmp_path):
    folder = tmp_path / "run"
    mode, message = start_run(str(folder), SETTINGS, epochs=3)
    assert mode == "fresh" and "new run" in message
    record = json.loads((folder / RUN_FILE).read_text())
    assert record == {"settings": {**SETTINGS, "epochs": 3}, "epochs_done": 0, "finished": False}


def test_a_stopped_run_with_the_same_settings_resumes(tmp_path):
    start_run(str(tmp_path), SETTINGS, epochs=5)
    progress = RunProgress(str(tmp_path), 5)
    progress.on_epoch_end(0)
    progress.on_epoch_end(1)  # killed here: no on_train_end
    assert read_run(str(tmp_path))["epochs_done"] == 2
    mode, message = start_run(str(tmp_path), SETTINGS, epochs=5)
    assert mode == "resume" and message.endswith("after epoch 2")


def test_a_finished_run_is_not_continued_silently(tmp_path):
    start_run(str(tmp_path), SETTINGS, epochs=2)
    finish(tmp_path, 2)
    assert read_run(str(tmp_path))["finished"] is True
    with pytest.raises(RunConflictError, match=r"trained 2 epochs, and this one asks for 2"):
        start_run(str(tmp_path), SETTINGS, epochs=2)
    with pytest.raises(RunConflictError, match=r"finished run \(2 epochs\).*epochs: 2 -> 4"):
        start_run(str(tmp_path), SETTINGS, epochs=4)
    mode, message = start_run(str(tmp_path), SETTINGS, epochs=4, resume=True)
    assert mode == "resume" and "after epoch 2 with new settings (epochs: 2 -> 4)" in message
    assert read_run(str(tmp_path))["settings"]["epochs"] == 4


def test_different_settings_are_refused_with_what_differs(tmp_path):
    start_run(str(tmp_path), SETTINGS, epochs=5)
    other = {**SETTINGS, "batch_size": 16}
    with pytest.raises(RunConflictError, match=r"stopped after epoch 0 with other settings "):
        start_run(str(tmp_path), other, epochs=5)
    with pytest.raises(RunConflictError, match=r"batch_size: 8 -> 16"):
        start_run(str(tmp_path), other, epochs=5)
    with pytest.raises(RunConflictError, match=r"resuming is turned off"):
        start_run(str(tmp_path), SETTINGS, epochs=5, resume=False)


def test_overwrite_starts_afresh_and_clears_the_state(tmp_path):
    start_run(str(tmp_path), SETTINGS, epochs=2)
    finish(tmp_path, 2)
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "latest.weights.h5").write_text("state")
    (tmp_path / "training_log.csv").write_text("epoch,loss\n")
    (tmp_path / "config.json").write_text("{}")  # the saved model stays until training saves
    mode, message = start_run(str(tmp_path), {**SETTINGS, "seed": 1}, epochs=2, overwrite=True)
    assert mode == "fresh" and "overwrite" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", RUN_FILE]
    assert read_run(str(tmp_path)) == {
        "settings": {**SETTINGS, "seed": 1, "epochs": 2},
        "epochs_done": 0,
        "finished": False,
    }


def test_files_no_run_wrote_are_not_trained_over(tmp_path):
    (tmp_path / "model.weights.h5").write_text("someone's model")
    with pytest.raises(RunConflictError, match=r"files that no training run recorded"):
        start_run(str(tmp_path), SETTINGS, epochs=1)
    assert (tmp_path / "model.weights.h5").read_text() == "someone's model"
    (tmp_path / RUN_FILE).write_text("{broken")
    with pytest.raises(RunConflictError, match=r"unreadable"):
        start_run(str(tmp_path), SETTINGS, epochs=1)
