"""Bad input gives a ValueError that says what was expected and what came."""

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel
from tfvitmae.models.pretrained import (
    check_noise,
    check_pixel_values,
    head_masks,
    unpack_inputs,
)
from tfvitmae.utils.checks import check_data_format

from ..helpers import noise_for, pixels, tiny_config


@pytest.fixture(scope="module")
def model():
    return TFViTMAEForPreTraining(tiny_config())


@pytest.mark.parametrize(
    "x, pattern",
    [
        (
            np.zeros((3, 32, 32), "float32"),
            r"rank 4 \(batch, num_channels, height, width\).* received shape \(3, 32, 32\)",
        ),
        (np.zeros((2, 1, 32, 32), "float32"), r"must have 3 channels .* received 1"),
        (
            np.zeros((2, 32, 32, 3), "float32"),
            r"must have 3 channels .* received 32.*data_format='channels_last'",
        ),
        (
            np.zeros((2, 3, 40, 32), "float32"),
            r"Input image size 40x32 does not match the model's 32x32",
        ),
        (np.zeros((2, 3, 32, 32), "uint8"), r"must be a float tensor .* received dtype uint8"),
        (np.full((2, 3, 32, 32), np.nan, "float32"), r"NaN or infinite"),
    ],
)
def test_bad_pixel_values(model, x, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(x)


def test_check_pixel_values_moves_channels_last():
    config = tiny_config()
    x = pixels(config)
    np.testing.assert_array_equal(check_pixel_values(x, config), np.transpose(x, (0, 2, 3, 1)))
    last = pixels(config, channels_last=True)
    np.testing.assert_array_equal(
        check_pixel_values(last, config, data_format="channels_last"), last
    )
    wide = pixels(config, height=16, width=40)
    assert check_pixel_values(wide, config, interpolate_pos_encoding=True).shape == (2, 16, 40, 3)
    with pytest.raises(ValueError, match="pixel_values is required"):
        check_pixel_values(None, config)


def test_interpolation_needs_multiples_of_patch(model):
    with pytest.raises(ValueError, match=r"multiples of patch_size \(8, 8\), received 36x32"):
        model(np.zeros((1, 3, 36, 32), "float32"), interpolate_pos_encoding=True)


@pytest.mark.parametrize(
    "noise, pattern",
    [
        (
            np.zeros((2, 15), "float32"),
            r"noise must have shape \(batch, num_patches\) = \(2, 16\), received \(2, 15\)",
        ),
        (np.zeros((3, 16), "float32"), r"received \(3, 16\)"),
        (np.zeros((2, 16, 1), "float32"), r"received \(2, 16, 1\)"),
        (np.zeros((2, 16), "int32"), r"noise must be a float tensor, received dtype int32"),
    ],
)
def test_bad_noise(model, noise, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(pixels(model.config), noise=noise)


def test_check_noise_casts_to_float32():
    config = tiny_config()
    images = check_pixel_values(pixels(config), config)
    assert check_noise(None, images, config) is None
    noise = check_noise(noise_for(config).astype("float64"), images, config)
    assert noise.dtype == tf.float32 and noise.shape == (2, 16)


def test_bad_head_mask():
    model = TFViTMAEModel(tiny_config())
    with pytest.raises(
        ValueError, match=r"head_mask must have shape \(num_heads,\) = \(4,\).* received \(3,\)"
    ):
        model(pixels(model.config), head_mask=np.ones(3, "float32"))


def test_head_masks_per_block():
    assert head_masks(None, 2, 4) is None
    shared = head_masks(np.array([1, 0, 1, 1], "float32"), 2, 4)
    assert len(shared) == 2 and all(list(np.asarray(m)) == [1, 0, 1, 1] for m in shared)
    per_layer = np.eye(2, 4, dtype="float32")
    masks = head_masks(per_layer, 2, 4)
    for mask, row in zip(masks, per_layer):
        np.testing.assert_array_equal(mask, row)
    with pytest.raises(
        ValueError, match=r"\(num_layers, num_heads\) = \(2, 4\), received \(4, 2\)"
    ):
        head_masks(np.ones((4, 2), "float32"), 2, 4)


def test_bad_dict_inputs(model):
    with pytest.raises(ValueError, match=r"key 'pixel_values' .* received keys \['image'\]"):
        model({"image": pixels(model.config)})


def test_unpack_inputs():
    x, noise = np.zeros(2), np.ones(2)
    pixel_values, no_noise = unpack_inputs(x)
    assert pixel_values is x and no_noise is None
    pixel_values, from_dict = unpack_inputs({"pixel_values": x, "noise": noise})
    assert pixel_values is x and from_dict is noise
    explicit = np.full(2, 3.0)
    assert unpack_inputs({"pixel_values": x, "noise": noise}, explicit)[1] is explicit
    with pytest.raises(ValueError, match=r"received keys \['noise', 'pixel_values', 'x'\]"):
        unpack_inputs({"pixel_values": x, "noise": noise, "x": x})


def test_check_data_format():
    assert check_data_format("channels_last") == "channels_last"
    with pytest.raises(ValueError, match="data_format must be one of .* received 'NCHW'"):
        check_data_format("NCHW")


def test_errors_are_raised_at_trace_time_too(model):
    fn = tf.function(lambda x: model(x))
    with pytest.raises(ValueError, match="must have 3 channels"):
        fn(tf.zeros((2, 2, 32, 32)))
    noise = noise_for(model.config)
    fn2 = tf.function(lambda x: model(x, noise=noise[:, :4]))
    with pytest.raises(ValueError, match="noise must have shape"):
        fn2(tf.zeros((2, 3, 32, 32)))
