"""The `tfvitmae` command line: the parser and `main`; `commands.py` holds what
each sub-command does."""

import argparse
import math
import os
import sys
from collections.abc import Callable

from . import commands

__all__ = [
    "build_parser",
    "main",
]


def _checked(convert: type, rule: str, holds) -> Callable[[str], float | int]:
    """An argparse `type` that converts with `convert` and refuses values for
    which `holds(value)` is false (NaN and infinities too), naming the `rule`."""

    def parse(text: str) -> float | int:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, received {text!r}") from None
        if not (math.isfinite(value) and holds(value)):
            raise argparse.ArgumentTypeError(f"must be {rule}, received {text}")
        return value

    parse.__name__ = convert.__name__  # argparse names the type in its own messages
    return parse


POSITIVE_INT = _checked(int, "at least 1", lambda v: v >= 1)
NON_NEGATIVE_INT = _checked(int, "0 or more", lambda v: v >= 0)
POSITIVE = _checked(float, "a positive number", lambda v: v > 0)
NON_NEGATIVE = _checked(float, "a number, 0 or more", lambda v: v >= 0)
FINITE = _checked(float, "a finite number", lambda v: True)
FRACTION = _checked(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
UNIT = _checked(float, "a number in [0, 1]", lambda v: 0 <= v <= 1)
DECAY = _checked(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
SEED = _checked(int, "an integer in [0, 2**32)", lambda v: 0 <= v < 2**32)  # NumPy's range


def _add_common_training(parser: argparse.ArgumentParser, epochs: int, batch_size: int) -> None:
    """The output, schedule, data and run options every training command shares."""
    parser.add_argument(
        "--output-dir", required=True, help="where checkpoints (and images) are written"
    )
    parser.add_argument(
        "--epochs", type=POSITIVE_INT, default=epochs, help=f"training epochs (default: {epochs})"
    )
    parser.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=batch_size,
        help=f"global batch size (default: {batch_size})",
    )
    parser.add_argument(
        "--accum-steps",
        type=POSITIVE_INT,
        default=1,
        metavar="N",
        help="gradient accumulation: average the gradients of N batches into one optimizer "
        "update, for an effective batch of --batch-size x N that sets the learning rate; N must "
        "divide the batches of an epoch (default: 1)",
    )
    parser.add_argument(
        "--base-lr", type=POSITIVE, help="learning rate per 256 images (default: the MAE recipe's)"
    )
    parser.add_argument("--no-augment", action="store_true", help="no random resized crop / flip")
    parser.add_argument(
        "--mixed-precision",
        choices=("none", "bfloat16", "float16"),
        default="none",
        help="mixed precision policy (bfloat16 on CPU/TPU, float16 or bfloat16 on GPU)",
    )
    parser.add_argument(
        "--seed",
        type=SEED,
        default=0,
        help="seed of everything random in the run: the data split and order, augmentation, "
        "masks, dropout and new weights; with --no-jit-compile a rerun gives the same weights "
        "(default: 0)",
    )
    parser.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the train step with XLA (default: on for float32, off for 16-bit on CPU)",
    )
    parser.add_argument(
        "--remat",
        action="store_true",
        help="recompute each block's activations in the backward pass: less memory, a slower step",
    )
    parser.add_argument(
        "--augmenter",
        metavar="MODULE:FACTORY",
        help="an extra Keras preprocessing layer for training batches (keras-cv's too), made by "
        "calling FACTORY() from MODULE, e.g. mypkg.aug:make_layer; it sees pixels in [0, 255]",
    )
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir even if it finished or its settings differ "
        "(a stopped run with the same settings resumes without it)",
    )
    runs.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in --output-dir, discarding the run saved there",
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="log to TensorBoard in OUTPUT_DIR/logs (scalars, learning rate, reconstructions)",
    )
    parser.add_argument(
        "--log-dir", help="log to TensorBoard in this folder (implies --tensorboard)"
    )
    _add_distribution_options(parser)


def _mesh_shape(text: str) -> tuple[int, int]:
    """`--mesh RxC` as `(R, C)`."""
    rows, x, columns = text.lower().partition("x")
    if not (x and rows.isdigit() and columns.isdigit() and int(rows) and int(columns)):
        raise argparse.ArgumentTypeError(
            f"must be RxC, batch x model devices (e.g. 2x4), received {text!r}"
        )
    return int(rows), int(columns)


def _add_distribution_options(parser: argparse.ArgumentParser) -> None:
    """Several devices and processes through keras.distribution (JAX)."""
    group = parser.add_argument_group(
        "several devices and machines (KERAS_BACKEND=jax, keras.distribution)"
    )
    group.add_argument(
        "--distribution",
        choices=("data", "model"),
        help="train on every device of every process: data parallel (the weights on every "
        "device, each global batch split between them) or model parallel (the layouts of the "
        "model's get_layout_map over --mesh); default: data with several processes, else none",
    )
    group.add_argument(
        "--mesh",
        type=_mesh_shape,
        metavar="RxC",
        help="--distribution model: batch x model devices, all of them (default: 1 x all)",
    )
    group.add_argument(
        "--coordinator-address",
        metavar="HOST:PORT",
        help="several processes, one per machine: process 0's address, which every process "
        "reaches (default: $KERAS_DISTRIBUTION_JOB_ADDRESSES, $JAX_COORDINATOR_ADDRESS, or "
        "the cluster's)",
    )
    group.add_argument(
        "--num-processes",
        type=POSITIVE_INT,
        help="the number of processes (default: $KERAS_DISTRIBUTION_NUM_PROCESSES, or the "
        "cluster's)",
    )
    group.add_argument(
        "--process-id",
        type=NON_NEGATIVE_INT,
        help="this process's number; process 0 writes the checkpoints, run record and logs, "
        "into an --output-dir every process sees (default: $KERAS_DISTRIBUTION_PROCESS_ID, or "
        "the cluster's)",
    )


def _add_classifier_options(parser: argparse.ArgumentParser) -> None:
    """The data and pretrained model of `probe` and `finetune`."""
    parser.add_argument(
        "data", metavar="DATA", help="folder with one sub-folder of images per class"
    )
    parser.add_argument(
        "--model", required=True, help="pretrained MAE: directory, weights file or Hub id"
    )
    parser.add_argument(
        "--val-fraction", type=FRACTION, default=0.1, help="held-out fraction (default: 0.1)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The `tfvitmae` parser, with one sub-command per `commands` function."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="tfvitmae", description="ViTMAE (masked autoencoders) for Keras 3 / TensorFlow."
    )
    parser.add_argument("--version", action="version", version=f"tfvitmae {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(subparsers)
    _add_pretrain(subparsers)
    _add_probe(subparsers)
    _add_finetune(subparsers)
    _add_reconstruct(subparsers)
    _add_export(subparsers)
    _add_convert(subparsers)
    for command in subparsers.choices.values():
        command.add_argument(
            "--verbose",
            action="store_true",
            help="show TensorFlow's start-up and log lines (hidden by default)",
        )
    return parser


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="pretrain, reconstruct, fine-tune and probe a small MAE on bundled real images "
        "(offline)",
        description="MAE's protocol on scikit-learn's bundled handwritten digits: pretrain a "
        "small MAE with model.fit, score its reconstructions of held-out digits against the "
        "mean image and the untrained model, write a reconstruction grid, then print a "
        "label-efficiency table: with 1, 5, 10 and all labelled digits per class, the pretrained "
        "encoder fine-tuned and linear-probed, the same architecture from random initialisation, "
        "and a logistic regression and 1-nearest-neighbour on the raw pixels. Needs no network; "
        "about two minutes on two CPU cores.",
    )
    demo.add_argument(
        "--output-dir",
        default="tfvitmae-demo",
        help="where the models and PNG go (default: %(default)s)",
    )
    demo.add_argument(
        "--epochs", type=POSITIVE_INT, default=150, help="pretraining epochs (default: %(default)s)"
    )
    demo.add_argument(
        "--steps",
        type=POSITIVE_INT,
        default=100,
        help="optimizer steps of every classifier network in the label-efficiency table, "
        "pretrained and from scratch alike (default: %(default)s)",
    )
    demo.add_argument(
        "--draws",
        type=POSITIVE_INT,
        default=3,
        help="random labelled subsets of each small size, 1, 5 and 10 per class "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=128,
        help="pretraining batch size (default: %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(func=commands.demo)


def _add_pretrain(subparsers: argparse._SubParsersAction) -> None:
    pre = subparsers.add_parser(
        "pretrain",
        help="MAE pretraining on a folder of images",
        description="Self-supervised MAE pretraining with the paper's recipe (AdamW 0.9/0.95, "
        "weight decay 0.05, "
        "lr = base_lr * batch / 256, warmup + cosine, random resized crop + flip). Writes a "
        "from_pretrained "
        "checkpoint (with its preprocessor_config.json) every epoch, reconstruction PNGs, a CSV "
        "log, and a backup: rerun the same command to resume a stopped run; --resume or "
        "--overwrite say what to do with a finished or different one.",
    )
    pre.add_argument(
        "data", metavar="DATA", help="folder of images (any size; JPEG, PNG, GIF, BMP, WebP)"
    )
    _add_pretraining_model_options(pre)
    pre.add_argument(
        "--warmup-epochs",
        type=NON_NEGATIVE_INT,
        default=40,
        help="linear warmup epochs (default: 40)",
    )
    pre.add_argument(
        "--weight-decay", type=NON_NEGATIVE, default=0.05, help="AdamW weight decay (default: 0.05)"
    )
    pre.add_argument(
        "--reconstruction-every",
        type=NON_NEGATIVE_INT,
        default=1,
        help="epochs between reconstruction PNGs; 0 for none (default: 1)",
    )
    pre.add_argument(
        "--multi-gpu", action="store_true", help="MirroredStrategy over all local GPUs"
    )
    _add_common_training(pre, epochs=800, batch_size=256)
    pre.set_defaults(func=commands.pretrain)


def _add_pretraining_model_options(parser: argparse.ArgumentParser) -> None:
    """`pretrain`'s model: a preset or checkpoint, and what to override in it."""
    parser.add_argument(
        "--model",
        default="base",
        help="preset (base, large, huge) or a checkpoint to continue from (default: base)",
    )
    parser.add_argument(
        "--image-size", type=POSITIVE_INT, help="input resolution (default: the model's)"
    )
    parser.add_argument(
        "--patch-size", type=POSITIVE_INT, help="patch size, for a preset (default: the preset's)"
    )
    parser.add_argument(
        "--num-channels", type=POSITIVE_INT, help="image channels, for a preset (default: 3)"
    )
    parser.add_argument(
        "--mask-ratio", type=FRACTION, help="fraction of patches masked (default: 0.75)"
    )
    parser.add_argument(
        "--image-mean",
        type=FINITE,
        nargs="+",
        help="per-channel normalisation mean, saved with the model (default: the model's; "
        "ImageNet's for presets)",
    )
    parser.add_argument(
        "--image-std",
        type=POSITIVE,
        nargs="+",
        help="per-channel normalisation std, saved with the model (default: as --image-mean)",
    )
    parser.add_argument(
        "--norm-pix-loss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-patch normalised targets (default: the checkpoint's setting; off for presets)",
    )


def _add_probe(subparsers: argparse._SubParsersAction) -> None:
    probe = subparsers.add_parser(
        "probe",
        help="linear probe of a pretrained encoder",
        description="Freeze the pretrained encoder and train MAE's probe head (BatchNorm without "
        "affine, then a "
        "linear layer) with SGD + momentum, warmup and cosine decay. Reports validation accuracy.",
    )
    _add_classifier_options(probe)
    probe.add_argument(
        "--pooling", choices=("cls", "mean"), default="cls", help="feature pooling (default: cls)"
    )
    _add_common_training(probe, epochs=90, batch_size=256)
    probe.set_defaults(func=lambda a: commands.train_classifier(a, linear_probe=True))


def _add_finetune(subparsers: argparse._SubParsersAction) -> None:
    fine = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained encoder for classification",
        description="Fine-tune the pretrained encoder with a new head: AdamW, layer-wise lr "
        "decay, label "
        "smoothing, stochastic depth and optional MixUp/CutMix, as in MAE.",
    )
    _add_classifier_options(fine)
    fine.add_argument(
        "--pooling", choices=("cls", "mean"), default="mean", help="feature pooling (default: mean)"
    )
    fine.add_argument(
        "--layer-decay", type=DECAY, default=0.65, help="layer-wise lr decay (default: 0.65)"
    )
    fine.add_argument(
        "--label-smoothing", type=FRACTION, default=0.1, help="label smoothing (default: 0.1)"
    )
    fine.add_argument(
        "--drop-path", type=FRACTION, default=0.1, help="stochastic depth rate (default: 0.1)"
    )
    fine.add_argument(
        "--mixup", type=NON_NEGATIVE, default=0.0, help="MixUp alpha, 0 for off (MAE: 0.8)"
    )
    fine.add_argument(
        "--cutmix", type=NON_NEGATIVE, default=0.0, help="CutMix alpha, 0 for off (MAE: 1.0)"
    )
    _add_common_training(fine, epochs=100, batch_size=64)
    fine.set_defaults(func=lambda a: commands.train_classifier(a, linear_probe=False))


def _add_reconstruct(subparsers: argparse._SubParsersAction) -> None:
    rec = subparsers.add_parser(
        "reconstruct",
        help="write a PNG (or JPEG) of MAE reconstructions of images",
        description="Mask the images, reconstruct them with a pretrained MAE and write a grid: "
        "original, masked, "
        "reconstruction, and reconstruction with the visible patches pasted back.",
    )
    rec.add_argument(
        "images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, GIF, BMP, WebP)"
    )
    rec.add_argument(
        "--model", required=True, help="MAE checkpoint: directory, weights file or Hub id"
    )
    rec.add_argument(
        "--output",
        default="reconstruction.png",
        help="image to write, PNG or JPEG by its suffix; never one of the inputs "
        "(default: %(default)s)",
    )
    rec.add_argument(
        "--mask-ratio", type=FRACTION, help="fraction of patches masked (default: the model's)"
    )
    rec.add_argument("--seed", type=int, default=0, help="seed of the mask (default: 0)")
    rec.set_defaults(func=commands.reconstruct)


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    exp = subparsers.add_parser(
        "export",
        help="export a SavedModel for TensorFlow Serving, or an ONNX or LiteRT file",
        description="Write MODEL as EXPORT_BASE/VERSION/saved_model.pb + variables/, the layout "
        "TensorFlow Serving loads. Signatures: serving_default (encoder features), "
        "reconstruct[_with_seed] for pretraining models, classify for classifiers, each also "
        "taking encoded image bytes (_image_bytes) and uint8 images (_uint8). With --format onnx "
        "or litert, EXPORT_BASE is the file to write: features, classify or reconstruct (with "
        "an explicit noise input), each also as _uint8 (ONNX: one of them, see --signature; "
        "LiteRT: all). With --format keras-hub, EXPORT_BASE is a new keras-hub preset "
        "directory: a ViTBackbone, or a ViTImageClassifier for a CLS classifier.",
    )
    exp.add_argument("model", metavar="MODEL", help="checkpoint directory, weights file or Hub id")
    exp.add_argument(
        "export_base",
        metavar="EXPORT_BASE",
        help="model base directory of TF Serving (the file for onnx and litert, the preset "
        "directory for keras-hub)",
    )
    exp.add_argument(
        "--format",
        choices=("tf_saved_model", "onnx", "litert", "keras-hub"),
        default="tf_saved_model",
        help="tf_saved_model (default), onnx (needs tfvitmae[onnx]), litert "
        "(needs tfvitmae[litert]) or keras-hub (a preset directory; needs tfvitmae[keras-hub])",
    )
    exp.add_argument(
        "--signature",
        help="onnx and litert: the function to write (default: the model's own for onnx, "
        "all for litert)",
    )
    exp.add_argument(
        "--quantize",
        metavar="int8",
        help="onnx and litert: write an int8 file for CPU serving (float32 in and out), "
        "refused if it is too far from the float32 model (see --min-cosine)",
    )
    exp.add_argument(
        "--calibration-images",
        metavar="DIR",
        help="--quantize: a folder of images to calibrate on (the quantization is then static: "
        "onnx QDQ, litert full-integer; else dynamic) and to check the int8 file on",
    )
    exp.add_argument(
        "--min-cosine",
        type=UNIT,
        help="--quantize: the lowest per-image cosine similarity of the features to float32 "
        "accepted (default: 0.99)",
    )
    exp.add_argument(
        "--min-agreement",
        type=UNIT,
        help="--quantize: the lowest top-1 agreement with float32 accepted for a classifier "
        "(default: 0.99)",
    )
    exp.add_argument(
        "--version",
        type=NON_NEGATIVE_INT,
        help="tf_saved_model: version sub-directory, must be new (default: 1)",
    )
    exp.add_argument(
        "--no-raw-inputs",
        action="store_true",
        help="tf_saved_model: skip the image-bytes and uint8 signatures",
    )
    exp.add_argument(
        "--warmup",
        action="store_true",
        help="tf_saved_model: write assets.extra/tf_serving_warmup_requests (needs "
        "tensorflow-serving-api)",
    )
    exp.add_argument(
        "--top-k",
        type=POSITIVE_INT,
        help="tf_saved_model: classes in classify's top-k outputs (default: 5)",
    )
    exp.add_argument(
        "--max-batch",
        type=POSITIVE_INT,
        help="tf_saved_model: the most images one request may hold; larger requests are "
        "refused (default: 256)",
    )
    exp.set_defaults(func=commands.export)


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between PyTorch and Keras layouts",
        description="Load a ViTMAE checkpoint (a directory, a weights file or a Hub repo id; "
        "transformers "
        "safetensors/.bin, original MAE .pth, Hugging Face's legacy tf_model.h5 or tfvitmae's own "
        "weights) and "
        "write it to DST: PyTorch checkpoints become tfvitmae Keras weights and tfvitmae weights "
        "become a "
        "transformers-loadable model.safetensors, unless --to says otherwise. Prints what was "
        "mapped.",
    )
    convert.add_argument(
        "src", metavar="SRC", help="checkpoint directory, weights file or Hub repo id"
    )
    convert.add_argument("dst", metavar="DST", help="output directory (created if missing)")
    convert.add_argument(
        "--to",
        choices=("keras", "pytorch", "vit"),
        help="output layout (default: the other one); vit: the encoder in transformers' ViT "
        "layout, which transformers.ViTModel loads",
    )
    convert.add_argument(
        "--encoder-only", action="store_true", help="convert the encoder only (TFViTMAEModel)"
    )
    convert.add_argument(
        "--bin", action="store_true", help="with --to pytorch, write pytorch_model.bin"
    )
    convert.add_argument(
        "--no-strict", action="store_true", help="load what fits instead of failing on mismatch"
    )
    convert.set_defaults(func=commands.convert)


def main(argv: list[str] | None = None) -> int:
    """Run the `tfvitmae` command line on `argv` (default: `sys.argv[1:]`); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # TensorFlow's start-up lines (no GPU found, CPU features, absl, AutoGraph)
    # are not for a command's user; its errors still show. --verbose (or
    # TF_CPP_MIN_LOG_LEVEL set by the user) brings them back.
    if not args.verbose:
        from ..utils.backend import import_tensorflow_quietly

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import_tensorflow_quietly()
    try:
        commands.check_output_paths(args)
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: what was saved, not where Python was
        argv = sys.argv[1:] if argv is None else argv
        print(f"tfvitmae {args.command}: {commands.interrupted(args, argv)}", file=sys.stderr)
        return 130  # the shell's status for a process stopped by SIGINT
    except (
        ValueError,
        OSError,
        ImportError,
        FloatingPointError,
    ) as e:  # bad input: a message, not a traceback
        print(f"tfvitmae {args.command}: error: {e}", file=sys.stderr)
        return 1
    except RecursionError:  # a file nested beyond what a reader can follow
        print(
            f"tfvitmae {args.command}: error: an input is nested too deeply to read "
            "(a hostile or broken file)",
            file=sys.stderr,
        )
        return 1
    except MemoryError as e:
        reason = e or "no details"
        print(f"tfvitmae {args.command}: error: out of memory: {reason}", file=sys.stderr)
        return 1
    except Exception as e:
        tf = sys.modules.get("tensorflow")  # only TensorFlow raises its errors
        if tf is None or not isinstance(e, tf.errors.ResourceExhaustedError):
            raise
        from ..data.decoding import tf_error_reason

        print(
            f"tfvitmae {args.command}: error: out of memory: {tf_error_reason(e)}; try a smaller "
            "--batch-size, image size or model",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
