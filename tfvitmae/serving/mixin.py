"""`ExportMixin`: a model's `export`, importable without TensorFlow (the
exports themselves, in `saved_model.py` and `portable.py`, need it)."""

from typing import Any

from ..utils.backend import tensorflow
from ..utils.types import PathLike

__all__ = ["ExportMixin"]


class ExportMixin:
    """`export`: Keras' `Model.export`, with TF Serving's SavedModel, ONNX,
    LiteRT and keras-hub presets as this package's own formats."""

    def export(
        self,
        filepath: PathLike,
        format: str = "tf_saved_model",
        verbose: bool = True,
        **kwargs: Any,
    ) -> list[str] | None:
        """Export for serving: a SavedModel for TensorFlow Serving (see
        `serving.saved_model`), or an ONNX or LiteRT file (`serving.portable`).

        Args:
            filepath: A new directory (for TF Serving, `BASE/VERSION`; a
                keras-hub preset), or the new `.onnx` / `.tflite` file.
            format: `"tf_saved_model"`, `"onnx"`, `"litert"` or `"keras_hub"`
                (`serving.keras_hub_preset`); other formats (`"openvino"`) go
                to `keras.Model.export`.
            verbose: Print what was written.
            **kwargs: `raw_inputs`, `warmup`, `top_k`, `max_batch` of `export_saved_model`;
                `signature`, `opset`, `quantize`, `calibration_images`,
                `min_cosine`, `min_agreement` of `export_portable`.

        Returns:
            The exported signature names (for keras-hub, the class that loads
            the preset; `None` for Keras' formats, as `keras.Model.export`
            returns nothing).
        """
        if format in ("keras_hub", "keras-hub"):
            from .keras_hub_preset import export_keras_hub

            return [export_keras_hub(self, filepath, verbose=verbose, **kwargs)]
        if format in ("onnx", "litert"):
            tensorflow(f"An {format} export", keras_on_it=True)
            from .portable import export_portable

            return export_portable(self, filepath, format, verbose=verbose, **kwargs)
        if format != "tf_saved_model":
            # keras.Model's, next in the model's method order.
            return super().export(filepath, format=format, verbose=verbose, **kwargs)  # type: ignore[misc]
        tensorflow("A SavedModel export", keras_on_it=True)  # says what is missing, first
        from .saved_model import export_saved_model

        return export_saved_model(self, filepath, verbose=verbose, **kwargs)
