"""What each `tfvitmae` command does, given its parsed arguments.

Each function takes the `argparse` namespace of its sub-command and returns
the exit code; heavy imports happen inside, so the command line starts fast.
"""

import math
import os
import sys


def set_mixed_precision(policy):
    if policy != "none":
        import keras

        keras.config.set_dtype_policy(
            {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[policy]
        )


def run_options(args, *semantic):
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


def load_augmenter(spec):
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


def load_pretraining_model(spec, args):
    """A `TFViTMAEForPreTraining` from a preset name or a checkpoint."""
    from .config import PRESETS, ViTMAEConfig
    from .modeling import TFViTMAEForPreTraining

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
    if args.image_mean or args.image_std:  # recorded in the saved preprocessor_config.json
        processor = model.image_processor
        model.image_processor = processor.copy(
            image_mean=args.image_mean or processor.image_mean,
            image_std=args.image_std or processor.image_std,
        )
    return model


def pretrain(args):
    import tensorflow as tf

    from .data import make_dataset
    from .training import pretrain as run_pretraining

    set_mixed_precision(args.mixed_precision)
    strategy = tf.distribute.MirroredStrategy() if args.multi_gpu else tf.distribute.get_strategy()
    with strategy.scope():
        model = load_pretraining_model(args.model, args)
        config = model.config
        dataset, info = make_dataset(
            args.data,
            batch_size=args.batch_size,
            processor=model.image_processor,
            augment=not args.no_augment,
            augmenter=load_augmenter(args.augmenter),
            seed=args.seed,
            num_channels=config.num_channels,
            repeat=True,
            drop_remainder=True,
            return_info=True,
            progress=sys.stderr,
        )
        n = info["num_examples"]
        if info["skipped"]:
            print(f"skipped {info['skipped']} files that are not images")
        print(
            f"pretraining {config.hidden_size}-wide, {config.num_hidden_layers}-block MAE on {n} "
            "images "
            f"({config.image_hw[0]}x{config.image_hw[1]}) for {args.epochs} epochs, "
            f"{strategy.num_replicas_in_sync} replica(s)"
        )
        samples = make_dataset(
            args.data,
            batch_size=min(n, 4),
            processor=model.image_processor,
            augment=False,
            shuffle=False,
            num_channels=config.num_channels,
            verify_images=False,  # checked above; broken files are dropped here too
        )
        history = run_pretraining(
            model,
            dataset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            output_dir=args.output_dir,
            steps_per_epoch=n // args.batch_size,
            base_lr=args.base_lr,
            warmup_epochs=args.warmup_epochs,
            weight_decay=args.weight_decay,
            jit_compile="auto" if args.jit_compile is None else args.jit_compile,
            reconstruction_images=next(iter(samples)).numpy()
            if args.reconstruction_every
            else None,
            reconstruction_every=args.reconstruction_every or 1,
            **run_options(args, "model", "mixed_precision"),
        )
    print(f"final loss {history.history['loss'][-1]:.4f}; model saved in {args.output_dir}")
    return 0


def train_classifier(args, linear_probe):
    from .classification import TFViTMAEForImageClassification
    from .data import list_image_files, make_dataset, split_files
    from .training import train_classifier as run_training

    set_mixed_precision(args.mixed_precision)
    paths, labels, class_names, skipped = list_image_files(args.data, progress=sys.stderr)
    if len(class_names) < 2:
        raise ValueError(
            f"{args.data} needs one sub-folder per class (at least 2), found {class_names}"
        )
    (train_paths, train_labels), (val_paths, val_labels) = split_files(
        paths, labels, args.val_fraction, args.seed
    )
    if len(train_paths) < args.batch_size:
        raise ValueError(
            f"--batch-size {args.batch_size} is larger than the training split ({len(train_paths)})"
        )
    model = TFViTMAEForImageClassification.from_encoder(
        args.model,
        num_labels=len(class_names),
        linear_probe=linear_probe,
        pooling=args.pooling,
        drop_path_rate=0.0 if linear_probe else args.drop_path,
        id2label=dict(enumerate(class_names)),
    )
    config = model.config
    mixing = not linear_probe and (args.mixup or args.cutmix)
    train = make_dataset(
        train_paths,
        batch_size=args.batch_size,
        processor=model.image_processor,
        labels=train_labels,
        with_labels=True,
        augment=not args.no_augment,
        augmenter=load_augmenter(args.augmenter),
        seed=args.seed,
        num_channels=config.num_channels,
        repeat=True,
        num_classes=len(class_names),
        mixup_alpha=args.mixup if mixing else 0.0,
        cutmix_alpha=args.cutmix if mixing else 0.0,
    )
    val = (
        make_dataset(
            val_paths,
            batch_size=args.batch_size,
            processor=model.image_processor,
            labels=val_labels,
            with_labels=True,
            augment=False,
            shuffle=False,
            num_channels=config.num_channels,
        )
        if val_paths
        else None
    )
    print(
        f"{'linear probe' if linear_probe else 'fine-tuning'}: {len(train_paths)} training and "
        f"{len(val_paths)} "
        f"validation images, {len(class_names)} classes"
        + (f"; skipped {skipped} non-image files" if skipped else "")
    )
    history = run_training(
        model,
        train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_epoch=math.ceil(len(train_paths) / args.batch_size),
        validation_data=val,
        label_smoothing=0.0 if linear_probe else args.label_smoothing,
        one_hot_labels=bool(mixing),
        base_lr=args.base_lr,
        layer_decay=None if linear_probe else args.layer_decay,
        output_dir=args.output_dir,
        **run_options(
            args,
            "model",
            "val_fraction",
            "mixed_precision",
            *(() if linear_probe else ("mixup", "cutmix", "drop_path")),
        ),
    )
    if val is not None:
        print(f"validation accuracy {history.history['val_accuracy'][-1]:.2%}")
    print(f"classifier saved in {args.output_dir}")
    return 0


def reconstruct(args):
    from .modeling import TFViTMAEForPreTraining
    from .visualization import write_reconstruction_grid

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


def demo(args):
    from .demo import run_demo

    result = run_demo(
        output_dir=args.output_dir,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        probe_epochs=args.probe_epochs,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    losses = result["history"].history["loss"]
    return 0 if losses[-1] < losses[0] else 1


def convert(args):
    import warnings

    from .checkpoint_files import KERAS_WEIGHTS_NAME
    from .modeling import TFViTMAEForPreTraining, TFViTMAEModel

    cls = TFViTMAEModel if args.encoder_only else TFViTMAEForPreTraining
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = cls.from_pretrained(
            args.src, strict=not args.no_strict, output_loading_info=True
        )
    to = args.to or ("pytorch" if report.format == "keras" else "keras")
    written = model.save_pretrained(
        args.dst, pytorch=to == "pytorch", safe_serialization=not args.bin
    )
    print(f"read {args.src}: {report.summary()}")
    for warning in caught:
        print(f"note: {warning.message}")
    layout = (
        "transformers PyTorch layout"
        if to == "pytorch"
        else f"tfvitmae Keras weights ({KERAS_WEIGHTS_NAME})"
    )
    print(
        f"wrote {cls.__name__} as {layout}: {', '.join(os.path.basename(p) for p in written)} in "
        f"{args.dst}"
    )
    return 0


def load_any_model(name_or_path):
    """The checkpoint's own model class (from `architectures` in its config),
    loaded with `from_pretrained`; `TFViTMAEForPreTraining` when unsaid."""
    from . import classification  # noqa: F401  (registers every model class)
    from .config import ViTMAEConfig
    from .hub import architecture_class, resolve_files
    from .modeling import TFViTMAEForPreTraining

    config_path, _ = resolve_files(os.fspath(name_or_path))
    config = ViTMAEConfig.from_pretrained(config_path) if config_path else None
    return architecture_class(config, TFViTMAEForPreTraining).from_pretrained(name_or_path)


def export(args):
    from .export import export_for_serving

    model = load_any_model(args.model)
    signatures = export_for_serving(
        model,
        args.export_base,
        version=args.version,
        raw_inputs=not args.no_raw_inputs,
        warmup=args.warmup,
        top_k=args.top_k,
        verbose=False,
    )
    path = os.path.join(args.export_base, str(args.version))
    print(f"exported {type(model).__name__} to {path} with signatures: {', '.join(signatures)}")
    print(f"inspect with: saved_model_cli show --dir {path} --all")
    return 0
