"""`from_pretrained` compares a `.weights.h5` file's widths with the config
before it builds anything, as it does for the other layouts."""

import json
import shutil

import pytest

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.checkpoints.formats import CheckpointError

from ..helpers import tiny_config


@pytest.fixture(scope="module")
def keras_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras")
    TFViTMAEForPreTraining(tiny_config()).save_pretrained(folder)
    assert (folder / "model.weights.h5").exists()
    return folder


@pytest.mark.parametrize(
    "field, value, weight",
    [
        ("hidden_size", 64, "vit/embeddings/0"),
        ("intermediate_size", 40, "vit/layer_0/mlp/intermediate/1"),
        ("decoder_hidden_size", 24, "decoder/0"),
        ("decoder_intermediate_size", 20, "decoder/layer_0/mlp/intermediate/1"),
        ("num_channels", 1, "vit/embeddings/patch_embeddings/projection/0"),
    ],
)
def test_keras_weights_of_other_widths_are_refused_before_building(
    keras_folder, tmp_path, monkeypatch, field, value, weight
):
    folder = tmp_path / "edited"
    folder.mkdir()
    shutil.copy(keras_folder / "model.weights.h5", folder / "model.weights.h5")
    config = json.loads((keras_folder / "config.json").read_text())
    stored = config[field]
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    built = []
    monkeypatch.setattr(
        TFViTMAEForPreTraining, "__init__", lambda self, *a, **k: built.append(1) or 1 / 0
    )
    with pytest.raises(CheckpointError) as error:
        TFViTMAEForPreTraining.from_pretrained(folder)
    message = str(error.value)
    assert f"{field} = {value} in config.json, {stored} in model.weights.h5" in message
    assert f"({weight}: stored (" in message and "expected (" in message
    assert "Nothing was built" in message and not built


def test_keras_weights_of_the_configs_widths_still_load(keras_folder):
    model = TFViTMAEForPreTraining.from_pretrained(keras_folder)
    assert model.config.hidden_size == tiny_config().hidden_size
