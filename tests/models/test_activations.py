import re
from math import erf, sqrt

import numpy as np
import pytest

from tfvitmae.models.layers import ACTIVATIONS, get_activation

from ..helpers import max_diff


def test_gelu_is_exact_and_gelu_new_is_the_tanh_form():
    x = np.linspace(-4, 4, 101).astype("float32")
    exact = np.array([0.5 * v * (1 + erf(v / sqrt(2))) for v in x])
    assert max_diff(get_activation("gelu")(x), exact) < 1e-6
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert max_diff(get_activation("gelu_new")(x), tanh_form) < 1e-6
    assert max_diff(get_activation("gelu")(x), tanh_form) > 1e-4  # the two forms really differ


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_gelu_is_the_exact_gelu_rounded_once(dtype):
    # Computed in float32 and cast back (TensorFlow's bfloat16 Erfc is slow
    # and rounds every step): each output is the exact GELU of the 16-bit
    # input, rounded once to 16 bits.
    import keras
    import ml_dtypes

    x = np.linspace(-6, 6, 2001).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    out = get_activation("gelu")(x)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    exact = np.array([0.5 * v * (1 + erf(v / sqrt(2))) for v in x.astype("float64")])
    np.testing.assert_array_equal(np.asarray(out), exact.astype(np.float32).astype(x.dtype))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_name_matches_transformers(name):
    import torch
    from transformers.activations import ACT2FN

    x = np.linspace(-6, 6, 201).astype("float32")
    expected = ACT2FN[name](torch.from_numpy(x)).numpy()
    assert max_diff(get_activation(name)(x), expected) < 1e-6


@pytest.mark.parametrize("name", ["nope", None, ["gelu"]])
def test_unknown_names_are_rejected(name):
    with pytest.raises(
        ValueError, match=f"hidden_act must be one of .* received {re.escape(repr(name))}"
    ):
        get_activation(name)
