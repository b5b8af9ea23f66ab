"""Keras callbacks of the training recipe: stop on a non-finite loss, save a
`from_pretrained` checkpoint every epoch, draw reconstructions."""

import math
import os

import keras
import numpy as np

from .data import IMAGENET_MEAN, IMAGENET_STD
from .visualization import write_reconstruction_grid


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
        mean, std: The normalisation to undo for display.
        seed: Seed of the fixed masking noise.
    """

    def __init__(self, pixel_values, output_dir, every_n_epochs=1, mean=None, std=None, seed=0):
        super().__init__()
        self.pixel_values = np.asarray(pixel_values, "float32")
        self.output_dir = output_dir
        self.every_n_epochs = every_n_epochs
        self.mean = IMAGENET_MEAN if mean is None else mean
        self.std = IMAGENET_STD if std is None else std
        self.seed = seed
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        path = os.path.join(self.output_dir, f"reconstruction_epoch_{epoch + 1}.png")
        write_reconstruction_grid(
            self.model, self.pixel_values, path, self.mean, self.std, self.seed
        )
        self.paths.append(path)


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
