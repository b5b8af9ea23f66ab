import math
import os
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.training.callbacks import (
    EmptyEpochError,
    InterruptBetweenSteps,
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


@pytest.fixture(autouse=True)
def python_handles_sigint():
    """Python's own SIGINT handler, as in a process started from a shell (a
    pytest-xdist worker ignores SIGINT, and then nothing is deferred)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _SigintAt(keras.callbacks.Callback):
    """Sends this process a SIGINT at the start of a step and in `on_epoch_end`
    (a backup's place), and records whether a KeyboardInterrupt was raised
    inside the epoch-end work, where it must never be."""

    def __init__(self, step=None, at_epoch_end=False):
        super().__init__()
        self.step, self.at_epoch_end = step, at_epoch_end
        self.steps_done = 0
        self.epoch_end_finished = False

    def on_train_batch_begin(self, batch, logs=None):
        if self.steps_done == self.step:
            os.kill(os.getpid(), signal.SIGINT)

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.at_epoch_end:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here; the work must go on
            self.epoch_end_finished = True


def _tiny_fit(callbacks, interrupt, epochs=2):
    model = TFViTMAEForPreTraining(tiny_config())
    model.compile(optimizer="adam", jit_compile=False)
    data = pixels(model.config, batch=2)
    with interrupt:
        model.fit(data, epochs=epochs, batch_size=1, verbose=0, callbacks=[*callbacks, interrupt])
    return model


@pytest.mark.parametrize("step", [0, 1])
def test_ctrl_c_stops_fit_at_the_end_of_the_step(step):
    """A KeyboardInterrupt raised wherever Python happened to be (a backup, a
    finaliser, a lock held) could be swallowed or hang the process."""
    default = signal.getsignal(signal.SIGINT)
    probe, interrupt = _SigintAt(step=step), InterruptBetweenSteps()
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit([probe], interrupt)
    assert probe.steps_done == step + 1  # the step under way finished, no other began
    assert signal.getsignal(signal.SIGINT) is default


def test_ctrl_c_in_an_epoch_end_save_lets_it_finish_then_stops():
    probe, interrupt = _SigintAt(at_epoch_end=True), InterruptBetweenSteps()
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit([probe], interrupt, epochs=3)
    assert probe.epoch_end_finished
    assert probe.steps_done == 3  # epoch 1's two steps, and the first of epoch 2


def test_a_second_ctrl_c_stops_at_once_and_the_handler_is_restored():
    interrupt = InterruptBetweenSteps()
    with interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupt:  # a fit that ends without Ctrl-C leaves nothing behind
        assert not interrupt.requested
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
