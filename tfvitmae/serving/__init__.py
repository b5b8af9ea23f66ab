"""Serving: the SavedModel export for TensorFlow Serving, ONNX and LiteRT
files, keras-hub presets, and the requests TF Serving's clients send.

- `saved_model.py`: `export_saved_model`: signatures for float pixels,
  encoded images and uint8 arrays.
- `portable.py`: `export_portable`: the same computations as ONNX or LiteRT
  files (reconstruction with an explicit `noise` input).
- `keras_hub_preset.py`: `export_keras_hub`: the encoder as a keras-hub
  `ViTBackbone` (or `ViTImageClassifier`) preset.
- `mixin.py`: `ExportMixin`, a model's `export`, free of TensorFlow until called.
- `requests.py`: example inputs, REST bodies, gRPC `PredictRequest`s and
  warm-up records.

Nothing here imports a model class: the export takes the model and calls its
own `unmasked_features`, `reconstruct` and `classify`.
"""

from ..utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ExportMixin": "mixin",
        "export_for_serving": "saved_model",
        "export_saved_model": "saved_model",
        "PORTABLE_FORMATS": "portable",
        "export_portable": "portable",
        "export_keras_hub": "keras_hub_preset",
        "example_inputs": "requests",
        "predict_request": "requests",
        "rest_request": "requests",
        "rest_to_tensors": "requests",
        "write_warmup_requests": "requests",
    },
)
