"""Keras' distribution API: `DataParallel` and `ModelParallel` with
`get_layout_map` (`tfvitmae/models/sharding.py`) on 4 virtual CPU devices.

The runs happen in one JAX process (`tests/sharded_run.py`), so this process
keeps TensorFlow and its single device; the tests here judge its report and
files. The layout map's own checks run here.
"""

import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from safetensors.numpy import load_file

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel
from tfvitmae.models.layers import QKVProjection

from ..harness import run_layer_test
from ..helpers import ROOT, tiny_config

# Weights after two SGD steps, compared element-wise. The runs take the same
# mean gradient over the same 8 images, but a sharded run adds it up in
# another order (per device, then across devices) in float32: a few units in
# the last place of weights up to about 1 (one unit there is 1.2e-7). The
# steps move weights by up to 4e-3, so a gradient summed but not averaged
# over devices, or a missing device's share, is thousands of times larger.
WEIGHT_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("sharded")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.sharded_run", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_a_data_parallel_step_equals_the_one_device_step(sharded_run):
    _, report = sharded_run
    assert report["backend"] == "jax" and report["devices"] == 4
    found = report["data_parallel"]
    assert found["replicated"]  # every weight on every device
    one_device, replicas = found["loss"]
    assert replicas == pytest.approx(one_device, rel=1e-6)
    assert found["max_weight_diff"] < WEIGHT_TOLERANCE
    assert found["max_update"] > 1000 * WEIGHT_TOLERANCE  # the steps moved the weights


@pytest.mark.slow
def test_a_2x2_model_parallel_step_equals_one_device_with_blocks_sharded_by_heads(sharded_run):
    _, report = sharded_run
    found = report["model_parallel"]
    one_device, sharded = found["loss"]
    assert sharded == pytest.approx(one_device, rel=1e-6)  # the forward pass
    assert found["max_weight_diff"] < WEIGHT_TOLERANCE  # the backward pass and the update
    config = tiny_config()
    for stack, hidden, heads, inner in (
        ("vit", config.hidden_size, config.num_attention_heads, config.intermediate_size),
        ("decoder", config.decoder_hidden_size, 4, config.decoder_intermediate_size),
    ):
        kernels = found["kernels"]
        head_dim = hidden // heads
        # Each device: whole heads' query, key and value columns ...
        assert kernels[f"{stack}/attention/qkv/kernel"] == dict(
            spec=[None, None, "model", None],
            shape=[hidden, 3, heads, head_dim],
            device_shape=[hidden, 3, heads // 2, head_dim],
        )
        # ... the output projection's rows that read them, and half the MLP.
        assert kernels[f"{stack}/attention/output/kernel"] == dict(
            spec=["model", None], shape=[hidden, hidden], device_shape=[hidden // 2, hidden]
        )
        assert kernels[f"{stack}/mlp/intermediate/kernel"] == dict(
            spec=[None, "model"], shape=[hidden, inner], device_shape=[hidden, inner // 2]
        )
        assert kernels[f"{stack}/mlp/output/kernel"] == dict(
            spec=["model", None], shape=[inner, hidden], device_shape=[inner // 2, hidden]
        )


def h5_datasets(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: (
                found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return found


@pytest.mark.slow
def test_a_model_parallel_run_saves_the_files_of_a_one_device_run(sharded_run):
    out, _ = sharded_run
    for read, one_device, sharded in (
        (h5_datasets, "one_device.weights.h5", "model_parallel.weights.h5"),
        (load_file, "one_device/model.safetensors", "model_parallel/model.safetensors"),
    ):
        expected, found = read(out / one_device), read(out / sharded)
        assert sorted(found) == sorted(expected)
        for name, array in found.items():
            assert array.shape == expected[name].shape, name
            np.testing.assert_allclose(array, expected[name], atol=WEIGHT_TOLERANCE, err_msg=name)
    # The query/key/value kernels: the matrices [q | k | v], as every file holds them.
    kernels = h5_datasets(out / "model_parallel.weights.h5")
    assert {a.shape for k, a in kernels.items() if "qkv/vars/0" in k} == {(32, 96), (16, 48)}


@pytest.mark.slow
def test_a_model_parallel_run_loads_on_one_device_and_on_a_mesh_of_another_shape(sharded_run):
    out, report = sharded_run
    loads = report["loads"]
    for where in ("one_device", "1x4"):  # Keras' load_weights, from_pretrained of both layouts
        assert loads[where]["keras"] == loads[where]["keras_folder"] == 0, where
        assert loads[where]["pytorch"] == 0, where
    assert loads["one_device"]["logits"] < 1e-5  # what the one-device run's model computes
    qkv = loads["1x4"]["kernels"]["vit/attention/qkv/kernel"]
    assert qkv["spec"] == [None, None, "model", None] and qkv["device_shape"][2] == 1
    # ... and here, on TensorFlow, too.
    model = TFViTMAEForPreTraining.from_pretrained(out / "model_parallel")
    assert model.vit.blocks[0].attention.qkv.kernel.shape == (32, 96)


def mesh(shape, names=("batch", "model")):
    devices = [f"cpu:{i}" for i in range(int(np.prod(shape)))]
    return keras.distribution.DeviceMesh(shape, list(names), devices=devices)


def test_the_layout_map_refuses_a_model_axis_that_does_not_divide_a_block():
    config = tiny_config()  # encoder: 4 heads, 48 MLP units; decoder: 2 heads, 24 units
    layout_map = TFViTMAEForPreTraining.get_layout_map(mesh((2, 2)), config=config)
    assert len(layout_map) == 4
    with pytest.raises(ValueError) as error:
        TFViTMAEForPreTraining.get_layout_map(mesh((1, 4)), config=config)
    assert str(error.value) == (
        "decoder/layer_*/attention: its 2 heads cannot be split evenly over the 'model' axis "
        "of size 4 of the device mesh of shape (1, 4) and axes ('batch', 'model'); use a model "
        "axis that divides 2"
    )
    # An encoder alone has no decoder to split.
    TFViTMAEModel.get_layout_map(mesh((1, 4)), config=config)
    with pytest.raises(ValueError, match=r"vit/layer_\*/mlp: its 46 MLP hidden units .* size 4"):
        TFViTMAEModel.get_layout_map(mesh((1, 4)), config=tiny_config(intermediate_size=46))
    with pytest.raises(ValueError, match=r"vit/layer_\*/attention: its 4 heads .* size 3"):
        TFViTMAEModel.get_layout_map(mesh((1, 3)), config=config.to_dict())


def test_the_layout_map_checks_its_mesh_and_axis_names():
    with pytest.raises(ValueError, match="must be a keras.distribution.DeviceMesh, received tuple"):
        TFViTMAEForPreTraining.get_layout_map((2, 2))
    with pytest.raises(
        ValueError,
        match=r"model_parallel_dim_name must be an axis of the device mesh, one of "
        r"\('data', 'model'\), received 'heads'",
    ):
        TFViTMAEForPreTraining.get_layout_map(mesh((2, 2), ("data", "model")), "heads", "data")
    with pytest.raises(ValueError, match=r"data_parallel_dim_name .* received 'batch'"):
        TFViTMAEForPreTraining.get_layout_map(mesh((2, 2), ("data", "model")))


def test_the_qkv_projection_is_a_dense_matrix_on_one_device():
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(
        QKVProjection,
        dict(
            hidden_size=8,
            num_heads=2,
            kernel_initializer=keras.initializers.serialize(keras.initializers.Orthogonal(seed=1)),
        ),
        x,
        expected_output_shape=(2, 5, 3, 2, 4),
        expected_num_trainable_weights=2,
    )
    layer = QKVProjection(8, 2)
    out = layer(x)
    assert layer.kernel.shape == (8, 24) and not layer.by_heads
    dense = x @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(out, dense.reshape(2, 5, 3, 2, 4), atol=1e-6)
    with pytest.raises(ValueError, match=r"the file's kernel has shape \(8, 8\), expected the "):
        layer.load_own_variables({"0": np.zeros((8, 8)), "1": np.zeros(24)})
    with pytest.raises(ValueError, match="expects 2 variables .* but the file holds 1"):
        layer.load_own_variables({"0": np.zeros((8, 24))})
