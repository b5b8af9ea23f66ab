"""`tfvitmae demo`: MAE's two stages on real images, offline, in about two minutes.

The images are scikit-learn's bundled handwritten digits (1,797 scans of 8x8
pixels that ship inside the package, so nothing is downloaded), upsampled to
32x32 and cut into 16 patches of 8x8. The demo follows the paper's protocol
at a scale two CPU cores finish in about two minutes:

1. pretrain a small MAE on the 1,437 training digits, without their labels
   (75% of the patches masked, pixel targets);
2. score its reconstructions of held-out digits against two baselines: the
   training set's mean image and the same model before training;
3. with 1, 5, 10 and all labelled digits per class, fine-tune and
   linear-probe the pretrained encoder, train the same architecture from
   random initialisation, and fit a logistic regression and 1-nearest-neighbour
   on the raw 8x8 pixels (`training/label_efficiency.py`): the
   label-efficiency table.
"""

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from ..data.image_processor import ViTMAEImageProcessor
    from ..models.config import ViTMAEConfig
    from ..models.vit_mae import TFViTMAEForPreTraining, TFViTMAEPreTrainedModel

__all__ = [
    "DEMO_IMAGE_SIZE",
    "FEW_LABELS",
    "FINETUNE",
    "LABEL_EFFICIENCY",
    "PASSES_PER_EPOCH",
    "PRETRAIN",
    "PROBE",
    "SCRATCH",
    "TEST_SIZE",
    "demo_config",
    "fit_classifier",
    "load_dataset",
    "load_digits_images",
    "masked_patch_mse",
    "reconstruction_baselines",
    "run_demo",
    "split_digits",
]

DEMO_IMAGE_SIZE = 32
TEST_SIZE = 360

# Found by a sweep on this data (CHANGELOG.md, "The demo shows MAE working",
# gives the results): no augmentation (the random masks are augmentation
# enough; shifts and crops slowed learning), small batches for many steps,
# and a 1-layer decoder.
PRETRAIN: dict[str, Any] = dict(epochs=150, batch_size=128, base_lr=3e-3, warmup_epochs=10)
PASSES_PER_EPOCH = 15
# Fine-tuning as MAE does it (mean pooling, layer-wise lr decay, stochastic
# depth, label smoothing); from scratch the same, without layer decay, which
# only makes sense for a pretrained encoder, and with its own best lr.
FINETUNE = dict(base_lr=3e-3, layer_decay=0.75, drop_path_rate=0.1, label_smoothing=0.1)
SCRATCH = dict(base_lr=1e-2, layer_decay=1.0, drop_path_rate=0.1, label_smoothing=0.1)
PROBE = dict(base_lr=0.1, layer_decay=1.0, drop_path_rate=0.0, label_smoothing=0.0)
# The label-efficiency table: every network trains for `steps` optimizer
# steps on batches of `batch_size` drawn from its labelled set, whatever the
# set's size; `draws` random subsets of each small size. With so few steps one
# recipe was best for both the pretrained network and the one from scratch
# (a sweep of base_lr 1.5e-2, 3e-2, 6e-2 and layer decay 0.75 or none), and
# sharing it lets both train through one compiled step.
LABEL_EFFICIENCY: dict[str, Any] = dict(
    labels_per_class=(1, 5, 10, None), draws=3, steps=100, batch_size=64
)
FEW_LABELS = dict(base_lr=3e-2, layer_decay=0.75, drop_path_rate=0.1, label_smoothing=0.1)


def load_digits_images(image_size: int = DEMO_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 `(n, image_size, image_size, 1)` and int labels `(n,)`."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)  # (n, 8, 8, 1) in [0, 255]
    images = tf.image.resize(images, (image_size, image_size), method="bicubic").numpy()
    return np.clip(np.round(images), 0, 255).astype("uint8"), digits.target.astype("int64")


def split_digits(seed: int = 0, test_size: int = TEST_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """`(train, test)` index arrays of the digits: a fixed random split."""
    order = np.random.default_rng(seed).permutation(1797)
    return order[test_size:], order[:test_size]


def load_dataset(
    name: str = "digits",
    image_size: int = DEMO_IMAGE_SIZE,
    seed: int = 0,
    test_size: int = TEST_SIZE,
) -> tuple:
    """Images for the demo and the notebooks, as uint8 channels-last arrays.

    Args:
        name: `"digits"` (scikit-learn's bundled digits, offline),
            `"cifar10"` (`keras.datasets`, downloaded once; the first
            `test_size` test images are held out), or a folder of images with
            one sub-folder per class (a stratified `test_size` held out).
        image_size: Images are resized to `image_size` squared.

    Returns:
        `(train_images, train_labels, test_images, test_labels, class_names)`.
    """
    if name == "digits":
        images, labels = load_digits_images(image_size)
        train, test = split_digits(seed, test_size)
        classes = [str(i) for i in range(10)]
        return images[train], labels[train], images[test], labels[test], classes
    import tensorflow as tf

    def resized(images):
        images = tf.image.resize(images, (image_size, image_size), antialias=True)
        return np.clip(np.round(images.numpy()), 0, 255).astype("uint8")

    if name == "cifar10":
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
        classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
        return (
            resized(x_train),
            y_train[:, 0].astype("int64"),
            resized(x_test[:test_size]),
            y_test[:test_size, 0].astype("int64"),
            classes,
        )
    from ..data.decoding import load_images
    from ..data.folders import check_labelled, list_image_files, split_files

    paths, folder_labels, classes, _ = list_image_files(name)
    check_labelled(paths, folder_labels, name)
    fraction = min(test_size / len(paths), 0.5)
    (train_paths, train_labels), (test_paths, test_labels) = split_files(
        paths, folder_labels, val_fraction=fraction, seed=seed
    )

    def load(paths):
        return np.stack([resized(image[None])[0] for image in load_images(list(paths))])

    return (
        load(train_paths),
        np.asarray(train_labels, "int64"),
        load(test_paths),
        np.asarray(test_labels, "int64"),
        classes or ["images"],
    )


def demo_config() -> "ViTMAEConfig":
    """A small ViTMAE for 32x32 one-channel images (16 patches of 8x8)."""
    from ..models.config import ViTMAEConfig

    return ViTMAEConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        decoder_hidden_size=64,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=128,
        image_size=DEMO_IMAGE_SIZE,
        patch_size=8,
        num_channels=1,
        mask_ratio=0.75,
        # Plain pixel targets: the masked-patch MSE then compares directly with
        # the baselines, and at this scale they gave the better encoder.
        norm_pix_loss=False,
        layer_norm_eps=1e-6,
    )


def masked_patch_mse(
    model: "TFViTMAEForPreTraining",
    pixel_values: np.ndarray,
    noise: np.ndarray,
    predicted_patches: np.ndarray | None = None,
) -> float:
    """Mean squared error over the masked patches of `pixel_values`.

    Args:
        model: A `TFViTMAEForPreTraining` with `norm_pix_loss=False`.
        pixel_values: Normalised images in the model's layout.
        noise: `(batch, num_patches)` masking noise: the same patches are
            scored for every model and baseline.
        predicted_patches: A baseline's `(batch, num_patches, patch_dim)`
            prediction; default the model's own.
    """
    if model.config.norm_pix_loss:
        raise ValueError("masked_patch_mse compares pixels: use a model with norm_pix_loss=False")
    out = model(pixel_values, noise=noise)
    prediction = out.logits if predicted_patches is None else predicted_patches
    target = model.patchify(pixel_values)
    per_patch = np.mean((np.asarray(prediction) - np.asarray(target)) ** 2, axis=-1)
    mask = np.asarray(out.mask)
    return float((per_patch * mask).sum() / mask.sum())


def reconstruction_baselines(
    model: "TFViTMAEForPreTraining",
    pixel_values: np.ndarray,
    noise: np.ndarray,
    train_pixel_values: np.ndarray,
) -> dict:
    """The masked-patch MSE (`masked_patch_mse`) of `model` as it is now
    (call it before training) and of predicting the mean of `train_pixel_values`.

    Returns:
        `{"untrained": mse, "mean_image": mse}`.
    """
    mean_image = np.mean(np.asarray(train_pixel_values), axis=0, keepdims=True)
    mean_patches = model.patchify(np.broadcast_to(mean_image, np.shape(pixel_values)))
    return dict(
        untrained=masked_patch_mse(model, pixel_values, noise),
        mean_image=masked_patch_mse(model, pixel_values, noise, predicted_patches=mean_patches),
    )


def run_demo(
    output_dir: str = "tfvitmae-demo",
    epochs: int = PRETRAIN["epochs"],
    steps: int = LABEL_EFFICIENCY["steps"],
    draws: int = LABEL_EFFICIENCY["draws"],
    batch_size: int = PRETRAIN["batch_size"],
    seed: int = 0,
    verbose: int = 0,
) -> dict:
    """Pretrain, reconstruct, then the label-efficiency table, printing every number.

    Args:
        epochs: Pretraining passes over the training digits.
        steps: Optimizer steps of every classifier network in the table.
        draws: Random labelled subsets of each small size (1, 5, 10 per class).
        batch_size: The pretraining batch size.

    Writes `output_dir/` (the pretrained MAE, loadable with `from_pretrained`,
    with its run's log), `output_dir/reconstruction.png` (original, masked,
    reconstruction, reconstruction with the visible patches; one held-out
    digit per row) and `output_dir/finetuned/` (the encoder fine-tuned on all
    the labels).

    Returns:
        A dict of every number printed (`masked_mse`, `mean_image_mse`,
        `untrained_mse`; `label_efficiency`, the table's rows as
        `training.label_efficiency.label_efficiency` returns them; and from
        its all-labels row `finetune_accuracy`, `probe_accuracy`,
        `scratch_accuracy`, `pixel_logistic_regression`, `pixel_nearest_neighbour`),
        the pretraining's Keras `history` and `reconstruction` (the PNG path).
    """
    import keras

    from ..models.vit_mae import TFViTMAEForPreTraining
    from ..training.label_efficiency import METHODS

    start = time.time()
    keras.utils.set_random_seed(seed)
    data = _demo_data(batch_size=batch_size, seed=seed, start=start)
    model = TFViTMAEForPreTraining(data.config, seed=seed, image_processor=data.processor)
    scores = _baseline_scores(data, model)
    history = _pretrain_stage(data, model, output_dir=output_dir, epochs=epochs, verbose=verbose)
    scores["masked_mse"] = masked_patch_mse(model, data.held_out, data.noise)
    grid = _reconstruction_stage(data, model, history=history, scores=scores, output_dir=output_dir)
    rows = _label_efficiency_stage(data, model, output_dir=output_dir, steps=steps, draws=draws)
    everything = {method: float(np.mean(rows[-1][method])) for method in METHODS}
    scores.update(
        label_efficiency=rows,
        finetune_accuracy=everything["fine-tuned"],
        probe_accuracy=everything["probe"],
        scratch_accuracy=everything["scratch"],
        pixel_logistic_regression=everything["pixels LR"],
        pixel_nearest_neighbour=everything["pixels 1-NN"],
    )
    _print_summary(data, rows, output_dir)
    return dict(scores, history=history, reconstruction=grid)


@dataclasses.dataclass
class _DemoData:
    """What the demo's stages share: the digits and their split, the model's
    config and preprocessing, and the held-out pixels with their masking noise."""

    images: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    config: "ViTMAEConfig"
    processor: "ViTMAEImageProcessor"
    batch_size: int
    seed: int
    start: float

    @functools.cached_property
    def held_out(self) -> np.ndarray:
        """The held-out digits' `pixel_values`."""
        return self.pixels(self.test)

    @functools.cached_property
    def train_pixels(self) -> np.ndarray:
        """The training digits' `pixel_values`, in `train` order."""
        return self.pixels(self.train)

    @functools.cached_property
    def noise(self) -> np.ndarray:
        """Fixed masking noise for the held-out digits, the same for every score."""
        shape = (len(self.test), self.config.num_patches)
        return np.random.default_rng(self.seed + 1).random(shape, "float32")

    def batches(self, idx: np.ndarray, **kwargs):
        """`make_dataset` of the digits `idx`, unaugmented."""
        from ..data.pipeline import make_dataset

        return make_dataset(
            self.images[idx],
            batch_size=self.batch_size,
            processor=self.processor,
            labels=self.labels[idx],
            num_channels=1,
            augment=False,
            seed=self.seed,
            **kwargs,
        )

    def pixels(self, idx: np.ndarray) -> np.ndarray:
        """The normalised `pixel_values` of the digits `idx`, in order."""
        return np.concatenate(list(self.batches(idx, shuffle=False).as_numpy_iterator()))

    def elapsed(self) -> str:
        return f"{time.time() - self.start:.0f}s"


def _demo_data(batch_size: int, seed: int, start: float) -> _DemoData:
    """The digits, split, with their preprocessing, held-out pixels and masking noise."""
    from ..data.image_processor import ViTMAEImageProcessor

    images, labels = load_digits_images()
    train, test = split_digits(seed)
    config = demo_config()
    # The digits' own statistics, saved with the model (preprocessor_config.json).
    processor = ViTMAEImageProcessor(
        size=DEMO_IMAGE_SIZE,
        image_mean=[float(images[train].mean()) / 255],
        image_std=[float(images[train].std()) / 255],
    )
    data = _DemoData(
        images=images,
        labels=labels,
        train=train,
        test=test,
        config=config,
        processor=processor,
        batch_size=batch_size,
        seed=seed,
        start=start,
    )
    return data


def _baseline_scores(data: _DemoData, model: "TFViTMAEForPreTraining") -> dict:
    """The reconstruction baselines (`model` untrained); prints the header."""
    baselines = reconstruction_baselines(
        model, data.held_out, data.noise, train_pixel_values=data.train_pixels
    )
    scores = dict(untrained_mse=baselines["untrained"], mean_image_mse=baselines["mean_image"])
    config = data.config
    print(
        f"tfvitmae demo: a {model.count_params():,}-parameter MAE on {len(data.train)} real digit "
        f"images ({config.image_size}x{config.image_size}, {config.num_patches} patches, "
        f"{config.mask_ratio:.0%} masked); {len(data.test)} held-out digits score every stage"
    )
    return scores


def _pretrain_stage(
    data: _DemoData, model: "TFViTMAEForPreTraining", output_dir: str, epochs: int, verbose: int
) -> "keras.callbacks.History":
    """Stage 1: MAE pretraining of `model` with `model.fit`; its `History`."""
    from ..training.recipes import pretrain
    from ..training.runs import read_run

    # Keras closes every epoch with a checkpoint; on 1,437 images that costs
    # about as much as the epoch's training, so a Keras epoch here is several passes.
    passes = math.gcd(epochs, PASSES_PER_EPOCH)
    print(
        f"1/2 pretraining: {epochs} passes over the images "
        f"({epochs // passes} epochs of {passes}, a checkpoint after each) ...",
        flush=True,
    )
    printer = _loss_printer(passes, max(1, epochs // 5), data.elapsed)
    return pretrain(
        model,
        data.batches(data.train, drop_remainder=True, repeat=True),
        epochs=epochs // passes,
        steps_per_epoch=len(data.train) // data.batch_size * passes,
        batch_size=data.batch_size,
        output_dir=output_dir,
        base_lr=PRETRAIN["base_lr"],
        warmup_epochs=min(PRETRAIN["warmup_epochs"], max(1, epochs // 10)) / passes,
        overwrite=read_run(output_dir) is not None,  # a previous demo run; other files stay
        callbacks=[] if verbose else [printer],
        verbose=verbose,
    )


def _reconstruction_stage(data: _DemoData, model, history, scores: dict, output_dir: str) -> str:
    """Writes the reconstruction grid and prints the masked-patch MSEs; the PNG path."""
    from ..training.visualization import write_reconstruction_grid

    losses = history.history["loss"]
    grid = write_reconstruction_grid(
        model, data.held_out[:8], os.path.join(output_dir, "reconstruction.png"), seed=data.seed
    )
    print(
        f"    loss {losses[0]:.3f} -> {losses[-1]:.3f}; masked-patch MSE on held-out digits "
        f"{scores['masked_mse']:.3f}, against {scores['mean_image_mse']:.3f} for the training "
        f"set's mean image and {scores['untrained_mse']:.3f} before training ({data.elapsed()})"
    )
    print(f"    wrote {grid}")
    return grid


def _label_efficiency_stage(
    data: _DemoData, model: "TFViTMAEForPreTraining", output_dir: str, steps: int, draws: int
) -> list[dict]:
    """Stage 2: the label-efficiency table, printed row by row; saves the
    encoder fine-tuned on all the labels in `output_dir/finetuned`."""
    from ..models.vit_mae import TFViTMAEForPreTraining
    from ..training.label_efficiency import format_table, label_efficiency

    sizes = LABEL_EFFICIENCY["labels_per_class"]
    small = ", ".join(str(n) for n in sizes if n is not None)
    print(
        f"2/2 label efficiency: {small} and all labelled digits per class ({draws} random "
        f"draws of each small set; every network trains for {steps} steps of "
        f"{LABEL_EFFICIENCY['batch_size']}) ...",
        flush=True,
    )
    raw = load_digits_images(8)[0] / 255.0  # the digits' own pixels, before upsampling
    print(format_table([], indent="    "), flush=True)

    def print_row(row):
        line = format_table([row], indent="    ").splitlines()[1]
        print(f"{line}  ({data.elapsed()})", flush=True)

    rows, finetuned = label_efficiency(
        model,
        TFViTMAEForPreTraining(data.config, seed=data.seed + 1),
        pixel_values=(data.train_pixels, data.held_out),
        labels=(data.labels[data.train], data.labels[data.test]),
        raw_pixels=(raw[data.train], raw[data.test]),
        finetune=FEW_LABELS,
        scratch=FEW_LABELS,
        labels_per_class=sizes,
        draws=draws,
        steps=steps,
        batch_size=LABEL_EFFICIENCY["batch_size"],
        seed=data.seed,
        on_row=print_row,
    )
    finetuned.save_pretrained(os.path.join(output_dir, "finetuned"))
    return rows


def _print_summary(data: _DemoData, rows: list[dict], output_dir: str) -> None:
    """The table's legend, and what it says at 10 labels per class."""
    from ..training.label_efficiency import METHODS

    mean = {(row["labels_per_class"], m): 100 * np.mean(row[m]) for row in rows for m in METHODS}
    sizes = [row["labels_per_class"] for row in rows]
    # The MAE column: the better of fine-tuning and probing over all the rows.
    mae = max(("fine-tuned", "probe"), key=lambda m: sum(mean[size, m] for size in sizes))
    print(
        f"    accuracy % on the {len(data.test)} held-out digits, mean ± std over the draws "
        f"({data.elapsed()} in all).\n"
        "    fine-tuned, probe: the MAE-pretrained encoder, trained whole, or frozen under a "
        "logistic regression;\n"
        "    scratch, random probe: the same network from random initialisation, the same ways;\n"
        "    pixels: the digits' raw 8x8 pixels."
    )
    size = 10 if 10 in sizes else sizes[-1]
    pixels = max(mean[size, "pixels LR"], mean[size, "pixels 1-NN"])
    print(
        f"    with {size} labels per class, the MAE {mae} scores {mean[size, mae]:.1f}%: "
        f"{mean[size, mae] - pixels:+.1f} points from the better pixel baseline, "
        f"{mean[size, mae] - mean[size, 'scratch']:+.1f} from scratch"
    )
    print(
        f"saved the pretrained MAE in {output_dir}/ and the encoder fine-tuned on all the "
        f"labels in {output_dir}/finetuned/ (from_pretrained loads both)"
    )


def _loss_printer(passes_per_epoch: int, every: int, elapsed: Callable[[], str]):
    """A callback printing the loss every `every` passes over the data."""
    import keras

    def on_epoch_end(epoch, logs):
        done = (epoch + 1) * passes_per_epoch
        if done % every == 0:
            print(f"    {done} passes: loss {logs['loss']:.3f} ({elapsed()})", flush=True)

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def fit_classifier(
    encoder: "TFViTMAEPreTrainedModel",
    epochs: int,
    recipe: dict,
    train: "tf.data.Dataset",
    test: "tf.data.Dataset",
    batch_size: int,
    seed: int,
    linear_probe: bool = False,
    jit_compile: bool = False,
) -> tuple:
    """A mean-pooled classifier on `encoder`'s weights, trained with `recipe`.

    Args:
        encoder: A pretrained (or randomly initialised) ViTMAE model.
        epochs: Training epochs (warmup: a tenth of them).
        recipe: `FINETUNE`, `SCRATCH` or `PROBE`: `base_lr`, `layer_decay`,
            `drop_path_rate` and `label_smoothing`.
        train, test: Labelled batches; `test` is scored after every epoch.
        linear_probe: Freeze the encoder (MAE's probe head).
        jit_compile: Off by default: compiling the step with XLA takes longer
            than a few short epochs on small images gain from it.

    Returns:
        `(classifier, history)`; `history.history["val_accuracy"]` is the
        accuracy on `test` after each epoch.
    """
    from ..models.classification import TFViTMAEForImageClassification
    from ..training.recipes import train_classifier

    classifier = TFViTMAEForImageClassification.from_encoder(
        encoder,
        num_labels=10,
        pooling="mean",
        linear_probe=linear_probe,
        drop_path_rate=recipe["drop_path_rate"],
        seed=seed,
    )
    history = train_classifier(
        classifier,
        train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=test,
        base_lr=recipe["base_lr"],
        layer_decay=recipe["layer_decay"],
        label_smoothing=recipe["label_smoothing"],
        warmup_epochs=max(1, epochs // 10),
        jit_compile=jit_compile,
        verbose=0,
    )
    return classifier, history
