import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from tfvitmae.checkpoints.formats import CheckpointError
from tfvitmae.training.runs import (
    CSV_LOG,
    LOCK_FILE,
    RUN_FILE,
    RunConflictError,
    RunProgress,
    backups,
    read_run,
    start_run,
    unlock_run_dir,
)
from tfvitmae.utils.files import STAGING_MARKER

ROOT = pathlib.Path(__file__).resolve().parents[2]

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


def test_a_continued_run_keeps_its_accum_steps_and_old_records_read_as_one(tmp_path):
    """`accum_steps` shapes a backup's optimizer state (its step count counts
    batches, and only accumulation has accumulators): a continued run
    (`resume`) may change the recipe, but not that, once a backup exists. A
    record written before accumulation trained one batch per update."""
    accumulated = {**SETTINGS, "accum_steps": 2, "effective_batch_size": 16}
    plain = {**SETTINGS, "accum_steps": 1, "effective_batch_size": 8}
    start_run(str(tmp_path), accumulated, epochs=3)
    with pytest.raises(
        RunConflictError,
        match=r"other settings \(accum_steps: 2 -> 1; effective_batch_size: 16 -> 8",
    ):
        start_run(str(tmp_path), plain, epochs=3)
    RunProgress(str(tmp_path), 3).on_epoch_end(0)
    (tmp_path / "backup" / "epoch_1").mkdir(parents=True)
    (tmp_path / "backup" / "epoch_1" / "state.weights.h5").write_bytes(b"")
    with pytest.raises(
        RunConflictError,
        match=r"holds a run with accum_steps=2, and this one asks for accum_steps=1: a continued "
        r"run keeps it.*Pass overwrite",
    ):
        start_run(str(tmp_path), plain, epochs=3, resume=True)
    assert read_run(str(tmp_path))["settings"]["accum_steps"] == 2  # refused: left as it was
    assert start_run(str(tmp_path), accumulated, epochs=3)[0] == "resume"
    assert start_run(str(tmp_path), accumulated, epochs=4, resume=True)[0] == "resume"

    legacy = tmp_path / "legacy"
    start_run(str(legacy), SETTINGS, epochs=3)  # no accum_steps, as 0.x recorded
    with pytest.raises(
        RunConflictError, match=r"accum_steps: 1 -> 2; effective_batch_size: 8 -> 16"
    ):
        start_run(str(legacy), accumulated, epochs=3)
    assert start_run(str(legacy), plain, epochs=3) == (
        "resume",
        f"resuming the run in {legacy} after epoch 0",
    )


def test_overwrite_starts_afresh_and_clears_the_state(tmp_path):
    start_run(str(tmp_path), SETTINGS, epochs=2)
    finish(tmp_path, 2)
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "latest.weights.h5").write_text("state")
    (tmp_path / "training_log.csv").write_text("epoch,loss\n")
    (tmp_path / "config.json").write_text("{}")  # the saved model stays until training saves
    mode, message = start_run(str(tmp_path), {**SETTINGS, "seed": 1}, epochs=2, overwrite=True)
    assert mode == "fresh" and "overwrite" in message
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_FILE)  # the run's lock
    assert kept == ["config.json", RUN_FILE]
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
    with pytest.raises(RunConflictError, match=r"unreadable.*pass overwrite"):
        start_run(str(tmp_path), SETTINGS, epochs=1)
    # ...and overwrite, as the error says, starts afresh (it was refused as unreadable too).
    mode, message = start_run(str(tmp_path), SETTINGS, epochs=1, overwrite=True)
    assert mode == "fresh" and "cleared the previous run's state" in message
    assert read_run(str(tmp_path))["epochs_done"] == 0
    unlock_run_dir(tmp_path)


def everything(root):
    """Every file and folder under `root`, with the files' contents."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")
    }


def user_folder(folder):
    folder.mkdir()
    (folder / "report.docx").write_text("the user's report")
    (folder / ".tmp-notes.txt").write_text("the user's notes")
    (folder / ".tmp-keep").mkdir()
    (folder / ".tmp-keep" / "thesis.tex").write_text("the user's thesis")
    return folder


def test_a_refused_run_leaves_the_folder_as_it_was(tmp_path):
    """`start_run` removed every `.tmp-*` entry before it refused the folder,
    and left its lock file behind."""
    folder = user_folder(tmp_path / "userdir")
    before = everything(tmp_path)
    with pytest.raises(RunConflictError, match=r"files that no training run recorded"):
        start_run(str(folder), SETTINGS, epochs=1)
    assert everything(tmp_path) == before  # no .tmp-* removed, no lock file
    # Accepted (overwrite): only now are our own leftovers cleared, and only those.
    ours = folder / ".tmp-abc123"
    ours.mkdir()
    (ours / STAGING_MARKER).touch()
    start_run(str(folder), SETTINGS, epochs=1, overwrite=True)
    unlock_run_dir(folder)
    assert not ours.exists()
    assert {k: v for k, v in everything(tmp_path).items() if k in before} == before


def test_run_start_carries_out_no_plan_but_ours(tmp_path):
    """A `.tmp-save-*/commit-plan.json` moving `../.bashrc`, in an output
    folder that holds nothing else, overwrote the file above it at run start."""
    folder = tmp_path / "out"
    (folder / ".tmp-save-x").mkdir(parents=True)
    (folder / ".tmp-save-x" / "commit-plan.json").write_text(
        json.dumps({"move": ["../.bashrc"], "remove": []})
    )
    (folder / ".bashrc").write_text("the attacker's")
    (tmp_path / ".bashrc").write_text("the user's")
    before = everything(tmp_path)
    with pytest.raises(CheckpointError, match=r"commit-plan\.json is not a plan this package"):
        start_run(str(folder), SETTINGS, epochs=1)
    assert everything(tmp_path) == before  # no lock file either


def test_the_run_lock_is_never_written_through_a_link(tmp_path):
    """A `.tfvitmae-run.lock` that links elsewhere got the run's pid line
    written over the file it pointed to."""
    (tmp_path / "elsewhere.txt").write_text("the user's")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_FILE).symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(RunConflictError, match=r"run\.lock is not a lock file of ours"):
        start_run(str(folder), SETTINGS, epochs=1)
    assert (tmp_path / "elsewhere.txt").read_text() == "the user's"
    assert sorted(os.listdir(folder)) == [LOCK_FILE]


def run_script(output_dir, epochs, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.interrupted_run", str(output_dir), str(epochs), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_run(output_dir, epochs):
    """Rerun to the end; the output must say whether it resumed or started afresh."""
    process = run_script(output_dir, epochs)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    said = re.search(r"(resuming the run in .*|starting a new run in .*)", out)
    assert said, out
    assert read_run(str(output_dir))["finished"], out
    return said.group(1), out


def log(output_dir):
    with open(os.path.join(output_dir, CSV_LOG)) as f:
        return {int(row["epoch"]): row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_a_kill_inside_the_backup_write_leaves_a_resumable_run(tmp_path):
    straight = tmp_path / "straight"
    said, _ = finish_run(straight, 4)
    assert said.startswith("starting a new run")
    killed, marker = tmp_path / "killed", tmp_path / "in-backup-write"
    process = run_script(killed, 4, "--pause-in-backup", str(marker))
    deadline = time.time() + 120
    while not marker.exists():  # epoch 2's backup is written, not yet renamed into place
        assert process.poll() is None and time.time() < deadline, process.communicate()[0]
        time.sleep(0.05)
    process.kill()
    process.communicate()
    assert [epoch for epoch, _ in backups(str(killed))] == [1]
    said, out = finish_run(killed, 4)
    assert said.startswith("resuming the run") and "epoch_1" in said, out
    assert not [n for n in os.listdir(killed / "backup") if n.startswith(".tmp-")]
    assert [epoch for epoch, _ in backups(str(killed))] == [4]
    # The resumed run continues the uninterrupted run's curves (same seed, data and masks).
    resumed, reference = log(killed), log(straight)
    for epoch in (2, 3):  # CSV epochs count from 0: the epochs after the restored one
        for column in ("loss", "learning_rate"):
            assert float(resumed[epoch][column]) == pytest.approx(
                float(reference[epoch][column]), rel=1e-4
            ), (column, epoch)


@pytest.mark.slow
def test_kills_at_any_time_leave_a_run_that_resumes_or_restarts(tmp_path):
    for delay in (6.0, 9.0):  # while building and training, and near an epoch's saves
        output_dir = tmp_path / f"after-{delay}s"
        process = run_script(output_dir, 4)
        time.sleep(delay)
        process.kill()
        process.communicate()
        said, out = finish_run(output_dir, 4)
        assert [epoch for epoch, _ in backups(str(output_dir))] == [4], out
        assert sorted(log(output_dir)) == [0, 1, 2, 3], out


def test_restore_falls_back_past_a_broken_backup_and_names_unusable_ones(tmp_path):
    import keras
    import numpy as np

    from tests.helpers import tiny_config
    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.training.runs import RunBackup, restore_backup

    def compiled():
        model = TFViTMAEForPreTraining(tiny_config(), seed=0)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        model.optimizer.build(model.trainable_variables)
        return model

    model = compiled()
    backup = RunBackup(str(tmp_path))
    backup.set_model(model)
    backup.on_epoch_end(0)
    saved = [w.numpy() for w in model.weights]
    backup.on_epoch_end(1)  # epoch 2's backup replaces epoch 1's...
    assert [epoch for epoch, _ in backups(str(tmp_path))] == [2]
    (tmp_path / "backup" / "epoch_1").mkdir()  # ...so put an older one back by hand
    for name in ("state.weights.h5", "random_state.json"):
        shutil.copy(tmp_path / "backup" / "epoch_2" / name, tmp_path / "backup" / "epoch_1")
    (tmp_path / "backup" / "epoch_2" / "state.weights.h5").write_bytes(b"truncated")
    (tmp_path / "backup" / ".tmp-killed").mkdir()  # a killed write's leftovers...
    (tmp_path / "backup" / ".tmp-killed" / STAGING_MARKER).touch()  # ...as staging_dir marks them
    (tmp_path / "backup" / ".tmp-mine").mkdir()  # the user's: not ours to remove
    fresh = compiled()
    with pytest.warns(UserWarning, match=r"epoch_2.*unreadable.*trying an older one"):
        epoch, path = restore_backup(fresh, str(tmp_path))
    assert epoch == 1 and path.endswith(os.path.join("epoch_1", "state.weights.h5"))
    for restored, original in zip(fresh.weights, saved):
        np.testing.assert_array_equal(restored.numpy(), original)
    backup.on_train_begin()
    assert sorted(os.listdir(tmp_path / "backup")) == [".tmp-mine", "epoch_1", "epoch_2"]
    (tmp_path / "backup" / "epoch_1" / "state.weights.h5").write_bytes(b"also broken")
    with pytest.raises(RunConflictError, match=r"No backup .* can be resumed from.*--overwrite"):
        with pytest.warns(UserWarning):
            restore_backup(compiled(), str(tmp_path))


def test_a_backup_onto_a_full_disk_is_one_error_and_keeps_the_last_backup(tmp_path, monkeypatch):
    """h5py crashes the process when a write fails (issue 29, case 5): the
    backup claims its space first, so a full disk is an error naming the folder."""
    import errno

    from tests.helpers import backed_up_model

    model, backup = backed_up_model(tmp_path)
    kept = (tmp_path / "backup" / "epoch_1" / "state.weights.h5").read_bytes()

    def no_space(fd, offset, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 9_000))
    monkeypatch.setattr(model, "save_weights", lambda path: pytest.fail("h5py was asked to write"))
    with pytest.raises(OSError) as caught:
        backup.on_epoch_end(1)
    assert re.fullmatch(
        rf"Could not back up epoch 2 to {tmp_path / 'backup'}: the disk is full "
        r"\(state.weights.h5 needs ~\d+ KB, 9 KB free\)\. The last complete backup is kept",
        str(caught.value),
    )
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch_1"]  # no staging folder left
    assert (tmp_path / "backup" / "epoch_1" / "state.weights.h5").read_bytes() == kept


def test_one_training_run_per_directory_and_a_killed_one_leaves_no_lock(tmp_path):
    """A second run, or an overwrite, is refused while a run lives, naming it;
    the kernel drops a killed run's lock, so the directory is usable again."""
    from tfvitmae.training.runs import RUN_FILE, start_run, unlock_run_dir

    code = (
        "import sys, time\n"
        "from tfvitmae.training.runs import start_run\n"
        "start_run(sys.argv[1], {'a': 1}, 2)\n"
        "print('holding', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        pattern = rf"in use by another training run \(pid {holder.pid} on "
        with pytest.raises(RunConflictError, match=pattern):
            start_run(tmp_path, {"a": 1}, 2)
        with pytest.raises(RunConflictError, match=pattern):
            start_run(tmp_path, {"a": 2}, 2, overwrite=True)
        assert json.loads((tmp_path / RUN_FILE).read_text())["settings"]["a"] == 1
    finally:
        holder.kill()
        holder.wait()
    mode, _ = start_run(tmp_path, {"a": 1}, 2)
    assert mode == "resume"
    start_run(tmp_path, {"a": 1}, 2)  # the same process again: no conflict with itself
    unlock_run_dir(tmp_path)


def test_run_start_up_clears_leftovers_only_under_the_folders_lock(tmp_path):
    """Issue 30, item 5: start-up removed a checkpoint folder's leftovers under
    a concurrent `from_pretrained` (which holds the folder's shared lock)."""
    import threading

    from tfvitmae.training.runs import remove_leftovers
    from tfvitmae.utils.files import locked_folder

    killed = tmp_path / ".tmp-save-killed"
    killed.mkdir()
    (killed / STAGING_MARKER).touch()
    done = threading.Event()
    with locked_folder(tmp_path, exclusive=False):  # a load reading the folder
        start_up = threading.Thread(target=lambda: (remove_leftovers(tmp_path), done.set()))
        start_up.start()
        assert not done.wait(0.5) and killed.exists()  # it waits for the load
    start_up.join(30)
    assert done.is_set() and not killed.exists()
