"""Checkpoint cross-loading, checked against transformers' PyTorch ViTMAE.

Needs torch and transformers (the test extra): the reference models are built
here with random weights and saved to disk like a user's checkpoints.
"""

import json

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel, ViTMAEConfig
from tfvitmae.weights import BLOCK_TABLE, MODEL_TABLE, CheckpointError, keras_variables, weight_table

from .helpers import (
    REFERENCE_CONFIG,
    assert_outputs_close,
    max_diff,
    noise_for,
    pixels,
    torch_outputs,
    torch_reference_model,
)

PARITY_CASES = {
    "default-like": dict(),
    "norm-pix-loss": dict(norm_pix_loss=True),
    "one-channel": dict(num_channels=1),
    "no-qkv-bias": dict(qkv_bias=False),
    "patch-4-image-24": dict(patch_size=4, image_size=24),
    "gelu-new": dict(hidden_act="gelu_new"),
    "relu": dict(hidden_act="relu"),
    "quick-gelu-eps-1e-6": dict(hidden_act="quick_gelu", layer_norm_eps=1e-6, mask_ratio=0.5),
}


def hub_style(state):
    """transformers 4 (and Hub) names: transformers 5 saves decoder blocks elsewhere."""
    return {k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v for k, v in state.items()}


@pytest.fixture
def checkpoint(tmp_path):
    """(torch model, directory) of a saved transformers ViTMAEForPreTraining."""
    def make(**overrides):
        model = torch_reference_model(**overrides)
        model.save_pretrained(tmp_path / "hf")
        return model, tmp_path / "hf"

    return make


@pytest.mark.parametrize("overrides", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_parity_with_transformers(checkpoint, overrides):
    torch_model, path = checkpoint(**overrides)
    config = ViTMAEConfig.from_pretrained(path)
    x, noise = pixels(config, batch=2, seed=3), noise_for(config, batch=2, seed=4)
    reference = torch_outputs(torch_model, x, noise)
    model = TFViTMAEForPreTraining.from_pretrained(path)
    for implementation in ("sdpa", "eager"):
        model.attn_implementation = implementation
        ours = model(x, noise=noise, output_hidden_states=True, output_attentions=True)
        assert_outputs_close(ours, reference)
        fused = model(x, noise=noise, output_hidden_states=True)  # the fused path when no attentions are asked
        assert abs(float(fused.loss) - float(reference["loss"])) < 1e-5
        assert max_diff(fused.logits, reference["logits"]) < 1e-5

    # The encoder alone against transformers' ViTMAEModel from the same checkpoint.
    torch_encoder = transformers.ViTMAEModel.from_pretrained(path, attn_implementation="eager").eval()
    with pytest.warns(UserWarning, match="Ignored .* parts this model does not have"):
        encoder = TFViTMAEModel.from_pretrained(path)
    assert_outputs_close(encoder(x, noise=noise, output_hidden_states=True, output_attentions=True),
                         torch_outputs(torch_encoder, x, noise))


@pytest.mark.parametrize("height, width", [(48, 24), (24, 40)])
def test_parity_with_interpolated_position_encoding(checkpoint, height, width):
    torch_model, path = checkpoint(norm_pix_loss=True)
    config = ViTMAEConfig.from_pretrained(path)
    x = pixels(config, height=height, width=width)
    noise = noise_for(config, height=height, width=width)
    reference = torch_outputs(torch_model, x, noise, interpolate_pos_encoding=True)
    model = TFViTMAEForPreTraining.from_pretrained(path)
    assert_outputs_close(model(x, noise=noise, interpolate_pos_encoding=True, output_hidden_states=True,
                               output_attentions=True), reference)


def test_round_trip_keras_to_transformers(tmp_path):
    config = ViTMAEConfig(**{**REFERENCE_CONFIG, "norm_pix_loss": True, "qkv_bias": False})
    model = TFViTMAEForPreTraining(config)
    model.save_pretrained(tmp_path, pytorch=True)
    torch_model, info = transformers.ViTMAEForPreTraining.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager"
    )
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    x, noise = pixels(config), noise_for(config)
    reference = torch_outputs(torch_model.eval(), x, noise)
    assert_outputs_close(model(x, noise=noise, output_hidden_states=True, output_attentions=True), reference)
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["architectures"] == ["ViTMAEForPreTraining"]


def test_encoder_round_trip_to_transformers_vitmae_model(tmp_path):
    encoder = TFViTMAEModel(ViTMAEConfig(**REFERENCE_CONFIG))
    encoder.save_pretrained(tmp_path, pytorch=True, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    torch_model, info = transformers.ViTMAEModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    x, noise = pixels(encoder.config), noise_for(encoder.config)
    with torch.no_grad():
        expected = torch_model.eval()(torch.from_numpy(x), noise=torch.from_numpy(noise)).last_hidden_state
    assert max_diff(encoder(x, noise=noise).last_hidden_state, expected.numpy()) < 1e-5


def test_hub_names_bin_and_v5_state_dict(checkpoint, tmp_path):
    torch_model, path = checkpoint()
    x, noise = pixels(ViTMAEConfig(**REFERENCE_CONFIG)), noise_for(ViTMAEConfig(**REFERENCE_CONFIG))
    expected = torch_model(torch.from_numpy(x), noise=torch.from_numpy(noise)).logits.detach().numpy()
    state = hub_style(load_file(path / "model.safetensors"))
    cases = {
        "hub-safetensors": ("model.safetensors", lambda p: save_file(state, p)),
        "hub-bin": ("pytorch_model.bin", lambda p: torch.save({k: torch.from_numpy(v) for k, v in state.items()}, p)),
        "v5-state-dict": ("pytorch_model.bin", lambda p: torch.save(torch_model.state_dict(), p)),
    }
    for name, (filename, write) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((path / "config.json").read_text())
        write(str(folder / filename))
        model, report = TFViTMAEForPreTraining.from_pretrained(folder, output_loading_info=True, from_pt=True)
        assert not report.missing and not report.unexpected, name
        assert max_diff(model(x, noise=noise).logits, expected) < 1e-5, name


def test_sharded_safetensors(checkpoint, tmp_path):
    torch_model, path = checkpoint()
    state = hub_style(load_file(path / "model.safetensors"))
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
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


def mae_state_dict(torch_model):
    """An original-MAE state dict from a transformers model, renamed by hand:
    fused qkv rows (q | k | v), timm-style block names, no prefixes."""
    config = torch_model.config
    hf = {k: v.numpy() for k, v in torch_model.state_dict().items()}  # transformers 5 in-memory names
    out = {
        "cls_token": hf["vit.embeddings.cls_token"],
        "pos_embed": hf["vit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf["vit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["vit.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf["vit.layernorm.weight"],
        "norm.bias": hf["vit.layernorm.bias"],
        "mask_token": hf["decoder.mask_token"],
        "decoder_pos_embed": hf["decoder.decoder_pos_embed"],
    }
    for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
        for kind in ("weight", "bias"):
            out[f"{name}.{kind}"] = hf[f"decoder.{name}.{kind}"]
    renames = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.o_proj": "attn.proj",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    stacks = (("vit.layers", "blocks", config.num_hidden_layers),
              ("decoder.decoder_layers", "decoder_blocks", config.decoder_num_hidden_layers))
    for source, target, depth in stacks:
        for i in range(depth):
            for kind in ("weight", "bias"):
                out[f"{target}.{i}.attn.qkv.{kind}"] = np.concatenate(
                    [hf[f"{source}.{i}.attention.{p}_proj.{kind}"] for p in "qkv"], axis=0
                )
                for hf_name, mae_name in renames.items():
                    out[f"{target}.{i}.{mae_name}.{kind}"] = hf[f"{source}.{i}.{hf_name}.{kind}"]
    return out


def test_original_mae_checkpoint(tmp_path):
    torch_model = torch_reference_model(layer_norm_eps=1e-6, norm_pix_loss=False)
    state = mae_state_dict(torch_model)
    path = tmp_path / "mae_visualize_vit_tiny.pth"
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path)
    # Head counts are not in the weights: give them (the published sizes are inferred).
    model, report = TFViTMAEForPreTraining.from_pretrained(
        path, num_attention_heads=4, decoder_num_attention_heads=2, output_loading_info=True
    )
    assert report.format == "mae" and not report.missing and not report.unexpected
    assert model.config.layer_norm_eps == 1e-6 and model.config.num_hidden_layers == 2
    assert model.config.image_size == 32 and model.config.patch_size == 8
    x, noise = pixels(model.config), noise_for(model.config)
    assert_outputs_close(model(x, noise=noise, output_hidden_states=True, output_attentions=True),
                         torch_outputs(torch_model, x, noise))


def test_original_mae_encoder_only_pretrain_checkpoint(tmp_path):
    torch_model = torch_reference_model(layer_norm_eps=1e-6)
    state = {k: v for k, v in mae_state_dict(torch_model).items() if not k.startswith(("decoder", "mask_token"))}
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path)
    encoder = TFViTMAEModel.from_pretrained(path, num_attention_heads=4)
    x, noise = pixels(encoder.config), noise_for(encoder.config)
    expected = torch_outputs(torch_model, x, noise)["hidden_states"][-1]
    assert max_diff(encoder(x, noise=noise, output_hidden_states=True).hidden_states[-1], expected) < 1e-5
    with pytest.warns(UserWarning, match="has no decoder; it keeps its initialisation"):
        TFViTMAEForPreTraining.from_pretrained(path, num_attention_heads=4)


def write_legacy_tf_h5(state, path, model_name="tf_vi_tmae_for_pre_training"):
    """A tf_model.h5 as Hugging Face's TF port saved it (Keras 2 h5: a group per
    top-level layer, `weight_names` attributes, Keras layouts)."""
    import re

    import h5py

    groups = {}
    for key, value in state.items():
        name = re.sub(r"encoder\.layer\.(\d+)\.", r"encoder/layer_#_\1/", key)
        name = re.sub(r"decoder_layers\.(\d+)\.", r"decoder_layers#\1/", name).replace(".", "/").replace("#", ".")
        layer = name.rsplit("/", 2)[-2]
        is_norm = "norm" in layer
        if name.endswith("/weight"):
            name = name[: -len("weight")] + ("gamma" if is_norm else "kernel")
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else (value if is_norm else value.T)
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
    assert_outputs_close(model(x, noise=noise), {k: v for k, v in torch_outputs(torch_model, x, noise).items()
                                                 if k in ("loss", "logits", "mask", "ids_restore")})


def test_keras_format_round_trip_and_cross_class(tmp_path):
    config = ViTMAEConfig(**REFERENCE_CONFIG)
    model = TFViTMAEForPreTraining(config)
    written = model.save_pretrained(tmp_path)
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == ["config.json", "model.weights.h5"]
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.warns(UserWarning, match="Ignored .* parts this model does not have"):
        encoder = TFViTMAEModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(encoder.vit.layernorm.gamma.numpy(), model.vit.layernorm.gamma.numpy())
    encoder.save_pretrained(tmp_path / "enc")
    with pytest.warns(UserWarning, match="has no decoder"):
        TFViTMAEForPreTraining.from_pretrained(tmp_path / "enc")
    # Saving another format over a directory removes the stale weights that would shadow it.
    model.save_pretrained(tmp_path, pytorch=True)
    assert not (tmp_path / "model.weights.h5").exists() and (tmp_path / "model.safetensors").exists()


def test_table_covers_every_variable_once():
    for cls, qkv_bias in ((TFViTMAEForPreTraining, True), (TFViTMAEModel, False)):
        model = cls(ViTMAEConfig(**REFERENCE_CONFIG, qkv_bias=qkv_bias))
        variables = keras_variables(model)
        assert len(variables) == len(model.weights)
        for fmt in ("transformers", "transformers-v5", "mae", "tf-legacy", "keras"):
            entries = weight_table(model.config, fmt, parts=("vit", "decoder") if cls is TFViTMAEForPreTraining else ("vit",))
            paths = [e.keras_path for e in entries]
            assert sorted(paths) == sorted(variables), fmt
            names = [n for e in entries for n in e.names]
            assert len(names) == len(set(names)), fmt
    assert len(BLOCK_TABLE) == 12 and len(MODEL_TABLE) == 14


# ------------------------------------------------------------- bad input
def test_mismatched_config_names_key_and_shapes_and_loads_nothing(checkpoint):
    _, path = checkpoint()
    model = TFViTMAEForPreTraining(ViTMAEConfig(**{**REFERENCE_CONFIG, "intermediate_size": 40}))
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(CheckpointError, match=r"(?s)model\.safetensors.*nothing was loaded.*shape mismatch: "
                                              r"vit\.encoder\.layer\.0\.intermediate\.dense\.weight expected "
                                              r"\(40, 32\), found \(37, 32\)"):
        model.load_pretrained_weights(path)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, model.weights))


def test_layer_count_mismatch_and_strict_false(checkpoint):
    _, path = checkpoint()
    with pytest.raises(CheckpointError, match=r"unexpected: vit\.encoder\.layer\.1\."):
        TFViTMAEForPreTraining.from_pretrained(path, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match=r"missing: vit/layer_2/"):
        TFViTMAEForPreTraining.from_pretrained(path, num_hidden_layers=3)
    with pytest.warns(UserWarning, match="Partial load"):
        model, report = TFViTMAEForPreTraining.from_pretrained(
            path, num_hidden_layers=3, strict=False, output_loading_info=True
        )
    assert any(p.startswith("vit/layer_2/") for p in report.missing) and "vit/layer_1/mlp/output/kernel" in report.loaded


def test_unmapped_keys_are_an_error_unless_not_strict(checkpoint, tmp_path):
    _, path = checkpoint()
    state = load_file(path / "model.safetensors")
    state["vit.extra_projection.weight"] = np.zeros((2, 2), "float32")
    folder = tmp_path / "extra"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"(?s)model\.safetensors.*unexpected: vit\.extra_projection\.weight"):
        TFViTMAEForPreTraining.from_pretrained(folder)
    with pytest.warns(UserWarning, match="vit.extra_projection.weight"):
        _, report = TFViTMAEForPreTraining.from_pretrained(folder, strict=False, output_loading_info=True)
    assert report.unexpected == ["vit.extra_projection.weight"] and not report.missing


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


def test_missing_paths_and_empty_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="No file or directory at './nowhere'"):
        TFViTMAEForPreTraining.from_pretrained("./nowhere")
    (tmp_path / "config.json").write_text(ViTMAEConfig(**REFERENCE_CONFIG).to_json_string())
    with pytest.raises(CheckpointError, match=r"No weights in the directory .* expected one of model\.weights\.h5, "
                                              r".* found \['config.json'\]"):
        TFViTMAEForPreTraining.from_pretrained(tmp_path)


def test_weights_without_config(checkpoint, tmp_path):
    _, path = checkpoint()
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="No config.json beside .*pass config="):
        TFViTMAEForPreTraining.from_pretrained(tmp_path / "model.safetensors")
    model = TFViTMAEForPreTraining.from_pretrained(tmp_path / "model.safetensors",
                                                   config=ViTMAEConfig.from_pretrained(path))
    assert model.config.hidden_size == 32


def test_keras_weights_for_another_config(tmp_path):
    TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Cannot read .*model.weights.h5 as TFViTMAEForPreTraining weights"):
        TFViTMAEForPreTraining.from_pretrained(tmp_path)


def test_failed_save_leaves_directory_untouched(tmp_path, monkeypatch):
    model = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    import tfvitmae.hub

    monkeypatch.setattr(tfvitmae.hub, "write_safetensors", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path, pytorch=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


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
