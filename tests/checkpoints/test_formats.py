"""Checkpoint files: each reader and writer, sharded, legacy and bfloat16
files, and corrupt files that must name themselves."""

import json
import os
import pathlib
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from tfvitmae import TFViTMAEForPreTraining, ViTMAEConfig
from tfvitmae.checkpoints.formats import (
    CheckpointError,
    read_checkpoint,
    read_keras_weights,
    write_safetensors,
    write_torch_bin,
)

from ..helpers import (
    REFERENCE_CONFIG,
    assert_outputs_close,
    hub_style,
    noise_for,
    pixels,
    torch_outputs,
)


def test_safetensors_and_bin_writers_round_trip(tmp_path):
    state = {
        "a.weight": np.arange(6, dtype="float32").reshape(2, 3).T,  # not contiguous
        "b.bias": np.ones(4, "float32"),
    }
    write_safetensors(state, tmp_path / "model.safetensors")
    write_torch_bin(state, tmp_path / "pytorch_model.bin")
    for name in ("model.safetensors", "pytorch_model.bin"):
        back = read_checkpoint(str(tmp_path / name))
        assert sorted(back) == sorted(state), name
        for key, value in state.items():
            np.testing.assert_array_equal(back[key], value, err_msg=f"{name}: {key}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "pytorch_model.bin"]


def test_original_mae_pth_is_unnested(tmp_path):
    state = {"cls_token": torch.zeros(1, 1, 4), "blocks.0.attn.qkv.weight": torch.ones(12, 4)}
    torch.save({"model": state, "epoch": 799}, tmp_path / "mae.pth")
    back = read_checkpoint(str(tmp_path / "mae.pth"))
    assert sorted(back) == sorted(state) and back["blocks.0.attn.qkv.weight"].sum() == 48
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, expected a state dict"):
        read_checkpoint(str(tmp_path / "list.pth"))


def test_unknown_and_missing_files(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="Unknown checkpoint type 'weights.npz'"):
        read_checkpoint(str(tmp_path / "weights.npz"))
    with pytest.raises(CheckpointError, match="No checkpoint file at"):
        read_checkpoint(str(tmp_path / "absent.safetensors"))


def test_read_keras_weights_by_layer_path(tmp_path):
    model = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    model.save_weights(tmp_path / "model.weights.h5")
    layers = read_keras_weights(str(tmp_path / "model.weights.h5"))
    qkv = model.vit.blocks[1].attention.qkv
    arrays = layers["vit/layer_1/attention/qkv"]
    assert len(arrays) == 2
    np.testing.assert_array_equal(arrays[0], qkv.kernel.numpy())
    np.testing.assert_array_equal(arrays[1], qkv.bias.numpy())
    assert sum(len(a) for a in layers.values()) == len(model.weights)


def test_sharded_safetensors(checkpoint, tmp_path):
    _, path = checkpoint()
    state = hub_style(load_file(path / "model.safetensors"))
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    folder = tmp_path / "sharded"
    folder.mkdir()
    for shard, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(folder / shard))
    index = {"metadata": {}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text((path / "config.json").read_text())
    model = TFViTMAEForPreTraining.from_pretrained(folder)
    reference = TFViTMAEForPreTraining.from_pretrained(path)
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def write_legacy_tf_h5(state, path, model_name="tf_vi_tmae_for_pre_training"):
    """A tf_model.h5 as Hugging Face's TF port saved it (Keras 2 h5: a group per
    top-level layer, `weight_names` attributes, Keras layouts)."""
    import re

    import h5py

    groups = {}
    for key, value in state.items():
        name = re.sub(r"encoder\.layer\.(\d+)\.", r"encoder/layer_#_\1/", key)
        name = (
            re.sub(r"decoder_layers\.(\d+)\.", r"decoder_layers#\1/", name)
            .replace(".", "/")
            .replace("#", ".")
        )
        layer = name.rsplit("/", 2)[-2]
        is_norm = "norm" in layer
        if name.endswith("/weight"):
            name = name[: -len("weight")] + ("gamma" if is_norm else "kernel")
            value = (
                value.transpose(2, 3, 1, 0) if value.ndim == 4 else (value if is_norm else value.T)
            )
        elif name.endswith("/bias") and is_norm:
            name = name[: -len("bias")] + "beta"
        groups.setdefault(name.split("/")[0], {})[f"{model_name}/{name}:0"] = value
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in groups]
        for group_name, weights in groups.items():
            group = f.create_group(group_name)
            group.attrs["weight_names"] = [n.encode() for n in weights]
            for name, value in weights.items():
                group.create_dataset(name, data=value)


def test_legacy_tf_h5(checkpoint, tmp_path):
    torch_model, path = checkpoint(norm_pix_loss=True)
    folder = tmp_path / "tf"
    folder.mkdir()
    (folder / "config.json").write_text((path / "config.json").read_text())
    write_legacy_tf_h5(hub_style(load_file(path / "model.safetensors")), folder / "tf_model.h5")
    model, report = TFViTMAEForPreTraining.from_pretrained(folder, output_loading_info=True)
    assert report.format == "tf-legacy" and not report.missing and not report.unexpected
    x, noise = pixels(model.config), noise_for(model.config)
    assert_outputs_close(
        model(x, noise=noise),
        {
            k: v
            for k, v in torch_outputs(torch_model, x, noise).items()
            if k in ("loss", "logits", "mask", "ids_restore")
        },
    )


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin", "tf_model.h5"])
def test_truncated_files_name_the_file(checkpoint, tmp_path, filename):
    _, path = checkpoint()
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text((path / "config.json").read_text())
    data = (path / "model.safetensors").read_bytes()
    (folder / filename).write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=f"Cannot read .*{filename}"):
        TFViTMAEForPreTraining.from_pretrained(folder)


def test_keras_weights_for_another_config(tmp_path):
    TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"model\.weights\.h5 does not fit config\.json: num_hidden_layers = 3 in "
        r"config\.json, 2 in model\.weights\.h5\. Nothing was built",
    ):
        TFViTMAEForPreTraining.from_pretrained(tmp_path)
    # with strict=False the two blocks the file has are loaded
    with pytest.warns(UserWarning, match="Partial load"):
        model, report = TFViTMAEForPreTraining.from_pretrained(
            tmp_path, strict=False, output_loading_info=True
        )
    assert "vit/layer_1/mlp/output/kernel" in report.loaded
    assert all(p.startswith("vit/layer_2/") for p in report.missing) and report.missing


@pytest.mark.parametrize("layout", ["transformers", "mae", "keras"])
def test_a_config_that_cannot_fit_fails_before_the_model_is_built(checkpoint, tmp_path, layout):
    """`num_hidden_layers: 1000000` built a million blocks (minutes) before
    anything looked at the checkpoint; sizes are now compared first."""
    if layout == "keras":
        TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG)).save_pretrained(tmp_path)
        folder = tmp_path
    else:
        _, folder = checkpoint()
        if layout == "mae":  # the original release's names, beside a config.json
            from tfvitmae.checkpoints.state_dicts import to_state_dict

            model = TFViTMAEForPreTraining.from_pretrained(folder)
            save_file(to_state_dict(model, "mae"), folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    fitting, fitting_decoder = config["num_hidden_layers"], config["decoder_num_hidden_layers"]
    config.update(num_hidden_layers=1_000_000, decoder_num_hidden_layers=1_000_000)
    (folder / "config.json").write_text(json.dumps(config))
    name = "model.weights.h5" if layout == "keras" else "model.safetensors"
    with pytest.raises(CheckpointError) as error:
        TFViTMAEForPreTraining.from_pretrained(folder)
    assert str(error.value).startswith(f"{name} does not fit config.json: ")
    assert f"num_hidden_layers = 1000000 in config.json, {fitting} in {name}" in str(error.value)
    assert "decoder_num_hidden_layers = 1000000" in str(error.value)
    if layout != "keras":  # widths and the patch count, from the shapes
        with pytest.raises(CheckpointError) as error:
            TFViTMAEForPreTraining.from_pretrained(
                folder,
                num_hidden_layers=fitting,
                decoder_num_hidden_layers=fitting_decoder,
                hidden_size=48,
                image_size=64,
            )
        message = str(error.value)
        assert "does not fit the config: " in message
        assert f"hidden_size = 48 in the config, {config['hidden_size']} in {name}" in message
        patches = (
            (64 // config["patch_size"]) ** 2,
            (config["image_size"] // config["patch_size"]) ** 2,
        )
        assert f"num_patches = {patches[0]} in the config, {patches[1]} in {name}" in message
        assert "num_hidden_layers" not in message


def test_bfloat16_safetensors(checkpoint, tmp_path):
    from safetensors.torch import save_file as save_torch_file

    torch_model, path = checkpoint()
    folder = tmp_path / "bf16"
    folder.mkdir()
    (folder / "config.json").write_text((path / "config.json").read_text())
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in torch_model.state_dict().items()}
    save_torch_file(state, str(folder / "model.safetensors"))
    model = TFViTMAEForPreTraining.from_pretrained(folder)
    expected = state["vit.layers.0.mlp.fc1.weight"].float().numpy().T
    np.testing.assert_array_equal(model.vit.blocks[0].mlp.intermediate.kernel.numpy(), expected)


def test_shard_listed_in_the_index_but_missing(tmp_path):
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="lists the shard model-00001-of-00002.safetensors"):
        read_checkpoint(str(tmp_path / "model.safetensors.index.json"))


def test_a_bin_with_more_than_tensors_names_itself_and_the_entries(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"encoder.weight": torch.zeros(2), "epoch": 3, "note": "x"}, path)
    with pytest.raises(
        CheckpointError,
        match=r"pytorch_model.bin is not a plain state dict.*"
        r"'epoch' \(int\), 'note' \(str\)",
    ):
        read_checkpoint(str(path))
    torch.save({"model": {"encoder.weight": torch.ones(2)}, "epoch": 3}, path)  # MAE's layout
    np.testing.assert_array_equal(read_checkpoint(str(path))["encoder.weight"], np.ones(2))


def test_a_full_disk_while_writing_safetensors_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    import safetensors.numpy
    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):  # what safetensors 0.8 says on a full tmpfs
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
    path = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as caught:
        write_safetensors({"a": np.zeros(2, np.float32)}, path)
    assert caught.value.errno == 28
    assert str(caught.value) == f"[Errno 28] Could not write {path}: No space left on device"
    assert os.listdir(tmp_path) == []


# ------------------------------------------- shard indexes reach no outside file
def plant_outside_and_inside(root):
    """`root/ck`, a checkpoint folder with inside shards of zeros and links in
    and out, beside `root/outside/model.safetensors`, a shard of sevens that
    no read of `root/ck` may see."""
    (root / "ck" / "sub").mkdir(parents=True)
    (root / "outside").mkdir()
    save_file({"w": np.full(2, 7.0, np.float32)}, str(root / "outside" / "model.safetensors"))
    for name in ("inside.safetensors", "sub/inside.safetensors"):
        save_file({"w": np.zeros(2, np.float32)}, str(root / "ck" / name))
    os.symlink("inside.safetensors", root / "ck" / "link_in")
    os.symlink("../outside/model.safetensors", root / "ck" / "link_out")
    os.symlink(root / "outside" / "model.safetensors", root / "ck" / "abs_link_out")
    os.symlink("loop", root / "ck" / "loop")
    return root / "ck"


def read_index(folder, weight_map):
    """What reading an index of `weight_map` gives: the arrays, or the error text."""
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    try:
        return {k: v.tolist() for k, v in read_checkpoint(str(index)).items()}
    except CheckpointError as e:
        return f"CheckpointError: {e}"


@pytest.mark.parametrize(
    "shard",
    [
        "../outside/model.safetensors",
        "{root}/outside/model.safetensors",  # absolute
        "sub/../../outside/model.safetensors",
        "link_out",
        "abs_link_out",
        "../outside/absent.safetensors",
    ],
)
def test_a_shard_outside_the_folder_is_refused_alike_whether_it_exists(tmp_path, shard):
    folder = plant_outside_and_inside(tmp_path)
    shard = shard.format(root=tmp_path)
    found = read_index(folder, {"w": shard})
    assert found.startswith(
        f"CheckpointError: {folder}/model.safetensors.index.json lists the shard {shard}: "
        f"it leads outside the checkpoint folder {folder}"
    )
    (tmp_path / "outside" / "model.safetensors").unlink()
    assert read_index(folder, {"w": shard}) == found


def test_shards_in_a_subfolder_and_links_inside_the_folder_load(tmp_path):
    folder = plant_outside_and_inside(tmp_path)
    assert read_index(folder, {"w": "sub/inside.safetensors"}) == {"w": [0.0, 0.0]}
    assert read_index(folder, {"w": "link_in"}) == {"w": [0.0, 0.0]}


def test_a_shard_index_of_the_wrong_shape_is_named(tmp_path):
    assert "weight_map must map tensor names to shard files, found a list" in read_index(
        tmp_path, ["model.safetensors"]
    )
    assert "weight_map maps a to 3, expected a shard file name" in read_index(tmp_path, {"a": 3})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": ' + "[" * 200_000 + "]" * 200_000 + "}")  # no RecursionError
    with pytest.raises(CheckpointError, match="Cannot read the shard index: .* nested deeper"):
        read_checkpoint(str(index))


SHARD_PARTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "outside",
        "model.safetensors",
        "inside.safetensors",
        "sub",
        "link_in",
        "link_out",
        "abs_link_out",
        "loop",
        "{root}",
        "a\0b",
    ]
)
HOSTILE_SHARDS = st.one_of(
    st.lists(SHARD_PARTS, min_size=1, max_size=6).map("/".join),
    st.text(max_size=40),
    st.just("x" * 5000),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weight_map=st.dictionaries(st.sampled_from(["w", "v"]), HOSTILE_SHARDS, max_size=2))
def test_hostile_shard_indexes_read_inside_files_or_are_refused_alike(weight_map):
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        folder = plant_outside_and_inside(root)
        weight_map = {
            k: v.replace("{root}", tmp) if isinstance(v, str) else v for k, v in weight_map.items()
        }
        found = read_index(folder, weight_map)
        if isinstance(found, dict):  # read: only zeros, from inside
            assert all(value == [0.0, 0.0] for value in found.values()), found
        (root / "outside" / "model.safetensors").unlink()
        assert read_index(folder, weight_map) == found  # the outside changes nothing
