"""Training runs in an output directory: what a rerun into it does.

A run records its settings and progress in `output_dir/run.json`, and
`RunBackup` keeps the weights and optimizer state in `output_dir/backup/`,
written atomically (`restore_backup` reads them back). Before training,
`start_run` decides:

- an empty or new directory: a fresh run;
- the same settings, not finished: resume where it stopped;
- different settings, a finished run, or files of something else: refuse,
  saying what differs, unless `resume=True` (continue the saved run with the
  new settings: more epochs, say) or `overwrite=True` (start afresh).
"""

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import time
import warnings
from typing import TYPE_CHECKING

import keras

from ..checkpoints.formats import keras_weights_size, save_keras_weights, write_failure
from ..checkpoints.hub import finish_interrupted_save
from ..utils.backend import in_multi_worker_strategy
from ..utils.files import (
    atomic_write_text,
    locked_folder,
    publish_dir,
    read_json,
    remove_staging_leftovers,
    staging_dir,
)
from ..utils.types import PathLike
from . import mesh
from .callbacks import LogLearningRate, weights_are_finite

if TYPE_CHECKING:
    from ..models.vit_mae import TFViTMAEPreTrainedModel

__all__ = [
    "CSV_LOG",
    "LOCK_FILE",
    "RunBackup",
    "RunConflictError",
    "RunProgress",
    "check_backup",
    "check_tensorboard",
    "lock_run_dir",
    "read_run",
    "restore_backup",
    "run_callbacks",
    "run_settings",
    "start_run",
    "unlock_run_dir",
]

RUN_FILE = "run.json"
BACKUP_DIR = "backup"
CSV_LOG = "training_log.csv"
STATE_FILE = "state.weights.h5"
RNG_FILE = "random_state.json"
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


class RunConflictError(ValueError):
    """The output directory holds a run (or files) this run must not silently reuse."""


def read_run(output_dir: PathLike) -> dict | None:
    """The `run.json` record of `output_dir`, or `None`."""
    path = os.path.join(output_dir, RUN_FILE)
    if not os.path.isfile(path):
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise RunConflictError(
            f"{path} is unreadable ({e}); pass overwrite (--overwrite) to start afresh"
        ) from None


def _write_run(output_dir, record):
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write_text(os.path.join(output_dir, RUN_FILE), text)


def _recorded_settings(record: dict, settings: dict) -> dict:
    """A run record's settings, to compare with a rerun's `settings`. A recipe
    recorded before gradient accumulation (no `accum_steps`) trained one
    batch per update: it reads as such."""
    saved = dict(record.get("settings", {}))
    if "accum_steps" in settings and "accum_steps" not in saved and "batch_size" in saved:
        saved.update(accum_steps=1, effective_batch_size=saved["batch_size"])
    return saved


def _differences(saved, settings):
    keys = sorted(set(saved) | set(settings))
    return [
        f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}"
        for k in keys
        if saved.get(k) != settings.get(k)
    ]


def remove_leftovers(folder: PathLike) -> None:
    """Clear what a killed process of ours left in `folder`: complete its
    interrupted `save_pretrained` (only a plan a save of ours wrote), and
    remove the unfinished staging folders that `staging_dir` marked. Other
    `.tmp-*` files and folders (the user's) are left alone."""
    finish_interrupted_save(folder)
    with locked_folder(folder, exclusive=True):  # as a save into the folder holds it
        remove_staging_leftovers(folder)


def backups(output_dir: PathLike) -> list[tuple[int, str]]:
    """The complete backups in `output_dir`, as `[(epoch, state file)]`, newest first."""
    folder = os.path.join(output_dir, BACKUP_DIR)
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        match = _EPOCH_DIR.match(name)
        if match and os.path.isfile(os.path.join(folder, name, STATE_FILE)):
            found.append((int(match.group(1)), os.path.join(folder, name, STATE_FILE)))
    return sorted(found, reverse=True)


def restore_backup(
    model: keras.Model, output_dir: PathLike, epoch: int | None = None
) -> tuple[int, str | None]:
    """Load the newest readable backup (weights and optimizer state) into the
    compiled `model`, or exactly the backup of `epoch`.

    Returns:
        `(epoch, path)` of the backup restored, or `(0, None)` if there is none.

    Raises:
        RunConflictError: Backups exist, but none can be read (or the one of
            `epoch` is missing or unreadable).
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)

    def load(path):
        model.load_weights(path)
        _restore_random_state(model, os.path.join(os.path.dirname(path), RNG_FILE))

    return _first_usable_backup(output_dir, epoch, load)


def check_backup(output_dir: PathLike, epoch: int | None = None) -> tuple[int, str | None]:
    """The backup `restore_backup` would load, `(epoch, path)`, found by
    reading its files whole without loading them into a model: where loading
    is collective (JAX across processes), every process checks before any
    loads. Raises as `restore_backup` does."""

    def read(path):
        import h5py

        with h5py.File(path, "r") as f:  # every array, as a load reads them
            f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
        rng = os.path.join(os.path.dirname(path), RNG_FILE)
        if os.path.isfile(rng) and "seed_generator_states" not in read_json(rng):
            raise ValueError(f"{rng} holds no seed_generator_states")

    return _first_usable_backup(output_dir, epoch, read)


def _first_usable_backup(output_dir, epoch, use) -> tuple[int, str | None]:
    """`use(path)` on the newest backup (or that of `epoch`) until one works."""
    found = backups(output_dir)
    if epoch is not None:
        found = [(e, path) for e, path in found if e == epoch]
        if not found:
            raise RunConflictError(
                f"There is no backup of epoch {epoch} in {os.path.join(output_dir, BACKUP_DIR)}"
            )
    unreadable = []
    for backed_up, path in found:
        try:
            use(path)
            return backed_up, path
        except (OSError, ValueError) as e:
            unreadable.append(f"{path} ({e})")
            warnings.warn(f"Backup {path} is unreadable ({e}); trying an older one")
    legacy = os.path.join(output_dir, BACKUP_DIR, "latest.weights.h5")
    if os.path.exists(legacy):
        unreadable.append(f"{legacy} (written by an earlier version)")
    if unreadable:
        raise RunConflictError(
            f"No backup in {os.path.join(output_dir, BACKUP_DIR)} can be resumed from: "
            f"{'; '.join(unreadable)}. Pass overwrite (--overwrite) to start afresh"
        )
    return 0, None


def _seed_states(model):
    # Keras keeps the random generators' states (masking, dropout) out of
    # `save_weights`; without them a resumed run would draw other masks.
    return [v for v in model.variables if "seed_generator_state" in v.path]


def _restore_random_state(model, path):
    if os.path.isfile(path):
        states = read_json(path)["seed_generator_states"]
        variables = _seed_states(model)
        if len(states) != len(variables):
            raise ValueError(
                f"{path} holds {len(states)} random generator states, the model has "
                f"{len(variables)}"
            )
        for variable, state in zip(variables, states):
            variable.assign(state)


class RunBackup(keras.callbacks.Callback):
    """After every epoch, back up the weights and optimizer state to resume from.

    Each backup (the weights and optimizer state in `state.weights.h5`, the
    random generators' states in `random_state.json`) is written into a
    temporary folder and renamed to `output_dir/backup/epoch_N/` once
    complete; only then is the previous one removed. A kill at any instant
    leaves at least one complete backup, and non-finite weights are never
    backed up.
    """

    def __init__(self, output_dir: PathLike):
        super().__init__()
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, BACKUP_DIR)

    def on_train_begin(self, logs: dict | None = None) -> None:
        remove_leftovers(self.folder)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not weights_are_finite(self.model):
            return
        target = os.path.join(self.folder, f"epoch_{epoch + 1}")
        with staging_dir(self.folder) as staged:
            try:
                save_keras_weights(self.model, os.path.join(staged, STATE_FILE))
            except OSError as e:
                needed = keras_weights_size(self.model)
                raise OSError(
                    f"Could not back up epoch {epoch + 1} to {self.folder}: "
                    f"{write_failure(e, self.folder, STATE_FILE, needed)} The last complete "
                    "backup is kept"
                ) from e
            states = [v.numpy().tolist() for v in _seed_states(self.model)]
            with open(os.path.join(staged, RNG_FILE), "w", encoding="utf-8") as f:
                json.dump({"seed_generator_states": states}, f)
            if os.path.isdir(target):  # this epoch again, after a resume
                shutil.rmtree(target)
            publish_dir(staged, target)
        for older, path in backups(self.output_dir):
            if older != epoch + 1:
                shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def start_run(
    output_dir: PathLike,
    settings: dict,
    epochs: int,
    resume: bool | None = None,
    overwrite: bool = False,
) -> tuple[str, str]:
    """Decide how a run with `settings` (a JSON-able dict) of `epochs` epochs
    uses `output_dir`, and record it there.

    Args:
        resume: `None` resumes a stopped run with the same settings; `True`
            also continues a finished or different one; `False` never resumes.
        overwrite: Start afresh whatever the directory holds (its run state,
            backup and log are removed; saved models are replaced as training saves).

    Returns:
        `(mode, message)`: mode `"fresh"` or `"resume"`, and a sentence to
        show the user.

    The process holds `output_dir`'s run lock (`lock_run_dir`) from here to
    the end of training: a second run, or an `overwrite`, in the same
    directory is refused while this one lives. A refused run leaves the
    directory as it was; an accepted one first clears what a killed run of
    ours left (`remove_leftovers`).

    Raises:
        RunConflictError: Another process trains in `output_dir`; or it
            holds a finished or different run, or files that no run wrote,
            and neither `resume` nor `overwrite` says what to do.
        CheckpointError: A staging folder holds a save plan that is not ours
            (nothing is changed).
    """
    os.makedirs(output_dir, exist_ok=True)
    lock_run_dir(output_dir)  # before anything is read or cleared
    try:
        mode, message, record, clear = _decide_run(
            output_dir, settings, epochs, resume=resume, overwrite=overwrite
        )
        # Accepted: only now is anything in the folder changed.
        remove_leftovers(output_dir)
        if clear:
            shutil.rmtree(os.path.join(output_dir, BACKUP_DIR), ignore_errors=True)
            for name in (RUN_FILE, CSV_LOG):
                if os.path.exists(os.path.join(output_dir, name)):
                    os.remove(os.path.join(output_dir, name))
        if record is not None:
            _write_run(output_dir, record)
        return mode, message
    except BaseException:
        _unlock(output_dir, remove_created=True)  # refused: no run holds the directory
        raise


def _decide_run(
    output_dir: PathLike,
    settings: dict,
    epochs: int,
    resume: bool | None = None,
    overwrite: bool = False,
) -> tuple[str, str, dict | None, bool]:
    """`start_run`'s decision, with the lock held; it changes nothing.

    Returns:
        `(mode, message, record, clear)`: the run record to write (or `None`),
        and whether the previous run's state is to be removed first.
    """
    settings = {**settings, "epochs": epochs}
    new_record = {"settings": settings, "epochs_done": 0, "finished": False}
    if overwrite:  # whatever the record holds, even one that cannot be read
        had_run = os.path.exists(os.path.join(output_dir, RUN_FILE))
        what = "the previous run's state" if had_run else "nothing"
        message = f"starting afresh in {output_dir} (overwrite: cleared {what})"
        return "fresh", message, new_record, True
    record = read_run(output_dir)
    if record is None:
        leftovers = sorted(n for n in os.listdir(output_dir) if not n.startswith("."))
        if leftovers:
            raise RunConflictError(
                f"{output_dir} already holds files that no training run recorded "
                f"({', '.join(leftovers[:5])}{', ...' if len(leftovers) > 5 else ''}); "
                "choose another output directory, or pass overwrite (--overwrite) to train there"
            )
        return "fresh", f"starting a new run in {output_dir}", new_record, False
    done, finished = record.get("epochs_done", 0), record.get("finished", False)
    saved = _recorded_settings(record, settings)
    differences = _differences(saved, settings)
    if resume is None and not differences and not finished:
        return "resume", f"resuming the run in {output_dir} after epoch {done}", None, False
    if (resume and done >= epochs) or (finished and not differences):
        raise RunConflictError(
            f"{output_dir} holds a run that has trained {done} epochs, and this one asks for "
            f"{epochs}: ask for more epochs and pass resume (--resume) to continue it, "
            "overwrite (--overwrite) to start afresh, or choose another output directory"
        )
    if resume and saved.get("accum_steps") != settings.get("accum_steps") and backups(output_dir):
        raise RunConflictError(
            f"{output_dir} holds a run with accum_steps={saved.get('accum_steps')}, and this one "
            f"asks for accum_steps={settings.get('accum_steps')}: a continued run keeps it (its "
            "backup's optimizer state counts batches, not updates, and holds the gradient "
            "accumulators only with accumulation). Pass overwrite (--overwrite) to start afresh, "
            "or train from the saved model in another output directory"
        )
    if resume:
        changed = f" with new settings ({'; '.join(differences)})" if differences else ""
        message = f"continuing the run in {output_dir} after epoch {done}{changed}"
        return "resume", message, {**record, "settings": settings, "finished": False}, False
    state = f"a finished run ({done} epochs)" if finished else f"a run stopped after epoch {done}"
    detail = f" with other settings ({'; '.join(differences)})" if differences else ""
    if resume is False and not differences:
        detail = " (resuming is turned off)"
    raise RunConflictError(
        f"{output_dir} holds {state}{detail}. Pass resume (--resume) to continue it with these "
        "settings, overwrite (--overwrite) to start afresh, or choose another output directory"
    )


class RunProgress(keras.callbacks.Callback):
    """Record finished epochs (and the end of training) in `run.json`."""

    def __init__(self, output_dir: PathLike, epochs: int):
        super().__init__()
        self.output_dir = output_dir
        self.epochs = epochs

    def _update(self, **changes):
        record = read_run(self.output_dir) or {"settings": {}}
        _write_run(self.output_dir, {**record, **changes})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._update(epochs_done=epoch + 1)

    def on_train_end(self, logs: dict | None = None) -> None:
        record = read_run(self.output_dir) or {}
        if record.get("epochs_done", 0) >= self.epochs:
            self._update(finished=True)
        unlock_run_dir(self.output_dir)


# ------------------------------------------------------------ one writer
LOCK_FILE = ".tfvitmae-run.lock"
_HELD: dict[str, tuple[int, bool]] = {}  # real output_dir -> (locked descriptor, created it)


def lock_run_dir(output_dir: PathLike) -> None:
    """Make this process the one training run writing in `output_dir`.

    An exclusive `flock` on `output_dir/.tfvitmae-run.lock`, held until
    `unlock_run_dir` or the process ends: the kernel drops it when a process
    dies, so a killed run leaves no stale lock. Taking it again in the same
    process is a no-op (a notebook may rerun a cell).

    Raises:
        RunConflictError: Another process holds it (the error names that
            process), or the lock file is a link.
    """
    import fcntl

    real = os.path.realpath(output_dir)
    if real in _HELD:
        return
    path = os.path.join(real, LOCK_FILE)
    while True:
        created = True
        try:  # never through a link: the holder's line is written into the file
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            created = False
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:  # removed meanwhile (a refused run's): create it
                continue
            except OSError:
                raise RunConflictError(
                    f"{path} is not a lock file of ours (a link or unwritable); remove it, "
                    "or choose another output directory"
                ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1024).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunConflictError(
                f"{output_dir} is in use by another training run ({holder}); wait for it to "
                "end, or choose another output directory"
            ) from None
        # A refused run removes the lock file it created: lock the file that is there now.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.ctime()}".encode())
    _HELD[real] = (fd, created)


def unlock_run_dir(output_dir: PathLike) -> None:
    """Release `lock_run_dir`'s lock on `output_dir`, if this process holds it."""
    _unlock(output_dir, remove_created=False)


def _unlock(output_dir: PathLike, remove_created: bool) -> None:
    """Release the run lock; with `remove_created` also remove its file if
    `lock_run_dir` created it (a refused run leaves the folder as it was)."""
    real = os.path.realpath(output_dir)
    fd, created = _HELD.pop(real, (None, False))
    if fd is None:
        return
    if created and remove_created:  # removed while still locked, so no one locks the old file
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(real, LOCK_FILE))
    os.close(fd)  # closing the descriptor releases the flock


def run_settings(model: "TFViTMAEPreTrainedModel", recipe: dict, extra: dict | None = None) -> dict:
    """The settings that make a rerun in the same `output_dir` the same run:
    the model (its config, its preprocessing and, for a classifier, its
    head), every argument of the recipe, and `extra` (the data, the seed, ...).
    `pretrain` and `train_classifier` both record theirs through here."""
    settings = dict(
        model_config=model.config.to_dict(), image_processor=model.image_processor.to_dict()
    )
    for name in ("num_labels", "pooling", "linear_probe"):  # a classifier's head
        if hasattr(model, name):
            settings[name] = getattr(model, name)
    return {**settings, **recipe, **(extra or {})}


def run_callbacks(
    model: keras.Model,
    output_dir: PathLike,
    *,
    epochs: int,
    settings: dict,
    resume: bool | None = None,
    overwrite: bool = False,
    log_dir: PathLike | None = None,
    verbose: int | str = 1,
) -> tuple[list[keras.callbacks.Callback], int]:
    """Start (or resume) the run in `output_dir`.

    Under `MultiWorkerMirroredStrategy`, or in several JAX processes, only
    the chief reads and writes the run's state, and the other workers restore
    the backup it chose, from the same `output_dir` (which every worker must
    see: a shared file system).

    Returns:
        `(callbacks, initial_epoch)`: the run's bookkeeping callbacks (the
        learning rate in the logs, an atomic backup to resume from, `run.json`
        progress, the CSV log and, with `log_dir`, TensorBoard), and the epoch
        the restored backup ends (0 for a fresh run).
    """

    def start(collective=False):
        mode, message = start_run(output_dir, settings, epochs, resume=resume, overwrite=overwrite)
        initial_epoch = 0
        if mode == "resume":
            initial_epoch, path = (
                check_backup(output_dir) if collective else restore_backup(model, output_dir)
            )
            restored = f"weights and optimizer restored from {path}" if path else "no backup yet"
            message += f" ({restored})"
        return message, initial_epoch

    def restore(epoch, collective=False):
        try:
            if collective:
                check_backup(output_dir, epoch)
            else:
                restore_backup(model, output_dir, epoch)
        except RunConflictError as e:
            raise RunConflictError(
                f"{e}. The chief worker resumes from it: every worker must see "
                f"{output_dir} (put it on a file system they share)"
            ) from None

    if in_multi_worker_strategy():
        from .distributed import start_on_chief  # TensorFlow's

        message, initial_epoch = start_on_chief(model, start, restore)
    elif mesh.process_count() > 1:  # JAX's: all check the backup, then all load it together
        message, initial_epoch = mesh.start_on_chief(
            model,
            functools.partial(start, collective=True),
            functools.partial(restore, collective=True),
            chief=mesh.is_chief(),
            total=mesh.total_over_processes,
            load=lambda epoch: restore_backup(model, output_dir, epoch),
            name="process",
        )
    else:
        message, initial_epoch = start()
    if verbose and message:
        print(message)
    callbacks = [
        LogLearningRate(),
        RunBackup(output_dir),
        RunProgress(output_dir, epochs),
        # A fresh run has no log yet (start_run refuses or clears one), a resumed one adds to it.
        keras.callbacks.CSVLogger(os.path.join(output_dir, CSV_LOG), append=True),
    ]
    if log_dir:
        check_tensorboard()
        callbacks.append(keras.callbacks.TensorBoard(log_dir))
    return callbacks, initial_epoch


def check_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError(
            "TensorBoard logging needs the tensorboard package: pip install tensorboard "
            "(or tfvitmae[tensorboard])"
        ) from None
