"""Keras' distribution API on JAX over 4 virtual CPU devices, for
`tests/models/test_sharding.py`, in a process of its own so that the rest of
the suite keeps TensorFlow and one device:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 KERAS_BACKEND=jax \\
        python -m tests.sharded_run OUT

One device, `DataParallel` over the 4 devices and `ModelParallel` on a 2x2
mesh (`get_layout_map`) train the same tiny model from the same weights on
the same two batches (fixed masking noise, two SGD steps). The model-parallel
one saves its files, which then load on one device and on a 1x4 mesh.
Writes `OUT/report.json`, with what it measured, and the files beside it, for
that test to judge.
"""

import contextlib
import json
import os
import sys

sys.modules["tensorflow"] = None  # JAX alone: `import tensorflow` raises ImportError

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfvitmae import TFViTMAEForPreTraining  # noqa: E402

from .helpers import noise_for, pixels, tiny_config  # noqa: E402

# XLA without most of its optimizations compiles this file's steps in half the
# time; every run here shares the setting, and the partitioning of sharded
# computations is not an optimization: it always runs.
jax.config.update("jax_disable_most_optimizations", True)

GLOBAL_BATCH = 8
# Heads and MLP widths that 2 and 4 divide, in the encoder and in the decoder.
CONFIG = dict(num_hidden_layers=1, decoder_num_attention_heads=4, norm_pix_loss=True)
KERNELS = (
    "attention/qkv/kernel",
    "attention/output/kernel",
    "mlp/intermediate/kernel",
    "mlp/output/kernel",
)


def config():
    return tiny_config(**CONFIG)


def batches():
    """Two global batches of images, with fixed masking noise."""
    c = config()
    return {
        "pixel_values": pixels(c, batch=2 * GLOBAL_BATCH, seed=5),
        "noise": noise_for(c, batch=2 * GLOBAL_BATCH, seed=6),
    }


def model_parallel(shape):
    """`ModelParallel` on a `(batch, model)` mesh of `shape`, with the model's layout map."""
    mesh = keras.distribution.DeviceMesh(shape, ["batch", "model"], devices=jax.devices())
    layout_map = TFViTMAEForPreTraining.get_layout_map(mesh, config=config())
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def scope(distribution):
    return distribution.scope() if distribution else contextlib.nullcontext()


def load(weights):
    model = TFViTMAEForPreTraining(config(), seed=0)
    model.load_weights(weights)
    return model


def train(weights, distribution=None):
    """The model with `weights` after two SGD steps, under `distribution`,
    and the mean loss of the two steps."""
    with scope(distribution):
        model = load(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        history = model.fit(batches(), batch_size=GLOBAL_BATCH, shuffle=False, verbose=0)
    return model, float(history.history["loss"][0])


def logits(model):
    """The reconstruction logits of the first batch (one compiled call)."""
    inputs = {k: v[:GLOBAL_BATCH] for k, v in batches().items()}
    return {"logits": model.predict(inputs, batch_size=GLOBAL_BATCH, verbose=0)["logits"]}


def weights(model):
    """`{name: array}` in transformers' layout (the same names on every mesh)."""
    return model.pytorch_state_dict()


def max_diff(a, b):
    return max(float(np.abs(a[k].astype("float64") - b[k]).max()) for k in a)


def sharding(model):
    """`{"<stack>/<kernel>": {"spec", "shape", "device_shape"}}` of block 0's kernels."""
    variables = {v.path.split("/", 1)[1]: v for v in model.weights}
    found = {}
    for stack in ("vit", "decoder"):
        for kernel in KERNELS:
            value = variables[f"{stack}/layer_0/{kernel}"].value
            found[f"{stack}/{kernel}"] = dict(
                spec=[None if axis is None else str(axis) for axis in value.sharding.spec],
                shape=list(value.shape),
                device_shape=list(value.addressable_shards[0].data.shape),
            )
    return found


def main(out):
    report = {"devices": len(jax.devices()), "backend": keras.backend.backend()}
    keras.utils.set_random_seed(0)
    init = os.path.join(out, "init.weights.h5")
    TFViTMAEForPreTraining(config(), seed=0).save_weights(init)

    one, one_loss = train(init)
    one.save_weights(os.path.join(out, "one_device.weights.h5"))
    one.save_pretrained(os.path.join(out, "one_device"), pytorch=True)
    one_weights = weights(one)

    data_parallel = keras.distribution.DataParallel(devices=jax.devices())
    replicas, replicas_loss = train(init, data_parallel)
    report["data_parallel"] = dict(
        loss=[one_loss, replicas_loss],
        max_weight_diff=max_diff(weights(replicas), one_weights),
        replicated=all(v.value.sharding.is_fully_replicated for v in replicas.weights),
        max_update=max_diff(one_weights, weights(load(init))),
    )

    sharded, sharded_loss = train(init, model_parallel((2, 2)))
    report["model_parallel"] = dict(
        loss=[one_loss, sharded_loss],
        max_weight_diff=max_diff(weights(sharded), one_weights),
        kernels=sharding(sharded),
    )
    sharded_file = os.path.join(out, "model_parallel.weights.h5")
    sharded_folder = os.path.join(out, "model_parallel")
    sharded.save_weights(sharded_file)
    sharded.save_pretrained(sharded_folder, pytorch=True)
    sharded.save_pretrained(os.path.join(out, "model_parallel_keras"))  # .weights.h5 inside
    sharded_weights = weights(sharded)

    # The sharded run's files on one device, and on a mesh of another shape
    # (a model axis of 4: one head of each attention per device).
    report["loads"] = {}
    for name, distribution in (("one_device", None), ("1x4", model_parallel((1, 4)))):
        with scope(distribution):
            from_keras = load(sharded_file)  # Keras' load_weights
            from_folder = TFViTMAEForPreTraining.from_pretrained(
                os.path.join(out, "model_parallel_keras")
            )
            from_pytorch = TFViTMAEForPreTraining.from_pretrained(sharded_folder)
        report["loads"][name] = found = dict(
            keras=max_diff(weights(from_keras), sharded_weights),
            keras_folder=max_diff(weights(from_folder), sharded_weights),
            pytorch=max_diff(weights(from_pytorch), sharded_weights),
        )
        if distribution is None:  # it computes what the one-device run's model does
            found["logits"] = max_diff(logits(from_keras), logits(one))
        else:
            found["kernels"] = sharding(from_pytorch)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
