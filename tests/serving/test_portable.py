"""ONNX and LiteRT exports, run in their real runtimes (onnxruntime; the
LiteRT interpreter of `ai_edge_litert`) in a fresh process that cannot import
TensorFlow or tfvitmae, against the Keras model."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.serving import export_portable

from ..helpers import max_diff, tiny_config

# What each model's file holds: ONNX one function a file, LiteRT all of them.
ONNX_SIGNATURES = {
    "pretraining": ["reconstruct", "reconstruct_uint8", "features"],
    "classifier": ["classify", "classify_uint8"],
    "encoder": ["features", "features_uint8"],
}
LITERT_SIGNATURES = {
    "pretraining": ["features", "features_uint8", "reconstruct", "reconstruct_uint8"],
    "classifier": ["classify", "classify_uint8", "features", "features_uint8"],
    "encoder": ["features", "features_uint8"],
}

# Loads each file in its runtime and runs the requests: no TensorFlow, no tfvitmae.
FRESH_PROCESS = r"""
import json, sys
sys.modules["tensorflow"] = None
sys.modules["tfvitmae"] = None
import numpy as np
jobs = json.load(open(sys.argv[1]))
requests = np.load(sys.argv[2], allow_pickle=True)["requests"].item()
results = {}
for job in jobs:
    inputs = requests[job["request"]]
    if job["format"] == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(job["path"], providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, inputs)))
        results[job["key"] + "|inputs"] = np.array(sorted(i.name for i in session.get_inputs()))
    else:
        from ai_edge_litert.interpreter import Interpreter
        runner = Interpreter(model_path=job["path"]).get_signature_runner(job["signature"])
        outputs = runner(**inputs)
    for name, value in outputs.items():
        results[job["key"] + "|" + name] = value
np.savez(sys.argv[3], **results)
"""


@pytest.fixture(scope="module")
def models():
    """A channels-first pretraining model with norm-pix loss, a channels-last
    linear-probe classifier and a one-channel encoder built by its constructor
    and never called (the README's case that Keras' own export refused)."""
    pretraining = TFViTMAEForPreTraining(tiny_config(norm_pix_loss=True), seed=0)
    classifier = TFViTMAEForImageClassification.from_encoder(
        pretraining, num_labels=4, data_format="channels_last", linear_probe=True
    )
    encoder = TFViTMAEModel(tiny_config(num_channels=1))
    return {"pretraining": pretraining, "classifier": classifier, "encoder": encoder}


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    base = tmp_path_factory.mktemp("portable")
    files = {}
    for kind, model in models.items():
        for signature in ONNX_SIGNATURES[kind]:
            path = base / f"{kind}_{signature}.onnx"
            assert model.export(path, format="onnx", signature=signature, verbose=False) == [
                signature
            ]
            files["onnx", kind, signature] = path
        path = base / f"{kind}.tflite"
        names = model.export(path, format="litert", verbose=False)
        assert sorted(names) == LITERT_SIGNATURES[kind]
        for signature in LITERT_SIGNATURES[kind]:
            files["litert", kind, signature] = path
    return files


def make_inputs(model, signature, batch, seed):
    config, rng = model.config, np.random.default_rng(seed)
    (height, width), channels = config.image_hw, config.num_channels
    if signature.endswith("_uint8"):
        inputs = {"images": rng.integers(0, 256, (batch, height, width, channels), np.uint8)}
    else:
        shape = (channels, height, width) if model.data_format == "channels_first" else None
        inputs = {
            "pixel_values": rng.normal(size=(batch, *(shape or (height, width, channels)))).astype(
                "float32"
            )
        }
    if signature.startswith("reconstruct"):
        inputs["noise"] = rng.random((batch, config.num_patches), dtype=np.float32)
    return inputs


def keras_reference(model, signature, inputs):
    """What the Keras model gives for a function's inputs."""
    if "images" in inputs:
        normalized = model.image_processor.normalize(tf.constant(inputs["images"]))
        pixel_values = model.to_model_layout(normalized)
    else:
        pixel_values = tf.constant(inputs["pixel_values"])
    if signature.startswith("classify"):
        logits = model(pixel_values)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}
    if signature.startswith("reconstruct"):
        out = model.reconstruct(pixel_values, noise=inputs["noise"])
        return {
            "loss": out["loss"],
            "reconstruction": out["logits"],
            "mask": out["mask"],
            "reconstructed_image": out["reconstructed_image"],
        }
    return model.unmasked_features(pixel_values)


@pytest.mark.slow
def test_runtimes_in_a_fresh_process_give_the_keras_outputs(models, exported, tmp_path):
    jobs, requests = [], {}
    for (fmt, kind, signature), path in exported.items():
        for batch in (1, 3):
            key = f"{fmt}|{kind}|{signature}|{batch}"
            requests[key] = make_inputs(models[kind], signature, batch, seed=batch)
            jobs.append(dict(format=fmt, path=str(path), signature=signature, request=key, key=key))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    np.savez(tmp_path / "requests.npz", requests=np.array(requests, dtype=object))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            *(str(tmp_path / f) for f in ("jobs.json", "requests.npz", "results.npz")),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    results = np.load(tmp_path / "results.npz")
    checked = 0
    for key, inputs in requests.items():
        fmt, kind, signature, batch = key.split("|")
        expected = keras_reference(models[kind], signature, inputs)
        for name, value in expected.items():
            got = results[f"{key}|{name}"]
            assert got.shape == tuple(value.shape) and got.shape[0] == int(batch), (key, name)
            assert max_diff(got, value) < 1e-4, (key, name, max_diff(got, value))
            checked += 1
        if fmt == "onnx":  # named inputs, as the SavedModel's
            assert sorted(results[f"{key}|inputs"]) == sorted(inputs)
    assert checked == sum(2 * (4 if s.startswith("reconstruct") else 2) for _, _, s in exported)


def test_onnx_batch_axis_is_named_and_dynamic(exported):
    import onnx

    proto = onnx.load(str(exported["onnx", "pretraining", "reconstruct"]))
    shapes = {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in [*proto.graph.input, *proto.graph.output]
    }
    assert shapes["pixel_values"] == ["batch", 3, 32, 32]
    assert shapes["noise"] == ["batch", 16]
    assert shapes["loss"] == ["batch"] and shapes["mask"] == ["batch", 16]
    assert {"reconstruction", "reconstructed_image"} <= set(shapes)


def test_litert_file_lists_its_signatures_with_their_inputs(exported):
    from ai_edge_litert.interpreter import Interpreter

    listed = Interpreter(model_path=str(exported["litert", "pretraining", "features"]))
    signatures = listed.get_signature_list()
    assert sorted(signatures) == LITERT_SIGNATURES["pretraining"]
    assert sorted(signatures["reconstruct_uint8"]["inputs"]) == ["images", "noise"]
    assert sorted(signatures["features"]["outputs"]) == ["cls_features", "mean_features"]


@pytest.mark.parametrize(
    "fmt, module, extra", [("onnx", "tf2onnx", "onnx"), ("litert", "ai_edge_litert", "litert")]
)
def test_a_missing_exporter_package_is_named(models, tmp_path, monkeypatch, fmt, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    pattern = rf"An {fmt} export needs the {module} package.*tfvitmae\[{extra}\]"
    with pytest.raises(ImportError, match=pattern):
        models["encoder"].export(tmp_path / "m", format=fmt)
    assert not list(tmp_path.iterdir())


def test_bad_arguments_are_refused_and_nothing_is_left(models, tmp_path, monkeypatch):
    encoder = models["encoder"]
    with pytest.raises(
        ValueError, match=r"signature must be one of \['features', 'features_uint8'\]"
    ):
        encoder.export(tmp_path / "m.onnx", format="onnx", signature="classify")
    (tmp_path / "taken.onnx").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already exists"):
        encoder.export(tmp_path / "taken.onnx", format="onnx")
    with pytest.raises(ValueError, match=r"format must be one of \('onnx', 'litert'\)"):
        export_portable(encoder, tmp_path / "m", "tflite")

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    from tfvitmae.serving import portable

    monkeypatch.setattr(portable, "_onnx_bytes", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        encoder.export(tmp_path / "m.onnx", format="onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


# ------------------------------------------------------------------ int8
def calibration_images(count=8, size=40, seed=5):
    """uint8 images at another size than the models', for their processor to resize."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), np.uint8)


def cosines(got, expected):
    got, expected = (np.reshape(a, (len(a), -1)) for a in (got, np.asarray(expected)))
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    return np.sum(got * expected, axis=1) / norms


@pytest.mark.parametrize("static", [False, True])
def test_onnx_int8_runs_quantized_and_close_to_float(models, tmp_path, capsys, static):
    """Dynamic without calibration images, static QDQ with them (a folder of
    PNGs): quantized ops in the file, onnxruntime's outputs on new images
    close to the Keras model's, and the measurement printed."""
    import onnx
    import onnxruntime

    # A head with wide margins: a random tiny head's logits nearly tie, so
    # their top-1 flips under any rounding.
    classifier = TFViTMAEForImageClassification.from_encoder(
        models["pretraining"], num_labels=4, data_format="channels_last"
    )
    kernel = classifier.classifier.kernel
    kernel.assign(np.eye(*kernel.shape, dtype="float32") * 50)
    folder = None
    if static:
        folder = tmp_path / "calibration"
        folder.mkdir()
        for i, image in enumerate(calibration_images()):
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    path = tmp_path / "m.onnx"
    classifier.export(path, format="onnx", quantize="int8", calibration_images=folder)
    printed = capsys.readouterr().out
    assert re.search(r"cosine similarity to float32 \(lowest of 8 images\) 0\.99\d\d", printed)
    assert "top-1 agreement 100.0%" in printed
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    quantized = {"QuantizeLinear", "DequantizeLinear"} if static else {"DynamicQuantizeLinear"}
    assert quantized <= ops and (static or ops & {"MatMulInteger", "ConvInteger"}), ops
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # New images of the kind checked (uint8 normalised), not the calibration ones.
    images = calibration_images(size=32, seed=9)
    inputs = {"pixel_values": np.asarray(classifier.image_processor.normalize(images))}
    logits = session.run(["logits"], inputs)[0]
    expected = keras_reference(classifier, "classify", inputs)["logits"].numpy()
    assert cosines(logits, expected).min() >= 0.99
    assert np.mean(logits.argmax(1) == expected.argmax(1)) >= 0.9


@pytest.mark.slow
def test_litert_int8_is_full_integer_with_float_inputs_and_outputs(models, tmp_path, capsys):
    """The interpreter holds int8 tensors, takes and gives float32 (uint8
    images), and its mean features are close to the Keras model's. The tiny
    random model's CLS features and logits are not, so the default check
    refuses it, naming the number."""
    from ai_edge_litert.interpreter import Interpreter

    classifier, images = models["classifier"], calibration_images()
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"too far from the float32 model: cosine .* 0\.\d{4}"):
        classifier.export(
            path, format="litert", signature="features", quantize="int8", calibration_images=images
        )
    assert not list(tmp_path.iterdir())
    classifier.export(
        path,
        format="litert",
        quantize="int8",
        calibration_images=images,
        min_cosine=0,
        min_agreement=0,
    )
    assert "top-1 agreement" in capsys.readouterr().out
    interpreter = Interpreter(model_path=str(path))
    dtypes = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.int8 in dtypes
    runner = interpreter.get_signature_runner("features")
    assert runner.get_input_details()["pixel_values"]["dtype"] == np.float32
    inputs = make_inputs(classifier, "features", batch=8, seed=9)
    got = runner(**inputs)
    expected = keras_reference(classifier, "features", inputs)
    assert got["mean_features"].dtype == np.float32
    assert cosines(got["mean_features"], expected["mean_features"]).min() >= 0.99
    uint8 = interpreter.get_signature_runner("classify_uint8")
    inputs = make_inputs(classifier, "classify_uint8", batch=8, seed=9)
    assert uint8.get_input_details()["images"]["dtype"] == np.uint8
    assert uint8(**inputs)["logits"].dtype == np.float32


def test_int8_refusals_name_the_argument_and_leave_nothing(models, tmp_path):
    pretraining, path = models["pretraining"], tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=r"quantize: expected 'int8' or None, received 'int4'"):
        pretraining.export(path, format="onnx", quantize="int4")
    with pytest.raises(ValueError, match="pass calibration_images .* received None"):
        pretraining.export(tmp_path / "m.tflite", format="litert", quantize="int8")
    with pytest.raises(ValueError, match="calibration_images applies to quantize='int8'"):
        pretraining.export(path, format="onnx", calibration_images=calibration_images())
    with pytest.raises(ValueError, match=r"min_cosine: expected a number in \[0, 1\], received 2"):
        pretraining.export(path, format="onnx", quantize="int8", min_cosine=2)
    wrong = np.zeros((2, 32, 32, 3), np.float32)  # channels-last; the model is channels-first
    with pytest.raises(ValueError, match=r"pixel_values of shape \(n, \*\(3, 32, 32\)\), rec"):
        pretraining.export(path, format="onnx", quantize="int8", calibration_images=wrong)
    # A threshold int8 cannot meet: refused with the measured number, nothing written.
    pixel_values = make_inputs(pretraining, "features", batch=4, seed=0)["pixel_values"]
    with pytest.raises(ValueError, match=r"cosine similarity .* \(lowest of 4 images\) 0\.9\d{3}"):
        pretraining.export(
            path,
            format="onnx",
            signature="features",
            quantize="int8",
            calibration_images=pixel_values,
            min_cosine=1,
        )
    assert not list(tmp_path.iterdir())
