"""Training under `keras.distribution` on JAX (`training.mesh`): data parallel
over virtual CPU devices, and two processes over gloo that are killed and
resumed. The runs are subprocesses with `KERAS_BACKEND=jax` (`tests.mesh_run`),
so that the rest of the suite keeps TensorFlow and one device; they share a
JAX compilation cache, so that the later ones skip some of XLA's compiles."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from tfvitmae.cli import main
from tfvitmae.training import mesh
from tfvitmae.training.runs import RunConflictError, backups, check_backup, restore_backup

from ..helpers import ROOT, backed_up_model, tiny_config
from ..helpers import finish_distributed_run as finish


@pytest.fixture(scope="module")
def jax_env(tmp_path_factory):
    """The environment of a `tests.mesh_run` subprocess: XLA compiles without
    LLVM's optimisations (the tiny programs run as fast, and compile in half
    the time; every run of a comparison compiles alike)."""
    return dict(
        os.environ,
        KERAS_BACKEND="jax",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_backend_optimization_level=0",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def start(command, env):
    return subprocess.Popen(
        [sys.executable, "-m", *map(str, command)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def data_parallel_run(jax_env, tmp_path_factory):
    """The data-parallel run (`tests.mesh_run devices`), started at once: it
    runs while the two processes below wait on each other, on CI's 2 cores.
    Returns a function that waits for its report."""
    work = tmp_path_factory.mktemp("devices")
    devices = "--xla_force_host_platform_device_count=4"
    env = dict(jax_env, XLA_FLAGS=f"{jax_env['XLA_FLAGS']} {devices}")
    process = start(["tests.mesh_run", "devices", work / "report.json", work], env)

    def report():
        finish(process)
        return json.loads((work / "report.json").read_text())

    yield report
    if process.poll() is None:  # no test asked for it
        process.kill()
        process.communicate()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(env, output_dirs, kill_after=None):
    """The two processes of a run (`tests.mesh_run process`): process i
    trains into `output_dirs[i][0]`, then `[1]`, ...; process 1 kills itself
    after `kill_after` steps of its last run."""
    address = f"127.0.0.1:{free_port()}"
    processes = []
    for index, folders in enumerate(output_dirs):
        args = ["tests.mesh_run", "process", *folders]
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


def files(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.slow
def test_two_processes_killed_mid_run_resume_as_if_never_stopped(
    jax_env, tmp_path, data_parallel_run
):
    """Two processes (gloo on CPU) train; then again, and process 1 is killed
    in the middle of epoch 2. Rerun with a process that cannot read the
    backup, both stop with their reasons; rerun as they were, both resume from
    the chief's backup and end with the uninterrupted run's weights. Only
    process 0 writes. (`data_parallel_run` runs meanwhile.)"""
    run, reference = tmp_path / "run", tmp_path / "reference"
    elsewhere = tmp_path / "elsewhere"

    # Uninterrupted, process 1's own output folder untouched; then killed.
    chief, other = start_processes(jax_env, [[reference, run], [elsewhere, run]], kill_after=3)
    assert other.wait(timeout=600) == -signal.SIGKILL, other.communicate()[0]
    chief.kill()  # waiting for process 1 in the next step: the job stops it
    chief_says, other_says = chief.communicate()[0], other.communicate()[0]
    assert "run 1 finished" in chief_says and "run 1 finished" in other_says, chief_says
    assert {"run.json", "training_log.csv", "model.weights.h5"} <= set(os.listdir(reference))
    assert not elsewhere.exists()
    [(epoch, _)] = backups(str(run))
    assert epoch == 1

    # Process 1 first sees a copy of the run whose backup it cannot read:
    # both stop, with reasons; then both see the run, and resume.
    shutil.copytree(run, elsewhere)
    state = elsewhere / "backup" / "epoch_1" / "state.weights.h5"
    state.write_bytes(state.read_bytes()[:1000])
    before = files(elsewhere)
    chief, other = start_processes(jax_env, [[run, run], [elsewhere, run]])
    chief_says, other_says = finish(chief), finish(other)
    assert (
        "run 1 stopped: WorkerStartError: 1 process(es) could not restore the backup of epoch 1"
        in chief_says
    ), chief_says
    assert f"run 1 stopped: RunConflictError: No backup in {elsewhere / 'backup'}" in other_says
    assert "every worker must see" in other_says, other_says
    assert files(elsewhere) == before  # read, never written
    assert f"resuming the run in {run} after epoch 1" in chief_says, chief_says
    assert "process resuming after epoch 1 from the chief's backup" in other_says, other_says
    assert "run 2 finished" in chief_says and "run 2 finished" in other_says
    ours, theirs = final_weights(run), final_weights(reference)
    assert sorted(ours) == sorted(theirs)
    for name in ours:  # the same program on the same data: equal
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@pytest.mark.slow
def test_data_parallel_trains_as_one_device(data_parallel_run):
    """`pretrain` and `train_classifier` (2 batches accumulated into an
    update) with `distribution=DataParallel` over 4 virtual devices give the
    one-device run's losses and weights on the same global batches;
    `tfvitmae pretrain --distribution data` trains over them."""
    report = data_parallel_run()
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
    assert "Model parallelism needs Model.get_layout_map(device_mesh)" in report["no_layout_map"]
    assert "Data parallelism runs on every device (4x1)" in report["data_mesh"]
    cli = report["cli_data"]
    assert cli["exit"] == 0 and cli["distribution"] == "DataParallel"
    assert "4 replica(s)" in cli["said"], cli["said"]


@pytest.mark.slow
def test_model_parallel_pretrain_trains_as_one_device(data_parallel_run):
    """`pretrain` under `make_distribution("model", (2, 2), ...)`: the model's
    `get_layout_map` splits the query/key/value kernel by heads over the
    model axis, and 2 epochs give the one-device losses and weights;
    `tfvitmae pretrain --distribution model --mesh 2x2` trains on that mesh,
    2 replicas splitting each batch. Split weights in several processes are
    refused (process 0 alone writes)."""
    report = data_parallel_run()
    one, sharded = report["one_device"], report["model_parallel_2x2"]
    np.testing.assert_allclose(sharded["loss"], one["loss"], rtol=1e-6)
    assert sharded["weights"] < 1e-6, sharded
    # (hidden, 3, heads, head_dim), the heads axis on the model axis: 2 of the
    # 4 devices hold each part, and no device holds all of it.
    config = tiny_config()
    heads = config.num_attention_heads
    assert sharded["kernel_shape"] == [
        config.hidden_size, 3, heads, config.hidden_size // heads
    ]  # fmt: skip
    assert sharded["kernel_spec"][2] == "model", sharded["kernel_spec"]
    assert sharded["kernel_devices"] == 4 and not sharded["kernel_replicated"]
    # Several processes: process 0 alone writes, so it must hold every weight.
    assert "2 processes only process 0 writes" in report["split_between_processes"]
    assert "model parallelism runs in one process" in report["split_between_processes"]
    cli = report["cli_model"]
    assert cli["exit"] == 0 and cli["distribution"] == "ModelParallel"
    assert "2 replica(s)" in cli["said"], cli["said"]


# ------------------------------------------------ in this process (TensorFlow)
@pytest.mark.parametrize(
    "flags, code, message",
    [
        (["--mesh", "2by2"], 2, "--mesh: must be RxC, batch x model devices"),
        (["--mesh", "2x2"], 1, "--mesh applies to --distribution model"),
        (["--distribution", "data", "--multi-gpu"], 1, "exclude each other"),
        (["--distribution", "data"], 1, "runs on JAX here, but Keras runs on tensorflow"),
        (["--num-processes", "2"], 1, "Training in several processes runs on JAX here"),
    ],
)
def test_distribution_flags_are_checked_before_anything_is_read(
    flags, code, message, tmp_path, capsys
):
    """Before the data or the model is read: the mesh's form, which flags go
    together, and that `keras.distribution` needs JAX."""
    argv = ["pretrain", str(tmp_path / "none"), "--output-dir", str(tmp_path / "out"), *flags]
    if code == 2:
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2
    else:
        assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_one_process_without_a_distribution_changes_nothing(monkeypatch):
    """Off JAX (or in one process) every process is the chief, runs every
    callback, and the data go to Keras as they are."""
    for name in mesh.PROCESS_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert not mesh.initialize()
    assert (mesh.process_index(), mesh.process_count(), mesh.is_chief()) == (0, 1, True)
    callbacks = [keras.callbacks.History(), keras.callbacks.CSVLogger("log.csv")]
    assert mesh.process_callbacks(callbacks) == callbacks
    assert mesh.chief_verbosity(2) == 2 and mesh.replicas() == 1
    mesh.prepare(None, None, batch_size=3)  # no distribution: nothing to check


def test_only_the_chief_says_it_saved(monkeypatch):
    """The command line's last line: the chief saved; another process says
    that process 0 did."""
    from tfvitmae.cli.commands import _saved

    assert _saved("model", "out") == "model saved in out"
    monkeypatch.setattr(mesh, "process_index", lambda: 1)
    assert _saved("classifier", "out") == "process 1 done; process 0 saved the classifier in out"


def test_a_backup_is_checked_whole_without_loading_it(tmp_path):
    """`check_backup` finds the backup `restore_backup` loads, reading every
    array, and refuses what `restore_backup` refuses, with its words."""
    model, _ = backed_up_model(tmp_path)
    before = [w.numpy().copy() for w in model.weights]
    epoch, path = check_backup(str(tmp_path))
    assert (
        (epoch, path) == restore_backup(model, str(tmp_path)) == (1, backups(str(tmp_path))[0][1])
    )
    assert check_backup(str(tmp_path), 1) == (1, path)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)
    with pytest.raises(RunConflictError, match="There is no backup of epoch 2"):
        check_backup(str(tmp_path), 2)
    with open(path, "r+b") as f:  # the header reads, an array's bytes do not
        f.truncate(os.path.getsize(path) - 100)
    for read in (
        lambda: check_backup(str(tmp_path), 1),
        lambda: restore_backup(model, str(tmp_path), 1),
    ):
        with pytest.raises(RunConflictError, match=r"No backup in .* can be resumed from"):
            with pytest.warns(UserWarning, match="unreadable"):
                read()
    assert check_backup(str(tmp_path / "fresh")) == (0, None)
