"""Shared builders for the tests: tiny configs, inputs, data sets, the NumPy
and PyTorch references, and the distributed-training runner.

Test files import from here (and from `harness`), never from each other.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np

from tfvitmae import ViTMAEConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A tiny transformers ViTMAEForPreTraining checkpoint with reference outputs
# (written by tests/fixtures/make_reference.py).
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_vit_mae"

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
    x = (
        np.random.default_rng(seed)
        .normal(size=(batch, config.num_channels, height, width))
        .astype("float32")
    )
    return np.transpose(x, (0, 2, 3, 1)) if channels_last else x


def noise_for(config, batch=2, seed=1, height=None, width=None):
    height = height or config.image_hw[0]
    width = width or config.image_hw[1]
    patch_h, patch_w = config.patch_hw
    n = (height // patch_h) * (width // patch_w)
    return np.random.default_rng(seed).random((batch, n)).astype("float32")


def smooth_images(config, n=32, seed=0):
    """Learnable images: one fixed smooth pattern, scaled and shifted per image,
    so the masked pixels are predictable from position and visible patches."""
    rng = np.random.default_rng(seed)
    h, w = config.image_hw
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    pattern = np.sin(2 * np.pi * xx) * np.cos(np.pi * yy)
    scale = rng.uniform(0.5, 1.5, size=(n, config.num_channels, 1, 1))
    shift = rng.uniform(-1, 1, size=(n, config.num_channels, 1, 1))
    return (scale * pattern + shift).astype("float32")


def labelled(config, n=24, num_labels=3, seed=0):
    """Images whose class is visible (a per-class brightness offset), and the labels."""
    labels = np.arange(n) % num_labels
    x = pixels(config, batch=n, seed=seed) * 0.3 + (labels[:, None, None, None] - 1.0)
    return x.astype("float32"), labels


def numpy_patchify(images_nchw, patch):
    """Reference patchify by explicit loops: patch (r, c) -> row-major index,
    inside a patch (row, col, channel) order."""
    b, ch, h, w = images_nchw.shape
    rows, cols = h // patch, w // patch
    out = np.zeros((b, rows * cols, patch * patch * ch), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            block = images_nchw[:, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch]
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


# ------------------------------------------------------- PyTorch reference
REFERENCE_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=20,
    image_size=32,
    patch_size=8,
)


def torch_reference_model(seed=0, encoder_only=False, **overrides):
    """A randomly initialised `transformers` ViTMAE (eager attention) with real
    sin-cos position tables (transformers 5 leaves them at zero when a model
    is built from a config)."""
    import torch
    import transformers
    from transformers.models.vit_mae import modeling_vit_mae as hf

    config = transformers.ViTMAEConfig(
        **{**REFERENCE_CONFIG, **overrides}, attn_implementation="eager"
    )
    torch.manual_seed(seed)
    cls = transformers.ViTMAEModel if encoder_only else transformers.ViTMAEForPreTraining
    model = cls(config).eval()
    grid = config.image_size // config.patch_size
    base = model if encoder_only else model.vit
    tables = [(base.embeddings.position_embeddings, config.hidden_size)]
    if not encoder_only:
        tables.append((model.decoder.decoder_pos_embed, config.decoder_hidden_size))
    with torch.no_grad():
        for param, dim in tables:
            table = hf.build_2d_sinusoidal_position_embedding(
                grid, grid, embed_dim=dim, cls_token=True
            )
            half = dim // 2  # transformers rotates the halves into the MAE checkpoint layout
            param.copy_(torch.cat([table[:, half:], table[:, :half]], dim=1)[None].float())
    return model


def torch_outputs(model, x, noise, interpolate_pos_encoding=False):
    """The reference's outputs as NumPy, with hidden states and attentions."""
    import torch

    with torch.no_grad():
        out = model(
            torch.from_numpy(x),
            noise=torch.from_numpy(noise),
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=True,
            output_attentions=True,
        )
    return {
        k: (tuple(t.numpy() for t in v) if isinstance(v, tuple) else v.numpy())
        for k, v in out.items()
    }


def assert_outputs_close(ours, reference, atol=1e-5):
    """Every field of `reference` equals ours; hidden states and attentions entry by entry."""
    for key, expected in reference.items():
        actual = ours[key]
        if isinstance(expected, tuple):
            assert len(actual) == len(expected), key
            for i, (a, e) in enumerate(zip(actual, expected)):
                assert max_diff(a, e) < atol, f"{key}[{i}]: {max_diff(a, e)}"
        elif key in ("mask", "ids_restore"):
            np.testing.assert_array_equal(np.asarray(actual), expected, err_msg=key)
        else:
            assert max_diff(actual, expected) < atol, f"{key}: {max_diff(actual, expected)}"


def hub_style(state):
    """transformers 4 (and Hub) names: transformers 5 saves decoder blocks elsewhere."""
    return {
        k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v
        for k, v in state.items()
    }


def save_torch_reference(directory, **overrides):
    """A `torch_reference_model` saved with `save_pretrained` to `directory`;
    returns `(torch model, directory)`."""
    model = torch_reference_model(**overrides)
    model.save_pretrained(directory)
    return model, directory


def timm_style_vit(config, num_classes):
    """timm's `VisionTransformer(global_pool="avg")`, written out in plain
    PyTorch with timm's parameter names (`blocks.{i}.attn.qkv`, `fc_norm`,
    `head`, no final `norm`), as MAE fine-tunes it: the reference for
    mean-pooled classifiers (timm itself needs torchvision, which has no CPU
    build for this torch here). LayerNorm eps is the config's."""
    import torch
    from torch import nn

    width, heads = config.hidden_size, config.num_attention_heads
    eps = config.layer_norm_eps

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width, bias=config.qkv_bias)
            self.proj = nn.Linear(width, width)

        def forward(self, x):
            batch, tokens, _ = x.shape
            qkv = self.qkv(x).reshape(batch, tokens, 3, heads, width // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            probs = torch.softmax(q @ k.transpose(-2, -1) * (width // heads) ** -0.5, dim=-1)
            return self.proj((probs @ v).transpose(1, 2).reshape(batch, tokens, width))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(width, config.intermediate_size)
            self.fc2 = nn.Linear(config.intermediate_size, width)

        def forward(self, x):
            return self.fc2(nn.functional.gelu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.attn = nn.LayerNorm(width, eps=eps), Attention()
            self.norm2, self.mlp = nn.LayerNorm(width, eps=eps), Mlp()

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            patch = config.patch_hw
            self.proj = nn.Conv2d(config.num_channels, width, patch, stride=patch)

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_patches, width))
            self.patch_embed = PatchEmbed()
            self.blocks = nn.ModuleList(Block() for _ in range(config.num_hidden_layers))
            self.fc_norm = nn.LayerNorm(width, eps=eps)
            self.head = nn.Linear(width, num_classes)

        def forward(self, images):
            x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
            for block in self.blocks:
                x = block(x)
            return self.head(self.fc_norm(x[:, 1:].mean(dim=1)))

    return VisionTransformer().eval()


# ------------------------------------------------- distributed training runs
def start_distributed_run(mode, out, env=None, args=()):
    """Start `python -m tests.distributed_run MODE OUT [ARGS]` (see that module)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distributed_run", mode, str(out), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def backed_up_model(folder):
    """A tiny pretraining model with AdamW built, and the `RunBackup` in
    `folder` that has backed it up after epoch 1: `(model, backup)`."""
    import keras

    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.training.runs import RunBackup

    model = TFViTMAEForPreTraining(tiny_config(), seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.optimizer.build(model.trainable_variables)
    backup = RunBackup(str(folder))
    backup.set_model(model)
    backup.on_epoch_end(0)
    return model, backup


def finish_distributed_run(process, timeout=600):
    """Wait for a run to succeed; its output."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def distributed_run_results(path):
    """`(final weights, the whole .npz)` written by a distributed run."""
    data = np.load(path)
    count = len([k for k in data.files if k.startswith("w")])
    return [data[f"w{i}"] for i in range(count)], data


def assert_same_training(result, reference):
    """Two distributed runs gave the same losses and final weights."""
    (ours, data), (theirs, ref_data) = result, reference
    np.testing.assert_allclose(data["loss"], ref_data["loss"], rtol=1e-4)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=2e-5)


def record_attention_paths(monkeypatch):
    """Record which path every `ViTMAEAttention` call takes.

    Returns a list that fills with `(layer path, "sdpa" or "eager")`, one per
    attention call: the `attn_implementation` the call ran under, read by a
    spy on the layer's `call`. A test sees that a switch reached each layer,
    not only outputs (which are equal on both paths).
    """
    from tfvitmae.models.layers import ViTMAEAttention

    calls = []
    original = ViTMAEAttention.call

    def spy(self, *args, **kwargs):
        calls.append((self.path, self.attn_implementation))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ViTMAEAttention, "call", spy)
    return calls
