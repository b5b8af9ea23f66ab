"""`loops.train_loop`, the plain `strategy.run` loop: in process, and as two
local MultiWorkerMirroredStrategy workers on loopback (where Keras' `fit`
fails), which must end with the weights of a single-device run."""

import json
import socket

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.loops import is_multi_worker, train_loop

from .helpers import (
    assert_same_training,
    distributed_run_results,
    finish_distributed_run,
    noise_for,
    pixels,
    start_distributed_run,
    tiny_config,
)


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(f"batch {batch} {logs['loss']:.6f}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch} {logs['loss']:.6f}")

    def on_train_end(self, logs=None):
        self.events.append("train_end")


@pytest.mark.slow
def test_train_loop_matches_fit_and_calls_the_callbacks():
    config = tiny_config()
    images, noise = pixels(config, batch=8), noise_for(config, batch=8)
    dataset = tf.data.Dataset.from_tensor_slices({"pixel_values": images, "noise": noise}).batch(4)
    models = [TFViTMAEForPreTraining(config) for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    for model in models:
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    recorder = Recorder()
    history = train_loop(models[0], dataset, epochs=2, callbacks=[recorder], verbose=0)
    reference = models[1].fit(dataset, epochs=2, verbose=0).history
    np.testing.assert_allclose(history["loss"], reference["loss"], rtol=1e-5)
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    assert recorder.events[0] == "train_begin" and recorder.events[-1] == "train_end"
    kinds = [e.split()[0] for e in recorder.events[1:-1]]
    assert kinds == ["epoch_begin", "batch", "batch", "epoch_end"] * 2
    assert recorder.events[4] == f"epoch_end 0 {history['loss'][0]:.6f}"


def test_train_loop_stops_at_steps_per_epoch():
    config = tiny_config()
    endless = tf.data.Dataset.from_tensor_slices(pixels(config, batch=4)).batch(2).repeat()
    model = TFViTMAEForPreTraining(config)
    model.compile(optimizer="sgd")
    history = train_loop(model, endless, epochs=3, steps_per_epoch=2, verbose=0)
    assert len(history["loss"]) == 3 and int(model.optimizer.iterations) == 6


def test_train_loop_needs_a_compiled_model():
    config = tiny_config()
    dataset = tf.data.Dataset.from_tensor_slices(pixels(config, batch=4)).batch(2)
    with pytest.raises(ValueError, match="Compile the model with an optimizer before train_loop"):
        train_loop(TFViTMAEForPreTraining(config), dataset, epochs=1)


def test_is_multi_worker():
    assert not is_multi_worker(tf.distribute.get_strategy())


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_strategy_two_local_workers(single_device_run, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            start_distributed_run(
                "worker", tmp_path / f"worker{index}.npz", env={"TF_CONFIG": json.dumps(tf_config)}
            )
        )
    for process in processes:
        finish_distributed_run(process)
    chief = distributed_run_results(tmp_path / "worker0.npz")
    other = distributed_run_results(tmp_path / "worker1.npz")
    assert int(chief[1]["replicas"]) == 2
    assert len(chief[0]) == len(other[0])
    for a, b in zip(chief[0], other[0]):
        np.testing.assert_array_equal(a, b)  # the workers stay in sync
    assert_same_training(chief, single_device_run)
