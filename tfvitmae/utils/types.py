"""Type aliases for the annotations of the public API."""

import os
from typing import Any

__all__ = ["PathLike", "TensorLike"]

# A tensor of the active Keras backend, a NumPy array, or nested lists of numbers.
# (TensorFlow ships no type stubs that mypy can follow, so this stays `Any`.)
TensorLike = Any
# A file-system path, as `os.fspath` accepts it.
PathLike = str | os.PathLike
