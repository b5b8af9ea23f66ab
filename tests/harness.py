"""The shared checks every tfvitmae Keras layer and model must pass, in the
spirit of keras-hub's `TestCase.run_layer_test` / `run_model_test`.

- `run_layer_test`: build, call, output shapes, `get_config()` holding every
  `__init__` argument, `from_config` and Keras (de)serialisation round trips,
  a `.keras` save and `keras.saving.load_model` giving identical outputs, and
  (for seeded random layers) the same random draws from a config clone.
- `run_model_test`: the same for models, which must also have every weight
  without a call, and whose `save_weights` / `load_weights` must round trip.

Call them with deterministic call arguments (fixed `noise` for masking,
`training=False`), so outputs can be compared exactly.
"""

import os
import tempfile
from collections.abc import Mapping

import keras
import numpy as np


def plain(value):
    """A comparable form of a config value: configs as dicts, tuples as lists."""
    if hasattr(value, "to_dict"):
        return plain(value.to_dict())
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def leaves(output, prefix="output"):
    """`[(path, array or None)]` of a (nested) layer or model output."""
    if output is None:
        return [(prefix, None)]
    if isinstance(output, Mapping):
        items = output.items()
    elif isinstance(output, (list, tuple)):
        items = enumerate(output)
    else:
        return [(prefix, np.asarray(output))]
    return [leaf for key, value in items for leaf in leaves(value, f"{prefix}[{key!r}]")]


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


def shape_leaves(expected, prefix="output"):
    """`[(path, shape or None)]` of an expected-shape structure: a shape tuple,
    or a dict / list of them (None where the output is None)."""
    if expected is None:
        return [(prefix, None)]
    if _is_shape(expected):
        return [(prefix, tuple(expected))]
    items = expected.items() if isinstance(expected, Mapping) else enumerate(expected)
    return [leaf for key, value in items for leaf in shape_leaves(value, f"{prefix}[{key!r}]")]


def assert_same_outputs(actual, expected, what="outputs"):
    """Two outputs have the same structure and exactly equal values."""
    a, e = leaves(actual), leaves(expected)
    assert [p for p, _ in a] == [p for p, _ in e], f"{what}: structures differ"
    for (path, x), (_, y) in zip(a, e):
        if y is None:
            assert x is None, f"{what}: {path} should be None"
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}: {path}")


def assert_output_shapes(output, expected_output_shape):
    actual = [(p, None if v is None else tuple(v.shape)) for p, v in leaves(output)]
    assert actual == shape_leaves(expected_output_shape), actual


def assert_config_round_trip(obj, init_kwargs):
    """`get_config()` holds every `__init__` argument with its value, and
    `from_config` and Keras (de)serialisation rebuild an equal object."""
    cls = type(obj)
    config = obj.get_config()
    for name, value in init_kwargs.items():
        assert name in config, f"{cls.__name__}.get_config() lacks the argument {name!r}"
        assert plain(config[name]) == plain(value), (name, config[name], value)
    clone = cls.from_config(config)
    assert type(clone) is cls
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is cls and restored.get_config() == config
    return config


def _call(obj, input_data, call_kwargs):
    args = input_data if isinstance(input_data, tuple) else (input_data,)
    return obj(*args, **(call_kwargs or {}))


def _weights_by_path(obj):
    return {w.path: np.asarray(w.numpy()) for w in obj.weights}


def _assert_save_round_trip(obj, input_data, call_kwargs, output):
    """A `.keras` file loads as the same class, config, weights and outputs."""
    cls = type(obj)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "object.keras")
        keras.saving.save_model(obj, path)
        loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    assert loaded.get_config() == obj.get_config()
    ours, theirs = _weights_by_path(obj), _weights_by_path(loaded)
    assert sorted(theirs) == sorted(ours)
    for name, value in ours.items():
        np.testing.assert_array_equal(theirs[name], value, err_msg=name)
    assert_same_outputs(_call(loaded, input_data, call_kwargs), output, "after load_model")
    return loaded


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    call_kwargs=None,
    random_call_kwargs=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
):
    """Check a registered layer end to end; returns the built layer.

    Args:
        cls: The layer class.
        init_kwargs: Its constructor arguments.
        input_data: The first call argument, or a tuple of positional ones.
        expected_output_shape: A shape tuple, or a dict / list of them
            matching the output's structure (None where the output is None).
        call_kwargs: Deterministic call keyword arguments.
        random_call_kwargs: Call keyword arguments under which the layer draws
            random numbers (e.g. `training=True`); with a `seed`, a layer built
            from its config must then draw the same numbers.
        expected_num_trainable_weights, expected_num_non_trainable_weights:
            Checked when given.
    """
    layer = cls(**init_kwargs)
    config = assert_config_round_trip(layer, init_kwargs)
    output = _call(layer, input_data, call_kwargs)
    assert layer.built
    assert layer.get_config() == config, "get_config() changed when the layer was built"
    assert_output_shapes(output, expected_output_shape)
    assert_same_outputs(_call(layer, input_data, call_kwargs), output, "a second call")
    if expected_num_trainable_weights is not None:
        paths = [w.path for w in layer.trainable_weights]
        assert len(paths) == expected_num_trainable_weights, paths
    if expected_num_non_trainable_weights is not None:
        paths = [w.path for w in layer.non_trainable_weights]
        assert len(paths) == expected_num_non_trainable_weights, paths
    _assert_save_round_trip(layer, input_data, call_kwargs, output)
    if random_call_kwargs is not None:
        assert init_kwargs.get("seed") is not None, "random_call_kwargs needs a seeded layer"
        first, clone = cls(**init_kwargs), cls.from_config(config)
        _call(first, input_data, call_kwargs)  # build both, then share the weights
        _call(clone, input_data, call_kwargs)
        clone.set_weights(first.get_weights())
        random_kwargs = {**(call_kwargs or {}), **random_call_kwargs}
        assert_same_outputs(
            _call(clone, input_data, random_kwargs),
            _call(first, input_data, random_kwargs),
            "seeded random draws of a config clone",
        )
    return layer


def run_model_test(cls, init_kwargs, input_data, call_kwargs=None, expected_output_shape=None):
    """Check a model end to end; returns `(model, loaded)`.

    Beyond `run_layer_test`: every weight exists right after construction,
    and `save_weights` / `load_weights` carry them into a model built from
    the config (whose own random weights give other outputs before).
    """
    model = cls(**init_kwargs)
    assert model.built and model.count_params() > 0, "weights must exist without a call"
    config = assert_config_round_trip(model, init_kwargs)
    output = _call(model, input_data, call_kwargs)
    assert model.get_config() == config
    if expected_output_shape is not None:
        assert_output_shapes(output, expected_output_shape)
    assert_same_outputs(_call(model, input_data, call_kwargs), output, "a second call")
    loaded = _assert_save_round_trip(model, input_data, call_kwargs, output)

    fresh = cls.from_config(config)
    differs = any(
        y is not None and not np.array_equal(x, y)
        for (_, x), (_, y) in zip(leaves(_call(fresh, input_data, call_kwargs)), leaves(output))
    )
    assert differs, "a freshly initialised model gave the same outputs"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.weights.h5")
        model.save_weights(path)
        fresh.load_weights(path)
    assert_same_outputs(_call(fresh, input_data, call_kwargs), output, "after load_weights")
    return model, loaded
