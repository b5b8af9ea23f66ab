"""The weight-name table and loading by it, checked against transformers'
PyTorch ViTMAE: checkpoints built here with random weights and saved to disk
like a user's, the original MAE release's layout, and the committed
reference outputs in tests/fixtures/tiny_vit_mae (which need no torch).
"""

import json

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel, ViTMAEConfig
from tfvitmae.checkpoints.weight_names import (
    BLOCK_TABLE,
    FORMATS,
    MODEL_TABLE,
    detect_format,
    keras_variables,
    mae_config_values,
    weight_table,
)

from ..helpers import (
    FIXTURE,
    REFERENCE_CONFIG,
    assert_outputs_close,
    hub_style,
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
        fused = model(
            x, noise=noise, output_hidden_states=True
        )  # the fused path when no attentions are asked
        assert abs(float(fused.loss) - float(reference["loss"])) < 1e-5
        assert max_diff(fused.logits, reference["logits"]) < 1e-5

    # The encoder alone against transformers' ViTMAEModel from the same checkpoint.
    torch_encoder = transformers.ViTMAEModel.from_pretrained(
        path, attn_implementation="eager"
    ).eval()
    with pytest.warns(UserWarning, match="Ignored .* parts this model does not have"):
        encoder = TFViTMAEModel.from_pretrained(path)
    assert_outputs_close(
        encoder(x, noise=noise, output_hidden_states=True, output_attentions=True),
        torch_outputs(torch_encoder, x, noise),
    )


@pytest.mark.parametrize("height, width", [(48, 24), (24, 40)])
def test_parity_with_interpolated_position_encoding(checkpoint, height, width):
    torch_model, path = checkpoint(norm_pix_loss=True)
    config = ViTMAEConfig.from_pretrained(path)
    x = pixels(config, height=height, width=width)
    noise = noise_for(config, height=height, width=width)
    reference = torch_outputs(torch_model, x, noise, interpolate_pos_encoding=True)
    model = TFViTMAEForPreTraining.from_pretrained(path)
    assert_outputs_close(
        model(
            x,
            noise=noise,
            interpolate_pos_encoding=True,
            output_hidden_states=True,
            output_attentions=True,
        ),
        reference,
    )


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
    assert_outputs_close(
        model(x, noise=noise, output_hidden_states=True, output_attentions=True), reference
    )
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["architectures"] == ["ViTMAEForPreTraining"]


def test_encoder_round_trip_to_transformers_vitmae_model(tmp_path):
    encoder = TFViTMAEModel(ViTMAEConfig(**REFERENCE_CONFIG))
    encoder.save_pretrained(tmp_path, pytorch=True, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists() and not (
        tmp_path / "model.safetensors"
    ).exists()
    torch_model, info = transformers.ViTMAEModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    x, noise = pixels(encoder.config), noise_for(encoder.config)
    with torch.no_grad():
        expected = torch_model.eval()(
            torch.from_numpy(x), noise=torch.from_numpy(noise)
        ).last_hidden_state
    assert max_diff(encoder(x, noise=noise).last_hidden_state, expected.numpy()) < 1e-5


def test_hub_names_bin_and_v5_state_dict(checkpoint, tmp_path):
    torch_model, path = checkpoint()
    x, noise = pixels(ViTMAEConfig(**REFERENCE_CONFIG)), noise_for(ViTMAEConfig(**REFERENCE_CONFIG))
    expected = (
        torch_model(torch.from_numpy(x), noise=torch.from_numpy(noise)).logits.detach().numpy()
    )
    state = hub_style(load_file(path / "model.safetensors"))
    cases = {
        "hub-safetensors": ("model.safetensors", lambda p: save_file(state, p)),
        "hub-bin": (
            "pytorch_model.bin",
            lambda p: torch.save({k: torch.from_numpy(v) for k, v in state.items()}, p),
        ),
        "v5-state-dict": ("pytorch_model.bin", lambda p: torch.save(torch_model.state_dict(), p)),
    }
    for name, (filename, write) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((path / "config.json").read_text())
        write(str(folder / filename))
        model, report = TFViTMAEForPreTraining.from_pretrained(
            folder, output_loading_info=True, from_pt=True
        )
        assert not report.missing and not report.unexpected, name
        assert max_diff(model(x, noise=noise).logits, expected) < 1e-5, name


def mae_state_dict(torch_model):
    """An original-MAE state dict from a transformers model, renamed by hand:
    fused qkv rows (q | k | v), timm-style block names, no prefixes."""
    config = torch_model.config
    hf = {
        k: v.numpy() for k, v in torch_model.state_dict().items()
    }  # transformers 5 in-memory names
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
    renames = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.o_proj": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    stacks = (
        ("vit.layers", "blocks", config.num_hidden_layers),
        ("decoder.decoder_layers", "decoder_blocks", config.decoder_num_hidden_layers),
    )
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
    torch.save(
        {"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path
    )
    # Head counts are not in the weights: give them (the published sizes are inferred).
    model, report = TFViTMAEForPreTraining.from_pretrained(
        path, num_attention_heads=4, decoder_num_attention_heads=2, output_loading_info=True
    )
    assert report.format == "mae" and not report.missing and not report.unexpected
    assert model.config.layer_norm_eps == 1e-6 and model.config.num_hidden_layers == 2
    assert model.config.image_size == 32 and model.config.patch_size == 8
    x, noise = pixels(model.config), noise_for(model.config)
    assert_outputs_close(
        model(x, noise=noise, output_hidden_states=True, output_attentions=True),
        torch_outputs(torch_model, x, noise),
    )


def test_original_mae_encoder_only_pretrain_checkpoint(tmp_path):
    torch_model = torch_reference_model(layer_norm_eps=1e-6)
    state = {
        k: v
        for k, v in mae_state_dict(torch_model).items()
        if not k.startswith(("decoder", "mask_token"))
    }
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save(
        {"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path
    )
    encoder = TFViTMAEModel.from_pretrained(path, num_attention_heads=4)
    x, noise = pixels(encoder.config), noise_for(encoder.config)
    expected = torch_outputs(torch_model, x, noise)["hidden_states"][-1]
    assert (
        max_diff(encoder(x, noise=noise, output_hidden_states=True).hidden_states[-1], expected)
        < 1e-5
    )
    with pytest.warns(UserWarning, match="has no decoder; it keeps its initialisation"):
        TFViTMAEForPreTraining.from_pretrained(path, num_attention_heads=4)


def test_table_covers_every_variable_once():
    for cls, qkv_bias in ((TFViTMAEForPreTraining, True), (TFViTMAEModel, False)):
        model = cls(ViTMAEConfig(**REFERENCE_CONFIG, qkv_bias=qkv_bias))
        variables = keras_variables(model)
        assert len(variables) == len(model.weights)
        for fmt in ("transformers", "transformers-v5", "mae", "tf-legacy", "keras"):
            entries = weight_table(
                model.config,
                fmt,
                parts=("vit", "decoder") if cls is TFViTMAEForPreTraining else ("vit",),
            )
            paths = [e.keras_path for e in entries]
            assert sorted(paths) == sorted(variables), fmt
            names = [n for e in entries for n in e.names]
            assert len(names) == len(set(names)), fmt
    assert len(BLOCK_TABLE) == 12 and len(MODEL_TABLE) == 14


def test_detect_format():
    config = ViTMAEConfig(**REFERENCE_CONFIG)
    for fmt in FORMATS:
        names = [n for e in weight_table(config, fmt) for n in e.names]
        assert detect_format(names) == fmt, fmt
    with pytest.raises(ValueError, match="Unrecognised checkpoint: no ViTMAE weight names"):
        detect_format(["bert.embeddings.word_embeddings.weight"])


def test_mae_config_values_from_shapes():
    model = torch_reference_model(layer_norm_eps=1e-6)
    state = mae_state_dict(model)
    values = mae_config_values(state, num_attention_heads=4, decoder_num_attention_heads=2)
    config = ViTMAEConfig(**values)
    for name, value in REFERENCE_CONFIG.items():
        assert getattr(config, name) == value, name
    assert config.layer_norm_eps == 1e-6 and config.qkv_bias
    assert mae_config_values(state)["num_attention_heads"] == 1  # width 32: 32 // 64, at least 1
    del state["patch_embed.proj.weight"]
    with pytest.raises(ValueError, match="Not an original-MAE checkpoint: missing"):
        mae_config_values(state)


# ---------------------------------------------- committed reference outputs
@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE / "reference.npz"))


def entries(reference, key):
    count = len([k for k in reference if k.startswith(key + "_")])
    return [reference[f"{key}_{i}"] for i in range(count)]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_pretraining_outputs_match_the_committed_reference(reference, attn_implementation):
    model = TFViTMAEForPreTraining.from_pretrained(FIXTURE, attn_implementation=attn_implementation)
    assert model.config.norm_pix_loss
    out = model(reference["pixel_values"], noise=reference["noise"], output_hidden_states=True)
    assert abs(float(out.loss) - float(reference["loss"])) < 1e-5
    assert max_diff(out.logits, reference["logits"]) < 1e-5
    np.testing.assert_array_equal(out.mask, reference["mask"])
    np.testing.assert_array_equal(out.ids_restore, reference["ids_restore"])
    hidden = entries(reference, "hidden_states")
    assert len(hidden) == 3 and len(out.hidden_states) == 3
    for ours, theirs in zip(out.hidden_states, hidden):
        assert max_diff(ours, theirs) < 1e-5
    attentions = model(
        reference["pixel_values"], noise=reference["noise"], output_attentions=True
    ).attentions
    expected = entries(reference, "attentions")
    assert len(expected) == len(attentions) == 2
    for ours, theirs in zip(attentions, expected):
        assert max_diff(ours, theirs) < 1e-5


def test_interpolated_non_square_outputs_match(reference):
    model = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    out = model(
        reference["pixel_values_wide"], noise=reference["noise_wide"], interpolate_pos_encoding=True
    )
    assert out.logits.shape == reference["wide_logits"].shape == (1, 15, 192)
    assert abs(float(out.loss) - float(reference["wide_loss"])) < 1e-5
    assert max_diff(out.logits, reference["wide_logits"]) < 1e-5


def test_encoder_from_pretraining_checkpoint(reference):
    with pytest.warns(UserWarning, match="Ignored .* parts this model does not have"):
        encoder = TFViTMAEModel.from_pretrained(FIXTURE)
    out = encoder(reference["pixel_values"], noise=reference["noise"], output_hidden_states=True)
    # The reference's last hidden state before the final LayerNorm is hidden_states[-1].
    assert max_diff(out.hidden_states[-1], reference["hidden_states_2"]) < 1e-5
