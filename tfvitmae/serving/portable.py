"""ONNX and LiteRT exports: the SavedModel's computations for other runtimes.

`export_portable(model, path, format)` (also `model.export(path,
format="onnx" | "litert")`) writes one file whose functions compute through
the model's own methods, as the SavedModel's signatures do:

- `features` (every model): `pixel_values` -> `cls_features`, `mean_features`
  `(batch, hidden_size)`, the unmasked encoder's (`unmasked_features`).
- `classify` (classifiers): `pixel_values` -> `logits`, `probabilities`.
- `reconstruct` (pretraining models): `pixel_values` and `noise` `(batch,
  num_patches)`, the masking noise (a runtime has no generator of ours) ->
  `loss` (per image), `reconstruction` (predicted patches), `mask`,
  `reconstructed_image` (model layout, visible patches from the input).

Each also comes as `<name>_uint8`, taking `images`: uint8 `(batch, height,
width, channels)` at the model's image size, normalised in the graph by the
model's image processor (resize to that size before; an antialiased resize is
no ONNX or LiteRT op). Every input has a dynamic batch dimension.

ONNX holds one function per file: `signature` picks it (by default the
model's own: `classify`, `reconstruct` or `features`). A LiteRT file holds
all of them as signatures (or the one named). The graphs are converted
from TensorFlow: `tf2onnx` (`pip install "tfvitmae[onnx]"`) and TensorFlow's
LiteRT converter, builtin ops only, so the plain LiteRT interpreter
(`pip install "tfvitmae[litert]"`, `ai_edge_litert`) runs them.

`quantize="int8"` writes an int8 file for CPU serving; inputs and outputs stay
float32 (and uint8 for `images`), as the float file's, so a client sends the
same requests and gets features on the same scale:

- ONNX, without `calibration_images`: dynamic quantization (int8 weights,
  activations quantized per batch at run time; onnxruntime's
  `quantize_dynamic`). With them: static QDQ quantization of the `MatMul`,
  `Gemm` and `Conv` ops, activation ranges calibrated on those images
  (`quantize_static`); LayerNorm, softmax and GELU stay float.
- LiteRT: full-integer post-training quantization (int8 weights and
  activations, int8 builtin ops only), calibrated on `calibration_images`,
  which it needs; the graph quantizes its float inputs and dequantizes its
  outputs.

Before anything is written the int8 file runs in its runtime against the
float model on the calibration images (or, for ONNX without them, 8 seeded
random images): the lowest per-image cosine similarity of every output with
more than one value an image (features, logits, reconstructions), and for
`logits` the fraction of images whose top-1 class agrees. Below `min_cosine`
or `min_agreement` (0.99 each) the export is refused with the numbers.
"""

import os
import tempfile
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

from ..utils.backend import tensorflow
from ..utils.files import atomic_write, check_folder_path
from ..utils.types import PathLike

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf
else:
    tf = tensorflow("An ONNX or LiteRT export")

__all__ = ["PORTABLE_FORMATS", "QUANTIZATIONS", "export_portable", "portable_signatures"]

PORTABLE_FORMATS = ("onnx", "litert")
QUANTIZATIONS = ("int8",)
# Images of the accuracy check when an ONNX int8 export is given none.
_CHECK_IMAGES = 8
# What each format needs beyond TensorFlow: the import, and the extra that installs it.
_NEEDS = {"onnx": ("tf2onnx", "onnx"), "litert": ("ai_edge_litert", "litert")}


def portable_signatures(model: Any) -> dict[str, tuple[Callable, list]]:
    """`{name: (function, input specs)}` of `model`, in the order described above."""
    config = model.config
    (height, width), channels = config.image_hw, config.num_channels
    pixel_spec = model.input_signature["pixel_values"]
    uint8_spec = tf.TensorSpec((None, height, width, channels), tf.uint8, name="images")
    noise_spec = tf.TensorSpec((None, config.num_patches), tf.float32, name="noise")

    def from_uint8(images):
        return model.to_model_layout(model.image_processor.normalize(images))

    computations: dict[str, tuple[Callable, list]] = {
        "features": (lambda x: model.unmasked_features(x), [])
    }
    if hasattr(model, "classify"):

        def classify(x):
            out = model.classify(x, top_k=1)
            return {"logits": out["logits"], "probabilities": out["probabilities"]}

        computations["classify"] = (classify, [])
    if hasattr(model, "reconstruct"):

        def reconstruct(x, noise):
            out = model.reconstruct(x, noise=noise)
            return {
                "loss": out["loss"],
                "reconstruction": out["logits"],
                "mask": out["mask"],
                "reconstructed_image": out["reconstructed_image"],
            }

        computations["reconstruct"] = (reconstruct, [noise_spec])
    signatures = {}
    for name, (compute, extra_specs) in computations.items():
        signatures[name] = (compute, [pixel_spec, *extra_specs])
        signatures[f"{name}_uint8"] = (
            _after(from_uint8, compute),
            [uint8_spec, *extra_specs],
        )
    return signatures


def _after(convert: Callable, compute: Callable) -> Callable:
    def function(x, *rest):
        return compute(convert(x), *rest)

    return function


def default_signature(model: Any) -> str:
    """The model's own function: `classify`, `reconstruct` or `features`."""
    if hasattr(model, "classify"):
        return "classify"
    return "reconstruct" if hasattr(model, "reconstruct") else "features"


def export_portable(
    model: Any,
    filepath: PathLike,
    format: str,
    *,
    signature: str | None = None,
    opset: int = 17,
    quantize: str | None = None,
    calibration_images: Any = None,
    min_cosine: float = 0.99,
    min_agreement: float = 0.99,
    verbose: bool = True,
) -> list[str]:
    """Write `model` as an ONNX or LiteRT file (see the module docstring).

    Args:
        model: A built tfvitmae model, on Keras' TensorFlow backend.
        filepath: The file to write; it must not exist. It is written to a
            temporary name and moved into place, so a failed export leaves nothing.
        format: `"onnx"` or `"litert"`.
        signature: The function to export (ONNX: one; LiteRT: by default all).
        opset: The ONNX opset.
        quantize: `None` (float32) or `"int8"` (see the module docstring).
        calibration_images: For `quantize="int8"`: a folder of images, a list
            of image files, a uint8 `(n, H, W[, C])` array (any size; resized
            by the model's image processor), or a float array of
            `pixel_values` as the model takes them. Needed for LiteRT; for
            ONNX they make the quantization static.
        min_cosine: The lowest per-image cosine similarity to the float
            model that an int8 export accepts.
        min_agreement: The lowest top-1 agreement with the float model that
            an int8 classifier export accepts.
        verbose: Print what was written (and the int8 file's agreement).

    Returns:
        The names of the exported functions.
    """
    if format not in PORTABLE_FORMATS:
        raise ValueError(f"format must be one of {PORTABLE_FORMATS}, received {format!r}")
    _check_quantize(format, quantize, calibration_images, min_cosine, min_agreement)
    tensorflow(f"An {format} export", keras_on_it=True)
    module, extra = _NEEDS[format]
    try:
        __import__(module)
    except ImportError:
        raise ImportError(
            f"An {format} export needs the {module} package, which is not installed here "
            f'(pip install "tfvitmae[{extra}]")'
        ) from None
    signatures = portable_signatures(model)
    if signature is not None and signature not in signatures:
        raise ValueError(
            f"signature must be one of {sorted(signatures)} for {type(model).__name__}, "
            f"received {signature!r}"
        )
    filepath = os.fspath(filepath)
    check_folder_path(os.path.dirname(os.path.abspath(filepath)))
    if os.path.exists(filepath):
        raise FileExistsError(f"{filepath} already exists; export to a new file")
    if format == "onnx":
        names = [signature or default_signature(model)]
    else:
        names = [signature] if signature else list(signatures)
    chosen = {name: signatures[name] for name in names}
    calibrated = quantize is not None and calibration_images is not None
    if quantize:
        images = _calibration_uint8(model, calibration_images)
        requests = {name: _requests(model, name, images) for name in names}
    if format == "onnx":
        data = _onnx_bytes(*chosen[names[0]], opset=opset)
        if quantize:
            data = _onnx_int8(data, requests[names[0]] if calibrated else None)
    else:
        data = _litert_bytes(chosen, quantize, requests if calibrated else None)
    if quantize:
        measured = _check_int8(
            format, data, chosen, requests, calibrated, min_cosine, min_agreement
        )
    atomic_write(filepath, lambda path: open(path, "wb").write(data))
    if verbose:
        kind = f"{format} {quantize}" if quantize else format
        print(f"Wrote {filepath} ({kind}, {len(data) / 2**20:.1f} MiB): {', '.join(names)}")
        if quantize:
            print(f"int8 {measured}")
    return names


def _check_quantize(
    format: str,
    quantize: str | None,
    images: Any,
    min_cosine: float,
    min_agreement: float,
) -> None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize: expected 'int8' or None, received {quantize!r}")
    if quantize is None and images is not None:
        raise ValueError("calibration_images applies to quantize='int8', received quantize=None")
    for name, value in (("min_cosine", min_cosine), ("min_agreement", min_agreement)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}: expected a number in [0, 1], received {value!r}")


def _calibration_uint8(model: Any, images: Any) -> "np.ndarray":
    """uint8 `(n, height, width, channels)` images at the model's size, as the
    `_uint8` functions take them (their `pixel_values` are these normalised)."""
    import numpy as np

    from ..data.decoding import load_images
    from ..data.folders import list_image_files

    processor, config = model.image_processor, model.config
    if images is None:  # the accuracy check's stand-in
        shape = (_CHECK_IMAGES, *config.image_hw, config.num_channels)
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    if isinstance(images, np.ndarray) and np.issubdtype(images.dtype, np.floating):
        expected = tuple(model.input_signature["pixel_values"].shape[1:])
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"calibration_images: expected float pixel_values of shape (n, *{expected}), "
                f"received {images.shape}"
            )
        return processor.denormalize(model.to_channels_last(images)).numpy()
    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        images = list_image_files(images)[0]
    resized = [
        processor.resize(image, config.image_hw)
        for image in load_images(images, config.num_channels)
    ]
    return np.stack([tf.cast(image, tf.uint8).numpy() for image in resized])


def _requests(model: Any, name: str, images: "np.ndarray") -> dict:
    """The inputs of function `name` for `images`: those, or their
    `pixel_values`, and for `reconstruct` seeded noise."""
    import numpy as np

    if name.endswith("_uint8"):
        inputs = {"images": images}
    else:
        pixels = model.to_model_layout(model.image_processor.normalize(images))
        inputs = {"pixel_values": np.asarray(pixels)}
    if name.startswith("reconstruct"):
        noise = np.random.default_rng(0).random((len(images), model.config.num_patches))
        inputs["noise"] = noise.astype("float32")
    return inputs


def _check_int8(
    format: str,
    data: bytes,
    signatures: dict[str, tuple[Callable, list]],
    requests: dict,
    calibrated: bool,
    min_cosine: float,
    min_agreement: float,
) -> str:
    """Run the int8 file in its runtime against the float model's functions
    on `requests`, and refuse it below the thresholds; what was measured.

    Cosine: the lowest per-image cosine similarity of every output with more
    than one value an image but the classifier's (features, reconstructions).
    Agreement: the top-1 agreement of `logits`, on the user's images only (on
    random images a class is noise); a classifier without them is warned about.
    """
    import numpy as np

    cosines, agreements = [], []
    for name, (compute, specs) in signatures.items():
        inputs = requests[name]
        expected = compute(*(inputs[spec.name] for spec in specs))
        got = _run_file(format, data, name, inputs)
        for key, value in expected.items():
            want = np.asarray(value).reshape(len(value), -1)
            have = np.asarray(got[key]).reshape(len(want), -1)
            if key == "logits":
                agreements.append(want.argmax(1) == have.argmax(1))
            elif key != "probabilities" and want.shape[1] > 1:
                norms = np.linalg.norm(want, axis=1) * np.linalg.norm(have, axis=1)
                cosines.append(np.sum(want * have, axis=1) / np.maximum(norms, 1e-12))
    count = len(next(iter(next(iter(requests.values())).values())))
    found, failed = [], False
    if cosines:
        cosine = float(np.min(np.concatenate(cosines)))
        found.append(f"cosine similarity to float32 {cosine:.4f} (the lowest of {count} images)")
        failed = cosine < min_cosine
    if agreements and calibrated:
        agreement = float(np.mean(np.concatenate(agreements)))
        found.append(f"top-1 agreement {agreement:.1%} on {count} images")
        failed = failed or agreement < min_agreement
    elif agreements:
        warnings.warn(
            "The int8 classifier's top-1 agreement with float32 was not measured: pass "
            "calibration_images (images like those it will classify) to measure it",
            stacklevel=3,
        )
    measured = "; ".join(found) or "nothing measured"
    if failed:
        raise ValueError(
            f"The int8 {format} export is too far from the float32 model: {measured}; "
            f"expected cosine >= {min_cosine} and agreement >= {min_agreement:.1%} "
            "(min_cosine, min_agreement accept less). Nothing was written."
        )
    return measured


def _run_file(format: str, data: bytes, name: str, inputs: dict) -> dict:
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(None, inputs)))
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=data).get_signature_runner(name)(**inputs)


def _one_by_one(inputs: dict) -> list[dict]:
    """The requests of one image each in `inputs`, as the calibrators take them."""
    count = len(next(iter(inputs.values())))
    return [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(count)]


def _onnx_int8(data: bytes, calibration: dict | None) -> bytes:
    """Dynamic quantization, or static QDQ calibrated on `calibration`'s
    images one at a time (see the module docstring)."""
    from onnxruntime import quantization as q

    with tempfile.TemporaryDirectory() as folder:
        source, target = os.path.join(folder, "float.onnx"), os.path.join(folder, "int8.onnx")
        with open(source, "wb") as out:
            out.write(data)
        if calibration is None:
            q.quantize_dynamic(source, target, weight_type=q.QuantType.QInt8)
        else:
            requests = iter(_one_by_one(calibration))

            class Reader(q.CalibrationDataReader):
                def get_next(self) -> dict | None:
                    return next(requests, None)

            q.quantize_static(
                source,
                target,
                Reader(),
                quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            )
        with open(target, "rb") as f:
            return f.read()


def _onnx_bytes(compute: Callable, specs: list, *, opset: int) -> bytes:
    import tf2onnx

    function = tf.function(compute, input_signature=specs, autograph=False)
    proto, _ = tf2onnx.convert.from_function(
        function,
        input_signature=specs,
        opset=opset,
        custom_op_handlers={"Erfc": (_erfc_as_erf, [])},
    )
    for value in [*proto.graph.input, *proto.graph.output]:  # name the dynamic batch axis
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    return proto.SerializeToString()


def _erfc_as_erf(ctx: Any, node: Any, name: str, args: list) -> None:
    """TensorFlow's exact GELU computes `erfc`, which ONNX lacks: `1 - erf(x)`
    (PyTorch's GELU kernel is written with `erf` too)."""
    import numpy as np
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    node.type = "Erf"
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype)).output[0]
    ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=utils.make_name(f"{name}_erfc"), inputs=[one, node.output[0]]
    )


def _litert_bytes(
    signatures: dict[str, tuple[Callable, list]],
    quantize: str | None = None,
    calibration: dict | None = None,
) -> bytes:
    """Convert through a SavedModel, the converter's way to named signatures;
    int8: dynamic range, or full-integer with `calibration` (`{name: inputs}`)
    as representative data."""
    archive = keras.export.ExportArchive()  # it tracks what the endpoints use
    for name, (compute, specs) in signatures.items():
        archive.add_endpoint(name=name, fn=compute, input_signature=specs)
    with tempfile.TemporaryDirectory() as folder:
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            folder, signature_keys=list(signatures)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if calibration is not None:

            def representative():
                for name, inputs in calibration.items():
                    for request in _one_by_one(inputs):
                        yield name, request

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()
