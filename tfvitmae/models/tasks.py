"""What a user does with a model: the package's conveniences, kept beside the
architecture as a thin task layer the models inherit.

- `ImageTasks` (every model): `predict_images` on raw images,
  `unmasked_features`, and the layout conversions.
- `PreTrainingTasks` (`TFViTMAEForPreTraining`): `reconstruct` (the one
  implementation behind reconstructions everywhere), `reconstruct_image`,
  `per_example_loss`, and `fit` on a model that computes its own loss.
- `ClassificationTasks` (`TFViTMAEForImageClassification`): `classify`, the
  top-k classes by name.

They are methods, not functions, so the serving, training and CLI layers
(which never import a model class) call them on whatever model they are
given; each reads only the model's public parts (`self.vit`, `self.config`,
`self(...)`, `check_pixel_values`, `unpatchify`).
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from ..utils.checks import check_batch_size
from ..utils.types import PathLike, TensorLike
from .layers import masked_mean, masking_noise, patch_targets, per_patch_error

if TYPE_CHECKING:
    import PIL.Image

    from ..data.image_processor import ViTMAEImageProcessor
    from .config import ViTMAEConfig

    # One raw image for `predict_images`: a file path, a uint8 array or a PIL image.
    _RawImage = PathLike | TensorLike | PIL.Image.Image

__all__ = ["ClassificationTasks", "ImageTasks", "PreTrainingTasks"]


class ImageTasks:
    """Conveniences of every ViTMAE model (a `TFViTMAEPreTrainedModel`)."""

    # What they read of the model.
    config: "ViTMAEConfig"
    data_format: str
    image_processor: "ViTMAEImageProcessor"
    vit: Any
    check_pixel_values: Callable[..., TensorLike]
    losses: list

    def to_model_layout(self, images: TensorLike) -> TensorLike:
        """Channels-last images in this model's `data_format`."""
        if self.data_format == "channels_first":
            return ops.transpose(images, (0, 3, 1, 2))
        return images

    def to_channels_last(self, images: TensorLike) -> TensorLike:
        """Images in this model's `data_format`, channels-last."""
        if self.data_format == "channels_first":
            return ops.transpose(images, (0, 2, 3, 1))
        return images

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
        **kwargs: Any,
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

    def _image_outputs(self, pixel_values: TensorLike, start: int = 0) -> dict:
        """`predict_images`' outputs for the batch of `pixel_values` that
        starts at image `start`: the unmasked features."""
        del start  # features do not depend on the image's place
        return self.unmasked_features(pixel_values)


class PreTrainingTasks(ImageTasks):
    """Conveniences of `TFViTMAEForPreTraining`: reconstructions, the loss of
    each image, and `fit` on the model's own loss."""

    unpatchify: Callable[..., TensorLike]
    stateless_call: Callable[..., Any]

    def per_example_loss(
        self,
        pixel_values: TensorLike,
        logits: TensorLike,
        mask: TensorLike,
        interpolate_pos_encoding: bool = False,
    ) -> TensorLike:
        """The loss of each image separately, `(batch,)` (for serving and analysis)."""
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        c = self.config
        per_patch = per_patch_error(images, logits, c.patch_hw, norm_pix_loss=c.norm_pix_loss)
        return masked_mean(per_patch, mask, axis=1)

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
        out = self(pixel_values, noise=noise, return_dict=True)  # type: ignore[operator]
        return {
            "loss": self.per_example_loss(pixel_values, out.logits, out.mask),
            "logits": out.logits,
            "mask": out.mask,
            "reconstructed_image": self.reconstruct_image(pixel_values, out.logits, out.mask),
            "predicted_image": self.reconstruct_image(pixel_values, out.logits),
        }

    def _image_outputs(self, pixel_values: TensorLike, start: int = 0, seed: int = 0) -> dict:
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
    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Keras' `compile` (see `TFViTMAEPreTrainedModel.compile`). The model
        computes its own loss and learns without labels, so `loss` and
        `metrics` are refused rather than ignored."""
        positions = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")
        given = dict(zip(positions, args))
        given.update(kwargs)
        name = type(self).__name__
        if given.get("loss") is not None:
            raise ValueError(
                f"{name} computes its own loss (the error of the masked "
                "patches; config.norm_pix_loss normalises their targets): leave loss unset, "
                f"received loss={given['loss']!r}"
            )
        for option in ("metrics", "weighted_metrics"):
            if given.get(option):
                raise ValueError(
                    f"{name} learns without labels, so compile {option} (which "
                    "compare labels with outputs) have nothing to measure; fit logs the "
                    "reconstruction loss as `loss`, and a callback can track more (e.g. "
                    f"ReconstructionCallback). Received {option}={given[option]!r}"
                )
        super().compile(*args, **kwargs)  # type: ignore[misc]

    def compute_loss(
        self,
        x: TensorLike | dict | None = None,
        y: TensorLike | None = None,
        y_pred: Any = None,
        sample_weight: TensorLike | None = None,
        training: bool = True,
    ) -> TensorLike:
        """The model's own loss (labels, if any, are ignored), plus `self.losses`."""
        # The loss comes first, as a dict or (return_dict=False) a tuple (Keras passes y_pred).
        loss = y_pred[0]
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
        output = self(x, training=False, return_dict=True)  # type: ignore[operator]
        return {k: v for k, v in output.items() if k != "loss"}


class ClassificationTasks(ImageTasks):
    """Conveniences of `TFViTMAEForImageClassification`: the top-k classes."""

    id2label: dict[int, str]
    num_labels: int

    def label_names(self) -> list:
        """The class names, by index (`id2label`, else the index as text)."""
        return [self.id2label.get(i, str(i)) for i in range(self.num_labels)]

    def classify(self, pixel_values: TensorLike, top_k: int = 5) -> dict:
        """Logits, probabilities and the `top_k` classes of `pixel_values`.

        The one implementation behind `predict_images` and the SavedModel's
        `classify*` signatures.

        Returns:
            `{"logits", "probabilities"}` `(batch, num_labels)` and
            `{"top_k_indices", "top_k_probabilities", "top_k_labels"}`
            `(batch, min(top_k, num_labels))`, the labels as string tensors
            on TensorFlow (as served), else as a NumPy array of `str`.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, received {top_k!r}")
        logits = self(pixel_values)  # type: ignore[operator]
        probabilities = ops.softmax(logits, axis=-1)
        values, indices = ops.top_k(probabilities, k=min(top_k, self.num_labels))
        return {
            "logits": logits,
            "probabilities": probabilities,
            "top_k_indices": indices,
            "top_k_probabilities": values,
            "top_k_labels": self._labels_of(indices),
        }

    def _labels_of(self, indices: TensorLike) -> Any:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # a string tensor, in graphs too

            return tf.gather(tf.constant(self.label_names()), indices)
        return np.asarray(self.label_names(), dtype=object)[ops.convert_to_numpy(indices)]

    def _image_outputs(self, pixel_values: TensorLike, start: int = 0, top_k: int = 5) -> dict:
        """`predict_images`' outputs: class probabilities and the top `top_k`."""
        del start  # classes do not depend on the image's place
        out = self.classify(pixel_values, top_k=top_k)
        decode = np.vectorize(
            lambda name: name.decode("utf-8") if isinstance(name, bytes) else name, otypes=[object]
        )
        labels = decode(np.asarray(out["top_k_labels"], dtype=object))
        return {
            "probabilities": out["probabilities"],
            "top_k_indices": np.asarray(out["top_k_indices"]),
            "top_k_probabilities": out["top_k_probabilities"],
            "top_k_labels": labels,
        }
