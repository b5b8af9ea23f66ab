"""The same training code on several devices: MirroredStrategy on two logical
CPUs and MultiWorkerMirroredStrategy with two local worker processes on
loopback (through `training.train_loop`, since Keras' `fit` fails there).
With fixed masking noise, the weights after training must equal those of a
single-device run with the same global batch: this checks that the batch is
split across replicas and the loss is scaled correctly."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(mode, out, env=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "tests.distributed_run", mode, str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]


def weights(path):
    data = np.load(path)
    return [data[f"w{i}"] for i in range(len([k for k in data.files if k.startswith("w")]))], data


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "single.npz"
    finish(run("single", out))
    return weights(out)


def assert_same_training(result, reference):
    (ours, data), (theirs, ref_data) = result, reference
    np.testing.assert_allclose(data["loss"], ref_data["loss"], rtol=1e-4)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device(single, tmp_path):
    out = tmp_path / "mirrored.npz"
    finish(run("mirrored", out))
    result = weights(out)
    assert int(result[1]["replicas"]) == 2
    assert_same_training(result, single)


@pytest.mark.slow
def test_mirrored_strategy_with_random_masks(tmp_path):
    out = tmp_path / "random.npz"
    finish(run("random-masks", out))
    _, data = weights(out)
    assert np.isfinite(data["loss"]).all()


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_strategy_two_local_workers(single, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(run("worker", tmp_path / f"worker{index}.npz", env={"TF_CONFIG": json.dumps(tf_config)}))
    for process in processes:
        finish(process)
    chief, other = weights(tmp_path / "worker0.npz"), weights(tmp_path / "worker1.npz")
    assert int(chief[1]["replicas"]) == 2
    for a, b in zip(chief[0], other[0]):
        np.testing.assert_array_equal(a, b)  # the workers stay in sync
    assert_same_training(chief, single)
