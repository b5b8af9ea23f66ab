"""The encoder and decoder stacks of MAE, as Keras layers configured by a
`ViTMAEConfig`.

The stages follow the MAE paper and Hugging Face's PyTorch `ViTMAE*` classes
(the numerical reference): embed patches, add the fixed position table, mask
randomly, prepend CLS, run pre-norm blocks, LayerNorm; the decoder re-inserts
mask tokens, un-shuffles, and predicts every patch's pixels.
"""

import keras
import tensorflow as tf
from keras import ops

from .attention import check_attn_implementation
from .config import as_config
from .layers import PatchEmbedding, RandomMasking, ViTMAEBlock
from .outputs import TFViTMAEDecoderOutput, TFViTMAEModelOutput
from .position import resize_position_table, sincos_position_table
from .seeds import sub_seed


def _block_stack(
    config,
    hidden_size,
    num_layers,
    num_heads,
    intermediate_size,
    attn_implementation,
    seed,
    dtype,
    drop_path_rate=0.0,
):
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
            attn_implementation=attn_implementation,
            drop_path=rates[i],
            seed=sub_seed(seed, f"layer_{i}"),
            name=f"layer_{i}",
            dtype=dtype,
        )
        for i in range(num_layers)
    ]


def _run_blocks(
    blocks, hidden_states, head_masks, output_attentions, output_hidden_states, training
):
    all_hidden = [hidden_states] if output_hidden_states else None
    all_attentions = [] if output_attentions else None
    for i, block in enumerate(blocks):
        hidden_states, probs = block(
            hidden_states,
            head_mask=None if head_masks is None else head_masks[i],
            output_attentions=output_attentions,
            training=training,
        )
        if output_hidden_states:
            all_hidden.append(hidden_states)
        if output_attentions:
            all_attentions.append(probs)
    return (
        hidden_states,
        None if all_hidden is None else tuple(all_hidden),
        None if all_attentions is None else tuple(all_attentions),
    )


class _ConfigLayer(keras.layers.Layer):
    """A layer whose constructor arguments are a `ViTMAEConfig` (+ options)."""

    def __init__(self, config, attn_implementation="sdpa", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        self.seed = seed
        self._attn_implementation = check_attn_implementation(attn_implementation)

    @property
    def attn_implementation(self):
        """`"sdpa"` or `"eager"`; setting it switches every block (weights are shared)."""
        return self._attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value):
        self._attn_implementation = check_attn_implementation(value)
        for block in getattr(self, "blocks", ()):
            block.attn_implementation = value

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

    def __init__(self, config, seed=None, **kwargs):
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

    def build(self, input_shape=None):
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
        self, images, noise=None, interpolate_pos_encoding=False, training=False, unmasked=False
    ):
        embeddings = self.patch_embeddings(images)
        position = ops.cast(self.position_embeddings, embeddings.dtype)
        grid = (
            images.shape[1] // self.config.patch_hw[0],
            images.shape[2] // self.config.patch_hw[1],
        )
        if interpolate_pos_encoding:
            position = resize_position_table(position, self.config.grid_size, grid)
        embeddings = embeddings + position[:, 1:]
        embeddings, mask, ids_restore = self.random_masking(
            embeddings, noise=noise, mask_ratio=0.0 if unmasked else None
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

    def __init__(self, config, attn_implementation="sdpa", seed=None, drop_path_rate=0.0, **kwargs):
        kwargs.setdefault("autocast", False)  # keep the noise float32 (see ViTMAEEmbeddings)
        super().__init__(config, attn_implementation=attn_implementation, seed=seed, **kwargs)
        c = self.config
        self.drop_path_rate = drop_path_rate
        self.embeddings = ViTMAEEmbeddings(c, seed=seed, name="embeddings", dtype=self.dtype_policy)
        self.blocks = _block_stack(
            c,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            attn_implementation,
            seed,
            self.dtype_policy,
            drop_path_rate,
        )
        self.layernorm = keras.layers.LayerNormalization(
            epsilon=c.layer_norm_eps, name="layernorm", dtype=self.dtype_policy
        )

    def get_config(self):
        config = super().get_config()
        config.update(drop_path_rate=self.drop_path_rate)
        return config

    def build(self, input_shape=None):
        self.embeddings.build()
        for block in self.blocks:
            block.build()
        self.layernorm.build((None, None, self.config.hidden_size))

    def call(
        self,
        images,
        noise=None,
        head_masks=None,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        training=False,
        final_norm=True,
        unmasked=False,
    ):
        hidden_states, mask, ids_restore = self.embeddings(
            images,
            noise=noise,
            interpolate_pos_encoding=interpolate_pos_encoding,
            training=training,
            unmasked=unmasked,
        )
        hidden_states, all_hidden, all_attentions = _run_blocks(
            self.blocks,
            hidden_states,
            head_masks,
            output_attentions,
            output_hidden_states,
            training,
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

    def __init__(self, config, attn_implementation="sdpa", seed=None, **kwargs):
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
            c.decoder_hidden_size,
            c.decoder_num_hidden_layers,
            c.decoder_num_attention_heads,
            c.decoder_intermediate_size,
            attn_implementation,
            sub_seed(seed, "decoder"),
            self.dtype_policy,
        )
        self.decoder_norm = keras.layers.LayerNormalization(
            epsilon=c.layer_norm_eps, name="decoder_norm", dtype=self.dtype_policy
        )
        self.decoder_pred = keras.layers.Dense(
            c.patch_dim, kernel_initializer=init, name="decoder_pred", dtype=self.dtype_policy
        )

    @property
    def blocks(self):
        return self.decoder_layers

    def build(self, input_shape=None):
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
        hidden_states,
        ids_restore,
        interpolate_pos_encoding=False,
        output_attentions=False,
        output_hidden_states=False,
        training=False,
    ):
        x = self.decoder_embed(hidden_states)
        batch, num_patches = ops.shape(x)[0], ids_restore.shape[1]
        num_masked = num_patches + 1 - x.shape[1]
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (batch, num_masked, self.config.decoder_hidden_size)
        )
        patches = ops.concatenate([x[:, 1:], mask_tokens], axis=1)
        patches = tf.gather(patches, ids_restore, batch_dims=1)
        x = ops.concatenate([x[:, :1], patches], axis=1)
        position = ops.cast(self.decoder_pos_embed, x.dtype)
        if interpolate_pos_encoding:
            # As Hugging Face: the table is resized as a 1-D sequence.
            position = resize_position_table(
                position, (1, self.config.num_patches), (1, num_patches)
            )
        x = x + position
        x, all_hidden, all_attentions = _run_blocks(
            self.decoder_layers, x, None, output_attentions, output_hidden_states, training
        )
        logits = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        return TFViTMAEDecoderOutput(
            logits=ops.cast(logits, "float32"), hidden_states=all_hidden, attentions=all_attentions
        )
