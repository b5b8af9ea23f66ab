import keras
import numpy as np
import pytest

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel

from .helpers import max_diff, noise_for, pixels, tiny_config


@pytest.mark.parametrize("cls", [TFViTMAEModel, TFViTMAEForPreTraining])
def test_get_config_round_trip(cls):
    model = cls(tiny_config(norm_pix_loss=True), data_format="channels_last", attn_implementation="eager", seed=5)
    config = model.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    assert clone.config == model.config and clone.data_format == "channels_last"
    assert clone.attn_implementation == "eager" and clone.seed == 5


@pytest.mark.parametrize("cls", [TFViTMAEModel, TFViTMAEForPreTraining])
def test_keras_file_round_trip(cls, tmp_path):
    config = tiny_config()
    model = cls(config)
    x, noise = pixels(config), noise_for(config)
    before = model(x, noise=noise)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls and loaded.config == config
    after = loaded(x, noise=noise)
    for key in before:
        assert max_diff(before[key], after[key]) == 0, key


def test_save_and_load_weights(tmp_path):
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    path = tmp_path / "mae.weights.h5"
    model.save_weights(path)
    fresh = TFViTMAEForPreTraining(config)
    assert max_diff(fresh(x, noise=noise).logits, model(x, noise=noise).logits) > 0
    fresh.load_weights(path)
    assert max_diff(fresh(x, noise=noise).logits, model(x, noise=noise).logits) == 0


def test_weights_exist_without_a_call():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    assert model.built and model.count_params() > 0
    names = {w.path.split("/", 1)[1] for w in model.weights}
    assert "vit/embeddings/cls_token" in names and "decoder/mask_token" in names
    assert "vit/layer_1/attention/qkv/kernel" in names and "decoder/decoder_pred/kernel" in names


def test_saved_model_loads_into_training():
    config = tiny_config()
    model = TFViTMAEForPreTraining(config)
    model.compile(optimizer="adam")
    images = pixels(config, batch=8)
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model.save(f"{d}/m.keras")
        loaded = keras.saving.load_model(f"{d}/m.keras")
    history = loaded.fit(images, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
