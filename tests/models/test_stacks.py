import numpy as np
import pytest

from tfvitmae.models.layers import set_attn_implementation
from tfvitmae.models.vit_mae import ViTMAEDecoder, ViTMAEEmbeddings, ViTMAEEncoder

from ..harness import run_layer_test
from ..helpers import max_diff, noise_for, pixels, tiny_config

CONFIG = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def images_and_noise(config=CONFIG):
    return pixels(config, channels_last=True), noise_for(config)


def test_embeddings_harness():
    images, noise = images_and_noise()
    run_layer_test(
        ViTMAEEmbeddings,
        dict(config=CONFIG, seed=3),
        images,
        expected_output_shape=[(2, 5, 32), (2, 16), (2, 16)],
        call_kwargs=dict(noise=noise),
        random_call_kwargs=dict(noise=None),
        expected_num_trainable_weights=3,  # patch kernel and bias, CLS token
        expected_num_non_trainable_weights=1,  # the fixed position table
    )


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_encoder_harness(attn_implementation):
    images, noise = images_and_noise()
    init = dict(config=CONFIG, attn_implementation=attn_implementation, seed=3, drop_path_rate=0.1)
    run_layer_test(
        ViTMAEEncoder,
        init,
        images,
        expected_output_shape=dict(last_hidden_state=(2, 5, 32), mask=(2, 16), ids_restore=(2, 16)),
        call_kwargs=dict(noise=noise),
        random_call_kwargs=dict(training=True),
    )
    run_layer_test(
        ViTMAEEncoder,
        init,
        images,
        expected_output_shape=dict(
            last_hidden_state=(2, 5, 32),
            mask=(2, 16),
            ids_restore=(2, 16),
            hidden_states=[(2, 5, 32)] * 3,
            attentions=[(2, 4, 5, 5)] * 2,
        ),
        call_kwargs=dict(noise=noise, output_hidden_states=True, output_attentions=True),
    )


def test_decoder_harness():
    _, noise = images_and_noise()
    hidden = np.random.default_rng(0).normal(size=(2, 5, 32)).astype("float32")
    ids_restore = np.argsort(np.argsort(noise, 1), 1).astype("int32")
    run_layer_test(
        ViTMAEDecoder,
        dict(config=CONFIG, attn_implementation="eager", seed=3),
        (hidden, ids_restore),
        expected_output_shape=dict(logits=(2, 16, CONFIG.patch_dim)),
        random_call_kwargs=dict(training=True),
    )


def test_drop_path_rises_linearly_to_the_last_block():
    encoder = ViTMAEEncoder(tiny_config(num_hidden_layers=5), drop_path_rate=0.2)
    rates = [block.drop_path.rate for block in encoder.blocks]
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.15, 0.2])
    assert [b.drop_path.rate for b in ViTMAEEncoder(tiny_config()).blocks] == [0.0, 0.0]


def test_attn_implementation_switches_every_block():
    decoder = ViTMAEDecoder(tiny_config(decoder_num_hidden_layers=2))
    assert [b.attention.attn_implementation for b in decoder.blocks] == ["sdpa", "sdpa"]
    set_attn_implementation(decoder, "eager")
    assert [b.attention.attn_implementation for b in decoder.blocks] == ["eager", "eager"]
    assert [b.get_config()["attn_implementation"] for b in decoder.blocks] == ["eager", "eager"]
    assert decoder.get_config()["attn_implementation"] == "eager"
    with pytest.raises(ValueError, match="received 'flash'"):
        set_attn_implementation(decoder, "flash")
    built = ViTMAEDecoder(tiny_config(decoder_num_hidden_layers=2), attn_implementation="eager")
    assert [b.attention.attn_implementation for b in built.blocks] == ["eager", "eager"]


def test_unmasked_encoder_keeps_every_patch_in_order():
    images, _ = images_and_noise()
    encoder = ViTMAEEncoder(tiny_config())
    out = encoder(images, unmasked=True, final_norm=False, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 17, 32) and not np.asarray(out.mask).any()
    np.testing.assert_array_equal(out.ids_restore, np.tile(np.arange(16), (2, 1)))
    # final_norm=False leaves the last block's output as it is
    assert max_diff(out.last_hidden_state, out.hidden_states[-1]) == 0


def test_decoder_puts_every_token_back_in_place():
    """The kept tokens go back to their original positions and every removed
    position gets the mask token (checked on the decoder's first hidden state)."""
    config = tiny_config()
    decoder = ViTMAEDecoder(config)
    _, noise = images_and_noise(config)
    ids_restore = np.argsort(np.argsort(noise, 1), 1).astype("int32")
    hidden = np.random.default_rng(0).normal(size=(2, 5, 32)).astype("float32")
    out = decoder(hidden, ids_restore, output_hidden_states=True)
    first = np.asarray(out.hidden_states[0])
    embedded = np.asarray(decoder.decoder_embed(hidden))
    table = decoder.decoder_pos_embed.numpy()[0]
    token = decoder.mask_token.numpy()[0, 0]
    for b in range(2):
        assert max_diff(first[b, 0], embedded[b, 0] + table[0]) < 1e-6  # CLS
        for position in range(16):
            rank = ids_restore[b, position]
            expected = embedded[b, 1 + rank] if rank < 4 else token
            assert max_diff(first[b, 1 + position], expected + table[1 + position]) < 1e-6
