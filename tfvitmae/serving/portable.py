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
"""

import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

from ..utils.backend import tensorflow
from ..utils.files import atomic_write, check_folder_path
from ..utils.types import PathLike

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("An ONNX or LiteRT export")

__all__ = ["PORTABLE_FORMATS", "export_portable", "portable_signatures"]

PORTABLE_FORMATS = ("onnx", "litert")
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
        verbose: Print what was written.

    Returns:
        The names of the exported functions.
    """
    if format not in PORTABLE_FORMATS:
        raise ValueError(f"format must be one of {PORTABLE_FORMATS}, received {format!r}")
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
        data = _onnx_bytes(*signatures[names[0]], opset=opset)
    else:
        names = [signature] if signature else list(signatures)
        data = _litert_bytes({name: signatures[name] for name in names})
    atomic_write(filepath, lambda path: open(path, "wb").write(data))
    if verbose:
        print(f"Wrote {filepath} ({format}, {len(data) / 2**20:.1f} MiB): {', '.join(names)}")
    return names


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


def _litert_bytes(signatures: dict[str, tuple[Callable, list]]) -> bytes:
    """Convert through a SavedModel, the converter's way to named signatures."""
    archive = keras.export.ExportArchive()  # it tracks what the endpoints use
    for name, (compute, specs) in signatures.items():
        archive.add_endpoint(name=name, fn=compute, input_signature=specs)
    with tempfile.TemporaryDirectory() as folder:
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            folder, signature_keys=list(signatures)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()
