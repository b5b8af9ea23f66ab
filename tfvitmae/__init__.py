"""tfvitmae: ViTMAE (masked autoencoders) for Keras 3 on TensorFlow.

The public API follows Hugging Face's documented `TFViTMAEModel` /
`TFViTMAEForPreTraining`, plus `TFViTMAEForImageClassification` for probing
and fine-tuning; `tfvitmae.data`, `tfvitmae.training` and `tfvitmae.export`
hold the input pipeline, the training recipe and the serving export. Model classes are imported on first use, so
`import tfvitmae` (and the `tfvitmae` command's `--help`) stays fast and
`ViTMAEConfig` can be used without loading TensorFlow.
"""

import importlib

from .config import PRESETS, ViTMAEConfig

__version__ = "0.1.0"

_LAZY = {
    "TFViTMAEModel": "modeling",
    "TFViTMAEForPreTraining": "modeling",
    "TFViTMAEPreTrainedModel": "modeling",
    "TFViTMAEForImageClassification": "classification",
    "TFViTMAEModelOutput": "outputs",
    "TFViTMAEForPreTrainingOutput": "outputs",
    "TFViTMAEDecoderOutput": "outputs",
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
