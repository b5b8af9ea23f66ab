"""The demo's label-efficiency table with more draws, written to results/.

    tfvitmae demo                                              # pretrains tfvitmae-demo/
    python benchmarks/label_efficiency.py --pretrained tfvitmae-demo --draws 10

`tfvitmae demo` prints the same table (`training/label_efficiency.py`, with
the demo's recipes) from 3 draws of each small labelled set, to fit its time
budget; this script takes a pretrained demo MAE and as many draws as you
like, and writes `label-efficiency.json` and `.md` to `--output`.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True, help="tfvitmae demo's output folder")
    parser.add_argument("--sizes", nargs="+", default=["1", "5", "10", "all"])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's")
    parser.add_argument("--seed", type=int, default=0, help="the demo's split and seed")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import keras

    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.cli.demo import (
        FEW_LABELS,
        LABEL_EFFICIENCY,
        load_dataset,
    )
    from tfvitmae.training.label_efficiency import METHODS, format_table, label_efficiency

    keras.utils.set_random_seed(args.seed)  # weight initialisation follows the global seed
    mae = TFViTMAEForPreTraining.from_pretrained(args.pretrained)
    train_x, train_y, test_x, test_y, _ = load_dataset(seed=args.seed)
    raw_train, _, raw_test, _, _ = load_dataset(image_size=8, seed=args.seed)
    steps = args.steps or LABEL_EFFICIENCY["steps"]
    rows, _ = label_efficiency(
        mae,
        TFViTMAEForPreTraining(mae.config, seed=args.seed + 1),
        pixel_values=tuple(mae.image_processor(list(x))["pixel_values"] for x in (train_x, test_x)),
        labels=(train_y, test_y),
        raw_pixels=(raw_train / 255.0, raw_test / 255.0),
        finetune=FEW_LABELS,
        scratch=FEW_LABELS,
        labels_per_class=[None if size == "all" else int(size) for size in args.sizes],
        draws=args.draws,
        steps=steps,
        batch_size=LABEL_EFFICIENCY["batch_size"],
        seed=args.seed,
        on_row=lambda row: print(format_table([row]).splitlines()[1], flush=True),
    )
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report = dict(pretrained=str(args.pretrained), steps=steps, rows=rows)
    (output / "label-efficiency.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Label efficiency on the 360 held-out digits (accuracy %, mean ± std over draws)",
        "",
        f"`python benchmarks/label_efficiency.py --pretrained {args.pretrained} "
        f"--draws {args.draws}` ({steps} steps a network)",
        "",
        "| labels per class | draws | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for row in rows:
        cells = [f"{100 * np.mean(row[m]):.1f} ± {100 * np.std(row[m]):.1f}" for m in METHODS]
        lines.append(f"| {row['labels_per_class']} | {row['draws']} | " + " | ".join(cells) + " |")
    (output / "label-efficiency.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {output / 'label-efficiency.md'}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
