"""The activation table: Hugging Face `hidden_act` names and their functions.

Pure Python at import time (Keras is imported when a function first runs), so
`ViTMAEConfig` can validate names without loading TensorFlow.
"""

import math
from collections.abc import Callable
from types import ModuleType

from ..utils.types import TensorLike

__all__ = ["ACTIVATIONS", "get_activation"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _ops() -> ModuleType:
    from keras import ops

    return ops


def gelu(x: TensorLike) -> TensorLike:
    """The exact erf GELU: Hugging Face's (and PyTorch's) `"gelu"`.

    Keras' `gelu` defaults to the tanh approximation, hence `approximate=False`.
    """
    return _ops().gelu(x, approximate=False)


def gelu_tanh(x: TensorLike) -> TensorLike:
    """The tanh approximation of GELU (`"gelu_new"` and its aliases)."""
    ops = _ops()
    return 0.5 * x * (1.0 + ops.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * ops.power(x, 3))))


def quick_gelu(x: TensorLike) -> TensorLike:
    """`x * sigmoid(1.702 x)`."""
    return x * _ops().sigmoid(1.702 * x)


def relu(x: TensorLike) -> TensorLike:
    return _ops().relu(x)


def silu(x: TensorLike) -> TensorLike:
    return _ops().silu(x)


def tanh(x: TensorLike) -> TensorLike:
    return _ops().tanh(x)


def sigmoid(x: TensorLike) -> TensorLike:
    return _ops().sigmoid(x)


# Hugging Face name -> function.
ACTIVATIONS: dict[str, Callable[[TensorLike], TensorLike]] = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "quick_gelu": quick_gelu,
    "relu": relu,
    "silu": silu,
    "swish": silu,
    "tanh": tanh,
    "sigmoid": sigmoid,
}


def get_activation(name: str) -> Callable[[TensorLike], TensorLike]:
    """The function for a Hugging Face `hidden_act` name."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"hidden_act must be one of {sorted(ACTIVATIONS)}, received {name!r}"
        ) from None
