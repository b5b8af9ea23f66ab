"""Training under `keras.distribution` on JAX (`training.mesh`): data parallel
over virtual CPU devices, and two processes over gloo that are killed and
resumed. The runs are subprocesses with `KERAS_BACKEND=jax` (`tests.mesh_run`),
so that the rest of the suite keeps TensorFlow and one device; they share a
JAX compilation cache, so that the later ones skip XLA's compiles."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tfvitmae.training.runs import backups

from ..helpers import ROOT


@pytest.fixture(scope="module")
def jax_env(tmp_path_factory):
    """The environment of a `tests.mesh_run` subprocess."""
    return dict(
        os.environ,
        KERAS_BACKEND="jax",
        TF_CPP_MIN_LOG_LEVEL="3",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def start(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.mesh_run", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.slow
def test_data_parallel_trains_as_one_device(jax_env, tmp_path):
    """`pretrain` and `train_classifier` with `distribution=DataParallel` over
    4 virtual devices, and `tfvitmae pretrain --distribution data`, give the
    one-device run's losses and weights on the same global batches."""
    out = tmp_path / "report.json"
    env = dict(jax_env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    finish(start(["devices", out, tmp_path], env))
    report = json.loads(out.read_text())
    assert report["devices"] == 4
    one, parallel = report["one_device"], report["data_parallel_4"]
    # The same masks, crops and batches: what differs is the order in which the
    # devices' float32 gradients are summed, a few ulp of a loss near 1, and
    # of an AdamW step of lr 3e-4 on weights near 1.
    np.testing.assert_allclose(parallel["loss"], one["loss"], rtol=1e-6)
    np.testing.assert_allclose(parallel["classifier_loss"], one["classifier_loss"], rtol=1e-6)
    assert parallel["weights"] < 1e-6 and parallel["classifier_weights"] < 1e-6, parallel
    assert parallel["kernel_devices"] == 4 and parallel["kernel_replicated"]
    assert "made outside the distribution" in report["made_outside"]
    assert "distribution.scope()" in report["made_outside"]
    assert report["cli_exit"] == 0 and report["cli_distribution"] == "DataParallel"
    said = (tmp_path / "cli.txt").read_text()
    assert "4 replica(s)" in said, said
    assert (tmp_path / "cli" / "model.weights.h5").is_file()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(env, output_dirs, kill_after=None):
    """The two processes of one `pretrain` run (`tests.mesh_run process`),
    writing to `output_dirs[i]`; process 1 kills itself after `kill_after` steps."""
    address = f"127.0.0.1:{free_port()}"
    processes = []
    for index, output_dir in enumerate(output_dirs):
        args = ["process", output_dir]
        if kill_after and index == 1:
            args += ["--kill-after", kill_after]
        process_env = dict(
            env,
            KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
            KERAS_DISTRIBUTION_NUM_PROCESSES="2",
            KERAS_DISTRIBUTION_PROCESS_ID=str(index),
        )
        processes.append(start(args, process_env))
    return processes


def final_weights(output_dir):
    """The weights `SavePretrained` wrote last, by their place in the file."""
    found = {}

    def keep(name, item):
        if isinstance(item, h5py.Dataset):
            found[name] = item[()]

    with h5py.File(os.path.join(output_dir, "model.weights.h5"), "r") as f:
        f.visititems(keep)
    return found


@pytest.mark.slow
def test_two_processes_killed_mid_run_resume_as_if_never_stopped(jax_env, tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    elsewhere = tmp_path / "elsewhere"

    # Uninterrupted; process 1's output_dir is its own, and stays untouched:
    # only process 0 writes.
    for process in start_processes(jax_env, [reference, elsewhere]):
        finish(process)
    assert not elsewhere.exists()
    assert {"run.json", "training_log.csv", "model.weights.h5"} <= set(os.listdir(reference))

    # Killed in the middle of epoch 2: process 1 dies, the job then stops process 0.
    chief, other = start_processes(jax_env, [run, run], kill_after=3)
    assert other.wait(timeout=600) == -signal.SIGKILL, other.communicate()[0]
    chief.kill()
    chief.communicate()
    other.communicate()
    [(epoch, _)] = backups(str(run))
    assert epoch == 1

    # Process 1 sees a copy of the run whose backup it cannot read: both stop, with reasons.
    shutil.copytree(run, elsewhere)
    state = elsewhere / "backup" / "epoch_1" / "state.weights.h5"
    state.write_bytes(state.read_bytes()[:1000])
    before = sorted(p.name for p in elsewhere.rglob("*"))
    chief, other = start_processes(jax_env, [run, elsewhere])
    chief_says, other_says = chief.communicate(timeout=600)[0], other.communicate()[0]
    assert chief.returncode != 0 and other.returncode != 0
    assert "1 process(es) could not restore the backup of epoch 1" in chief_says, chief_says
    assert f"No backup in {elsewhere / 'backup'} can be resumed from" in other_says, other_says
    assert "every worker must see" in other_says, other_says
    assert sorted(p.name for p in elsewhere.rglob("*")) == before
    assert [e for e, _ in backups(str(run))] == [1]

    # Both rerun: they resume from the chief's backup and end where the uninterrupted run did.
    chief, other = start_processes(jax_env, [run, run])
    chief_says, other_says = finish(chief), finish(other)
    assert f"resuming the run in {run} after epoch 1" in chief_says, chief_says
    assert "process resuming after epoch 1 from the chief's backup" in other_says, other_says
    ours, theirs = final_weights(run), final_weights(reference)
    assert sorted(ours) == sorted(theirs)
    for name in ours:  # the same program on the same data: equal
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
