"""What each `tfvitmae` command does, given its parsed arguments.

Each function takes the `argparse` namespace of its sub-command and returns
the exit code; heavy imports happen inside, so the command line starts fast.
"""

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.classification import TFViTMAEForImageClassification
    from ..models.config import ViTMAEConfig
    from ..models.vit_mae import TFViTMAEForPreTraining, TFViTMAEPreTrainedModel

__all__ = [
    "check_output_paths",
    "convert",
    "demo",
    "export",
    "interrupted",
    "jit_compile",
    "load_any_model",
    "load_augmenter",
    "load_pretraining_model",
    "pretrain",
    "reconstruct",
    "run_options",
    "set_mixed_precision",
    "start_distribution",
    "start_training",
    "train_classifier",
]


# The arguments that name something a command writes: `(attribute, as the
# user wrote it)`. Each is a folder, except where `_is_output_file` says a file.
_OUTPUTS = (
    ("output_dir", "--output-dir"),
    ("log_dir", "--log-dir"),
    ("export_base", "EXPORT_BASE"),
    ("dst", "DST"),
    ("output", "--output"),
)


def _is_output_file(args: argparse.Namespace, attribute: str) -> bool:
    return attribute == "output" or (
        attribute == "export_base" and getattr(args, "format", None) in ("onnx", "litert")
    )


def check_output_paths(args: argparse.Namespace) -> None:
    """Refuse an output folder that is a file (or lies under one), and an output
    file that is a folder, before a command reads data or builds a model."""
    from ..utils.files import check_folder_path

    for attribute, option in _OUTPUTS:
        path = getattr(args, attribute, None)
        if path is None:
            continue
        folder = path
        if _is_output_file(args, attribute):
            if os.path.isdir(path):
                raise IsADirectoryError(f"{option} {path} is a folder; expected a file to write")
            folder = os.path.dirname(os.path.abspath(path))
        try:
            check_folder_path(folder)
        except NotADirectoryError as e:
            raise NotADirectoryError(f"{option} {path}: {e}") from None


def interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    """What a command stopped by Ctrl-C says: for a training run, the last
    complete backup and the command that resumes it."""
    if args.command not in ("pretrain", "probe", "finetune"):
        return "interrupted"
    import shlex

    from ..training.runs import backups

    # Rerunning the same command resumes a stopped run; with --overwrite
    # (or an abbreviation of it) it would start afresh instead.
    again = [a for a in argv if not (a.startswith("--ov") and "--overwrite".startswith(a))]
    resume = f"tfvitmae {shlex.join(again)}"
    found = backups(args.output_dir) if os.path.isdir(args.output_dir) else []
    if not found:
        return f"interrupted before the first epoch was backed up; start again with: {resume}"
    epoch, state = found[0]
    return (
        f"interrupted; epoch {epoch} is backed up in {os.path.dirname(state)}; resume with: "
        f"{resume}"
    )


def set_mixed_precision(policy: str) -> None:
    """Set Keras' global dtype policy from `--mixed-precision` (`"none"` leaves it)."""
    if policy != "none":
        import keras

        keras.config.set_dtype_policy(
            {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[policy]
        )


def start_training(args: argparse.Namespace) -> None:
    """What a training command sets before it builds or loads a model: the
    mixed precision policy, the processes and distribution
    (`start_distribution`), and every random seed (Python, NumPy, the backend
    and Keras' global generator, which draws the new weights) from `--seed`."""
    import keras

    set_mixed_precision(args.mixed_precision)
    start_distribution(args)
    keras.utils.set_random_seed(args.seed)


def start_distribution(args: argparse.Namespace) -> None:
    """Join the processes (`--coordinator-address`, `--num-processes`,
    `--process-id` or the environment) and set `--distribution` for the rest
    of the command: the model is made inside it (see `training.mesh`)."""
    import keras

    from ..training import mesh

    kind = args.distribution or ("data" if args.num_processes else None)
    if args.mesh is not None and kind != "model":
        raise ValueError("--mesh applies to --distribution model")
    if kind is not None and getattr(args, "multi_gpu", False):
        raise ValueError("--multi-gpu (TensorFlow's) and --distribution (JAX's) exclude each other")
    try:  # no JAX, or no coordinator: a message, not a traceback
        several = mesh.initialize(args.coordinator_address, args.num_processes, args.process_id)
        kind = kind or ("data" if several else None)
        if kind is None:
            return
        from ..models.pretrained import TFViTMAEPreTrainedModel

        distribution = mesh.make_distribution(kind, args.mesh, TFViTMAEPreTrainedModel)
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    keras.distribution.set_distribution(distribution)


def _process_part() -> dict:
    """`make_dataset`'s arguments that read this process's part of every batch."""
    from ..training import mesh

    count = mesh.process_count()
    return {} if count == 1 else dict(process_index=mesh.process_index(), process_count=count)


def _saved(what: str, output_dir: str) -> str:
    """`"<what> saved in <output_dir>"`, or on a process other than the chief,
    which writes nothing, who saved it."""
    from ..training import mesh

    if mesh.is_chief():
        return f"{what} saved in {output_dir}"
    return f"process {mesh.process_index()} done; process 0 saved the {what} in {output_dir}"


def _distributed() -> bool:
    """Whether a `keras.distribution` splits the batches (`--distribution`)."""
    import keras

    return keras.distribution.distribution() is not None


def jit_compile(args: argparse.Namespace) -> bool | str:
    """`compile`'s `jit_compile` from `--jit-compile`/`--no-jit-compile`:
    `"auto"` (the model's own choice) when neither is given."""
    return "auto" if args.jit_compile is None else args.jit_compile


def run_options(args: argparse.Namespace, *semantic: str) -> dict:
    """The `pretrain`/`train_classifier` run arguments from the command line:
    resume/overwrite, the TensorBoard folder, and the settings (the data and
    the `semantic` arguments) that make a rerun the same run."""
    log_dir = args.log_dir or (os.path.join(args.output_dir, "logs") if args.tensorboard else None)
    settings = {"data": os.path.abspath(args.data), "augment": not args.no_augment}
    settings.update({name: getattr(args, name) for name in ("seed", "augmenter", *semantic)})
    return dict(
        resume=True if args.resume else None,
        overwrite=args.overwrite,
        run_settings=settings,
        log_dir=log_dir,
    )


def load_augmenter(spec: str | None) -> Callable | None:
    """The layer made by `MODULE:FACTORY` (`--augmenter`), or `None`."""
    if not spec:
        return None
    import importlib

    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise ValueError(f"--augmenter must be MODULE:FACTORY, received {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"--augmenter {spec}: cannot load {factory_name} from {module_name}: {e}"
        ) from None
    augmenter = factory()
    if not callable(augmenter):
        raise ValueError(
            f"--augmenter {spec}: {factory_name}() must return a layer or a function, "
            f"received {type(augmenter).__name__}"
        )
    return augmenter


def load_pretraining_model(spec: str, args: argparse.Namespace) -> "TFViTMAEForPreTraining":
    """A `TFViTMAEForPreTraining` from a preset name or a checkpoint."""
    from ..models.config import PRESETS, ViTMAEConfig
    from ..models.vit_mae import TFViTMAEForPreTraining

    overrides = {
        k: v
        for k, v in dict(
            image_size=args.image_size,
            patch_size=args.patch_size,
            num_channels=args.num_channels,
            mask_ratio=args.mask_ratio,
            norm_pix_loss=args.norm_pix_loss,
        ).items()
        if v is not None
    }
    if spec in PRESETS:
        model = TFViTMAEForPreTraining(ViTMAEConfig.from_preset(spec, **overrides), seed=args.seed)
    else:
        model = TFViTMAEForPreTraining.from_pretrained(spec, seed=args.seed, **overrides)
    model.remat = args.remat
    if args.image_mean or args.image_std:  # recorded in the saved preprocessor_config.json
        processor = model.image_processor
        model.image_processor = processor.copy(
            image_mean=args.image_mean or processor.image_mean,
            image_std=args.image_std or processor.image_std,
        )
    return model


def pretrain(args: argparse.Namespace) -> int:
    """`tfvitmae pretrain`: MAE pretraining on the folder `args.data`."""
    import tensorflow as tf

    from ..training import mesh
    from ..training.recipes import pretrain as run_pretraining

    start_training(args)
    strategy = tf.distribute.MirroredStrategy() if args.multi_gpu else tf.distribute.get_strategy()
    with strategy.scope():
        model = load_pretraining_model(args.model, args)
        dataset, info = _pretraining_dataset(args, model)
        n = info["num_examples"]
        _print_pretraining_summary(
            args, model.config, info=info, replicas=strategy.num_replicas_in_sync * mesh.replicas()
        )
        samples = _reconstruction_samples(args, model, n)
        history = run_pretraining(
            model,
            dataset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            accum_steps=args.accum_steps,
            output_dir=args.output_dir,  # an epoch: one pass, its full batches
            base_lr=args.base_lr,
            warmup_epochs=args.warmup_epochs,
            weight_decay=args.weight_decay,
            jit_compile=jit_compile(args),
            reconstruction_images=next(iter(samples)).numpy()
            if args.reconstruction_every
            else None,
            reconstruction_every=args.reconstruction_every or 1,
            **run_options(args, "model", "mixed_precision"),
        )
    print(f"final loss {history.history['loss'][-1]:.4f}; {_saved('model', args.output_dir)}")
    return 0


def _pretraining_dataset(args: argparse.Namespace, model: "TFViTMAEForPreTraining") -> tuple:
    """The repeated, augmented training batches of `args.data`, and their `info`."""
    from ..data.pipeline import make_dataset

    return make_dataset(
        args.data,
        batch_size=args.batch_size,
        processor=model.image_processor,
        augment=not args.no_augment,
        augmenter=load_augmenter(args.augmenter),
        seed=args.seed,
        num_channels=model.config.num_channels,
        repeat=True,
        drop_remainder=True,
        return_info=True,
        progress=sys.stderr,
        **_process_part(),
    )


def _print_pretraining_summary(
    args: argparse.Namespace, config: "ViTMAEConfig", info: dict, replicas: int
) -> None:
    if info["skipped"]:
        print(f"skipped {info['skipped']} files that are not images")
    print(
        f"pretraining {config.hidden_size}-wide, {config.num_hidden_layers}-block MAE on "
        f"{info['num_examples']} images "
        f"({config.image_hw[0]}x{config.image_hw[1]}) for {args.epochs} epochs, "
        f"{replicas} replica(s)"
        + (
            f", {args.accum_steps} batches of {args.batch_size} per update "
            f"(effective batch {args.accum_steps * args.batch_size})"
            if args.accum_steps > 1
            else ""
        )
    )


def _reconstruction_samples(args: argparse.Namespace, model: "TFViTMAEForPreTraining", n: int):
    """Up to 4 of the images, unaugmented, for the reconstruction PNGs."""
    from ..data.pipeline import make_dataset

    return make_dataset(
        args.data,
        batch_size=min(n, 4),
        processor=model.image_processor,
        augment=False,
        shuffle=False,
        num_channels=model.config.num_channels,
        verify_images=False,  # checked above; broken files are dropped here too
    )


def train_classifier(args: argparse.Namespace, linear_probe: bool) -> int:
    """`tfvitmae probe` (`linear_probe=True`) or `tfvitmae finetune`."""
    from ..training.recipes import train_classifier as run_training

    start_training(args)
    train_split, val_split, class_names, skipped = _split_classes(args)
    train_paths, val_paths = train_split[0], val_split[0]
    model = _classifier_model(args, class_names, linear_probe=linear_probe)
    mixing = bool(not linear_probe and (args.mixup or args.cutmix))
    train, val, val_steps = _classifier_datasets(
        args,
        model,
        train_split=train_split,
        val_split=val_split,
        num_classes=len(class_names),
        mixing=mixing,
    )
    print(
        f"{'linear probe' if linear_probe else 'fine-tuning'}: {len(train_paths)} training and "
        f"{len(val_paths)} "
        f"validation images, {len(class_names)} classes"
        + (f"; skipped {skipped} non-image files" if skipped else "")
    )
    unvalidated = [name for i, name in enumerate(class_names) if i not in set(val_split[1])]
    if val_paths and unvalidated:
        print(
            f"note: {len(unvalidated)} of the {len(class_names)} classes have no validation image "
            f"(a class needs 2 images to hold one out): {', '.join(unvalidated[:10])}"
            + (f" and {len(unvalidated) - 10} more" if len(unvalidated) > 10 else "")
        )
    history = run_training(
        model,
        train,
        epochs=args.epochs,
        batch_size=args.batch_size,  # an epoch: one pass over the images that decode
        accum_steps=args.accum_steps,
        validation_data=val,
        validation_steps=val_steps,
        label_smoothing=0.0 if linear_probe else args.label_smoothing,
        one_hot_labels=mixing,
        base_lr=args.base_lr,
        layer_decay=None if linear_probe else args.layer_decay,
        output_dir=args.output_dir,
        jit_compile=jit_compile(args),
        **run_options(
            args,
            "model",
            "val_fraction",
            "mixed_precision",
            *(() if linear_probe else ("mixup", "cutmix", "drop_path")),
        ),
    )
    if val is not None:
        print(
            f"validation accuracy {history.history['val_accuracy'][-1]:.2%} on {len(val_paths)} "
            f"images of {len(class_names) - len(unvalidated)} of the {len(class_names)} classes"
        )
    print(_saved("classifier", args.output_dir))
    return 0


def _split_classes(args: argparse.Namespace) -> tuple:
    """`((train_paths, train_labels), (val_paths, val_labels), class_names, skipped)`
    of the class folders in `args.data`, checked against `--batch-size`."""
    from ..data import list_image_files, split_files
    from ..data.folders import check_labelled

    paths, labels, class_names, skipped = list_image_files(args.data, progress=sys.stderr)
    check_labelled(paths, labels, args.data)
    if len(class_names) < 2:
        raise ValueError(
            f"{args.data} needs one sub-folder per class (at least 2), found {class_names}"
        )
    train_split, val_split = split_files(
        paths, labels, val_fraction=args.val_fraction, seed=args.seed
    )
    if len(train_split[0]) < args.batch_size:
        raise ValueError(
            f"--batch-size {args.batch_size} is larger than the training split "
            f"({len(train_split[0])})"
        )
    return train_split, val_split, class_names, skipped


def _classifier_model(
    args: argparse.Namespace, class_names: list, linear_probe: bool
) -> "TFViTMAEForImageClassification":
    """A new classifier head on the pretrained encoder `args.model`."""
    from ..models.classification import TFViTMAEForImageClassification

    model = TFViTMAEForImageClassification.from_encoder(
        args.model,
        num_labels=len(class_names),
        linear_probe=linear_probe,
        pooling=args.pooling,
        drop_path_rate=0.0 if linear_probe else args.drop_path,
        id2label=dict(enumerate(class_names)),
    )
    model.remat = args.remat
    return model


def _classifier_datasets(
    args: argparse.Namespace,
    model: "TFViTMAEForImageClassification",
    train_split: tuple,
    val_split: tuple,
    num_classes: int,
    mixing: bool,
) -> tuple:
    """`(train, val, val_steps)`: labelled batches, and the batches in one pass
    of `val` (both `None` when nothing is held out)."""
    from ..data import make_dataset

    (train_paths, train_labels), (val_paths, val_labels) = train_split, val_split
    whole = _distributed()  # the devices split every batch: whole batches only
    if whole and 0 < len(val_paths) < args.batch_size:
        raise ValueError(
            f"--distribution evaluates whole batches, and the validation split ({len(val_paths)} "
            f"images) is smaller than --batch-size {args.batch_size}: raise --val-fraction"
        )
    train = make_dataset(
        train_paths,
        batch_size=args.batch_size,
        processor=model.image_processor,
        labels=train_labels,
        with_labels=True,
        augment=not args.no_augment,
        augmenter=load_augmenter(args.augmenter),
        seed=args.seed,
        num_channels=model.config.num_channels,
        repeat=True,
        num_classes=num_classes,
        mixup_alpha=args.mixup if mixing else 0.0,
        cutmix_alpha=args.cutmix if mixing else 0.0,
        drop_remainder=whole,
        **_process_part(),
    )
    if not val_paths:
        return train, None, None
    val, info = make_dataset(
        val_paths,
        batch_size=args.batch_size,
        processor=model.image_processor,
        labels=val_labels,
        with_labels=True,
        augment=False,
        shuffle=False,
        num_channels=model.config.num_channels,
        return_info=True,
        drop_remainder=whole,
        **_process_part(),
    )
    batches = (math.floor if whole else math.ceil)(info["num_examples"] / args.batch_size)
    return train, val, batches


def reconstruct(args: argparse.Namespace) -> int:
    """`tfvitmae reconstruct`: a PNG or JPEG grid of MAE reconstructions of `args.images`."""
    from ..models.vit_mae import TFViTMAEForPreTraining
    from ..training.visualization import check_image_path, write_reconstruction_grid

    check_image_path(args.output)
    _check_output_is_no_input(args.output, args.images)

    overrides = {} if args.mask_ratio is None else {"mask_ratio": args.mask_ratio}
    model = TFViTMAEForPreTraining.from_pretrained(
        args.model, data_format="channels_last", **overrides
    )
    config = model.config
    pixel_values = model.image_processor(args.images, data_format="channels_last")["pixel_values"]
    path = write_reconstruction_grid(model, pixel_values, args.output, seed=args.seed)
    print(
        f"wrote {path}: one row per image; columns original, masked ({config.mask_ratio:.0%}), "
        "reconstruction, "
        "reconstruction with the visible patches"
    )
    return 0


def _check_output_is_no_input(output: str, inputs: list[str]) -> None:
    """Refuse an output file that is one of the input files."""
    for image in inputs:
        same = os.path.realpath(image) == os.path.realpath(output)
        if not same and os.path.exists(image) and os.path.exists(output):
            same = os.path.samefile(image, output)
        if same:
            raise ValueError(
                f"--output {output} is one of the input images ({image}); writing it would "
                "replace that image. Choose another --output"
            )


def demo(args: argparse.Namespace) -> int:
    """`tfvitmae demo`; exit code 1 if the pretraining loss did not fall."""
    from .demo import run_demo

    result = run_demo(
        output_dir=args.output_dir,
        epochs=args.epochs,
        steps=args.steps,
        draws=args.draws,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    losses = result["history"].history["loss"]
    return 0 if losses[-1] < losses[0] else 1


def convert(args: argparse.Namespace) -> int:
    """`tfvitmae convert`: a checkpoint from PyTorch to Keras layout or back."""
    import warnings

    from ..checkpoints.formats import KERAS_WEIGHTS_NAME
    from ..models.vit_mae import TFViTMAEForPreTraining, TFViTMAEModel

    cls = TFViTMAEModel if args.encoder_only else TFViTMAEForPreTraining
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = cls.from_pretrained(
            args.src, strict=not args.no_strict, output_loading_info=True
        )
    to = args.to or ("pytorch" if report.format == "keras" else "keras")
    pytorch = {"keras": False, "pytorch": True, "vit": "vit"}[to]
    written = model.save_pretrained(args.dst, pytorch=pytorch, safe_serialization=not args.bin)
    print(f"read {args.src}: {report.summary()}")
    for warning in caught:
        print(f"note: {warning.message}")
    layout = {
        "pytorch": "transformers PyTorch layout",
        "vit": "transformers ViTModel layout (the encoder)",
        "keras": f"tfvitmae Keras weights ({KERAS_WEIGHTS_NAME})",
    }[to]
    print(
        f"wrote {cls.__name__} as {layout}: {', '.join(os.path.basename(p) for p in written)} in "
        f"{args.dst}"
    )
    return 0


def load_any_model(name_or_path: str | os.PathLike) -> "TFViTMAEPreTrainedModel":
    """The checkpoint's own model class (from `architectures` in its config),
    loaded with `from_pretrained`; `TFViTMAEForPreTraining` when unsaid.

    Raises:
        CheckpointError: The config names a classifier, but the weights have no
            classification head (a pretraining checkpoint mislabelled: its
            export would classify with a random head).
    """
    import warnings

    from ..checkpoints.formats import CheckpointError
    from ..checkpoints.hub import architecture_class, resolve_files
    from ..checkpoints.weight_names import model_parts, part_of
    from ..models import classification  # noqa: F401  (registers every model class)
    from ..models.config import ViTMAEConfig
    from ..models.vit_mae import TFViTMAEForPreTraining

    config_path, _ = resolve_files(os.fspath(name_or_path))
    config = ViTMAEConfig.from_pretrained(config_path) if config_path else None
    cls = architecture_class(config, TFViTMAEForPreTraining)
    # A missing head only warns in `from_pretrained` (a classifier started
    # from an encoder has none); here the checkpoint itself claims one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = cls.from_pretrained(name_or_path, output_loading_info=True)
    if "head" in model_parts(model) and not any(part_of(p) == "head" for p in report.loaded):
        raise CheckpointError(
            f"{config_path} names {cls.__name__} in its architectures, but the weights "
            f"({report.source}) have no classification head: the model would classify with a "
            "random one. Export the encoder or the pretraining model instead (correct "
            "architectures in config.json), or fine-tune it first (tfvitmae finetune)"
        )
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return model


def export(args: argparse.Namespace) -> int:
    """`tfvitmae export`: a SavedModel for TensorFlow Serving, or an ONNX or LiteRT file."""
    saved_model_only = dict(
        version=args.version is not None,
        no_raw_inputs=args.no_raw_inputs,
        warmup=args.warmup,
        top_k=args.top_k is not None,
        max_batch=args.max_batch is not None,
    )
    int8_only = {
        k: v
        for k in ("calibration_images", "min_cosine", "min_agreement")
        if (v := getattr(args, k)) is not None
    }
    if args.quantize is None and int8_only:
        given = [f"--{k.replace('_', '-')}" for k in int8_only]
        raise ValueError(f"{', '.join(given)} applies to --quantize int8")
    if args.quantize is not None and args.format not in ("onnx", "litert"):
        raise ValueError(
            f"--quantize applies to --format onnx and litert, received --format {args.format}"
        )
    if args.format != "tf_saved_model":
        given = [f"--{k.replace('_', '-')}" for k, v in saved_model_only.items() if v]
        if given:
            raise ValueError(f"only --format tf_saved_model takes {', '.join(given)}")
        model = load_any_model(args.model)
        if args.format == "keras-hub":
            if args.signature is not None:
                raise ValueError("--signature applies to --format onnx and litert")
            from ..serving.keras_hub_preset import export_keras_hub

            names = [export_keras_hub(model, args.export_base, verbose=False)]
        else:
            from ..serving.portable import export_portable

            names = export_portable(
                model,
                args.export_base,
                args.format,
                signature=args.signature,
                quantize=args.quantize,
                **int8_only,
                verbose=args.quantize is not None,  # prints the int8 file's agreement
            )
        print(
            f"exported {type(model).__name__} to {args.export_base} ({args.format}): "
            f"{', '.join(names)}"
        )
        return 0
    if args.signature is not None:
        raise ValueError("--signature applies to --format onnx and litert (a SavedModel has all)")
    from ..serving.saved_model import export_for_serving

    model = load_any_model(args.model)
    version = 1 if args.version is None else args.version
    signatures = export_for_serving(
        model,
        args.export_base,
        version=version,
        raw_inputs=not args.no_raw_inputs,
        warmup=args.warmup,
        top_k=5 if args.top_k is None else args.top_k,
        **({} if args.max_batch is None else {"max_batch": args.max_batch}),
        verbose=False,
    )
    path = os.path.join(args.export_base, str(version))
    print(f"exported {type(model).__name__} to {path} with signatures: {', '.join(signatures)}")
    print(f"inspect with: saved_model_cli show --dir {path} --all")
    return 0
