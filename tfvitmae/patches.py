"""MAE's pixel side: `patchify`, `unpatchify`, the (normalised) pixel targets
and the masked-patch loss, as functions of channels-last tensors.

Within a patch the order is (row, column, channel), as in MAE's `patchify`.
"""

import tensorflow as tf
from keras import ops

# norm_pix_loss: per-patch (t - mean) / sqrt(var + eps), var unbiased as in PyTorch.
NORM_PIX_EPS = 1e-6


def patchify(images, patch_size):
    """Channels-last images -> `(batch, num_patches, patch_h * patch_w * channels)`."""
    patch_h, patch_w = patch_size
    _, height, width, channels = images.shape
    rows, cols = height // patch_h, width // patch_w
    x = ops.reshape(images, (-1, rows, patch_h, cols, patch_w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, rows * cols, patch_h * patch_w * channels))


def unpatchify(patches, patch_size, image_size, channels):
    """Inverse of `patchify`: channels-last images of `image_size = (height, width)`."""
    patch_h, patch_w = patch_size
    height, width = image_size
    rows, cols = height // patch_h, width // patch_w
    x = ops.reshape(patches, (-1, rows, cols, patch_h, patch_w, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, rows * patch_h, cols * patch_w, channels))


def patch_targets(images, patch_size, norm_pix_loss):
    """float32 target patches, and the per-patch `(mean, std)` that
    `norm_pix_loss` normalises them with (`None` without it)."""
    target = patchify(ops.cast(images, "float32"), patch_size)
    if not norm_pix_loss:
        return target, None
    mean = ops.mean(target, axis=-1, keepdims=True)
    # Unbiased variance (divide by n - 1), as torch.var in the reference.
    var = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (target.shape[-1] - 1)
    std = ops.sqrt(var + NORM_PIX_EPS)
    return (target - mean) / std, (mean, std)


def per_patch_error(images, logits, patch_size, norm_pix_loss):
    """Mean squared error of each patch's prediction, `(batch, num_patches)`."""
    target, _ = patch_targets(images, patch_size, norm_pix_loss)
    return ops.mean(ops.square(ops.cast(logits, "float32") - target), axis=-1)


def masked_mean(per_patch, mask, axis=None):
    """Mean of `per_patch` over the removed patches (`mask == 1`); 0 when none is."""
    mask = ops.cast(mask, "float32")
    return tf.math.divide_no_nan(ops.sum(per_patch * mask, axis=axis), ops.sum(mask, axis=axis))
