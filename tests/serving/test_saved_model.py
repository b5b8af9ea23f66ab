"""SavedModel export, verified as a serving team would without TF Serving itself:
load in a fresh process that cannot import tfvitmae, inspect with
saved_model_cli, and replay the README's REST requests."""

import io
import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel
from tfvitmae.data import decode_image
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.models.layers import masking_noise
from tfvitmae.serving import (
    example_inputs,
    export_for_serving,
    export_saved_model,
    predict_request,
    rest_request,
    rest_to_tensors,
)

from .. import serving_examples
from ..helpers import max_diff, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRETRAINING_SIGNATURES = [
    "features_image_bytes",
    "features_uint8",
    "reconstruct",
    "reconstruct_image_bytes",
    "reconstruct_image_bytes_with_seed",
    "reconstruct_uint8",
    "reconstruct_uint8_with_seed",
    "reconstruct_with_seed",
    "serving_default",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tiny models and their exports: a channels-first pretraining model with
    norm-pix loss, a channels-last classifier and an encoder."""
    base = tmp_path_factory.mktemp("serving")
    pretraining = TFViTMAEForPreTraining(tiny_config(norm_pix_loss=True), seed=0)
    classifier = TFViTMAEForImageClassification.from_encoder(
        pretraining,
        num_labels=4,
        id2label={0: "a", 1: "b", 2: "c", 3: "d"},
        data_format="channels_last",
        linear_probe=True,
    )
    encoder = TFViTMAEModel(tiny_config(num_channels=1))
    models = {"pretraining": pretraining, "classifier": classifier, "encoder": encoder}
    paths, signatures = {}, {}
    for name, model in models.items():
        signatures[name] = export_for_serving(model, base / name, version=3, verbose=False)
        paths[name] = str(base / name / "3")
    return models, paths, signatures


@pytest.mark.slow
def test_layout_and_signature_names(exported):
    models, paths, signatures = exported
    for path in paths.values():
        assert {"saved_model.pb", "variables"} <= set(os.listdir(path))
        assert os.path.isdir(os.path.join(path, "variables"))
    assert signatures["pretraining"] == PRETRAINING_SIGNATURES
    assert signatures["encoder"] == ["features_image_bytes", "features_uint8", "serving_default"]
    assert {"classify", "classify_image_bytes", "classify_uint8", "serving_default"} <= set(
        signatures["classifier"]
    )
    assert not [p for p in os.listdir(os.path.dirname(paths["encoder"])) if p.startswith(".tmp")]


def test_every_weight_is_stored_once(exported):
    """Keras' ExportArchive stored each weight twice when the model was also
    tracked (keras-team/keras#23553): twice the size and the serving memory."""
    models, paths, _ = exported
    for name, path in paths.items():
        stored = tf.train.list_variables(os.path.join(path, "variables", "variables"))
        values = sum(int(np.prod(shape)) for key, shape in stored if "VARIABLE_VALUE" in key)
        weights = models[name].count_params()
        # The weights, and the 2 values of the seed generator's state where a
        # signature draws masks.
        assert values == weights + (2 if name == "pretraining" else 0), (name, values, weights)


FRESH_PROCESS = r"""
import sys, json
import numpy as np
sys.modules["tfvitmae"] = None  # the export must not need the package
import tensorflow as tf
try:
    import tfvitmae
    raise SystemExit("tfvitmae was importable")
except ImportError:
    pass
requests = np.load(sys.argv[2], allow_pickle=True)["requests"].item()
loaded = tf.saved_model.load(sys.argv[1])
results = {}
for key, inputs in requests.items():
    signature, _ = key.split("|")
    fn = loaded.signatures[signature]
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    for name, value in out.items():
        results[key + "|" + name] = value.numpy()
np.savez(sys.argv[3], **results)
print("signatures:", sorted(loaded.signatures))
"""


def run_fresh(path, requests, tmp_path):
    np.savez(tmp_path / "requests.npz", requests=np.array(requests, dtype=object))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            path,
            str(tmp_path / "requests.npz"),
            str(tmp_path / "results.npz"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    results = np.load(tmp_path / "results.npz", allow_pickle=True)
    grouped = {}
    for key in results.files:
        signature, batch, name = key.split("|")
        grouped.setdefault((signature, int(batch)), {})[name] = results[key]
    return grouped


def keras_reference(model, signature, inputs):
    """What the in-process Keras model gives for a signature's inputs."""
    c, processor = model.config.num_channels, model.image_processor
    if "image_bytes" in inputs:
        images = tf.stack([processor.preprocess(decode_image(b, c)) for b in inputs["image_bytes"]])
    elif "images" in inputs:
        images = processor.preprocess(inputs["images"])
    else:
        images = None
    pixel_values = inputs.get("pixel_values")
    if images is not None:
        pixel_values = (
            tf.transpose(images, (0, 3, 1, 2)) if model.data_format == "channels_first" else images
        )
    batch = int(tf.shape(pixel_values)[0])
    if signature.startswith("reconstruct"):
        noise = (
            masking_noise(inputs["seed"], batch, model.config.num_patches)
            if "seed" in inputs
            else None
        )
        out = model(pixel_values, noise=noise)
        return {
            "reconstruction": out.logits,
            "mask": out.mask,
            "loss": model.per_example_loss(pixel_values, out.logits, out.mask),
            "reconstructed_image": model.reconstruct_image(pixel_values, out.logits, out.mask),
        }
    if signature.startswith("classify"):
        logits = model(pixel_values)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}
    hidden = model.vit(model.check_pixel_values(pixel_values), unmasked=True).last_hidden_state
    return {"cls_features": hidden[:, 0], "mean_features": tf.reduce_mean(hidden[:, 1:], axis=1)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pretraining", "classifier", "encoder"])
def test_fresh_process_outputs_equal_keras(exported, kind, tmp_path):
    models, paths, signatures = exported
    model = models[kind]
    requests = {
        f"{s}|{b}": example_inputs(model, s, batch=b, seed=b)
        for s in signatures[kind]
        for b in (1, 7)
    }
    results = run_fresh(paths[kind], requests, tmp_path)
    for (signature, batch), outputs in results.items():
        inputs = requests[f"{signature}|{batch}"]
        if signature.startswith("reconstruct") and not signature.endswith("_with_seed"):
            # Fresh random masks per request: only the shapes and mask count are fixed.
            assert outputs["mask"].shape == (batch, model.config.num_patches)
            assert outputs["mask"].sum() == batch * 12
            continue
        expected = keras_reference(model, signature, inputs)
        for name, value in expected.items():
            assert outputs[name].shape[0] == batch, (signature, name)
            assert max_diff(outputs[name], value) < 1e-5, (
                signature,
                name,
                max_diff(outputs[name], value),
            )
        if signature.startswith("classify"):
            top = np.argsort(-outputs["probabilities"], axis=1)[:, :4]
            np.testing.assert_array_equal(outputs["top_k_indices"], top)
            assert [v.decode() for v in outputs["top_k_labels"][0]] == [
                model.id2label[i] for i in top[0]
            ]


@pytest.mark.slow
def test_raw_bytes_match_python_preprocessing(exported, tmp_path):
    models, paths, _ = exported
    model = models["pretraining"]
    loaded = tf.saved_model.load(paths["pretraining"])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(45, 37, 3), dtype=np.uint8)
    for encoded in (tf.io.encode_png(image), tf.io.encode_jpeg(image)):
        served = loaded.signatures["features_image_bytes"](image_bytes=tf.reshape(encoded, (1,)))
        decoded = tf.io.decode_image(encoded, channels=3)
        # The Python pipeline (data.make_dataset without augmentation) on the same image:
        from tfvitmae.data import make_dataset

        pixel_values = next(
            iter(make_dataset(decoded.numpy()[None], 32, 1, augment=False, shuffle=False))
        )
        expected = keras_reference(model, "serving_default", {"pixel_values": pixel_values})
        assert max_diff(served["cls_features"], expected["cls_features"]) < 1e-5
        assert max_diff(served["mean_features"], expected["mean_features"]) < 1e-5


@pytest.mark.slow
def test_raw_inputs_use_the_models_image_processor(tmp_path):
    """A model trained on its own statistics serves with them: the uint8 and
    image-bytes signatures normalise with the model's processor, and the
    reconstructed uint8 image undoes that normalisation."""
    from tfvitmae.data.image_processor import ViTMAEImageProcessor

    processor = ViTMAEImageProcessor(size=32, resample=2, image_mean=[0.2], image_std=[0.3])
    model = TFViTMAEForPreTraining(tiny_config(num_channels=1), image_processor=processor)
    export_saved_model(model, str(tmp_path / "1"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    images = np.random.default_rng(0).integers(0, 256, size=(2, 48, 40, 1), dtype=np.uint8)
    served = loaded.signatures["features_uint8"](images=tf.constant(images))
    pixel_values = model.image_processor(images)["pixel_values"]
    hidden = model.vit(np.transpose(pixel_values, (0, 2, 3, 1)), unmasked=True).last_hidden_state
    assert max_diff(served["cls_features"], hidden[:, 0]) < 1e-5
    imagenet = ViTMAEImageProcessor(size=32).with_channels(1)(images)["pixel_values"]
    assert max_diff(pixel_values, imagenet) > 0.1  # the other statistics would differ
    out = loaded.signatures["reconstruct_uint8_with_seed"](
        images=tf.constant(images), seed=tf.constant(3, tf.int64)
    )
    mask = out["mask"].numpy()[0]
    resized = processor.resize(images[:1]).numpy()  # whole levels, as served
    visible = model.patchify(np.transpose(resized, (0, 3, 1, 2))).numpy()[0][mask == 0]
    served_image = np.transpose(out["reconstructed_image_uint8"].numpy()[:1], (0, 3, 1, 2))
    kept = model.patchify(served_image.astype("float32")).numpy()[0][mask == 0]
    np.testing.assert_array_equal(kept, visible)


@pytest.mark.slow
def test_random_masks_differ_between_requests_and_seeds_repeat(exported):
    models, paths, _ = exported
    loaded = tf.saved_model.load(paths["pretraining"])
    x = tf.constant(example_inputs(models["pretraining"], "reconstruct", batch=2)["pixel_values"])
    a, b = (loaded.signatures["reconstruct"](pixel_values=x)["mask"].numpy() for _ in range(2))
    assert not np.array_equal(a, b)
    seeded = [
        loaded.signatures["reconstruct_with_seed"](pixel_values=x, seed=tf.constant(5, tf.int64))[
            "mask"
        ]
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*seeded)


def _masks_from_grid(path, model, count):
    """The masks that a `tfvitmae reconstruct` grid shows: in its "masked"
    column a removed patch is one flat colour (normalised 0, denormalised),
    a visible one is the (random) image."""
    grid = tf.io.decode_png(pathlib.Path(path).read_bytes()).numpy()
    c = model.config
    (height, _), (patch, _) = c.image_hw, c.patch_hw
    zoom = max(1, 96 // height)  # as the grid enlarges small images
    tile, gap = height * zoom, 2
    header = grid.shape[0] - (count * tile + (count - 1) * gap)
    fill = np.asarray(model.image_processor.denormalize(np.zeros((1, 1, c.num_channels))))[0, 0]
    rows, cols = c.grid_size
    masks = np.zeros((count, c.num_patches), "float32")
    for image in range(count):
        top, left = header + image * (tile + gap), tile + gap  # the second column
        for index in range(c.num_patches):
            row, col = divmod(index, cols)
            y, x = top + row * patch * zoom, left + col * patch * zoom
            masks[image, index] = np.all(grid[y : y + patch * zoom, x : x + patch * zoom] == fill)
    return masks


@pytest.mark.slow
def test_one_seed_gives_one_mask_on_every_path(exported, tmp_path):
    """`predict_images(seed=s)`, the SavedModel's `*_with_seed` signatures and
    `tfvitmae reconstruct --seed s` mask each image alike."""
    from tfvitmae.cli import main

    models, paths, _ = exported
    model = models["pretraining"]
    images = np.random.default_rng(3).integers(0, 256, size=(3, 40, 44, 3), dtype=np.uint8)
    files = []
    for i, image in enumerate(images):
        files.append(str(tmp_path / f"image_{i}.png"))
        pathlib.Path(files[-1]).write_bytes(tf.io.encode_png(image).numpy())
    seed = 7
    python = model.predict_images(files, batch_size=2, seed=seed)["mask"]
    signatures = tf.saved_model.load(paths["pretraining"]).signatures
    contents = tf.constant([pathlib.Path(f).read_bytes() for f in files])
    seed_input = tf.constant(seed, tf.int64)
    served = signatures["reconstruct_image_bytes_with_seed"](image_bytes=contents, seed=seed_input)
    served_uint8 = signatures["reconstruct_uint8_with_seed"](images=images, seed=seed_input)
    model.save_pretrained(tmp_path / "checkpoint")
    grid = tmp_path / "grid.png"
    command = ["reconstruct", *files, "--model", str(tmp_path / "checkpoint")]
    assert main([*command, "--output", str(grid), "--seed", str(seed)]) == 0
    from_command = _masks_from_grid(grid, model, len(files))
    assert python.sum(axis=1).tolist() == [12, 12, 12]  # 75% of 16 patches
    assert len({tuple(m) for m in python}) == 3  # each image its own mask
    np.testing.assert_array_equal(served["mask"].numpy(), python)
    np.testing.assert_array_equal(served_uint8["mask"].numpy(), python)
    np.testing.assert_array_equal(from_command, python)
    other = model.predict_images(files, seed=seed + 1)["mask"]
    assert not np.array_equal(other, python)


@pytest.mark.slow
def test_saved_model_cli_show_and_run(exported, tmp_path):
    _, paths, _ = exported
    show = subprocess.run(
        ["saved_model_cli", "show", "--dir", paths["pretraining"], "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert show.returncode == 0, show.stderr
    text = show.stdout
    for signature in PRETRAINING_SIGNATURES:
        assert f"signature_def['{signature}']" in text
    block = text.split("signature_def['reconstruct_with_seed']")[1].split("signature_def[")[0]
    assert re.search(
        r"inputs\['pixel_values'\].*?dtype: DT_FLOAT.*?shape: \(-1, 3, 32, 32\)", block, re.S
    )
    assert re.search(r"inputs\['seed'\].*?dtype: DT_INT64.*?shape: \(\)", block, re.S)
    assert re.search(r"outputs\['reconstructed_image'\].*?shape: \(-1, 3, 32, 32\)", block, re.S)
    bytes_block = text.split("signature_def['features_image_bytes']")[1].split("signature_def[")[0]
    assert re.search(
        r"inputs\['image_bytes'\].*?dtype: DT_STRING.*?shape: \(-1\)", bytes_block, re.S
    )
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.float32))
    run = subprocess.run(
        [
            "saved_model_cli",
            "run",
            "--dir",
            paths["pretraining"],
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"pixel_values={tmp_path / 'x.npy'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "cls_features" in run.stdout and "mean_features" in run.stdout


@pytest.mark.slow
def test_readme_rest_requests_run_against_the_export(tmp_path):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = dict(
        re.findall(r"<!-- rest-(request \w+|response \w+) -->\n```json\n(.*?)\n```", readme, re.S)
    )
    documented = {k.split()[1] for k in blocks if k.startswith("request")}
    assert documented == set(
        serving_examples.requests()
    )  # every example is in the README, and only those
    models = serving_examples.doc_models()
    exports = {}
    for key, model in models.items():
        exports[key] = str(tmp_path / key / "1")
        model.export(exports[key], verbose=False)
    loaded = {key: tf.saved_model.load(path) for key, path in exports.items()}
    for signature, (key, _) in serving_examples.requests().items():
        request = json.loads(blocks[f"request {signature}"])
        assert request["signature_name"] == signature
        fn = loaded[key].signatures[signature]
        result = fn(**rest_to_tensors(request, fn))
        response = json.loads(blocks[f"response {signature}"])
        documented_outputs = response.get("outputs") or response["predictions"][0]
        if isinstance(documented_outputs, dict):
            assert set(documented_outputs) == set(result), signature
        for name, value in result.items():
            doc = (
                response["outputs"][name]
                if "outputs" in response
                else (
                    [row[name] for row in response["predictions"]]
                    if isinstance(response["predictions"][0], dict)
                    else response["predictions"]
                )
            )
            assert np.shape(doc) == tuple(value.shape), (signature, name)


@pytest.mark.slow
def test_client_requests_reach_the_signature_intact(exported):
    """`rest_request` (through JSON) and `predict_request` (through its wire
    bytes) hand every signature exactly the inputs they were built from."""
    models, paths, signatures = exported
    loaded = tf.saved_model.load(paths["pretraining"])
    for signature in signatures["pretraining"]:
        inputs = example_inputs(models["pretraining"], signature, batch=2, seed=3)
        fn = loaded.signatures[signature]
        rest = json.loads(json.dumps(rest_request(signature, inputs)))
        assert rest["signature_name"] == signature
        assert ("instances" in rest) == (len(inputs) == 1)
        if signature.endswith("_image_bytes"):
            assert set(rest["instances"][0]) == {"b64"}
        sent = predict_request(signature, inputs, model_name="m")
        grpc = type(sent).FromString(sent.SerializeToString())  # as the server receives it
        assert (grpc.model_spec.name, grpc.model_spec.signature_name) == ("m", signature)
        for decoded in (
            rest_to_tensors(rest, fn),
            {k: tf.constant(tf.make_ndarray(v)) for k, v in grpc.inputs.items()},
        ):
            assert sorted(decoded) == sorted(inputs)
            for name, value in inputs.items():
                np.testing.assert_array_equal(decoded[name].numpy(), value)
            if not signature.startswith("reconstruct") or signature.endswith("_with_seed"):
                expected = fn(**{k: tf.constant(v) for k, v in inputs.items()})
                result = fn(**decoded)
                for name in expected:
                    np.testing.assert_array_equal(result[name], expected[name])
    features = loaded.signatures["features_image_bytes"]
    named_rows = {"instances": [{"image_bytes": {"b64": "YWJj"}}, {"image_bytes": {"b64": "ZA=="}}]}
    assert rest_to_tensors(named_rows, features)["image_bytes"].numpy().tolist() == [b"abc", b"d"]
    with pytest.raises(ValueError, match="Rows without input names need a single-input"):
        rest_to_tensors({"instances": [[0.0]]}, loaded.signatures["reconstruct_with_seed"])
    with pytest.raises(ValueError, match="row format for a single input only"):
        rest_request("reconstruct_with_seed", {"pixel_values": [0.0], "seed": 1}, row_format=True)
    with pytest.raises(ValueError, match="takes \\['pixel_values'\\], received \\['pixels'\\]"):
        rest_to_tensors({"inputs": {"pixels": [0.0]}}, loaded.signatures["serving_default"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "signature, inputs, pattern",
    [
        (
            "features_image_bytes",
            {"image_bytes": tf.constant([b"not an image"])},
            r"image_bytes\[0\] is not a JPEG, PNG, GIF, BMP or WebP image",
        ),
        (
            "features_uint8",
            {"images": tf.zeros((1, 20, 20, 4), tf.uint8)},
            "images must have 3 channels",
        ),
        (
            "reconstruct",
            {"pixel_values": tf.zeros((2, 3, 48, 48))},
            r"pixel_values must be float32 \(batch, channels, height, width\) = "
            r"\(batch, 3, 32, 32\)",
        ),
        (  # one image without its batch axis: the same message, not a failed transpose
            "serving_default",
            {"pixel_values": tf.zeros((3, 32, 32))},
            r"pixel_values must be float32 \(batch, channels, height, width\)",
        ),
        (
            "reconstruct",
            {"pixel_values": tf.zeros((1, 1, 3, 32, 32))},
            r"pixel_values must be float32 \(batch, channels, height, width\)",
        ),
        (
            "features_uint8",
            {"images": tf.zeros((20, 20, 3), tf.uint8)},
            r"Shape of tensor images \[20,20,3\] is not compatible with expected shape "
            r"\[\?,\?,\?,3\]",
        ),
    ],
)
def test_bad_requests_fail_with_invalid_argument(exported, signature, inputs, pattern):
    _, paths, _ = exported
    fn = tf.saved_model.load(paths["pretraining"]).signatures[signature]
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        fn(**inputs)


def bomb_png():
    """A 9500x9500 PNG of zeros: 88 KB, 90 megapixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (9500, 9500)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_a_bad_image_in_a_batch_is_named(exported):
    """One bad image failed the whole batch without saying which."""
    png = tf.io.encode_png(np.full((6, 5, 3), 7, np.uint8)).numpy()
    _, paths, _ = exported
    features = tf.saved_model.load(paths["pretraining"]).signatures["features_image_bytes"]
    for batch, pattern in (
        (
            [png, png, bomb_png(), png],
            r"image_bytes\[2\] has 90250000 pixels, more than the pixel budget",
        ),
        ([png, b"<html>"], r"image_bytes\[1\] is not a JPEG, PNG"),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
            features(image_bytes=tf.constant(batch))
    assert features(image_bytes=tf.constant([png] * 3))["cls_features"].shape == (3, 32)


@pytest.mark.slow
def test_a_request_larger_than_the_batch_cap_is_refused(exported):
    """257 1x1 PNGs are a 20 KB request; 20,000 of them cost +800 MB."""
    from tfvitmae.serving.saved_model import DEFAULT_MAX_BATCH

    n = DEFAULT_MAX_BATCH + 1
    png = tf.io.encode_png(np.zeros((1, 1, 3), np.uint8)).numpy()
    _, paths, _ = exported
    signatures = tf.saved_model.load(paths["pretraining"]).signatures
    for name, inputs in (
        ("features_image_bytes", {"image_bytes": tf.constant([png] * n)}),
        ("features_uint8", {"images": tf.zeros((n, 1, 1, 3), tf.uint8)}),
        ("serving_default", {"pixel_values": tf.zeros((n, 3, 32, 32))}),
    ):
        key = next(iter(inputs))
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=rf"{key}: a request holds at most 256 images"
        ):
            signatures[name](**inputs)
    with pytest.raises(ValueError, match="max_batch must be a positive integer, received 0"):
        export_for_serving(TFViTMAEModel(tiny_config()), "unused", max_batch=0)


@pytest.mark.slow
def test_a_served_decompression_bomb_is_refused_before_decoding(exported):
    """A 90-megapixel PNG of zeros (88 KB) is refused from its header, with the
    budget the export was written with."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (9500, 9500)).save(buffer, "PNG")
    _, paths, _ = exported
    signatures = tf.saved_model.load(paths["pretraining"]).signatures
    bomb = tf.constant([buffer.getvalue()])
    seed = {"seed": tf.constant(1, tf.int64)}
    for name, extra in (("features_image_bytes", {}), ("reconstruct_image_bytes_with_seed", seed)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="budget of 89,478,485 pixels"):
            signatures[name](image_bytes=bomb, **extra)


@pytest.mark.slow
def test_served_images_read_as_their_viewer_shows_them(exported):
    """A palette BMP (once served as its indices) and a PNG stored sideways with
    an EXIF orientation give the features of the same picture as a plain PNG."""
    from PIL import Image

    def encoded(picture, fmt, **options):
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        return buffer.getvalue()

    upright = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8))
    upright = upright.convert("P").convert("RGB")  # 256 colours, so that a palette holds it
    tags = Image.Exif()
    tags[0x0112] = 6  # stored a quarter turn counter-clockwise: show it turned clockwise
    sideways = encoded(upright.transpose(Image.Transpose.ROTATE_90), "PNG", exif=tags.tobytes())
    _, paths, _ = exported
    features = tf.saved_model.load(paths["pretraining"]).signatures["features_image_bytes"]
    batch = [encoded(upright, "PNG"), encoded(upright.convert("P"), "BMP"), sideways]
    served = features(image_bytes=tf.constant(batch))["mean_features"].numpy()
    np.testing.assert_allclose(served[1], served[0], atol=1e-5)
    np.testing.assert_allclose(served[2], served[0], atol=1e-5)


@pytest.mark.slow
def test_an_empty_batch_gives_empty_outputs(exported):
    models, paths, _ = exported
    for kind, signature, key, width in (
        ("pretraining", "reconstruct", "reconstruction", 192),
        ("classifier", "classify", "probabilities", 4),
    ):
        shape = (0, 3, 32, 32) if kind == "pretraining" else (0, 32, 32, 3)
        served = tf.saved_model.load(paths[kind]).signatures[signature]
        assert served(pixel_values=tf.zeros(shape))[key].shape[0] == 0
        out = models[kind](np.zeros(shape, "float32"))  # the Keras model too
        logits = out.logits if kind == "pretraining" else out
        expected = (0, 16, width) if kind == "pretraining" else (0, width)
        assert tuple(logits.shape) == expected


@pytest.mark.slow
def test_wrong_dtype_is_rejected(exported):
    _, paths, _ = exported
    fn = tf.saved_model.load(paths["pretraining"]).signatures["serving_default"]
    with pytest.raises(
        # Both dtypes named, whatever TF's wording: not any error that mentions "float".
        (TypeError, ValueError, tf.errors.InvalidArgumentError),
        match=r"(?s)float.*int32|int32.*float",
    ):
        fn(pixel_values=tf.zeros((1, 3, 32, 32), tf.int32))


def test_export_errors_leave_nothing_behind(tmp_path, monkeypatch):
    encoder = TFViTMAEModel(tiny_config(num_channels=1))
    (tmp_path / "served" / "3").mkdir(parents=True)
    (tmp_path / "served" / "3" / "saved_model.pb").write_bytes(b"version 3")
    with pytest.raises(FileExistsError, match="already exists.*new version directory"):
        export_for_serving(encoder, tmp_path / "served", version=3, verbose=False)
    assert os.listdir(tmp_path / "served" / "3") == ["saved_model.pb"]
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"a_file' is a file, not a folder"):
        export_for_serving(encoder, tmp_path / "a_file" / "vit_mae", verbose=False)
    with pytest.raises(ValueError, match="version must be a non-negative integer, received -1"):
        export_for_serving(encoder, tmp_path, version=-1)
    with pytest.raises(ValueError, match="not built"):
        export_saved_model(keras.Sequential(), tmp_path / "x")

    # A failure mid-export, with files half written, leaves nothing behind.
    class Boom(Exception):
        pass

    def broken(self, filepath, *args, **kwargs):
        (pathlib.Path(filepath) / "saved_model.pb").write_bytes(b"partial")
        raise Boom("simulated failure")

    # keras.export.ExportArchive() builds the backend's archive class: patch that one.
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", broken)
    with pytest.raises(Boom):
        export_for_serving(encoder, tmp_path / "base", version=1, verbose=False)
    assert not (tmp_path / "base" / "1").exists()
    assert os.listdir(tmp_path / "base") == []


@pytest.mark.slow
def test_warmup_records(exported, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    models, _, _ = exported
    signatures = export_for_serving(
        models["classifier"], tmp_path, version=1, warmup=True, verbose=False
    )
    path = tmp_path / "1" / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(path))
    ]
    names = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert sorted(names) == signatures and len(logs) == len(signatures)  # one per signature
    assert "classify_image_bytes" in names and "serving_default" in names
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    for log in logs:  # every warm-up request is valid for its signature
        request = log.predict_log.request
        fn = loaded.signatures[request.model_spec.signature_name]
        fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
