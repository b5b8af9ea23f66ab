import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEModel
from tfvitmae.models.layers import (
    DropPath,
    PatchEmbedding,
    RandomMasking,
    ViTMAEBlock,
    ViTMAEMLP,
    set_attn_implementation,
)

from ..harness import run_layer_test
from ..helpers import max_diff, tiny_config


def sequence(batch=2, length=5, width=8, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, width)).astype("float32")


# ------------------------------------------------------------ PatchEmbedding
def test_patch_embedding_harness():
    images = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype("float32")
    run_layer_test(
        PatchEmbedding,
        dict(hidden_size=8, patch_size=(2, 2), num_channels=3),
        images,
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=2,
    )


def test_patch_embedding_equals_dense_on_patches():
    layer = PatchEmbedding(6, (4, 4), 2)
    layer.build()
    images = np.random.default_rng(0).normal(size=(2, 8, 12, 2)).astype("float32")
    out = layer(images).numpy()
    assert out.shape == (2, 6, 6)
    # (p*p*C, D) in (row, col, channel) order
    kernel = layer.projection.kernel.numpy().reshape(-1, 6)
    for r in range(2):
        for c in range(3):
            patch = images[:, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4].reshape(2, -1)
            expected = patch @ kernel + layer.projection.bias.numpy()
            assert max_diff(out[:, r * 3 + c], expected) < 1e-5


# ------------------------------------------------------------- RandomMasking
def test_random_masking_harness():
    noise = np.random.default_rng(1).random((2, 5)).astype("float32")
    run_layer_test(
        RandomMasking,
        dict(mask_ratio=0.6, seed=2),
        sequence(),
        expected_output_shape=[(2, 2, 8), (2, 5), (2, 5)],
        call_kwargs=dict(noise=noise),
        random_call_kwargs=dict(noise=None),
        expected_num_trainable_weights=0,
    )


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
    c = RandomMasking(0.5, seed=8)(seq)[1].numpy()
    assert not np.array_equal(a, c)  # the seed is used (equal by chance: ~1e-7)


def test_masking_warns_when_it_keeps_nothing_and_refuses_non_finite_noise():
    seq = np.zeros((2, 16, 4), "float32")
    with pytest.warns(UserWarning, match=r"mask_ratio 0.99 keeps no patch of 16"):
        kept, mask, _ = RandomMasking(0.75)(seq, mask_ratio=0.99)
    assert kept.shape == (2, 0, 4) and mask.numpy().all()
    noise = np.random.default_rng(0).random((2, 16)).astype("float32")
    noise[1, 3] = np.nan
    with pytest.raises(ValueError, match="noise must be finite"):
        RandomMasking(0.75)(seq, noise=noise)


def test_mask_ratio_zero_keeps_order_without_noise():
    seq = np.random.default_rng(0).normal(size=(2, 9, 4)).astype("float32")
    kept, mask, ids_restore = RandomMasking(0.0)(seq)
    np.testing.assert_array_equal(kept, seq)
    assert not mask.numpy().any()
    np.testing.assert_array_equal(ids_restore, np.tile(np.arange(9), (2, 1)))
    # a per-call ratio of 0 does the same on a masking layer
    kept, mask, _ = RandomMasking(0.75, seed=0)(seq, mask_ratio=0.0)
    np.testing.assert_array_equal(kept, seq)
    assert not mask.numpy().any()


def test_random_masking_rejects_bad_ratio():
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\), received 1.2"):
        RandomMasking(1.2)


# ----------------------------------------------------------------------- MLP
def test_mlp_harness():
    run_layer_test(
        ViTMAEMLP,
        dict(
            hidden_size=8,
            intermediate_size=12,
            hidden_act="gelu_new",
            dropout=0.2,
            initializer_range=0.05,
            seed=1,
        ),
        sequence(),
        expected_output_shape=(2, 5, 8),
        random_call_kwargs=dict(training=True),
        expected_num_trainable_weights=4,
    )


def test_mlp_matches_numpy():
    layer = ViTMAEMLP(8, 12, hidden_act="relu")
    x = sequence()
    out = layer(x)
    hidden = np.maximum(x @ layer.intermediate.kernel.numpy() + layer.intermediate.bias.numpy(), 0)
    expected = hidden @ layer.output_dense.kernel.numpy() + layer.output_dense.bias.numpy()
    assert max_diff(out, expected) < 1e-5


# ------------------------------------------------------------------ DropPath
def test_drop_path_harness():
    run_layer_test(
        DropPath,
        dict(rate=0.2, seed=1),
        sequence(batch=16),
        expected_output_shape=(16, 5, 8),
        random_call_kwargs=dict(training=True),
        expected_num_trainable_weights=0,
    )


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    layer = DropPath(0.5, seed=0)
    x = np.ones((2000, 3, 4), "float32")
    assert np.array_equal(layer(x), x)  # inference: identity
    out = layer(x, training=True).numpy()
    per_sample = out.reshape(2000, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}
    assert all(len(set(row)) == 1 for row in per_sample[:50])  # a sample is dropped or kept whole
    assert abs(out.mean() - 1.0) < 0.1
    with pytest.raises(ValueError, match=r"drop path rate must be in \[0, 1\), received 1"):
        DropPath(1)


def test_drop_path_keeps_its_rate_and_scale_under_mixed_bfloat16():
    """The keep mask and the scaling are float32 under any policy. In bfloat16,
    `floor(keep + uniform)` kept 0.9458 of the samples at rate 0.05 (8 standard
    errors off), and `keep` rounded to 0.9492 scaled every kept one 0.08% up."""
    n, rate = 200_000, 0.05
    x = np.random.default_rng(0).uniform(1, 2, size=(n, 1)).astype("float32")
    x = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()  # exact in bfloat16
    fp32 = DropPath(rate, seed=0)(x, training=True).numpy()
    out = DropPath(rate, seed=0, dtype="mixed_bfloat16")(x, training=True)
    assert out.dtype == tf.bfloat16
    out = tf.cast(out, tf.float64).numpy()
    kept = out[:, 0] != 0
    np.testing.assert_array_equal(kept, fp32[:, 0] != 0)  # the mask does not follow the policy
    standard_error = np.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) < 5 * standard_error
    # Each kept value rounds once to bfloat16 (2**-9 at most, either way): on average, 1 / keep.
    scale = out[kept].sum() / x[kept].astype("float64").sum()
    assert abs(scale * (1 - rate) - 1) < 2e-4


# --------------------------------------------------------------------- Block
BLOCK = dict(
    hidden_size=8,
    num_heads=2,
    intermediate_size=12,
    hidden_act="gelu_new",
    qkv_bias=False,
    hidden_dropout=0.1,
    attention_dropout=0.1,
    layer_norm_eps=1e-6,
    initializer_range=0.05,
    attn_implementation="eager",
    drop_path=0.1,
    seed=3,
)


def test_block_harness():
    run_layer_test(
        ViTMAEBlock,
        BLOCK,
        sequence(),
        expected_output_shape=[(2, 5, 8), None],
        random_call_kwargs=dict(training=True),
        expected_num_trainable_weights=11,  # 2 LayerNorms x 2, qkv kernel, 2 + 4 dense
    )
    run_layer_test(
        ViTMAEBlock,
        {**BLOCK, "attn_implementation": "sdpa", "qkv_bias": True},
        sequence(),
        expected_output_shape=[(2, 5, 8), (2, 2, 5, 5)],
        call_kwargs=dict(output_attentions=True),
        expected_num_trainable_weights=12,
    )


def test_block_is_pre_norm_residual():
    block = ViTMAEBlock(8, 2, 12, layer_norm_eps=1e-6)
    x = sequence()
    out, probs = block(x)
    assert probs is None
    h = x + block.attention(block.layernorm_before(x))[0].numpy()
    expected = h + block.mlp(block.layernorm_after(h)).numpy()
    assert max_diff(out, expected) < 1e-5


def test_block_uses_explicit_layer_norm_eps():
    block = ViTMAEBlock(8, 2, 12, layer_norm_eps=1e-12)
    assert block.layernorm_before.epsilon == 1e-12 and block.layernorm_after.epsilon == 1e-12


def test_block_attn_implementation_is_checked():
    block = ViTMAEBlock(8, 2, 12)
    set_attn_implementation(block, "eager")
    assert block.attention.attn_implementation == "eager"
    assert block.get_config()["attn_implementation"] == "eager"
    with pytest.raises(ValueError, match="received 'flash'"):
        set_attn_implementation(block, "flash")
    with pytest.raises(ValueError, match="received 'flash'"):
        ViTMAEBlock(8, 2, 12, attn_implementation="flash")


# ---------------------------------------------- seeded dropouts never repeat
def test_seeded_block_dropouts_draw_different_masks():
    """The attention-output and MLP-output dropouts of one seeded block draw
    different masks (equal seeds would make them identical at every step),
    and the same seed reproduces them."""
    ones = np.ones((4, 5, 8), "float32")

    def masks(block):
        return (
            block.attention.dropout(ones, training=True).numpy(),
            block.mlp.dropout(ones, training=True).numpy(),
        )

    attention, mlp = masks(ViTMAEBlock(8, 2, 12, hidden_dropout=0.5, seed=0))
    assert set(np.unique(attention)) == {0.0, 2.0}
    assert not np.array_equal(attention, mlp)
    again = masks(ViTMAEBlock(8, 2, 12, hidden_dropout=0.5, seed=0))
    np.testing.assert_array_equal(again[0], attention)
    np.testing.assert_array_equal(again[1], mlp)


def test_blocks_of_a_seeded_model_draw_different_masks():
    config = tiny_config(hidden_dropout_prob=0.5)
    ones = np.ones((4, 5, config.hidden_size), "float32")

    def masks(model):
        return [
            dropout(ones, training=True).numpy()
            for block in model.vit.blocks
            for dropout in (block.attention.dropout, block.mlp.dropout)
        ]

    first = masks(TFViTMAEModel(config, seed=0))
    assert len(first) == 2 * config.num_hidden_layers
    for a, b in itertools.combinations(first, 2):
        assert not np.array_equal(a, b)
    for a, b in zip(masks(TFViTMAEModel(config, seed=0)), first):
        np.testing.assert_array_equal(a, b)
