"""Shared builders for the tests: tiny configs, inputs and a NumPy reference."""

import numpy as np

from tfvitmae import ViTMAEConfig

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=24,
    image_size=32,
    patch_size=8,
)


def tiny_config(**overrides):
    return ViTMAEConfig(**{**TINY, **overrides})


def pixels(config, batch=2, seed=0, height=None, width=None, channels_last=False):
    """Random float32 images for `config`, channels-first unless asked."""
    height = height or config.image_hw[0]
    width = width or config.image_hw[1]
    x = np.random.default_rng(seed).normal(size=(batch, config.num_channels, height, width)).astype("float32")
    return np.transpose(x, (0, 2, 3, 1)) if channels_last else x


def noise_for(config, batch=2, seed=1, height=None, width=None):
    height = height or config.image_hw[0]
    width = width or config.image_hw[1]
    patch_h, patch_w = config.patch_hw
    n = (height // patch_h) * (width // patch_w)
    return np.random.default_rng(seed).random((batch, n)).astype("float32")


def numpy_patchify(images_nchw, patch):
    """Reference patchify by explicit loops: patch (r, c) -> row-major index,
    inside a patch (row, col, channel) order."""
    b, ch, h, w = images_nchw.shape
    rows, cols = h // patch, w // patch
    out = np.zeros((b, rows * cols, patch * patch * ch), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            block = images_nchw[:, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
            out[:, r * cols + c] = block.transpose(0, 2, 3, 1).reshape(b, -1)
    return out


def numpy_mae_loss(images_nchw, logits, mask, patch, norm_pix_loss):
    """The MAE loss in float64 NumPy, written from the paper's definition."""
    target = numpy_patchify(images_nchw.astype(np.float64), patch)
    if norm_pix_loss:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, ddof=1, keepdims=True)
        target = (target - mean) / np.sqrt(var + 1e-6)
    per_patch = ((np.asarray(logits, np.float64) - target) ** 2).mean(-1)
    mask = np.asarray(mask, np.float64)
    return (per_patch * mask).sum() / mask.sum()


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
