"""The MAE recipes as Keras `fit` runs: `pretrain`, and `train_classifier`
for the linear probe and fine-tuning."""

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import keras
from keras import ops

from ..utils.backend import in_multi_worker_strategy, is_tf_dataset
from ..utils.types import PathLike, TensorLike
from . import mesh
from .callbacks import (
    DataEpoch,
    InterruptBetweenSteps,
    LogLearningRate,
    ReconstructionCallback,
    SavePretrained,
    StopOnNonFiniteLoss,
    steps_per_pass,
)
from .optimizers import (
    PRETRAIN_BASE_LR,
    check_accum_steps,
    classifier_optimizer,
    mae_optimizer,
    updates_per_epoch,
)
from .runs import check_tensorboard, run_callbacks
from .runs import run_settings as run_settings_of

if TYPE_CHECKING:
    import tensorflow as tf

    from ..models.classification import TFViTMAEForImageClassification
    from ..models.vit_mae import TFViTMAEForPreTraining

__all__ = ["compile_classifier", "pretrain", "train_classifier"]


def _epoch_length(dataset, steps_per_epoch, accum_steps) -> tuple[int, int]:
    """`(steps_per_epoch, passes_per_epoch)`. An epoch is one pass over a
    `make_dataset` pipeline whose pass length is known (its batches by
    default), or a whole number of passes; other data default to their
    length. A resumed run then starts each epoch where an uninterrupted one did.
    Every epoch ends on an optimizer update: `accum_steps` divides its batches."""
    check_accum_steps(accum_steps)
    per_pass = steps_per_pass(dataset)
    if per_pass is None:
        length = _steps_per_epoch(dataset, steps_per_epoch), 1
    elif steps_per_epoch is None:
        length = per_pass, 1
    elif steps_per_epoch < 1 or steps_per_epoch % per_pass:
        raise ValueError(
            f"steps_per_epoch must be a whole number of passes over the make_dataset pipeline "
            f"(one pass is {per_pass} batches, data.steps_per_pass), received {steps_per_epoch}: "
            "epochs that end inside a pass would not resume on the data an uninterrupted run saw"
        )
    else:
        length = steps_per_epoch, steps_per_epoch // per_pass
    try:
        updates_per_epoch(length[0], accum_steps)
    except ValueError as e:
        if per_pass is None:
            raise
        raise ValueError(
            f"{e}. One pass over the make_dataset pipeline is {per_pass} batches "
            "(data.steps_per_pass) and an epoch is a whole number of passes: choose "
            "accum_steps, the batch size or steps_per_epoch to fit"
        ) from None
    return length


def _steps_per_epoch(dataset, steps_per_epoch):
    """`steps_per_epoch`, or the dataset's length when it is known."""
    if steps_per_epoch is not None:
        return steps_per_epoch
    if not is_tf_dataset(dataset):  # a keras.utils.PyDataset, a torch DataLoader, ...
        if not hasattr(dataset, "__len__"):
            raise ValueError("The dataset's length is unknown: pass steps_per_epoch")
        cardinality = len(dataset)
        if cardinality == 0:
            raise ValueError("The dataset is empty: there is nothing to train on")
        return cardinality
    cardinality = int(dataset.cardinality())
    if cardinality == 0:
        raise ValueError("The dataset is empty: there is nothing to train on")
    if cardinality < 0:
        raise ValueError("The dataset's length is unknown or infinite: pass steps_per_epoch")
    return cardinality


@mesh.with_distribution
def pretrain(
    model: "TFViTMAEForPreTraining",
    dataset: "tf.data.Dataset",
    epochs: int,
    batch_size: int,
    output_dir: PathLike,
    steps_per_epoch: int | None = None,
    base_lr: float | None = None,
    warmup_epochs: float = 40,
    weight_decay: float = 0.05,
    jit_compile: bool | str = "auto",
    reconstruction_images: TensorLike | None = None,
    reconstruction_every: int = 1,
    resume: bool | None = None,
    overwrite: bool = False,
    run_settings: dict | None = None,
    log_dir: PathLike | None = None,
    callbacks: Iterable[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
    *,
    accum_steps: int = 1,
    distribution: "keras.distribution.Distribution | None" = None,
) -> keras.callbacks.History:
    """MAE pretraining with the paper's recipe, as a Keras `fit`.

    Create `model` (and run this) inside `strategy.scope()` to train on
    several devices; `batch_size` is then the global batch. Under
    `MultiWorkerMirroredStrategy` the training runs in `train_loop` (Keras'
    `fit` fails there): the chief writes, and on a rerun every worker
    restores the chief's backup from `output_dir`, which they must share.
    On JAX, `distribution` (or one set with `keras.distribution`) does the
    same through Keras' own API, in one process or several (see `mesh`).

    Args:
        model: A `TFViTMAEForPreTraining`.
        dataset: Batches of `pixel_values` (e.g. from `data.make_dataset`).
        epochs, batch_size: Length of training and the global batch size.
        output_dir: Receives the checkpoint (`config.json`,
            `model.weights.h5` and `preprocessor_config.json`, rewritten every
            epoch), reconstruction PNGs, `training_log.csv`, and the run's
            state (`run.json` and `backup/`) to resume from.
        steps_per_epoch: The batches of one epoch. For a `make_dataset`
            pipeline an epoch is one pass over the data (the default,
            `data.steps_per_pass`: with `drop_remainder` off its last batch
            is short) or a whole number of passes, and epoch N reads the
            passes an uninterrupted run read then, resumed or not; other
            data default to their cardinality.
        base_lr: Learning rate per 256 images (default `PRETRAIN_BASE_LR`, 1.5e-4).
        warmup_epochs, weight_decay: The recipe (see `mae_optimizer`).
        jit_compile: Compile the train step with XLA; `"auto"` (default) is the
            model's own choice (`default_jit_compile`).
        reconstruction_images: A few normalised images for the reconstruction
            grid; none is written without them.
        reconstruction_every: Epochs between grids.
        resume: `None` (default) resumes a stopped run with the same
            settings; `True` also continues a finished or different run
            (with more epochs, say); `False` never resumes (see `runs.start_run`).
        overwrite: Start afresh even if `output_dir` holds a run.
        run_settings: More settings that make a run the same run (the data,
            the seed, ...), compared on a rerun besides the model, its
            preprocessing and the recipe.
        log_dir: Also log to TensorBoard there (scalars, the learning rate,
            reconstruction images).
        callbacks: More Keras callbacks.
        accum_steps: Gradient accumulation (MAE's `accum_iter`): each
            optimizer update averages the gradients of `accum_steps`
            batches, so it sees an effective batch of `batch_size *
            accum_steps` images, the learning rate scales with that, and the
            schedule counts updates. It must divide `steps_per_epoch`, so
            that every epoch ends on an update.
        distribution: A `keras.distribution` (JAX) to train under, e.g.
            `mesh.make_distribution("data")`; `model` must have been made
            inside its scope. In several processes each reads its part of
            every batch (`make_dataset(..., process_index=, process_count=)`),
            and only process 0 writes.

    Returns:
        The Keras `History` (from `train_loop`: an object whose `history`
        attribute holds the per-epoch losses, like Keras').
    """
    mesh.prepare(model, dataset, batch_size=batch_size)
    steps_per_epoch, passes_per_epoch = _epoch_length(dataset, steps_per_epoch, accum_steps)
    base_lr = PRETRAIN_BASE_LR if base_lr is None else base_lr
    optimizer = mae_optimizer(
        batch_size,
        steps_per_epoch,
        epochs,
        warmup_epochs=warmup_epochs,
        base_lr=base_lr,
        weight_decay=weight_decay,
        accum_steps=accum_steps,
    )
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    recipe = dict(
        _batches(batch_size, accum_steps),
        steps_per_epoch=steps_per_epoch,
        base_lr=base_lr,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
    )
    all_callbacks = [
        DataEpoch(dataset, passes_per_epoch),  # a resumed run sees the data of its epochs
        StopOnNonFiniteLoss(checkpoint_hint=output_dir),
        SavePretrained(output_dir),
    ]
    bookkeeping, initial_epoch = run_callbacks(
        model,
        output_dir,
        epochs=epochs,
        settings=run_settings_of(model, recipe, run_settings),
        resume=resume,
        overwrite=overwrite,
        log_dir=log_dir,
        verbose=verbose,
    )
    all_callbacks += bookkeeping
    if reconstruction_images is not None:
        all_callbacks.append(
            ReconstructionCallback(
                reconstruction_images,
                output_dir,
                every_n_epochs=reconstruction_every,
                log_dir=log_dir,
            )
        )
    all_callbacks.extend(callbacks)
    fit = functools.partial(_multi_worker_fit, model) if in_multi_worker_strategy() else model.fit
    return _fit_stopping_between_steps(
        fit,
        dataset,
        all_callbacks,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself
    )


def _batches(batch_size: int, accum_steps: int) -> dict:
    """The run record's batch settings: the global batch of a step, the steps
    accumulated into an update, and the effective batch of an update."""
    return dict(
        batch_size=batch_size,
        accum_steps=accum_steps,
        effective_batch_size=batch_size * accum_steps,
    )


def _fit_stopping_between_steps(fit, data, callbacks, **options) -> keras.callbacks.History:
    """`fit(data, callbacks=callbacks, **options)`, with Ctrl-C taking effect
    at the end of the step under way (`InterruptBetweenSteps`); of several
    JAX processes, only the chief writes and shows progress."""
    callbacks = mesh.process_callbacks(callbacks)
    options["verbose"] = mesh.chief_verbosity(options.get("verbose", "auto"))
    with InterruptBetweenSteps() as interrupt:
        return fit(data, callbacks=[*callbacks, interrupt], **options)


def _multi_worker_fit(model, dataset, *, shuffle, **options) -> keras.callbacks.History:
    """`train_loop` in place of `model.fit`, which Keras 3.15 cannot run under
    `MultiWorkerMirroredStrategy`; the same arguments, and a `History`."""
    from .distributed import train_loop  # TensorFlow's

    del shuffle  # the dataset shuffles itself
    history = keras.callbacks.History()
    history.history = train_loop(model, dataset, **options)
    return history


@mesh.with_distribution
def train_classifier(
    model: "TFViTMAEForImageClassification",
    train_data: "tf.data.Dataset",
    epochs: int,
    batch_size: int,
    steps_per_epoch: int | None = None,
    validation_data: "tf.data.Dataset | tuple | None" = None,
    validation_steps: int | None = None,
    label_smoothing: float = 0.0,
    one_hot_labels: bool = False,
    base_lr: float | None = None,
    warmup_epochs: float | None = None,
    weight_decay: float | None = None,
    layer_decay: float | None = 0.65,
    output_dir: PathLike | None = None,
    jit_compile: bool | str = "auto",
    resume: bool | None = None,
    overwrite: bool = False,
    run_settings: dict | None = None,
    log_dir: PathLike | None = None,
    verbose: int | str = "auto",
    *,
    accum_steps: int = 1,
    distribution: "keras.distribution.Distribution | None" = None,
) -> keras.callbacks.History:
    """Linear-probe or fine-tune a `TFViTMAEForImageClassification` with `fit`.

    Args:
        model: The classifier (`linear_probe=True` freezes the encoder).
        train_data: Batches of `(pixel_values, labels)`.
        validation_data: Batches of `(pixel_values, integer labels)`; made
            one-hot here when training on one-hot labels.
        validation_steps: The batches in one pass of a `validation_data`
            dataset whose length tf.data cannot see (image files, which may
            fail to decode): it is then read as one endless stream,
            `validation_steps` batches an epoch, so that Keras neither
            re-reads an exhausted iterator nor warns that the input "ran out
            of data".
        one_hot_labels: Training labels are one-hot (MixUp/CutMix), else integer.
        label_smoothing: Cross-entropy label smoothing (MAE fine-tuning: 0.1).
        output_dir: If given, the model is saved there (`save_pretrained`)
            after every epoch with a finite loss, with the run's state and
            log, as in `pretrain`: a stopped run resumes.
        resume, overwrite, run_settings, log_dir: As in `pretrain` (with an
            `output_dir`).
        accum_steps: Gradient accumulation, as in `pretrain`. The probe's
            BatchNorm still normalises each batch of `batch_size` on its own.
        distribution: As in `pretrain` (`validation_data` too is split).
        Other arguments: see `classifier_optimizer` and `pretrain`.

    Returns:
        The Keras `History`.
    """
    mesh.prepare(model, train_data, validation_data, batch_size=batch_size)
    steps_per_epoch, passes_per_epoch = _epoch_length(train_data, steps_per_epoch, accum_steps)
    if validation_steps is not None:
        if isinstance(validation_steps, bool) or not isinstance(validation_steps, int):
            raise TypeError(f"validation_steps must be an int, received {validation_steps!r}")
        if validation_steps < 1 or not is_tf_dataset(validation_data):
            raise ValueError(
                "validation_steps must be a positive number of batches of a tf.data.Dataset "
                f"validation_data, received {validation_steps} with "
                f"{type(validation_data).__name__}"
            )
        validation_data = cast(Any, validation_data).repeat()
    compile_classifier(
        model,
        batch_size,
        steps_per_epoch,
        epochs,
        label_smoothing=label_smoothing,
        one_hot_labels=one_hot_labels,
        base_lr=base_lr,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        jit_compile=jit_compile,
        accum_steps=accum_steps,
    )
    checked_train, validation_data = _checked_labels(
        train_data, validation_data, model.num_labels, one_hot_labels=one_hot_labels
    )
    if one_hot_labels:
        validation_data = _one_hot(validation_data, model.num_labels)
    callbacks = [
        DataEpoch(train_data, passes_per_epoch),
        StopOnNonFiniteLoss(checkpoint_hint=output_dir),
    ]
    initial_epoch = 0
    if output_dir:
        recipe = dict(
            _batches(batch_size, accum_steps),
            steps_per_epoch=steps_per_epoch,
            base_lr=base_lr,
            warmup_epochs=warmup_epochs,
            weight_decay=weight_decay,
            layer_decay=layer_decay,
            label_smoothing=label_smoothing,
            one_hot_labels=one_hot_labels,
        )
        callbacks.append(SavePretrained(output_dir))
        bookkeeping, initial_epoch = run_callbacks(
            model,
            output_dir,
            epochs=epochs,
            settings=run_settings_of(model, recipe, run_settings),
            resume=resume,
            overwrite=overwrite,
            log_dir=log_dir,
            verbose=verbose,
        )
        callbacks += bookkeeping
    elif log_dir:
        check_tensorboard()
        callbacks += [LogLearningRate(), keras.callbacks.TensorBoard(log_dir)]
    return _fit_stopping_between_steps(
        model.fit,
        checked_train,
        callbacks,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        validation_steps=validation_steps,
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself
    )


def compile_classifier(
    model: "TFViTMAEForImageClassification",
    batch_size: int,
    steps_per_epoch: int,
    epochs: int,
    label_smoothing: float = 0.0,
    one_hot_labels: bool = False,
    base_lr: float | None = None,
    warmup_epochs: float | None = None,
    weight_decay: float | None = None,
    layer_decay: float | None = 0.65,
    jit_compile: bool | str = "auto",
    *,
    accum_steps: int = 1,
) -> None:
    """`model.compile` with `train_classifier`'s optimizer, loss and accuracy metric.

    The learning-rate schedule lasts `steps_per_epoch * epochs / accum_steps`
    updates; the other arguments are as in `train_classifier`. Compile once to
    train the same classifier several times without tracing its step again.
    """
    optimizer = classifier_optimizer(
        model,
        batch_size,
        steps_per_epoch,
        epochs=epochs,
        base_lr=base_lr,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        accum_steps=accum_steps,
    )
    loss, metrics = _classification_loss(
        model.num_labels, one_hot_labels=one_hot_labels, label_smoothing=label_smoothing
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)


def _classification_loss(num_labels, *, one_hot_labels, label_smoothing):
    """`(loss, metrics)` for integer or one-hot (MixUp/CutMix) labels."""
    if one_hot_labels:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        return loss, [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if label_smoothing:
        loss = _SparseSmoothedCrossentropy(num_labels, label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def _checked_labels(train_data, validation_data, num_labels, *, one_hot_labels):
    """`(train_data, validation_data)` whose integer labels are checked to be
    class indices below `num_labels` (`data.labels`): in `tf.data` as they are
    read, at once for `(x, y)` arrays. Other sources are left as they are."""
    from ..data.labels import check_label_batches, check_labels

    if is_tf_dataset(train_data) and not one_hot_labels:
        train_data = check_label_batches(train_data, num_labels)
    if is_tf_dataset(validation_data):
        validation_data = check_label_batches(validation_data, num_labels)
    elif isinstance(validation_data, tuple) and len(validation_data) >= 2:
        labels = check_labels(validation_data[1], num_labels, name="validation labels")
        validation_data = (validation_data[0], labels, *validation_data[2:])
    return train_data, validation_data


def _one_hot(validation_data, depth):
    """Validation batches with integer labels made one-hot, like the training labels."""
    if is_tf_dataset(validation_data):
        import tensorflow as tf

        if validation_data.element_spec[1].shape.rank == 1:  # integer labels
            return validation_data.map(lambda x, y: (x, tf.one_hot(y, depth)))
    return validation_data


class _SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing for integer labels."""

    def __init__(self, num_classes, label_smoothing, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self._loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing, reduction=None
        )

    def call(self, y_true, y_pred):
        labels = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), self.num_classes)
        return self._loss(labels, y_pred)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }
