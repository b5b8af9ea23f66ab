"""`tfvitmae demo`: pretrain a small MAE on real images, offline, in minutes.

The images are scikit-learn's bundled handwritten digits (1,797 scans of
8x8 pixels, shipped inside the package, so no download is needed), upsampled
to `image_size` and normalised to zero mean and unit variance.
"""

import os
import time


def load_digits_images(image_size=32):
    """The scikit-learn digits as float32 `(n, 1, image_size, image_size)` in
    channels-first layout, normalised to zero mean and unit variance, plus
    their integer labels `(n,)`."""
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] / 16.0  # (n, 8, 8, 1) in [0, 1]
    images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = (images - images.mean()) / images.std()
    return np.transpose(images, (0, 3, 1, 2)).astype("float32"), digits.target.astype("int64")


def demo_config():
    """A small ViTMAE for 32x32 one-channel images (4x4 patches)."""
    from .config import ViTMAEConfig

    return ViTMAEConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        decoder_hidden_size=64,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=128,
        image_size=32,
        patch_size=4,
        num_channels=1,
        norm_pix_loss=True,
        layer_norm_eps=1e-6,
    )


def run_demo(output_dir="tfvitmae-demo", epochs=8, batch_size=64, seed=0, verbose=2):
    """Pretrain `demo_config()` on the digits with `model.fit` and save it.

    Writes `output_dir/model.keras` and `output_dir/config.json` and returns
    the Keras `History`.
    """
    import keras

    from .modeling import TFViTMAEForPreTraining

    keras.utils.set_random_seed(seed)
    images, _ = load_digits_images(32)
    config = demo_config()
    model = TFViTMAEForPreTraining(config, seed=seed)
    print(
        f"tfvitmae demo: pretraining a {model.count_params():,}-parameter MAE on {len(images)} "
        f"real digit images ({config.image_size}x{config.image_size}, mask ratio {config.mask_ratio})"
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, beta_1=0.9, beta_2=0.95, weight_decay=0.05))
    start = time.time()
    history = model.fit(images, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    losses = history.history["loss"]
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {time.time() - start:.0f}s")
    os.makedirs(output_dir, exist_ok=True)
    model.save(os.path.join(output_dir, "model.keras"))
    config.save_pretrained(output_dir)
    print(f"saved the model to {os.path.join(output_dir, 'model.keras')}")
    return history
