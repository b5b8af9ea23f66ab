"""ViTMAE: the encoder and decoder stacks, and the documented models
`TFViTMAEModel` and `TFViTMAEForPreTraining` (Hugging Face's TensorFlow API).

Together with `layers.py` this is the whole forward pass, top to bottom: a
model checks its inputs, the encoder embeds the patches, adds the fixed
position table, masks randomly, prepends CLS and runs pre-norm blocks; the
decoder re-inserts mask tokens, un-shuffles, and predicts every patch's
pixels; the loss is the pixel MSE over the removed patches. The numerical
reference is Hugging Face's PyTorch `ViTMAE*` classes.
"""

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from ..checkpoints import HubMixin
from ..data.image_processor import ViTMAEImageProcessor
from ..serving.mixin import ExportMixin
from ..utils.backend import tensorflow
from ..utils.checks import check_batch_size, check_data_format
from ..utils.types import PathLike, TensorLike
from .config import ViTMAEConfig, as_config
from .inputs import check_noise, check_pixel_values, head_masks, unpack_inputs
from .layers import (
    AttentionSwitch,
    PatchEmbedding,
    RandomMasking,
    ViTMAEBlock,
    check_attn_implementation,
    gather_rows,
    masked_mean,
    masking_noise,
    patch_targets,
    patchify,
    per_patch_error,
    resize_position_table,
    sincos_position_table,
    sub_seed,
    unpatchify,
)
from .outputs import TFViTMAEDecoderOutput, TFViTMAEForPreTrainingOutput, TFViTMAEModelOutput

if TYPE_CHECKING:
    import PIL.Image

    # One raw image for `predict_images`: a file path, a uint8 array or a PIL image.
    _RawImage = PathLike | TensorLike | PIL.Image.Image

__all__ = [
    "TFViTMAEForPreTraining",
    "TFViTMAEModel",
    "TFViTMAEPreTrainedModel",
    "ViTMAEDecoder",
    "ViTMAEEmbeddings",
    "ViTMAEEncoder",
]


# ----------------------------------------------------------------------
# The encoder and decoder stacks
# ----------------------------------------------------------------------


def _block_stack(
    config, *, hidden_size, num_layers, num_heads, intermediate_size, options, drop_path_rate=0.0
):
    """`num_layers` blocks of one stack; `options` holds the stack's
    `attn_implementation`, `seed` and `dtype`."""
    # Stochastic depth grows linearly with depth, to drop_path_rate at the last block.
    rates = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
    return [
        ViTMAEBlock(
            hidden_size=hidden_size,
            num_heads=num_heads,
            intermediate_size=intermediate_size,
            hidden_act=config.hidden_act,
            qkv_bias=config.qkv_bias,
            hidden_dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
            layer_norm_eps=config.layer_norm_eps,
            initializer_range=config.initializer_range,
            attn_implementation=options["attn_implementation"],
            drop_path=rates[i],
            seed=sub_seed(options["seed"], f"layer_{i}"),
            name=f"layer_{i}",
            dtype=options["dtype"],
        )
        for i in range(num_layers)
    ]


def _run_blocks(
    blocks,
    hidden_states,
    *,
    head_masks,
    output_attentions,
    output_hidden_states,
    training,
    remat=False,
):
    """Run `blocks` in turn; returns `(hidden_states, all hidden states or
    None, all attention probabilities or None)`. With `remat` (in training,
    without attention outputs), each block's activations are recomputed in
    the backward pass instead of kept (`keras.remat`: `jax.checkpoint`,
    `tf.recompute_grad`, PyTorch's checkpointing). Its dropout and drop-path
    seeds are drawn before, outside the recomputed function: drawn inside,
    the recomputation would advance the generators again and (on TensorFlow
    and PyTorch) draw other masks than the forward pass did."""
    all_hidden: list | None = [hidden_states] if output_hidden_states else None
    all_attentions: list | None = [] if output_attentions else None
    for i, block in enumerate(blocks):
        options = dict(
            head_mask=None if head_masks is None else head_masks[i],
            output_attentions=output_attentions,
            training=training,
        )
        if remat and training and not output_attentions:
            # Only hidden states pass the checkpoint; the flags stay Python
            # values, and the seeds are bound here (TensorFlow's recompute_grad
            # takes float tensors only).
            options["seeds"] = block.draw_seeds()
            run = functools.partial(_block_hidden_states, block, options)
            hidden_states, probs = keras.remat(run)(hidden_states), None
        else:
            hidden_states, probs = block(hidden_states, **options)
        if all_hidden is not None:
            all_hidden.append(hidden_states)
        if all_attentions is not None:
            all_attentions.append(probs)
    return (
        hidden_states,
        None if all_hidden is None else tuple(all_hidden),
        None if all_attentions is None else tuple(all_attentions),
    )


# Call options that transformers' TF models also take inside the input dict.
_DICT_OPTIONS = (
    "head_mask",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "interpolate_pos_encoding",
    "training",
)


def _check_remat(value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"remat must be True or False, received {value!r}")
    return value


def _block_hidden_states(block, options, hidden_states):
    return block(hidden_states, **options)[0]


class _ConfigLayer(AttentionSwitch, keras.layers.Layer):
    """A layer whose constructor arguments are a `ViTMAEConfig` (+ options);
    switching its `attn_implementation` switches its blocks."""

    def __init__(self, config, attn_implementation="sdpa", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        self.seed = seed
        self._attn_implementation = check_attn_implementation(attn_implementation)
        self.remat = False  # set by the model (`TFViTMAEPreTrainedModel.remat`)

    def _switch_children(self):
        return getattr(self, "blocks", [])

    def _block_options(self):
        return dict(
            attn_implementation=self._attn_implementation, seed=self.seed, dtype=self.dtype_policy
        )

    def get_config(self):
        base = super().get_config()
        base.update(
            config=self.config.to_dict(),
            attn_implementation=self._attn_implementation,
            seed=self.seed,
        )
        return base


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEEmbeddings(_ConfigLayer):
    """Patch embedding + fixed position table + random masking + CLS token.

    Call arguments:
        images: Channels-last `(batch, height, width, num_channels)`.
        noise: Optional `(batch, num_patches)` masking noise.
        interpolate_pos_encoding: Resize the position table to the input grid.
        unmasked: Keep every patch, in order (feature extraction).

    Returns:
        `(embeddings, mask, ids_restore)` with embeddings `(batch, 1 + len_keep, hidden)`.
    """

    def __init__(self, config: ViTMAEConfig | dict, seed: int | None = None, **kwargs):
        # Inputs keep their dtype (the patch projection casts the images): the
        # masking noise must reach `RandomMasking` in float32.
        kwargs.setdefault("autocast", False)
        super().__init__(config, seed=seed, **kwargs)
        c = self.config
        self.patch_embeddings = PatchEmbedding(
            c.hidden_size,
            c.patch_hw,
            c.num_channels,
            name="patch_embeddings",
            dtype=self.dtype_policy,
        )
        self.random_masking = RandomMasking(
            c.mask_ratio, seed=seed, name="random_masking", dtype=self.dtype_policy
        )

    def build(self, input_shape: tuple | None = None) -> None:
        c = self.config
        self.patch_embeddings.build()
        self.cls_token = self.add_weight(
            shape=(1, 1, c.hidden_size),
            initializer=keras.initializers.RandomNormal(stddev=c.initializer_range),
            name="cls_token",
        )
        table = sincos_position_table(c.grid_size, c.hidden_size)[None]
        # Fixed: stored (checkpoints carry it) but never trained.
        self.position_embeddings = self.add_weight(
            shape=table.shape,
            initializer=keras.initializers.Constant(table),
            trainable=False,
            name="position_embeddings",
        )

    def call(
        self,
        images: TensorLike,
        noise: TensorLike | None = None,
        interpolate_pos_encoding: bool = False,
        unmasked: bool = False,
    ) -> tuple[TensorLike, TensorLike, TensorLike]:
        embeddings = self.patch_embeddings(images)
        position = ops.cast(self.position_embeddings, embeddings.dtype)
        grid = (
            images.shape[1] // self.config.patch_hw[0],
            images.shape[2] // self.config.patch_hw[1],
        )
        if interpolate_pos_encoding:
            position = resize_position_table(position, self.config.grid_size, grid)
        embeddings = embeddings + position[:, 1:]
        # The config's ratio at call time: `model.config.mask_ratio = 0.0` takes effect
        # at the next call, as in transformers (in a traced function, at its next trace).
        embeddings, mask, ids_restore = self.random_masking(
            embeddings, noise=noise, mask_ratio=0.0 if unmasked else self.config.mask_ratio
        )
        cls = ops.cast(self.cls_token, embeddings.dtype) + position[:, :1]
        cls = ops.broadcast_to(cls, (ops.shape(embeddings)[0], 1, self.config.hidden_size))
        return ops.concatenate([cls, embeddings], axis=1), mask, ids_restore


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEEncoder(_ConfigLayer):
    """The MAE encoder: embeddings, `num_hidden_layers` blocks, final LayerNorm.

    `drop_path_rate` (stochastic depth, for fine-tuning) rises linearly from 0
    at the first block to the given rate at the last.

    Call arguments:
        images: Channels-last float images `(batch, height, width, num_channels)`.
        noise: Optional `(batch, num_patches)` masking noise.
        head_masks: Optional list with one `(num_heads,)` multiplier per block.
        output_attentions, output_hidden_states: Collect the per-block values.
        interpolate_pos_encoding: Allow other resolutions.
        training: Enables dropout.
        final_norm: Apply the final LayerNorm (off for MAE's mean-pooled
            fine-tuning head, which normalises after pooling).
        unmasked: Encode every patch, in order, whatever `config.mask_ratio`.

    Returns:
        A `TFViTMAEModelOutput`.
    """

    def __init__(
        self,
        config: ViTMAEConfig | dict,
        attn_implementation: str = "sdpa",
        seed: int | None = None,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)  # keep the noise float32 (see ViTMAEEmbeddings)
        super().__init__(config, attn_implementation=attn_implementation, seed=seed, **kwargs)
        c = self.config
        self.drop_path_rate = drop_path_rate
        self.embeddings = ViTMAEEmbeddings(c, seed=seed, name="embeddings", dtype=self.dtype_policy)
        self.blocks = _block_stack(
            c,
            hidden_size=c.hidden_size,
            num_layers=c.num_hidden_layers,
            num_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size,
            options=self._block_options(),
            drop_path_rate=drop_path_rate,
        )
        self.layernorm = keras.layers.LayerNormalization(
            epsilon=c.layer_norm_eps, name="layernorm", dtype=self.dtype_policy
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(drop_path_rate=self.drop_path_rate)
        return config

    def build(self, input_shape: tuple | None = None) -> None:
        self.embeddings.build()
        for block in self.blocks:
            block.build()
        self.layernorm.build((None, None, self.config.hidden_size))

    def call(
        self,
        images: TensorLike,
        noise: TensorLike | None = None,
        head_masks: Sequence[TensorLike] | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
        training: bool = False,
        final_norm: bool = True,
        unmasked: bool = False,
    ) -> TFViTMAEModelOutput:
        hidden_states, mask, ids_restore = self.embeddings(
            images,
            noise=noise,
            interpolate_pos_encoding=interpolate_pos_encoding,
            unmasked=unmasked,
        )
        hidden_states, all_hidden, all_attentions = _run_blocks(
            self.blocks,
            hidden_states,
            head_masks=head_masks,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
            remat=self.remat,
        )
        return TFViTMAEModelOutput(
            last_hidden_state=self.layernorm(hidden_states) if final_norm else hidden_states,
            mask=mask,
            ids_restore=ids_restore,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEDecoder(_ConfigLayer):
    """The MAE decoder: embed, re-insert mask tokens, un-shuffle, add the fixed
    decoder position table, blocks, LayerNorm, per-patch pixel prediction.

    Call arguments:
        hidden_states: Encoder output `(batch, 1 + len_keep, hidden_size)`.
        ids_restore: `(batch, num_patches)` from the encoder.
        interpolate_pos_encoding: Resize the position table to `num_patches`.
        output_attentions, output_hidden_states: Collect the per-block values.
        training: Enables dropout.

    Returns:
        A `TFViTMAEDecoderOutput`; logits are float32
        `(batch, num_patches, patch_h * patch_w * num_channels)`.
    """

    def __init__(
        self,
        config: ViTMAEConfig | dict,
        attn_implementation: str = "sdpa",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(config, attn_implementation=attn_implementation, seed=seed, **kwargs)
        c = self.config
        init = keras.initializers.TruncatedNormal(stddev=c.initializer_range)
        self.decoder_embed = keras.layers.Dense(
            c.decoder_hidden_size,
            kernel_initializer=init,
            name="decoder_embed",
            dtype=self.dtype_policy,
        )
        self.decoder_layers = _block_stack(
            c,
            hidden_size=c.decoder_hidden_size,
            num_layers=c.decoder_num_hidden_layers,
            num_heads=c.decoder_num_attention_heads,
            intermediate_size=c.decoder_intermediate_size,
            options={**self._block_options(), "seed": sub_seed(seed, "decoder")},
        )
        self.decoder_norm = keras.layers.LayerNormalization(
            epsilon=c.layer_norm_eps, name="decoder_norm", dtype=self.dtype_policy
        )
        self.decoder_pred = keras.layers.Dense(
            c.patch_dim, kernel_initializer=init, name="decoder_pred", dtype=self.dtype_policy
        )

    @property
    def blocks(self) -> list[ViTMAEBlock]:
        return self.decoder_layers

    def build(self, input_shape: tuple | None = None) -> None:
        c = self.config
        self.decoder_embed.build((None, None, c.hidden_size))
        self.mask_token = self.add_weight(
            shape=(1, 1, c.decoder_hidden_size),
            initializer=keras.initializers.RandomNormal(stddev=c.initializer_range),
            name="mask_token",
        )
        table = sincos_position_table(c.grid_size, c.decoder_hidden_size)[None]
        self.decoder_pos_embed = self.add_weight(
            shape=table.shape,
            initializer=keras.initializers.Constant(table),
            trainable=False,
            name="decoder_pos_embed",
        )
        for block in self.decoder_layers:
            block.build()
        self.decoder_norm.build((None, None, c.decoder_hidden_size))
        self.decoder_pred.build((None, None, c.decoder_hidden_size))

    def call(
        self,
        hidden_states: TensorLike,
        ids_restore: TensorLike,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        training: bool = False,
    ) -> TFViTMAEDecoderOutput:
        x = self.decoder_embed(hidden_states)
        batch, num_patches = ops.shape(x)[0], ids_restore.shape[1]
        num_masked = num_patches + 1 - x.shape[1]
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (batch, num_masked, self.config.decoder_hidden_size)
        )
        patches = ops.concatenate([x[:, 1:], mask_tokens], axis=1)
        patches = gather_rows(patches, ids_restore)
        x = ops.concatenate([x[:, :1], patches], axis=1)
        position = ops.cast(self.decoder_pos_embed, x.dtype)
        if interpolate_pos_encoding:
            # As Hugging Face: the table is resized as a 1-D sequence.
            position = resize_position_table(
                position, (1, self.config.num_patches), (1, num_patches)
            )
        x = x + position
        x, all_hidden, all_attentions = _run_blocks(
            self.decoder_layers,
            x,
            head_masks=None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
            remat=self.remat,
        )
        logits = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        return TFViTMAEDecoderOutput(
            logits=ops.cast(logits, "float32"), hidden_states=all_hidden, attentions=all_attentions
        )


# ----------------------------------------------------------------------
# The models
# ----------------------------------------------------------------------


class TFViTMAEPreTrainedModel(HubMixin, ExportMixin, AttentionSwitch, keras.Model):
    """Base class of the ViTMAE models: the config, the model options, and the
    encoder run on checked inputs.

    Checkpoints (`from_pretrained`, `save_pretrained`, `push_to_hub`) come
    from `checkpoints.HubMixin`, the SavedModel export (`export`) from
    `serving.ExportMixin`; both take this model as it is.

    Args:
        config: A `ViTMAEConfig` (or its dict).
        data_format: Layout of `pixel_values`: `"channels_first"` (the
            documented `(batch, num_channels, height, width)`, the default) or
            `"channels_last"` (`(batch, height, width, num_channels)`).
        attn_implementation: `"sdpa"` (the default: batched matmuls in the layout
            oneDNN and XLA run fastest) or `"eager"` (the explicit einsum
            reference). Both give the same numbers and support every output.
        seed: Seed for the masking noise and dropout. Without it, masks still
            follow `keras.utils.set_random_seed` when that was called first.
        drop_path_rate: Stochastic depth of the encoder (for fine-tuning).
        image_processor: How raw images become this model's `pixel_values`: a
            `ViTMAEImageProcessor` or its `preprocessor_config.json` fields.
            Default: MAE's (bicubic, ImageNet mean and std). Its size always
            follows the config's `image_size`.
        remat: Recompute every block's activations in the backward pass
            instead of keeping them (`keras.remat`), trading compute for
            memory; settable later (`model.remat = True`).
        **kwargs: `keras.Model` arguments (`name`, `dtype`, ...).
    """

    config_class = ViTMAEConfig
    processor_class = ViTMAEImageProcessor
    default_name = "vit_mae"
    main_input_name = "pixel_values"  # as transformers' models name their first input

    def __init__(
        self,
        config: ViTMAEConfig | dict,
        data_format: str = "channels_first",
        attn_implementation: str = "sdpa",
        seed: int | None = None,
        drop_path_rate: float = 0.0,
        image_processor: ViTMAEImageProcessor | dict | None = None,
        remat: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("name", self.default_name)
        super().__init__(**kwargs)
        self.config: ViTMAEConfig = as_config(config)
        self.config.check_memory()  # before gigabytes are allocated in vain
        self.image_processor = image_processor
        self.data_format: str = check_data_format(data_format)
        self.seed = seed
        self.drop_path_rate = drop_path_rate
        self._attn_implementation = check_attn_implementation(attn_implementation)
        self.vit = ViTMAEEncoder(
            self.config,
            attn_implementation=attn_implementation,
            seed=seed,
            drop_path_rate=drop_path_rate,
            name="vit",
            dtype=self.dtype_policy,
        )
        self._remat = _check_remat(remat)  # given to the stacks in `build`

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Keras' `__call__`. As in transformers' TF models, the input dict
        may also hold the call's options (`{"pixel_values": x,
        "output_attentions": True}`); they are passed on as arguments."""
        if args and isinstance(args[0], dict):
            options = {k: v for k, v in args[0].items() if k in _DICT_OPTIONS}
            both = sorted(set(options) & set(kwargs))
            if both:
                raise ValueError(f"{both} given both in the input dict and as arguments")
            if options:
                inputs = {k: v for k, v in args[0].items() if k not in options}
                args, kwargs = (inputs, *args[1:]), {**kwargs, **options}
        return super().__call__(*args, **kwargs)

    # -------------------------------------------------------------- options
    def _stacks(self) -> list:
        """The encoder (and decoder) stacks: built up front, switched together."""
        return [self.vit]

    def _switch_children(self) -> list:
        return self._stacks()

    @property
    def image_processor(self) -> ViTMAEImageProcessor:
        """The `ViTMAEImageProcessor` that turns raw images into this model's
        inputs; saved with the model. Set it to a processor or a dict of its fields."""
        return self._image_processor

    @image_processor.setter
    def image_processor(self, value: ViTMAEImageProcessor | dict | None) -> None:
        if value is None:
            processor = ViTMAEImageProcessor.for_config(self.config)
        elif isinstance(value, dict):
            processor = ViTMAEImageProcessor.from_dict(value)
        elif isinstance(value, ViTMAEImageProcessor):
            processor = value
        else:
            raise ValueError(
                "image_processor must be a ViTMAEImageProcessor, a dict of its fields or None, "
                f"received {type(value).__name__}"
            )
        if processor.size != self.config.image_hw:
            processor = processor.copy(size=self.config.image_hw)
        self._image_processor = processor.with_channels(self.config.num_channels)

    @property
    def input_dtype(self) -> str:
        # Keep pixels in float32 under mixed precision: the loss target is the
        # input image, and the layers cast for themselves.
        compute = self.compute_dtype
        return "float32" if compute in ("float16", "bfloat16") else compute

    # --------------------------------------------------------------- inputs
    def check_pixel_values(
        self, pixel_values: TensorLike, interpolate_pos_encoding: bool = False
    ) -> TensorLike:
        """`pixel_values` (in `data_format`) validated and moved channels-last;
        see `inputs.check_pixel_values`."""
        return check_pixel_values(
            pixel_values,
            self.config,
            data_format=self.data_format,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )

    def to_model_layout(self, images: TensorLike) -> TensorLike:
        """Channels-last images in this model's `data_format`."""
        return (
            ops.transpose(images, (0, 3, 1, 2)) if self.data_format == "channels_first" else images
        )

    def to_channels_last(self, images: TensorLike) -> TensorLike:
        """Images in this model's `data_format`, channels-last."""
        return (
            ops.transpose(images, (0, 2, 3, 1)) if self.data_format == "channels_first" else images
        )

    def _encode(
        self,
        pixel_values,
        noise=None,
        *,
        head_mask=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        training: bool = False,
    ):
        """Check the inputs and run the encoder; a flag left at `None` takes
        the config's default, as in Hugging Face's models.

        Returns:
            `(channels-last images, encoder output)`.
        """
        c = self.config
        if output_attentions is None:
            output_attentions = c.output_attentions
        if output_hidden_states is None:
            output_hidden_states = c.output_hidden_states
        pixel_values, noise = unpack_inputs(pixel_values, noise)
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        outputs = self.vit(
            images,
            noise=check_noise(noise, images, c),
            head_masks=head_masks(head_mask, c.num_hidden_layers, c.num_attention_heads),
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        )
        return images, outputs

    def _return(self, output, return_dict):
        use_dict = self.config.use_return_dict if return_dict is None else return_dict
        return output if use_dict else output.to_tuple()

    # ------------------------------------------------------------- outputs
    def unmasked_features(self, pixel_values: TensorLike) -> dict:
        """The features of the whole, unmasked image, whatever `config.mask_ratio`.

        Args:
            pixel_values: Float images in `data_format`.

        Returns:
            `{"cls_features", "mean_features"}`, float32 `(batch, hidden_size)`:
            the CLS token and the mean of the patch tokens after the final LayerNorm.
        """
        images = self.check_pixel_values(pixel_values)
        hidden = self.vit(images, unmasked=True).last_hidden_state
        return {
            "cls_features": ops.cast(hidden[:, 0], "float32"),
            "mean_features": ops.cast(ops.mean(hidden[:, 1:], axis=1), "float32"),
        }

    def predict_images(
        self,
        images: "_RawImage | Sequence[_RawImage]",
        batch_size: int = 32,
        **kwargs,
    ) -> dict:
        """Run the model on raw images through its `image_processor`.

        Args:
            images: File paths, PIL images or uint8 `(height, width[, channels])`
                arrays of any size: one, a list, or an `(n, H, W, C)` array.
            batch_size: Images per forward pass.
            **kwargs: Options of the model's outputs (`seed` for the mask of
                `TFViTMAEForPreTraining`, `top_k` for classifiers).

        Returns:
            A dict of NumPy arrays with one row per image:
            `TFViTMAEModel`: `cls_features` and `mean_features` of the
            unmasked image, `(n, hidden_size)`;
            `TFViTMAEForPreTraining`: `reconstruction` (uint8 images, visible
            patches from the input), `prediction` (uint8, every patch
            predicted), `mask` and `loss`;
            `TFViTMAEForImageClassification`: `probabilities`,
            `top_k_indices`, `top_k_probabilities` and `top_k_labels`.
        """
        from ..data.decoding import load_images  # TensorFlow's image decoding

        check_batch_size(batch_size)
        loaded = load_images(images, self.config.num_channels)
        results = []
        for start in range(0, len(loaded), batch_size):
            chunk = loaded[start : start + batch_size]
            pixels = self.image_processor(chunk, data_format=self.data_format)["pixel_values"]
            results.append(self._image_outputs(pixels, start=start, **kwargs))
        return {k: np.concatenate([np.asarray(r[k]) for r in results]) for k in results[0]}

    def _image_outputs(self, pixel_values, start: int = 0) -> dict:
        """`predict_images`' outputs for the batch of `pixel_values` that
        starts at image `start`: the unmasked features."""
        del start  # features do not depend on the image's place
        return self.unmasked_features(pixel_values)

    # ------------------------------------------------------------- training
    def compile(self, *args, jit_compile: bool | str = "auto", **kwargs) -> None:
        """Keras' `compile`, with this model's own `jit_compile="auto"`.

        Keras' "auto" turns XLA off on a CPU-only machine; here "auto" means
        `default_jit_compile()`, which turns it on where it was measured faster
        (see `benchmarks/`). Pass `jit_compile=True` or `False` to choose.
        """
        if jit_compile == "auto":
            jit_compile = False if kwargs.get("run_eagerly") else self.default_jit_compile()
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config: dict) -> None:
        """Re-compile a loaded `.keras` model. Keras skips this for models whose
        `compile` is overridden; ours only resolves the XLA default, so it is
        safe to call, and the optimizer state then loads with the weights."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def default_jit_compile(self) -> bool:
        """Whether `compile` uses XLA by default: yes for float32 models, and for
        16-bit ones on GPU; no for 16-bit policies on CPU (XLA's CPU bfloat16
        matmuls run at a fraction of oneDNN's speed), and no inside a
        distribution strategy (as Keras' own default). JAX always compiles;
        on PyTorch, `torch.compile` is left to the user."""
        backend = keras.backend.backend()
        if backend != "tensorflow":
            return backend == "jax"
        import tensorflow as tf

        if tf.distribute.has_strategy():
            return False
        if self.compute_dtype == "float32":
            return True
        return bool(tf.config.list_logical_devices("GPU"))

    # -------------------------------------------------------- serialization
    @property
    def remat(self) -> bool:
        """Recompute each encoder and decoder block's activations in the
        backward pass instead of keeping them: less memory, more compute."""
        return self._remat

    @remat.setter
    def remat(self, value: bool) -> None:
        self._remat = _check_remat(value)
        for layer in self._stacks():
            layer.remat = value

    def build(self, input_shape: tuple | None = None) -> None:
        # Every shape is known from the config: build all weights up front so a
        # model can be summarised, saved or loaded into without a dummy call.
        for layer in self._stacks():
            layer.build()
            layer.remat = self._remat  # stacks made after the base constructor

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "config": self.config.to_dict(),
            "data_format": self.data_format,
            "attn_implementation": self.attn_implementation,
            "seed": self.seed,
            "drop_path_rate": self.drop_path_rate,
            "image_processor": self.image_processor.to_dict(hf_keys=False),
            "remat": self.remat,
        }

    def get_input_embeddings(self) -> keras.layers.Layer:
        """The patch embedding (transformers' name for a model's input embedding)."""
        return self.vit.embeddings.patch_embeddings

    def get_output_embeddings(self) -> None:
        """None: no output layer shares the input embedding's weights (as transformers)."""
        return None

    def _image_shape(self) -> tuple[int, int, int]:
        """One input image's shape in `data_format`."""
        height, width = self.config.image_hw
        if self.data_format == "channels_last":
            return (height, width, self.config.num_channels)
        return (self.config.num_channels, height, width)

    @property
    def dummy_inputs(self) -> dict[str, np.ndarray]:
        """`{"pixel_values": ...}`, 3 random images of the config's size in
        `data_format` (transformers' name)."""
        images = np.random.default_rng(0).random((3, *self._image_shape()), dtype=np.float32)
        return {"pixel_values": images}

    @property
    def input_signature(self) -> dict[str, Any]:
        """`{"pixel_values": tf.TensorSpec}` of a batch of any size (transformers'
        name), e.g. for `tf.function(input_signature=[model.input_signature])`."""
        tf = tensorflow("input_signature")
        shape = (None, *self._image_shape())
        return {"pixel_values": tf.TensorSpec(shape, tf.float32, name="pixel_values")}

    # 🤗 Datasets columns `prepare_tf_dataset` keeps as targets (none: self-supervised).
    _label_columns: tuple[str, ...] = ()

    def prepare_tf_dataset(
        self,
        dataset: Any,
        batch_size: int = 8,
        shuffle: bool = True,
        tokenizer: Any = None,
        collate_fn: Any = None,
        collate_fn_args: dict[str, Any] | None = None,
        drop_remainder: bool | None = None,
        prefetch: bool = True,
    ) -> Any:
        """A `tf.data.Dataset` for `fit` from a 🤗 Datasets `Dataset`, as in
        transformers: its `pixel_values` (and `noise`) columns become the
        inputs, a `labels` or `label` column a classifier's targets, the
        other columns are dropped. See `data.to_tf_dataset`.

        `tokenizer` is refused: images go through `model.image_processor`.
        """
        if tokenizer is not None:
            raise ValueError(
                "prepare_tf_dataset(tokenizer=...) is for text models; make the images' "
                "pixel_values with the model's image processor (model.image_processor)"
            )
        from ..data.hf_datasets import to_tf_dataset

        return to_tf_dataset(
            dataset,
            input_names=("pixel_values", "noise"),
            label_names=self._label_columns,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=collate_fn,
            collate_fn_args=collate_fn_args,
            drop_remainder=drop_remainder,
            prefetch=prefetch,
        )

    @classmethod
    def from_config(cls, config: "dict | ViTMAEConfig") -> "TFViTMAEPreTrainedModel":
        """A new model from `get_config()`'s dict (Keras), or from a
        `ViTMAEConfig` (transformers' `Model.from_config(config)`)."""
        if isinstance(config, ViTMAEConfig):
            return cls(config)
        config = dict(config)
        config["config"] = ViTMAEConfig.from_dict(config["config"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfvitmae")
class TFViTMAEModel(TFViTMAEPreTrainedModel):
    """The bare ViTMAE encoder, outputting raw hidden states.

    Masking is applied as in pretraining, with the ratio the model was built
    with (`config.mask_ratio`). For the full, unmasked sequence, build it with
    `mask_ratio=0.0` (`TFViTMAEModel(config.copy(mask_ratio=0.0))` or
    `from_pretrained(path, mask_ratio=0.0)`), set `model.config.mask_ratio =
    0.0` (read at every call), or call `unmasked_features`.
    All weights exist after construction.

    Args:
        config, data_format, attn_implementation, seed, drop_path_rate,
            image_processor: See `TFViTMAEPreTrainedModel`.

    Call arguments:
        pixel_values: Float images in `data_format` layout, or a dict with keys
            `"pixel_values"` (and optionally `"noise"`).
        noise: Optional float `(batch, num_patches)`; the patches with the
            smallest noise are kept. Makes the call deterministic.
        head_mask: Optional `(num_heads,)` or `(num_layers, num_heads)`
            multiplier of the attention probabilities (1 keeps a head).
        output_attentions: Return every block's attention probabilities.
        output_hidden_states: Return every block's hidden states.
        return_dict: Return a `TFViTMAEModelOutput` (default) or a tuple.
        training: Enables dropout.
        interpolate_pos_encoding: Accept any multiple of the patch size as
            height and width by resizing the position table (bicubic, as PyTorch).

    Returns:
        `TFViTMAEModelOutput` with `last_hidden_state (batch, 1 + len_keep, hidden)`,
        `mask`, `ids_restore` and optionally `hidden_states`, `attentions`.

    Example:
    >>> config = ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    ...                       intermediate_size=64, image_size=32, patch_size=8)
    >>> model = TFViTMAEModel(config)
    >>> out = model(np.zeros((2, 3, 32, 32), "float32"))
    >>> tuple(out.last_hidden_state.shape)
    (2, 5, 32)
    """

    default_name = "vit_mae_model"

    def __init__(self, config: ViTMAEConfig | dict, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.build()

    def call(
        self,
        pixel_values: TensorLike | dict,
        noise: TensorLike | None = None,
        head_mask: TensorLike | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> TFViTMAEModelOutput | tuple:
        _, outputs = self._encode(
            pixel_values,
            noise,
            head_mask=head_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            training=training,
        )
        return self._return(outputs, return_dict)


@keras.saving.register_keras_serializable(package="tfvitmae")
class TFViTMAEForPreTraining(TFViTMAEPreTrainedModel):
    """ViTMAE with the pixel-reconstruction decoder and loss, for pretraining.

    Train it with `compile(optimizer=...)` and `fit(images)`: no labels and no
    `loss` argument are needed, the model's own masked-patch MSE is minimised.
    Batches may be image tensors or dicts with `"pixel_values"` (and `"noise"`).

    Args:
        config, data_format, attn_implementation, seed, drop_path_rate,
            image_processor: See `TFViTMAEPreTrainedModel`.

    Call arguments:
        Same as `TFViTMAEModel`.

    Returns:
        `TFViTMAEForPreTrainingOutput` with float32 `loss` (scalar) and
        `logits (batch, num_patches, patch_h * patch_w * num_channels)`, plus the
        encoder's `mask`, `ids_restore`, `hidden_states` and `attentions`.
        With `mask_ratio=0` no patch is masked and the loss is 0.

    Example:
    >>> config = ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    ...                       intermediate_size=64, decoder_hidden_size=32,
    ...                       decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
    ...                       decoder_intermediate_size=64, image_size=32, patch_size=8)
    >>> model = TFViTMAEForPreTraining(config)
    >>> out = model(np.random.rand(2, 3, 32, 32).astype("float32"))
    >>> tuple(out.logits.shape)
    (2, 16, 192)
    """

    default_name = "vit_mae_for_pre_training"

    def __init__(self, config: ViTMAEConfig | dict, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.decoder = ViTMAEDecoder(
            self.config,
            attn_implementation=self.vit.attn_implementation,
            seed=self.seed,
            name="decoder",
            dtype=self.dtype_policy,
        )
        self.build()

    def _stacks(self) -> list:
        return [self.vit, self.decoder]

    def call(
        self,
        pixel_values: TensorLike | dict,
        noise: TensorLike | None = None,
        head_mask: TensorLike | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> TFViTMAEForPreTrainingOutput | tuple:
        images, outputs = self._encode(
            pixel_values,
            noise,
            head_mask=head_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            training=training,
        )
        logits = self.decoder(
            outputs.last_hidden_state,
            outputs.ids_restore,
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        ).logits
        loss = masked_mean(self._per_patch_error(images, logits), outputs.mask)
        output = TFViTMAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=outputs.mask,
            ids_restore=outputs.ids_restore,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return self._return(output, return_dict)

    # ------------------------------------------------------ patches and loss
    def patchify(
        self, pixel_values: TensorLike, interpolate_pos_encoding: bool = False
    ) -> TensorLike:
        """Cut images into flattened patches.

        Args:
            pixel_values: Images in the model's `data_format`.
            interpolate_pos_encoding: Allow sizes other than `config.image_size`.

        Returns:
            `(batch, num_patches, patch_h * patch_w * num_channels)`; within a
            patch the order is (row, column, channel), as in MAE.
        """
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return patchify(images, self.config.patch_hw)

    def unpatchify(
        self,
        patchified_pixel_values: TensorLike,
        original_image_size: tuple[int, int] | None = None,
    ) -> TensorLike:
        """Inverse of `patchify`.

        Args:
            patchified_pixel_values: `(batch, num_patches, patch_h * patch_w * num_channels)`.
            original_image_size: `(height, width)`; defaults to `config.image_size`.

        Returns:
            Images in the model's `data_format`.
        """
        c = self.config
        patch_h, patch_w = c.patch_hw
        height, width = c.image_hw if original_image_size is None else original_image_size
        rows, cols = height // patch_h, width // patch_w
        x = ops.convert_to_tensor(patchified_pixel_values)
        if len(x.shape) != 3 or x.shape[1] != rows * cols or x.shape[2] != c.patch_dim:
            raise ValueError(
                f"patchified_pixel_values must have shape (batch, {rows * cols}, {c.patch_dim}) "
                f"for a {height}x{width} image, received {tuple(x.shape)}"
            )
        return self.to_model_layout(
            unpatchify(x, c.patch_hw, image_size=(height, width), channels=c.num_channels)
        )

    def _per_patch_error(self, images, logits):
        c = self.config
        return per_patch_error(images, logits, c.patch_hw, norm_pix_loss=c.norm_pix_loss)

    def per_example_loss(
        self,
        pixel_values: TensorLike,
        logits: TensorLike,
        mask: TensorLike,
        interpolate_pos_encoding: bool = False,
    ) -> TensorLike:
        """The loss of each image separately, `(batch,)` (for serving and analysis)."""
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return masked_mean(self._per_patch_error(images, logits), mask, axis=1)

    def reconstruct_image(
        self,
        pixel_values: TensorLike,
        logits: TensorLike,
        mask: TensorLike | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> TensorLike:
        """Images from predicted patches, in the model's layout and the input's pixel space.

        With `norm_pix_loss` the predictions are per-patch normalised; they are
        mapped back with each input patch's own mean and std, as MAE's
        visualisation does. With a `mask`, the visible patches (mask 0) are
        the input's own, so only the removed ones are predictions.
        """
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        c = self.config
        target, stats = patch_targets(images, c.patch_hw, c.norm_pix_loss)
        pred = ops.cast(logits, "float32")
        if stats is not None:
            mean, std = stats
            pred, target = pred * std + mean, target * std + mean
        if mask is not None:
            mask = ops.convert_to_tensor(mask, "float32")[..., None]
            pred = pred * mask + target * (1.0 - mask)
        return self.unpatchify(pred, tuple(images.shape[1:3]))

    def forward_loss(
        self,
        pixel_values: TensorLike,
        pred: TensorLike,
        mask: TensorLike,
        interpolate_pos_encoding: bool = False,
    ) -> TensorLike:
        """The pretraining loss for `pixel_values` (model layout), logits and mask."""
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return masked_mean(self._per_patch_error(images, pred), mask)

    def reconstruct(
        self,
        pixel_values: TensorLike,
        *,
        noise: TensorLike | None = None,
        seed: int | TensorLike | None = None,
        start: int | TensorLike = 0,
    ) -> dict:
        """Mask, encode and decode `pixel_values`, and return the images.

        The one implementation behind `predict_images`, the SavedModel's
        `reconstruct*` signatures, `tfvitmae reconstruct` and the
        reconstruction grids: one `seed` gives the same masks in all of them.

        Args:
            pixel_values: Float images in `data_format`.
            noise: Masking noise `(batch, num_patches)`; overrides `seed`.
            seed: An int (or int tensor): image `start + i` is masked by
                `masking_noise(seed, ...)`, whatever the batching. Without
                `noise` and `seed`, the model draws a fresh mask.
            start: The place of the batch's first image (with `seed`).

        Returns:
            A dict: `loss` (per image, `(batch,)`), `logits` (the predicted
            patches), `mask`, `reconstructed_image` (model layout, visible
            patches from the input) and `predicted_image` (every patch predicted).
        """
        if noise is None and seed is not None:
            batch = ops.shape(ops.convert_to_tensor(pixel_values))[0]
            noise = masking_noise(seed, batch, self.config.num_patches, start=start)
        out = self(pixel_values, noise=noise, return_dict=True)
        return {
            "loss": self.per_example_loss(pixel_values, out.logits, out.mask),
            "logits": out.logits,
            "mask": out.mask,
            "reconstructed_image": self.reconstruct_image(pixel_values, out.logits, out.mask),
            "predicted_image": self.reconstruct_image(pixel_values, out.logits),
        }

    def _image_outputs(self, pixel_values, start: int = 0, seed: int = 0) -> dict:
        """`predict_images`' outputs: uint8 reconstructions, the mask and the
        loss. Image `i`'s mask is drawn from `(seed, i)`, whatever the batching."""
        out = self.reconstruct(pixel_values, seed=seed, start=start)
        denormalize = self.image_processor.denormalize
        return {
            "reconstruction": denormalize(self.to_channels_last(out["reconstructed_image"])),
            "prediction": denormalize(self.to_channels_last(out["predicted_image"])),
            "mask": out["mask"],
            "loss": out["loss"],
        }

    # ----------------------------------------------------------- Keras fit
    def compile(self, *args, **kwargs) -> None:
        """Keras' `compile` (see `TFViTMAEPreTrainedModel.compile`). The model
        computes its own loss and learns without labels, so `loss` and
        `metrics` are refused rather than ignored."""
        positions = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")
        given = dict(zip(positions, args))
        given.update(kwargs)
        if given.get("loss") is not None:
            raise ValueError(
                f"{type(self).__name__} computes its own loss (the error of the masked "
                "patches; config.norm_pix_loss normalises their targets): leave loss unset, "
                f"received loss={given['loss']!r}"
            )
        for name in ("metrics", "weighted_metrics"):
            if given.get(name):
                raise ValueError(
                    f"{type(self).__name__} learns without labels, so compile {name} (which "
                    "compare labels with outputs) have nothing to measure; fit logs the "
                    "reconstruction loss as `loss`, and a callback can track more (e.g. "
                    f"ReconstructionCallback). Received {name}={given[name]!r}"
                )
        super().compile(*args, **kwargs)

    def compute_loss(
        self,
        x: TensorLike | dict | None = None,
        y: TensorLike | None = None,
        y_pred: TFViTMAEForPreTrainingOutput | tuple | None = None,
        sample_weight: TensorLike | None = None,
        training: bool = True,
    ) -> TensorLike:
        """The model's own loss (labels, if any, are ignored), plus `self.losses`."""
        # The loss comes first, as a dict or (return_dict=False) a tuple (Keras passes y_pred).
        loss = y_pred[0]  # type: ignore[index]
        if self.losses:
            loss = loss + ops.sum([ops.cast(extra, "float32") for extra in self.losses])
        if keras.backend.backend() != "tensorflow":
            return loss
        import tensorflow as tf

        # Keras sums gradients over tf.distribute replicas: each contributes 1/N.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def predict_step(self, *args: Any) -> Any:
        """Batch-aligned outputs only: the per-batch scalar `loss` is dropped.
        Takes `(data)`, or `(state, data)` on JAX, whose trainer is stateless
        (and then also returns the non-trainable variables)."""
        if keras.backend.backend() == "jax":
            state, data = args
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            trainable, non_trainable = state
            output, non_trainable = self.stateless_call(
                trainable, non_trainable, x, training=False, return_dict=True
            )
            return {k: v for k, v in output.items() if k != "loss"}, non_trainable
        (data,) = args
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        output = self(x, training=False, return_dict=True)
        return {k: v for k, v in output.items() if k != "loss"}
