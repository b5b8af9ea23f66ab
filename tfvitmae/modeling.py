"""`TFViTMAEModel` and `TFViTMAEForPreTraining`: Hugging Face's documented
TensorFlow ViTMAE API, on the stacks of `stacks.py`.
"""

import keras
import tensorflow as tf
from keras import ops

from . import patches
from .base_model import TFViTMAEPreTrainedModel
from .outputs import TFViTMAEForPreTrainingOutput
from .stacks import ViTMAEDecoder


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

    def __init__(
        self, config, data_format="channels_first", attn_implementation="sdpa", seed=None, **kwargs
    ):
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
            pixel_values,
            noise,
            head_mask,
            output_attentions,
            output_hidden_states,
            interpolate_pos_encoding,
            training,
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

    def __init__(
        self, config, data_format="channels_first", attn_implementation="sdpa", seed=None, **kwargs
    ):
        super().__init__(config, data_format, attn_implementation, seed, **kwargs)
        self.decoder = ViTMAEDecoder(
            self.config,
            attn_implementation=attn_implementation,
            seed=seed,
            name="decoder",
            dtype=self.dtype_policy,
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
            pixel_values,
            noise,
            head_mask,
            output_attentions,
            output_hidden_states,
            interpolate_pos_encoding,
            training,
        )
        logits = self.decoder(
            outputs.last_hidden_state,
            outputs.ids_restore,
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        ).logits
        loss = patches.masked_mean(self._per_patch_error(images, logits), outputs.mask)
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
    def patchify(self, pixel_values, interpolate_pos_encoding=False):
        """Cut images into flattened patches.

        Args:
            pixel_values: Images in the model's `data_format`.
            interpolate_pos_encoding: Allow sizes other than `config.image_size`.

        Returns:
            `(batch, num_patches, patch_h * patch_w * num_channels)`; within a
            patch the order is (row, column, channel), as in MAE.
        """
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return patches.patchify(images, self.config.patch_hw)

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
                f"patchified_pixel_values must have shape (batch, {rows * cols}, {c.patch_dim}) "
                f"for a {height}x{width} image, received {tuple(x.shape)}"
            )
        x = patches.unpatchify(x, c.patch_hw, (height, width), c.num_channels)
        return ops.transpose(x, (0, 3, 1, 2)) if self.data_format == "channels_first" else x

    def _per_patch_error(self, images, logits):
        return patches.per_patch_error(
            images, logits, self.config.patch_hw, self.config.norm_pix_loss
        )

    def per_example_loss(self, pixel_values, logits, mask, interpolate_pos_encoding=False):
        """The loss of each image separately, `(batch,)` (for serving and analysis)."""
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return patches.masked_mean(self._per_patch_error(images, logits), mask, axis=1)

    def reconstruct_image(self, pixel_values, logits, mask=None, interpolate_pos_encoding=False):
        """Images from predicted patches, in the model's layout and the input's pixel space.

        With `norm_pix_loss` the predictions are per-patch normalised; they are
        mapped back with each input patch's own mean and std, as MAE's
        visualisation does. With a `mask`, the visible patches (mask 0) are
        the input's own, so only the removed ones are predictions.
        """
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        c = self.config
        target, stats = patches.patch_targets(images, c.patch_hw, c.norm_pix_loss)
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
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        return patches.masked_mean(self._per_patch_error(images, pred), mask)

    def _image_outputs(self, pixel_values, start=0, seed=0):
        """`predict_images`' outputs: uint8 reconstructions, the mask and the
        loss. Image `i`'s mask is drawn from `(seed, i)`, whatever the batching."""
        noise = tf.stack(
            [
                tf.random.stateless_uniform((self.config.num_patches,), seed=(seed, start + i))
                for i in range(len(pixel_values))
            ]
        )
        out = self(pixel_values, noise=noise)
        layout = (0, 2, 3, 1) if self.data_format == "channels_first" else (0, 1, 2, 3)
        processor = self.image_processor

        def uint8(mask):
            images = self.reconstruct_image(pixel_values, out.logits, mask)
            return processor.denormalize(ops.transpose(images, layout))

        return {
            "reconstruction": uint8(out.mask),
            "prediction": uint8(None),
            "mask": out.mask,
            "loss": self.per_example_loss(pixel_values, out.logits, out.mask),
        }

    # ----------------------------------------------------------- Keras fit
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The model's own loss (labels, if any, are ignored), plus `self.losses`."""
        loss = y_pred[0]  # the loss comes first, as a dict or (return_dict=False) a tuple
        if self.losses:
            loss = loss + ops.sum([ops.cast(extra, "float32") for extra in self.losses])
        # Keras sums gradients over replicas: each replica contributes 1/N.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def predict_step(self, data):
        """Batch-aligned outputs only: the per-batch scalar `loss` is dropped."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        output = self(x, training=False, return_dict=True)
        return {k: v for k, v in output.items() if k != "loss"}
