"""The shared harness must catch the faults it is there for: each broken
layer below passes everything but one check, which must fail."""

import keras
import numpy as np
import pytest
from keras import ops

from .harness import run_layer_test


@keras.saving.register_keras_serializable(package="tfvitmae_tests")
class Scale(keras.layers.Layer):
    """A correct layer: `x * w * factor` with a seeded dropout."""

    def __init__(self, factor=2.0, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.factor, self.rate, self.seed = factor, rate, seed
        self.dropout = keras.layers.Dropout(rate, seed=seed)

    def build(self, input_shape=None):
        self.w = self.add_weight(shape=(4,), initializer="random_normal", name="w")

    def call(self, x, training=False):
        return self.dropout(x * self.w * self.factor, training=training)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfvitmae_tests")
class ForgetsAnArgument(Scale):
    def get_config(self):
        config = super().get_config()
        del config["factor"]
        return config


@keras.saving.register_keras_serializable(package="tfvitmae_tests")
class HiddenState(Scale):
    """Its output depends on a random number that no config or weight carries."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.offset = float(np.random.default_rng().random()) + 1.0

    def call(self, x, training=False):
        return super().call(x, training) + self.offset


@keras.saving.register_keras_serializable(package="tfvitmae_tests")
class IgnoresItsSeed(Scale):
    def call(self, x, training=False):
        out = x * self.w * self.factor
        if training:
            out = out * ops.cast(keras.random.uniform(ops.shape(out)) > 0.5, out.dtype)
        return out


@keras.saving.register_keras_serializable(package="tfvitmae_tests")
class Random(Scale):
    """Differs between two calls with the same inputs."""

    def call(self, x, training=False):
        return x * self.w * keras.random.uniform(())


INPUT = np.ones((3, 4), "float32")
INIT = dict(factor=3.0, rate=0.5, seed=1)


def test_a_correct_layer_passes():
    layer = run_layer_test(
        Scale,
        INIT,
        INPUT,
        (3, 4),
        random_call_kwargs=dict(training=True),
        expected_num_trainable_weights=1,
    )
    assert isinstance(layer, Scale)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (ForgetsAnArgument, {}, "lacks the argument 'factor'"),
        (HiddenState, {}, "after load_model"),
        (IgnoresItsSeed, dict(random_call_kwargs=dict(training=True)), "seeded random draws"),
        (Random, {}, "a second call"),
        (Scale, dict(expected_num_trainable_weights=2), None),
    ],
    ids=["config", "save", "seed", "determinism", "weights"],
)
def test_faults_are_caught(cls, kwargs, message):
    with pytest.raises(AssertionError, match=message):
        run_layer_test(cls, INIT, INPUT, (3, 4), **kwargs)


def test_wrong_output_shape_is_caught():
    with pytest.raises(AssertionError):
        run_layer_test(Scale, INIT, INPUT, (3, 5))
    with pytest.raises(AssertionError):
        run_layer_test(Scale, INIT, INPUT, [(3, 4), None])
