import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae.layers import (
    DropPath,
    PatchEmbedding,
    RandomMasking,
    ViTMAEAttention,
    ViTMAEBlock,
    ViTMAEMLP,
    bicubic_resize_matrix,
    get_activation,
    resize_position_table,
    sincos_position_table,
)

from .helpers import max_diff


def test_sincos_table_layout():
    rows, cols, dim = 3, 5, 16
    table = sincos_position_table((rows, cols), dim)
    assert table.shape == (1 + rows * cols, dim) and table.dtype == np.float32
    assert not table[0].any()  # CLS row
    omega = 1.0 / 10000 ** (np.arange(4) / 4)
    for r in range(rows):
        for c in range(cols):
            row = table[1 + r * cols + c]
            # first half: column coordinate; second half: row coordinate
            np.testing.assert_allclose(row[:4], np.sin(c * omega), atol=1e-7)
            np.testing.assert_allclose(row[4:8], np.cos(c * omega), atol=1e-7)
            np.testing.assert_allclose(row[8:12], np.sin(r * omega), atol=1e-7)
            np.testing.assert_allclose(row[12:], np.cos(r * omega), atol=1e-7)


def test_sincos_table_matches_transformers():
    from transformers.models.vit_mae import modeling_vit_mae as hf

    pos = hf.build_2d_sinusoidal_position_embedding(4, 4, embed_dim=32, cls_token=True).numpy()
    half = pos.shape[-1] // 2  # transformers rotates the halves to the MAE checkpoint layout
    pos = np.concatenate([pos[:, half:], pos[:, :half]], axis=1)
    assert max_diff(sincos_position_table((4, 4), 32), pos) < 1e-7


@pytest.mark.parametrize("in_size, out_size", [(4, 4), (4, 7), (6, 3), (14, 16), (1, 5), (5, 1)])
def test_bicubic_matrix_matches_torch(in_size, out_size):
    import torch

    x = np.random.default_rng(0).normal(size=(in_size, 3))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x.T[None, :, None, :]), size=(1, out_size), mode="bicubic", align_corners=False
    )[0, :, 0].numpy().T
    assert max_diff(bicubic_resize_matrix(in_size, out_size) @ x, expected) < 1e-12


def test_resize_position_table_2d_matches_torch():
    import torch

    table = np.random.default_rng(0).normal(size=(1, 1 + 3 * 3, 8)).astype("float32")
    out = resize_position_table(tf.constant(table), (3, 3), (4, 6)).numpy()
    grid = torch.from_numpy(table[0, 1:].reshape(3, 3, 8)).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(grid, size=(4, 6), mode="bicubic", align_corners=False)
    ref = ref[0].permute(1, 2, 0).reshape(-1, 8).numpy()
    assert out.shape == (1, 25, 8)
    assert max_diff(out[0, 0], table[0, 0]) == 0
    assert max_diff(out[0, 1:], ref) < 1e-5
    assert resize_position_table(table, (3, 3), (3, 3)) is table


def test_activations():
    x = np.linspace(-4, 4, 101).astype("float32")
    from math import erf, sqrt

    exact = np.array([0.5 * v * (1 + erf(v / sqrt(2))) for v in x])
    assert max_diff(get_activation("gelu")(x), exact) < 1e-6
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert max_diff(get_activation("gelu_new")(x), tanh_form) < 1e-6
    assert max_diff(get_activation("gelu")(x), tanh_form) > 1e-4  # the two forms really differ
    with pytest.raises(ValueError, match="received 'nope'"):
        get_activation("nope")


def test_patch_embedding_equals_dense_on_patches():
    layer = PatchEmbedding(6, (4, 4), 2)
    layer.build()
    images = np.random.default_rng(0).normal(size=(2, 8, 12, 2)).astype("float32")
    out = layer(images).numpy()
    assert out.shape == (2, 6, 6)
    kernel = layer.projection.kernel.numpy().reshape(-1, 6)  # (p*p*C, D) in (row, col, channel) order
    for r in range(2):
        for c in range(3):
            patch = images[:, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4].reshape(2, -1)
            expected = patch @ kernel + layer.projection.bias.numpy()
            assert max_diff(out[:, r * 3 + c], expected) < 1e-5


def test_random_masking_invariants():
    layer = RandomMasking(0.75, seed=3)
    seq = np.arange(2 * 16 * 2, dtype="float32").reshape(2, 16, 2)
    kept, mask, ids_restore = layer(seq)
    assert kept.shape == (2, 4, 2) and mask.dtype == tf.float32 and ids_restore.dtype == tf.int32
    mask, ids_restore, kept = mask.numpy(), ids_restore.numpy(), kept.numpy()
    for b in range(2):
        assert sorted(ids_restore[b]) == list(range(16))  # a permutation
        assert mask[b].sum() == 12
        kept_positions = kept[b, :, 0] // 2 - b * 16
        assert set(kept_positions.astype(int)) == set(np.flatnonzero(mask[b] == 0))
        # kept tokens are the ones ranked first by the shuffle
        assert all(ids_restore[b][int(p)] < 4 for p in kept_positions)


def test_random_masking_follows_noise_and_seed():
    seq = np.random.default_rng(0).normal(size=(3, 10, 4)).astype("float32")
    noise = np.random.default_rng(1).random((3, 10)).astype("float32")
    kept, mask, ids_restore = RandomMasking(0.5)(seq, noise=noise)
    order = np.argsort(noise, axis=1)
    np.testing.assert_array_equal(ids_restore.numpy(), np.argsort(order, axis=1))
    np.testing.assert_array_equal(kept.numpy(), np.take_along_axis(seq, order[:, :5, None], axis=1))
    np.testing.assert_array_equal(mask.numpy(), (np.argsort(order, axis=1) >= 5).astype("float32"))
    a = RandomMasking(0.5, seed=7)(seq)[1].numpy()
    b = RandomMasking(0.5, seed=7)(seq)[1].numpy()
    np.testing.assert_array_equal(a, b)


def test_mask_ratio_zero_keeps_order_without_noise():
    seq = np.random.default_rng(0).normal(size=(2, 9, 4)).astype("float32")
    kept, mask, ids_restore = RandomMasking(0.0)(seq)
    np.testing.assert_array_equal(kept, seq)
    assert not mask.numpy().any()
    np.testing.assert_array_equal(ids_restore, np.tile(np.arange(9), (2, 1)))


def test_random_masking_rejects_bad_ratio():
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\), received 1.2"):
        RandomMasking(1.2)


def test_attention_paths_agree_and_match_numpy():
    layer = ViTMAEAttention(16, 4, attn_implementation="sdpa")
    layer.build()
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    fused, none = layer(x)
    explicit, probs = layer(x, output_attentions=True)
    assert none is None and probs.shape == (2, 4, 5, 5)
    assert max_diff(fused, explicit) < 1e-6
    # NumPy reference from the fused kernel
    qkv = x @ layer.qkv.kernel.numpy() + layer.qkv.bias.numpy()
    q, k, v = (qkv[..., i * 16:(i + 1) * 16].reshape(2, 5, 4, 4).transpose(0, 2, 1, 3) for i in range(3))
    logits = q @ k.transpose(0, 1, 3, 2) / 2.0
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(2, 5, 16)
    ref = ctx @ layer.output_dense.kernel.numpy() + layer.output_dense.bias.numpy()
    assert max_diff(probs, p) < 1e-6 and max_diff(fused, ref) < 1e-5
    # head_mask zeroes a head's contribution
    masked, _ = layer(x, head_mask=np.array([1, 0, 1, 1], "float32"))
    ctx_masked = (p * np.array([1, 0, 1, 1])[None, :, None, None] @ v).transpose(0, 2, 1, 3).reshape(2, 5, 16)
    ref_masked = ctx_masked @ layer.output_dense.kernel.numpy() + layer.output_dense.bias.numpy()
    assert max_diff(masked, ref_masked) < 1e-5


@pytest.mark.parametrize(
    "layer",
    [
        PatchEmbedding(8, (2, 2), 3),
        RandomMasking(0.6, seed=2),
        ViTMAEAttention(8, 2, qkv_bias=False, attention_dropout=0.1, attn_implementation="eager"),
        ViTMAEMLP(8, 12, hidden_act="gelu_new", dropout=0.2),
        ViTMAEBlock(8, 2, 12, layer_norm_eps=1e-6, attn_implementation="eager", drop_path=0.1),
        DropPath(0.2, seed=1),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layer_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_block_uses_explicit_layer_norm_eps():
    block = ViTMAEBlock(8, 2, 12, layer_norm_eps=1e-12)
    assert block.layernorm_before.epsilon == 1e-12 and block.layernorm_after.epsilon == 1e-12


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    layer = DropPath(0.5, seed=0)
    x = np.ones((2000, 3, 4), "float32")
    assert np.array_equal(layer(x), x)  # inference: identity
    out = layer(x, training=True).numpy()
    per_sample = out.reshape(2000, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert all(len(set(row)) == 1 for row in per_sample[:50])  # a sample is dropped or kept whole
    assert abs(out.mean() - 1.0) < 0.1
    with pytest.raises(ValueError, match=r"drop path rate must be in \[0, 1\), received 1"):
        DropPath(1)
