"""`TFViTMAEForImageClassification`: the MAE encoder, unmasked, with a head.

The second stage of MAE: throw the decoder away, then linear-probe (frozen
encoder, `BatchNorm` without affine parameters, then `Dense`) or fine-tune
(CLS or mean pooling, stochastic depth, layer-wise lr decay).
"""

import os
import warnings

import keras
import numpy as np
from keras import ops

from .base_model import TFViTMAEPreTrainedModel
from .config import as_config
from .inputs import unpack_inputs
from .modeling import TFViTMAEModel
from .weights import keras_variables

POOLINGS = ("cls", "mean")


@keras.saving.register_keras_serializable(package="tfvitmae")
class TFViTMAEForImageClassification(TFViTMAEPreTrainedModel):
    """ViTMAE encoder (no masking) + classification head.

    Args:
        config: A `ViTMAEConfig` (its `mask_ratio` is ignored: nothing is masked).
        num_labels: Number of classes.
        pooling: `"cls"` (the CLS token after the final LayerNorm, as
            transformers' `ViTForImageClassification`) or `"mean"` (MAE
            fine-tuning: mean of the patch tokens, then a LayerNorm `fc_norm`).
        linear_probe: Freeze the encoder and use MAE's probe head:
            `BatchNormalization(center=False, scale=False, epsilon=1e-6)` (momentum 0.9,
            PyTorch's 0.1), then `Dense`.
        drop_path_rate: Stochastic depth for fine-tuning (MAE uses 0.1 for ViT-B).
        id2label: Optional `{index: name}` for the classes.
        data_format, attn_implementation, seed: As in `TFViTMAEModel`.

    Call arguments:
        pixel_values: Images in `data_format` layout (or `{"pixel_values": ...}`).
        training: Enables dropout, stochastic depth and BatchNorm updates.
        interpolate_pos_encoding: Accept other resolutions.

    Returns:
        float32 logits `(batch, num_labels)`; train with
        `keras.losses.SparseCategoricalCrossentropy(from_logits=True)` (or
        `CategoricalCrossentropy(label_smoothing=0.1, from_logits=True)` with
        MixUp/CutMix's one-hot labels).
    """

    default_name = "vit_mae_for_image_classification"

    def __init__(
        self,
        config,
        num_labels=1000,
        pooling="cls",
        linear_probe=False,
        drop_path_rate=0.0,
        id2label=None,
        data_format="channels_first",
        attn_implementation="sdpa",
        seed=None,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, received {pooling!r}")
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, received {num_labels!r}")
        config = as_config(config).copy(mask_ratio=0.0)
        super().__init__(
            config, data_format, attn_implementation, seed, drop_path_rate=drop_path_rate, **kwargs
        )
        self.num_labels = num_labels
        self.pooling = pooling
        self.linear_probe = linear_probe
        self.id2label = {int(k): str(v) for k, v in (id2label or {}).items()}
        dtype = self.dtype_policy
        self.fc_norm = (
            keras.layers.LayerNormalization(
                epsilon=config.layer_norm_eps, name="fc_norm", dtype=dtype
            )
            if pooling == "mean"
            else None
        )
        self.probe_norm = (
            keras.layers.BatchNormalization(
                center=False,
                scale=False,
                epsilon=1e-6,
                momentum=0.9,
                name="probe_norm",
                dtype=dtype,
            )
            if linear_probe
            else None
        )
        self.classifier = keras.layers.Dense(
            num_labels,
            kernel_initializer=keras.initializers.TruncatedNormal(
                stddev=0.01 if linear_probe else 2e-5
            ),
            name="classifier",
            dtype=dtype,
        )
        self.build()
        if linear_probe:
            self.vit.trainable = False

    def build(self, input_shape=None):
        super().build()
        width = self.config.hidden_size
        for layer in (self.fc_norm, self.probe_norm, self.classifier):
            if layer is not None:
                layer.build((None, width))

    def features(self, pixel_values, training=False, interpolate_pos_encoding=False):
        """The pooled encoder features `(batch, hidden_size)` the head sees."""
        images = self.check_pixel_values(unpack_inputs(pixel_values)[0], interpolate_pos_encoding)
        encoder_training = training and not self.linear_probe
        hidden = self.vit(
            images,
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=encoder_training,
            final_norm=self.pooling == "cls",
        ).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return self.fc_norm(ops.mean(hidden[:, 1:], axis=1))

    def call(self, pixel_values, training=False, interpolate_pos_encoding=False):
        features = self.features(
            pixel_values, training=training, interpolate_pos_encoding=interpolate_pos_encoding
        )
        if self.probe_norm is not None:
            features = self.probe_norm(features, training=training)
        return ops.cast(self.classifier(features), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_labels=self.num_labels,
            pooling=self.pooling,
            linear_probe=self.linear_probe,
            id2label=self.id2label,
        )
        return config

    # ------------------------------------------------------- checkpoints
    @classmethod
    def init_kwargs_from_config(cls, config):
        id2label = {int(k): v for k, v in config.extra.get("id2label", {}).items()}
        kwargs = dict(
            pooling=config.extra.get("pooling", "cls"),
            linear_probe=config.extra.get("linear_probe", False),
        )
        if id2label:
            kwargs.update(num_labels=len(id2label), id2label=id2label)
        return kwargs

    def config_extras(self, pytorch=False):
        labels = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        extras = dict(
            id2label={str(k): v for k, v in labels.items()},
            label2id={v: k for k, v in labels.items()},
        )
        if pytorch:  # transformers' ViTForImageClassification config
            extras["model_type"] = "vit"
        else:
            extras.update(pooling=self.pooling, linear_probe=self.linear_probe)
        return extras

    def pytorch_state_dict(self):
        """transformers `ViTForImageClassification` weights; a probe's BatchNorm
        (no affine) is folded into the classifier, which is exact. Mean pooling
        has no counterpart there and is refused."""
        if self.pooling == "mean":
            raise ValueError(
                "transformers' ViTForImageClassification pools the CLS token; a mean-pooled "
                "classifier cannot be written in its layout. Save it with pytorch=False."
            )
        state = super().pytorch_state_dict()
        if self.linear_probe:
            mean = state.pop("probe_norm.running_mean")
            scale = 1.0 / np.sqrt(state.pop("probe_norm.running_var") + self.probe_norm.epsilon)
            weight = state["classifier.weight"]
            folded = (weight * scale[None, :]).astype(weight.dtype)
            state["classifier.weight"] = folded
            state["classifier.bias"] = (state["classifier.bias"] - folded @ mean).astype(
                weight.dtype
            )
        return state

    @classmethod
    def from_encoder(cls, encoder, num_labels, **kwargs):
        """A classifier whose encoder weights are copied from a pretrained model.

        Args:
            encoder: A `TFViTMAEModel` / `TFViTMAEForPreTraining`, or anything
                `from_pretrained` accepts (directory, weights file, Hub id).
            num_labels: Number of classes.
            **kwargs: Further constructor arguments (`pooling`, `linear_probe`, ...).
        """
        if isinstance(encoder, (str, os.PathLike)):
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="Ignored .* parts this model does not have"
                )
                encoder = TFViTMAEModel.from_pretrained(encoder)
        if not isinstance(encoder, TFViTMAEPreTrainedModel):
            raise ValueError(
                "encoder must be a ViTMAE model or a checkpoint path, received "
                f"{type(encoder).__name__}"
            )
        kwargs.setdefault("data_format", encoder.data_format)
        model = cls(encoder.config, num_labels=num_labels, **kwargs)
        source = keras_variables(encoder)
        for path, variable in keras_variables(model).items():
            if path.startswith("vit/"):
                variable.assign(source[path])
        return model
