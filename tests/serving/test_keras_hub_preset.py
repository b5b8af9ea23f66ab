"""keras-hub presets of MAE encoders, loaded with keras-hub's own classes."""

import sys

import numpy as np
import pytest

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.serving import export_keras_hub

from ..helpers import max_diff, tiny_config


def uint8_images(height=50, width=70, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (2, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "overrides",
    [dict(layer_norm_eps=1e-6), dict(image_size=(32, 48), patch_size=(8, 16), mask_ratio=0.5)],
    ids=["square", "wide"],
)
def test_backbone_and_converter_presets_load_in_keras_hub(overrides, tmp_path):
    import keras_hub

    model = TFViTMAEForPreTraining(tiny_config(**overrides))
    assert model.export(tmp_path / "preset", format="keras_hub", verbose=False) == ["ViTBackbone"]
    assert "tfvitmae" not in (tmp_path / "preset" / "config.json").read_text()
    backbone = keras_hub.models.ViTBackbone.from_preset(str(tmp_path / "preset"))
    height, width = model.config.image_hw
    x = np.random.default_rng(0).random((2, height, width, 3), dtype=np.float32)
    expected = model.vit(x, unmasked=True).last_hidden_state  # the encoder, no mask
    assert max_diff(backbone(x), expected) < 1e-5
    # The converter resizes and normalises as the model's processor does.
    converter = keras_hub.layers.ImageConverter.from_preset(str(tmp_path / "preset"))
    images = uint8_images()
    ours = model.image_processor(list(images), data_format="channels_last")["pixel_values"]
    assert max_diff(converter(images), ours) < 1e-5


def test_classifier_preset_gives_the_classifiers_logits(tmp_path):
    import keras_hub

    model = TFViTMAEForImageClassification(
        tiny_config(), id2label={0: "a", 1: "b", 2: "c"}, linear_probe=True
    )
    rng = np.random.default_rng(0)
    for variable in model.weights:  # every weight non-trivial, BatchNorm statistics too
        values = rng.normal(0, 0.2, variable.shape)
        variable.assign(np.abs(values) + 0.5 if "variance" in variable.path else values)
    assert export_keras_hub(model, tmp_path / "preset", verbose=False) == "ViTImageClassifier"
    task = keras_hub.models.ViTImageClassifier.from_preset(str(tmp_path / "preset"))
    images = uint8_images()
    logits = task.predict(images, verbose=0)
    # keras-hub keeps resized uint8 pixels fractional (ours round to whole
    # levels, as PIL): the same computation is ours on the images as floats.
    as_floats = model.image_processor.preprocess(images.astype("float32"))
    expected = model(model.to_model_layout(as_floats))
    assert max_diff(logits, expected) < 1e-5
    rounded = model(model.image_processor(list(images))["pixel_values"])
    assert max_diff(logits, rounded) < 1e-2  # half a level of 255 at most, per pixel


@pytest.mark.parametrize(
    "make, pattern",
    [
        (
            lambda: TFViTMAEForImageClassification(tiny_config(), num_labels=2, pooling="mean"),
            r"mean-pooled classifier cannot be a keras-hub ViTImageClassifier",
        ),
        (lambda: TFViTMAEModel(tiny_config(hidden_act="relu")), r"hidden_act is 'relu'"),
        (lambda: TFViTMAEModel(tiny_config(qkv_bias=False)), r"qkv_bias=False"),
    ],
    ids=["mean-pooling", "activation", "no-qkv-bias"],
)
def test_what_keras_hub_cannot_hold_is_refused(make, pattern, tmp_path):
    with pytest.raises(ValueError, match=pattern):
        export_keras_hub(make(), tmp_path / "preset")
    assert not list(tmp_path.iterdir())


def test_a_missing_keras_hub_is_named_and_an_existing_preset_kept(tmp_path, monkeypatch):
    model = TFViTMAEModel(tiny_config())
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already exists"):
        export_keras_hub(model, tmp_path / "taken")
    assert (tmp_path / "taken" / "config.json").read_text() == "{}"
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(ImportError, match=r"keras-hub package.*tfvitmae\[keras-hub\]"):
        export_keras_hub(model, tmp_path / "preset")
