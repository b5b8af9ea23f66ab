"""Label efficiency: what a pretrained encoder is worth when labels are scarce.

MAE pretrains without labels. The test of the features is how well a few
labelled images then suffice. `label_efficiency` trains on 1, 5, 10 and all
labelled images per class (several random draws of each small subset) and
scores, on held-out images:

- the pretrained encoder fine-tuned, and linear-probed: a logistic regression
  on its frozen features, standardised (MAE's probe puts a BatchNorm without
  affine parameters before its linear layer for the same reason). The
  features are every token of the final layer side by side, not MAE's
  pooled token: on small images pooling throws away where each stroke is
  (after the demo's pretraining, 94.5% against 88.7% for the CLS and mean
  tokens with 10 labels per class);
- the same architecture from random initialisation, with the `scratch` recipe, and
  probed as it is, untrained ("random probe": how much of the probe's score
  the architecture alone gives, whatever the pretraining);
- a logistic regression and 1-nearest-neighbour on the raw pixels.

Every network trains for the same number of optimizer steps on batches drawn
from its labelled set, whatever the set's size. Each recipe's network is built
and compiled (with XLA) once, then reset to its starting weights for every
subset, so its step is compiled once: the same recipe for both networks means
one compile. Needs scikit-learn (the `demo` extra).
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..models.classification import TFViTMAEForImageClassification
    from ..models.vit_mae import TFViTMAEPreTrainedModel

__all__ = [
    "METHODS",
    "format_table",
    "label_efficiency",
    "labelled_subset",
    "shallow_classifier_accuracy",
]

METHODS = ("fine-tuned", "probe", "scratch", "random probe", "pixels LR", "pixels 1-NN")
RECIPE_KEYS = ("base_lr", "layer_decay", "drop_path_rate", "label_smoothing")


def labelled_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of `per_class` random examples of each class (every index when None)."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"{per_class} labelled examples per class were asked for, but class {label} "
                f"has only {len(members)}"
            )
        picked.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def shallow_classifier_accuracy(
    kind: str,
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    standardise: bool = False,
    seed: int = 0,
) -> float:
    """Test accuracy of `kind` (`"logistic_regression"` or `"1-nn"`) on flattened arrays.

    `standardise` rescales each feature to zero mean and unit variance over
    `train` first (for learned features; raw pixels are used as they are).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    train = np.asarray(train, "float64").reshape(len(train), -1)
    test = np.asarray(test, "float64").reshape(len(test), -1)
    if standardise:
        scaler = StandardScaler().fit(train)
        train, test = scaler.transform(train), scaler.transform(test)
    if kind == "logistic_regression":
        classifier: Any = LogisticRegression(max_iter=5000, random_state=seed)
    elif kind == "1-nn":
        classifier = KNeighborsClassifier(n_neighbors=1)
    else:
        raise ValueError(f"kind must be 'logistic_regression' or '1-nn', received {kind!r}")
    classifier.fit(train, train_labels)
    return float(classifier.score(test, test_labels))


class _Retrainable:
    """One classifier, compiled once, trained afresh on each labelled subset
    from one of several starting points (encoders with the same config)."""

    def __init__(
        self, starts: dict, recipe: dict, num_labels: int, steps: int, batch_size: int, seed: int
    ):
        from ..models.classification import TFViTMAEForImageClassification
        from .recipes import compile_classifier

        def classifier(encoder):
            return TFViTMAEForImageClassification.from_encoder(
                encoder,
                num_labels=num_labels,
                pooling="mean",
                drop_path_rate=recipe["drop_path_rate"],
                seed=seed,
            )

        # Built from the last start (the pretrained encoder, when it is one): the
        # classifier keeps that encoder's image processor when saved.
        self.classifier = classifier(list(starts.values())[-1])
        self.starting_weights = {
            name: classifier(encoder).get_weights() for name, encoder in starts.items()
        }
        compile_classifier(
            self.classifier,
            batch_size,
            steps_per_epoch=steps,
            epochs=1,
            label_smoothing=recipe["label_smoothing"],
            base_lr=recipe["base_lr"],
            warmup_epochs=0.1,
            layer_decay=recipe["layer_decay"],
            # XLA: its one compile costs less than it saves over a table's fits.
            jit_compile=True,
        )
        # The random streams (stochastic depth) restart too, so that a draw's score
        # depends on its start, subset and seed only, not on the draws before it.
        weights = {id(variable) for variable in self.classifier.weights}
        self.seed_states = [
            (variable, np.array(variable))
            for variable in self.classifier.variables
            if id(variable) not in weights
        ]
        self.steps, self.batch_size = steps, batch_size
        self._logits: Any = None

    def accuracy(self, start: str, x, y, test_x, test_y, seed: int) -> float:
        """Train from `start`'s weights on `(x, y)`; the accuracy on `(test_x, test_y)`."""
        import tensorflow as tf

        model = self.classifier
        model.set_weights(self.starting_weights[start])
        for variable, state in self.seed_states:
            variable.assign(state)
        if model.optimizer.built:  # a fresh optimizer: step 0, no moments
            for variable in model.optimizer.variables:
                variable.assign(np.zeros(variable.shape, variable.dtype))
        data = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(self.batch_size, drop_remainder=True)
        )
        model.fit(data, epochs=1, steps_per_epoch=self.steps, verbose=0, shuffle=False)
        if self._logits is None:  # traced once: `predict` would retrace for each new model state
            self._logits = tf.function(lambda images: model(images, training=False))
        logits = self._logits(tf.constant(test_x))
        return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(test_y)))


def label_efficiency(
    pretrained: "TFViTMAEPreTrainedModel",
    random_init: "TFViTMAEPreTrainedModel",
    pixel_values: tuple[np.ndarray, np.ndarray],
    labels: tuple[np.ndarray, np.ndarray],
    raw_pixels: tuple[np.ndarray, np.ndarray],
    finetune: dict,
    scratch: dict,
    labels_per_class: Sequence[int | None] = (1, 5, 10, None),
    draws: int = 3,
    steps: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    on_row: Callable[[dict], None] | None = None,
) -> tuple[list[dict], "TFViTMAEForImageClassification"]:
    """Held-out accuracy of every method (`METHODS`) at each number of labels.

    Args:
        pretrained: The pretrained encoder (any ViTMAE model).
        random_init: The same architecture, randomly initialised.
        pixel_values: `(train, test)` normalised images in the models' layout.
        labels: `(train, test)` integer labels.
        raw_pixels: `(train, test)` arrays for the pixel baselines (flattened here).
        finetune, scratch: The recipes of the two networks: `base_lr`,
            `layer_decay`, `drop_path_rate`, `label_smoothing`.
        labels_per_class: Labelled images per class; None means all.
        draws: Random subsets per size (one when all labels are used).
        steps: Optimizer steps of every network, on batches of `batch_size`.
        seed: Picks the labelled subsets (draw `i` uses `seed + i`) and the
            order of their batches. The classifiers' new heads are initialised
            from Keras' global seed: call `keras.utils.set_random_seed` first
            for a table that is the same on every run.
        on_row: Called with each row as it is finished.

    Returns:
        `(rows, finetuned)`: a row per size, `{"labels_per_class": n or
        "all", "draws": k, method: [accuracy of each draw], ...}`, and the
        fine-tuned classifier of the last row's last draw.
    """
    for name, recipe in (("finetune", finetune), ("scratch", scratch)):
        missing = [key for key in RECIPE_KEYS if key not in recipe]
        unknown = sorted(set(recipe) - set(RECIPE_KEYS))
        if missing or unknown:
            problems = [
                f"{what} {keys}"
                for what, keys in (("missing", missing), ("unknown", unknown))
                if keys
            ]
            raise ValueError(
                f"{name} must be a recipe with the keys {list(RECIPE_KEYS)}, received "
                f"{sorted(recipe)}: {', '.join(problems)}"
            )
    for name, value in dict(draws=draws, steps=steps, batch_size=batch_size).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, received {value!r}")
    for per_class in labels_per_class:
        if per_class is not None and (
            isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1
        ):
            raise ValueError(
                "labels_per_class must hold positive ints or None (all), received "
                f"{list(labels_per_class)!r}"
            )
    train_x, test_x = (np.asarray(part, "float32") for part in pixel_values)
    train_y, test_y = (np.asarray(part, "int64") for part in labels)
    raw_train, raw_test = (np.asarray(part, "float32") for part in raw_pixels)
    for name, (train, test) in dict(
        pixel_values=(train_x, test_x), raw_pixels=(raw_train, raw_test)
    ).items():
        if len(train) != len(train_y) or len(test) != len(test_y):
            raise ValueError(
                f"{name} must have one row per label: {len(train)} and {len(test)} rows for "
                f"{len(train_y)} and {len(test_y)} labels"
            )
    num_labels = int(max(train_y.max(), test_y.max())) + 1
    features = {
        name: [_frozen_features(model, part) for part in (train_x, test_x)]
        for name, model in (("probe", pretrained), ("random probe", random_init))
    }
    # Scratch first: the fine-tuned classifier is the one left when a draw ends.
    starts = {"scratch": random_init, "fine-tuned": pretrained}
    recipes = {"scratch": scratch, "fine-tuned": finetune}
    arguments = (num_labels, steps, batch_size, seed)
    if finetune == scratch:  # one network, compiled once, from two starting points
        shared = _Retrainable(starts, finetune, *arguments)
        networks = {name: shared for name in starts}
    else:
        networks = {
            name: _Retrainable({name: starts[name]}, recipes[name], *arguments) for name in starts
        }
    rows = []
    for per_class in labels_per_class:
        scores: dict[str, list[float]] = {method: [] for method in METHODS}
        count = draws if per_class is not None else 1
        for draw in range(count):
            idx = labelled_subset(train_y, per_class, seed=seed + draw)
            for method, network in networks.items():
                scores[method].append(
                    network.accuracy(
                        method, train_x[idx], train_y[idx], test_x, test_y, seed=seed + draw
                    )
                )
            for method, (train_features, test_features) in features.items():
                scores[method].append(
                    shallow_classifier_accuracy(
                        "logistic_regression",
                        train_features[idx],
                        train_y[idx],
                        test_features,
                        test_y,
                        standardise=True,
                    )
                )
            for method, kind in (("pixels LR", "logistic_regression"), ("pixels 1-NN", "1-nn")):
                scores[method].append(
                    shallow_classifier_accuracy(
                        kind, raw_train[idx], train_y[idx], raw_test, test_y
                    )
                )
        row = {"labels_per_class": "all" if per_class is None else per_class, "draws": count}
        rows.append(dict(row, **scores))
        if on_row is not None:
            on_row(rows[-1])
    return rows, networks["fine-tuned"].classifier


def _frozen_features(model, pixel_values: np.ndarray) -> np.ndarray:
    """Every token of the unmasked image after the final LayerNorm, flattened:
    `(batch, (num_patches + 1) * hidden_size)`."""
    hidden = model.vit(model.check_pixel_values(pixel_values), unmasked=True).last_hidden_state
    return np.asarray(hidden, "float32").reshape(len(pixel_values), -1)


def format_table(rows: Sequence[dict], indent: str = "") -> str:
    """`rows` of `label_efficiency` as aligned text: mean ± spread (std) in %."""
    width = max(len(method) for method in METHODS) + 1
    lines = [indent + "labels/class" + "".join(f"{m:>{width}}" for m in METHODS)]
    for row in rows:
        cells = []
        for method in METHODS:
            values = 100 * np.asarray(row[method])
            cell = f"{values.mean():.1f}"
            cell += f" ±{values.std():.1f}" if len(values) > 1 else "      "
            cells.append(f"{cell:>{width}}")
        lines.append(indent + f"{row['labels_per_class']!s:>12}" + "".join(cells))
    return "\n".join(lines)
