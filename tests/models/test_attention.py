import numpy as np
import pytest

from tfvitmae.models.layers import (
    ATTENTION_IMPLEMENTATIONS,
    ViTMAEAttention,
    check_attn_implementation,
)

from ..harness import run_layer_test
from ..helpers import max_diff, record_attention_paths


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_layer_harness(attn_implementation):
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    init = dict(
        hidden_size=8,
        num_heads=2,
        qkv_bias=False,
        attention_dropout=0.1,
        output_dropout=0.2,
        initializer_range=0.05,
        attn_implementation=attn_implementation,
        seed=4,
    )
    run_layer_test(
        ViTMAEAttention,
        init,
        x,
        expected_output_shape=[(2, 5, 8), None],
        random_call_kwargs=dict(training=True),
        expected_num_trainable_weights=3,  # fused qkv kernel (no bias), output kernel and bias
    )
    run_layer_test(
        ViTMAEAttention,
        {**init, "qkv_bias": True},
        x,
        expected_output_shape=[(2, 5, 8), (2, 2, 5, 5)],
        call_kwargs=dict(output_attentions=True),
        expected_num_trainable_weights=4,
    )


def test_paths_agree_and_match_numpy(monkeypatch):
    paths = record_attention_paths(monkeypatch)
    layer = ViTMAEAttention(16, 4, attn_implementation="sdpa")
    layer.build()
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    fused, none = layer(x)
    fused_with_probs, probs = layer(x, output_attentions=True)
    assert none is None and probs.shape == (2, 4, 5, 5)
    assert max_diff(fused, fused_with_probs) == 0
    assert [label for _, label in paths] == ["sdpa", "sdpa"]
    # The explicit reference: an "eager" layer with the same weights.
    eager = ViTMAEAttention(16, 4, attn_implementation="eager")
    eager.build()
    eager.set_weights(layer.get_weights())
    del paths[:]
    explicit, explicit_probs = eager(x, output_attentions=True)
    assert [label for _, label in paths] == ["eager"]
    assert max_diff(fused, explicit) < 1e-6 and max_diff(probs, explicit_probs) < 1e-6
    # NumPy reference from the fused kernel
    qkv = x @ layer.qkv.kernel.numpy() + layer.qkv.bias.numpy()
    q, k, v = (
        qkv[..., i * 16 : (i + 1) * 16].reshape(2, 5, 4, 4).transpose(0, 2, 1, 3) for i in range(3)
    )
    logits = q @ k.transpose(0, 1, 3, 2) / 2.0
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(2, 5, 16)
    ref = ctx @ layer.output_dense.kernel.numpy() + layer.output_dense.bias.numpy()
    assert max_diff(probs, p) < 1e-6 and max_diff(fused, ref) < 1e-5
    # head_mask zeroes a head's contribution
    masked, _ = layer(x, head_mask=np.array([1, 0, 1, 1], "float32"))
    head = np.array([1, 0, 1, 1])[None, :, None, None]
    ctx_masked = (p * head @ v).transpose(0, 2, 1, 3).reshape(2, 5, 16)
    ref_masked = ctx_masked @ layer.output_dense.kernel.numpy() + layer.output_dense.bias.numpy()
    assert max_diff(masked, ref_masked) < 1e-5
    del paths[:]
    layer.attn_implementation = "eager"
    assert max_diff(layer(x)[0], ref) < 1e-5
    assert [label for _, label in paths] == ["eager"]


def test_check_attn_implementation():
    for name in ATTENTION_IMPLEMENTATIONS:
        assert check_attn_implementation(name) == name
    with pytest.raises(ValueError, match="attn_implementation must be one of .* received 'flash'"):
        check_attn_implementation("flash")
    with pytest.raises(ValueError, match="received 'flash'"):
        ViTMAEAttention(8, 2, attn_implementation="flash")
    with pytest.raises(ValueError, match=r"hidden_size \(10\) must be divisible by num_heads"):
        ViTMAEAttention(10, 4)


def test_torchs_sdpa_keeps_the_softmax_in_float32_for_bfloat16_inputs():
    """On the PyTorch backend under `mixed_bfloat16`, the `"sdpa"` path hands
    bf16 queries, keys and values to torch's SDPA kernel; the README says the
    softmax stays float32 there, as it does on the explicit path. A bf16
    softmax would be about ten times further from float32 attention."""
    import torch  # a test requirement: CI installs it

    f = torch.nn.functional
    generator = torch.Generator().manual_seed(0)
    query, key, value = (3 * torch.randn(2, 4, 50, 16, generator=generator) for _ in range(3))
    query, key, value = query.bfloat16(), key.bfloat16(), value.bfloat16()
    fused = f.scaled_dot_product_attention(query, key, value).float()
    logits = query.float() @ key.float().transpose(-1, -2) / 4.0
    in_float32 = torch.softmax(logits, -1) @ value.float()
    in_bfloat16 = torch.softmax(logits.bfloat16(), -1).float() @ value.float()
    rounding = 2**-8 * float(in_float32.abs().max())  # bf16 output rounding
    assert float((fused - in_float32).abs().max()) <= 2 * rounding
    assert float((in_bfloat16 - in_float32).abs().max()) > 4 * rounding  # the test can tell
