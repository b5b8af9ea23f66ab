"""The active Keras backend, and TensorFlow for the features that need it.

The models, checkpoints and training run on every Keras 3 backend
(`KERAS_BACKEND=tensorflow`, the default, `jax` or `torch`). The `tf.data`
pipeline, image decoding, SavedModel export and the multi-worker loop are
TensorFlow's own: they import it through `tensorflow()`, which says in one
sentence what is missing instead of failing deep inside.
"""

import importlib
import os
import sys
from types import ModuleType

__all__ = ["in_multi_worker_strategy", "is_tf_dataset", "keras_backend", "tensorflow"]


def keras_backend() -> str:
    """The Keras backend in use: `"tensorflow"`, `"jax"` or `"torch"`."""
    import keras

    return keras.backend.backend()


def tensorflow(feature: str, *, keras_on_it: bool = False) -> ModuleType:
    """The `tensorflow` module, for `feature` (named in the errors).

    Raises:
        ImportError: TensorFlow is not installed.
        RuntimeError: `keras_on_it` and Keras runs on another backend (a
            SavedModel of a Keras model needs Keras on TensorFlow).
    """
    try:
        tf = importlib.import_module("tensorflow")
    except ImportError:
        raise ImportError(
            f"{feature} needs TensorFlow, which is not installed here "
            "(pip install tensorflow); the models themselves run without it"
        ) from None
    if keras_on_it and keras_backend() != "tensorflow":
        raise RuntimeError(
            f"{feature} needs Keras on TensorFlow, but it runs on {keras_backend()} "
            f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND', keras_backend())}); "
            "run it in a process started with KERAS_BACKEND=tensorflow"
        )
    return tf


def in_multi_worker_strategy() -> bool:
    """Whether a `tf.distribute.MultiWorkerMirroredStrategy` is in scope
    (where Keras 3 `fit` cannot go); never on another backend."""
    if keras_backend() != "tensorflow":
        return False
    tf = tensorflow("A distribution strategy")
    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


def is_tf_dataset(data: object) -> bool:
    """Whether `data` is a `tf.data.Dataset` (without importing TensorFlow for
    data that cannot be one)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)
