"""A plain `strategy.run` training loop, for where Keras' `fit` cannot go, and
how workers of a multi-worker run agree on where it starts."""

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import keras
import numpy as np

from ..utils.backend import tensorflow
from . import mesh
from .mesh import WorkerStartError

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("The multi-worker training loop")

if TYPE_CHECKING:
    from ..models.vit_mae import TFViTMAEForPreTraining

__all__ = [
    "WorkerStartError",
    "is_chief",
    "is_multi_worker",
    "start_on_chief",
    "train_loop",
]


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans several workers (where Keras 3 `fit` fails)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process is the one that writes: the `chief` task if the
    cluster has one, else worker 0 (and any process outside a cluster)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _sum_over_workers(value, strategy):
    """`value` summed over the workers (each counted once), on every worker."""
    local_replicas = len(strategy.extended.worker_devices)  # the same on every worker

    @tf.function
    def reduce():
        per_replica = strategy.run(lambda: tf.constant(float(value)))
        return strategy.reduce("SUM", per_replica, axis=None)

    return round(float(reduce()) / local_replicas)


def start_on_chief(
    model: keras.Model,
    start: Callable[[], tuple[str, int]],
    restore: Callable[[int], object],
) -> tuple[str, int]:
    """Start a multi-worker run: the chief decides, every worker restores.

    The chief alone calls `start()`, which prepares the output directory and
    restores the model (see `runs.start_run` and `runs.restore_backup`) and
    returns `(message, epoch)`. The other workers learn the epoch from it and
    call `restore(epoch)` to load the same backup, so all replicas start from
    the same weights. Every step is collective: a worker that fails makes all
    of them raise instead of waiting for it forever (`mesh.start_on_chief`,
    which JAX's processes share).

    Returns:
        `(message, epoch)`: the chief's message (a shorter one on the other
        workers) and the number of epochs already trained.
    """
    strategy = tf.distribute.get_strategy()
    return mesh.start_on_chief(
        model,
        start,
        restore,
        chief=is_chief(strategy),
        total=lambda value: _sum_over_workers(value, strategy),
    )


def train_loop(
    model: "TFViTMAEForPreTraining",
    dataset: tf.data.Dataset,
    epochs: int,
    steps_per_epoch: int | None = None,
    callbacks: Iterable[keras.callbacks.Callback] = (),
    verbose: int | str = 1,
    initial_epoch: int = 0,
) -> dict[str, list[float]]:
    """A plain distributed training loop for a compiled `TFViTMAEForPreTraining`.

    Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy` (its
    symbolic build and metric reduction cannot reduce scalars or dicts across
    workers), so `pretrain` uses this loop there. It runs `strategy.run` over
    the distributed dataset with the model's own (replica-scaled) loss and
    optimizer, and calls the callbacks' batch and epoch hooks. Only the chief
    worker runs the callbacks, so checkpoints are written once, except those
    marked `on_every_worker` (`StopOnNonFiniteLoss`, so that all stop
    together, and `DataEpoch`). `initial_epoch` is the
    number of epochs a restored backup already trained.

    Returns:
        The epoch logs as lists, like Keras' `History.history`: `"loss"`
        (the mean loss per epoch) and what callbacks add (`learning_rate`).
    """
    strategy = tf.distribute.get_strategy()
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("Compile the model with an optimizer before train_loop")
    chief = is_chief(strategy)
    callbacks = [c for c in callbacks if chief or getattr(c, "on_every_worker", False)]
    for callback in callbacks:
        callback.set_model(model)
    distributed = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def train_step(batch):
        def replica_step(data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                loss = model.compute_loss(
                    y_pred=model(x, training=True)
                )  # already scaled by 1/replicas
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss * strategy.num_replicas_in_sync

        return strategy.reduce("MEAN", strategy.run(replica_step, args=(batch,)), axis=None)

    history: dict[str, list[float]] = {"loss": []}
    for callback in callbacks:
        callback.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        losses = []
        for step, batch in enumerate(distributed):
            if steps_per_epoch is not None and step >= steps_per_epoch:
                break
            losses.append(float(train_step(batch)))
            for callback in callbacks:
                callback.on_train_batch_end(step, {"loss": losses[-1]})
        logs = {"loss": float(np.mean(losses)) if losses else float("nan")}
        if verbose and chief:
            print(f"epoch {epoch + 1}/{epochs} - loss: {logs['loss']:.4f}")
        for callback in callbacks:  # one logs dict, as in fit: callbacks add to it
            callback.on_epoch_end(epoch, logs)
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
    for callback in callbacks:
        callback.on_train_end()
    return history
