"""The resume matrix: a run of `pretrain`, the linear probe or fine-tuning
on a `make_dataset` pipeline (augmented, shuffled, MixUp/CutMix on where
they apply, an image count that is no multiple of the batch), stopped and
rerun into the same folder, ends with the uninterrupted run's weights
exactly. An epoch is one pass over the data (`data.steps_per_pass`).

The matrix runs its train steps eagerly (`tf.config.run_functions_eagerly`):
tracing them costs far more than the few steps; one case runs them traced,
and compiled by XLA."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.data import make_dataset
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.training import pretrain, recipes, train_classifier

from ..helpers import tiny_config

IMAGES, BATCH, EPOCHS = 10, 4, 2


class Stop(keras.callbacks.Callback):
    """Raise `KeyboardInterrupt` (a preemption) at the start of epoch 2, as a
    kill right after epoch 1's backup does, or after its first batch."""

    def __init__(self, mid_epoch):
        super().__init__()
        self.mid_epoch, self.epoch = mid_epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if epoch == 1 and not self.mid_epoch:
            raise KeyboardInterrupt("stopped at the epoch boundary")

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and self.mid_epoch:
            raise KeyboardInterrupt("stopped inside epoch 2 (backups are per epoch)")


def run(recipe, folder, *, drop_remainder, repeat, jit_compile=False, accum_steps=1):
    """One process's run of `recipe` into `folder` (a new model and pipeline,
    as a rerun builds them); the model's weights at its end."""
    config = tiny_config(image_size=16, patch_size=4, num_hidden_layers=1)
    raw = np.random.default_rng(3).integers(0, 256, (IMAGES, 20, 20, 3), dtype=np.uint8)
    mixing = recipe == "finetune"
    keras.utils.set_random_seed(0)  # a new process: the same initial weights
    if recipe == "pretrain":
        model = TFViTMAEForPreTraining(config, seed=0)
    else:
        model = TFViTMAEForImageClassification(
            config, num_labels=3, linear_probe=recipe == "probe", seed=0
        )
    data = make_dataset(
        raw, batch_size=BATCH, processor=model.image_processor, seed=1,
        labels=np.arange(IMAGES) % 3, with_labels=recipe != "pretrain", num_classes=3,
        mixup_alpha=0.8 if mixing else 0.0, cutmix_alpha=1.0 if mixing else 0.0,
        drop_remainder=drop_remainder, repeat=repeat,
    )  # fmt: skip
    # One pass's batches, counted here: with repeat tf.data cannot tell.
    steps = IMAGES // BATCH if drop_remainder else -(-IMAGES // BATCH)
    steps = math.lcm(steps, accum_steps)  # whole passes, whole updates
    options = dict(
        epochs=EPOCHS, batch_size=BATCH, steps_per_epoch=steps, output_dir=str(folder),
        base_lr=1e-2, warmup_epochs=1, jit_compile=jit_compile, verbose=0,
        accum_steps=accum_steps,
    )  # fmt: skip
    if recipe == "pretrain":
        pretrain(model, data, **options)
    else:
        train_classifier(model, data, one_hot_labels=mixing, **options)
    return [w.numpy() for w in model.weights]


@pytest.mark.parametrize(
    "recipe, drop_remainder, repeat, mid_epoch",
    [
        ("pretrain", True, True, False),  # the CLI's pipeline
        ("pretrain", False, False, True),
        ("probe", False, True, True),
        ("finetune", False, True, False),  # the CLI's, MixUp and CutMix on
        ("finetune", True, False, True),
    ],
)
def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights(
    recipe, drop_remainder, repeat, mid_epoch, tmp_path, monkeypatch
):
    tf.config.run_functions_eagerly(True)
    try:
        check_resume(recipe, drop_remainder, repeat, mid_epoch, tmp_path, monkeypatch)
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True], ids=["traced", "xla"])
def test_a_resumed_traced_run_ends_with_the_uninterrupted_runs_weights(
    jit_compile, tmp_path, monkeypatch
):
    """Traced, and compiled by XLA (`--jit-compile`): exactly the same too, as
    XLA on a CPU runs the same program the same way."""
    check_resume("finetune", False, True, True, tmp_path, monkeypatch, jit_compile=jit_compile)


@pytest.mark.parametrize("recipe, repeat", [("pretrain", True), ("finetune", False)])
def test_a_run_killed_inside_an_accumulation_resumes_to_the_uninterrupted_runs_weights(
    recipe, repeat, tmp_path, monkeypatch
):
    """With `accum_steps=2` (fine-tuning: MixUp, CutMix and layer decay on)
    the kill comes after epoch 2's first batch, half-way through an update:
    the rerun restores epoch 1's backup, which ends on an update, and ends
    with the uninterrupted run's weights exactly."""
    tf.config.run_functions_eagerly(True)
    try:
        check_resume(recipe, True, repeat, True, tmp_path, monkeypatch, accum_steps=2)
    finally:
        tf.config.run_functions_eagerly(False)


def check_resume(recipe, drop_remainder, repeat, mid_epoch, tmp_path, monkeypatch, **compile):
    """Run `recipe` straight, then stopped (at epoch 2's start or after its
    first batch) and rerun: the weights at the ends are the same."""
    options = dict(drop_remainder=drop_remainder, repeat=repeat, **compile)
    straight = run(recipe, tmp_path / "straight", **options)

    def stopping_callbacks(*args, **kwargs):
        callbacks, initial_epoch = run_callbacks(*args, **kwargs)
        return [*callbacks, Stop(mid_epoch)], initial_epoch

    run_callbacks = recipes.run_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(recipes, "run_callbacks", stopping_callbacks)
        with pytest.raises(KeyboardInterrupt):
            run(recipe, tmp_path / "run", **options)
    resumed = run(recipe, tmp_path / "run", **options)  # resumes from epoch 1's backup
    assert len(resumed) == len(straight)
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a, b)


def test_an_epoch_is_whole_passes_of_a_make_dataset_pipeline(tmp_path):
    """`steps_per_epoch` defaults to one pass (repeated data included) and
    must be a whole number of passes: an epoch that ends inside a pass would
    resume on other data."""
    config = tiny_config(image_size=16, patch_size=4, num_hidden_layers=1)
    model = TFViTMAEForPreTraining(config, seed=0)
    raw = np.zeros((IMAGES, 16, 16, 3), np.uint8)
    data = make_dataset(raw, batch_size=BATCH, processor=model.image_processor, repeat=True)
    options = dict(epochs=1, batch_size=BATCH, output_dir=str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match=r"whole number of passes .*3 batches.*received 4"):
        pretrain(model, data, steps_per_epoch=4, **options)
    history = pretrain(model, data, jit_compile=False, **options)  # 3 steps: 4 + 4 + 2 images
    assert int(model.optimizer.iterations) == 3 and len(history.history["loss"]) == 1
