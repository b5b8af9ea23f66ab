"""The `tfvitmae` command. Heavy imports happen inside the sub-commands."""

import argparse
import sys


def _demo(args):
    from .demo import run_demo

    history = run_demo(output_dir=args.output_dir, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    losses = history.history["loss"]
    return 0 if losses[-1] < losses[0] else 1


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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
