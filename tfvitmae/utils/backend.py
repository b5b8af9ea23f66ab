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

__all__ = [
    "import_tensorflow_quietly",
    "in_multi_worker_strategy",
    "is_tf_dataset",
    "keras_backend",
    "tensorflow",
]


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
    # Already imported: no import machinery, which AutoGraph would try (and
    # fail, with a warning) to convert when this runs inside a traced function.
    tf = sys.modules.get("tensorflow")
    if tf is None:
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


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (if installed and not yet imported) with what its
    native libraries write straight to the process' stderr at start-up (absl's
    "All log messages before absl::InitializeLog()", the CUDA-driver search
    and its errors on a machine without a GPU) held back, and its Python
    logger set to errors only. If the import fails, what was held back is shown."""
    import importlib.util
    import tempfile

    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            tf = importlib.import_module("tensorflow")
            tf.config.list_physical_devices()  # the device search and its messages, now
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    tf.get_logger().setLevel("ERROR")


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
