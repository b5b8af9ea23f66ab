"""`TFViTMAEPreTrainedModel`: what every tfvitmae model shares.

The config and the model options, running the encoder on checked inputs, Keras
serialisation, and the documented Hugging Face methods (`from_pretrained`,
`save_pretrained`, `push_to_hub`) plus `export`, which hand the model to the
model-agnostic `hub` and `export` modules.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from . import export as serving_export
from . import hub
from .config import ViTMAEConfig, as_config
from .image_processor import ViTMAEImageProcessor, load_images
from .inputs import check_data_format, check_noise, check_pixel_values, head_masks, unpack_inputs
from .stacks import ViTMAEEncoder
from .state_dicts import to_state_dict


class TFViTMAEPreTrainedModel(keras.Model):
    """Base class of the ViTMAE models: config, options, checkpoints, export.

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
        **kwargs: `keras.Model` arguments (`name`, `dtype`, ...).
    """

    default_name = "vit_mae"

    def __init__(
        self,
        config,
        data_format="channels_first",
        attn_implementation="sdpa",
        seed=None,
        drop_path_rate=0.0,
        image_processor=None,
        **kwargs,
    ):
        kwargs.setdefault("name", self.default_name)
        super().__init__(**kwargs)
        self.config = as_config(config)
        self.image_processor = image_processor
        self.data_format = check_data_format(data_format)
        self.seed = seed
        self.drop_path_rate = drop_path_rate
        self.vit = ViTMAEEncoder(
            self.config,
            attn_implementation=attn_implementation,
            seed=seed,
            drop_path_rate=drop_path_rate,
            name="vit",
            dtype=self.dtype_policy,
        )

    # -------------------------------------------------------------- options
    @property
    def attn_implementation(self):
        """`"sdpa"` or `"eager"`; setting it switches every block (weights are shared)."""
        return self.vit.attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value):
        for stack in self._attention_stacks():
            stack.attn_implementation = value

    def _attention_stacks(self):
        return [self.vit]

    @property
    def image_processor(self):
        """The `ViTMAEImageProcessor` that turns raw images into this model's
        inputs; saved with the model. Set it to a processor or a dict of its fields."""
        return self._image_processor

    @image_processor.setter
    def image_processor(self, value):
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
    def input_dtype(self):
        # Keep pixels in float32 under mixed precision: the loss target is the
        # input image, and the layers cast for themselves.
        compute = self.compute_dtype
        return "float32" if compute in ("float16", "bfloat16") else compute

    # --------------------------------------------------------------- inputs
    def check_pixel_values(self, pixel_values, interpolate_pos_encoding=False):
        """`pixel_values` (in `data_format`) validated and moved channels-last;
        see `inputs.check_pixel_values`."""
        return check_pixel_values(
            pixel_values, self.config, self.data_format, interpolate_pos_encoding
        )

    def _encode(
        self,
        pixel_values,
        noise,
        head_mask,
        output_attentions,
        output_hidden_states,
        interpolate_pos_encoding,
        training,
    ):
        """Check the inputs and run the encoder.

        Returns:
            `(channels-last images, encoder output)`.
        """
        pixel_values, noise = unpack_inputs(pixel_values, noise)
        images = self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        c = self.config
        outputs = self.vit(
            images,
            noise=check_noise(noise, images, c),
            head_masks=head_masks(head_mask, c.num_hidden_layers, c.num_attention_heads),
            output_attentions=bool(
                c.output_attentions if output_attentions is None else output_attentions
            ),
            output_hidden_states=bool(
                c.output_hidden_states if output_hidden_states is None else output_hidden_states
            ),
            interpolate_pos_encoding=bool(interpolate_pos_encoding),
            training=training,
        )
        return images, outputs

    # ------------------------------------------------------- raw images
    def predict_images(self, images, batch_size=32, **kwargs):
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
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}")
        loaded = load_images(images, self.config.num_channels)
        results = []
        for start in range(0, len(loaded), batch_size):
            chunk = loaded[start : start + batch_size]
            pixels = self.image_processor(chunk, data_format=self.data_format)["pixel_values"]
            results.append(self._image_outputs(pixels, start=start, **kwargs))
        return {k: np.concatenate([np.asarray(r[k]) for r in results]) for k in results[0]}

    def _image_outputs(self, pixel_values, start=0):
        """`predict_images`' outputs for the batch of `pixel_values` that
        starts at image `start`: features."""
        images = self.check_pixel_values(pixel_values)
        hidden = self.vit(images, unmasked=True).last_hidden_state
        return {
            "cls_features": ops.cast(hidden[:, 0], "float32"),
            "mean_features": ops.cast(ops.mean(hidden[:, 1:], axis=1), "float32"),
        }

    def _return(self, output, return_dict):
        use_dict = self.config.use_return_dict if return_dict is None else return_dict
        return output if use_dict else output.to_tuple()

    # ------------------------------------------------- checkpoints and Hub
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *,
        config=None,
        from_pt=None,
        strict=True,
        output_loading_info=False,
        revision=None,
        token=None,
        cache_dir=None,
        local_files_only=False,
        force_download=False,
        **kwargs,
    ):
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
            output_loading_info: Also return the `state_dicts.LoadReport`.
            revision, token, cache_dir, local_files_only, force_download:
                Passed to `huggingface_hub` for Hub ids.
            **kwargs: `ViTMAEConfig` fields to override (any of
                `ViTMAEConfig.FIELDS`, e.g. `mask_ratio=0.5` or
                `output_hidden_states=True`) and model arguments
                (`data_format`, `attn_implementation`, ...).

        Returns:
            The model, or `(model, report)` with `output_loading_info=True`.
        """
        return hub.from_pretrained(
            cls,
            pretrained_model_name_or_path,
            config=config,
            from_pt=from_pt,
            strict=strict,
            output_loading_info=output_loading_info,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
            **kwargs,
        )

    def load_pretrained_weights(self, path, strict=True):
        """Load a checkpoint directory or weights file into this model, all or nothing.

        Returns:
            A `state_dicts.LoadReport` of what was loaded, missing and unused.
        """
        return hub.load_pretrained_weights(self, path, strict=strict)

    def save_pretrained(
        self,
        save_directory,
        pytorch=False,
        safe_serialization=True,
        push_to_hub=False,
        **hub_kwargs,
    ):
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
        written = hub.save_pretrained(
            self, save_directory, pytorch=pytorch, safe_serialization=safe_serialization
        )
        if push_to_hub:
            default_repo = os.path.basename(os.path.abspath(save_directory))
            repo_id = hub_kwargs.pop("repo_id", default_repo)
            self.push_to_hub(
                repo_id, pytorch=pytorch, safe_serialization=safe_serialization, **hub_kwargs
            )
        return written

    def push_to_hub(
        self,
        repo_id,
        commit_message=None,
        private=None,
        token=None,
        revision=None,
        create_pr=False,
        pytorch=False,
        safe_serialization=True,
    ):
        """Upload `config.json` and the weights (as `save_pretrained` writes them) to a Hub repo."""
        return hub.push_to_hub(
            self,
            repo_id,
            commit_message=commit_message,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            pytorch=pytorch,
            safe_serialization=safe_serialization,
        )

    @classmethod
    def init_kwargs_from_config(cls, config):
        """Constructor arguments stored in a saved `config.json` beside the config."""
        return {}

    def config_extras(self, pytorch=False):
        """Keys `save_pretrained` adds to `config.json` (see `init_kwargs_from_config`)."""
        return {}

    def pytorch_state_dict(self):
        """The weights in the transformers PyTorch layout, as NumPy arrays.

        Every PyTorch save (`save_pretrained(pytorch=True)`, `push_to_hub`)
        goes through this method, so a model that cannot be written in that
        layout refuses here.
        """
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
        return serving_export.export_saved_model(self, filepath, verbose=verbose, **kwargs)

    # ------------------------------------------------------------- training
    def compile(self, *args, jit_compile="auto", **kwargs):
        """Keras' `compile`, with this model's own `jit_compile="auto"`.

        Keras' "auto" turns XLA off on a CPU-only machine; here "auto" means
        `default_jit_compile()`, which turns it on where it was measured faster
        (see `benchmarks/`). Pass `jit_compile=True` or `False` to choose.
        """
        if jit_compile == "auto":
            jit_compile = False if kwargs.get("run_eagerly") else self.default_jit_compile()
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        """Re-compile a loaded `.keras` model. Keras skips this for models whose
        `compile` is overridden; ours only resolves the XLA default, so it is
        safe to call, and the optimizer state then loads with the weights."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def default_jit_compile(self):
        """Whether `compile` uses XLA by default: yes for float32 models, and for
        16-bit ones on GPU; no for 16-bit policies on CPU (XLA's CPU bfloat16
        matmuls run at a fraction of oneDNN's speed), and no inside a
        distribution strategy (as Keras' own default)."""
        if tf.distribute.has_strategy():
            return False
        if self.compute_dtype == "float32":
            return True
        return bool(tf.config.list_logical_devices("GPU"))

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
            "image_processor": self.image_processor.to_dict(hf_keys=False),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["config"] = ViTMAEConfig.from_dict(config["config"])
        return cls(**config)
