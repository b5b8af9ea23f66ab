"""`TFViTMAEForImageClassification`: the MAE encoder, unmasked, with a head.

The second stage of MAE: throw the decoder away, then linear-probe (frozen
encoder, `BatchNorm` without affine parameters, then `Dense`) or fine-tune
(CLS or mean pooling, stochastic depth, layer-wise lr decay).
"""

import os
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from ..checkpoints import keras_variables, to_state_dict
from ..data.image_processor import channel_stats
from ..utils.types import PathLike, TensorLike
from .config import ViTMAEConfig, as_config
from .pretrained import TFViTMAEPreTrainedModel, unpack_inputs
from .tasks import ClassificationTasks
from .vit_mae import TFViTMAEModel, ViTMAEEncoder

__all__ = ["POOLINGS", "TFViTMAEForImageClassification"]

POOLINGS = ("cls", "mean")


@keras.saving.register_keras_serializable(package="tfvitmae")
class TFViTMAEForImageClassification(ClassificationTasks, TFViTMAEPreTrainedModel):
    """ViTMAE encoder (no masking) + classification head.

    Args:
        config: A `ViTMAEConfig` (its `mask_ratio` is ignored: nothing is masked).
        num_labels: Number of classes; by default the config's `num_labels`
            (2 unless its `id2label` names others, as in transformers).
        pooling: `"cls"` (the CLS token after the final LayerNorm, as
            transformers' `ViTForImageClassification`) or `"mean"` (MAE
            fine-tuning: mean of the patch tokens, then a LayerNorm `fc_norm`).
        linear_probe: Freeze the encoder and use MAE's probe head:
            `BatchNormalization(center=False, scale=False, epsilon=1e-6)` (momentum 0.9,
            PyTorch's 0.1), then `Dense`.
        drop_path_rate: Stochastic depth for fine-tuning (MAE uses 0.1 for ViT-B).
        id2label: Optional `{index: name}` for the classes. The model's
            `config.id2label` holds the names (`LABEL_<i>` when none are given).
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
    _label_columns = ("labels", "label")

    def __init__(
        self,
        config: ViTMAEConfig | dict,
        num_labels: int | None = None,
        pooling: str = "cls",
        linear_probe: bool = False,
        drop_path_rate: float = 0.0,
        id2label: dict | None = None,
        data_format: str = "channels_first",
        attn_implementation: str = "sdpa",
        seed: int | None = None,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, received {pooling!r}")
        config = as_config(config)
        if num_labels is None and not id2label:
            num_labels, id2label = config.num_labels, config.id2label  # the config's classes
        if num_labels is None:
            num_labels = len(id2label or {})
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, received {num_labels!r}")
        names = {int(k): str(v) for k, v in (id2label or {}).items()}
        if names and sorted(names) != list(range(num_labels)):
            raise ValueError(
                f"id2label must name the classes 0 to {num_labels - 1} (num_labels={num_labels}), "
                f"received the indices {sorted(names)}"
            )
        labels = names or {i: f"LABEL_{i}" for i in range(num_labels)}
        # The config carries the classes, as transformers' classifiers' do.
        config = config.copy(
            mask_ratio=0.0, id2label=labels, label2id={v: k for k, v in labels.items()}
        )
        super().__init__(
            config,
            data_format=data_format,
            attn_implementation=attn_implementation,
            seed=seed,
            drop_path_rate=drop_path_rate,
            **kwargs,
        )
        self.vit = ViTMAEEncoder(
            self.config,
            attn_implementation=self.attn_implementation,
            seed=seed,
            drop_path_rate=drop_path_rate,
            remat=self.remat,
            name="vit",
            dtype=self.dtype_policy,
        )
        self.num_labels = num_labels
        self.pooling = pooling
        self.linear_probe = linear_probe
        self.id2label = names
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
        elif pooling == "mean":
            # Mean pooling reads the tokens before the encoder's final norm
            # (`fc_norm` takes its place), so that norm never gets a gradient:
            # frozen, it is no longer an optimizer variable Keras warns about.
            self.vit.layernorm.trainable = False

    def build(self, input_shape: tuple | None = None) -> None:
        self.vit.build()
        width = self.config.hidden_size
        for layer in (self.fc_norm, self.probe_norm, self.classifier):
            if layer is not None:
                layer.build((None, width))

    def features(
        self,
        pixel_values: TensorLike | dict,
        training: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> TensorLike:
        """The pooled encoder features `(batch, hidden_size)` the head sees."""
        images = self.check_pixel_values(unpack_inputs(pixel_values)[0], interpolate_pos_encoding)
        encoder_training = training and not self.linear_probe
        hidden = self.vit(
            images,
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=encoder_training,
            final_norm=self.pooling == "cls",
        ).last_hidden_state
        if self.fc_norm is None:  # CLS pooling
            return hidden[:, 0]
        return self.fc_norm(ops.mean(hidden[:, 1:], axis=1))

    def call(
        self,
        pixel_values: TensorLike | dict,
        training: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> TensorLike:
        features = self.features(
            pixel_values, training=training, interpolate_pos_encoding=interpolate_pos_encoding
        )
        if self.probe_norm is not None:
            features = self.probe_norm(features, training=training)
        return ops.cast(self.classifier(features), "float32")

    def get_config(self) -> dict:
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
    def init_kwargs_from_config(cls, config: ViTMAEConfig) -> dict[str, Any]:
        # The classes come with the config (see `__init__`).
        return dict(
            pooling=getattr(config, "pooling", "cls"),
            linear_probe=getattr(config, "linear_probe", False),
        )

    def config_extras(self, pytorch: bool = False) -> dict[str, Any]:
        labels = self.config.id2label
        # Always written, never inherited from a loaded config: a PyTorch
        # layout has the probe's BatchNorm folded into a plain head, so its
        # weights load as a classifier without a probe.
        extras: dict[str, Any] = dict(
            pooling=self.pooling, linear_probe=self.linear_probe and not pytorch
        )
        if pytorch and self.pooling == "cls":  # transformers' ViTForImageClassification config
            extras["model_type"] = "vit"
        if pytorch and self.pooling == "mean":  # timm's VisionTransformer, as MAE fine-tunes it
            extras.update(architectures=[type(self).__name__], **self._timm_config(labels))
        return extras

    def _timm_config(self, labels):
        """The keys timm reads from a Hub `config.json` (`architecture`,
        `model_args`, `pretrained_cfg`), for a `global_pool="avg"` ViT."""
        c, processor = self.config, self.image_processor
        mean, std = channel_stats(
            processor.image_mean, processor.image_std, c.num_channels, dtype="float64"
        )
        model_args = dict(
            img_size=list(c.image_hw),
            patch_size=list(c.patch_hw),
            in_chans=c.num_channels,
            embed_dim=c.hidden_size,
            depth=c.num_hidden_layers,
            num_heads=c.num_attention_heads,
            mlp_ratio=c.intermediate_size / c.hidden_size,
            qkv_bias=c.qkv_bias,
            global_pool="avg",
            num_classes=self.num_labels,
        )
        return dict(
            architecture="vit_base_patch16_224",
            num_classes=self.num_labels,
            num_features=c.hidden_size,
            global_pool="avg",
            model_args=model_args,
            pretrained_cfg=dict(
                input_size=[c.num_channels, *c.image_hw],
                interpolation={2: "bilinear", 3: "bicubic"}.get(processor.resample, "bicubic"),
                mean=mean.tolist(),
                std=std.tolist(),
                num_classes=self.num_labels,
                label_names=[labels[i] for i in range(self.num_labels)],
            ),
        )

    def optional_weights(self) -> tuple[str, ...]:
        """Variables a checkpoint may lack: mean pooling never uses the
        encoder's final LayerNorm (timm's `global_pool="avg"` has none)."""
        return ("vit/layernorm/gamma", "vit/layernorm/beta") if self.pooling == "mean" else ()

    def pytorch_state_dict(self) -> dict[str, np.ndarray]:
        """The weights in a PyTorch layout: transformers'
        `ViTForImageClassification` for CLS pooling, timm's `VisionTransformer`
        (`global_pool="avg"`: `fc_norm`, `head`, no final `norm`) for mean
        pooling, as in MAE's fine-tuning. A probe's BatchNorm (no affine) is
        folded into the head, which is exact."""
        if self.pooling == "cls":
            state, head, norm = super().pytorch_state_dict(), "classifier", "probe_norm"
        else:
            state, head, norm = to_state_dict(self, "mae"), "head", "head.0"
            state = {k: v for k, v in state.items() if not k.startswith("norm.")}
        if self.probe_norm is not None:
            mean = state.pop(f"{norm}.running_mean")
            scale = 1.0 / np.sqrt(state.pop(f"{norm}.running_var") + self.probe_norm.epsilon)
            weight = state[f"{head}.weight"]
            folded = (weight * scale[None, :]).astype(weight.dtype)
            state[f"{head}.weight"] = folded
            state[f"{head}.bias"] = (state[f"{head}.bias"] - folded @ mean).astype(weight.dtype)
        return state

    def vit_state_dict(self) -> tuple[str, dict[str, np.ndarray]]:
        """transformers' `ViTForImageClassification`, which pools the CLS token:
        a mean-pooled classifier has no such layout and is refused."""
        if self.pooling != "cls":
            raise ValueError(
                "A mean-pooled classifier has no transformers ViT layout: "
                "ViTForImageClassification classifies the CLS token. Save it with "
                "pytorch=True (timm's VisionTransformer(global_pool='avg'))"
            )
        return "ViTForImageClassification", self.pytorch_state_dict()

    @classmethod
    def from_encoder(
        cls, encoder: TFViTMAEPreTrainedModel | PathLike, num_labels: int | None = None, **kwargs
    ) -> "TFViTMAEForImageClassification":
        """A classifier whose encoder weights are copied from a pretrained model.

        Args:
            encoder: A `TFViTMAEModel` / `TFViTMAEForPreTraining`, or anything
                `from_pretrained` accepts (directory, weights file, Hub id).
            num_labels: Number of classes (by default the encoder config's, as in `__init__`).
            **kwargs: Further constructor arguments (`pooling`, `linear_probe`, ...).
                The encoder's `data_format` and `image_processor` carry over.
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
        kwargs.setdefault("image_processor", encoder.image_processor)
        model = cls(encoder.config, num_labels=num_labels, **kwargs)
        source = keras_variables(encoder)
        for path, variable in keras_variables(model).items():
            if path.startswith("vit/"):
                variable.assign(source[path])
        return model
