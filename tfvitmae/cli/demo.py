"""`tfvitmae demo`: MAE's two stages on real images, offline, in minutes.

The images are scikit-learn's bundled handwritten digits (1,797 scans of 8x8
pixels that ship inside the package, so nothing is downloaded), upsampled to
32x32 and cut into 16 patches of 8x8. The demo follows the paper's protocol
at a scale two CPU cores finish in about three minutes:

1. pretrain a small MAE (75% of the patches masked, pixel targets);
2. score its reconstructions of held-out digits against two baselines: the
   training set's mean image and the same model before training;
3. fine-tune the pretrained encoder and, with the same budget and a recipe
   of its own, the same architecture from random initialisation; also
   linear-probe the pretrained encoder;
4. print a logistic regression on the raw 8x8 pixels beside them.
"""

import math
import os
import time

import numpy as np

DEMO_IMAGE_SIZE = 32
TEST_SIZE = 360

# Found by a sweep on this data (see CHANGELOG 0.4): no augmentation (the
# random masks are augmentation enough; shifts and crops slowed learning),
# small batches for many steps, and a 1-layer decoder.
PRETRAIN = dict(epochs=150, batch_size=128, base_lr=3e-3, warmup_epochs=10)
PASSES_PER_EPOCH = 5
# Fine-tuning as MAE does it (mean pooling, layer-wise lr decay, stochastic
# depth, label smoothing); from scratch the same, without layer decay, which
# only makes sense for a pretrained encoder, and with its own best lr.
FINETUNE = dict(base_lr=3e-3, layer_decay=0.75, drop_path_rate=0.1, label_smoothing=0.1)
SCRATCH = dict(base_lr=1e-2, layer_decay=1.0, drop_path_rate=0.1, label_smoothing=0.1)
PROBE = dict(base_lr=0.1, layer_decay=1.0, drop_path_rate=0.0, label_smoothing=0.0)


def load_digits_images(image_size=DEMO_IMAGE_SIZE):
    """The digits as uint8 `(n, image_size, image_size, 1)` and int labels `(n,)`."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)  # (n, 8, 8, 1) in [0, 255]
    images = tf.image.resize(images, (image_size, image_size), method="bicubic").numpy()
    return np.clip(np.round(images), 0, 255).astype("uint8"), digits.target.astype("int64")


def split_digits(seed=0, test_size=TEST_SIZE):
    """`(train, test)` index arrays of the digits: a fixed random split."""
    order = np.random.default_rng(seed).permutation(1797)
    return order[test_size:], order[:test_size]


def load_dataset(name="digits", image_size=DEMO_IMAGE_SIZE, seed=0, test_size=TEST_SIZE):
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
    from .image_folders import list_image_files, split_files
    from .image_processor import load_images

    paths, labels, classes, _ = list_image_files(name)
    fraction = min(test_size / len(paths), 0.5)
    (train_paths, train_labels), (test_paths, test_labels) = split_files(
        paths, labels, fraction, seed
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


def demo_config():
    """A small ViTMAE for 32x32 one-channel images (16 patches of 8x8)."""
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
        patch_size=8,
        num_channels=1,
        mask_ratio=0.75,
        # Plain pixel targets: the masked-patch MSE then compares directly with
        # the baselines, and at this scale they gave the better encoder.
        norm_pix_loss=False,
        layer_norm_eps=1e-6,
    )


def masked_patch_mse(model, pixel_values, noise, predicted_patches=None):
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


def reconstruction_baselines(model, pixel_values, noise, train_pixel_values):
    """The masked-patch MSE (`masked_patch_mse`) of `model` as it is now
    (call it before training) and of predicting the mean of `train_pixel_values`.

    Returns:
        `{"untrained": mse, "mean_image": mse}`.
    """
    mean_image = np.mean(np.asarray(train_pixel_values), axis=0, keepdims=True)
    mean_patches = model.patchify(np.broadcast_to(mean_image, np.shape(pixel_values)))
    return dict(
        untrained=masked_patch_mse(model, pixel_values, noise),
        mean_image=masked_patch_mse(model, pixel_values, noise, mean_patches),
    )


def pixel_logistic_regression(train_images, train_labels, test_images, test_labels, seed=0):
    """Test accuracy of a logistic regression on raw pixels (images flattened,
    scaled to [0, 1]): the baseline any learned feature has to beat."""
    from sklearn.linear_model import LogisticRegression

    def flat(images):
        return np.asarray(images, "float32").reshape(len(images), -1) / 255.0

    classifier = LogisticRegression(max_iter=5000, random_state=seed)
    classifier.fit(flat(train_images), train_labels)
    return float(classifier.score(flat(test_images), test_labels))


def run_demo(
    output_dir="tfvitmae-demo",
    epochs=PRETRAIN["epochs"],
    finetune_epochs=10,
    probe_epochs=10,
    batch_size=PRETRAIN["batch_size"],
    seed=0,
    verbose=0,
):
    """Pretrain, reconstruct, fine-tune and probe on the digits, printing every number.

    Writes `output_dir/` (the pretrained MAE, loadable with `from_pretrained`,
    with its run's log), `output_dir/reconstruction.png` (original, masked,
    reconstruction, reconstruction with the visible patches; one held-out
    digit per row) and `output_dir/finetuned/` (the fine-tuned classifier).

    Returns:
        A dict of every number printed (`masked_mse`, `mean_image_mse`,
        `untrained_mse`, `finetune_accuracy`, `scratch_accuracy`,
        `probe_accuracy`, `pixel_logistic_regression`), the Keras `History`
        of each stage (`history`, `finetune_history`, `scratch_history`,
        `probe_history`; validation on the held-out digits) and
        `reconstruction` (the PNG path).
    """
    import keras

    from .data import make_dataset
    from .image_processor import ViTMAEImageProcessor
    from .modeling import TFViTMAEForPreTraining
    from .runs import read_run
    from .training import pretrain
    from .visualization import write_reconstruction_grid

    start = time.time()

    def elapsed():
        return f"{time.time() - start:.0f}s"

    keras.utils.set_random_seed(seed)
    images, labels = load_digits_images()
    train, test = split_digits(seed)
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
            augment=False,
            seed=seed,
            **kwargs,
        )

    def pixels(idx):
        return np.concatenate(list(batches(idx, shuffle=False).as_numpy_iterator()))

    held_out = pixels(test)
    noise = np.random.default_rng(seed + 1).random((len(test), config.num_patches), "float32")
    model = TFViTMAEForPreTraining(config, seed=seed, image_processor=processor)
    baselines = reconstruction_baselines(model, held_out, noise, pixels(train))
    scores = dict(
        # On the digits' own 8x8 pixels, before upsampling.
        pixel_logistic_regression=pixel_logistic_regression(*load_dataset(image_size=8)[:4]),
        untrained_mse=baselines["untrained"],
        mean_image_mse=baselines["mean_image"],
    )
    print(
        f"tfvitmae demo: a {model.count_params():,}-parameter MAE on {len(train)} real digit "
        f"images ({config.image_size}x{config.image_size}, {config.num_patches} patches, "
        f"{config.mask_ratio:.0%} masked); {len(test)} held-out digits score every stage"
    )
    # Keras closes every epoch with a checkpoint; on 1,437 images that costs
    # about as much as the epoch's training, so a Keras epoch here is several passes.
    passes = math.gcd(epochs, PASSES_PER_EPOCH)
    print(
        f"1/3 pretraining: {epochs} passes over the images "
        f"({epochs // passes} epochs of {passes}, a checkpoint after each) ...",
        flush=True,
    )
    history = pretrain(
        model,
        batches(train, drop_remainder=True, repeat=True),
        epochs=epochs // passes,
        steps_per_epoch=len(train) // batch_size * passes,
        batch_size=batch_size,
        output_dir=output_dir,
        base_lr=PRETRAIN["base_lr"],
        warmup_epochs=min(PRETRAIN["warmup_epochs"], max(1, epochs // 10)) / passes,
        overwrite=read_run(output_dir) is not None,  # a previous demo run; other files stay
        callbacks=[] if verbose else [_loss_printer(passes, max(1, epochs // 5), elapsed)],
        verbose=verbose,
    )
    losses = history.history["loss"]
    scores["masked_mse"] = masked_patch_mse(model, held_out, noise)
    grid = write_reconstruction_grid(
        model, held_out[:8], os.path.join(output_dir, "reconstruction.png"), seed=seed
    )
    print(
        f"    loss {losses[0]:.3f} -> {losses[-1]:.3f}; masked-patch MSE on held-out digits "
        f"{scores['masked_mse']:.3f}, against {scores['mean_image_mse']:.3f} for the training "
        f"set's mean image and {scores['untrained_mse']:.3f} before training ({elapsed()})"
    )
    print(f"    wrote {grid}")

    print(f"2/3 fine-tuning, {finetune_epochs} epochs each ...", flush=True)
    labelled = dict(
        train=batches(train, with_labels=True),
        test=batches(test, with_labels=True, shuffle=False),
        batch_size=batch_size,
        seed=seed,
    )
    finetuned, finetune_history = fit_classifier(model, finetune_epochs, FINETUNE, **labelled)
    finetuned.save_pretrained(os.path.join(output_dir, "finetuned"))
    scratch = TFViTMAEForPreTraining(config, seed=seed + 1, image_processor=processor)
    _, scratch_history = fit_classifier(scratch, finetune_epochs, SCRATCH, **labelled)
    print(f"3/3 linear probe, {probe_epochs} epochs ... ({elapsed()})", flush=True)
    _, probe_history = fit_classifier(model, probe_epochs, PROBE, linear_probe=True, **labelled)
    scores.update(
        finetune_accuracy=finetune_history.history["val_accuracy"][-1],
        scratch_accuracy=scratch_history.history["val_accuracy"][-1],
        probe_accuracy=probe_history.history["val_accuracy"][-1],
    )
    print(
        f"accuracy on the {len(test)} held-out digits ({elapsed()} in all):\n"
        f"    fine-tuned, MAE-pretrained encoder   {scores['finetune_accuracy']:.1%}\n"
        f"    trained from random initialisation   {scores['scratch_accuracy']:.1%}\n"
        f"    linear probe, MAE-pretrained encoder {scores['probe_accuracy']:.1%}\n"
        f"    logistic regression on raw pixels    {scores['pixel_logistic_regression']:.1%}"
    )
    print(
        f"saved the pretrained MAE in {output_dir}/ and the fine-tuned classifier in "
        f"{output_dir}/finetuned/ (from_pretrained loads both)"
    )
    return dict(
        scores,
        history=history,
        finetune_history=finetune_history,
        scratch_history=scratch_history,
        probe_history=probe_history,
        reconstruction=grid,
    )


def _loss_printer(passes_per_epoch, every, elapsed):
    """A callback printing the loss every `every` passes over the data."""
    import keras

    def on_epoch_end(epoch, logs):
        done = (epoch + 1) * passes_per_epoch
        if done % every == 0:
            print(f"    {done} passes: loss {logs['loss']:.3f} ({elapsed()})", flush=True)

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def fit_classifier(
    encoder, epochs, recipe, train, test, batch_size, seed, linear_probe=False, jit_compile=False
):
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
    from .classification import TFViTMAEForImageClassification
    from .training import train_classifier

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
