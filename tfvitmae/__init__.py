"""tfvitmae: ViTMAE (masked autoencoders) for Keras 3 on TensorFlow.

The public API follows Hugging Face's documented `TFViTMAEModel` /
`TFViTMAEForPreTraining`, plus `TFViTMAEForImageClassification` for probing
and fine-tuning. Model classes are imported on first use, so `import
tfvitmae` (and the `tfvitmae` command's `--help`) stays fast and
`ViTMAEConfig` can be used without loading TensorFlow.

Modules, bottom up (a module imports only from the rows above it, or earlier
in its own row; `tests/test_architecture.py` checks this):

- `config`, `activations`, `seeds`, `files`: plain Python.
- `position`, `attention`, `layers`, `outputs`, `inputs`, `patches`: Keras layers and ops.
- `stacks`: the encoder and decoder.
- `checkpoint_files`, `weights`, `state_dicts`, `hub`: checkpoint I/O. Model-agnostic: they take the
  model or class as an argument, or find it in Keras' registry.
- `image_processor`: raw images to `pixel_values`, and `preprocessor_config.json`.
- `image_folders`, `augmentation`, `data`, `export`: folder scans and splits, MAE's augmentation,
  the `tf.data` pipeline, and the SavedModel signatures (model-agnostic).
- `base_model`, `modeling`, `classification`: the models, whose documented methods
  (`from_pretrained`, `save_pretrained`, `export`, ...) call the rows above.
- `schedules`, `optimizers`, `visualization`, `callbacks`, `loops`, `runs`, `training`: the recipe.
- `demo`, `commands`, `cli`: the `tfvitmae` command.
"""

import importlib

from .config import PRESETS, ViTMAEConfig

__version__ = "0.1.0"

_LAZY = {
    "TFViTMAEModel": "modeling",
    "TFViTMAEForPreTraining": "modeling",
    "TFViTMAEPreTrainedModel": "base_model",
    "TFViTMAEForImageClassification": "classification",
    "TFViTMAEModelOutput": "outputs",
    "TFViTMAEForPreTrainingOutput": "outputs",
    "TFViTMAEDecoderOutput": "outputs",
    "ViTMAEImageProcessor": "image_processor",
}

__all__ = ["PRESETS", "ViTMAEConfig", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfvitmae' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
