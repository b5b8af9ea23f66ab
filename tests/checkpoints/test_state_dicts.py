"""Moving arrays between a model and a state dict: all or nothing, with a report."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel, ViTMAEConfig
from tfvitmae.checkpoints.formats import CheckpointError
from tfvitmae.checkpoints.state_dicts import load_state_dict, to_state_dict
from tfvitmae.models.classification import TFViTMAEForImageClassification

from ..helpers import REFERENCE_CONFIG, max_diff, noise_for, pixels, tiny_config

# Every model kind, as (class, constructor arguments).
KINDS = {
    "encoder": (TFViTMAEModel, {}),
    "pretraining": (TFViTMAEForPreTraining, {}),
    "cls": (TFViTMAEForImageClassification, dict(num_labels=2)),
    "mean": (TFViTMAEForImageClassification, dict(num_labels=2, pooling="mean")),
    "probe": (TFViTMAEForImageClassification, dict(num_labels=2, linear_probe=True)),
}


@pytest.mark.parametrize("fmt", ["transformers", "mae"])
def test_to_state_dict_and_back(fmt):
    config = ViTMAEConfig(**REFERENCE_CONFIG)
    model, other = TFViTMAEForPreTraining(config), TFViTMAEForPreTraining(config)
    state = to_state_dict(model, fmt)
    report = load_state_dict(other, state)
    assert report.format == fmt and not report.missing and not report.unexpected
    assert sorted(report.loaded) == sorted(w.path.split("/", 1)[1] for w in model.weights)
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_encoder_state_dict_has_no_model_prefix():
    encoder = TFViTMAEModel(ViTMAEConfig(**REFERENCE_CONFIG))
    state = to_state_dict(encoder)
    assert "embeddings.cls_token" in state and not any(k.startswith("vit.") for k in state)
    assert not any(k.startswith("decoder") for k in state)
    with pytest.raises(ValueError, match="received 'keras'"):
        to_state_dict(encoder, "keras")


def test_mismatched_config_names_key_and_shapes_and_loads_nothing(checkpoint):
    _, path = checkpoint()
    model = TFViTMAEForPreTraining(ViTMAEConfig(**{**REFERENCE_CONFIG, "intermediate_size": 40}))
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(
        CheckpointError,
        match=r"(?s)model\.safetensors.*nothing was loaded.*shape mismatch: "
        r"vit\.encoder\.layer\.0\.intermediate\.dense\.weight expected "
        r"\(40, 32\), found \(37, 32\)",
    ):
        model.load_pretrained_weights(path)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, model.weights))


def test_layer_count_mismatch_and_strict_false(checkpoint):
    _, path = checkpoint()
    # Found from the names before the model is built.
    for layers in (1, 3):
        with pytest.raises(
            CheckpointError,
            match=rf"num_hidden_layers = {layers} in the config, 2 in model\.safetensors",
        ):
            TFViTMAEForPreTraining.from_pretrained(path, num_hidden_layers=layers)
    with pytest.warns(UserWarning, match="Partial load"):
        model, report = TFViTMAEForPreTraining.from_pretrained(
            path, num_hidden_layers=3, strict=False, output_loading_info=True
        )
    assert (
        any(p.startswith("vit/layer_2/") for p in report.missing)
        and "vit/layer_1/mlp/output/kernel" in report.loaded
    )


def test_unmapped_keys_are_an_error_unless_not_strict(checkpoint, tmp_path):
    _, path = checkpoint()
    state = load_file(path / "model.safetensors")
    state["vit.extra_projection.weight"] = np.zeros((2, 2), "float32")
    folder = tmp_path / "extra"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(
        CheckpointError, match=r"(?s)model\.safetensors.*unexpected: vit\.extra_projection\.weight"
    ):
        TFViTMAEForPreTraining.from_pretrained(folder)
    with pytest.warns(UserWarning, match="vit.extra_projection.weight"):
        _, report = TFViTMAEForPreTraining.from_pretrained(
            folder, strict=False, output_loading_info=True
        )
    assert report.unexpected == ["vit.extra_projection.weight"] and not report.missing


def _outputs(model, x, noise):
    if isinstance(model, TFViTMAEForImageClassification):
        return model(x)
    out = model(x, noise=noise)
    return out.logits if isinstance(model, TFViTMAEForPreTraining) else out.last_hidden_state


# A model's own name is never one of its parts, even when it is a part's name:
# each name on every kind that has that part ("vit" on all).
NAMED = (
    [("vit", kind) for kind in KINDS]
    + [("decoder", "pretraining"), ("classifier", "cls"), ("classifier", "mean")]
    + [
        ("fc_norm", "mean"),
        ("probe_norm", "probe"),
    ]
)


@pytest.mark.parametrize("name, kind", NAMED)
def test_a_model_named_like_a_part_round_trips_through_pytorch(name, kind, tmp_path):
    config = tiny_config()
    x, noise = pixels(config), noise_for(config)
    cls, kwargs = KINDS[kind]
    model = cls(config, name=name, **kwargs)
    model.save_pretrained(tmp_path, pytorch=True)
    assert len(load_file(tmp_path / "model.safetensors")) >= len(model.weights) - 2
    back = cls.from_pretrained(tmp_path)
    assert max_diff(_outputs(back, x, noise), _outputs(model, x, noise)) < 1e-6


class _WithTemperature(TFViTMAEModel):
    """A model with a weight outside every part of the name table."""

    def build(self, input_shape=None):
        super().build(input_shape)
        self.temperature = self.add_weight(shape=(2,), name="temperature")


def test_a_weight_without_a_pytorch_name_refuses_the_save(tmp_path):
    model = _WithTemperature(tiny_config())
    with pytest.raises(CheckpointError, match=r"1 of its 31 weights have no name .*temperature"):
        to_state_dict(model)
    with pytest.raises(CheckpointError, match="nothing was written"):
        model.save_pretrained(tmp_path / "saved", pytorch=True)
    assert not (tmp_path / "saved").exists() or not list((tmp_path / "saved").iterdir())


# The round-trip cells of issue 30's matrix: every model kind in every layout a
# save writes, under an unusual name, saved, loaded, re-saved from the loaded
# model and loaded again. (MAE `.pth` and timm files are layouts loads read:
# test_weight_names.py and test_classification.py load them.)
SAVE_LAYOUTS = {"keras": {}, "pytorch": dict(pytorch=True), "vit": dict(pytorch="vit")}


@pytest.mark.parametrize("layout", SAVE_LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_in_every_layout_and_again_after_a_reload(kind, layout, tmp_path):
    config = tiny_config()
    x, noise = pixels(config), noise_for(config)
    cls, kwargs = KINDS[kind]
    model = cls(config, name="vit", **kwargs)
    if (kind, layout) == ("mean", "vit"):  # ViTForImageClassification reads the CLS token
        with pytest.raises(ValueError, match="mean-pooled classifier has no transformers ViT"):
            model.save_pretrained(tmp_path, **SAVE_LAYOUTS[layout])
        assert not tmp_path.exists() or not list(tmp_path.iterdir())
        return
    if (kind, layout) == ("pretraining", "vit"):  # the encoder alone, and it says so
        with pytest.warns(UserWarning, match="decoder.s 24 weights are not saved"):
            model.save_pretrained(tmp_path / "vit", pytorch="vit")
        model.save_pretrained(tmp_path / "whole", pytorch=True)
        with pytest.warns(UserWarning, match="Ignored 24 weights"):
            reference = TFViTMAEModel.from_pretrained(tmp_path / "whole")
        encoder = TFViTMAEModel.from_pretrained(tmp_path / "vit")
        assert max_diff(_outputs(encoder, x, noise), _outputs(reference, x, noise)) < 1e-6
        return
    expected, current = _outputs(model, x, noise), model
    for step in ("saved", "re-saved"):  # the second from the loaded model
        current.save_pretrained(tmp_path / step, **SAVE_LAYOUTS[layout])
        current = cls.from_pretrained(tmp_path / step)
        assert max_diff(_outputs(current, x, noise), expected) < 1e-6, step
