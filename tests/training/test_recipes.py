"""The MAE recipes: `pretrain` (checkpoints, reconstructions, resume, NaN stop,
several devices) and `train_classifier` (linear probe, fine-tuning)."""

import json
import os
import shutil
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.training import pretrain, train_classifier
from tfvitmae.training.callbacks import EmptyEpochError, NonFiniteLossError
from tfvitmae.training.optimizers import LayerDecayAdamW

from ..helpers import (
    assert_same_training,
    distributed_run_results,
    finish_distributed_run,
    labelled,
    noise_for,
    pixels,
    smooth_images,
    start_distributed_run,
    tiny_config,
)


# ------------------------------------------------------------------ pretrain
@pytest.mark.slow
def test_pretrain_fit_loss_falls_and_writes_checkpoint_and_grid(tmp_path):
    keras.utils.set_random_seed(0)
    config = tiny_config(norm_pix_loss=True)
    model = TFViTMAEForPreTraining(config, seed=0)
    images = smooth_images(config, n=64)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(8)
    history = pretrain(
        model,
        dataset,
        epochs=6,
        batch_size=8,
        output_dir=str(tmp_path),
        base_lr=0.1,
        warmup_epochs=1,
        reconstruction_images=images[:3],
        reconstruction_every=3,
        verbose=0,
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.92 * losses[0], losses
    assert sorted(os.listdir(tmp_path)) == [  # backup/ stays: the run can be continued
        ".tfvitmae-run.lock",  # held while the run lives (training.runs.lock_run_dir)
        "backup",
        "config.json",
        "model.weights.h5",
        "preprocessor_config.json",
        "reconstruction_epoch_3.png",
        "reconstruction_epoch_6.png",
        "run.json",
        "training_log.csv",
    ]
    log = [line.split(",") for line in (tmp_path / "training_log.csv").read_text().splitlines()]
    assert log[0][:3] == ["epoch", "learning_rate", "loss"] and len(log) == 7
    assert float(log[-1][1]) == pytest.approx(float(model.optimizer.learning_rate))
    assert [float(row[2]) for row in log[1:]] == pytest.approx(losses, rel=1e-5)
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "reconstruction_epoch_6.png")))
    assert grid.shape[-1] == 3 and grid.shape[1] > 4 * 32  # four columns
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.seen = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            raise KeyboardInterrupt("simulated preemption")


@pytest.mark.slow
def test_resume_continues_at_the_same_step_and_schedule(tmp_path):
    config = tiny_config()
    images = pixels(config, batch=16)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)  # 4 steps per epoch

    def run(callbacks, output):
        model = TFViTMAEForPreTraining(config, seed=0)
        pretrain(
            model,
            dataset,
            epochs=3,
            batch_size=4,
            output_dir=str(output),
            warmup_epochs=1,
            jit_compile=False,  # the schedule is the point here, not XLA (compiling takes long)
            callbacks=callbacks,
            verbose=0,
        )
        return model

    with pytest.raises(KeyboardInterrupt):
        # dies in epoch 3, after 2 epochs were backed up
        run([Interrupt(at_step=10)], tmp_path / "run")
    assert (tmp_path / "run" / "backup").exists()
    counter = Interrupt(at_step=0)  # counts the steps the resumed run takes
    resumed = run([counter], tmp_path / "run")
    assert counter.seen == 4  # only epoch 3 was run again
    straight = run([], tmp_path / "straight")
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 12
    lr = lambda m: float(m.optimizer.learning_rate)  # noqa: E731
    assert lr(resumed) == pytest.approx(lr(straight))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["epochs_done"] == 3 and record["finished"]


@pytest.mark.slow
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    images = pixels(config, batch=8)
    good = tf.data.Dataset.from_tensor_slices(images).batch(4)
    options = dict(batch_size=4, output_dir=str(tmp_path), jit_compile=False, verbose=0)
    pretrain(model, good, epochs=1, **options)
    saved = (tmp_path / "model.weights.h5").read_bytes()
    bad_images = images.copy()
    bad_images[5] = np.nan
    bad = tf.data.Dataset.from_tensor_slices(bad_images).batch(4)
    with pytest.raises(
        NonFiniteLossError, match=r"loss became nan at epoch 1, batch 2.*last good checkpoint"
    ):
        pretrain(model, bad, epochs=2, overwrite=True, **options)
    assert (tmp_path / "model.weights.h5").read_bytes() == saved


def all_finite_h5(path):
    import h5py

    arrays = []

    def collect(name, item):
        if isinstance(item, h5py.Dataset):
            arrays.append(item[()])

    with h5py.File(path, "r") as f:
        f.visititems(collect)
    floats = [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
    return floats and all(np.isfinite(a).all() for a in floats)


@pytest.mark.slow
def test_divergence_never_saves_non_finite_weights(tmp_path):
    """Issue 12's case: base_lr=1e5. The epoch's last update breaks the weights
    after its loss was measured; neither the checkpoint nor the backup may
    hold them."""
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    data = tf.data.Dataset.from_tensor_slices(pixels(config, batch=8)).batch(4)
    with pytest.raises(NonFiniteLossError) as raised:
        pretrain(
            model,
            data,
            epochs=6,
            batch_size=4,
            output_dir=str(tmp_path),
            base_lr=1e5,
            warmup_epochs=1,
            verbose=0,
        )
    saved = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.h5"))
    assert all(all_finite_h5(tmp_path / name) for name in saved), saved
    if (tmp_path / "model.weights.h5").exists():
        assert "last good checkpoint is in" in str(raised.value)
    else:
        assert "No checkpoint was saved" in str(raised.value)


def test_an_empty_dataset_is_refused_and_nothing_is_saved(tmp_path):
    model = TFViTMAEForPreTraining(tiny_config())
    empty = tf.data.Dataset.from_tensor_slices(pixels(model.config, batch=2)).batch(2).take(0)
    with pytest.raises(ValueError, match="The dataset is empty"):
        pretrain(model, empty, epochs=1, batch_size=2, output_dir=str(tmp_path / "a"))
    # A dataset that turns out empty (unknown length, e.g. undecodable files): no save.
    unknown = empty.filter(lambda x: True)
    with pytest.raises(EmptyEpochError, match="ran no training batch"):
        pretrain(
            model,
            unknown,
            epochs=1,
            batch_size=2,
            steps_per_epoch=3,
            output_dir=str(tmp_path / "b"),
            verbose=0,
        )
    assert not (tmp_path / "b" / "model.weights.h5").exists()


def test_pretrain_needs_a_length():
    model = TFViTMAEForPreTraining(tiny_config())
    endless = tf.data.Dataset.from_tensor_slices(pixels(model.config, batch=4)).batch(2).repeat()
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        pretrain(model, endless, epochs=1, batch_size=2, output_dir="unused")


@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
def test_accumulated_batches_train_as_their_full_batches(recipe, tmp_path):
    """`accum_steps=2` on batches of 2 trains as batches of 4 do: an epoch of
    two updates (the cosine's first two rates, of the effective batch), to
    the same weights. Pretraining masks with the same explicit noise;
    fine-tuning runs with layer decay, label smoothing and remat. The run
    record says the batch, the steps accumulated and the effective batch.

    Tolerance: both sides compute the mean gradient of the same 4 images,
    in another order (two means of 2, one mean of 4): float32 rounding. The
    loss is one mean over images either way, as every image has as many
    masked patches. Adam normalises the step per weight, which can magnify a
    rounding error where a gradient is near its epsilon: the weights agree to
    `atol=5e-7` (2e-8 measured here), against Adam steps of ~4e-3 (the
    learning rate); a rate or schedule off by a step moves weights by ~1e-3."""
    config = tiny_config()
    x, y = labelled(config, n=8)
    noise = noise_for(config, batch=8, seed=3)

    def run(batch_size, accum_steps):
        keras.utils.set_random_seed(0)
        if recipe == "pretrain":
            model = TFViTMAEForPreTraining(config, seed=0)
            data = tf.data.Dataset.from_tensor_slices({"pixel_values": x, "noise": noise})
            train, options = pretrain, {}
        else:
            model = TFViTMAEForImageClassification(config, num_labels=3, pooling="mean", seed=0)
            model.remat = True
            data = tf.data.Dataset.from_tensor_slices((x, y))
            train, options = train_classifier, dict(label_smoothing=0.1, layer_decay=0.5)
        folder = tmp_path / f"accum_{accum_steps}"
        train(
            model, data.batch(batch_size), epochs=1, batch_size=batch_size,
            accum_steps=accum_steps, base_lr=0.25, warmup_epochs=0, output_dir=str(folder),
            jit_compile=False, verbose=0, **options,
        )  # fmt: skip
        assert int(model.optimizer.iterations) == 2  # updates
        settings = json.loads((folder / "run.json").read_text())["settings"]
        assert (settings["batch_size"], settings["accum_steps"]) == (batch_size, accum_steps)
        assert settings["effective_batch_size"] == 4
        return model

    tf.config.run_functions_eagerly(True)  # a few steps: tracing would cost more
    try:
        accumulated, full = run(2, accum_steps=2), run(4, accum_steps=1)
    finally:
        tf.config.run_functions_eagerly(False)
    assert float(accumulated.optimizer.learning_rate) == float(full.optimizer.learning_rate)
    for a, b in zip(accumulated.weights, full.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=5e-7, err_msg=a.path)


def test_accum_steps_must_divide_an_epoch(tmp_path):
    """Every epoch ends on an optimizer update; a `make_dataset` pipeline's
    error says how long its pass is. Nothing is written for a refused run."""
    from tfvitmae.data import make_dataset

    model = TFViTMAEForPreTraining(tiny_config(image_size=16, patch_size=4), seed=0)
    raw = np.zeros((10, 16, 16, 3), np.uint8)
    data = make_dataset(raw, batch_size=4, processor=model.image_processor, repeat=True)
    options = dict(epochs=1, batch_size=4, output_dir=str(tmp_path / "run"), verbose=0)
    with pytest.raises(
        ValueError,
        match=r"steps_per_epoch=3 and accum_steps=2 .*One pass over the make_dataset pipeline "
        r"is 3 batches",
    ):
        pretrain(model, data, accum_steps=2, **options)
    images = tf.data.Dataset.from_tensor_slices(pixels(model.config, batch=6)).batch(2)
    with pytest.raises(ValueError, match=r"received steps_per_epoch=3 and accum_steps=2 \(the"):
        train_classifier(
            TFViTMAEForImageClassification(model.config, num_labels=2),
            images.map(lambda x: (x, 0)), accum_steps=2, **options,
        )  # fmt: skip
    for bad in (0, 1.0, "2"):
        with pytest.raises(ValueError, match=rf"accum_steps must be a positive int.*{bad!r}"):
            pretrain(model, images, accum_steps=bad, **options)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------- train_classifier
def test_linear_probe_freezes_the_encoder_and_trains_the_head():
    config = tiny_config()
    pretrained = TFViTMAEForPreTraining(config)
    model = TFViTMAEForImageClassification.from_encoder(pretrained, num_labels=3, linear_probe=True)
    encoder_before = [w.numpy().copy() for w in model.vit.weights]
    x, y = labelled(config)
    history = train_classifier(
        model,
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        epochs=8,
        batch_size=8,
        base_lr=2.0,
        warmup_epochs=1,
        verbose=0,
    )
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(encoder_before, model.vit.weights))
    assert history.history["accuracy"][-1] > 0.6
    assert type(model.optimizer) is keras.optimizers.SGD  # MAE's probe: (LARS ~) SGD
    moving_mean = model.probe_norm.moving_mean.numpy()
    assert np.abs(moving_mean).max() > 0  # BatchNorm statistics were learned


def test_validation_data_of_unknown_length_is_read_a_whole_pass_each_epoch():
    """Image files give a validation set whose length tf.data cannot see: Keras
    warned that it "ran out of data" after every validation pass."""
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=3)
    x, y = labelled(config)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    unknown = tf.data.Dataset.from_tensor_slices((x[:10], y[:10])).filter(lambda *_: True)
    assert unknown.cardinality() == tf.data.UNKNOWN_CARDINALITY
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train_classifier(
            model,
            train,
            epochs=2,
            batch_size=8,
            validation_data=unknown.batch(4),
            validation_steps=3,
            verbose=0,
        )
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    # The last epoch's validation saw all 10 images with the final weights.
    whole = model.evaluate(
        tf.data.Dataset.from_tensor_slices((x[:10], y[:10])).batch(10), verbose=0
    )
    assert history.history["val_loss"][-1] == pytest.approx(whole[0], rel=1e-5)
    for steps, data, pattern in (
        (0, unknown.batch(4), "validation_steps must be a positive number"),
        (2, (x, y), "received 2 with tuple"),
        (1.5, unknown.batch(4), "validation_steps must be an int, received 1.5"),
    ):
        with pytest.raises((ValueError, TypeError), match=pattern):
            train_classifier(
                model, train, epochs=1, batch_size=8, validation_data=data, validation_steps=steps
            )


def test_labels_outside_the_classes_are_refused_not_trained_on():
    """With label smoothing, labels 7 and -1 of a 2-class model trained
    silently (their one-hot rows are zeros); without it, the loss became NaN."""
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=2)
    x = pixels(config, batch=4)
    bad = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 7, -1]))).batch(4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be .*\[0, 2\)"):
        train_classifier(
            model, bad, epochs=1, batch_size=4, label_smoothing=0.1, jit_compile=False, verbose=0
        )
    good = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 1, 0]))).batch(4)
    with pytest.raises(ValueError, match=r"validation labels must be .*received 1 outside"):
        train_classifier(
            model, good, epochs=1, batch_size=4, validation_data=(x, np.array([0, 1, 2, 1]))
        )


@pytest.mark.slow
def test_fine_tuning_updates_encoder_with_layer_decay_and_smoothing(tmp_path):
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=3, pooling="mean", drop_path_rate=0.1)
    before = model.vit.blocks[0].attention.qkv.kernel.numpy().copy()
    x, y = labelled(config)
    history = train_classifier(
        model,
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        epochs=3,
        batch_size=8,
        base_lr=1e-2,
        warmup_epochs=1,
        label_smoothing=0.1,
        output_dir=str(tmp_path),
        verbose=0,
    )
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(before, model.vit.blocks[0].attention.qkv.kernel.numpy())
    assert type(model.optimizer) is LayerDecayAdamW
    multipliers = model.optimizer.lr_multipliers
    assert multipliers[model.vit.blocks[0].attention.qkv.kernel.path] == pytest.approx(0.65**2)
    saved = TFViTMAEForImageClassification.from_pretrained(tmp_path)
    for a, b in zip(saved.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("change", [dict(weight_decay=0.1), dict(warmup_epochs=2)])
def test_a_classifier_rerun_with_another_recipe_is_refused(change, tmp_path):
    """A stopped fine-tuning run resumes only with the same recipe: every
    argument of it counts, weight decay and warmup included."""
    from tfvitmae.training.runs import RUN_FILE, RunConflictError

    config = tiny_config()
    x, y = labelled(config, n=8)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    options = dict(epochs=2, batch_size=8, output_dir=str(tmp_path), jit_compile=False, verbose=0)

    def run(**recipe):
        model = TFViTMAEForImageClassification(config, num_labels=3, seed=0)
        return train_classifier(model, data, **options, **recipe)

    run()
    # As a kill during the first epoch leaves it: not finished, no backup yet.
    record = json.loads((tmp_path / RUN_FILE).read_text())
    (tmp_path / RUN_FILE).write_text(json.dumps({**record, "epochs_done": 0, "finished": False}))
    shutil.rmtree(tmp_path / "backup")
    ((name, value),) = change.items()
    with pytest.raises(RunConflictError, match=f"other settings .*{name}: None -> {value}"):
        run(**change)
    assert len(run().history["loss"]) == 2  # the same recipe resumes (from the start)


# ---------------------------------------------------------- several devices
@pytest.mark.slow
def test_mirrored_strategy_matches_single_device(single_device_run, tmp_path):
    """MirroredStrategy on two logical CPUs (Keras' fit), with fixed masking
    noise, ends with the weights of a single-device run with the same global
    batch: the batch is split across replicas and the loss scaled correctly."""
    out = tmp_path / "mirrored.npz"
    finish_distributed_run(start_distributed_run("mirrored", out))
    result = distributed_run_results(out)
    assert int(result[1]["replicas"]) == 2
    assert_same_training(result, single_device_run)


@pytest.mark.slow
def test_mirrored_strategy_with_random_masks(tmp_path):
    out = tmp_path / "random.npz"
    finish_distributed_run(start_distributed_run("random-masks", out))
    _, data = distributed_run_results(out)
    assert int(data["replicas"]) == 2 and len(data["loss"]) == 2
    assert np.isfinite(data["loss"]).all()
