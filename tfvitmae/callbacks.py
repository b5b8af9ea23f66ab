"""Keras callbacks of the training recipe: stop on a non-finite loss, save a
`from_pretrained` checkpoint every epoch, draw reconstructions."""

import math
import os

import keras
import numpy as np

from .visualization import reconstruction_grid, write_png


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first NaN/inf batch loss with a clear error.

    Raising (rather than `stop_training`) skips the epoch-end callbacks, so a
    `ModelCheckpoint` keeps the last good checkpoint instead of saving NaN weights.
    """

    def __init__(self, checkpoint_hint=None):
        super().__init__()
        self.checkpoint_hint = checkpoint_hint
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            hint = (
                f" The last good checkpoint is in {self.checkpoint_hint}."
                if self.checkpoint_hint
                else ""
            )
            raise NonFiniteLossError(
                f"The loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}; "
                "training stopped. "
                f"Lower the learning rate or check the inputs.{hint}"
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
        self, pixel_values, output_dir, every_n_epochs=1, processor=None, seed=0, log_dir=None
    ):
        super().__init__()
        self.pixel_values = np.asarray(pixel_values, "float32")
        self.output_dir = output_dir
        self.every_n_epochs = every_n_epochs
        self.processor = processor
        self.seed = seed
        self.log_dir = log_dir
        self._writer = None
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        path = os.path.join(self.output_dir, f"reconstruction_epoch_{epoch + 1}.png")
        grid = reconstruction_grid(self.model, self.pixel_values, self.processor, self.seed)
        self.paths.append(write_png(path, grid))
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

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and getattr(self.model, "optimizer", None) is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class SavePretrained(keras.callbacks.Callback):
    """Save the model with `save_pretrained(directory)` at every epoch end, so the
    latest good weights load with `from_pretrained(directory)`."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return  # keep the last good checkpoint
        self.model.save_pretrained(self.directory)
