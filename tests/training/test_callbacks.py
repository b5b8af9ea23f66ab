import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.training.callbacks import (
    EmptyEpochError,
    NonFiniteLossError,
    ReconstructionCallback,
    SavePretrained,
    StopOnNonFiniteLoss,
)

from ..helpers import pixels, tiny_config


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_stop_on_non_finite_loss_names_epoch_batch_and_checkpoint(loss, tmp_path):
    callback = StopOnNonFiniteLoss(checkpoint_hint=str(tmp_path))
    callback.on_epoch_begin(2)
    callback.on_train_batch_end(0, {"loss": 1.5})  # finite: nothing happens
    callback.on_train_batch_end(1, {})
    with pytest.raises(NonFiniteLossError, match=rf"loss became {loss} at epoch 3, batch 5.*No "):
        callback.on_train_batch_end(4, {"loss": np.float32(loss)})
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(NonFiniteLossError, match=rf"last good checkpoint is in {tmp_path}"):
        callback.on_train_batch_end(4, {"loss": np.float32(loss)})
    with pytest.raises(NonFiniteLossError) as raised:
        StopOnNonFiniteLoss().on_train_batch_end(0, {"loss": loss})
    assert "checkpoint" not in str(raised.value)


def test_the_guard_checks_weights_and_empty_epochs_at_epoch_end(tmp_path):
    model = TFViTMAEForPreTraining(tiny_config())
    guard = StopOnNonFiniteLoss()
    guard.set_model(model)
    guard.on_epoch_begin(0)
    with pytest.raises(EmptyEpochError, match="Epoch 1 ran no training batch"):
        guard.on_epoch_end(0, {})
    guard.on_train_batch_end(0, {"loss": 0.5})
    guard.on_epoch_end(0, {"loss": 0.5})  # finite weights: nothing happens
    weight = model.trainable_weights[3]
    weight.assign(np.full(weight.shape, np.nan, "float32"))
    with pytest.raises(NonFiniteLossError, match="weights became NaN or infinite during epoch 1"):
        guard.on_epoch_end(0, {"loss": 0.5})
    save = SavePretrained(str(tmp_path / "ckpt"))
    save.set_model(model)
    save.on_epoch_end(0, {"loss": 0.5})  # finite loss, NaN weights: not saved
    assert not (tmp_path / "ckpt").exists()


def test_save_pretrained_skips_non_finite_epochs(tmp_path):
    model = TFViTMAEForPreTraining(tiny_config())
    callback = SavePretrained(str(tmp_path / "ckpt"))
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": math.nan})
    assert not (tmp_path / "ckpt").exists()
    callback.on_epoch_end(1, {"loss": 0.5})
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path / "ckpt")
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_reconstruction_callback_writes_comparable_grids(tmp_path):
    config = tiny_config(num_channels=1, norm_pix_loss=True)
    model = TFViTMAEForPreTraining(config)
    images = pixels(config, batch=2)
    callback = ReconstructionCallback(images, str(tmp_path), every_n_epochs=2, seed=3)
    callback.set_model(model)
    for epoch in range(4):
        callback.on_epoch_end(epoch)
    names = [os.path.basename(p) for p in callback.paths]
    assert names == ["reconstruction_epoch_2.png", "reconstruction_epoch_4.png"]
    assert sorted(os.listdir(tmp_path)) == names
    a, b = (tf.io.read_file(p).numpy() for p in callback.paths)
    assert a == b  # same images, same mask, same weights
    other_mask = ReconstructionCallback(images, str(tmp_path / "other"), seed=4)
    other_mask.set_model(model)
    other_mask.on_epoch_end(0)
    assert tf.io.read_file(other_mask.paths[0]).numpy() != a  # the seed picks the mask


@pytest.mark.slow
def test_the_guard_in_a_plain_fit_stops_before_a_checkpoint_saves_nan(tmp_path):
    import keras

    config = tiny_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(1e4))
    path = str(tmp_path / "ckpt.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    with pytest.raises(NonFiniteLossError):
        model.fit(
            pixels(config, batch=8),
            batch_size=4,
            epochs=5,
            verbose=0,
            callbacks=[StopOnNonFiniteLoss(), checkpoint],
        )
    if os.path.exists(path):  # an epoch that ended finite may have been saved: only finite
        saved = TFViTMAEForPreTraining(config)
        saved.load_weights(path)
        assert all(np.isfinite(w.numpy()).all() for w in saved.weights if w.dtype == "float32")
