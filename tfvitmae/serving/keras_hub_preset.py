"""keras-hub presets of an MAE encoder: `ViTBackbone`, `ViTImageClassifier`.

An MAE encoder is a pre-LayerNorm ViT with a CLS token, so keras-hub's ViT
holds it exactly: `export_keras_hub(model, preset_dir)` writes a preset that
`keras_hub.models.ViTBackbone.from_preset(preset_dir)` loads (with a
`ViTImageConverter` that resizes and normalises as the model's image
processor does), and, for a CLS-pooled classifier, a `ViTImageClassifier`.

What keras-hub cannot hold is refused, naming it: activations other than the
exact GELU, attention without biases, and mean pooling (keras-hub's `"gap"`
averages every token, the CLS token included, after the final norm; MAE's
fine-tuning averages the patch tokens before it). The fixed sin-cos table
becomes keras-hub's (trainable) position embedding: equal at export; freeze
it to fine-tune as MAE does. The converter resizes as the processor does but
keeps a uint8 image's resized pixels fractional where the processor rounds
them to whole levels as PIL does (at most half a level of 255 apart).
"""

import os
from typing import Any

import numpy as np

from ..utils.files import check_folder_path, publish_dir, staging_dir
from ..utils.types import PathLike

__all__ = ["export_keras_hub"]


def _keras_hub() -> Any:
    try:
        import keras_hub
    except ImportError:
        raise ImportError(
            "A keras-hub export needs the keras-hub package, which is not installed here "
            '(pip install "tfvitmae[keras-hub]")'
        ) from None
    return keras_hub


def _check_carried(model: Any) -> None:
    """Refuse what a keras-hub ViT cannot hold, before anything is built."""
    config = model.config
    if config.hidden_act != "gelu":
        raise ValueError(
            f"keras-hub's ViT uses the exact GELU; this model's hidden_act is "
            f"{config.hidden_act!r}, which it cannot carry"
        )
    if not config.qkv_bias:
        raise ValueError(
            "keras-hub's ViT has biases on all attention projections or none; this model has "
            "qkv_bias=False with an output bias, which it cannot carry"
        )
    if getattr(model, "pooling", "cls") != "cls":
        raise ValueError(
            "A mean-pooled classifier cannot be a keras-hub ViTImageClassifier: its 'gap' "
            "pooling averages every token, the CLS token included, after the final norm"
        )


def _converter(keras_hub: Any, model: Any) -> Any:
    """The `ViTImageConverter` doing what `model.image_processor` does."""
    processor, (height, width) = model.image_processor, model.config.image_hw
    channels = model.config.num_channels
    scale = np.full(channels, processor.rescale_factor if processor.do_rescale else 1.0)
    offset = np.zeros(channels)
    if processor.do_normalize:
        mean = np.broadcast_to(np.asarray(processor.image_mean, np.float64), (channels,))
        std = np.broadcast_to(np.asarray(processor.image_std, np.float64), (channels,))
        scale, offset = scale / std, -mean / std
    return keras_hub.layers.ViTImageConverter(
        image_size=(height, width) if processor.do_resize else None,
        scale=[float(s) for s in scale],
        offset=[float(o) for o in offset],
        interpolation=processor.method,
        antialias=True,
        crop_to_aspect_ratio=False,  # the processor resizes the whole image
        data_format="channels_last",
    )


def _backbone(keras_hub: Any, model: Any, state: dict[str, np.ndarray]) -> Any:
    """A `ViTBackbone` holding `model`'s encoder, from `state` in transformers'
    ViT layout (`model.vit_state_dict()`)."""
    c = model.config
    (height, width), (patch_h, patch_w) = c.image_hw, c.patch_hw
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(height, width, c.num_channels),
        patch_size=(patch_h, patch_w),
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        hidden_dim=c.hidden_size,
        mlp_dim=c.intermediate_size,
        dropout_rate=c.hidden_dropout_prob,
        attention_dropout=c.attention_probs_dropout_prob,
        layer_norm_epsilon=c.layer_norm_eps,
        data_format="channels_last",
    )
    state = {k.removeprefix("vit."): v for k, v in state.items()}  # a classifier's prefix
    heads, width_ = c.num_attention_heads, c.hidden_size
    head_dim = width_ // heads
    embedding = backbone.get_layer("vit_patching_and_embedding")
    embedding.class_token.assign(state["embeddings.cls_token"])
    projection = state["embeddings.patch_embeddings.projection.weight"]
    embedding.patch_embedding.kernel.assign(np.transpose(projection, (2, 3, 1, 0)))
    embedding.patch_embedding.bias.assign(state["embeddings.patch_embeddings.projection.bias"])
    embedding.position_embedding.embeddings.assign(state["embeddings.position_embeddings"][0])
    encoder = backbone.get_layer("vit_encoder")
    for i, block in enumerate(encoder.encoder_layers):
        prefix = f"encoder.layer.{i}."

        def get(name, prefix=prefix):
            return state[prefix + name]

        block.layer_norm_1.gamma.assign(get("layernorm_before.weight"))
        block.layer_norm_1.beta.assign(get("layernorm_before.bias"))
        for part, dense in (
            ("query", block.mha.query_dense),
            ("key", block.mha.key_dense),
            ("value", block.mha.value_dense),
        ):
            kernel = get(f"attention.attention.{part}.weight").T
            dense.kernel.assign(kernel.reshape(width_, heads, head_dim))
            dense.bias.assign(get(f"attention.attention.{part}.bias").reshape(heads, head_dim))
        output = get("attention.output.dense.weight").T
        block.mha.output_dense.kernel.assign(output.reshape(heads, head_dim, width_))
        block.mha.output_dense.bias.assign(get("attention.output.dense.bias"))
        block.layer_norm_2.gamma.assign(get("layernorm_after.weight"))
        block.layer_norm_2.beta.assign(get("layernorm_after.bias"))
        block.mlp.dense_1.kernel.assign(get("intermediate.dense.weight").T)
        block.mlp.dense_1.bias.assign(get("intermediate.dense.bias"))
        block.mlp.dense_2.kernel.assign(get("output.dense.weight").T)
        block.mlp.dense_2.bias.assign(get("output.dense.bias"))
    encoder.layer_norm.gamma.assign(state["layernorm.weight"])
    encoder.layer_norm.beta.assign(state["layernorm.bias"])
    return backbone


def export_keras_hub(model: Any, preset_dir: PathLike, verbose: bool = True) -> str:
    """Write `model`'s encoder as a keras-hub preset (see the module docstring).

    Args:
        model: A tfvitmae model: its encoder becomes a `ViTBackbone` preset; a
            CLS-pooled `TFViTMAEForImageClassification` becomes a
            `ViTImageClassifier` preset (a linear probe's BatchNorm folded
            into the head, which is exact).
        preset_dir: A new directory. The preset is written beside it and
            renamed into place, so a failed export leaves nothing.
        verbose: Print what was written.

    Returns:
        The keras-hub class to load the preset with.
    """
    keras_hub = _keras_hub()
    _check_carried(model)
    preset_dir = os.fspath(preset_dir)
    check_folder_path(os.path.dirname(os.path.abspath(preset_dir)))
    if os.path.exists(preset_dir) and (not os.path.isdir(preset_dir) or os.listdir(preset_dir)):
        raise FileExistsError(f"{preset_dir} already exists; export to a new directory")
    _, state = model.vit_state_dict()  # a probe's BatchNorm folded into the head
    backbone, converter = _backbone(keras_hub, model, state), _converter(keras_hub, model)
    with staging_dir(os.path.dirname(os.path.abspath(preset_dir)), ".tmp-preset-") as staging:
        if hasattr(model, "classify"):
            name = "ViTImageClassifier"
            classifier = keras_hub.models.ViTImageClassifier(
                backbone=backbone,
                num_classes=model.num_labels,
                preprocessor=keras_hub.models.ViTImageClassifierPreprocessor(
                    image_converter=converter
                ),
                pooling="token",
            )
            classifier.output_dense.kernel.assign(state["classifier.weight"].T)
            classifier.output_dense.bias.assign(state["classifier.bias"])
            classifier.save_to_preset(staging)
        else:
            name = "ViTBackbone"
            backbone.save_to_preset(staging)
            converter.save_to_preset(staging)
        publish_dir(staging, preset_dir)
    if verbose:
        print(f"Wrote a keras-hub {name} preset to {preset_dir}")
    return name
