"""Training under `keras.distribution` on JAX, in a subprocess (the rest of
the suite keeps TensorFlow and one device). Used by tests/training/test_mesh.py.

    python -m tests.mesh_run devices OUT.json WORK_DIR

With `XLA_FLAGS=--xla_force_host_platform_device_count=4`: `pretrain` and
`train_classifier` (with accumulation) on one device and data parallel over 4,
and `pretrain` model parallel on a 2x2 mesh, the same global batches;
`tfvitmae pretrain --distribution data`, and `--distribution model --mesh
2x2`; a model made outside the distribution, and distributions that cannot
be made. Writes what it found to OUT.json.

    python -m tests.mesh_run process OUTPUT_DIR... [--kill-after N]

One process of a multi-process run (`KERAS_DISTRIBUTION_*` set by the
caller), data parallel over the processes: `pretrain` of the tiny model on
16 images, 3 epochs of 2 steps, into each OUTPUT_DIR in turn (a rerun
without starting the processes anew), each time from the same new weights. A run
that cannot start prints why and the next one starts. With `--kill-after
N` the process kills itself (SIGKILL) in the last run, after N steps once
the chief has backed up an epoch.
"""

import contextlib
import json
import os
import signal
import sys

import keras
import numpy as np

from tfvitmae import TFViTMAEForImageClassification, TFViTMAEForPreTraining
from tfvitmae.data import make_dataset
from tfvitmae.training import mesh, pretrain, train_classifier
from tfvitmae.training.mesh import WorkerStartError
from tfvitmae.training.runs import RunConflictError, backups

from .helpers import tiny_config

GLOBAL_BATCH = 8


def images(n=16):
    return np.random.default_rng(3).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


def weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def largest_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def flat_difference(a, b):
    """`largest_difference` of weights held in other shapes (the query/key/value
    kernel is 4-D under `ModelParallel`, the same values in the same order)."""
    return max(float(np.abs(x.ravel() - y.ravel()).max()) for x, y in zip(a, b))


def train_on(distribution, work, name, classifier=True):
    """`pretrain` (2 epochs) and, with `classifier`, `train_classifier` (1
    epoch, its 2 batches accumulated into one update) under `distribution`
    (None: one device)."""
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    with scope:  # the models are made inside the distribution
        keras.utils.set_random_seed(0)
        model = TFViTMAEForPreTraining(tiny_config(), seed=0)
        if classifier:
            classifier = TFViTMAEForImageClassification(tiny_config(), num_labels=3, seed=0)
    data = make_dataset(images(), batch_size=GLOBAL_BATCH, processor=model.image_processor, seed=0)
    history = pretrain(
        model,
        data,
        epochs=2,
        batch_size=GLOBAL_BATCH,
        output_dir=os.path.join(work, f"pretrain_{name}"),
        base_lr=1e-2,
        warmup_epochs=1,
        verbose=0,
        distribution=distribution,
    )
    kernel = model.vit.blocks[0].attention.qkv.kernel
    found = dict(
        loss=history.history["loss"],
        weights=weights(model),
        kernel_shape=list(kernel.shape),
        kernel_devices=len(kernel.value.sharding.device_set),
        kernel_replicated=bool(kernel.value.sharding.is_fully_replicated),
        kernel_spec=[str(axis) for axis in getattr(kernel.value.sharding, "spec", ())],
    )
    if classifier:
        labelled = make_dataset(
            images(),
            batch_size=GLOBAL_BATCH,
            processor=classifier.image_processor,
            labels=np.arange(16) % 3,
            with_labels=True,
            seed=1,
        )
        fine_tuned = train_classifier(
            classifier,
            labelled,
            epochs=1,
            batch_size=GLOBAL_BATCH,
            verbose=0,
            distribution=distribution,
            accum_steps=2,
        )
        found.update(
            classifier_loss=fine_tuned.history["loss"], classifier_weights=weights(classifier)
        )
    return found


def devices_run(out, work):
    one = train_on(None, work, "one")
    parallel = train_on(
        keras.distribution.DataParallel(devices=keras.distribution.list_devices()), work, "data"
    )
    sharded = train_on(
        mesh.make_distribution("model", (2, 2), TFViTMAEForPreTraining),
        work,
        "model",
        classifier=False,
    )
    report = dict(
        devices=len(keras.distribution.list_devices()),
        one_device=dict(loss=one["loss"], classifier_loss=one["classifier_loss"]),
        data_parallel_4=dict(
            loss=parallel["loss"],
            classifier_loss=parallel["classifier_loss"],
            weights=largest_difference(parallel["weights"], one["weights"]),
            classifier_weights=largest_difference(
                parallel["classifier_weights"], one["classifier_weights"]
            ),
            kernel_devices=parallel["kernel_devices"],
            kernel_replicated=parallel["kernel_replicated"],
        ),
        model_parallel_2x2=dict(
            loss=sharded["loss"],
            weights=flat_difference(sharded["weights"], one["weights"]),
            kernel_shape=sharded["kernel_shape"],
            kernel_devices=sharded["kernel_devices"],
            kernel_replicated=sharded["kernel_replicated"],
            kernel_spec=sharded["kernel_spec"],
        ),
    )
    outside = TFViTMAEForPreTraining(tiny_config(), seed=0)
    data = make_dataset(images(), batch_size=GLOBAL_BATCH, seed=0, image_size=32)
    try:
        pretrain(outside, data, 1, GLOBAL_BATCH, os.path.join(work, "outside"), verbose=0,
                 distribution=keras.distribution.DataParallel())  # fmt: skip
    except ValueError as e:
        report["made_outside"] = str(e)
    with mesh.make_distribution("model", (2, 2), TFViTMAEForPreTraining).scope():
        split = TFViTMAEForPreTraining(tiny_config(), seed=0)
        count = mesh.process_count
        mesh.process_count = lambda: 2  # as if the mesh spanned 2 processes
        try:
            mesh.prepare(split, None, batch_size=GLOBAL_BATCH)
        except NotImplementedError as e:
            report["split_between_processes"] = str(e)
        finally:
            mesh.process_count = count
    for name, args in (
        ("no_layout_map", ("model", (2, 2), keras.Model)),
        ("data_mesh", ("data", (2, 2))),
    ):
        try:
            mesh.make_distribution(*args)
        except (NotImplementedError, ValueError) as e:
            report[name] = str(e)
    # The command line, on a folder of images: data parallel over the 4 devices.
    from PIL import Image

    from tfvitmae.cli import main

    checkpoint, folder = os.path.join(work, "checkpoint"), os.path.join(work, "images")
    TFViTMAEForPreTraining(tiny_config(), seed=0).save_pretrained(checkpoint)
    os.makedirs(folder)
    for i, image in enumerate(images()):
        Image.fromarray(image).save(os.path.join(folder, f"{i}.png"))
    for kind, flags in (("data", []), ("model", ["--mesh", "2x2"])):
        command = [
            "pretrain", folder, "--model", checkpoint,
            "--output-dir", os.path.join(work, f"cli_{kind}"),
            "--epochs", "1", "--batch-size", str(GLOBAL_BATCH), "--reconstruction-every", "0",
            "--distribution", kind, *flags,
        ]  # fmt: skip
        said = os.path.join(work, f"cli_{kind}.txt")
        with open(said, "w") as f, contextlib.redirect_stdout(f):
            exit_code = main(command)
        with open(said) as f:
            report[f"cli_{kind}"] = dict(
                exit=exit_code,
                distribution=type(keras.distribution.distribution()).__name__,
                said=f.read(),
            )
        keras.distribution.set_distribution(None)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


class KillAfter(keras.callbacks.Callback):
    """SIGKILL this process after `steps` steps, once the chief has backed up an epoch."""

    on_every_worker = True  # mesh.process_callbacks: every process runs it

    def __init__(self, steps, output_dir):
        super().__init__()
        self.steps, self.output_dir, self.done = steps, output_dir, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.steps and backups(self.output_dir):
            os.kill(os.getpid(), signal.SIGKILL)


def process_run(output_dirs, kill_after=None):
    """One process of a 2-process data-parallel `pretrain` (see above)."""
    assert mesh.initialize()  # from KERAS_DISTRIBUTION_*
    distribution = mesh.make_distribution("data")
    for number, output_dir in enumerate(output_dirs, 1):
        keras.utils.set_random_seed(0)  # the same weights on every process, every run
        with distribution.scope():
            model = TFViTMAEForPreTraining(tiny_config(), seed=0)
        data = make_dataset(
            images(),
            batch_size=GLOBAL_BATCH,
            processor=model.image_processor,
            seed=0,
            repeat=True,
            drop_remainder=True,
            process_index=mesh.process_index(),
            process_count=mesh.process_count(),
        )
        last = number == len(output_dirs)
        try:
            pretrain(
                model,
                data,
                epochs=3,
                batch_size=GLOBAL_BATCH,
                output_dir=output_dir,
                base_lr=0.01,
                warmup_epochs=1,
                verbose=2,
                distribution=distribution,
                callbacks=[KillAfter(kill_after, output_dir)] if kill_after and last else [],
            )
        except (WorkerStartError, RunConflictError) as e:
            print(f"run {number} stopped: {type(e).__name__}: {e}", flush=True)
        else:
            print(f"run {number} finished", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices_run(sys.argv[2], sys.argv[3])
    else:
        args = sys.argv[2:]
        kill = None
        if "--kill-after" in args:
            kill = int(args.pop(args.index("--kill-after") + 1))
            args.remove("--kill-after")
        process_run(args, kill_after=kill)
