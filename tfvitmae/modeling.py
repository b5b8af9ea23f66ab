"""`TFViTMAEModel` and `TFViTMAEForPreTraining`, and the encoder and decoder
stacks they are made of.

The stages follow the MAE paper and Hugging Face's PyTorch `ViTMAE*` classes
(the numerical reference): embed patches, add the fixed position table, mask
randomly, prepend CLS, run pre-norm blocks, LayerNorm; the decoder re-inserts
mask tokens, un-shuffles, and predicts every patch's pixels.
"""

import os

import keras
import tensorflow as tf
from keras import ops

from .config import ViTMAEConfig
from .layers import (
    PatchEmbedding,
    RandomMasking,
    ViTMAEBlock,
    check_attn_implementation,
    resize_position_table,
    sincos_position_table,
)
from .outputs import TFViTMAEDecoderOutput, TFViTMAEForPreTrainingOutput, TFViTMAEModelOutput

DATA_FORMATS = ("channels_first", "channels_last")
# norm_pix_loss: per-patch (t - mean) / sqrt(var + eps), var unbiased as in PyTorch.
NORM_PIX_EPS = 1e-6


def _as_config(config):
    if isinstance(config, ViTMAEConfig):
        return config
    if isinstance(config, dict):
        return ViTMAEConfig.from_dict(config)
    raise ValueError(f"config must be a ViTMAEConfig or a dict, received {type(config).__name__}")


def _sub_seed(seed, offset):
    # Distinct seeds per sub-layer: equal seeds would give equal dropout masks.
    return None if seed is None else seed + offset


def _block_stack(config, hidden_size, num_layers, num_heads, intermediate_size, attn_implementation, seed, dtype,
                 drop_path_rate=0.0):
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
            seed=_sub_seed(seed, 1 + i),
            name=f"layer_{i}",
            dtype=dtype,
        )
        for i in range(num_layers)
    ]


def _run_blocks(blocks, hidden_states, head_masks, output_attentions, output_hidden_states, training):
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
        self.config = _as_config(config)
        self.seed = seed
        self._attn_implementation = attn_implementation

    def get_config(self):
        base = super().get_config()
        base.update(config=self.config.to_dict(), attn_implementation=self._attn_implementation, seed=self.seed)
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
        super().__init__(config, seed=seed, **kwargs)
        c = self.config
        self.patch_embeddings = PatchEmbedding(
            c.hidden_size, c.patch_hw, c.num_channels, name="patch_embeddings", dtype=self.dtype_policy
        )
        self.random_masking = RandomMasking(c.mask_ratio, seed=seed, name="random_masking", dtype=self.dtype_policy)

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
            shape=table.shape, initializer=keras.initializers.Constant(table), trainable=False, name="position_embeddings"
        )

    def call(self, images, noise=None, interpolate_pos_encoding=False, training=False, unmasked=False):
        embeddings = self.patch_embeddings(images)
        position = ops.cast(self.position_embeddings, embeddings.dtype)
        grid = (images.shape[1] // self.config.patch_hw[0], images.shape[2] // self.config.patch_hw[1])
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
        super().__init__(config, attn_implementation=attn_implementation, seed=seed, **kwargs)
        c = self.config
        self.drop_path_rate = drop_path_rate
        self.embeddings = ViTMAEEmbeddings(c, seed=seed, name="embeddings", dtype=self.dtype_policy)
        self.blocks = _block_stack(
            c, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
            attn_implementation, seed, self.dtype_policy, drop_path_rate,
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
            images, noise=noise, interpolate_pos_encoding=interpolate_pos_encoding, training=training,
            unmasked=unmasked,
        )
        hidden_states, all_hidden, all_attentions = _run_blocks(
            self.blocks, hidden_states, head_masks, output_attentions, output_hidden_states, training
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
            c.decoder_hidden_size, kernel_initializer=init, name="decoder_embed", dtype=self.dtype_policy
        )
        self.decoder_layers = _block_stack(
            c, c.decoder_hidden_size, c.decoder_num_hidden_layers, c.decoder_num_attention_heads,
            c.decoder_intermediate_size, attn_implementation, _sub_seed(seed, 1000), self.dtype_policy,
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
            shape=table.shape, initializer=keras.initializers.Constant(table), trainable=False, name="decoder_pos_embed"
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
            position = resize_position_table(position, (1, self.config.num_patches), (1, num_patches))
        x = x + position
        x, all_hidden, all_attentions = _run_blocks(
            self.decoder_layers, x, None, output_attentions, output_hidden_states, training
        )
        logits = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        return TFViTMAEDecoderOutput(
            logits=ops.cast(logits, "float32"), hidden_states=all_hidden, attentions=all_attentions
        )


class TFViTMAEPreTrainedModel(keras.Model):
    """What the two models share: the config, input checks and serialization.

    Args:
        config: A `ViTMAEConfig` (or its dict).
        data_format: Layout of `pixel_values`: `"channels_first"` (the
            documented `(batch, num_channels, height, width)`, the default) or
            `"channels_last"` (`(batch, height, width, num_channels)`).
        attn_implementation: `"sdpa"` (fused QKV + `keras.ops.dot_product_attention`,
            the default) or `"eager"` (explicit softmax). Both give the same
            numbers; `output_attentions=True` always takes the explicit path.
        seed: Seed for the masking noise and dropout. Without it, masks still
            follow `keras.utils.set_random_seed` when that was called first.
        drop_path_rate: Stochastic depth of the encoder (for fine-tuning).
        **kwargs: `keras.Model` arguments (`name`, `dtype`, ...).
    """

    default_name = "vit_mae"

    def __init__(self, config, data_format="channels_first", attn_implementation="sdpa", seed=None,
                 drop_path_rate=0.0, **kwargs):
        kwargs.setdefault("name", self.default_name)
        super().__init__(**kwargs)
        if data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {DATA_FORMATS}, received {data_format!r}")
        check_attn_implementation(attn_implementation)
        self.config = _as_config(config)
        self.data_format = data_format
        self.seed = seed
        self.drop_path_rate = drop_path_rate
        self.vit = ViTMAEEncoder(
            self.config, attn_implementation=attn_implementation, seed=seed, drop_path_rate=drop_path_rate,
            name="vit", dtype=self.dtype_policy,
        )

    # -------------------------------------------------------------- options
    @property
    def attn_implementation(self):
        return self.vit.blocks[0].attn_implementation if self.vit.blocks else self.vit._attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value):
        """Switch every block between `"sdpa"` and `"eager"` (weights are shared)."""
        check_attn_implementation(value)
        for layer in self._attention_stacks():
            layer._attn_implementation = value
            for block in layer.blocks:
                block.attn_implementation = value

    def _attention_stacks(self):
        return [self.vit]

    @property
    def input_dtype(self):
        # Keep pixels in float32 under mixed precision: the loss target is the
        # input image, and the layers cast for themselves.
        compute = self.compute_dtype
        return "float32" if compute in ("float16", "bfloat16") else compute

    # ---------------------------------------------------------- input checks
    def _unpack_inputs(self, pixel_values, noise):
        """Accept `{"pixel_values": ..., "noise": ...}` batches as `fit` feeds them."""
        if isinstance(pixel_values, dict):
            unknown = set(pixel_values) - {"pixel_values", "noise"}
            if "pixel_values" not in pixel_values or unknown:
                raise ValueError(
                    "A dict input must have the key 'pixel_values' (and optionally 'noise'), "
                    f"received keys {sorted(pixel_values)}"
                )
            if noise is None:
                noise = pixel_values.get("noise")
            pixel_values = pixel_values["pixel_values"]
        return pixel_values, noise

    def _check_pixel_values(self, pixel_values, interpolate_pos_encoding):
        """Validate `pixel_values` and return them channels-last."""
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        if not tf.is_tensor(pixel_values):
            pixel_values = ops.convert_to_tensor(pixel_values)
        c = self.config
        layout = "(batch, num_channels, height, width)" if self.data_format == "channels_first" else (
            "(batch, height, width, num_channels)"
        )
        if not pixel_values.dtype.is_floating:
            raise ValueError(
                f"pixel_values must be a float tensor (normalised pixels), received dtype "
                f"{pixel_values.dtype.name}; convert and normalise images first"
            )
        if pixel_values.shape.rank != 4:
            raise ValueError(
                f"pixel_values must have rank 4 {layout} ({self.data_format}), "
                f"received shape {tuple(pixel_values.shape)}"
            )
        if self.data_format == "channels_first":
            pixel_values = ops.transpose(pixel_values, (0, 2, 3, 1))
        _, height, width, channels = pixel_values.shape
        if channels != c.num_channels:
            raise ValueError(
                f"pixel_values must have {c.num_channels} channels in layout {layout}, received {channels} "
                f"(input shape {tuple(ops.shape(pixel_values))} after moving channels last). "
                "For channels-last input, build the model with data_format='channels_last'."
            )
        if height is None or width is None:
            raise ValueError(
                f"pixel_values needs a static height and width, received {tuple(pixel_values.shape)}"
            )
        patch_h, patch_w = c.patch_hw
        if interpolate_pos_encoding:
            if height % patch_h or width % patch_w or height < patch_h or width < patch_w:
                raise ValueError(
                    f"With interpolate_pos_encoding=True, height and width must be positive multiples of "
                    f"patch_size {c.patch_hw}, received {height}x{width}"
                )
        elif (height, width) != c.image_hw:
            raise ValueError(
                f"Input image size {height}x{width} does not match the model's {c.image_hw[0]}x{c.image_hw[1]}; "
                "resize the images or pass interpolate_pos_encoding=True"
            )
        if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(pixel_values))):
            raise ValueError("pixel_values contains NaN or infinite values")
        return pixel_values

    def _check_noise(self, noise, images):
        if noise is None:
            return None
        if not tf.is_tensor(noise):
            noise = ops.convert_to_tensor(noise)
        if not noise.dtype.is_floating:
            raise ValueError(f"noise must be a float tensor, received dtype {noise.dtype.name}")
        patch_h, patch_w = self.config.patch_hw
        num_patches = (images.shape[1] // patch_h) * (images.shape[2] // patch_w)
        expected = (images.shape[0], num_patches)
        shape = tuple(noise.shape)
        if len(shape) != 2 or shape[1] != num_patches or (
            None not in (shape[0], expected[0]) and shape[0] != expected[0]
        ):
            raise ValueError(f"noise must have shape (batch, num_patches) = {expected}, received {shape}")
        return ops.cast(noise, "float32")

    def _head_masks(self, head_mask):
        """Per-block `(num_heads,)` multipliers from a `(heads,)` or `(layers, heads)` mask."""
        if head_mask is None:
            return None
        head_mask = ops.convert_to_tensor(head_mask, "float32")
        layers, heads = self.config.num_hidden_layers, self.config.num_attention_heads
        shape = tuple(head_mask.shape)
        if shape == (heads,):
            return [head_mask] * layers
        if shape == (layers, heads):
            return [head_mask[i] for i in range(layers)]
        raise ValueError(
            f"head_mask must have shape (num_heads,) = ({heads},) or (num_layers, num_heads) = "
            f"({layers}, {heads}), received {shape}"
        )

    def _encode(self, pixel_values, noise, head_mask, output_attentions, output_hidden_states,
                interpolate_pos_encoding, training):
        """Check the inputs and run the encoder; returns `(channels-last images, encoder output)`."""
        pixel_values, noise = self._unpack_inputs(pixel_values, noise)
        images = self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        noise = self._check_noise(noise, images)
        outputs = self.vit(
            images,
            noise=noise,
            head_masks=self._head_masks(head_mask),
            output_attentions=bool(self.config.output_attentions if output_attentions is None else output_attentions),
            output_hidden_states=bool(
                self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
            ),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        )
        return images, outputs

    def _return(self, output, return_dict):
        use_dict = self.config.use_return_dict if return_dict is None else return_dict
        return output if use_dict else output.to_tuple()

    # ------------------------------------------------- checkpoints and Hub
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, config=None, from_pt=None, strict=True,
                        output_loading_info=False, revision=None, token=None, cache_dir=None,
                        local_files_only=False, force_download=False, **kwargs):
        """Build the model from a checkpoint directory, weights file or Hub repo id.

        The directory (or repo) holds `config.json` and one of: this package's
        `model.weights.h5`, `model.safetensors` (or a sharded index),
        `pytorch_model.bin`, or Hugging Face's legacy `tf_model.h5`. An
        original-MAE `.pth` file loads on its own (its config is inferred).
        PyTorch layouts from `transformers` 4 and 5 are recognised by their names.

        Args:
            pretrained_model_name_or_path: Directory, weights file, or Hub id
                such as `"facebook/vit-mae-base"`.
            config: A `ViTMAEConfig` to use instead of the checkpoint's.
            from_pt: Accepted for compatibility; the format is detected.
            strict: Raise when the checkpoint does not fit the model exactly
                (missing, unused or mis-shaped tensors), leaving nothing
                loaded. `strict=False` loads what fits and warns about the rest.
                A decoder missing from, or extra to, the checkpoint only warns.
            output_loading_info: Also return the `weights.LoadReport`.
            revision, token, cache_dir, local_files_only, force_download:
                Passed to `huggingface_hub` for Hub ids.
            **kwargs: `ViTMAEConfig` fields to override (e.g. `mask_ratio=0.5`)
                and model arguments (`data_format`, `attn_implementation`, ...).

        Returns:
            The model, or `(model, report)` with `output_loading_info=True`.
        """
        from . import hub

        return hub.from_pretrained(
            cls, pretrained_model_name_or_path, config=config, from_pt=from_pt, strict=strict,
            output_loading_info=output_loading_info, revision=revision, token=token, cache_dir=cache_dir,
            local_files_only=local_files_only, force_download=force_download, **kwargs,
        )

    def load_pretrained_weights(self, path, strict=True):
        """Load a checkpoint directory or weights file into this model, all or nothing.

        Returns:
            A `weights.LoadReport` of what was loaded, missing and unused.
        """
        from . import hub

        config_path, weights_path = hub.resolve_files(os.fspath(path))
        config = ViTMAEConfig.from_pretrained(config_path) if config_path else self.config
        return hub.load_weights_file(self, config, weights_path, strict=strict)

    def save_pretrained(self, save_directory, pytorch=False, safe_serialization=True, push_to_hub=False, **hub_kwargs):
        """Write `config.json` and the weights to `save_directory`.

        Args:
            save_directory: Created if missing. Files are staged in a temporary
                folder first, so a failed save leaves the directory as it was.
            pytorch: Write the `transformers` PyTorch layout, which
                `transformers.ViTMAEForPreTraining.from_pretrained` (or
                `ViTMAEModel`) loads, instead of this package's `model.weights.h5`.
            safe_serialization: With `pytorch=True`, `model.safetensors`
                (default) rather than `pytorch_model.bin` (which needs torch).
            push_to_hub: Also upload to the Hub repo `hub_kwargs["repo_id"]`
                (default: the directory's name).
            **hub_kwargs: Arguments of `push_to_hub`.

        Returns:
            The paths written.
        """
        from . import hub

        written = hub.save_pretrained(self, save_directory, pytorch=pytorch, safe_serialization=safe_serialization)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
            self.push_to_hub(repo_id, pytorch=pytorch, safe_serialization=safe_serialization, **hub_kwargs)
        return written

    def push_to_hub(self, repo_id, commit_message=None, private=None, token=None, revision=None, create_pr=False,
                    pytorch=False, safe_serialization=True):
        """Upload `config.json` and the weights (as `save_pretrained` writes them) to a Hub repo."""
        from . import hub

        return hub.push_to_hub(
            self, repo_id, commit_message=commit_message, private=private, token=token, revision=revision,
            create_pr=create_pr, pytorch=pytorch, safe_serialization=safe_serialization,
        )

    @classmethod
    def init_kwargs_from_config(cls, config):
        """Constructor arguments stored in a saved `config.json` beside the config."""
        return {}

    def config_extras(self, pytorch=False):
        """Keys `save_pretrained` adds to `config.json` (see `init_kwargs_from_config`)."""
        return {}

    def pytorch_state_dict(self):
        """The weights in the transformers PyTorch layout, as NumPy arrays."""
        from .weights import to_state_dict

        return to_state_dict(self, "transformers")

    def export(self, filepath, format="tf_saved_model", verbose=True, **kwargs):
        """Export a SavedModel for TensorFlow Serving (see `tfvitmae.export`).

        Args:
            filepath: A new directory (for TF Serving, `BASE/VERSION`).
            format: `"tf_saved_model"`; other formats go to `keras.Model.export`.
            verbose: Print the signatures.
            **kwargs: `raw_inputs`, `warmup`, `top_k` of `export.export_saved_model`.

        Returns:
            The exported signature names.
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose, **kwargs)
        from .export import export_saved_model

        return export_saved_model(self, filepath, verbose=verbose, **kwargs)

    # -------------------------------------------------------- serialization
    def build(self, input_shape=None):
        # Every shape is known from the config: build all weights up front so a
        # model can be summarised, saved or loaded into without a dummy call.
        for layer in self._attention_stacks():
            layer.build()

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "config": self.config.to_dict(),
            "data_format": self.data_format,
            "attn_implementation": self.attn_implementation,
            "seed": self.seed,
            "drop_path_rate": self.drop_path_rate,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["config"] = ViTMAEConfig.from_dict(config["config"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfvitmae")
class TFViTMAEModel(TFViTMAEPreTrainedModel):
    """The bare ViTMAE encoder, outputting raw hidden states.

    Masking is applied as in pretraining (set `config.mask_ratio = 0.0` for
    the full, unmasked sequence). All weights exist after construction.

    Args:
        config, data_format, attn_implementation, seed: See
            `TFViTMAEPreTrainedModel`.

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

    def __init__(self, config, data_format="channels_first", attn_implementation="sdpa", seed=None, **kwargs):
        super().__init__(config, data_format, attn_implementation, seed, **kwargs)
        self.build()

    def call(
        self,
        pixel_values,
        noise=None,
        head_mask=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
        interpolate_pos_encoding=False,
    ):
        _, outputs = self._encode(
            pixel_values, noise, head_mask, output_attentions, output_hidden_states,
            interpolate_pos_encoding, training,
        )
        return self._return(outputs, return_dict)


@keras.saving.register_keras_serializable(package="tfvitmae")
class TFViTMAEForPreTraining(TFViTMAEPreTrainedModel):
    """ViTMAE with the pixel-reconstruction decoder and loss, for pretraining.

    Train it with `compile(optimizer=...)` and `fit(images)`: no labels and no
    `loss` argument are needed, the model's own masked-patch MSE is minimised.
    Batches may be image tensors or dicts with `"pixel_values"` (and `"noise"`).

    Args:
        config, data_format, attn_implementation, seed: See
            `TFViTMAEPreTrainedModel`.

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

    def __init__(self, config, data_format="channels_first", attn_implementation="sdpa", seed=None, **kwargs):
        super().__init__(config, data_format, attn_implementation, seed, **kwargs)
        self.decoder = ViTMAEDecoder(
            self.config, attn_implementation=attn_implementation, seed=seed, name="decoder", dtype=self.dtype_policy
        )
        self.build()

    def _attention_stacks(self):
        return [self.vit, self.decoder]

    def call(
        self,
        pixel_values,
        noise=None,
        head_mask=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
        interpolate_pos_encoding=False,
    ):
        images, outputs = self._encode(
            pixel_values, noise, head_mask, output_attentions, output_hidden_states,
            interpolate_pos_encoding, training,
        )
        logits = self.decoder(
            outputs.last_hidden_state,
            outputs.ids_restore,
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        ).logits
        loss = self._masked_patch_loss(images, logits, outputs.mask)
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
    def _patchify_nhwc(self, images):
        patch_h, patch_w = self.config.patch_hw
        _, height, width, channels = images.shape
        rows, cols = height // patch_h, width // patch_w
        x = ops.reshape(images, (-1, rows, patch_h, cols, patch_w, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, rows * cols, patch_h * patch_w * channels))

    def patchify(self, pixel_values, interpolate_pos_encoding=False):
        """Cut images into flattened patches.

        Args:
            pixel_values: Images in the model's `data_format`.
            interpolate_pos_encoding: Allow sizes other than `config.image_size`.

        Returns:
            `(batch, num_patches, patch_h * patch_w * num_channels)`; within a
            patch the order is (row, column, channel), as in MAE.
        """
        return self._patchify_nhwc(self._check_pixel_values(pixel_values, interpolate_pos_encoding))

    def unpatchify(self, patchified_pixel_values, original_image_size=None):
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
        if x.shape.rank != 3 or x.shape[1] != rows * cols or x.shape[2] != c.patch_dim:
            raise ValueError(
                f"patchified_pixel_values must have shape (batch, {rows * cols}, {c.patch_dim}) for a "
                f"{height}x{width} image, received {tuple(x.shape)}"
            )
        x = ops.reshape(x, (-1, rows, cols, patch_h, patch_w, c.num_channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, rows * patch_h, cols * patch_w, c.num_channels))
        return ops.transpose(x, (0, 3, 1, 2)) if self.data_format == "channels_first" else x

    def _patch_targets(self, images):
        """Float32 target patches, and the per-patch `(mean, std)` that
        `norm_pix_loss` normalises them with (`None` without it)."""
        target = self._patchify_nhwc(ops.cast(images, "float32"))
        if not self.config.norm_pix_loss:
            return target, None
        mean = ops.mean(target, axis=-1, keepdims=True)
        var = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (target.shape[-1] - 1)  # unbiased
        std = ops.sqrt(var + NORM_PIX_EPS)
        return (target - mean) / std, (mean, std)

    def _per_patch_error(self, images, logits):
        target, _ = self._patch_targets(images)
        return ops.mean(ops.square(ops.cast(logits, "float32") - target), axis=-1)

    def _masked_patch_loss(self, images, logits, mask):
        """Mean squared error over the removed patches, in float32."""
        per_patch = self._per_patch_error(images, logits)
        return tf.math.divide_no_nan(ops.sum(per_patch * mask), ops.sum(mask))

    def per_example_loss(self, pixel_values, logits, mask, interpolate_pos_encoding=False):
        """The loss of each image separately, `(batch,)` (for serving and analysis)."""
        images = self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        mask = ops.convert_to_tensor(mask, "float32")
        per_patch = self._per_patch_error(images, logits)
        return tf.math.divide_no_nan(ops.sum(per_patch * mask, axis=1), ops.sum(mask, axis=1))

    def reconstruct_image(self, pixel_values, logits, mask=None, interpolate_pos_encoding=False):
        """Images from predicted patches, in the model's layout and the input's pixel space.

        With `norm_pix_loss` the predictions are per-patch normalised; they are
        mapped back with each input patch's own mean and std, as MAE's
        visualisation does. With a `mask`, the visible patches (mask 0) are
        the input's own, so only the removed ones are predictions.
        """
        images = self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        target, stats = self._patch_targets(images)
        pred = ops.cast(logits, "float32")
        if stats is not None:
            mean, std = stats
            pred, target = pred * std + mean, target * std + mean
        if mask is not None:
            mask = ops.convert_to_tensor(mask, "float32")[..., None]
            pred = pred * mask + target * (1.0 - mask)
        return self.unpatchify(pred, tuple(images.shape[1:3]))

    def forward_loss(self, pixel_values, pred, mask, interpolate_pos_encoding=False):
        """The pretraining loss for `pixel_values` (model layout), logits and mask."""
        images = self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        return self._masked_patch_loss(images, pred, ops.convert_to_tensor(mask, "float32"))

    # ----------------------------------------------------------- Keras fit
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The model's own loss (labels, if any, are ignored), plus `self.losses`."""
        loss = y_pred[0]  # the loss comes first, as a dict or (return_dict=False) a tuple
        if self.losses:
            loss = loss + ops.sum([ops.cast(l, "float32") for l in self.losses])
        # Keras sums gradients over replicas: each replica contributes 1/N.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def predict_step(self, data):
        """Batch-aligned outputs only: the per-batch scalar `loss` is dropped."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        output = self(x, training=False, return_dict=True)
        return {k: v for k, v in output.items() if k != "loss"}
