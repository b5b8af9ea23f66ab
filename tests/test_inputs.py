"""Bad input gives a ValueError that says what was expected and what came."""

import numpy as np
import pytest
import tensorflow as tf

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel

from .helpers import noise_for, pixels, tiny_config


@pytest.fixture(scope="module")
def model():
    return TFViTMAEForPreTraining(tiny_config())


@pytest.mark.parametrize(
    "x, pattern",
    [
        (np.zeros((3, 32, 32), "float32"), r"rank 4 \(batch, num_channels, height, width\).* received shape \(3, 32, 32\)"),
        (np.zeros((2, 1, 32, 32), "float32"), r"must have 3 channels .* received 1"),
        (np.zeros((2, 32, 32, 3), "float32"), r"must have 3 channels .* received 32.*data_format='channels_last'"),
        (np.zeros((2, 3, 40, 32), "float32"), r"Input image size 40x32 does not match the model's 32x32"),
        (np.zeros((2, 3, 32, 32), "uint8"), r"must be a float tensor .* received dtype uint8"),
        (np.full((2, 3, 32, 32), np.nan, "float32"), r"NaN or infinite"),
    ],
)
def test_bad_pixel_values(model, x, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(x)


def test_interpolation_needs_multiples_of_patch(model):
    with pytest.raises(ValueError, match=r"multiples of patch_size \(8, 8\), received 36x32"):
        model(np.zeros((1, 3, 36, 32), "float32"), interpolate_pos_encoding=True)


@pytest.mark.parametrize(
    "noise, pattern",
    [
        (np.zeros((2, 15), "float32"), r"noise must have shape \(batch, num_patches\) = \(2, 16\), received \(2, 15\)"),
        (np.zeros((3, 16), "float32"), r"received \(3, 16\)"),
        (np.zeros((2, 16, 1), "float32"), r"received \(2, 16, 1\)"),
        (np.zeros((2, 16), "int32"), r"noise must be a float tensor, received dtype int32"),
    ],
)
def test_bad_noise(model, noise, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(pixels(model.config), noise=noise)


def test_bad_head_mask():
    model = TFViTMAEModel(tiny_config())
    with pytest.raises(ValueError, match=r"head_mask must have shape \(num_heads,\) = \(4,\).* received \(3,\)"):
        model(pixels(model.config), head_mask=np.ones(3, "float32"))


def test_bad_dict_inputs(model):
    with pytest.raises(ValueError, match=r"key 'pixel_values' .* received keys \['image'\]"):
        model({"image": pixels(model.config)})


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="data_format must be one of .* received 'NCHW'"):
        TFViTMAEModel(tiny_config(), data_format="NCHW")
    with pytest.raises(ValueError, match="attn_implementation must be one of .* received 'flash'"):
        TFViTMAEModel(tiny_config(), attn_implementation="flash")
    with pytest.raises(ValueError, match="config must be a ViTMAEConfig or a dict, received str"):
        TFViTMAEModel("facebook/vit-mae-base")


def test_unpatchify_checks_shape(model):
    with pytest.raises(ValueError, match=r"shape \(batch, 16, 192\) for a 32x32 image, received \(2, 15, 192\)"):
        model.unpatchify(np.zeros((2, 15, 192), "float32"))


def test_errors_are_raised_at_trace_time_too(model):
    fn = tf.function(lambda x: model(x))
    with pytest.raises(ValueError, match="must have 3 channels"):
        fn(tf.zeros((2, 2, 32, 32)))
    noise = noise_for(model.config)
    fn2 = tf.function(lambda x: model(x, noise=noise[:, :4]))
    with pytest.raises(ValueError, match="noise must have shape"):
        fn2(tf.zeros((2, 3, 32, 32)))
