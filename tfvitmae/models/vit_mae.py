"""ViTMAE, as in the paper: the embeddings, the encoder, the decoder, and the
documented models `TFViTMAEModel` and `TFViTMAEForPreTraining`.

Read top to bottom, this is the forward pass. The encoder embeds the
patches, adds the fixed position table, keeps a random 25% (MAE's masking),
prepends CLS and runs pre-norm blocks; the decoder re-inserts mask tokens,
un-shuffles, and predicts every patch's pixels; the loss is the pixel MSE
over the removed patches. The layers are in `layers.py`; input checks,
outputs and transformers' API in `pretrained.py`; the conveniences a user
calls on a model in `tasks.py`. The numerical reference is Hugging Face's
PyTorch `ViTMAE*` classes.
"""

from collections.abc import Sequence

import keras
from keras import ops

from ..utils.types import TensorLike
from .config import ViTMAEConfig, as_config
from .layers import (
    PatchEmbedding,
    RandomMasking,
    ViTMAEBlock,
    gather_rows,
    masked_mean,
    patchify,
    per_patch_error,
    resize_position_table,
    sincos_position_table,
    sub_seed,
    unpatchify,
)
from .pretrained import (
    TFViTMAEDecoderOutput,
    TFViTMAEForPreTrainingOutput,
    TFViTMAEModelOutput,
    TFViTMAEPreTrainedModel,
)
from .tasks import PreTrainingTasks

__all__ = [
    "TFViTMAEForPreTraining",
    "TFViTMAEModel",
    "TFViTMAEPreTrainedModel",
    "ViTMAEDecoder",
    "ViTMAEEmbeddings",
    "ViTMAEEncoder",
]


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEEmbeddings(keras.layers.Layer):
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
        super().__init__(**kwargs)
        self.config, self.seed = as_config(config), seed
        c = self.config
        self.patch_size, self.grid_size = c.patch_hw, c.grid_size
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

    def call(
        self,
        images: TensorLike,
        noise: TensorLike | None = None,
        interpolate_pos_encoding: bool = False,
        unmasked: bool = False,
    ) -> tuple[TensorLike, TensorLike, TensorLike]:
        embeddings = self.patch_embeddings(images)  # (batch, num_patches, hidden)
        position = ops.cast(self.position_embeddings, embeddings.dtype)
        if interpolate_pos_encoding:
            grid = (images.shape[1] // self.patch_size[0], images.shape[2] // self.patch_size[1])
            position = resize_position_table(position, self.grid_size, grid)
        embeddings = embeddings + position[:, 1:]
        # The config's ratio at call time: `model.config.mask_ratio = 0.0` takes effect
        # at the next call, as in transformers (in a traced function, at its next trace).
        ratio = 0.0 if unmasked else self.config.mask_ratio
        embeddings, mask, ids_restore = self.random_masking(
            embeddings, noise=noise, mask_ratio=ratio
        )
        cls = ops.cast(self.cls_token, embeddings.dtype) + position[:, :1]
        cls = ops.broadcast_to(cls, (ops.shape(embeddings)[0], 1, embeddings.shape[-1]))
        return ops.concatenate([cls, embeddings], axis=1), mask, ids_restore

    def build(self, input_shape: tuple | None = None) -> None:
        self.patch_embeddings.build()
        self.cls_token, self.position_embeddings = _token_and_positions(
            self, "cls_token", "position_embeddings", self.config.hidden_size
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}


def _token_and_positions(layer, token_name, table_name, width):
    """A learned `(1, 1, width)` token (CLS or mask) and the fixed 2-D sin-cos
    table of `width`: stored (checkpoints carry it) but never trained."""
    c = layer.config
    token = layer.add_weight(
        shape=(1, 1, width),
        initializer=keras.initializers.RandomNormal(stddev=c.initializer_range),
        name=token_name,
    )
    table = sincos_position_table(c.grid_size, width)[None]
    positions = layer.add_weight(
        shape=table.shape,
        initializer=keras.initializers.Constant(table),
        trainable=False,
        name=table_name,
    )
    return token, positions


class _BlockStack(keras.layers.Layer):
    """What the encoder and decoder share: the config, the block options and
    the loop over the blocks (`run_blocks`)."""

    def __init__(
        self,
        config: ViTMAEConfig | dict,
        attn_implementation: str = "sdpa",
        seed: int | None = None,
        remat: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.config, self.seed, self.remat = as_config(config), seed, remat
        self._attn_implementation = attn_implementation  # the blocks' at construction

    def make_blocks(
        self,
        width: int,
        depth: int,
        heads: int,
        intermediate: int,
        seed: int | None,
        drop_path_rate: float = 0.0,
    ) -> list[ViTMAEBlock]:
        """`depth` blocks; stochastic depth rises linearly to `drop_path_rate`
        at the last block."""
        c = self.config
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        return [
            ViTMAEBlock(
                width,
                heads,
                intermediate,
                hidden_act=c.hidden_act,
                qkv_bias=c.qkv_bias,
                hidden_dropout=c.hidden_dropout_prob,
                attention_dropout=c.attention_probs_dropout_prob,
                layer_norm_eps=c.layer_norm_eps,
                initializer_range=c.initializer_range,
                attn_implementation=self._attn_implementation,
                drop_path=rates[i],
                seed=sub_seed(seed, f"layer_{i}"),
                name=f"layer_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(depth)
        ]

    def run_blocks(
        self,
        hidden_states: TensorLike,
        *,
        head_masks: Sequence[TensorLike] | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        training: bool = False,
    ) -> tuple[TensorLike, tuple | None, tuple | None]:
        """`(hidden_states, every block's hidden states or None, every
        block's attention probabilities or None)`."""
        all_hidden: list | None = [hidden_states] if output_hidden_states else None
        all_attentions: list | None = [] if output_attentions else None
        for i, block in enumerate(self.blocks):
            head_mask = None if head_masks is None else head_masks[i]
            if self.remat and training and not output_attentions:
                # Recompute the block in the backward pass instead of keeping its
                # activations. Its dropout seeds are drawn here, outside: drawn
                # inside, the recomputation would draw other masks.
                seeds = block.draw_seeds()

                def run(x, block=block, head_mask=head_mask, seeds=seeds):
                    return block(x, head_mask=head_mask, training=True, seeds=seeds)[0]

                hidden_states, probs = keras.remat(run)(hidden_states), None
            else:
                hidden_states, probs = block(
                    hidden_states,
                    head_mask=head_mask,
                    output_attentions=output_attentions,
                    training=training,
                )
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_attentions is not None:
                all_attentions.append(probs)
        return (
            hidden_states,
            None if all_hidden is None else tuple(all_hidden),
            None if all_attentions is None else tuple(all_attentions),
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "config": self.config.to_dict(),
            # The blocks' path (`set_attn_implementation` may have switched it).
            "attn_implementation": (
                self.blocks[0].attention.attn_implementation
                if self.blocks
                else self._attn_implementation
            ),
            "seed": self.seed,
            "remat": self.remat,
        }


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEEncoder(_BlockStack):
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
        remat: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)  # keep the noise float32 (see ViTMAEEmbeddings)
        super().__init__(config, attn_implementation, seed, remat, **kwargs)
        c, self.drop_path_rate = self.config, drop_path_rate
        self.embeddings = ViTMAEEmbeddings(c, seed=seed, name="embeddings", dtype=self.dtype_policy)
        self.blocks = self.make_blocks(
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            seed,
            drop_path_rate,
        )
        self.layernorm = keras.layers.LayerNormalization(
            epsilon=c.layer_norm_eps, name="layernorm", dtype=self.dtype_policy
        )

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
        )  # (batch, 1 + len_keep, hidden)
        hidden_states, all_hidden, all_attentions = self.run_blocks(
            hidden_states,
            head_masks=head_masks,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        return TFViTMAEModelOutput(
            last_hidden_state=self.layernorm(hidden_states) if final_norm else hidden_states,
            mask=mask,
            ids_restore=ids_restore,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )

    def build(self, input_shape: tuple | None = None) -> None:
        self.embeddings.build()
        for block in self.blocks:
            block.build()
        self.layernorm.build((None, None, self.config.hidden_size))

    def get_config(self) -> dict:
        return {**super().get_config(), "drop_path_rate": self.drop_path_rate}


@keras.saving.register_keras_serializable(package="tfvitmae")
class ViTMAEDecoder(_BlockStack):
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
        remat: bool = False,
        **kwargs,
    ):
        super().__init__(config, attn_implementation, seed, remat, **kwargs)
        c = self.config
        self.num_patches = c.num_patches
        init = keras.initializers.TruncatedNormal(stddev=c.initializer_range)
        self.decoder_embed = keras.layers.Dense(
            c.decoder_hidden_size,
            kernel_initializer=init,
            name="decoder_embed",
            dtype=self.dtype_policy,
        )
        self.decoder_layers = self.make_blocks(
            c.decoder_hidden_size,
            c.decoder_num_hidden_layers,
            c.decoder_num_attention_heads,
            c.decoder_intermediate_size,
            sub_seed(seed, "decoder"),
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

    def call(
        self,
        hidden_states: TensorLike,
        ids_restore: TensorLike,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        training: bool = False,
    ) -> TFViTMAEDecoderOutput:
        x = self.decoder_embed(hidden_states)  # (batch, 1 + len_keep, decoder_hidden)
        batch, width, num_patches = ops.shape(x)[0], x.shape[-1], ids_restore.shape[1]
        # Mask tokens where patches were removed, then every patch back in place.
        num_masked = num_patches + 1 - x.shape[1]
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (batch, num_masked, width)
        )
        patches = gather_rows(ops.concatenate([x[:, 1:], mask_tokens], axis=1), ids_restore)
        x = ops.concatenate([x[:, :1], patches], axis=1)  # (batch, 1 + num_patches, width)
        position = ops.cast(self.decoder_pos_embed, x.dtype)
        if interpolate_pos_encoding:  # as Hugging Face: resized as a 1-D sequence
            position = resize_position_table(position, (1, self.num_patches), (1, num_patches))
        x, all_hidden, all_attentions = self.run_blocks(
            x + position,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        logits = self.decoder_pred(self.decoder_norm(x))[:, 1:]  # drop CLS
        return TFViTMAEDecoderOutput(
            logits=ops.cast(logits, "float32"), hidden_states=all_hidden, attentions=all_attentions
        )

    def build(self, input_shape: tuple | None = None) -> None:
        c = self.config
        self.decoder_embed.build((None, None, c.hidden_size))
        self.mask_token, self.decoder_pos_embed = _token_and_positions(
            self, "mask_token", "decoder_pos_embed", c.decoder_hidden_size
        )
        for block in self.decoder_layers:
            block.build()
        self.decoder_norm.build((None, None, c.decoder_hidden_size))
        self.decoder_pred.build((None, None, c.decoder_hidden_size))


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
            image_processor, remat: See `TFViTMAEPreTrainedModel`.

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
        self.vit = ViTMAEEncoder(
            self.config,
            attn_implementation=self.attn_implementation,
            seed=self.seed,
            drop_path_rate=self.drop_path_rate,
            remat=self.remat,
            name="vit",
            dtype=self.dtype_policy,
        )
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
        images, inputs = self.encoder_inputs(
            pixel_values,
            noise,
            head_mask=head_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )
        return self._return(self.vit(images, training=training, **inputs), return_dict)

    def build(self, input_shape: tuple | None = None) -> None:
        # Every shape is known from the config: all weights exist up front, so a
        # model can be summarised, saved or loaded into without a dummy call.
        self.vit.build()


@keras.saving.register_keras_serializable(package="tfvitmae")
class TFViTMAEForPreTraining(PreTrainingTasks, TFViTMAEPreTrainedModel):
    """ViTMAE with the pixel-reconstruction decoder and loss, for pretraining.

    Train it with `compile(optimizer=...)` and `fit(images)`: no labels and no
    `loss` argument are needed, the model's own masked-patch MSE is minimised.
    Batches may be image tensors or dicts with `"pixel_values"` (and `"noise"`).

    Args:
        config, data_format, attn_implementation, seed, drop_path_rate,
            image_processor, remat: See `TFViTMAEPreTrainedModel`.

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
        options = dict(
            attn_implementation=self.attn_implementation,
            seed=self.seed,
            remat=self.remat,
            dtype=self.dtype_policy,
        )
        self.vit = ViTMAEEncoder(
            self.config, drop_path_rate=self.drop_path_rate, name="vit", **options
        )
        self.decoder = ViTMAEDecoder(self.config, name="decoder", **options)
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
    ) -> TFViTMAEForPreTrainingOutput | tuple:
        images, inputs = self.encoder_inputs(
            pixel_values,
            noise,
            head_mask=head_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )
        encoded = self.vit(images, training=training, **inputs)
        logits = self.decoder(
            encoded.last_hidden_state,
            encoded.ids_restore,
            interpolate_pos_encoding=inputs["interpolate_pos_encoding"],
            training=training,
        ).logits
        loss = self._masked_loss(images, logits, encoded.mask)
        output = TFViTMAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return self._return(output, return_dict)

    def build(self, input_shape: tuple | None = None) -> None:
        self.vit.build()  # every shape is known from the config (see TFViTMAEModel.build)
        self.decoder.build()

    # ------------------------------------------------------ patches and loss
    def patchify(
        self, pixel_values: TensorLike, interpolate_pos_encoding: bool = False
    ) -> TensorLike:
        """Cut images (in the model's `data_format`) into flattened patches
        `(batch, num_patches, patch_h * patch_w * num_channels)`; within a
        patch the order is (row, column, channel), as in MAE."""
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return patchify(images, self.input_sizes.patch_hw)

    def unpatchify(
        self,
        patchified_pixel_values: TensorLike,
        original_image_size: tuple[int, int] | None = None,
    ) -> TensorLike:
        """Inverse of `patchify`: images of `original_image_size` (`(height,
        width)`, by default `config.image_size`) in the model's `data_format`."""
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
        images = unpatchify(x, c.patch_hw, image_size=(height, width), channels=c.num_channels)
        return self.to_model_layout(images)

    def forward_loss(
        self,
        pixel_values: TensorLike,
        pred: TensorLike,
        mask: TensorLike,
        interpolate_pos_encoding: bool = False,
    ) -> TensorLike:
        """The pretraining loss for `pixel_values` (model layout), logits and mask."""
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return self._masked_loss(images, pred, mask)

    def _masked_loss(self, images, logits, mask):
        """Mean squared pixel error over the removed patches (`mask == 1`)."""
        patch_hw, norm = self.input_sizes.patch_hw, self.config.norm_pix_loss
        return masked_mean(per_patch_error(images, logits, patch_hw, norm_pix_loss=norm), mask)
