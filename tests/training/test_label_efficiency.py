"""`training/label_efficiency.py`: subsets, the pixel baselines and the table's rows."""

import numpy as np
import pytest

from tfvitmae import TFViTMAEForPreTraining
from tfvitmae.training.label_efficiency import (
    METHODS,
    format_table,
    label_efficiency,
    labelled_subset,
    shallow_classifier_accuracy,
)

from ..helpers import labelled, tiny_config

RECIPE = dict(base_lr=1e-2, layer_decay=0.75, drop_path_rate=0.1, label_smoothing=0.1)


def test_labelled_subset_takes_each_class_equally_and_at_random():
    labels = np.repeat(np.arange(4), [5, 6, 7, 8])
    idx = labelled_subset(labels, 3, seed=0)
    assert len(set(idx.tolist())) == 12
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3, 3]
    np.testing.assert_array_equal(idx, labelled_subset(labels, 3, seed=0))
    assert not np.array_equal(idx, labelled_subset(labels, 3, seed=1))
    np.testing.assert_array_equal(labelled_subset(labels, None, seed=0), np.arange(26))
    with pytest.raises(ValueError, match="6 labelled examples per class .* class 0 has only 5"):
        labelled_subset(labels, 6, seed=0)


def test_pixel_classifiers_match_scikit_learn_run_directly():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(40, 3, 4)), rng.normal(size=(10, 3, 4))
    train_y, test_y = rng.integers(0, 3, 40), rng.integers(0, 3, 10)
    flat_train, flat_test = train.reshape(40, -1), test.reshape(10, -1)
    reference = LogisticRegression(max_iter=5000, random_state=0).fit(flat_train, train_y)
    accuracy = shallow_classifier_accuracy("logistic_regression", train, train_y, test, test_y)
    assert accuracy == pytest.approx(reference.score(flat_test, test_y))
    # 1-NN by brute force.
    distances = ((flat_test[:, None] - flat_train[None]) ** 2).sum(-1)
    expected = np.mean(train_y[distances.argmin(1)] == test_y)
    assert shallow_classifier_accuracy("1-nn", train, train_y, test, test_y) == expected
    # Standardising with the training statistics: a feature scaled by 1000 stops dominating.
    scaled = train * np.array([1000.0, 1, 1])[None, :, None]
    scaled_test = test * np.array([1000.0, 1, 1])[None, :, None]
    standardised = shallow_classifier_accuracy(
        "1-nn", scaled, train_y, scaled_test, test_y, standardise=True
    )
    mean, std = flat_train.mean(0), flat_train.std(0)
    z_train, z_test = (flat_train - mean) / std, (flat_test - mean) / std
    distances = ((z_test[:, None] - z_train[None]) ** 2).sum(-1)
    assert standardised == np.mean(train_y[distances.argmin(1)] == test_y)
    with pytest.raises(ValueError, match="kind must be 'logistic_regression' or '1-nn'"):
        shallow_classifier_accuracy("svm", train, train_y, test, test_y)


@pytest.mark.slow
def test_label_efficiency_scores_every_method_and_resets_between_draws():
    config = tiny_config(num_channels=1)
    x, y = labelled(config, n=60, num_labels=3)
    test_x, test_y = labelled(config, n=30, num_labels=3, seed=1)
    processor = dict(size=32, image_mean=[0.5], image_std=[0.25])
    pretrained = TFViTMAEForPreTraining(config, seed=0, image_processor=processor)
    untouched = [w.copy() for w in pretrained.get_weights()]
    seen = []
    arguments = dict(
        pixel_values=(x, test_x),
        labels=(y, test_y),
        raw_pixels=(x[:, 0, ::4, ::4], test_x[:, 0, ::4, ::4]),
        finetune=RECIPE,
        scratch=RECIPE,  # one recipe: one network, compiled once, from two starts
        labels_per_class=(2, 2, None),
        draws=2,
        steps=5,
        batch_size=8,
    )
    rows, finetuned = label_efficiency(
        pretrained, TFViTMAEForPreTraining(config, seed=1), on_row=seen.append, **arguments
    )
    assert seen == rows
    assert [(row["labels_per_class"], row["draws"]) for row in rows] == [(2, 2), (2, 2), ("all", 1)]
    for row in rows:
        assert set(METHODS) <= set(row)
        assert all(len(row[m]) == row["draws"] and 0 <= min(row[m]) <= 1 for m in METHODS)
    # Each draw trains from the same starting point: the repeated size scores the same
    # (the networks within one of the 30 test images: XLA's CPU kernels are not
    # bit-reproducible, two identical runs end 5e-4 apart).
    for method in METHODS:
        exact = method not in ("fine-tuned", "scratch")
        gap = np.abs(np.subtract(rows[0][method], rows[1][method])).max()
        assert gap == 0 if exact else gap <= 1 / 30 + 1e-9, (method, rows[0], rows[1])
    # The pretrained model is only read; the classifier returned is the last one trained.
    for before, after in zip(untouched, pretrained.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert finetuned.image_processor.to_dict() == pretrained.image_processor.to_dict()
    logits = np.asarray(finetuned(test_x))
    assert np.mean(logits.argmax(-1) == test_y) == rows[-1]["fine-tuned"][0]
    # The last network depends on its subset and seed, not on the draws before it (its
    # starting weights and optimizer state are reset) nor on sharing its compiled step.
    once = dict(arguments, labels_per_class=(None,), draws=1, scratch=dict(RECIPE, layer_decay=1))
    _, alone = label_efficiency(pretrained, TFViTMAEForPreTraining(config, seed=1), **once)
    for after_others, by_itself in zip(finetuned.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(after_others, by_itself, atol=2e-3)
    table = format_table(rows)
    header = "fine-tuned probe scratch random probe pixels LR pixels 1-NN"
    assert table.splitlines()[0].split()[1:] == header.split()
    assert table.splitlines()[-1].split()[0] == "all" and len(table.splitlines()) == 4


def test_label_efficiency_refuses_bad_arguments():
    config = tiny_config(num_channels=1)
    x, y = labelled(config, n=6, num_labels=3)
    model = TFViTMAEForPreTraining(config)
    base = dict(
        pixel_values=(x, x),
        labels=(y, y),
        raw_pixels=(x, x),
        finetune=RECIPE,
        scratch=RECIPE,
    )
    with pytest.raises(ValueError, match=r"finetune must be a recipe .*: unknown \['lr'\]$"):
        label_efficiency(model, model, **dict(base, finetune=dict(RECIPE, lr=1)))
    with pytest.raises(
        ValueError,
        match=r"scratch must be .*: missing \['base_lr', 'drop_path_rate', 'label_smoothing'\]$",
    ):
        label_efficiency(model, model, **dict(base, scratch={"layer_decay": 1.0}))
    with pytest.raises(ValueError, match="draws must be a positive int, received 0"):
        label_efficiency(model, model, draws=0, **base)
    with pytest.raises(ValueError, match="steps must be a positive int, received 2.5"):
        label_efficiency(model, model, steps=2.5, **base)
    with pytest.raises(ValueError, match=r"labels_per_class must hold .*received \[1, 0\]"):
        label_efficiency(model, model, labels_per_class=[1, 0], **base)
    with pytest.raises(ValueError, match="raw_pixels must have one row per label: 5 and 6 rows"):
        label_efficiency(model, model, **dict(base, raw_pixels=(x[:5], x)))
