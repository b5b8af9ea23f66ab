"""SavedModel export for TensorFlow Serving.

`export_saved_model(model, path)` (also `model.export(path)`) writes a
SavedModel through `keras.export.ExportArchive` whose signatures need nothing
from this package at serving time. Every signature has named inputs, a
dynamic batch dimension and a dict of named outputs.

Signatures, by model:
- all models: `serving_default` (`pixel_values`) and `features_image_bytes`
  (`image_bytes`), `features_uint8` (`images`): unmasked encoder features,
  `cls_features` and `mean_features`, each `(batch, hidden_size)`.
- `TFViTMAEForPreTraining`: `reconstruct` and `reconstruct_with_seed` (an
  extra int64 `seed` for a repeatable mask; without it each request draws a
  fresh mask), with `_image_bytes` / `_uint8` variants. Outputs: `loss`
  (per image), `reconstruction` (predicted patches), `mask`,
  `reconstructed_image` (model layout, visible patches from the input), and
  for raw-image inputs `reconstructed_image_uint8` (channels-last RGB).
- `TFViTMAEForImageClassification`: `classify` (+ `_image_bytes`, `_uint8`):
  `logits`, `probabilities`, `top_k_indices`, `top_k_probabilities`, `top_k_labels`.

Raw inputs: `image_bytes` is a batch of encoded JPEG/PNG/GIF/BMP strings (in
REST, `{"b64": ...}`); `images` is uint8 `(batch, height, width, channels)`
of any size. Both are resized and normalised in the graph by the model's
`image_processor` (saved with it), exactly as the Python pipeline does.

Client requests: `rest_request` builds the JSON body of TF Serving's REST
`:predict` (bytes inputs as `{"b64": ...}`), `predict_request` its gRPC
`PredictRequest`, and `rest_to_tensors` decodes a REST body back into a
signature's inputs as the server does.
"""

import base64
import os

import keras
import numpy as np
import tensorflow as tf

from .files import check_folder_path, publish_dir, staging_dir
from .image_processor import decode_image
from .inputs import check_pixel_values

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def seeded_noise(seed, batch, num_patches):
    """The masking noise a `*_with_seed` signature draws for `seed`."""
    seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return tf.random.stateless_uniform((batch, num_patches), seed=seed)


class _Signatures:
    """Builds the endpoint functions for one model."""

    def __init__(self, model, top_k):
        self.model = model
        self.config = model.config
        self.channels_first = model.data_format == "channels_first"
        self.processor = model.image_processor
        self.top_k = top_k

    # ---------------------------------------------------------------- inputs
    def pixel_spec(self):
        c, (h, w) = self.config.num_channels, self.config.image_hw
        shape = (None, c, h, w) if self.channels_first else (None, h, w, c)
        return tf.TensorSpec(shape, tf.float32, name="pixel_values")

    def from_pixels(self, pixel_values):
        """Check the shape in the graph, as TF Serving feeds any shape."""
        spec = self.pixel_spec().shape
        expected = spec[1:].as_list()
        layout = "channels, height, width" if self.channels_first else "height, width, channels"
        message = (
            f"pixel_values must be float32 (batch, {layout}) = (batch, "
            f"{', '.join(map(str, expected))})"
        )
        # TF Serving feeds any shape, but the graph assumes the signature's:
        # forget it, or the checks below are folded away as always true.
        pixel_values = tf.compat.v1.placeholder_with_default(pixel_values, shape=None)
        shape = tf.shape(pixel_values)
        rank_check = tf.debugging.assert_equal(tf.size(shape), 4, message=message)
        with tf.control_dependencies([rank_check]):
            size_check = tf.debugging.assert_equal(shape[-3:], expected, message=message)
        with tf.control_dependencies([size_check]):
            return tf.ensure_shape(tf.identity(pixel_values), spec)

    def to_model_layout(self, images_nhwc):
        return tf.transpose(images_nhwc, (0, 3, 1, 2)) if self.channels_first else images_nhwc

    def from_uint8(self, images):
        channels = self.config.num_channels
        checks = [
            tf.debugging.assert_equal(
                tf.shape(images)[-1],
                channels,
                message=f"images must have {channels} channels (last axis)",
            )
        ]
        with tf.control_dependencies(checks):  # the clear message before any shape error
            images = tf.ensure_shape(tf.identity(images), (None, None, None, channels))
        return self.to_model_layout(self.processor.preprocess(images))

    def from_bytes(self, image_bytes):
        c, (h, w) = self.config.num_channels, self.config.image_hw

        def one(contents):
            return self.processor.preprocess(decode_image(contents, c))

        images = tf.map_fn(
            one, image_bytes, fn_output_signature=tf.TensorSpec((h, w, c), tf.float32)
        )
        return self.to_model_layout(images)

    # --------------------------------------------------------------- outputs
    def features(self, pixel_values, raw=False):
        images = check_pixel_values(pixel_values, self.config, self.model.data_format)
        hidden = self.model.vit(images, unmasked=True).last_hidden_state
        return {
            "cls_features": tf.cast(hidden[:, 0], tf.float32),
            "mean_features": tf.cast(tf.reduce_mean(hidden[:, 1:], axis=1), tf.float32),
        }

    def reconstruct(self, pixel_values, raw=False, noise=None):
        model = self.model
        out = model(pixel_values, noise=noise)
        image = model.reconstruct_image(pixel_values, out.logits, out.mask)
        result = {
            "loss": model.per_example_loss(pixel_values, out.logits, out.mask),
            "reconstruction": out.logits,
            "mask": out.mask,
            "reconstructed_image": image,
        }
        if raw:  # raw-image requests also get a viewable uint8 image
            rgb = tf.transpose(image, (0, 2, 3, 1)) if self.channels_first else image
            result["reconstructed_image_uint8"] = self.processor.denormalize(rgb)
        return result

    def classify(self, pixel_values, raw=False):
        model = self.model
        logits = model(pixel_values)
        probabilities = tf.nn.softmax(logits, axis=-1)
        k = min(self.top_k, model.num_labels)
        top = tf.math.top_k(probabilities, k=k)
        names = [model.id2label.get(i, str(i)) for i in range(model.num_labels)]
        return {
            "logits": logits,
            "probabilities": probabilities,
            "top_k_indices": top.indices,
            "top_k_probabilities": top.values,
            "top_k_labels": tf.gather(tf.constant(names), top.indices),
        }

    # ------------------------------------------------------------ endpoints
    # Factories, not default arguments: tf.function would trace those as inputs.
    @staticmethod
    def _endpoint(compute, convert, raw):
        def endpoint(x):
            return compute(convert(x), raw=raw)

        return endpoint

    def _seeded(self, convert, raw):
        def endpoint(x, seed):
            pixel_values = convert(x)
            noise = seeded_noise(seed, tf.shape(pixel_values)[0], self.config.num_patches)
            return self.reconstruct(pixel_values, raw=raw, noise=noise)

        return endpoint

    def endpoints(self, raw_inputs=True):
        """`{name: (function, input_signature)}` for this model."""
        bytes_spec = tf.TensorSpec((None,), tf.string, name="image_bytes")
        uint8_spec = tf.TensorSpec((None, None, None, None), tf.uint8, name="images")
        seed_spec = tf.TensorSpec((), tf.int64, name="seed")
        inputs = {"": (self.pixel_spec(), self.from_pixels)}
        if raw_inputs:
            inputs.update(
                _image_bytes=(bytes_spec, self.from_bytes), _uint8=(uint8_spec, self.from_uint8)
            )
        heads = {"features": self.features}
        if hasattr(self.model, "decoder"):
            heads["reconstruct"] = self.reconstruct
        if hasattr(self.model, "classifier"):
            heads["classify"] = self.classify
        out = {}
        for head, compute in heads.items():
            for suffix, (spec, convert) in inputs.items():
                name = "serving_default" if (head, suffix) == ("features", "") else head + suffix
                out[name] = (self._endpoint(compute, convert, bool(suffix)), [spec])
                if head == "reconstruct":
                    out[f"reconstruct{suffix}_with_seed"] = (
                        self._seeded(convert, bool(suffix)),
                        [spec, seed_spec],
                    )
        return out


def export_saved_model(model, export_dir, raw_inputs=True, warmup=False, top_k=5, verbose=True):
    """Write `model` as a SavedModel for TensorFlow Serving (see the module docstring).

    Args:
        model: A built `TFViTMAEModel`, `TFViTMAEForPreTraining` or
            `TFViTMAEForImageClassification`.
        export_dir: The SavedModel directory (for TF Serving, `BASE/VERSION`).
            It must not exist yet (or be empty); the export is written to a
            temporary folder beside it and renamed into place, so a failed
            export leaves nothing behind.
        raw_inputs: Also export the `_image_bytes` and `_uint8` signatures.
        warmup: Write `assets.extra/tf_serving_warmup_requests` (needs the
            `tensorflow-serving-api` package).
        top_k: Classes in the `classify` top-k outputs.

    Returns:
        The names of the exported signatures.
    """
    export_dir = os.fspath(export_dir)
    if not getattr(model, "built", False) or not model.weights:
        raise ValueError(
            f"Cannot export {type(model).__name__}: the model is not built (it has no weights yet)"
        )
    if not hasattr(model, "vit"):
        raise ValueError(
            f"export_saved_model exports tfvitmae models, received {type(model).__name__}"
        )
    check_folder_path(os.path.dirname(os.path.abspath(export_dir)))
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        raise FileExistsError(
            f"{export_dir} already exists; TF Serving versions are immutable, so export to a new "
            "version directory"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, received {top_k}")
    if warmup:
        _serving_apis()  # fail before any work if the package is missing
    parent = os.path.dirname(os.path.abspath(export_dir))
    with staging_dir(parent, prefix=".tmp-export-") as staging:
        archive = keras.export.ExportArchive()
        archive.track(model)
        endpoints = _Signatures(model, top_k).endpoints(raw_inputs)
        for name, (fn, signature) in endpoints.items():
            archive.add_endpoint(name=name, fn=fn, input_signature=signature)
        archive.write_out(staging, verbose=verbose)
        if warmup:
            write_warmup_requests(staging, model, list(endpoints))
        publish_dir(staging, export_dir)
    return sorted(endpoints)


def export_for_serving(model, export_base, version=1, **kwargs):
    """`export_saved_model` into `export_base/version`, TF Serving's layout."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, received {version!r}")
    return export_saved_model(model, os.path.join(os.fspath(export_base), str(version)), **kwargs)


def example_inputs(model, signature, batch=1, seed=0):
    """A small valid request for a signature, as `{input name: numpy array}`."""
    rng = np.random.default_rng(seed)
    c, (h, w) = model.config.num_channels, model.config.image_hw
    if signature.endswith("_image_bytes") or "_image_bytes_" in signature:
        images = rng.integers(0, 256, size=(batch, h + 5, w + 3, c), dtype=np.uint8)
        inputs = {
            "image_bytes": np.array([tf.io.encode_png(i).numpy() for i in images], dtype=object)
        }
    elif signature.endswith("_uint8") or "_uint8_" in signature:
        inputs = {"images": rng.integers(0, 256, size=(batch, h + 5, w + 3, c), dtype=np.uint8)}
    else:
        shape = (batch, c, h, w) if model.data_format == "channels_first" else (batch, h, w, c)
        inputs = {"pixel_values": rng.normal(size=shape).astype("float32")}
    if signature.endswith("_with_seed"):
        inputs["seed"] = np.array(seed, dtype=np.int64)
    return inputs


def _serving_apis():
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        raise ImportError(
            "Warm-up records need the tensorflow-serving-api package (pip install "
            "tensorflow-serving-api)"
        ) from None
    return model_pb2, predict_pb2, prediction_log_pb2


def predict_request(signature_name, inputs, model_name="vit_mae"):
    """The gRPC `PredictRequest` a TF Serving client sends (needs `tensorflow-serving-api`).

    Args:
        signature_name: The signature to call, e.g. `"reconstruct_image_bytes"`.
        inputs: `{input name: array}`, e.g. from `example_inputs`.
        model_name: The served model's name (`MODEL_NAME` of `tensorflow_model_server`).
    """
    model_pb2, predict_pb2, _ = _serving_apis()
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def rest_request(signature_name, inputs, row_format=None):
    """The JSON body (a dict) of a TF Serving REST `:predict` request.

    Inputs whose names end in `_bytes` are sent as `{"b64": ...}`, as TF
    Serving's REST API requires for binary strings.

    Args:
        signature_name: The signature to call.
        inputs: `{input name: array}`; arrays carry the batch first, a scalar
            input (such as `seed`) is a 0-d array or a number.
        row_format: `True` for `"instances"` (one entry per example; here
            for a single input only), `False` for the columnar `"inputs"`.
            Default: rows for a single input, columns otherwise.
    """
    if row_format is None:
        row_format = len(inputs) == 1
    if row_format and len(inputs) != 1:
        raise ValueError(
            f"rest_request writes the row format for a single input only, received "
            f"{sorted(inputs)}; use row_format=False"
        )

    def to_json(name, value):
        if name.endswith("_bytes"):  # object, not "S": NumPy's "S" drops trailing zero bytes
            value = np.asarray(value, dtype=object)
            encoded = [{"b64": base64.b64encode(v).decode("ascii")} for v in value.reshape(-1)]
            return np.array(encoded, dtype=object).reshape(value.shape).tolist()
        return np.asarray(value).tolist()

    body = {name: to_json(name, value) for name, value in inputs.items()}
    if row_format:
        return {"signature_name": signature_name, "instances": next(iter(body.values()))}
    return {"signature_name": signature_name, "inputs": body}


def rest_to_tensors(request, signature):
    """Decode a REST `:predict` body as TF Serving does, into `{input name: tf.Tensor}`
    for `signature` (a function of `tf.saved_model.load(path).signatures`)."""

    def decode(value):
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    specs = signature.structured_input_signature[1]
    if "instances" in request:  # row format: one entry per example
        rows = request["instances"]
        if rows and all(isinstance(row, dict) and set(row) != {"b64"} for row in rows):
            inputs = {k: decode([row[k] for row in rows]) for k in rows[0]}  # named inputs
        elif len(specs) == 1:  # bare values: the batch of the only input
            inputs = {next(iter(specs)): decode(rows)}
        else:
            raise ValueError(
                f"Rows without input names need a single-input signature, this one takes "
                f"{sorted(specs)}"
            )
    else:  # columnar format: named inputs
        inputs = {k: decode(v) for k, v in request["inputs"].items()}
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise ValueError(f"The signature takes {sorted(specs)}, received {unknown}")
    return {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}


def write_warmup_requests(saved_model_dir, model, signatures, model_name="vit_mae"):
    """Write one `PredictRequest` per signature to `assets.extra/tf_serving_warmup_requests`."""
    _, _, prediction_log_pb2 = _serving_apis()
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature in signatures:
            request = predict_request(signature, example_inputs(model, signature), model_name)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path
