"""The `tfvitmae` command. Heavy imports happen inside the sub-commands."""

import argparse
import math
import os
import sys


def _mixed_precision(policy):
    if policy != "none":
        import keras

        keras.config.set_dtype_policy({"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[policy])


def _load_pretraining_model(spec, args):
    """A `TFViTMAEForPreTraining` from a preset name or a checkpoint."""
    from .config import PRESETS, ViTMAEConfig
    from .modeling import TFViTMAEForPreTraining

    overrides = {k: v for k, v in dict(
        image_size=args.image_size, patch_size=args.patch_size, num_channels=args.num_channels,
        mask_ratio=args.mask_ratio, norm_pix_loss=args.norm_pix_loss,
    ).items() if v is not None}
    if spec in PRESETS:
        return TFViTMAEForPreTraining(ViTMAEConfig.from_preset(spec, **overrides), seed=args.seed)
    return TFViTMAEForPreTraining.from_pretrained(spec, seed=args.seed, **overrides)


def _pretrain(args):
    import tensorflow as tf

    from .data import make_dataset
    from .training import pretrain

    _mixed_precision(args.mixed_precision)
    strategy = tf.distribute.MirroredStrategy() if args.multi_gpu else tf.distribute.get_strategy()
    with strategy.scope():
        model = _load_pretraining_model(args.model, args)
        config = model.config
        dataset, info = make_dataset(
            args.data, config.image_hw, args.batch_size, augment=not args.no_augment, seed=args.seed,
            num_channels=config.num_channels, repeat=True, drop_remainder=True, return_info=True,
        )
        n = info["num_examples"]
        if info["skipped"]:
            print(f"skipped {info['skipped']} files that are not images")
        print(f"pretraining {config.hidden_size}-wide, {config.num_hidden_layers}-block MAE on {n} images "
              f"({config.image_hw[0]}x{config.image_hw[1]}) for {args.epochs} epochs, "
              f"{strategy.num_replicas_in_sync} replica(s)")
        samples = make_dataset(args.data, config.image_hw, min(n, 4), augment=False, shuffle=False,
                               num_channels=config.num_channels)
        history = pretrain(
            model, dataset, epochs=args.epochs, batch_size=args.batch_size, output_dir=args.output_dir,
            steps_per_epoch=n // args.batch_size, base_lr=args.base_lr, warmup_epochs=args.warmup_epochs,
            weight_decay=args.weight_decay, jit_compile=args.jit_compile,
            reconstruction_images=next(iter(samples)).numpy() if args.reconstruction_every else None,
            reconstruction_every=args.reconstruction_every or 1,
        )
    print(f"final loss {history.history['loss'][-1]:.4f}; model saved in {args.output_dir}")
    return 0


def _train_classifier(args, linear_probe):
    from .classification import TFViTMAEForImageClassification
    from .data import list_image_files, make_dataset, split_files
    from .training import train_classifier

    _mixed_precision(args.mixed_precision)
    paths, labels, class_names, skipped = list_image_files(args.data)
    if len(class_names) < 2:
        raise ValueError(f"{args.data} needs one sub-folder per class (at least 2), found {class_names}")
    (train_paths, train_labels), (val_paths, val_labels) = split_files(paths, labels, args.val_fraction, args.seed)
    if len(train_paths) < args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the training split ({len(train_paths)})")
    model = TFViTMAEForImageClassification.from_encoder(
        args.model, num_labels=len(class_names), linear_probe=linear_probe, pooling=args.pooling,
        drop_path_rate=0.0 if linear_probe else args.drop_path, id2label=dict(enumerate(class_names)),
    )
    config = model.config
    mixing = not linear_probe and (args.mixup or args.cutmix)
    train = make_dataset(
        train_paths, config.image_hw, args.batch_size, labels=train_labels, with_labels=True,
        augment=not args.no_augment, seed=args.seed, num_channels=config.num_channels, repeat=True,
        num_classes=len(class_names), mixup_alpha=args.mixup if mixing else 0.0,
        cutmix_alpha=args.cutmix if mixing else 0.0,
    )
    val = make_dataset(val_paths, config.image_hw, args.batch_size, labels=val_labels, with_labels=True,
                       augment=False, shuffle=False, num_channels=config.num_channels) if val_paths else None
    if val is not None and mixing:
        import tensorflow as tf

        val = val.map(lambda x, y: (x, tf.one_hot(y, len(class_names))))
    print(f"{'linear probe' if linear_probe else 'fine-tuning'}: {len(train_paths)} training and {len(val_paths)} "
          f"validation images, {len(class_names)} classes" + (f"; skipped {skipped} non-image files" if skipped else ""))
    history = train_classifier(
        model, train, epochs=args.epochs, batch_size=args.batch_size,
        steps_per_epoch=math.ceil(len(train_paths) / args.batch_size), validation_data=val,
        label_smoothing=0.0 if linear_probe else args.label_smoothing, one_hot_labels=bool(mixing),
        base_lr=args.base_lr, layer_decay=None if linear_probe else args.layer_decay, output_dir=args.output_dir,
    )
    if val is not None:
        print(f"validation accuracy {history.history['val_accuracy'][-1]:.2%}")
    print(f"classifier saved in {args.output_dir}")
    return 0


def _reconstruct(args):
    import tensorflow as tf

    from .data import IMAGENET_MEAN, IMAGENET_STD, decode_image, preprocess_images
    from .modeling import TFViTMAEForPreTraining
    from .training import write_reconstruction_grid

    overrides = {} if args.mask_ratio is None else {"mask_ratio": args.mask_ratio}
    model = TFViTMAEForPreTraining.from_pretrained(args.model, data_format="channels_last", **overrides)
    config = model.config
    batch = []
    for path in args.images:
        try:
            image = decode_image(tf.io.read_file(path), config.num_channels)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            raise ValueError(f"Cannot read {path} as an image: {e.message.splitlines()[0]}") from None
        batch.append(preprocess_images(image, config.image_hw))
    path = write_reconstruction_grid(model, tf.stack(batch).numpy(), args.output, IMAGENET_MEAN, IMAGENET_STD,
                                     seed=args.seed)
    print(f"wrote {path}: one row per image; columns original, masked ({config.mask_ratio:.0%}), reconstruction, "
          "reconstruction with the visible patches")
    return 0


def _demo(args):
    from .demo import run_demo

    result = run_demo(output_dir=args.output_dir, epochs=args.epochs, probe_epochs=args.probe_epochs,
                      batch_size=args.batch_size, seed=args.seed)
    losses = result["history"].history["loss"]
    return 0 if losses[-1] < losses[0] else 1


def _convert(args):
    import warnings

    from .modeling import TFViTMAEForPreTraining, TFViTMAEModel
    from .weights import KERAS_WEIGHTS_NAME

    cls = TFViTMAEModel if args.encoder_only else TFViTMAEForPreTraining
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = cls.from_pretrained(args.src, strict=not args.no_strict, output_loading_info=True)
    to = args.to or ("pytorch" if report.format == "keras" else "keras")
    written = model.save_pretrained(args.dst, pytorch=to == "pytorch", safe_serialization=not args.bin)
    print(f"read {args.src}: {report.summary()}")
    for warning in caught:
        print(f"note: {warning.message}")
    layout = "transformers PyTorch layout" if to == "pytorch" else f"tfvitmae Keras weights ({KERAS_WEIGHTS_NAME})"
    print(f"wrote {cls.__name__} as {layout}: {', '.join(os.path.basename(p) for p in written)} in {args.dst}")
    return 0


def _export(args):
    from .export import export_for_serving
    from .hub import load_any_model

    model = load_any_model(args.model)
    signatures = export_for_serving(model, args.export_base, version=args.version, raw_inputs=not args.no_raw_inputs,
                                    warmup=args.warmup, top_k=args.top_k, verbose=False)
    path = os.path.join(args.export_base, str(args.version))
    print(f"exported {type(model).__name__} to {path} with signatures: {', '.join(signatures)}")
    print(f"inspect with: saved_model_cli show --dir {path} --all")
    return 0


def _add_common_training(parser, epochs, batch_size):
    parser.add_argument("--output-dir", required=True, help="where checkpoints (and images) are written")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default: {epochs})")
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help=f"global batch size (default: {batch_size})")
    parser.add_argument("--base-lr", type=float, help="learning rate per 256 images (default: the MAE recipe's)")
    parser.add_argument("--no-augment", action="store_true", help="no random resized crop / flip")
    parser.add_argument("--mixed-precision", choices=("none", "bfloat16", "float16"), default="none",
                        help="mixed precision policy (bfloat16 on CPU/TPU, float16 or bfloat16 on GPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data order, augmentation and masks")


def _add_classifier_options(parser):
    parser.add_argument("data", metavar="DATA", help="folder with one sub-folder of images per class")
    parser.add_argument("--model", required=True, help="pretrained MAE: directory, weights file or Hub id")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (default: 0.1)")


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tfvitmae", description="ViTMAE (masked autoencoders) for Keras 3 / TensorFlow."
    )
    parser.add_argument("--version", action="version", version=f"tfvitmae {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="pretrain, reconstruct and linear-probe a small MAE on bundled real images (offline)",
        description="Pretrain a small MAE with model.fit on scikit-learn's bundled handwritten digits, write a "
        "reconstruction grid, and report the linear-probe accuracy of the pretrained encoder against a randomly "
        "initialised one. Needs no network; about a minute and a half on two CPU cores.",
    )
    demo.add_argument("--output-dir", default="tfvitmae-demo", help="where the model and PNG go (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=30, help="pretraining epochs (default: %(default)s)")
    demo.add_argument("--probe-epochs", type=int, default=15, help="linear-probe epochs (default: %(default)s)")
    demo.add_argument("--batch-size", type=int, default=128, help="batch size (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(func=_demo)

    pre = commands.add_parser(
        "pretrain", help="MAE pretraining on a folder of images",
        description="Self-supervised MAE pretraining with the paper's recipe (AdamW 0.9/0.95, weight decay 0.05, "
        "lr = base_lr * batch / 256, warmup + cosine, random resized crop + flip). Writes a from_pretrained "
        "checkpoint every epoch, reconstruction PNGs, and a backup that an interrupted run resumes from.",
    )
    pre.add_argument("data", metavar="DATA", help="folder of images (any size; JPEG, PNG, GIF, BMP)")
    pre.add_argument("--model", default="base",
                     help="preset (base, large, huge) or a checkpoint to continue from (default: base)")
    pre.add_argument("--image-size", type=int, help="input resolution (default: the model's)")
    pre.add_argument("--patch-size", type=int, help="patch size, for a preset (default: the preset's)")
    pre.add_argument("--num-channels", type=int, help="image channels, for a preset (default: 3)")
    pre.add_argument("--mask-ratio", type=float, help="fraction of patches masked (default: 0.75)")
    pre.add_argument("--norm-pix-loss", action=argparse.BooleanOptionalAction, default=None,
                     help="per-patch normalised targets (default: on for presets)")
    pre.add_argument("--warmup-epochs", type=int, default=40, help="linear warmup epochs (default: 40)")
    pre.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: 0.05)")
    pre.add_argument("--reconstruction-every", type=int, default=1,
                     help="epochs between reconstruction PNGs; 0 for none (default: 1)")
    pre.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    pre.add_argument("--multi-gpu", action="store_true", help="MirroredStrategy over all local GPUs")
    _add_common_training(pre, epochs=800, batch_size=256)
    pre.set_defaults(func=_pretrain)

    probe = commands.add_parser(
        "probe", help="linear probe of a pretrained encoder",
        description="Freeze the pretrained encoder and train MAE's probe head (BatchNorm without affine, then a "
        "linear layer) with SGD + momentum, warmup and cosine decay. Reports validation accuracy.",
    )
    _add_classifier_options(probe)
    probe.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="feature pooling (default: cls)")
    _add_common_training(probe, epochs=90, batch_size=256)
    probe.set_defaults(func=lambda a: _train_classifier(a, linear_probe=True))

    fine = commands.add_parser(
        "finetune", help="fine-tune a pretrained encoder for classification",
        description="Fine-tune the pretrained encoder with a new head: AdamW, layer-wise lr decay, label "
        "smoothing, stochastic depth and optional MixUp/CutMix, as in MAE.",
    )
    _add_classifier_options(fine)
    fine.add_argument("--pooling", choices=("cls", "mean"), default="mean", help="feature pooling (default: mean)")
    fine.add_argument("--layer-decay", type=float, default=0.65, help="layer-wise lr decay (default: 0.65)")
    fine.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing (default: 0.1)")
    fine.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate (default: 0.1)")
    fine.add_argument("--mixup", type=float, default=0.0, help="MixUp alpha, 0 for off (MAE: 0.8)")
    fine.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha, 0 for off (MAE: 1.0)")
    _add_common_training(fine, epochs=100, batch_size=64)
    fine.set_defaults(func=lambda a: _train_classifier(a, linear_probe=False))

    rec = commands.add_parser(
        "reconstruct", help="write a PNG of MAE reconstructions of images",
        description="Mask the images, reconstruct them with a pretrained MAE and write a grid: original, masked, "
        "reconstruction, and reconstruction with the visible patches pasted back.",
    )
    rec.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, GIF, BMP)")
    rec.add_argument("--model", required=True, help="MAE checkpoint: directory, weights file or Hub id")
    rec.add_argument("--output", default="reconstruction.png", help="PNG to write (default: %(default)s)")
    rec.add_argument("--mask-ratio", type=float, help="fraction of patches masked (default: the model's)")
    rec.add_argument("--seed", type=int, default=0, help="seed of the mask (default: 0)")
    rec.set_defaults(func=_reconstruct)

    exp = commands.add_parser(
        "export", help="export a SavedModel for TensorFlow Serving",
        description="Write MODEL as EXPORT_BASE/VERSION/saved_model.pb + variables/, the layout TensorFlow Serving "
        "loads. Signatures: serving_default (encoder features), reconstruct[_with_seed] for pretraining models, "
        "classify for classifiers, each also taking encoded image bytes (_image_bytes) and uint8 images (_uint8).",
    )
    exp.add_argument("model", metavar="MODEL", help="checkpoint directory, weights file or Hub id")
    exp.add_argument("export_base", metavar="EXPORT_BASE", help="model base directory of TF Serving")
    exp.add_argument("--version", type=int, default=1, help="version sub-directory, must be new (default: 1)")
    exp.add_argument("--no-raw-inputs", action="store_true", help="skip the image-bytes and uint8 signatures")
    exp.add_argument("--warmup", action="store_true",
                     help="write assets.extra/tf_serving_warmup_requests (needs tensorflow-serving-api)")
    exp.add_argument("--top-k", type=int, default=5, help="classes in classify's top-k outputs (default: 5)")
    exp.set_defaults(func=_export)

    convert = commands.add_parser(
        "convert", help="convert a checkpoint between PyTorch and Keras layouts",
        description="Load a ViTMAE checkpoint (a directory, a weights file or a Hub repo id; transformers "
        "safetensors/.bin, original MAE .pth, Hugging Face's legacy tf_model.h5 or tfvitmae's own weights) and "
        "write it to DST: PyTorch checkpoints become tfvitmae Keras weights and tfvitmae weights become a "
        "transformers-loadable model.safetensors, unless --to says otherwise. Prints what was mapped.",
    )
    convert.add_argument("src", metavar="SRC", help="checkpoint directory, weights file or Hub repo id")
    convert.add_argument("dst", metavar="DST", help="output directory (created if missing)")
    convert.add_argument("--to", choices=("keras", "pytorch"), help="output layout (default: the other one)")
    convert.add_argument("--encoder-only", action="store_true", help="convert the encoder only (TFViTMAEModel)")
    convert.add_argument("--bin", action="store_true", help="with --to pytorch, write pytorch_model.bin")
    convert.add_argument("--no-strict", action="store_true", help="load what fits instead of failing on mismatch")
    convert.set_defaults(func=_convert)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    for name in ("epochs", "batch_size", "probe_epochs"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, received {getattr(args, name)}")
    if args.command in ("pretrain", "probe", "finetune") and args.base_lr is None:
        args.base_lr = {"pretrain": 1.5e-4, "probe": 0.1, "finetune": 5e-4}[args.command]
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, FloatingPointError) as e:  # bad input: a message, not a traceback
        print(f"tfvitmae {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
