"""`loops.train_loop`, the plain `strategy.run` loop: in process, and as two
local MultiWorkerMirroredStrategy workers on loopback (where Keras' `fit`
fails), which must end with the weights of a single-device run, also when a
`pretrain` run is killed mid-epoch and resumed."""

import csv
import json
import os
import signal
import socket

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.training.distributed import is_chief, is_multi_worker, train_loop
from tfvitmae.training.runs import CSV_LOG, backups

from ..helpers import (
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


def start_workers(output_dirs, kill_after=None):
    """Two local workers of one `pretrain` run (`tests.distributed_run pretrain`),
    writing to `output_dirs[i]`; worker 1 kills itself after `kill_after` batches."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index, output_dir in enumerate(output_dirs):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        args = ("--kill-after", str(kill_after)) if kill_after and index == 1 else ()
        processes.append(
            start_distributed_run(
                "pretrain", output_dir, env={"TF_CONFIG": json.dumps(tf_config)}, args=args
            )
        )
    return processes


def epoch_logs(output_dir):
    with open(os.path.join(output_dir, CSV_LOG)) as f:
        return {int(row["epoch"]): row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_a_multi_worker_run_killed_mid_epoch_resumes_on_every_worker(tmp_path):
    run, elsewhere, reference = tmp_path / "run", tmp_path / "elsewhere", tmp_path / "reference"
    single = start_distributed_run("pretrain", reference)  # no TF_CONFIG: one device
    chief, worker = start_workers([run, run], kill_after=6)
    assert worker.wait(timeout=300) == -signal.SIGKILL, worker.communicate()[0]
    chief.kill()  # the job restarts every task, as a scheduler does after a preemption
    chief.communicate()
    worker.communicate()
    finish_distributed_run(single)
    [(epoch, _)] = backups(str(run))  # the chief's last complete backup
    assert 1 <= epoch < 3

    # A worker that cannot see the chief's backup stops every worker, with a reason.
    chief, worker = start_workers([run, elsewhere])
    chief_says, worker_says = chief.communicate(timeout=300)[0], worker.communicate()[0]
    assert chief.returncode != 0 and worker.returncode != 0
    assert "1 worker(s) could not restore the backup of epoch" in chief_says, chief_says
    assert f"no backup of epoch {epoch}" in worker_says, worker_says
    assert "every worker must see" in worker_says, worker_says
    assert not os.path.exists(elsewhere / "run.json")  # the other workers write nothing
    assert [e for e, _ in backups(str(run))] == [epoch]

    chief, worker = start_workers([run, run])
    chief_says, worker_says = finish_distributed_run(chief), finish_distributed_run(worker)
    assert f"resuming the run in {run} after epoch {epoch}" in chief_says, chief_says
    assert f"worker resuming after epoch {epoch} from the chief's backup" in worker_says
    # The resumed epochs continue the single-device run's curves (same data and masks).
    resumed, straight = epoch_logs(run), epoch_logs(reference)
    assert sorted(resumed) == [0, 1, 2]
    for e in range(epoch, 3):
        for column in ("loss", "learning_rate"):
            assert float(resumed[e][column]) == pytest.approx(
                float(straight[e][column]), rel=1e-4
            ), (column, e)
    ours = TFViTMAEForPreTraining.from_pretrained(str(run))
    theirs = TFViTMAEForPreTraining.from_pretrained(str(reference))
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5)


def test_is_chief_outside_and_inside_a_cluster():
    assert is_chief()  # no cluster: this process writes

    class Resolver:
        def __init__(self, task_type, task_id, cluster):
            self.task_type, self.task_id, self.cluster = task_type, task_id, cluster

        def cluster_spec(self):
            return tf.train.ClusterSpec(self.cluster)

    class Strategy:
        def __init__(self, *task):
            self.cluster_resolver = Resolver(*task)

    workers = {"worker": ["a:1", "b:2"]}
    with_chief = {"chief": ["c:3"], **workers}
    assert is_chief(Strategy("worker", 0, workers))
    assert not is_chief(Strategy("worker", 1, workers))
    assert is_chief(Strategy("chief", 0, with_chief))
    assert not is_chief(Strategy("worker", 0, with_chief))
