"""The tiny models behind README.md's TensorFlow Serving examples, and the
code that writes those examples.

    python -m tests.serving_examples      # rewrites the examples section of README.md

The models are small on purpose (one channel, 8x8 pixels, 4x4 patches) so a
complete request fits in the README; real models take the same JSON with
larger arrays. tests/serving/test_saved_model.py feeds every README request to the
exported signatures.
"""

import base64
import json
import os

import numpy as np

DOC_CONFIG = dict(
    hidden_size=8,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=16,
    decoder_hidden_size=8,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=16,
    image_size=8,
    patch_size=4,
    num_channels=1,
    norm_pix_loss=True,
)


def doc_models():
    """`{"pretraining": model, "classifier": model}` with fixed weights."""
    import keras

    from tfvitmae import TFViTMAEForPreTraining, ViTMAEConfig
    from tfvitmae.models.classification import TFViTMAEForImageClassification

    keras.utils.set_random_seed(0)
    config = ViTMAEConfig(**DOC_CONFIG)
    pretraining = TFViTMAEForPreTraining(config, seed=0)
    classifier = TFViTMAEForImageClassification.from_encoder(
        pretraining, num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"}
    )
    return {"pretraining": pretraining, "classifier": classifier}


def example_png():
    """An 8x8 grayscale PNG: a bright square on a dark background."""
    import tensorflow as tf

    image = np.full((8, 8, 1), 20, np.uint8)
    image[2:6, 2:6] = 230
    return tf.io.encode_png(image).numpy()


def requests():
    """`{signature: (model key, REST request dict)}` for the README."""
    pixels = np.round(np.linspace(-1, 1, 64).reshape(1, 1, 8, 8), 3).tolist()
    b64 = base64.b64encode(example_png()).decode()
    uint8 = np.full((1, 8, 8, 1), 20, np.uint8)
    uint8[0, 2:6, 2:6] = 230
    return {
        "serving_default": (
            "pretraining",
            {"signature_name": "serving_default", "instances": pixels},
        ),
        "features_image_bytes": (
            "pretraining",
            {"signature_name": "features_image_bytes", "instances": [{"b64": b64}]},
        ),
        "reconstruct": ("pretraining", {"signature_name": "reconstruct", "instances": pixels}),
        "reconstruct_with_seed": (
            "pretraining",
            {
                "signature_name": "reconstruct_with_seed",
                "inputs": {"pixel_values": pixels, "seed": 7},
            },
        ),
        "reconstruct_image_bytes": (
            "pretraining",
            {
                "signature_name": "reconstruct_image_bytes",
                "inputs": {"image_bytes": [{"b64": b64}]},
            },
        ),
        "reconstruct_uint8": (
            "pretraining",
            {"signature_name": "reconstruct_uint8", "instances": uint8.tolist()},
        ),
        "classify": ("classifier", {"signature_name": "classify", "instances": pixels}),
        "classify_image_bytes": (
            "classifier",
            {"signature_name": "classify_image_bytes", "instances": [{"b64": b64}]},
        ),
    }


def responses(exports):
    """Run every README request against exported models: `{signature: response}`."""
    import tensorflow as tf

    from tfvitmae.serving import rest_to_tensors

    loaded = {key: tf.saved_model.load(path) for key, path in exports.items()}
    out = {}
    for signature, (key, request) in requests().items():
        fn = loaded[key].signatures[signature]
        result = fn(**rest_to_tensors(request, fn))
        columns = {k: _round(v.numpy()) for k, v in sorted(result.items())}
        out[signature] = (
            {"outputs": columns} if "inputs" in request else {"predictions": _rows(columns)}
        )
    return out


def _round(array):
    if array.dtype.kind == "f":
        return np.round(array.astype(np.float64), 4).tolist()
    if array.dtype.kind in "SO":
        return np.vectorize(lambda v: v.decode(), otypes=[object])(array).tolist()
    return array.tolist()


def _rows(columns):
    """TF Serving's row format: one dict per instance (or a bare list for one output)."""
    batch = len(next(iter(columns.values())))
    rows = [{k: v[i] for k, v in columns.items()} for i in range(batch)]
    return [next(iter(r.values())) for r in rows] if len(columns) == 1 else rows


START, END = "<!-- rest-examples:start -->", "<!-- rest-examples:end -->"


def main():
    import tempfile

    models = doc_models()
    folder = tempfile.mkdtemp()
    exports = {}
    for key, model in models.items():
        exports[key] = os.path.join(folder, key, "1")
        model.export(exports[key], verbose=False)
    answers = responses(exports)
    parts = []
    for signature, (_, request) in requests().items():
        parts.append(
            f"#### `{signature}`\n\n"
            f"<!-- rest-request {signature} -->\n```json\n{json.dumps(request)}\n```\n\n"
            f"<!-- rest-response {signature} -->\n```json\n{json.dumps(answers[signature])}\n```\n"
        )
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    text = open(readme, encoding="utf-8").read()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(head + START + "\n" + "\n".join(parts) + END + tail)
    print(f"rewrote {len(parts)} examples in {readme}")


if __name__ == "__main__":
    main()
