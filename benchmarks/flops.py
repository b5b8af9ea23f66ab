"""Analytic FLOPs of ViTMAE, and the dense-matmul ceilings they are measured against.

FLOPs count a multiply-add as 2. Only matrix products are counted (patch
embedding, projections, attention, MLP, decoder): they are where the time
should go, so FLOPs / time against the measured matmul throughput is the
model FLOP utilisation (MFU).
"""

import time


def _blocks(tokens, width, intermediate, layers):
    """Multiply-adds of `layers` pre-norm blocks on `tokens` tokens of `width`."""
    projections = 4 * tokens * width * width  # q, k, v and output
    attention = 2 * tokens * tokens * width  # QK^T and PV
    mlp = 2 * tokens * width * intermediate
    return layers * (projections + attention + mlp)


def forward_flops(config, mask_ratio=None, decoder=True):
    """FLOPs of one image's forward pass through the encoder (and decoder)."""
    ratio = config.mask_ratio if mask_ratio is None else mask_ratio
    patches = config.num_patches
    kept = int(patches * (1 - ratio))
    macs = patches * config.patch_dim * config.hidden_size  # patch embedding
    macs += _blocks(
        1 + kept, config.hidden_size, config.intermediate_size, config.num_hidden_layers
    )
    if decoder:
        macs += (1 + kept) * config.hidden_size * config.decoder_hidden_size
        macs += _blocks(
            1 + patches,
            config.decoder_hidden_size,
            config.decoder_intermediate_size,
            config.decoder_num_hidden_layers,
        )
        macs += (1 + patches) * config.decoder_hidden_size * config.patch_dim
    return 2 * macs


def step_flops(config):
    """FLOPs of one image's training step: forward plus a backward of twice its cost."""
    return 3 * forward_flops(config)


def _best_rate(run, flops, repeats):
    run()  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return flops / best


def matmul_ceilings(size=2048, repeats=5, torch_bf16=True):
    """Measured dense-matmul FLOP/s of TensorFlow and PyTorch, fp32 and bf16.

    Returns:
        `{"tf_fp32": ..., "tf_bf16": ..., "torch_fp32": ..., "torch_bf16": ...}`
        in FLOP/s (`torch_*` absent when PyTorch is not installed,
        `torch_bf16` when `torch_bf16=False`).
    """
    import numpy as np
    import tensorflow as tf

    flops = 2 * size**3
    rates = {}
    a = np.random.default_rng(0).standard_normal((size, size)).astype("float32")
    for dtype in ("float32", "bfloat16"):
        x = tf.cast(tf.constant(a), dtype)
        matmul = tf.function(lambda x: tf.matmul(x, x))

        def run(x=x, matmul=matmul):
            matmul(x).numpy()

        rates[f"tf_{'fp32' if dtype == 'float32' else 'bf16'}"] = _best_rate(run, flops, repeats)
    try:
        import torch
    except ImportError:
        return rates
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and not torch_bf16:
            continue
        t = torch.from_numpy(a).to(dtype)
        rates[f"torch_{name}"] = _best_rate(lambda t=t: torch.matmul(t, t), flops, repeats)
    return rates
