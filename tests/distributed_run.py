"""Run a few MAE training steps single-device, mirrored on two logical CPUs, or
as one worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG set by the
caller), and save the final weights. Used by tests/training/test_distributed.py and
tests/training/test_recipes.py (through tests/helpers.py).

    python -m tests.distributed_run MODE OUT.npz    MODE: single | mirrored | worker | random-masks

Mode `pretrain` is one worker of a multi-worker `pretrain` run into the
output folder OUT; with `--kill-after N` the worker kills itself (SIGKILL)
once it has read N batches and the chief has backed up an epoch: a
preemption in the middle of an epoch.

    python -m tests.distributed_run pretrain OUT_DIR [--kill-after N]
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 8


def main(mode, out):
    if mode in ("mirrored", "random-masks"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
    import keras

    from tests.helpers import noise_for, pixels, tiny_config
    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.training.distributed import train_loop

    strategy = {
        "single": lambda: tf.distribute.get_strategy(),
        "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        "random-masks": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        "worker": lambda: tf.distribute.MultiWorkerMirroredStrategy(),
    }[mode]()
    config = tiny_config(norm_pix_loss=True)
    images = pixels(config, batch=2 * GLOBAL_BATCH, seed=5)
    inputs = {"pixel_values": images}
    if mode != "random-masks":  # fixed noise: every setup sees the same masks
        inputs["noise"] = noise_for(config, batch=2 * GLOBAL_BATCH, seed=6)
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(GLOBAL_BATCH)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = TFViTMAEForPreTraining(config, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        if mode == "worker":  # Keras' fit fails under MultiWorkerMirroredStrategy: tfvitmae's loop
            history = keras.callbacks.History()
            history.history = train_loop(model, dataset, epochs=2, verbose=0)
        else:
            history = model.fit(dataset, epochs=2, verbose=0)
    np.savez(
        out,
        loss=np.array(history.history["loss"]),
        replicas=strategy.num_replicas_in_sync,
        **{f"w{i}": w.numpy() for i, w in enumerate(model.weights)},
    )


def pretrain_batches(config):
    """The run's data: 4 global batches of 8 images, with fixed masking noise."""
    from tests.helpers import noise_for, pixels

    inputs = {
        "pixel_values": pixels(config, batch=4 * GLOBAL_BATCH, seed=5),
        "noise": noise_for(config, batch=4 * GLOBAL_BATCH, seed=6),
    }
    return tf.data.Dataset.from_tensor_slices(inputs).batch(GLOBAL_BATCH)


def run_pretrain(output_dir, epochs=3, kill_after=None):
    """`pretrain` of the tiny model for `epochs`: one worker of a cluster,
    or single-device outside one (the reference)."""
    import keras

    from tests.helpers import tiny_config
    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.training import pretrain
    from tfvitmae.training.runs import backups

    strategy = (  # before any other TensorFlow op
        tf.distribute.MultiWorkerMirroredStrategy()
        if "TF_CONFIG" in os.environ
        else tf.distribute.get_strategy()
    )
    config = tiny_config(norm_pix_loss=True)
    dataset = pretrain_batches(config)
    if kill_after is not None:
        read = []

        def count_and_maybe_die():
            read.append(1)
            if len(read) >= kill_after and backups(output_dir):
                os.kill(os.getpid(), signal.SIGKILL)
            return 0

        def read_batch(batch):
            with tf.control_dependencies([tf.py_function(count_and_maybe_die, [], tf.int32)]):
                return {k: tf.identity(v) for k, v in batch.items()}

        dataset = dataset.map(read_batch)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = TFViTMAEForPreTraining(config, seed=0)
        pretrain(
            model,
            dataset,
            epochs=epochs,
            batch_size=GLOBAL_BATCH,
            output_dir=output_dir,
            base_lr=0.3,  # AdamW at lr 0.3 * 8 / 256 ~ 0.01: the weights move
            warmup_epochs=1,
            jit_compile=False,
            verbose=2,
        )
    print("finished", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "pretrain":
        args = sys.argv[2:]
        kill = int(args[args.index("--kill-after") + 1]) if "--kill-after" in args else None
        run_pretrain(args[0], kill_after=kill)
    else:
        main(*sys.argv[1:3])
