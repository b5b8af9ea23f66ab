"""The pretraining recipe: schedule, optimizer, callbacks, resume."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.training import (
    LayerDecayAdamW,
    NonFiniteLossError,
    ReconstructionCallback,
    StopOnNonFiniteLoss,
    WarmupCosineDecay,
    layer_decay_multipliers,
    mae_optimizer,
    pretrain,
    scaled_learning_rate,
)

from .helpers import pixels, tiny_config


def test_schedule_values_at_known_steps():
    schedule = WarmupCosineDecay(peak_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-5)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == 0.0
    assert lr(5) == pytest.approx(5e-4)
    assert lr(10) == pytest.approx(1e-3)
    assert lr(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half way through the cosine
    assert lr(110) == pytest.approx(1e-5)
    assert lr(500) == pytest.approx(1e-5)
    assert WarmupCosineDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="warmup_steps=20, total_steps=10"):
        WarmupCosineDecay(1e-3, 20, 10)


def test_mae_recipe_defaults():
    assert scaled_learning_rate(1.5e-4, 4096) == pytest.approx(2.4e-3)
    optimizer = mae_optimizer(batch_size=512, steps_per_epoch=100, epochs=800)
    schedule = optimizer.learning_rate_schedule if hasattr(optimizer, "learning_rate_schedule") else optimizer._learning_rate
    assert schedule.peak_lr == pytest.approx(1.5e-4 * 2) and schedule.warmup_steps == 4000
    assert schedule.total_steps == 80000
    assert optimizer.beta_1 == 0.9 and optimizer.beta_2 == 0.95 and optimizer.weight_decay == 0.05
    short = mae_optimizer(batch_size=256, steps_per_epoch=10, epochs=5)  # warmup capped at the run
    assert (short._learning_rate.warmup_steps, short._learning_rate.total_steps) == (50, 50)


def test_weight_decay_skips_biases_norms_tokens_and_tables():
    model = TFViTMAEForPreTraining(tiny_config())
    optimizer = mae_optimizer(batch_size=256, steps_per_epoch=1, epochs=1, warmup_epochs=0)
    variables = model.trainable_variables
    optimizer.build(variables)
    before = [v.numpy().copy() for v in variables]
    # Zero gradients: AdamW then changes a variable only through weight decay.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    changed = {v.path.split("/")[-1] for v, b in zip(variables, before) if not np.array_equal(v.numpy(), b)}
    unchanged = {v.path.split("/")[-1] for v, b in zip(variables, before) if np.array_equal(v.numpy(), b)}
    assert changed == {"kernel"}
    assert {"bias", "gamma", "beta", "cls_token", "mask_token"} <= unchanged


def test_layer_decay_scales_each_blocks_learning_rate():
    model = TFViTMAEForPreTraining(tiny_config(num_hidden_layers=3))
    multipliers = layer_decay_multipliers(model, 0.5)
    kernel = lambda i: model.vit.blocks[i].attention.qkv.kernel.path  # noqa: E731
    assert [multipliers[kernel(i)] for i in range(3)] == [0.125, 0.25, 0.5]
    assert multipliers[model.vit.embeddings.cls_token.path] == 0.0625
    assert model.decoder.decoder_pred.kernel.path not in multipliers  # heads get the full rate
    # One SGD-like step (AdamW's first step moves each weight by ~lr): ratios follow the multipliers.
    optimizer = LayerDecayAdamW(lr_multipliers=multipliers, learning_rate=1e-2, weight_decay=0.0)
    variables = [model.vit.blocks[i].attention.qkv.kernel for i in range(3)]
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(tf.ones_like(v), v) for v in variables])
    steps = [float(np.abs(v.numpy() - b).mean()) for v, b in zip(variables, before)]
    np.testing.assert_allclose(steps, [1e-2 * 0.125, 1e-2 * 0.25, 1e-2 * 0.5], rtol=1e-3)
    restored = LayerDecayAdamW.from_config(optimizer.get_config())
    assert restored.lr_multipliers == multipliers


@pytest.mark.slow
def test_pretrain_fit_loss_falls_and_writes_checkpoint_and_grid(tmp_path):
    keras.utils.set_random_seed(0)
    config = tiny_config(norm_pix_loss=True)
    model = TFViTMAEForPreTraining(config, seed=0)
    from .test_training import smooth_images

    images = smooth_images(config, n=64)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(8)
    history = pretrain(model, dataset, epochs=6, batch_size=8, output_dir=str(tmp_path), base_lr=0.1,
                       warmup_epochs=1, reconstruction_images=images[:3], reconstruction_every=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.92 * losses[0], losses
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.weights.h5", "reconstruction_epoch_3.png",
                                            "reconstruction_epoch_6.png"]  # backup/ removed at the end
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "reconstruction_epoch_6.png")))
    assert grid.shape[-1] == 3 and grid.shape[1] > 4 * 32  # four columns
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.seen = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            raise KeyboardInterrupt("simulated preemption")


def test_resume_continues_at_the_same_step_and_schedule(tmp_path):
    config = tiny_config()
    images = pixels(config, batch=16)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)  # 4 steps per epoch

    def run(callbacks, output):
        model = TFViTMAEForPreTraining(config, seed=0)
        pretrain(model, dataset, epochs=3, batch_size=4, output_dir=str(output), warmup_epochs=1,
                 callbacks=callbacks, verbose=0)
        return model

    with pytest.raises(KeyboardInterrupt):
        run([_Interrupt(at_step=10)], tmp_path / "run")  # dies in epoch 3, after 2 epochs were backed up
    assert (tmp_path / "run" / "backup").exists()
    resumed = run([], tmp_path / "run")
    straight = run([], tmp_path / "straight")
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 12
    lr = lambda m: float(m.optimizer.learning_rate)  # noqa: E731
    assert lr(resumed) == pytest.approx(lr(straight))
    assert not (tmp_path / "run" / "backup").exists()


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    images = pixels(config, batch=8)
    good = tf.data.Dataset.from_tensor_slices(images).batch(4)
    pretrain(model, good, epochs=1, batch_size=4, output_dir=str(tmp_path), resume=False, verbose=0)
    saved = (tmp_path / "model.weights.h5").read_bytes()
    bad_images = images.copy()
    bad_images[5] = np.nan
    bad = tf.data.Dataset.from_tensor_slices(bad_images).batch(4)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, batch 2.*last good checkpoint"):
        pretrain(model, bad, epochs=2, batch_size=4, output_dir=str(tmp_path), resume=False, verbose=0)
    assert (tmp_path / "model.weights.h5").read_bytes() == saved
    assert isinstance(StopOnNonFiniteLoss(), keras.callbacks.Callback)


def test_reconstruction_callback_writes_comparable_grids(tmp_path):
    config = tiny_config(num_channels=1, norm_pix_loss=True)
    model = TFViTMAEForPreTraining(config)
    callback = ReconstructionCallback(pixels(config, batch=2), str(tmp_path), every_n_epochs=2, seed=3)
    callback.set_model(model)
    for epoch in range(4):
        callback.on_epoch_end(epoch)
    assert [os.path.basename(p) for p in callback.paths] == ["reconstruction_epoch_2.png", "reconstruction_epoch_4.png"]
    a, b = (tf.io.read_file(p).numpy() for p in callback.paths)
    assert a == b  # same images, same mask, same weights


def test_pretrain_needs_a_length():
    model = TFViTMAEForPreTraining(tiny_config())
    endless = tf.data.Dataset.from_tensor_slices(pixels(model.config, batch=4)).batch(2).repeat()
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        pretrain(model, endless, epochs=1, batch_size=2, output_dir="unused")
