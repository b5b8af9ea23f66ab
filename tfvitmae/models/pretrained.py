"""What the ViTMAE models share beyond their architecture: transformers' TF
API (as transformers keeps it in `modeling_tf_utils`), so code written for
`TFViTMAEModel` and `TFViTMAEForPreTraining` runs unchanged.

- The output containers: `ModelOutput` (by attribute, key or index) and the
  three ViTMAE outputs.
- The input checks: every one raises `ValueError` saying what was expected
  and what was received, at trace time too, so a `tf.function` or SavedModel
  signature fails with the same message as an eager call.
- `TFViTMAEPreTrainedModel`: the model options, checked inputs, call flags in
  the input dict, `from_pretrained`/`save_pretrained` (`checkpoints.HubMixin`),
  `export` (`serving.ExportMixin`), `dummy_inputs`, `input_signature`,
  `prepare_tf_dataset`, and Keras' `compile`/`get_config`. The package's own
  conveniences (`predict_images`, `reconstruct`, ...) come from `tasks.py`.
"""

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeVar

import keras
import numpy as np
from keras import ops

from ..checkpoints import HubMixin
from ..data.image_processor import ViTMAEImageProcessor
from ..serving.mixin import ExportMixin
from ..utils.backend import tensorflow
from ..utils.checks import check_data_format
from ..utils.types import TensorLike
from .config import ViTMAEConfig, as_config
from .layers import all_finite, check_attn_implementation, is_eager, set_attn_implementation
from .sharding import get_layout_map
from .tasks import ImageTasks, PreTrainingTasks

__all__ = [
    "InputSizes",
    "ModelOutput",
    "TFViTMAEDecoderOutput",
    "TFViTMAEForPreTrainingOutput",
    "TFViTMAEModelOutput",
    "TFViTMAEPreTrainedModel",
    "check_noise",
    "check_pixel_values",
    "head_masks",
    "unpack_inputs",
]


# ----------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------

_Output = TypeVar("_Output", bound="ModelOutput")


def _register(cls):
    """Make `keras.tree` (optree, namespace "keras") traverse `cls` as a node,
    and JAX's own tree functions on the JAX backend (`jit` returns it)."""
    if keras.backend.backend() == "jax":
        import jax

        jax.tree_util.register_pytree_node_class(cls)
    register = getattr(keras.tree, "register_tree_node_class", None)
    if register is None:  # not exported by Keras <= 3.15
        import optree

        return optree.register_pytree_node_class(cls, namespace="keras")
    return register(cls)


class ModelOutput(OrderedDict[str, Any]):
    """Base class; subclasses list their field names in `FIELDS`."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # tf.nest rebuilds mappings as `type(x)(pairs)`, hence the positional form.
        items = OrderedDict(*args, **kwargs)
        unknown = set(items) - set(self.FIELDS)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no fields {sorted(unknown)}; fields are {self.FIELDS}"
            )
        super().__init__((name, items[name]) for name in self.FIELDS if items.get(name) is not None)

    def __getattr__(self, name: str) -> TensorLike | None:
        if name in type(self).FIELDS:
            return self.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[TensorLike, ...]:
        """The present fields, in declaration order."""
        return tuple(self.values())

    def tree_flatten(self) -> tuple[tuple[TensorLike, ...], tuple[str, ...]]:
        keys = tuple(self.keys())
        return tuple(self[k] for k in keys), keys

    @classmethod
    def tree_unflatten(
        cls: type[_Output], keys: Iterable[str], values: Iterable[TensorLike]
    ) -> _Output:
        return cls(zip(keys, values))

    def __reduce__(self) -> tuple[type["ModelOutput"], tuple[list[tuple[str, Any]]]]:
        return (type(self), (list(self.items()),))


@_register
class TFViTMAEModelOutput(ModelOutput):
    """Output of `TFViTMAEModel`.

    Attributes:
        last_hidden_state: `(batch, 1 + len_keep, hidden_size)` after the final
            LayerNorm; position 0 is the CLS token.
        mask: float32 `(batch, num_patches)`, 1 for removed patches.
        ids_restore: int32 `(batch, num_patches)`, the un-shuffling permutation.
        hidden_states: With `output_hidden_states`, a tuple of
            `num_hidden_layers + 1` tensors: the embeddings, then each block's
            output (before the final LayerNorm).
        attentions: With `output_attentions`, a tuple with one
            `(batch, num_heads, seq, seq)` tensor per block.
    """

    FIELDS: tuple[str, ...] = (
        "last_hidden_state",
        "mask",
        "ids_restore",
        "hidden_states",
        "attentions",
    )


@_register
class TFViTMAEDecoderOutput(ModelOutput):
    """Output of the pretraining decoder.

    Attributes:
        logits: float32 `(batch, num_patches, patch_h * patch_w * num_channels)`.
        hidden_states: With `output_hidden_states`, the decoder's per-block states.
        attentions: With `output_attentions`, the decoder's attention probabilities.
    """

    FIELDS: tuple[str, ...] = ("logits", "hidden_states", "attentions")


@_register
class TFViTMAEForPreTrainingOutput(ModelOutput):
    """Output of `TFViTMAEForPreTraining`.

    Attributes:
        loss: float32 scalar, the pixel MSE over the removed patches.
        logits: float32 `(batch, num_patches, patch_h * patch_w * num_channels)`,
            the predicted (possibly normalised) pixels of every patch.
        mask, ids_restore, hidden_states, attentions: The encoder's, as in
            `TFViTMAEModelOutput`.
    """

    FIELDS: tuple[str, ...] = (
        "loss",
        "logits",
        "mask",
        "ids_restore",
        "hidden_states",
        "attentions",
    )


# ----------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------


class InputSizes(NamedTuple):
    """The input sizes a model was built for, read once from its config."""

    image_hw: tuple[int, int]
    patch_hw: tuple[int, int]
    num_channels: int

    @classmethod
    def of(cls, config: ViTMAEConfig) -> "InputSizes":
        return cls(config.image_hw, config.patch_hw, config.num_channels)


def unpack_inputs(
    pixel_values: TensorLike | dict[str, TensorLike], noise: TensorLike | None = None
) -> tuple[TensorLike, TensorLike | None]:
    """`(pixel_values, noise)` from a tensor or a `{"pixel_values", "noise"}`
    dict, the form `fit` feeds dict batches in."""
    if isinstance(pixel_values, dict):
        unknown = set(pixel_values) - {"pixel_values", "noise"}
        if "pixel_values" not in pixel_values or unknown:
            raise ValueError(
                "A dict input must have the key 'pixel_values' (and optionally "
                f"'noise'), received keys {sorted(pixel_values)}"
            )
        if noise is None:
            noise = pixel_values.get("noise")
        pixel_values = pixel_values["pixel_values"]
    return pixel_values, noise


def check_pixel_values(
    pixel_values: TensorLike,
    sizes: "ViTMAEConfig | InputSizes",
    *,
    data_format: str = "channels_first",
    interpolate_pos_encoding: bool = False,
) -> TensorLike:
    """Validate model input images and return them channels-last.

    Args:
        pixel_values: Float images, `(batch, num_channels, height, width)` for
            `"channels_first"` or `(batch, height, width, num_channels)`.
        sizes: The model's `ViTMAEConfig`, or its `InputSizes`.
        data_format: The layout of `pixel_values`.
        interpolate_pos_encoding: Accept any positive multiple of the patch
            size, not only the model's image size.

    Returns:
        The images as a channels-last tensor `(batch, height, width, channels)`.
    """
    if pixel_values is None:
        raise ValueError("pixel_values is required")
    if not ops.is_tensor(pixel_values):
        pixel_values = ops.convert_to_tensor(pixel_values)
    if data_format == "channels_first":
        layout = "(batch, num_channels, height, width)"
    else:
        layout = "(batch, height, width, num_channels)"
    dtype = keras.backend.standardize_dtype(pixel_values.dtype)
    if "float" not in dtype:
        raise ValueError(
            "pixel_values must be a float tensor (normalised pixels), received dtype "
            f"{dtype}; convert and normalise images first"
        )
    if len(pixel_values.shape) != 4:
        raise ValueError(
            f"pixel_values must have rank 4 {layout} ({data_format}), "
            f"received shape {tuple(pixel_values.shape)}"
        )
    if data_format == "channels_first":
        pixel_values = ops.transpose(pixel_values, (0, 2, 3, 1))
    _, height, width, channels = pixel_values.shape
    if channels != sizes.num_channels:
        raise ValueError(
            f"pixel_values must have {sizes.num_channels} channels in layout {layout}, "
            f"received {channels} (input shape {tuple(ops.shape(pixel_values))} after "
            "moving channels last). For channels-last input, build the model with "
            "data_format='channels_last'."
        )
    if height is None or width is None:
        raise ValueError(
            f"pixel_values needs a static height and width, received {tuple(pixel_values.shape)}"
        )
    patch_h, patch_w = sizes.patch_hw
    if interpolate_pos_encoding:
        if height % patch_h or width % patch_w or height < patch_h or width < patch_w:
            raise ValueError(
                "With interpolate_pos_encoding=True, height and width must be positive "
                f"multiples of patch_size {sizes.patch_hw}, received {height}x{width}"
            )
    elif (height, width) != sizes.image_hw:
        image_h, image_w = sizes.image_hw
        raise ValueError(
            f"Input image size {height}x{width} does not match the model's "
            f"{image_h}x{image_w}; resize the images or pass interpolate_pos_encoding=True"
        )
    if is_eager(pixel_values) and not all_finite(pixel_values):
        raise ValueError("pixel_values contains NaN or infinite values")
    return pixel_values


def check_noise(
    noise: TensorLike | None, images: TensorLike, sizes: "ViTMAEConfig | InputSizes"
) -> TensorLike | None:
    """Validate masking noise for channels-last `images`; float32 or `None`."""
    if noise is None:
        return None
    if not ops.is_tensor(noise):
        noise = ops.convert_to_tensor(noise)
    dtype = keras.backend.standardize_dtype(noise.dtype)
    if "float" not in dtype:
        raise ValueError(f"noise must be a float tensor, received dtype {dtype}")
    patch_h, patch_w = sizes.patch_hw
    num_patches = (images.shape[1] // patch_h) * (images.shape[2] // patch_w)
    expected = (images.shape[0], num_patches)
    shape = tuple(noise.shape)
    if (
        len(shape) != 2
        or shape[1] != num_patches
        or (None not in (shape[0], expected[0]) and shape[0] != expected[0])
    ):
        raise ValueError(
            f"noise must have shape (batch, num_patches) = {expected}, received {shape}"
        )
    return ops.cast(noise, "float32")


def head_masks(
    head_mask: TensorLike | None, num_layers: int, num_heads: int
) -> list[TensorLike] | None:
    """Per-block `(num_heads,)` multipliers from a `(num_heads,)` or
    `(num_layers, num_heads)` mask; `None` stays `None`."""
    if head_mask is None:
        return None
    head_mask = ops.convert_to_tensor(head_mask, "float32")
    shape = tuple(head_mask.shape)
    if shape == (num_heads,):
        return [head_mask] * num_layers
    if shape == (num_layers, num_heads):
        return [head_mask[i] for i in range(num_layers)]
    raise ValueError(
        f"head_mask must have shape (num_heads,) = ({num_heads},) or (num_layers, "
        f"num_heads) = ({num_layers}, {num_heads}), received {shape}"
    )


# ----------------------------------------------------------------------
# The base model
# ----------------------------------------------------------------------

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


class TFViTMAEPreTrainedModel(ImageTasks, HubMixin, ExportMixin, keras.Model):
    """Base class of the ViTMAE models: the config, the model options, and
    checked inputs. A subclass builds its layers (`self.vit`, ...) and calls
    `self.build()`.

    Args:
        config: A `ViTMAEConfig` (or its dict).
        data_format: Layout of `pixel_values`: `"channels_first"` (the
            documented `(batch, num_channels, height, width)`, the default) or
            `"channels_last"` (`(batch, height, width, num_channels)`).
        attn_implementation: `"sdpa"` (the default: the backend's fused kernel
            where it has a fast one, else explicit batched matmuls) or
            `"eager"` (always the explicit matmuls). Both give the same
            numbers and support every output.
        seed: Seed for the masking noise and dropout. Without it, masks still
            follow `keras.utils.set_random_seed` when that was called first.
        drop_path_rate: Stochastic depth of the encoder (for fine-tuning).
        image_processor: How raw images become this model's `pixel_values`: a
            `ViTMAEImageProcessor` or its `preprocessor_config.json` fields.
            Default: MAE's (bicubic, ImageNet mean and std). Its size always
            follows the config's `image_size`.
        remat: Recompute every block's activations in the backward pass
            instead of keeping them (`keras.remat`), trading compute for memory.
        **kwargs: `keras.Model` arguments (`name`, `dtype`, ...).
    """

    config_class = ViTMAEConfig
    processor_class = ViTMAEImageProcessor
    default_name = "vit_mae"
    main_input_name = "pixel_values"  # as transformers' models name their first input
    # 🤗 Datasets columns `prepare_tf_dataset` keeps as targets (none: self-supervised).
    _label_columns: tuple[str, ...] = ()

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
        self.input_sizes = InputSizes.of(self.config)
        self.image_processor = image_processor
        self.data_format: str = check_data_format(data_format)
        self.seed = seed
        self.drop_path_rate = drop_path_rate
        self._attn_implementation = check_attn_implementation(attn_implementation)
        self._remat = _check_remat(remat)

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
    @property
    def attn_implementation(self) -> str:
        """`"sdpa"` or `"eager"`; setting it switches every attention layer."""
        return self._attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value: str) -> None:
        set_attn_implementation(self, value)
        self._attn_implementation = value

    @property
    def remat(self) -> bool:
        """Whether each encoder and decoder block's activations are recomputed
        in the backward pass instead of kept: less memory, more compute."""
        return self._remat

    @remat.setter
    def remat(self, value: bool) -> None:
        self._remat = _check_remat(value)
        for stack in (getattr(self, "vit", None), getattr(self, "decoder", None)):
            if stack is not None:
                stack.remat = value

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
        see `check_pixel_values` in this module."""
        return check_pixel_values(
            pixel_values,
            self.input_sizes,
            data_format=self.data_format,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )

    def encoder_inputs(
        self,
        pixel_values: TensorLike | dict,
        noise: TensorLike | None = None,
        *,
        head_mask: TensorLike | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[TensorLike, dict[str, Any]]:
        """The call's inputs checked: `(channels-last images, the encoder's
        keyword arguments)`. A flag left at `None` takes the config's
        default, as in transformers."""
        c = self.config
        pixel_values, noise = unpack_inputs(pixel_values, noise)
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        flags = dict(output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return images, dict(
            noise=check_noise(noise, images, self.input_sizes),
            head_masks=head_masks(head_mask, c.num_hidden_layers, c.num_attention_heads),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            **{k: bool(getattr(c, k) if v is None else v) for k, v in flags.items()},
        )

    def _return(self, output: "ModelOutput", return_dict: bool | None) -> Any:
        """The output object, or its tuple (`return_dict=False`, or the
        config's `return_dict`/`torchscript` when `None`)."""
        if return_dict is None:
            return_dict = self.config.return_dict and not self.config.torchscript
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------- training
    def compile(self, *args, jit_compile: bool | str = "auto", **kwargs) -> None:
        """Keras' `compile`, with this model's own `jit_compile="auto"`:
        `default_jit_compile()`. Pass `jit_compile=True` or `False` to choose."""
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
        """Whether `compile` uses XLA by default (where `benchmarks/` measured
        it faster): yes for float32 models, and for 16-bit ones on GPU; no for
        16-bit policies on CPU (XLA's CPU bfloat16 matmuls trail oneDNN's), and
        no inside a distribution strategy (as Keras' own default). JAX always
        compiles; on PyTorch, `torch.compile` is left to the user."""
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

    @classmethod
    def from_config(cls, config: "dict | ViTMAEConfig") -> "TFViTMAEPreTrainedModel":
        """A new model from `get_config()`'s dict (Keras), or from a
        `ViTMAEConfig` (transformers' `Model.from_config(config)`)."""
        if isinstance(config, ViTMAEConfig):
            return cls(config)
        config = dict(config)
        config["config"] = ViTMAEConfig.from_dict(config["config"])
        return cls(**config)

    # ------------------------------------------------ model parallelism
    @classmethod
    def get_layout_map(
        cls,
        device_mesh: keras.distribution.DeviceMesh,
        model_parallel_dim_name: str = "model",
        data_parallel_dim_name: str = "batch",
        *,
        config: ViTMAEConfig | dict | None = None,
    ) -> keras.distribution.LayoutMap:
        """The `keras.distribution.LayoutMap` that shards each transformer block
        over the model axis of `device_mesh`, attention by heads and the MLP
        by hidden units (`models/sharding.py`), as keras-hub's backbones give
        theirs. Build the model under `ModelParallel` with it:

        ```python
        mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"])
        layout_map = TFViTMAEForPreTraining.get_layout_map(mesh, config=config)
        parallel = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
        with parallel.scope():
            model = TFViTMAEForPreTraining(config)
        ```

        With `config`, a model axis that does not divide the heads or MLP
        hidden units of this class's blocks (the encoder's; the decoder's
        too for `TFViTMAEForPreTraining`) raises `ValueError` here, naming
        the block, the size and the mesh. See `sharding.get_layout_map`.
        """
        return get_layout_map(
            device_mesh,
            model_parallel_dim_name,
            data_parallel_dim_name,
            config=None if config is None else as_config(config),
            stacks=("vit", "decoder") if issubclass(cls, PreTrainingTasks) else ("vit",),
        )

    # ------------------------------------------------ transformers' TF API
    def get_input_embeddings(self) -> keras.layers.Layer:
        """The patch embedding (transformers' name for a model's input embedding)."""
        return self.vit.embeddings.patch_embeddings

    def get_output_embeddings(self) -> None:
        """None: no output layer shares the input embedding's weights (as transformers)."""
        return None

    def _image_shape(self) -> tuple[int, int, int]:
        """One input image's shape in `data_format`."""
        (height, width), channels = self.config.image_hw, self.config.num_channels
        if self.data_format == "channels_last":
            return (height, width, channels)
        return (channels, height, width)

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
