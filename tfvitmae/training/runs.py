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

import json
import os
import re
import shutil
import warnings

import keras

from .callbacks import weights_are_finite
from .files import atomic_write_text, finish_commits, publish_dir, read_json, staging_dir

RUN_FILE = "run.json"
BACKUP_DIR = "backup"
CSV_LOG = "training_log.csv"
STATE_FILE = "state.weights.h5"
RNG_FILE = "random_state.json"
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


class RunConflictError(ValueError):
    """The output directory holds a run (or files) this run must not silently reuse."""


def read_run(output_dir):
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


def _differences(saved, settings):
    keys = sorted(set(saved) | set(settings))
    return [
        f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}"
        for k in keys
        if saved.get(k) != settings.get(k)
    ]


def remove_leftovers(folder):
    """Clear what a killed process left in `folder`: complete its interrupted
    `save_pretrained` commit, and remove unfinished `.tmp-*` staging files."""
    finish_commits(folder, remove_leftovers=True)


def backups(output_dir):
    """The complete backups in `output_dir`, as `[(epoch, state file)]`, newest first."""
    folder = os.path.join(output_dir, BACKUP_DIR)
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        match = _EPOCH_DIR.match(name)
        if match and os.path.isfile(os.path.join(folder, name, STATE_FILE)):
            found.append((int(match.group(1)), os.path.join(folder, name, STATE_FILE)))
    return sorted(found, reverse=True)


def restore_backup(model, output_dir, epoch=None):
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
            model.load_weights(path)
            _restore_random_state(model, os.path.join(os.path.dirname(path), RNG_FILE))
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

    def __init__(self, output_dir):
        super().__init__()
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, BACKUP_DIR)

    def on_train_begin(self, logs=None):
        remove_leftovers(self.folder)

    def on_epoch_end(self, epoch, logs=None):
        if not weights_are_finite(self.model):
            return
        target = os.path.join(self.folder, f"epoch_{epoch + 1}")
        with staging_dir(self.folder) as staged:
            self.model.save_weights(os.path.join(staged, STATE_FILE))
            states = [v.numpy().tolist() for v in _seed_states(self.model)]
            with open(os.path.join(staged, RNG_FILE), "w", encoding="utf-8") as f:
                json.dump({"seed_generator_states": states}, f)
            if os.path.isdir(target):  # this epoch again, after a resume
                shutil.rmtree(target)
            publish_dir(staged, target)
        for older, path in backups(self.output_dir):
            if older != epoch + 1:
                shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def start_run(output_dir, settings, epochs, resume=None, overwrite=False):
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

    Raises:
        RunConflictError: The directory holds a finished or different run,
            or files that no run wrote, and neither `resume` nor `overwrite`
            says what to do.
    """
    os.makedirs(output_dir, exist_ok=True)
    remove_leftovers(output_dir)
    record = read_run(output_dir)
    settings = {**settings, "epochs": epochs}
    new_record = {"settings": settings, "epochs_done": 0, "finished": False}
    if overwrite:
        for name in (BACKUP_DIR,):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
        for name in (RUN_FILE, CSV_LOG):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
        _write_run(output_dir, new_record)
        what = "the previous run's state" if record else "nothing"
        return "fresh", f"starting afresh in {output_dir} (overwrite: cleared {what})"
    if record is None:
        leftovers = sorted(n for n in os.listdir(output_dir) if not n.startswith("."))
        if leftovers:
            raise RunConflictError(
                f"{output_dir} already holds files that no training run recorded "
                f"({', '.join(leftovers[:5])}{', ...' if len(leftovers) > 5 else ''}); "
                "choose another output directory, or pass overwrite (--overwrite) to train there"
            )
        _write_run(output_dir, new_record)
        return "fresh", f"starting a new run in {output_dir}"
    done, finished = record.get("epochs_done", 0), record.get("finished", False)
    differences = _differences(record.get("settings", {}), settings)
    if resume is None and not differences and not finished:
        return "resume", f"resuming the run in {output_dir} after epoch {done}"
    if (resume and done >= epochs) or (finished and not differences):
        raise RunConflictError(
            f"{output_dir} holds a run that has trained {done} epochs, and this one asks for "
            f"{epochs}: ask for more epochs and pass resume (--resume) to continue it, "
            "overwrite (--overwrite) to start afresh, or choose another output directory"
        )
    if resume:
        _write_run(output_dir, {**record, "settings": settings, "finished": False})
        changed = f" with new settings ({'; '.join(differences)})" if differences else ""
        return "resume", f"continuing the run in {output_dir} after epoch {done}{changed}"
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

    def __init__(self, output_dir, epochs):
        super().__init__()
        self.output_dir = output_dir
        self.epochs = epochs

    def _update(self, **changes):
        record = read_run(self.output_dir) or {"settings": {}}
        _write_run(self.output_dir, {**record, **changes})

    def on_epoch_end(self, epoch, logs=None):
        self._update(epochs_done=epoch + 1)

    def on_train_end(self, logs=None):
        record = read_run(self.output_dir) or {}
        if record.get("epochs_done", 0) >= self.epochs:
            self._update(finished=True)
