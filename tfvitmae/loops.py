"""A plain `strategy.run` training loop, for where Keras' `fit` cannot go."""

import keras
import numpy as np
import tensorflow as tf


def is_multi_worker(strategy):
    """Whether `strategy` spans several workers (where Keras 3 `fit` fails)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def train_loop(
    model, dataset, epochs, steps_per_epoch=None, callbacks=(), verbose=1, initial_epoch=0
):
    """A plain distributed training loop for a compiled `TFViTMAEForPreTraining`.

    Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy` (its
    symbolic build and metric reduction cannot reduce scalars or dicts across
    workers), so `pretrain` uses this loop there. It runs `strategy.run` over
    the distributed dataset with the model's own (replica-scaled) loss and
    optimizer, and calls the callbacks' batch and epoch hooks. Only the chief
    worker runs the callbacks, so checkpoints are written once. `initial_epoch`
    is the number of epochs a restored backup already trained.

    Returns:
        `{"loss": [mean loss per epoch]}`.
    """
    strategy = tf.distribute.get_strategy()
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("Compile the model with an optimizer before train_loop")
    resolver = getattr(strategy, "cluster_resolver", None)
    is_chief = (
        resolver is None
        or not resolver.task_type
        or (resolver.task_type in ("chief", "worker") and resolver.task_id == 0)
    )
    callbacks = list(callbacks) if is_chief else []
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

    history = {"loss": []}
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
        history["loss"].append(float(np.mean(losses)))
        if verbose and is_chief:
            print(f"epoch {epoch + 1}/{epochs} - loss: {history['loss'][-1]:.4f}")
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"loss": history["loss"][-1]})
    for callback in callbacks:
        callback.on_train_end()
    return history
