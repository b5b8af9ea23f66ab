"""Label efficiency on the demo's digits: MAE against pixels and scratch when labels are scarce.

    tfvitmae demo                                         # pretrains tfvitmae-demo/
    python benchmarks/label_efficiency.py --pretrained tfvitmae-demo
    python benchmarks/label_efficiency.py --pretrain-epochs 150   # pretrain here instead

For 1, 5 and 10 labelled digits per class (several random draws each) and for
all 1,437 labels, scores on the 360 held-out digits:
- the MAE-pretrained encoder fine-tuned (the demo's `FINETUNE` recipe), and
  probed: a logistic regression on its frozen, standardised features (CLS and
  mean-pooled), the closed-form counterpart of MAE's BatchNorm + linear probe;
- the same architecture trained from random initialisation (`SCRATCH`);
- a logistic regression and 1-nearest-neighbour on the raw 8x8 pixels.

Each classifier trains for about `--steps` optimizer steps whatever the
labelled set's size. Writes `label-efficiency.json` and `.md` to `--output`.
This is the measuring tool of issue 23; the demo does not run it.
"""

import argparse
import json
import math
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("MAE fine-tuned", "MAE probe", "scratch", "pixels LR", "pixels 1-NN")


def subset(labels, per_class, draw):
    """Indices of `per_class` examples of each class (all when None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(draw)
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", help="a pretrained demo MAE (tfvitmae demo's output)")
    parser.add_argument("--pretrain-epochs", type=int, default=150)
    parser.add_argument("--sizes", nargs="+", default=["1", "5", "10", "all"])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per classifier")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.cli.demo import (
        FINETUNE,
        SCRATCH,
        fit_classifier,
        load_dataset,
        run_demo,
    )
    from tfvitmae.data import make_dataset

    pretrained_dir = args.pretrained
    if pretrained_dir is None:
        pretrained_dir = os.path.join(args.output, "label-efficiency-mae")
        run_demo(
            output_dir=pretrained_dir,
            epochs=args.pretrain_epochs,
            finetune_epochs=1,
            probe_epochs=1,
        )
    mae = TFViTMAEForPreTraining.from_pretrained(pretrained_dir)
    processor = mae.image_processor
    train_x, train_y, test_x, test_y, _ = load_dataset()
    train_8, _, test_8, _, _ = load_dataset(image_size=8)
    pixels_train = train_8.reshape(len(train_8), -1) / 255.0
    pixels_test = test_8.reshape(len(test_8), -1) / 255.0

    def features(images):
        pixel_values = processor(list(images))["pixel_values"]
        out = mae.unmasked_features(pixel_values)
        parts = (out["cls_features"], out["mean_features"])
        return np.concatenate([np.asarray(part) for part in parts], axis=1)

    features_train, features_test = features(train_x), features(test_x)

    def batches(images, labels, batch_size, shuffle):
        return make_dataset(
            images,
            batch_size=batch_size,
            processor=processor,
            labels=labels,
            with_labels=True,
            num_channels=1,
            augment=False,
            shuffle=shuffle,
        )

    def network(idx, draw, pretrained):
        batch_size = min(128, len(idx))
        epochs = max(1, math.ceil(args.steps / math.ceil(len(idx) / batch_size)))
        encoder = mae if pretrained else TFViTMAEForPreTraining(mae.config, seed=draw + 1)
        _, history = fit_classifier(
            encoder,
            epochs,
            FINETUNE if pretrained else SCRATCH,
            train=batches(train_x[idx], train_y[idx], batch_size, shuffle=True),
            test=batches(test_x, test_y, 128, shuffle=False),
            batch_size=batch_size,
            seed=draw,
        )
        return history.history["val_accuracy"][-1]

    def linear(train, test, idx, standardise):
        if standardise:
            scaler = StandardScaler().fit(train[idx])
            train, test = scaler.transform(train), scaler.transform(test)
        model = LogisticRegression(max_iter=5000).fit(train[idx], train_y[idx])
        return model.score(test, test_y)

    rows = []
    for size in args.sizes:
        per_class = None if size == "all" else int(size)
        scores = {m: [] for m in METHODS}
        for draw in range(args.draws if per_class is not None else 1):
            idx = subset(train_y, per_class, draw)
            scores["MAE fine-tuned"].append(network(idx, draw, pretrained=True))
            scores["MAE probe"].append(linear(features_train, features_test, idx, True))
            scores["scratch"].append(network(idx, draw, pretrained=False))
            scores["pixels LR"].append(linear(pixels_train, pixels_test, idx, False))
            knn = KNeighborsClassifier(1).fit(pixels_train[idx], train_y[idx])
            scores["pixels 1-NN"].append(knn.score(pixels_test, test_y))
        row = {
            "labels per class": size,
            **{m: [float(np.mean(v)), float(np.std(v)), len(v)] for m, v in scores.items()},
        }
        rows.append(row)
        print(
            f"{size:>4} labels/class: "
            + ", ".join(f"{m} {100 * row[m][0]:.1f}±{100 * row[m][1]:.1f}" for m in METHODS),
            flush=True,
        )

    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report = dict(pretrained=str(pretrained_dir), steps=args.steps, draws=args.draws, rows=rows)
    (output / "label-efficiency.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Label efficiency on the 360 held-out digits (accuracy %, mean ± std over draws)",
        "",
        f"`python benchmarks/label_efficiency.py` ({args.draws} draws, "
        f"{args.steps} steps a network)",
        "",
        "| labels per class | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for row in rows:
        cells = [f"{100 * row[m][0]:.1f} ± {100 * row[m][1]:.1f}" for m in METHODS]
        lines.append(f"| {row['labels per class']} | " + " | ".join(cells) + " |")
    (output / "label-efficiency.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {output / 'label-efficiency.md'}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
