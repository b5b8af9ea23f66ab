import numpy as np
import pytest

from tfvitmae import (
    TFViTMAEForPreTraining,
    TFViTMAEForPreTrainingOutput,
    TFViTMAEModel,
    TFViTMAEModelOutput,
)
from tfvitmae.models.layers import set_attn_implementation

from ..harness import run_model_test
from ..helpers import (
    max_diff,
    noise_for,
    numpy_mae_loss,
    numpy_patchify,
    pixels,
    record_attention_paths,
    tiny_config,
)


# ------------------------------------------------------------------ harness
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_model_harness(data_format):
    config = tiny_config(norm_pix_loss=True)
    init = dict(config=config, data_format=data_format, attn_implementation="eager", seed=5)
    x = pixels(config, channels_last=data_format == "channels_last")
    n, keep = config.num_patches, 4
    _, loaded = run_model_test(
        TFViTMAEModel,
        init,
        x,
        call_kwargs=dict(
            noise=noise_for(config), output_hidden_states=True, output_attentions=True
        ),
        expected_output_shape=dict(
            last_hidden_state=(2, 1 + keep, 32),
            mask=(2, n),
            ids_restore=(2, n),
            hidden_states=[(2, 1 + keep, 32)] * 3,
            attentions=[(2, 4, 1 + keep, 1 + keep)] * 2,
        ),
    )
    assert loaded.config == config and loaded.data_format == data_format
    assert loaded.attn_implementation == "eager" and loaded.seed == 5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_pretraining_model_harness(attn_implementation):
    config = tiny_config(norm_pix_loss=True)
    init = dict(
        config=config, data_format="channels_first", attn_implementation=attn_implementation
    )
    _, loaded = run_model_test(
        TFViTMAEForPreTraining,
        init,
        pixels(config),
        call_kwargs=dict(noise=noise_for(config), output_hidden_states=True),
        expected_output_shape=dict(
            loss=(),
            logits=(2, 16, config.patch_dim),
            mask=(2, 16),
            ids_restore=(2, 16),
            hidden_states=[(2, 5, 32)] * 3,
        ),
    )
    assert isinstance(loaded(pixels(config)), TFViTMAEForPreTrainingOutput)
    assert loaded.attn_implementation == attn_implementation


def test_weights_exist_without_a_call():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    assert model.built and model.count_params() > 0
    names = {w.path.split("/", 1)[1] for w in model.weights}
    assert "vit/embeddings/cls_token" in names and "decoder/mask_token" in names
    assert "vit/layer_1/attention/qkv/kernel" in names and "decoder/decoder_pred/kernel" in names


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="data_format must be one of .* received 'NCHW'"):
        TFViTMAEModel(tiny_config(), data_format="NCHW")
    with pytest.raises(ValueError, match="attn_implementation must be one of .* received 'flash'"):
        TFViTMAEModel(tiny_config(), attn_implementation="flash")
    with pytest.raises(ValueError, match="config must be a ViTMAEConfig or a dict, received str"):
        TFViTMAEModel("facebook/vit-mae-base")


def test_check_pixel_values_is_public():
    config = tiny_config()
    x = pixels(config)
    model = TFViTMAEModel(config)
    np.testing.assert_array_equal(model.check_pixel_values(x), np.transpose(x, (0, 2, 3, 1)))
    last = TFViTMAEModel(config, data_format="channels_last")
    np.testing.assert_array_equal(
        last.check_pixel_values(np.transpose(x, (0, 2, 3, 1))), np.transpose(x, (0, 2, 3, 1))
    )
    with pytest.raises(ValueError, match="must have 3 channels"):
        last.check_pixel_values(x)


# ------------------------------------------------------------------ outputs

SHAPE_CASES = {
    "default-like": dict(),
    "one-channel": dict(num_channels=1),
    "patch-4": dict(patch_size=4, image_size=16),
    "no-mask": dict(mask_ratio=0.0),
    "non-square": dict(image_size=(16, 24), patch_size=8),
    "qkv-no-bias-gelu-new": dict(qkv_bias=False, hidden_act="gelu_new", mask_ratio=0.5),
}


@pytest.mark.parametrize("overrides", SHAPE_CASES.values(), ids=SHAPE_CASES.keys())
def test_output_shapes(overrides):
    config = tiny_config(**overrides)
    n = config.num_patches
    keep = int(n * (1 - config.mask_ratio))
    x = pixels(config, batch=3)
    out = TFViTMAEForPreTraining(config)(x, output_hidden_states=True, output_attentions=True)
    assert list(out.keys()) == [
        "loss",
        "logits",
        "mask",
        "ids_restore",
        "hidden_states",
        "attentions",
    ]
    assert out.loss.shape == () and out.logits.shape == (3, n, config.patch_dim)
    assert out.mask.shape == (3, n) and out.ids_restore.shape == (3, n)
    assert float(out.mask.numpy().sum()) == 3 * (n - keep)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (3, 1 + keep, config.hidden_size) for h in out.hidden_states)
    assert len(out.attentions) == config.num_hidden_layers
    assert all(
        a.shape == (3, config.num_attention_heads, 1 + keep, 1 + keep) for a in out.attentions
    )

    enc = TFViTMAEModel(config)(x)
    assert isinstance(enc, TFViTMAEModelOutput)
    assert enc.last_hidden_state.shape == (3, 1 + keep, config.hidden_size)
    assert enc.hidden_states is None and enc.attentions is None and "attentions" not in enc


def test_outputs_by_attribute_key_index_and_tuple():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    out = model(x, noise=noise)
    assert out.loss is out["loss"] and out[0] is out.loss and out[1] is out.logits
    assert out.hidden_states is None
    as_tuple = model(x, noise=noise, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 4
    for a, b in zip(as_tuple, out.to_tuple()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AttributeError):
        _ = out.not_a_field


def test_fixed_noise_is_deterministic_and_random_masks_differ():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    a, b = model(x, noise=noise), model(x, noise=noise)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.ids_restore, np.argsort(np.argsort(noise, 1), 1))
    # Without noise each call draws new masks (equal by chance with probability ~1e-7).
    assert not np.array_equal(model(x).ids_restore, model(x).ids_restore)


def test_seeded_models_mask_alike():
    config = tiny_config()
    x = pixels(config)
    masks = [TFViTMAEModel(config, seed=11)(x).mask.numpy() for _ in range(2)]
    np.testing.assert_array_equal(*masks)
    # ...because of the seed: another one masks otherwise (alike by chance: ~3e-7).
    assert not np.array_equal(TFViTMAEModel(config, seed=12)(x).mask.numpy(), masks[0])


def _attention_layers(model):
    return [b.attention for stack in (model.vit, model.decoder) for b in stack.blocks]


def _levels(model):
    """Each level `set_attn_implementation` can switch, with the attention layers below it."""
    block = model.vit.blocks[1]
    return {
        "model": (model, _attention_layers(model)),
        "encoder": (model.vit, [b.attention for b in model.vit.blocks]),
        "decoder": (model.decoder, [b.attention for b in model.decoder.blocks]),
        "block": (block, [block.attention]),
        "attention": (block.attention, [block.attention]),
    }


@pytest.mark.parametrize("level", ["model", "encoder", "decoder", "block", "attention"])
def test_switching_attention_at_any_level_changes_the_path_below_it(level, monkeypatch):
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    paths = record_attention_paths(monkeypatch)
    model(x, noise=noise)
    every = {layer.path for layer in _attention_layers(model)}
    assert len(every) == config.num_hidden_layers + config.decoder_num_hidden_layers
    assert sorted(paths) == sorted((path, "sdpa") for path in every)
    owner, below = _levels(model)[level]
    set_attn_implementation(owner, "eager")
    assert {layer.attn_implementation for layer in below} == {"eager"}
    del paths[:]
    model(x, noise=noise)
    switched = {layer.path for layer in below}
    assert sorted(paths) == sorted(
        (path, "eager" if path in switched else "sdpa") for path in every
    )
    with pytest.raises(ValueError, match="attn_implementation must be one of .* received 'flash'"):
        set_attn_implementation(owner, "flash")
    assert {layer.attn_implementation for layer in below} == {"eager"}


def test_the_model_switch_is_its_attribute():
    model = TFViTMAEForPreTraining(tiny_config())
    model.attn_implementation = "eager"
    assert model.attn_implementation == "eager"
    assert {layer.attn_implementation for layer in _attention_layers(model)} == {"eager"}
    assert model.get_config()["attn_implementation"] == "eager"
    with pytest.raises(ValueError, match="attn_implementation must be one of .* received 'flash'"):
        model.attn_implementation = "flash"
    assert model.attn_implementation == "eager"


@pytest.mark.parametrize("overrides", [dict(), dict(qkv_bias=False, num_channels=1)])
def test_fused_and_explicit_attention_agree(overrides, monkeypatch):
    config = tiny_config(**overrides)
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    paths = record_attention_paths(monkeypatch)
    assert model.attn_implementation == "sdpa"
    fused = model(x, noise=noise, output_hidden_states=True)
    assert {label for _, label in paths} == {"sdpa"}
    model.attn_implementation = "eager"
    del paths[:]
    explicit = model(x, noise=noise, output_hidden_states=True)
    assert {label for _, label in paths} == {"eager"}
    assert max_diff(fused.logits, explicit.logits) < 1e-5
    assert abs(float(fused.loss) - float(explicit.loss)) < 1e-5
    for a, b in zip(fused.hidden_states, explicit.hidden_states):
        assert max_diff(a, b) < 1e-5
    eager_model = TFViTMAEForPreTraining(config, attn_implementation="eager")
    eager_model.set_weights(model.get_weights())
    assert max_diff(eager_model(x, noise=noise).logits, fused.logits) < 1e-5
    with pytest.raises(ValueError, match="attn_implementation must be one of .* received 'flash'"):
        model.attn_implementation = "flash"


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_matches_numpy_reference(norm_pix_loss):
    config = tiny_config(norm_pix_loss=norm_pix_loss, num_channels=2, patch_size=4, image_size=16)
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config, batch=3), noise_for(config, batch=3)
    out = model(x, noise=noise)
    expected = numpy_mae_loss(x, out.logits.numpy(), out.mask.numpy(), 4, norm_pix_loss)
    assert abs(float(out.loss) - expected) < 1e-5 * max(1.0, expected)
    assert abs(float(model.forward_loss(x, out.logits, out.mask)) - expected) < 1e-5 * max(
        1.0, expected
    )


def test_norm_pix_loss_uses_unbiased_variance():
    config = tiny_config(norm_pix_loss=True)
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    out = model(x, noise=noise)
    unbiased = numpy_mae_loss(x, out.logits.numpy(), out.mask.numpy(), 8, True)
    target = numpy_patchify(x.astype(np.float64), 8)
    biased_target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
        target.var(-1, keepdims=True) + 1e-6
    )
    per_patch = ((out.logits.numpy() - biased_target) ** 2).mean(-1)
    biased = (per_patch * out.mask.numpy()).sum() / out.mask.numpy().sum()
    assert abs(float(out.loss) - unbiased) < 1e-5 and abs(unbiased - biased) > 1e-4


def test_loss_only_counts_masked_patches():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    out = model(x, noise=noise)
    target = numpy_patchify(x, 8)
    visible = out.mask.numpy() == 0
    # Replacing the prediction of visible patches by anything leaves the loss unchanged.
    logits = out.logits.numpy().copy()
    logits[visible] = target[visible] + 100.0
    assert abs(float(model.forward_loss(x, logits, out.mask)) - float(out.loss)) < 1e-5


def test_mask_ratio_zero_gives_unmasked_encoder_and_zero_loss_weight():
    config = tiny_config(mask_ratio=0.0)
    model = TFViTMAEForPreTraining(config)
    out = model(pixels(config))
    assert not out.mask.numpy().any() and float(out.loss) == 0.0
    np.testing.assert_array_equal(out.ids_restore, np.tile(np.arange(16), (2, 1)))


def test_patchify_matches_loops_and_unpatchify_inverts():
    for channels in (1, 3, 4):
        config = tiny_config(num_channels=channels, image_size=(16, 24), patch_size=8)
        model = TFViTMAEForPreTraining(config)
        x = pixels(config)
        patches = model.patchify(x)
        assert max_diff(patches, numpy_patchify(x, 8)) == 0
        assert max_diff(model.unpatchify(patches, (16, 24)), x) == 0
    last = TFViTMAEForPreTraining(tiny_config(), data_format="channels_last")
    x = pixels(tiny_config(), channels_last=True)
    assert max_diff(last.unpatchify(last.patchify(x)), x) == 0


def test_unpatchify_checks_shape():
    model = TFViTMAEForPreTraining(tiny_config())
    with pytest.raises(
        ValueError, match=r"shape \(batch, 16, 192\) for a 32x32 image, received \(2, 15, 192\)"
    ):
        model.unpatchify(np.zeros((2, 15, 192), "float32"))


def test_channels_last_matches_channels_first():
    config = tiny_config()
    first = TFViTMAEForPreTraining(config)
    last = TFViTMAEForPreTraining(config, data_format="channels_last")
    last.set_weights(first.get_weights())
    x, noise = pixels(config), noise_for(config)
    a = first(x, noise=noise)
    b = last(np.transpose(x, (0, 2, 3, 1)), noise=noise)
    assert max_diff(a.logits, b.logits) < 1e-6 and abs(float(a.loss) - float(b.loss)) < 1e-6


@pytest.mark.parametrize("height, width", [(48, 48), (24, 40), (16, 8)])
def test_interpolate_pos_encoding_runs_on_other_resolutions(height, width):
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x = pixels(config, height=height, width=width)
    noise = noise_for(config, height=height, width=width)
    out = model(x, noise=noise, interpolate_pos_encoding=True)
    n = (height // 8) * (width // 8)
    assert out.logits.shape == (2, n, config.patch_dim) and np.isfinite(float(out.loss))
    expected = numpy_mae_loss(x, out.logits.numpy(), out.mask.numpy(), 8, False)
    assert abs(float(out.loss) - expected) < 1e-5 * max(1, expected)


def test_interpolation_at_native_size_is_identity():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    assert (
        max_diff(
            model(x, noise=noise).logits,
            model(x, noise=noise, interpolate_pos_encoding=True).logits,
        )
        == 0
    )


def test_head_mask():
    config = tiny_config()
    model = TFViTMAEModel(config)
    x, noise = pixels(config), noise_for(config)
    base = model(x, noise=noise).last_hidden_state
    ones = model(x, noise=noise, head_mask=np.ones(4, "float32")).last_hidden_state
    assert max_diff(base, ones) < 1e-5
    per_layer = np.ones((2, 4), "float32")
    per_layer[1, 2] = 0
    out = model(x, noise=noise, head_mask=per_layer, output_attentions=True)
    assert not out.attentions[1].numpy()[:, 2].any() and out.attentions[0].numpy()[:, 2].any()
    assert max_diff(out.last_hidden_state, base) > 1e-4


def test_hidden_states_are_block_outputs():
    config = tiny_config()
    model = TFViTMAEModel(config)
    x, noise = pixels(config), noise_for(config)
    out = model(x, noise=noise, output_hidden_states=True)
    h = out.hidden_states[0]
    for i, block in enumerate(model.vit.blocks):
        h, _ = block(h)
        assert max_diff(h, out.hidden_states[i + 1]) < 1e-6
    assert max_diff(model.vit.layernorm(h), out.last_hidden_state) < 1e-6


def test_config_controls_default_outputs():
    config = tiny_config(output_hidden_states=True, output_attentions=True, return_dict=False)
    out = TFViTMAEModel(config)(pixels(config))
    assert isinstance(out, tuple) and len(out) == 5


def test_dict_inputs():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    a = model({"pixel_values": x, "noise": noise})
    b = model(x, noise=noise)
    assert max_diff(a.logits, b.logits) == 0


def photos():
    """Two real photographs (427x640 RGB) that ship with scikit-learn."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def test_predict_images_features_of_real_photos(tmp_path):
    from PIL import Image

    model = TFViTMAEModel(tiny_config())
    first, second = photos()
    path = tmp_path / "photo.png"
    Image.fromarray(first).save(path)
    out = model.predict_images([str(path), Image.fromarray(second), second])
    assert set(out) == {"cls_features", "mean_features"}
    assert out["cls_features"].shape == out["mean_features"].shape == (3, 32)
    np.testing.assert_allclose(out["cls_features"][1], out["cls_features"][2], atol=1e-6)
    pixel_values = model.image_processor([first])["pixel_values"]
    # Reference: a model with the same weights that masks nothing by its config.
    unmasked = TFViTMAEModel(model.config.copy(mask_ratio=0.0))
    unmasked.set_weights(model.get_weights())
    hidden = unmasked(pixel_values).last_hidden_state
    assert max_diff(out["cls_features"][0], hidden[0, 0]) < 1e-5
    assert max_diff(out["mean_features"][0], np.mean(hidden[0, 1:], axis=0)) < 1e-5


def test_predict_images_reconstructions_of_real_photos():
    model = TFViTMAEForPreTraining(tiny_config(), data_format="channels_last")
    images = photos() * 3
    out = model.predict_images(images, batch_size=4, seed=1)
    assert out["reconstruction"].shape == out["prediction"].shape == (6, 32, 32, 3)
    assert out["reconstruction"].dtype == np.uint8 and out["mask"].shape == (6, 16)
    assert out["loss"].shape == (6,) and np.isfinite(out["loss"]).all()
    # The visible patches of the reconstruction are the input's own pixels.
    resized = model.image_processor.denormalize(
        model.image_processor(images[:1], data_format="channels_last")["pixel_values"]
    ).numpy()[0]
    visible = model.patchify(resized[None].astype("float32")).numpy()[0][out["mask"][0] == 0]
    kept = model.patchify(out["reconstruction"][:1].astype("float32")).numpy()[0]
    np.testing.assert_array_equal(kept[out["mask"][0] == 0], visible)
    # Loss and predicted pixels, recomputed from the model's logits for the same masks
    # (noise that ranks each image's kept patches first gives its mask back).
    mask = out["mask"]
    pixel_values = model.image_processor(images, data_format="channels_last")["pixel_values"]
    noise = (mask + 0.5 * np.random.default_rng(0).random(mask.shape)).astype("float32")
    reference = model(pixel_values, noise=noise)
    np.testing.assert_array_equal(reference.mask, mask)
    logits = np.asarray(reference.logits, np.float64)
    target = numpy_patchify(np.transpose(pixel_values, (0, 3, 1, 2)).astype(np.float64), 8)
    per_patch = ((logits - target) ** 2).mean(-1)
    np.testing.assert_allclose(out["loss"], (per_patch * mask).sum(1) / mask.sum(1), rtol=1e-4)
    channel = np.arange(logits.shape[-1]) % 3  # patches are (row, col, channel) ordered
    processor = model.image_processor
    mean, std = (np.asarray(v)[channel] for v in (processor.image_mean, processor.image_std))
    levels = np.clip(np.round((logits * std + mean) * 255), 0, 255)
    as_patches = lambda x: numpy_patchify(np.transpose(x, (0, 3, 1, 2)), 8)  # noqa: E731
    assert max_diff(as_patches(out["prediction"]), levels) <= 1  # a level, for rounding
    removed = mask == 1
    np.testing.assert_array_equal(
        as_patches(out["reconstruction"])[removed], as_patches(out["prediction"])[removed]
    )
    # Masks come from (seed, image index), whatever the batching.
    again = model.predict_images(images, batch_size=6, seed=1)
    np.testing.assert_array_equal(again["mask"], out["mask"])
    assert not np.array_equal(out["mask"][0], out["mask"][1])
    assert not np.array_equal(model.predict_images(images[:1], seed=2)["mask"], out["mask"][:1])
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, received 0"):
        model.predict_images(images, batch_size=0)


def test_transformers_model_idioms():
    """`Model.from_config(config)`, `main_input_name` and the embedding getters,
    as code written for transformers' TF classes calls them (issue 21)."""
    from tfvitmae import TFViTMAEForImageClassification

    config = tiny_config()
    for cls in (TFViTMAEModel, TFViTMAEForPreTraining, TFViTMAEForImageClassification):
        model = cls.from_config(config)
        assert type(model) is cls and model.config.hidden_size == config.hidden_size
        assert model.main_input_name == "pixel_values"
        assert model.get_input_embeddings() is model.vit.embeddings.patch_embeddings
        assert model.get_input_embeddings().projection.kernel.shape == (8, 8, 3, 32)
        assert model.get_output_embeddings() is None
    # Keras' own form, get_config's dict, still rebuilds the same model.
    pretraining = TFViTMAEForPreTraining(config, data_format="channels_last", remat=True)
    clone = TFViTMAEForPreTraining.from_config(pretraining.get_config())
    assert clone.config == config and clone.data_format == "channels_last" and clone.remat


def test_a_mask_ratio_changed_on_the_config_takes_effect():
    """transformers' TF model reads `config.mask_ratio` at call time, as this one does now."""
    config = tiny_config()  # 16 patches
    model = TFViTMAEModel(config)
    x = pixels(config)
    assert model(x).last_hidden_state.shape[1] == 1 + 4
    model.config.mask_ratio = 0.0
    assert model(x).last_hidden_state.shape[1] == 1 + 16
    model.config.mask_ratio = 0.5
    assert model(x).last_hidden_state.shape[1] == 1 + 8
    model.config.mask_ratio = 1.0
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\), received 1.0"):
        model(x)


def test_call_options_inside_the_input_dict():
    """transformers' TF models take `{"pixel_values": x, "output_attentions": True}`;
    Keras refused the Python bools in a positional dict (issue 21)."""
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    options = dict(output_attentions=True, output_hidden_states=True)
    from_dict = model({"pixel_values": x, "noise": noise, **options})
    expected = model(x, noise=noise, **options)
    assert len(from_dict.attentions) == len(expected.attentions) == config.num_hidden_layers
    for a, b in zip(from_dict.to_tuple(), expected.to_tuple()):
        if not isinstance(a, tuple):
            np.testing.assert_array_equal(a, b)
    as_tuple = model({"pixel_values": x, "noise": noise, "return_dict": False})
    assert isinstance(as_tuple, tuple) and as_tuple[1].shape == expected.logits.shape
    with pytest.raises(ValueError, match=r"\['output_attentions'\] given both in the input dict"):
        model({"pixel_values": x, "output_attentions": True}, output_attentions=False)
