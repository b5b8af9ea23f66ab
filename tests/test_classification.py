import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel
from tfvitmae.classification import TFViTMAEForImageClassification
from tfvitmae.training import train_classifier

from .helpers import max_diff, pixels, tiny_config


def labelled(config, n=24, num_labels=3, seed=0):
    """Images whose class is visible (a per-class brightness offset)."""
    labels = np.arange(n) % num_labels
    x = pixels(config, batch=n, seed=seed) * 0.3 + (labels[:, None, None, None] - 1.0)
    return x.astype("float32"), labels


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
    pooled = np.mean(out.hidden_states[-1].numpy()[:, 1:], axis=1)  # block output before the final norm
    assert max_diff(model.features(x), model.fc_norm(pooled)) < 1e-6


def test_linear_probe_freezes_the_encoder_and_trains_the_head():
    config = tiny_config()
    pretrained = TFViTMAEForPreTraining(config)
    model = TFViTMAEForImageClassification.from_encoder(pretrained, num_labels=3, linear_probe=True)
    assert {w.path.split("/", 1)[1] for w in model.trainable_weights} == {"classifier/kernel", "classifier/bias"}
    assert model.probe_norm is not None and not model.probe_norm.center and not model.probe_norm.scale
    encoder_before = [w.numpy().copy() for w in model.vit.weights]
    x, y = labelled(config)
    history = train_classifier(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=8,
                               batch_size=8, base_lr=2.0, warmup_epochs=1, verbose=0)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(encoder_before, model.vit.weights))
    assert history.history["accuracy"][-1] > 0.6
    moving_mean = model.probe_norm.moving_mean.numpy()
    assert np.abs(moving_mean).max() > 0  # BatchNorm statistics were learned


def test_fine_tuning_updates_encoder_with_layer_decay_and_smoothing():
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=3, pooling="mean", drop_path_rate=0.1)
    assert [b.drop_path.rate for b in model.vit.blocks] == [0.0, 0.1]
    before = model.vit.blocks[0].attention.qkv.kernel.numpy().copy()
    x, y = labelled(config)
    history = train_classifier(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=3,
                               batch_size=8, base_lr=1e-2, warmup_epochs=1, label_smoothing=0.1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(before, model.vit.blocks[0].attention.qkv.kernel.numpy())
    assert type(model.optimizer).__name__ == "LayerDecayAdamW"


def test_drop_path_is_training_only():
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=2, drop_path_rate=0.5, seed=0)
    x = pixels(config)
    assert max_diff(model(x), model(x)) == 0
    assert max_diff(model(x), model(x, training=True)) > 0


def test_save_load_and_keras_serialization(tmp_path):
    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=4, pooling="mean", linear_probe=True,
                                           id2label={0: "a", 1: "b", 2: "c", 3: "d"})
    x = pixels(config)
    model.save_pretrained(tmp_path / "own")
    loaded = TFViTMAEForImageClassification.from_pretrained(tmp_path / "own")
    assert (loaded.pooling, loaded.linear_probe, loaded.num_labels) == ("mean", True, 4)
    assert loaded.id2label == {0: "a", 1: "b", 2: "c", 3: "d"}
    assert max_diff(loaded(x), model(x)) == 0
    model.save(tmp_path / "clf.keras")
    assert max_diff(keras.saving.load_model(tmp_path / "clf.keras")(x), model(x)) == 0
    with pytest.raises(ValueError, match="mean-pooled classifier cannot be written"):
        model.save_pretrained(tmp_path / "pt", pytorch=True)


def test_transformers_vit_for_image_classification_round_trip(tmp_path):
    import torch
    import transformers

    config = tiny_config()
    model = TFViTMAEForImageClassification(config, num_labels=3, linear_probe=True)
    x, y = labelled(config, n=12)
    train_classifier(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=2, batch_size=4,
                     base_lr=0.5, warmup_epochs=1, verbose=0)  # non-trivial BatchNorm statistics
    model.save_pretrained(tmp_path, pytorch=True)
    torch_model, info = transformers.ViTForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        expected = torch_model.eval()(torch.from_numpy(x)).logits.numpy()
    assert max_diff(model(x), expected) < 1e-4  # the probe's BatchNorm is folded into the classifier
    back = TFViTMAEForImageClassification.from_pretrained(tmp_path)
    assert back.num_labels == 3 and max_diff(back(x), expected) < 1e-4


def test_head_missing_from_a_pretraining_checkpoint_warns(tmp_path):
    TFViTMAEForPreTraining(tiny_config()).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="has no head; it keeps its initialisation"):
        model = TFViTMAEForImageClassification.from_pretrained(tmp_path, num_labels=5)
    assert model.num_labels == 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="pooling must be one of .* received 'max'"):
        TFViTMAEForImageClassification(tiny_config(), num_labels=2, pooling="max")
    with pytest.raises(ValueError, match="num_labels must be a positive integer, received 0"):
        TFViTMAEForImageClassification(tiny_config(), num_labels=0)
    with pytest.raises(ValueError, match="encoder must be a ViTMAE model or a checkpoint path, received int"):
        TFViTMAEForImageClassification.from_encoder(3, num_labels=2)
