"""tfvitmae: ViTMAE (masked autoencoders) for Keras 3 on TensorFlow.

The public API follows Hugging Face's documented `TFViTMAEModel` /
`TFViTMAEForPreTraining`, plus `TFViTMAEForImageClassification` for probing
and fine-tuning, and the recipe, data pipeline and export around them.
Everything is imported on first use, so `import tfvitmae` (and the
`tfvitmae` command's `--help`) stays fast and `ViTMAEConfig` can be used
without loading TensorFlow.

Subpackages, bottom up (a subpackage imports only from those before it;
`tests/test_architecture.py` checks this):

- `utils`: atomic file writes, argument checks, lazy exports (plain Python).
- `checkpoints`: the weight-name table, file formats, state dicts, the Hub.
- `data`: the image processor, the `tf.data` pipeline, folders, augmentation.
- `serving`: the SavedModel export and TF Serving requests.
- `models`: the config, layers, the two documented models and the classifier,
  built on the three above (which take a model, and never import one).
- `training`: the MAE recipes, optimizers, callbacks, resumable runs.
- `cli`: the `tfvitmae` command and its demo.
"""

from . import _deprecated
from .utils.lazy import lazy_exports

__version__ = "0.1.0"

_deprecated.install()

_PUBLIC = {
    # models
    "PRESETS": "models.config",
    "ViTMAEConfig": "models.config",
    "TFViTMAEPreTrainedModel": "models.pretrained",
    "TFViTMAEModel": "models.vit_mae",
    "TFViTMAEForPreTraining": "models.vit_mae",
    "TFViTMAEForImageClassification": "models.classification",
    "TFViTMAEModelOutput": "models.pretrained",
    "TFViTMAEForPreTrainingOutput": "models.pretrained",
    "TFViTMAEDecoderOutput": "models.pretrained",
    "masking_noise": "models.layers",
    # checkpoints
    "CheckpointError": "checkpoints.formats",
    "LoadReport": "checkpoints.state_dicts",
    # data
    "ViTMAEImageProcessor": "data.image_processor",
    "make_dataset": "data.pipeline",
    "set_epoch": "data.pipeline",
    "list_image_files": "data.folders",
    "split_files": "data.folders",
    # training
    "pretrain": "training.recipes",
    "train_classifier": "training.recipes",
    "mae_optimizer": "training.optimizers",
    "classifier_optimizer": "training.optimizers",
    "LayerDecayAdamW": "training.optimizers",
    "WarmupCosineDecay": "training.optimizers",
    "DataEpoch": "training.callbacks",
    "NonFiniteLossError": "training.callbacks",
    "ReconstructionCallback": "training.callbacks",
    "SavePretrained": "training.callbacks",
    "StopOnNonFiniteLoss": "training.callbacks",
    "RunConflictError": "training.runs",
    "train_loop": "training.distributed",
    "reconstruction_grid": "training.visualization",
    "write_reconstruction_grid": "training.visualization",
    # serving
    "export_saved_model": "serving.saved_model",
    "export_for_serving": "serving.saved_model",
    "example_inputs": "serving.requests",
    "predict_request": "serving.requests",
    "rest_request": "serving.requests",
    "rest_to_tensors": "serving.requests",
}

__all__, _getattr, __dir__ = lazy_exports(__name__, _PUBLIC)
__all__ = [*__all__, "__version__"]


def __getattr__(name):
    if name in _deprecated.MOVED_MODULES:  # `tfvitmae.runs` without importing it first
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    return _getattr(name)
