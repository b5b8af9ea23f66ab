"""`tfvitmae demo`: the two MAE stages on real images, offline, in minutes.

The images are scikit-learn's bundled handwritten digits (1,797 scans of 8x8
pixels that ship inside the package, so nothing is downloaded), upsampled to
32x32. The demo pretrains a small MAE, writes a reconstruction grid, then
linear-probes the pretrained encoder and a randomly initialised one the same
way and reports both test accuracies. The probe reads mean-pooled patch
features: a random ViT's CLS token is close to a linear map of the raw pixels,
which alone classify these tiny digits well, so mean pooling is the fairer
test of what pretraining learned.
"""

import os
import time

import numpy as np

DEMO_IMAGE_SIZE = 32


def load_digits_images(image_size=DEMO_IMAGE_SIZE):
    """The digits as uint8 `(n, image_size, image_size, 1)` and int labels `(n,)`."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)  # (n, 8, 8, 1) in [0, 255]
    images = tf.image.resize(images, (image_size, image_size), method="bicubic").numpy()
    return np.clip(np.round(images), 0, 255).astype("uint8"), digits.target.astype("int64")


def demo_config():
    """A small ViTMAE for 32x32 one-channel images (4x4 patches)."""
    from .config import ViTMAEConfig

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
        patch_size=4,
        num_channels=1,
        # Plain pixel targets: better features than norm-pix at this tiny scale.
        norm_pix_loss=False,
        layer_norm_eps=1e-6,
    )


def run_demo(
    output_dir="tfvitmae-demo", epochs=30, probe_epochs=15, batch_size=128, seed=0, verbose=2
):
    """Pretrain, reconstruct and linear-probe on the digits.

    Writes `output_dir/` (`config.json` + `model.weights.h5`, loadable with
    `from_pretrained`) and `output_dir/reconstruction.png`.

    Returns:
        A dict with the pretraining `history`, `reconstruction` (the PNG path),
        `probe_accuracy` and `random_probe_accuracy`.
    """
    import keras

    from .classification import TFViTMAEForImageClassification
    from .data import make_dataset
    from .image_processor import ViTMAEImageProcessor
    from .modeling import TFViTMAEForPreTraining
    from .runs import read_run
    from .training import pretrain, train_classifier
    from .visualization import write_reconstruction_grid

    start = time.time()
    keras.utils.set_random_seed(seed)
    images, labels = load_digits_images()
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:360], order[360:]
    config = demo_config()
    # The digits' own statistics, saved with the model (preprocessor_config.json).
    processor = ViTMAEImageProcessor(
        size=DEMO_IMAGE_SIZE,
        image_mean=[float(images[train].mean()) / 255],
        image_std=[float(images[train].std()) / 255],
    )

    def batches(idx, **kwargs):
        return make_dataset(
            images[idx],
            batch_size=batch_size,
            processor=processor,
            labels=labels[idx],
            num_channels=1,
            seed=seed,
            **kwargs,
        )

    model = TFViTMAEForPreTraining(config, seed=seed, image_processor=processor)
    print(
        f"tfvitmae demo: pretraining a {model.count_params():,}-parameter MAE on {len(train)} "
        "real digit images "
        f"({config.image_size}x{config.image_size}, {config.mask_ratio:.0%} of patches masked), "
        f"{epochs} epochs"
    )
    sample = next(iter(batches(test[:8], augment=False, shuffle=False)))
    history = pretrain(
        model,
        batches(train, augment=False),
        epochs=epochs,
        batch_size=batch_size,
        output_dir=output_dir,
        base_lr=2e-3,
        warmup_epochs=max(1, epochs // 10),
        overwrite=read_run(output_dir) is not None,  # a previous demo run; other files stay
        verbose=verbose,
    )
    losses = history.history["loss"]
    print(f"pretraining loss {losses[0]:.3f} -> {losses[-1]:.3f} ({time.time() - start:.0f}s)")
    grid = write_reconstruction_grid(
        model, sample, os.path.join(output_dir, "reconstruction.png"), seed=seed
    )
    print(
        f"wrote {grid} (columns: original, masked, reconstruction, reconstruction + visible "
        "patches)"
    )

    def probe(encoder):
        classifier = TFViTMAEForImageClassification.from_encoder(
            encoder, num_labels=10, linear_probe=True, pooling="mean", seed=seed
        )
        train_classifier(
            classifier,
            batches(train, augment=False, with_labels=True),
            epochs=probe_epochs,
            batch_size=batch_size,
            base_lr=0.1,
            warmup_epochs=1,
            verbose=0,
        )
        return classifier.evaluate(
            batches(test, augment=False, shuffle=False, with_labels=True), verbose=0
        )[1]

    accuracy = probe(model)
    random_accuracy = probe(
        TFViTMAEForPreTraining(config, seed=seed + 1, image_processor=processor)
    )
    print(
        f"linear probe (mean-pooled features) on {len(test)} held-out digits: pretrained encoder "
        f"{accuracy:.1%}, randomly initialised encoder {random_accuracy:.1%} "
        f"({time.time() - start:.0f}s in all)"
    )
    print(
        f"saved the pretrained model in {output_dir}/ "
        f"(TFViTMAEForPreTraining.from_pretrained('{output_dir}'))"
    )
    return dict(
        history=history,
        reconstruction=grid,
        probe_accuracy=accuracy,
        random_probe_accuracy=random_accuracy,
    )
