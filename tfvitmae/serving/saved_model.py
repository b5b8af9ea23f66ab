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

Raw inputs: `image_bytes` is a batch of encoded JPEG/PNG/GIF/BMP/WebP strings
(in REST, `{"b64": ...}`), read as `data.decoding.decode_image` reads files;
`images` is uint8 `(batch, height, width, channels)` of any size. Both are
resized and normalised in the graph by the model's `image_processor` (saved
with it), exactly as the Python pipeline does. An image that its header
shows cannot be read (not an image, JPEG XL, over the pixel budget) fails its
request with `INVALID_ARGUMENT` naming it: `image_bytes[3] is not a JPEG, ...`.

Every signature refuses a request of more than `max_batch` images
(`DEFAULT_MAX_BATCH`, 256, unless the export raises it) with
`INVALID_ARGUMENT`: a small request of tiny images must not buy the memory
of a huge batch. TF Serving's own batching (`--enable_batching`) merges
requests into batches of up to its `max_batch_size`; keep that within the cap.

Every signature computes through the model's own methods
(`unmasked_features`, `reconstruct`, `classify`), the ones `predict_images`
uses, so a served model gives what the Python model gives; `*_with_seed`
draws the same masks as `predict_images(..., seed=seed)`. Nothing here
imports a model class: `mixin.ExportMixin` gives a model its `export` method.
Client requests are built in `requests.py`.
"""

import functools
import os
from typing import TYPE_CHECKING, Any

import keras

from ..data import decoding
from ..data.decoding import decode_image, image_pixels, image_problem
from ..utils.backend import tensorflow
from ..utils.files import check_folder_path, publish_dir, staging_dir
from ..utils.types import PathLike
from .requests import check_serving_apis, write_warmup_requests

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("A SavedModel export")

__all__ = ["DEFAULT_MAX_BATCH", "export_for_serving", "export_saved_model"]

# The most images one request may hold, unless an export says otherwise.
DEFAULT_MAX_BATCH = 256


class _Signatures:
    """Builds the endpoint functions for one model."""

    def __init__(self, model, top_k, max_batch):
        self.model = model
        self.config = model.config
        self.channels_first = model.data_format == "channels_first"
        self.processor = model.image_processor
        self.top_k = top_k
        self.max_batch = max_batch

    # ---------------------------------------------------------------- inputs
    def within_cap(self, inputs, name):
        """`inputs` once their batch is checked against `max_batch`."""
        batch = tf.shape(inputs, out_type=tf.int64)[0]
        check = tf.debugging.assert_less_equal(
            batch,
            tf.constant(self.max_batch, tf.int64),
            message=f"{name}: a request holds at most {self.max_batch} images (max_batch of "
            "export_saved_model, or tfvitmae export --max-batch, raises it); received",
        )
        with tf.control_dependencies([check]):
            return tf.identity(inputs)

    def pixel_spec(self):
        return self.model.input_signature["pixel_values"]

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
            pixel_values = self.within_cap(pixel_values, "pixel_values")
            return tf.ensure_shape(pixel_values, spec)

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
        images = self.within_cap(images, "images")
        return self.model.to_model_layout(self.processor.preprocess(images))

    def from_bytes(self, image_bytes):
        """Decoded and preprocessed images. An image whose header already
        says it will fail (not an image, JPEG XL, over the pixel budget) fails
        the request with an error naming it (its index) and why."""
        c, (h, w) = self.config.num_channels, self.config.image_hw
        image_bytes = self.within_cap(image_bytes, "image_bytes")
        count = tf.shape(image_bytes, out_type=tf.int64)[0]
        # From the headers, before any decoding: a graph cannot catch the
        # error of one image, so the failure is found first and named.
        pixels = tf.map_fn(image_pixels, image_bytes, fn_output_signature=tf.int64)
        bad = tf.logical_or(pixels <= 0, pixels > decoding.MAX_IMAGE_PIXELS)
        first = tf.reduce_min(tf.where(bad, tf.range(count), count))
        reason = tf.cond(
            tf.reduce_any(bad),
            lambda: (
                tf.strings.format("image_bytes[{}] ", first) + image_problem(image_bytes[first])
            ),
            lambda: tf.constant(""),
        )
        check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [reason])
        with tf.control_dependencies([check]):
            image_bytes = tf.identity(image_bytes)

        def one(contents):
            return self.processor.preprocess(decode_image(contents, c))

        images = tf.map_fn(
            one, image_bytes, fn_output_signature=tf.TensorSpec((h, w, c), tf.float32)
        )
        return self.model.to_model_layout(images)

    # --------------------------------------------------------------- outputs
    def reconstruct(self, pixel_values, *, raw, seed=None):
        """The model's `reconstruct`; requests with raw images also get a
        viewable uint8 image."""
        out = self.model.reconstruct(pixel_values, seed=seed)
        result = {
            "loss": out["loss"],
            "reconstruction": out["logits"],
            "mask": out["mask"],
            "reconstructed_image": out["reconstructed_image"],
        }
        if raw:
            rgb = self.model.to_channels_last(out["reconstructed_image"])
            result["reconstructed_image_uint8"] = self.processor.denormalize(rgb)
        return result

    # ------------------------------------------------------------ endpoints
    # Factories, not default arguments: tf.function would trace those as inputs.
    @staticmethod
    def _endpoint(compute, convert):
        def endpoint(x):
            return compute(convert(x))

        return endpoint

    def _seeded(self, convert, raw):
        def endpoint(x, seed):
            return self.reconstruct(convert(x), raw=raw, seed=seed)

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
        out = {}
        for suffix, (spec, convert) in inputs.items():
            name = "serving_default" if suffix == "" else f"features{suffix}"
            out[name] = (self._endpoint(self.model.unmasked_features, convert), [spec])
            if hasattr(self.model, "reconstruct"):
                raw = bool(suffix)
                reconstruct = functools.partial(self.reconstruct, raw=raw)
                out[f"reconstruct{suffix}"] = (self._endpoint(reconstruct, convert), [spec])
                out[f"reconstruct{suffix}_with_seed"] = (
                    self._seeded(convert, raw),
                    [spec, seed_spec],
                )
            if hasattr(self.model, "classify"):
                classify = functools.partial(self.model.classify, top_k=self.top_k)
                out[f"classify{suffix}"] = (self._endpoint(classify, convert), [spec])
        return out


def export_saved_model(
    model: keras.Model,
    export_dir: PathLike,
    *,
    raw_inputs: bool = True,
    warmup: bool = False,
    top_k: int = 5,
    max_batch: int = DEFAULT_MAX_BATCH,
    verbose: bool = True,
) -> list[str]:
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
        max_batch: The most images one request may hold (more are refused
            with `INVALID_ARGUMENT`); raise it for large offline batches.

    Returns:
        The names of the exported signatures.
    """
    tensorflow("A SavedModel export", keras_on_it=True)
    export_dir = os.fspath(export_dir)
    if not getattr(model, "built", False) or not model.weights:
        raise ValueError(
            f"Cannot export {type(model).__name__}: the model is not built (it has no weights yet)"
        )
    if not hasattr(model, "unmasked_features"):
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
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, received {max_batch!r}")
    if warmup:
        check_serving_apis()  # fail before any work if the package is missing
    parent = os.path.dirname(os.path.abspath(export_dir))
    with staging_dir(parent, prefix=".tmp-export-") as staging:
        archive = keras.export.ExportArchive()
        # No `archive.track(model)`: add_endpoint tracks the variables the
        # endpoints use, and tracking the model as well stores every weight
        # twice (keras-team/keras#23553): twice the size, and twice the
        # memory in TF Serving.
        endpoints = _Signatures(model, top_k, max_batch).endpoints(raw_inputs)
        for name, (fn, signature) in endpoints.items():
            archive.add_endpoint(name=name, fn=fn, input_signature=signature)
        archive.write_out(staging, verbose=verbose)
        if warmup:
            write_warmup_requests(staging, model, list(endpoints))
        publish_dir(staging, export_dir)
    return sorted(endpoints)


def export_for_serving(
    model: keras.Model, export_base: PathLike, version: int = 1, **kwargs: Any
) -> list[str]:
    """`export_saved_model` into `export_base/version`, TF Serving's layout."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, received {version!r}")
    return export_saved_model(model, os.path.join(os.fspath(export_base), str(version)), **kwargs)
