"""What a TF Serving client sends: example inputs for a signature, the REST
`:predict` body, the gRPC `PredictRequest`, and warm-up records.

`rest_request` builds the JSON body of TF Serving's REST `:predict` (bytes
inputs as `{"b64": ...}`), `predict_request` its gRPC `PredictRequest`,
and `rest_to_tensors` decodes a REST body back into a signature's inputs as
the server does. The gRPC messages need the `tensorflow-serving-api` package.
"""

import base64
import os
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils.backend import tensorflow
from ..utils.types import PathLike, TensorLike

if TYPE_CHECKING:
    import tensorflow as tf
else:
    tf = tensorflow("Building serving requests")

if TYPE_CHECKING:  # an optional package (tensorflow-serving-api)
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

__all__ = [
    "WARMUP_FILE",
    "example_inputs",
    "predict_request",
    "rest_request",
    "rest_to_tensors",
    "write_warmup_requests",
]

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def example_inputs(
    model: Any, signature: str, batch: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
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


def check_serving_apis() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        raise ImportError(
            "Warm-up records need the tensorflow-serving-api package (pip install "
            "tensorflow-serving-api)"
        ) from None
    return model_pb2, predict_pb2, prediction_log_pb2


def predict_request(
    signature_name: str, inputs: Mapping[str, TensorLike], model_name: str = "vit_mae"
) -> "PredictRequest":
    """The gRPC `PredictRequest` a TF Serving client sends (needs `tensorflow-serving-api`).

    Args:
        signature_name: The signature to call, e.g. `"reconstruct_image_bytes"`.
        inputs: `{input name: array}`, e.g. from `example_inputs`.
        model_name: The served model's name (`MODEL_NAME` of `tensorflow_model_server`).
    """
    model_pb2, predict_pb2, _ = check_serving_apis()
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def rest_request(
    signature_name: str, inputs: Mapping[str, TensorLike], row_format: bool | None = None
) -> dict[str, Any]:
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

    def to_json(name: str, value: TensorLike) -> Any:
        if name.endswith("_bytes"):  # object, not "S": NumPy's "S" drops trailing zero bytes
            value = np.asarray(value, dtype=object)
            encoded = [{"b64": base64.b64encode(v).decode("ascii")} for v in value.reshape(-1)]
            return np.array(encoded, dtype=object).reshape(value.shape).tolist()
        return np.asarray(value).tolist()

    body = {name: to_json(name, value) for name, value in inputs.items()}
    if row_format:
        return {"signature_name": signature_name, "instances": next(iter(body.values()))}
    return {"signature_name": signature_name, "inputs": body}


def rest_to_tensors(request: Mapping[str, Any], signature: Any) -> dict[str, tf.Tensor]:
    """Decode a REST `:predict` body as TF Serving does, into `{input name: tf.Tensor}`
    for `signature` (a function of `tf.saved_model.load(path).signatures`)."""

    def decode(value: Any) -> Any:
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


def write_warmup_requests(
    saved_model_dir: PathLike, model: Any, signatures: Iterable[str], model_name: str = "vit_mae"
) -> str:
    """Write one `PredictRequest` per signature to `assets.extra/tf_serving_warmup_requests`."""
    _, _, prediction_log_pb2 = check_serving_apis()
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
