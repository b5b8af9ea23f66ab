import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel
from tfvitmae.checkpoints.formats import CheckpointError
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.training import train_classifier

from ..harness import run_model_test
from ..helpers import labelled, max_diff, pixels, timm_style_vit, tiny_config

# The classifier sees every patch, and its config names its classes (as in
# transformers): its config is the given one when that has mask_ratio 0 and the classes.
CONFIG = tiny_config(mask_ratio=0.0)
LABELS = {0: "a", 1: "b", 2: "c", 3: "d"}
LABELS_3 = {0: "a", 1: "b", 2: "c"}
HEADS = {
    "cls": dict(pooling="cls"),
    "mean": dict(pooling="mean", drop_path_rate=0.1, id2label=LABELS),
    "probe": dict(pooling="cls", linear_probe=True, data_format="channels_last", seed=1),
    "mean-probe": dict(pooling="mean", linear_probe=True, attn_implementation="eager"),
}


@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_model_harness(head):
    x = pixels(CONFIG, channels_last=head.get("data_format") == "channels_last")
    config = CONFIG.copy(id2label=head.get("id2label") or {i: f"LABEL_{i}" for i in range(4)})
    model, loaded = run_model_test(
        TFViTMAEForImageClassification,
        dict(config=config, num_labels=4, **head),
        x,
        expected_output_shape=(2, 4),
    )
    assert loaded.pooling == model.pooling and loaded.linear_probe == model.linear_probe
    assert loaded.id2label == model.id2label and loaded.num_labels == 4
    assert loaded.vit.trainable == (not model.linear_probe)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_heads_and_shapes(pooling):
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=7, pooling=pooling)
    logits = model(pixels(config, batch=3))
    assert logits.shape == (3, 7) and logits.dtype == tf.float32
    assert model.config.mask_ratio == 0.0  # the classifier sees every patch
    assert (model.fc_norm is not None) == (pooling == "mean")
    features = model.features(pixels(config, batch=3))
    assert features.shape == (3, config.hidden_size)


def test_cls_features_are_the_unmasked_encoders_cls_token():
    config = tiny_config()
    pretrained = TFViTMAEForPreTraining(config)
    classifier = TFViTMAEForImageClassification.from_encoder(pretrained, num_labels=2)
    encoder = TFViTMAEModel(config.copy(mask_ratio=0.0))
    encoder.set_weights([w.numpy() for w in pretrained.vit.weights])
    x = pixels(config)
    expected = encoder(x).last_hidden_state[:, 0]
    assert max_diff(classifier.features(x), expected) < 1e-6


def test_mean_pooling_follows_mae_fine_tuning():
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=2, pooling="mean")
    x = pixels(config)
    out = model.vit(np.transpose(x, (0, 2, 3, 1)), output_hidden_states=True)
    # block output before the final norm
    pooled = np.mean(out.hidden_states[-1].numpy()[:, 1:], axis=1)
    assert max_diff(model.features(x), model.fc_norm(pooled)) < 1e-6


def test_mean_pooling_trains_without_an_unused_norm():
    """The encoder's final norm is outside the mean-pooled path: not trained,
    and no "Gradients do not exist" warning at every step."""
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=2, pooling="mean")
    names = {w.path.split("/", 1)[1] for w in model.trainable_weights}
    assert "vit/layernorm/gamma" not in names and "fc_norm/gamma" in names
    assert "vit/layer_0/layernorm_before/gamma" in names
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Gradients do not exist")
        model.fit(pixels(config), np.array([0, 1]), epochs=1, verbose=0)
    cls = TFViTMAEForImageClassification(config, num_labels=2, pooling="cls")
    assert "vit/layernorm/gamma" in {w.path.split("/", 1)[1] for w in cls.trainable_weights}


def test_linear_probe_head_and_frozen_encoder():
    model = TFViTMAEForImageClassification(tiny_config(), num_labels=3, linear_probe=True)
    trainable = {w.path.split("/", 1)[1] for w in model.trainable_weights}
    assert trainable == {"classifier/kernel", "classifier/bias"}
    assert model.probe_norm is not None and not model.probe_norm.center
    assert not model.probe_norm.scale and model.probe_norm.epsilon == 1e-6


def test_drop_path_is_training_only():
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=2, drop_path_rate=0.5, seed=0)
    assert [b.drop_path.rate for b in model.vit.blocks] == [0.0, 0.5]
    x = pixels(config)
    assert max_diff(model(x), model(x)) == 0
    assert max_diff(model(x), model(x, training=True)) > 0


def test_save_pretrained_keeps_the_head(tmp_path):
    config = tiny_config()
    model = TFViTMAEForImageClassification(
        config, num_labels=4, pooling="mean", linear_probe=True, id2label=LABELS
    )
    x = pixels(config)
    model.save_pretrained(tmp_path / "own")
    loaded = TFViTMAEForImageClassification.from_pretrained(tmp_path / "own")
    assert (loaded.pooling, loaded.linear_probe, loaded.num_labels) == ("mean", True, 4)
    assert loaded.id2label == LABELS
    assert max_diff(loaded(x), model(x)) == 0


# A loaded probe's config says linear_probe; a PyTorch layout folds its
# BatchNorm into the head, so what it writes loads as a plain classifier.
@pytest.mark.parametrize(
    "pooling, layout", [("cls", True), ("cls", "vit"), ("mean", True)], ids=str
)
def test_a_loaded_probe_resaved_in_a_pytorch_layout_loads_again(tmp_path, pooling, layout):
    config = tiny_config(layer_norm_eps=1e-6)
    probe = TFViTMAEForImageClassification(
        config, num_labels=3, pooling=pooling, linear_probe=True, id2label=LABELS_3
    )
    rng = np.random.default_rng(0)
    for variable in probe.weights:  # BatchNorm statistics that change the logits
        values = rng.normal(0, 0.2, variable.shape)
        variable.assign(np.abs(values) + 0.5 if "variance" in variable.path else values)
    probe.save_pretrained(tmp_path / "keras")
    loaded = TFViTMAEForImageClassification.from_pretrained(tmp_path / "keras")
    loaded.save_pretrained(tmp_path / "torch", pytorch=layout)
    back = TFViTMAEForImageClassification.from_pretrained(tmp_path / "torch")
    assert (back.pooling, back.linear_probe, back.id2label) == (pooling, False, LABELS_3)
    x = pixels(config)
    assert max_diff(back(x), probe(x)) < 1e-5
    if layout == "vit":
        import torch
        import transformers

        vit = transformers.ViTForImageClassification.from_pretrained(tmp_path / "torch").eval()
        with torch.no_grad():
            assert max_diff(vit(torch.from_numpy(x)).logits.numpy(), probe(x)) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("linear_probe", [False, True], ids=["finetuned", "probe"])
def test_mean_pooled_classifiers_go_to_pytorch_in_timms_layout(tmp_path, linear_probe):
    import torch
    from safetensors.torch import load_file

    config = tiny_config(layer_norm_eps=1e-6)
    model = TFViTMAEForImageClassification(
        config, num_labels=3, pooling="mean", linear_probe=linear_probe, id2label=LABELS_3
    )
    rng = np.random.default_rng(0)
    for variable in model.weights:  # every weight non-trivial, BatchNorm statistics too
        values = rng.normal(0, 0.2, variable.shape)
        variable.assign(np.abs(values) + 0.5 if "variance" in variable.path else values)
    model.save_pretrained(tmp_path, pytorch=True)
    reference = timm_style_vit(config, num_classes=3)
    reference.load_state_dict(load_file(tmp_path / "model.safetensors"))  # strict: same names
    x = pixels(config, batch=3)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    assert max_diff(model(x), expected) < 1e-4  # the probe's BatchNorm folded into the head
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["TFViTMAEForImageClassification"]
    assert (saved["global_pool"], saved["num_classes"]) == ("avg", 3)
    assert saved["model_args"]["embed_dim"] == 32 and saved["model_args"]["depth"] == 2
    assert saved["pretrained_cfg"]["label_names"] == ["a", "b", "c"]
    assert saved["pretrained_cfg"]["mean"] == list(model.image_processor.image_mean)
    back = TFViTMAEForImageClassification.from_pretrained(tmp_path)
    assert (back.pooling, back.linear_probe, back.id2label) == ("mean", False, LABELS_3)
    assert max_diff(back(x), expected) < 1e-4


@pytest.mark.slow
def test_transformers_vit_for_image_classification_round_trip(tmp_path):
    import torch
    import transformers

    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=3, linear_probe=True)
    x, y = labelled(config, n=12)
    train_classifier(  # non-trivial BatchNorm statistics
        model,
        tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
        epochs=2,
        batch_size=4,
        base_lr=0.5,
        warmup_epochs=1,
        verbose=0,
    )
    assert np.abs(model.probe_norm.moving_mean.numpy()).max() > 0
    model.save_pretrained(tmp_path, pytorch=True)
    torch_model, info = transformers.ViTForImageClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not any(info.values()), info
    with torch.no_grad():
        expected = torch_model.eval()(torch.from_numpy(x)).logits.numpy()
    # the probe's BatchNorm is folded into the classifier
    assert max_diff(model(x), expected) < 1e-4
    back = TFViTMAEForImageClassification.from_pretrained(tmp_path)
    assert back.num_labels == 3 and max_diff(back(x), expected) < 1e-4


def test_head_missing_from_a_pretraining_checkpoint_warns(tmp_path):
    pretrained = TFViTMAEForPreTraining(tiny_config())
    pretrained.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="has no head; it keeps its initialisation"):
        model = TFViTMAEForImageClassification.from_pretrained(tmp_path, num_labels=5)
    assert model.num_labels == 5
    np.testing.assert_array_equal(
        model.vit.embeddings.cls_token.numpy(), pretrained.vit.embeddings.cls_token.numpy()
    )


def test_from_encoder_copies_the_encoder_from_a_path(tmp_path):
    pretrained = TFViTMAEForPreTraining(tiny_config())
    pretrained.save_pretrained(tmp_path)
    model = TFViTMAEForImageClassification.from_encoder(str(tmp_path), num_labels=2)
    for a, b in zip(model.vit.weights, pretrained.vit.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bad_arguments():
    with pytest.raises(ValueError, match="pooling must be one of .* received 'max'"):
        TFViTMAEForImageClassification(tiny_config(), num_labels=2, pooling="max")
    with pytest.raises(ValueError, match="num_labels must be a positive integer, received 0"):
        TFViTMAEForImageClassification(tiny_config(), num_labels=0)
    with pytest.raises(
        ValueError, match="encoder must be a ViTMAE model or a checkpoint path, received int"
    ):
        TFViTMAEForImageClassification.from_encoder(3, num_labels=2)


def test_predict_images_gives_probabilities_and_top_labels():
    from sklearn.datasets import load_sample_images

    model = TFViTMAEForImageClassification(CONFIG, num_labels=4, id2label=LABELS)
    photos = list(load_sample_images().images)
    out = model.predict_images(photos, top_k=2)
    assert out["probabilities"].shape == (2, 4)
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
    expected = np.argsort(-out["probabilities"], axis=-1)[:, :2]
    np.testing.assert_array_equal(out["top_k_indices"], expected)
    assert out["top_k_labels"].tolist() == [[LABELS[i] for i in row] for row in expected]
    np.testing.assert_allclose(
        out["top_k_probabilities"], np.take_along_axis(out["probabilities"], expected, -1)
    )
    logits = model(model.image_processor(photos)["pixel_values"])
    assert max_diff(out["probabilities"], tf.nn.softmax(logits)) < 1e-6


def test_the_config_names_the_classes_as_in_transformers(tmp_path):
    """`model.config.id2label[prediction]`, transformers' idiom, names the class."""
    named = TFViTMAEForImageClassification(tiny_config(), id2label=LABELS_3)
    assert named.num_labels == 3 and named.config.id2label == LABELS_3
    assert named.config.label2id == {"a": 0, "b": 1, "c": 2}
    # Without num_labels or id2label, the config's classes (2 by default, as transformers).
    from_config = TFViTMAEForImageClassification(tiny_config(id2label={0: "x", 1: "y", 2: "z"}))
    assert from_config.num_labels == 3 and from_config.label_names() == ["x", "y", "z"]
    assert TFViTMAEForImageClassification(tiny_config()).num_labels == 2
    numbered = TFViTMAEForImageClassification(tiny_config(), num_labels=4)
    assert numbered.config.id2label[3] == "LABEL_3" and numbered.label_names()[3] == "3"
    named.save_pretrained(tmp_path)
    loaded = TFViTMAEForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.id2label == LABELS_3 and loaded.num_labels == 3
    with pytest.raises(ValueError, match=r"id2label must name the classes 0 to 3 .* \[0, 1, 2\]"):
        TFViTMAEForImageClassification(tiny_config(), num_labels=4, id2label=LABELS_3)


def test_a_classifier_loaded_with_another_num_labels_gets_a_new_head_only_when_not_strict(
    tmp_path,
):
    """`from_pretrained(ckpt, num_labels=5)` over a 3-class classifier: the
    config takes 5 classes (with a warning, as transformers); the strict load
    then names the head's shape mismatch and the way out, and `strict=False`
    (transformers' `ignore_mismatched_sizes`) loads all but the head, warning."""
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, id2label=LABELS_3)
    model(pixels(config))
    model.save_pretrained(tmp_path)
    relabel = r"num_labels=5 replaces the 3 classes"
    with pytest.warns(UserWarning, match=relabel):
        with pytest.raises(
            CheckpointError,
            match=r"(?s)classifier/kernel expected \(32, 5\), found \(32, 3\).*strict=False",
        ):
            TFViTMAEForImageClassification.from_pretrained(tmp_path, num_labels=5)
    partial = r"(?s)Partial load.*classifier/bias expected \(5,\), found \(3,\)"
    with pytest.warns(UserWarning, match=relabel), pytest.warns(UserWarning, match=partial):
        five = TFViTMAEForImageClassification.from_pretrained(tmp_path, num_labels=5, strict=False)
    assert five.num_labels == 5 and five.config.id2label[4] == "LABEL_4"
    assert five(pixels(config)).shape == (2, 5)
    mine, theirs = ({w.path: w.numpy() for w in m.vit.weights} for m in (model, five))
    assert mine.keys() == theirs.keys()
    assert all(np.array_equal(mine[k], theirs[k]) for k in mine)
