"""The `tfvitmae` command. Heavy imports happen inside the sub-commands."""

import argparse
import sys


def _demo(args):
    from .demo import run_demo

    history = run_demo(output_dir=args.output_dir, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    losses = history.history["loss"]
    return 0 if losses[-1] < losses[0] else 1


def _convert(args):
    import os
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


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tfvitmae", description="ViTMAE (masked autoencoders) for Keras 3 / TensorFlow."
    )
    parser.add_argument("--version", action="version", version=f"tfvitmae {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="pretrain a small MAE on bundled real images (offline)",
        description="Pretrain a small MAE with model.fit on scikit-learn's bundled handwritten digits, "
        "print the loss per epoch and save the model. Needs no network.",
    )
    demo.add_argument("--output-dir", default="tfvitmae-demo", help="where model.keras and config.json go")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs (default: 8)")
    demo.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_demo)

    convert = commands.add_parser(
        "convert",
        help="convert a checkpoint between PyTorch and Keras layouts",
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
    for name in ("epochs", "batch_size"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, received {getattr(args, name)}")
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as e:  # bad input: a message, not a traceback
        print(f"tfvitmae {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
