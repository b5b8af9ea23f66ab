"""`ExportMixin`: a model's `export`, importable without TensorFlow (the
export itself, in `saved_model.py`, needs it)."""

from typing import Any

from ..utils.backend import tensorflow
from ..utils.types import PathLike

__all__ = ["ExportMixin"]


class ExportMixin:
    """`export`: Keras' `Model.export`, with TF Serving's SavedModel as this
    package's own format."""

    def export(
        self,
        filepath: PathLike,
        format: str = "tf_saved_model",
        verbose: bool = True,
        **kwargs: Any,
    ) -> list[str] | None:
        """Export a SavedModel for TensorFlow Serving (see `serving.saved_model`).

        Args:
            filepath: A new directory (for TF Serving, `BASE/VERSION`).
            format: `"tf_saved_model"`; other formats go to `keras.Model.export`.
            verbose: Print the signatures.
            **kwargs: `raw_inputs`, `warmup`, `top_k` of `export_saved_model`.

        Returns:
            The exported signature names (`None` for the other formats, as
            `keras.Model.export` returns nothing).
        """
        if format != "tf_saved_model":
            # keras.Model's, next in the model's method order.
            return super().export(filepath, format=format, verbose=verbose, **kwargs)  # type: ignore[misc]
        tensorflow("A SavedModel export", keras_on_it=True)  # says what is missing, first
        from .saved_model import export_saved_model

        return export_saved_model(self, filepath, verbose=verbose, **kwargs)
