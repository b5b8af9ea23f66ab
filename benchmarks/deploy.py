"""Every deployment target of one model: file size and parity with Keras.

    python benchmarks/deploy.py                      # ViT-B/16 at 224 (random weights)
    python benchmarks/deploy.py --config tiny --output /tmp/deploy

Exports a pretraining model and a CLS classifier (linear probe, its BatchNorm
with non-trivial statistics) of the same encoder to each target, runs each
file in its runtime (TensorFlow's SavedModel loader, onnxruntime, the LiteRT
interpreter, keras-hub, transformers' ViT) on the same inputs and reports the
largest difference from the Keras model, and the size on disk. Writes
`deploy-<config>.json` and `.md` to `--output` (default `benchmarks/results`).
Parity, not speed: nothing here is timed.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def size_of(path):
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import tensorflow as tf
    from run import make_config

    from tfvitmae import TFViTMAEForImageClassification, TFViTMAEForPreTraining

    config = make_config(args.config).copy(layer_norm_eps=1e-6)  # the MAE release's eps
    pretraining = TFViTMAEForPreTraining(config, seed=0)
    classifier = TFViTMAEForImageClassification.from_encoder(
        pretraining, num_labels=10, linear_probe=True
    )
    rng = np.random.default_rng(0)
    norm = classifier.probe_norm
    norm.moving_mean.assign(rng.normal(0, 0.1, norm.moving_mean.shape))
    norm.moving_variance.assign(rng.uniform(0.5, 2.0, norm.moving_variance.shape))
    (height, width), channels = config.image_hw, config.num_channels
    pixels = rng.normal(size=(args.batch, channels, height, width)).astype("float32")
    noise = rng.random((args.batch, config.num_patches), dtype=np.float32)
    features = {k: np.asarray(v) for k, v in pretraining.unmasked_features(pixels).items()}
    reconstruction = np.asarray(pretraining.reconstruct(pixels, noise=noise)["logits"])
    logits = np.asarray(classifier(pixels))
    hidden = np.asarray(
        pretraining.vit(np.transpose(pixels, (0, 2, 3, 1)), unmasked=True).last_hidden_state
    )
    rows = []

    def row(target, what, path, diff, how):
        rows.append(
            dict(target=target, output=what, size_mib=size_of(path) / 2**20, max_diff=diff, how=how)
        )
        print(f"{target:<28} {what:<28} {size_of(path) / 2**20:9.1f} MiB  max |diff| {diff:.2e}")

    work = pathlib.Path(tempfile.mkdtemp(prefix="deploy-"))
    # TF Serving: the SavedModel, loaded by TensorFlow.
    pretraining.export(work / "saved_model", verbose=False, raw_inputs=False)
    loaded = tf.saved_model.load(str(work / "saved_model"))
    served = loaded.signatures["serving_default"](pixel_values=tf.constant(pixels))
    row(
        "TF Serving (SavedModel)",
        "features (cls, mean)",
        work / "saved_model",
        max(max_diff(served[k], features[k]) for k in features),
        "model.export(dir)",
    )
    # ONNX Runtime.
    import onnxruntime

    for name, model, signature, inputs, expected in (
        ("features", pretraining, "features", {"pixel_values": pixels}, features["cls_features"]),
        (
            "reconstruct",
            pretraining,
            "reconstruct",
            {"pixel_values": pixels, "noise": noise},
            reconstruction,
        ),
        ("classify", classifier, "classify", {"pixel_values": pixels}, logits),
    ):
        path = work / f"{name}.onnx"
        model.export(path, format="onnx", signature=signature, verbose=False)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))
        key = {"features": "cls_features", "reconstruct": "reconstruction"}.get(name, "logits")
        row("ONNX Runtime", name, path, max_diff(outputs[key], expected), 'format="onnx"')
    # LiteRT.
    from ai_edge_litert.interpreter import Interpreter

    for name, model, expected_all in (
        ("pretraining", pretraining, {"features": features["cls_features"]}),
        ("classifier", classifier, {"classify": logits}),
    ):
        path = work / f"{name}.tflite"
        model.export(path, format="litert", verbose=False)
        interpreter = Interpreter(model_path=str(path))
        for signature, expected in expected_all.items():
            runner = interpreter.get_signature_runner(signature)
            out = runner(pixel_values=pixels)
            key = "cls_features" if signature == "features" else "logits"
            row(
                "LiteRT",
                f"{name}: {signature}",
                path,
                max_diff(out[key], expected),
                'format="litert"',
            )
        if name == "pretraining":
            out = interpreter.get_signature_runner("reconstruct")(pixel_values=pixels, noise=noise)
            row(
                "LiteRT",
                "pretraining: reconstruct",
                path,
                max_diff(out["reconstruction"], reconstruction),
                'format="litert"',
            )
    # keras-hub.
    import keras_hub

    pretraining.export(work / "keras_hub_backbone", format="keras_hub", verbose=False)
    backbone = keras_hub.models.ViTBackbone.from_preset(str(work / "keras_hub_backbone"))
    row(
        "keras-hub ViTBackbone",
        "last_hidden_state",
        work / "keras_hub_backbone",
        max_diff(backbone(np.transpose(pixels, (0, 2, 3, 1))), hidden),
        'format="keras_hub"',
    )
    classifier.export(work / "keras_hub_classifier", format="keras_hub", verbose=False)
    task = keras_hub.models.ViTImageClassifier.from_preset(str(work / "keras_hub_classifier"))
    features_ = task.backbone(np.transpose(pixels, (0, 2, 3, 1)))[:, 0]
    row(
        "keras-hub ViTImageClassifier",
        "logits",
        work / "keras_hub_classifier",
        max_diff(task.output_dense(features_), logits),
        'format="keras_hub"',
    )
    # transformers' ViT (PyTorch).
    import torch
    import transformers

    pretraining.save_pretrained(work / "vit", pytorch="vit")
    classifier.save_pretrained(work / "vit_classifier", pytorch="vit")
    with torch.no_grad():
        vit = transformers.ViTModel.from_pretrained(work / "vit").eval()
        out = vit(torch.from_numpy(pixels)).last_hidden_state.numpy()
        row("transformers ViTModel", "last_hidden_state", work / "vit", max_diff(out, hidden),
            'save_pretrained(dir, pytorch="vit")')  # fmt: skip
        vit_classifier = transformers.ViTForImageClassification.from_pretrained(
            work / "vit_classifier"
        ).eval()
        out = vit_classifier(torch.from_numpy(pixels)).logits.numpy()
        row("transformers ViTForImageClassification", "logits", work / "vit_classifier",
            max_diff(out, logits), 'save_pretrained(dir, pytorch="vit")')  # fmt: skip

    report = dict(
        config=args.config,
        batch=args.batch,
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        command="python benchmarks/deploy.py"
        + (f" --config {args.config}" if args.config != "base" else ""),
        rows=rows,
    )
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"deploy-{args.config}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Deployment targets, {args.config} config, batch {args.batch}",
        "",
        f"`{report['command']}`",
        "",
        "| target | output | size | max abs diff from Keras | how |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['output']} | {r['size_mib']:.1f} MiB | {r['max_diff']:.1e} "
            f"| `{r['how']}` |"
        )
    (output / f"deploy-{args.config}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {output / f'deploy-{args.config}.md'}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
