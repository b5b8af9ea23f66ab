"""The MAE training recipe for Keras: schedule, optimizers and callbacks.

Defaults follow the paper and the original code: AdamW with betas (0.9, 0.95),
weight decay 0.05 (none on biases, norms, tokens and position tables),
`lr = base_lr * batch / 256` with `base_lr = 1.5e-4`, linear warmup then a
half-cycle cosine decay per step.
"""

import math
import os

import keras
import numpy as np
from keras import ops

# Variable names (the last path component) that get no weight decay.
NO_WEIGHT_DECAY = ("bias", "gamma", "beta", "cls_token", "mask_token", "position_embeddings", "decoder_pos_embed")
PRETRAIN_BASE_LR = 1.5e-4


def scaled_learning_rate(base_lr, batch_size):
    """The linear scaling rule `base_lr * batch_size / 256`."""
    return base_lr * batch_size / 256


@keras.saving.register_keras_serializable(package="tfvitmae")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_lr`, then half-cycle cosine to `min_lr`.

    Args:
        peak_lr: Learning rate at the end of the warmup.
        warmup_steps: Steps of linear warmup.
        total_steps: Steps in all; the rate reaches `min_lr` here.
        min_lr: Final learning rate.
    """

    def __init__(self, peak_lr, warmup_steps, total_steps, min_lr=0.0):
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"Need 0 <= warmup_steps <= total_steps and total_steps >= 1, "
                f"received warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak_lr * step / max(self.warmup_steps, 1)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip(progress, 0.0, 1.0)
        cosine = self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return dict(peak_lr=self.peak_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                    min_lr=self.min_lr)


@keras.saving.register_keras_serializable(package="tfvitmae")
class LayerDecayAdamW(keras.optimizers.AdamW):
    """AdamW with a learning-rate multiplier per variable (layer-wise lr decay).

    Args:
        lr_multipliers: `{variable path: multiplier}`; variables not listed use 1.
            Decoupled weight decay uses the unscaled rate.
        **kwargs: `keras.optimizers.AdamW` arguments.
    """

    def __init__(self, lr_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})

    def update_step(self, gradient, variable, learning_rate):
        # The TF backend passes the raw tf.Variable, named "<path>:0".
        path = getattr(variable, "path", None) or variable.name.split(":")[0]
        scale = self.lr_multipliers.get(path, 1.0)
        if scale != 1.0:
            learning_rate = ops.cast(learning_rate, variable.dtype) * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = self.lr_multipliers
        return config


def layer_decay_multipliers(model, layer_decay):
    """MAE/BEiT layer-wise decay: block `i` of `L` gets `decay ** (L - i)`, the
    embeddings `decay ** (L + 1)`, and everything after the blocks 1."""
    blocks = model.vit.blocks
    depth = len(blocks)
    multipliers = {}
    for variable in model.vit.embeddings.weights:
        multipliers[variable.path] = layer_decay ** (depth + 1)
    for i, block in enumerate(blocks):
        for variable in block.weights:
            multipliers[variable.path] = layer_decay ** (depth - i)
    return multipliers


def mae_optimizer(
    batch_size,
    steps_per_epoch,
    epochs,
    warmup_epochs=40,
    base_lr=PRETRAIN_BASE_LR,
    weight_decay=0.05,
    beta_1=0.9,
    beta_2=0.95,
    min_lr=0.0,
    model=None,
    layer_decay=None,
):
    """AdamW with the MAE schedule and weight-decay exclusions.

    Args:
        batch_size: The global batch size (for the lr scaling rule).
        steps_per_epoch, epochs: The length of training (the schedule is per step).
        warmup_epochs: Linear warmup length, capped at `epochs`.
        base_lr: Learning rate per 256 images.
        weight_decay, beta_1, beta_2, min_lr: AdamW and schedule settings.
        model, layer_decay: With both, a `LayerDecayAdamW` with layer-wise decay.

    Returns:
        A Keras optimizer. Its `learning_rate` schedule is driven by
        `optimizer.iterations`, so training resumed from a backup continues
        at the same point of the schedule.
    """
    total = max(1, int(steps_per_epoch * epochs))
    warmup = min(int(steps_per_epoch * warmup_epochs), total)
    schedule = WarmupCosineDecay(scaled_learning_rate(base_lr, batch_size), warmup, total, min_lr)
    kwargs = dict(learning_rate=schedule, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2)
    if layer_decay is not None:
        if model is None:
            raise ValueError("layer_decay needs the model, to know its blocks")
        optimizer = LayerDecayAdamW(lr_multipliers=layer_decay_multipliers(model, layer_decay), **kwargs)
    else:
        optimizer = keras.optimizers.AdamW(**kwargs)
    optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


# ------------------------------------------------------------------ callbacks
class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first NaN/inf batch loss with a clear error.

    Raising (rather than `stop_training`) skips the epoch-end callbacks, so a
    `ModelCheckpoint` keeps the last good checkpoint instead of saving NaN weights.
    """

    def __init__(self, checkpoint_hint=None):
        super().__init__()
        self.checkpoint_hint = checkpoint_hint
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            hint = f" The last good checkpoint is in {self.checkpoint_hint}." if self.checkpoint_hint else ""
            raise NonFiniteLossError(
                f"The loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}; training stopped. "
                f"Lower the learning rate or check the inputs.{hint}"
            )


class ReconstructionCallback(keras.callbacks.Callback):
    """Write a PNG grid of MAE reconstructions every `every_n_epochs` epochs.

    Columns: original, masked input, reconstruction, and the reconstruction
    with the visible patches pasted back. The same images and noise are used
    each time, so the grids are comparable across epochs.

    Args:
        pixel_values: A small batch of normalised images in the model's layout.
        output_dir: Where `reconstruction_epoch_{N}.png` files go.
        every_n_epochs: How often to write one.
        mean, std: The normalisation to undo for display.
        seed: Seed of the fixed masking noise.
    """

    def __init__(self, pixel_values, output_dir, every_n_epochs=1, mean=None, std=None, seed=0):
        super().__init__()
        from .data import IMAGENET_MEAN, IMAGENET_STD

        self.pixel_values = np.asarray(pixel_values, "float32")
        self.output_dir = output_dir
        self.every_n_epochs = every_n_epochs
        self.mean = IMAGENET_MEAN if mean is None else mean
        self.std = IMAGENET_STD if std is None else std
        self.seed = seed
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        path = os.path.join(self.output_dir, f"reconstruction_epoch_{epoch + 1}.png")
        write_reconstruction_grid(self.model, self.pixel_values, path, self.mean, self.std, self.seed)
        self.paths.append(path)


def reconstruct(model, pixel_values, seed=0, noise=None):
    """Run a `TFViTMAEForPreTraining` and return display-ready arrays.

    Returns:
        `(masked, reconstruction, pasted)`, each channels-last float in the
        normalised pixel space: the input with removed patches zeroed, the
        predicted image (see `reconstruct_image`), and the prediction with the
        visible patches replaced by the input's.
    """
    pixel_values = np.asarray(pixel_values, "float32")
    if noise is None:
        noise = np.random.default_rng(seed).random((len(pixel_values), model.config.num_patches)).astype("float32")
    out = model(pixel_values, noise=noise)
    height, width = pixel_values.shape[2:] if model.data_format == "channels_first" else pixel_values.shape[1:3]
    visible = model.patchify(pixel_values) * (1.0 - out.mask[..., None])

    def channels_last(x):
        x = np.asarray(x)
        return np.transpose(x, (0, 2, 3, 1)) if model.data_format == "channels_first" else x

    return (
        channels_last(model.unpatchify(visible, (height, width))),
        channels_last(model.reconstruct_image(pixel_values, out.logits)),
        channels_last(model.reconstruct_image(pixel_values, out.logits, out.mask)),
    )


def write_reconstruction_grid(model, pixel_values, path, mean, std, seed=0):
    """Write the original / masked / reconstruction / pasted grid as a PNG."""
    import tensorflow as tf

    masked, reconstruction, pasted = reconstruct(model, pixel_values, seed=seed)
    original = np.asarray(pixel_values, "float32")
    if model.data_format == "channels_first":
        original = np.transpose(original, (0, 2, 3, 1))
    channels = original.shape[-1]
    from .data import channel_stats

    mean, std = channel_stats(mean, std, channels)
    zoom = max(1, 96 // original.shape[1])  # small images are enlarged (nearest) to stay visible
    rows = []
    for columns in zip(original, masked, reconstruction, pasted):
        tiles = [np.clip((c * std + mean) * 255, 0, 255).repeat(zoom, 0).repeat(zoom, 1) for c in columns]
        pad = np.full((tiles[0].shape[0], 2, channels), 255.0)
        rows.append(np.concatenate(sum(([t, pad] for t in tiles), [])[:-1], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], channels), 255.0))
    grid = np.concatenate(rows[:-1], axis=0).astype("uint8")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(grid))
    return path


class SavePretrained(keras.callbacks.Callback):
    """Save the model with `save_pretrained(directory)` at every epoch end, so the
    latest good weights load with `from_pretrained(directory)`."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return  # keep the last good checkpoint
        self.model.save_pretrained(self.directory)


def _steps_per_epoch(dataset, steps_per_epoch):
    """`steps_per_epoch`, or the dataset's length when it is known."""
    if steps_per_epoch is not None:
        return steps_per_epoch
    cardinality = int(dataset.cardinality())
    if cardinality <= 0:
        raise ValueError("The dataset's length is unknown or infinite: pass steps_per_epoch")
    return cardinality


def _is_multi_worker(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def train_loop(model, dataset, epochs, steps_per_epoch=None, callbacks=(), verbose=1):
    """A plain distributed training loop for a compiled `TFViTMAEForPreTraining`.

    Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy` (its
    symbolic build and metric reduction cannot reduce scalars or dicts across
    workers), so `pretrain` uses this loop there. It runs `strategy.run` over
    the distributed dataset with the model's own (replica-scaled) loss and
    optimizer, and calls the callbacks' batch and epoch hooks. Only the chief
    worker runs the callbacks, so checkpoints are written once.

    Returns:
        `{"loss": [mean loss per epoch]}`.
    """
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    optimizer = model.optimizer
    if optimizer is None:
        raise ValueError("Compile the model with an optimizer before train_loop")
    resolver = getattr(strategy, "cluster_resolver", None)
    is_chief = resolver is None or not resolver.task_type or (resolver.task_type in ("chief", "worker")
                                                              and resolver.task_id == 0)
    callbacks = list(callbacks) if is_chief else []
    for callback in callbacks:
        callback.set_model(model)
    distributed = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def train_step(batch):
        def replica_step(data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                loss = model.compute_loss(y_pred=model(x, training=True))  # already scaled by 1/replicas
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss * strategy.num_replicas_in_sync

        return strategy.reduce("MEAN", strategy.run(replica_step, args=(batch,)), axis=None)

    history = {"loss": []}
    for callback in callbacks:
        callback.on_train_begin()
    for epoch in range(epochs):
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


def pretrain(
    model,
    dataset,
    epochs,
    batch_size,
    output_dir,
    steps_per_epoch=None,
    base_lr=PRETRAIN_BASE_LR,
    warmup_epochs=40,
    weight_decay=0.05,
    jit_compile=False,
    reconstruction_images=None,
    reconstruction_every=1,
    resume=True,
    callbacks=(),
    verbose="auto",
):
    """MAE pretraining with the paper's recipe, as a Keras `fit`.

    Create `model` (and run this) inside `strategy.scope()` to train on
    several devices; `batch_size` is then the global batch. Under
    `MultiWorkerMirroredStrategy` the training runs in `train_loop` (Keras'
    `fit` fails there), without `resume`.

    Args:
        model: A `TFViTMAEForPreTraining`.
        dataset: Batches of `pixel_values` (e.g. from `data.make_dataset`).
        epochs, batch_size: Length of training and the global batch size.
        output_dir: Receives the checkpoint (`config.json` + `model.weights.h5`,
            rewritten every epoch), reconstruction PNGs and a `backup/` folder
            used to resume an interrupted run.
        steps_per_epoch: Defaults to the dataset's cardinality.
        base_lr, warmup_epochs, weight_decay: The recipe (see `mae_optimizer`).
        jit_compile: Compile the train step with XLA.
        reconstruction_images: A few normalised images for the reconstruction
            grid; none is written without them.
        reconstruction_every: Epochs between grids.
        resume: Continue from `output_dir/backup` if a previous run left one.
        callbacks: More Keras callbacks.

    Returns:
        The Keras `History` (from `train_loop`: an object whose `history`
        attribute holds the per-epoch losses, like Keras').
    """
    import tensorflow as tf

    steps_per_epoch = _steps_per_epoch(dataset, steps_per_epoch)
    os.makedirs(output_dir, exist_ok=True)
    optimizer = mae_optimizer(batch_size, steps_per_epoch, epochs, warmup_epochs, base_lr, weight_decay)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    all_callbacks = [StopOnNonFiniteLoss(checkpoint_hint=output_dir), SavePretrained(output_dir)]
    if resume:
        all_callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")))
    if reconstruction_images is not None:
        all_callbacks.append(
            ReconstructionCallback(reconstruction_images, output_dir, every_n_epochs=reconstruction_every)
        )
    all_callbacks.extend(callbacks)
    if _is_multi_worker(tf.distribute.get_strategy()):
        history = keras.callbacks.History()
        loop_callbacks = [c for c in all_callbacks if not isinstance(c, keras.callbacks.BackupAndRestore)]
        history.history = train_loop(model, dataset, epochs, steps_per_epoch, loop_callbacks, verbose=verbose)
        return history
    return model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=all_callbacks,
                     verbose=verbose, shuffle=False)  # the dataset shuffles itself


FINETUNE_BASE_LR = 5e-4  # MAE, ViT-B (1e-3 for ViT-L/H)
PROBE_BASE_LR = 0.1


def classifier_optimizer(model, batch_size, steps_per_epoch, epochs, base_lr=None, warmup_epochs=None,
                         weight_decay=None, layer_decay=0.65):
    """The MAE downstream optimizers.

    Linear probe (`model.linear_probe`): SGD with momentum 0.9, no weight
    decay, `base_lr` 0.1 per 256 images, warmup 10 epochs, cosine. (MAE uses
    LARS, which Keras does not ship; SGD with momentum is the usual stand-in.)
    Fine-tuning: AdamW (betas 0.9/0.999, weight decay 0.05), `base_lr` 5e-4
    per 256 images, warmup 5 epochs, cosine, layer-wise lr decay 0.65.
    """
    total = max(1, int(steps_per_epoch * epochs))
    if model.linear_probe:
        warmup = min(int(steps_per_epoch * (10 if warmup_epochs is None else warmup_epochs)), total)
        lr = scaled_learning_rate(PROBE_BASE_LR if base_lr is None else base_lr, batch_size)
        return keras.optimizers.SGD(WarmupCosineDecay(lr, warmup, total), momentum=0.9)
    return mae_optimizer(
        batch_size, steps_per_epoch, epochs,
        warmup_epochs=5 if warmup_epochs is None else warmup_epochs,
        base_lr=FINETUNE_BASE_LR if base_lr is None else base_lr,
        weight_decay=0.05 if weight_decay is None else weight_decay,
        beta_2=0.999, model=model, layer_decay=layer_decay,
    )


def train_classifier(model, train_data, epochs, batch_size, steps_per_epoch=None, validation_data=None,
                     label_smoothing=0.0, one_hot_labels=False, base_lr=None, warmup_epochs=None,
                     weight_decay=None, layer_decay=0.65, output_dir=None, jit_compile=False, verbose="auto"):
    """Linear-probe or fine-tune a `TFViTMAEForImageClassification` with `fit`.

    Args:
        model: The classifier (`linear_probe=True` freezes the encoder).
        train_data: Batches of `(pixel_values, labels)`.
        one_hot_labels: Labels are one-hot (MixUp/CutMix), else integer.
        label_smoothing: Cross-entropy label smoothing (MAE fine-tuning: 0.1).
        output_dir: If given, the model is saved there (`save_pretrained`)
            after every epoch with a finite loss.
        Other arguments: see `classifier_optimizer` and `pretrain`.

    Returns:
        The Keras `History`.
    """
    steps_per_epoch = _steps_per_epoch(train_data, steps_per_epoch)
    optimizer = classifier_optimizer(model, batch_size, steps_per_epoch, epochs, base_lr, warmup_epochs,
                                     weight_decay, layer_decay)
    if one_hot_labels:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    elif label_smoothing:
        loss = _SparseSmoothedCrossentropy(model.num_labels, label_smoothing)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    callbacks = [StopOnNonFiniteLoss(checkpoint_hint=output_dir)]
    if output_dir:
        callbacks.append(SavePretrained(output_dir))
    return model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                     callbacks=callbacks, verbose=verbose, shuffle=False)  # the dataset shuffles itself


class _SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing for integer labels."""

    def __init__(self, num_classes, label_smoothing, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self._loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing,
                                                          reduction=None)

    def call(self, y_true, y_pred):
        labels = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), self.num_classes)
        return self._loss(labels, y_pred)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}
