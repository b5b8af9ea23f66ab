"""Keras callbacks of the training recipe: stop on a non-finite loss, save a
`from_pretrained` checkpoint every epoch, draw reconstructions, log the
learning rate, keep a `make_dataset` pipeline on `fit`'s epoch, and stop on
Ctrl-C between steps."""

import math
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

from ..utils.types import PathLike, TensorLike

if TYPE_CHECKING:
    import tensorflow as tf

    from ..data.image_processor import ViTMAEImageProcessor

__all__ = [
    "DataEpoch",
    "EmptyEpochError",
    "InterruptBetweenSteps",
    "LogLearningRate",
    "NonFiniteLossError",
    "ReconstructionCallback",
    "SavePretrained",
    "StopOnNonFiniteLoss",
    "weights_are_finite",
]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss, or non-finite weights."""


class EmptyEpochError(ValueError):
    """An epoch ended without a single training batch."""


def weights_are_finite(model: keras.Model) -> bool:
    """Whether every floating-point weight of `model` is finite."""
    return all(
        bool(ops.all(ops.isfinite(w)))
        for w in model.weights
        if keras.backend.is_float_dtype(w.dtype)
    )


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training when it diverges, before anything non-finite is saved.

    Checks the loss after every batch and, at every epoch end, that the epoch
    ran at least one batch and that the weights are finite (the epoch's last
    update can break them after its loss was measured). It raises
    `NonFiniteLossError` (or `EmptyEpochError`): an exception, unlike
    `stop_training`, skips the epoch-end callbacks after this one, so put it
    first in `callbacks` and a `ModelCheckpoint`, `SavePretrained` or backup
    keeps the last good state. Works with any `fit`.

    Args:
        checkpoint_hint: The folder where training saves (named in the error).
    """

    on_every_worker = True  # train_loop: all workers stop together

    def __init__(self, checkpoint_hint: PathLike | None = None):
        super().__init__()
        self.checkpoint_hint = checkpoint_hint
        self.epoch = 0
        self.batches = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.batches = 0

    def _hint(self):
        folder = self.checkpoint_hint
        if not folder:
            return ""
        if os.path.isfile(os.path.join(folder, "config.json")):
            return f" The last good checkpoint is in {folder}."
        return f" No checkpoint was saved in {folder}."

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.batches += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"The loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}; "
                f"training stopped. Lower the learning rate or check the inputs.{self._hint()}"
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.batches == 0:
            raise EmptyEpochError(
                f"Epoch {epoch + 1} ran no training batch: the dataset yielded nothing (for a "
                "folder, no image in it could be decoded). Nothing was saved for this epoch."
            )
        if not weights_are_finite(self.model):
            raise NonFiniteLossError(
                f"The weights became NaN or infinite during epoch {epoch + 1} (its last update "
                "diverged); training stopped before saving them. Lower the learning rate or "
                f"check the inputs.{self._hint()}"
            )


class ReconstructionCallback(keras.callbacks.Callback):
    """Write a PNG grid of MAE reconstructions every `every_n_epochs` epochs.

    Columns: original, masked input, reconstruction, and the reconstruction
    with the visible patches pasted back. The same images and noise are used
    each time, so the grids are comparable across epochs.

    Args:
        pixel_values: A small batch of normalised images in the model's layout.
        output_dir: Where `reconstruction_epoch_{N}.png` files go.
        every_n_epochs: How often to write one.
        processor: The `ViTMAEImageProcessor` whose normalisation is undone
            for display (default: the model's).
        seed: Seed of the fixed masking noise.
        log_dir: Also write each grid to TensorBoard there (`reconstructions/`).
    """

    def __init__(
        self,
        pixel_values: TensorLike,
        output_dir: PathLike,
        every_n_epochs: int = 1,
        processor: "ViTMAEImageProcessor | None" = None,
        seed: int = 0,
        log_dir: PathLike | None = None,
    ):
        super().__init__()
        self.pixel_values = np.asarray(pixel_values, "float32")
        self.output_dir = output_dir
        self.every_n_epochs = every_n_epochs
        self.processor = processor
        self.seed = seed
        self.log_dir = log_dir
        self._writer: tf.summary.SummaryWriter | None = None
        self.paths: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        from .visualization import reconstruction_grid, write_image  # TensorFlow's

        path = os.path.join(self.output_dir, f"reconstruction_epoch_{epoch + 1}.png")
        grid = reconstruction_grid(
            self.model, self.pixel_values, processor=self.processor, seed=self.seed
        )
        self.paths.append(write_image(path, grid))
        if self.log_dir:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(
                    os.path.join(self.log_dir, "reconstructions")
                )
            with self._writer.as_default():
                tf.summary.image("reconstruction", grid[None], step=epoch + 1)
            self._writer.flush()


class LogLearningRate(keras.callbacks.Callback):
    """Put the optimizer's current learning rate in the epoch logs (as
    `learning_rate`), so the CSV log and History record it."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and getattr(self.model, "optimizer", None) is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class SavePretrained(keras.callbacks.Callback):
    """Save the model with `save_pretrained(directory)` at every epoch end, so the
    latest good weights load with `from_pretrained(directory)`; epochs with a
    non-finite loss or weights are not saved."""

    def __init__(self, directory: PathLike):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return  # keep the last good checkpoint
        if not weights_are_finite(self.model):
            return
        self.model.save_pretrained(self.directory)


def steps_per_pass(dataset: object) -> int | None:
    """The batches in one pass over a `make_dataset` pipeline
    (`data.steps_per_pass`); `None` for other data, or where it is unknown."""
    pipeline = sys.modules.get("tfvitmae.data.pipeline")  # else no make_dataset pipeline exists
    return None if pipeline is None else pipeline.steps_per_pass(dataset)


class DataEpoch(keras.callbacks.Callback):
    """Keep a `make_dataset` pipeline in step with `fit`'s epochs: epoch `e`
    reads passes `e * passes_per_epoch` on (`set_epoch` at every epoch
    start), so a run resumed at epoch N sees the data an uninterrupted run saw
    in epoch N. That holds when every epoch reads exactly `passes_per_epoch`
    whole passes (`steps_per_epoch` a multiple of `data.steps_per_pass`), as
    `pretrain` and `train_classifier`, which add this callback, make sure."""

    on_every_worker = True  # train_loop: every worker reads its own pipeline

    def __init__(self, dataset: "tf.data.Dataset", passes_per_epoch: int = 1):
        super().__init__()
        self.dataset = dataset
        self.passes_per_epoch = passes_per_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pipeline = sys.modules.get("tfvitmae.data.pipeline")
        if pipeline is not None:  # else no make_dataset pipeline exists
            pipeline.set_epoch(self.dataset, epoch * self.passes_per_epoch)


class InterruptBetweenSteps(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) stops `fit` at the end of the current step, never
    inside a backup, a save or a finaliser, where a `KeyboardInterrupt` could
    leave a lock held or be swallowed; a second Ctrl-C stops at once.

    Use it as a context manager around `fit` as well as a callback: the handler
    is installed on entry (only in the main thread, and only over Python's
    default handler) and the previous one restored on exit, however `fit` ends.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def __enter__(self) -> "InterruptBetweenSteps":
        self.requested = False
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.requested:  # pressed again: now
            self._restore()
            raise KeyboardInterrupt
        self.requested = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.requested:
            self._restore()
            raise KeyboardInterrupt
