"""Run a few MAE training steps single-device, mirrored on two logical CPUs, or
as one worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG set by the
caller), and save the final weights. Used by tests/test_loops.py and
tests/test_training.py (through tests/helpers.py).

    python -m tests.distributed_run MODE OUT.npz    MODE: single | mirrored | worker | random-masks
"""

import os
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
    from tfvitmae.loops import train_loop

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


if __name__ == "__main__":
    main(*sys.argv[1:3])
