"""Keras `compile` / `fit` / `evaluate` / `predict` on the models: the model's
own loss, dict batches, mixed precision, XLA, and saved models that train on."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel

from ..helpers import max_diff, noise_for, numpy_mae_loss, pixels, smooth_images, tiny_config


@pytest.mark.slow
def test_fit_reduces_loss_on_arrays():
    keras.utils.set_random_seed(0)
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(smooth_images(config, n=64), batch_size=8, epochs=10, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_fit_evaluate_predict_on_datasets():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    model.compile(optimizer="adam", jit_compile=False)  # XLA: test_fit_with_jit_compile
    images = smooth_images(config, n=12)
    as_dicts = tf.data.Dataset.from_tensor_slices({"pixel_values": images}).batch(4)
    with_labels = tf.data.Dataset.from_tensor_slices((images, np.arange(12))).batch(
        4
    )  # labels are ignored
    for data in (as_dicts, with_labels):
        history = model.fit(data, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    before = [w.numpy().copy() for w in model.trainable_weights]
    result = model.evaluate(as_dicts, verbose=0)
    assert np.isfinite(result)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, model.trainable_weights))
    preds = model.predict(images, batch_size=5, verbose=0)
    assert set(preds) == {"logits", "mask", "ids_restore"}
    assert preds["logits"].shape == (12, config.num_patches, config.patch_dim)
    assert preds["mask"].sum() == 12 * 12


@pytest.mark.slow
def test_fixed_noise_in_dict_batches_decides_the_masks():
    """Two models with the same weights but different masking seeds agree on
    dict batches that carry the noise, and disagree without it."""
    config = tiny_config()
    images = smooth_images(config, n=8)
    noise = np.tile(noise_for(config, batch=1), (8, 1))
    models = [TFViTMAEForPreTraining(config, seed=seed) for seed in (1, 2)]
    models[1].set_weights(models[0].get_weights())
    for model in models:
        model.compile(optimizer="sgd")

    def evaluate(data):
        return [m.evaluate(data, batch_size=4, verbose=0) for m in models]

    with_noise = evaluate({"pixel_values": images, "noise": noise})
    assert with_noise[0] == with_noise[1]
    without = evaluate({"pixel_values": images})
    assert without[0] != without[1]


@pytest.mark.slow
def test_train_step_updates_weights_but_not_position_tables():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    table = model.vit.embeddings.position_embeddings.numpy().copy()
    kernel = model.decoder.decoder_pred.kernel.numpy().copy()
    model.compile(optimizer="adam", jit_compile=False)
    model.fit(smooth_images(config, n=8), batch_size=4, epochs=1, verbose=0)
    assert np.array_equal(table, model.vit.embeddings.position_embeddings.numpy())
    assert not np.array_equal(kernel, model.decoder.decoder_pred.kernel.numpy())
    trainable = {w.path.split("/")[-1] for w in model.trainable_weights}
    assert "position_embeddings" not in trainable and "decoder_pos_embed" not in trainable
    assert {"cls_token", "mask_token"} <= trainable


def test_dropout_only_in_training():
    config = tiny_config(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    model = TFViTMAEForPreTraining(config, seed=0)
    x, noise = pixels(config), noise_for(config)
    a, b = model(x, noise=noise), model(x, noise=noise)
    assert max_diff(a.logits, b.logits) == 0
    c = model(x, noise=noise, training=True)
    assert max_diff(a.logits, c.logits) > 1e-4


def test_mixed_precision_keeps_pixels_and_the_softmax_in_float32(monkeypatch):
    """README: under mixed precision the softmax is float32 and pixels are not
    rounded to 16 bits. Pixels of 1 + 2**-10 round to 1.0 in bfloat16, which
    would move the loss target by 0.1%; the loss must be the float32 image's."""
    from tfvitmae.models import layers

    softmax_inputs = []
    softmax = layers.ops.softmax

    def spy(x, *args, **kwargs):
        softmax_inputs.append(keras.backend.standardize_dtype(x.dtype))
        return softmax(x, *args, **kwargs)

    monkeypatch.setattr(layers.ops, "softmax", spy)
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, dtype="mixed_bfloat16")
    x = np.full((2, config.num_channels, *config.image_hw), 1 + 2**-10, "float32")
    out = model(x, noise=noise_for(config))
    expected = numpy_mae_loss(x, out.logits, out.mask, config.patch_size, norm_pix_loss=False)
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert softmax_inputs and set(softmax_inputs) == {"float32"}, softmax_inputs


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    compute = policy.split("_")[1]
    assert model.vit.blocks[0].attention.qkv.compute_dtype == compute
    assert model.vit.blocks[0].attention.qkv.kernel.dtype == "float32"
    out = model(pixels(config), noise=noise_for(config), output_hidden_states=True)
    assert (
        out.loss.dtype == tf.float32
        and out.logits.dtype == tf.float32
        and out.mask.dtype == tf.float32
    )
    assert out.hidden_states[-1].dtype == compute
    encoder = TFViTMAEModel(config)
    assert encoder(pixels(config)).last_hidden_state.dtype == compute
    model.compile(optimizer="adam")
    history = model.fit(smooth_images(config, n=8), batch_size=4, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))


@pytest.mark.slow
def test_xla_call_matches_eager():
    config = tiny_config(norm_pix_loss=True)
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    eager = model(x, noise=noise, output_hidden_states=True)
    compiled = tf.function(
        lambda a, n: model(a, noise=n, output_hidden_states=True), jit_compile=True
    )(x, noise)
    assert max_diff(eager.logits, compiled.logits) < 1e-5
    assert abs(float(eager.loss) - float(compiled.loss)) < 1e-5
    np.testing.assert_array_equal(eager.ids_restore, compiled.ids_restore)
    random_masks = tf.function(lambda a: model(a).mask, jit_compile=True)(x)
    assert random_masks.numpy().sum() == 2 * 12


@pytest.mark.slow
def test_fit_with_jit_compile():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    model.compile(optimizer="adam", jit_compile=True)
    history = model.fit(smooth_images(config, n=8), batch_size=4, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))


@pytest.mark.slow
def test_saved_model_loads_into_training(tmp_path):
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    model.compile(optimizer="adam", jit_compile=False)  # compiling XLA twice takes long
    images = pixels(config, batch=8)
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert int(loaded.optimizer.iterations) == 2  # the optimizer state came along
    before = [w.numpy().copy() for w in loaded.trainable_weights]
    history = loaded.fit(images, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(loaded.optimizer.iterations) == 4
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, loaded.trainable_weights))


def test_compile_turns_xla_on_where_it_is_faster():
    """Keras' own "auto" leaves XLA off on a CPU-only machine; the model's is on
    for float32, off for 16-bit policies on CPU and inside a strategy."""
    model = TFViTMAEForPreTraining(tiny_config())
    model.compile(optimizer="adam")
    assert model.jit_compile is True
    model.compile(optimizer="adam", jit_compile=False)
    assert model.jit_compile is False
    model.compile(optimizer="adam", run_eagerly=True)
    assert model.jit_compile is False
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    bf16 = TFViTMAEForPreTraining(tiny_config(), dtype="mixed_bfloat16")
    bf16.compile(optimizer="adam")
    assert bf16.jit_compile is on_gpu
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = TFViTMAEForPreTraining(tiny_config())
        mirrored.compile(optimizer="adam")
    assert mirrored.jit_compile is False


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_bfloat16_outputs_track_float32(attn_implementation):
    """The documented bf16 tolerance: with the same weights and masks, logits
    within 2% of their float32 range and the loss within 1%; masks exact."""
    config = tiny_config(norm_pix_loss=True)
    fp32 = TFViTMAEForPreTraining(config, attn_implementation=attn_implementation)
    bf16 = TFViTMAEForPreTraining(
        config, attn_implementation=attn_implementation, dtype="mixed_bfloat16"
    )
    bf16.set_weights(fp32.get_weights())
    x, noise = pixels(config, batch=4), noise_for(config, batch=4)
    a, b = fp32(x, noise=noise), bf16(x, noise=noise)
    scale = float(np.max(np.abs(a.logits)))
    assert max_diff(a.logits, b.logits) < 0.02 * scale
    assert abs(float(a.loss) - float(b.loss)) < 0.01 * float(a.loss)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.ids_restore, b.ids_restore)


def test_remat_recomputes_every_block_and_gives_the_same_gradients(monkeypatch, tmp_path):
    config = tiny_config(hidden_dropout_prob=0.0)
    x, noise = pixels(config), noise_for(config)
    checkpointed = []
    remat = keras.remat

    def counting_remat(function):
        checkpointed.append(function)
        return remat(function)

    monkeypatch.setattr(keras, "remat", counting_remat)
    gradients, weights = {}, TFViTMAEForPreTraining(config, seed=0).get_weights()
    for on in (False, True):
        model = TFViTMAEForPreTraining(config, remat=on)
        model.set_weights(weights)
        with tf.GradientTape() as tape:
            loss = model(x, noise=noise, training=True).loss
        gradients[on] = tape.gradient(loss, model.trainable_variables)
    # One checkpoint per block: 2 encoder blocks and 1 decoder block, only with remat.
    assert len(checkpointed) == config.num_hidden_layers + config.decoder_num_hidden_layers
    for a, b in zip(gradients[False], gradients[True]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").remat is True
    model(x, noise=noise)  # not in training: no checkpoint
    assert len(checkpointed) == 3
    with pytest.raises(ValueError, match="remat must be True or False, received 'yes'"):
        model.remat = "yes"


@pytest.mark.parametrize(
    "arguments, pattern",
    [
        (
            dict(metrics=["mse"]),
            r"learns without labels, so compile metrics .* Received metrics=\['mse'\]",
        ),
        (dict(weighted_metrics=["mae"]), r"compile weighted_metrics"),
        (dict(loss="mse"), r"computes its own loss .* received loss='mse'"),
    ],
)
def test_compile_refuses_what_the_pretraining_model_would_ignore(arguments, pattern):
    """`compile(metrics=[...])` failed with a Keras structure error (issue 21), and a
    `loss` was silently ignored: the model computes its own."""
    model = TFViTMAEForPreTraining(tiny_config())
    with pytest.raises(ValueError, match=pattern):
        model.compile(optimizer="adam", **arguments)
    with pytest.raises(ValueError, match=pattern):  # positionally too
        names = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")
        position = names.index(next(iter(arguments)))
        model.compile(*(["adam"] + [None] * (position - 1) + [next(iter(arguments.values()))]))
    model.compile(optimizer="adam")  # without them, as before


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_nearly_tied_noise_masks_as_in_float32(policy):
    """Noise 1e-4 apart rounds to one value in 16 bits (bf16's spacing near
    0.5 is 0.002), so the patches kept would follow the sort's tie order."""
    config = tiny_config()
    fp32 = TFViTMAEModel(config)
    mixed = TFViTMAEModel(config, dtype=policy)
    x = pixels(config, batch=2)
    fp32(x)
    mixed(x)
    mixed.set_weights(fp32.get_weights())
    order = np.random.default_rng(0).permutation(config.num_patches)
    noise = np.stack([0.5 + 1e-4 * order, 0.5 + 1e-4 * order[::-1]]).astype("float32")
    a, b = fp32(x, noise=noise), mixed(x, noise=noise)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.ids_restore, b.ids_restore)
    np.testing.assert_array_equal(np.argsort(noise, axis=1), np.argsort(a.ids_restore, axis=1))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_pretraining_gradients_match_pytorch(tmp_path, jit_compile):
    # Every trainable weight's gradient of the masked-patch loss, with XLA and
    # without (where the attention's q, k and v are unstacked from the fused
    # projection), against transformers' autograd on the same weights and noise.
    # PyTorch's gradients are saved as a checkpoint's weights by transformers
    # itself and loaded by ours, so each lands on the weight it belongs to.
    import torch

    from ..helpers import save_torch_reference

    reference, folder = save_torch_reference(tmp_path / "weights")
    ours = TFViTMAEForPreTraining.from_pretrained(folder)
    x, noise = pixels(ours.config), noise_for(ours.config)
    reference(torch.from_numpy(x), noise=torch.from_numpy(noise)).loss.backward()
    with torch.no_grad():
        for param in reference.parameters():
            if param.grad is not None:
                param.copy_(param.grad)
    reference.save_pretrained(tmp_path / "gradients")
    expected = TFViTMAEForPreTraining.from_pretrained(tmp_path / "gradients")

    @tf.function(jit_compile=jit_compile)
    def gradients():
        with tf.GradientTape() as tape:
            loss = ours(x, noise=noise, training=True).loss
        return tape.gradient(loss, ours.trainable_variables)

    actual = gradients()
    assert len(actual) == len(expected.trainable_variables) > 40
    for variable, gradient, want in zip(
        ours.trainable_variables, actual, expected.trainable_variables
    ):
        assert variable.path == want.path
        scale = max(float(np.abs(want.numpy()).max()), 1e-3)
        assert max_diff(gradient, want.numpy()) < 1e-5 * scale, variable.path
    # The fused projection gets a gradient in each of its q, k and v thirds.
    qkv = next(g for v, g in zip(ours.trainable_variables, actual) if v.path.endswith("qkv/kernel"))
    assert all(np.abs(part).max() > 0 for part in np.split(np.asarray(qkv), 3, axis=-1))
