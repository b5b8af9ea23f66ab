"""The model: its config, layers, the two documented models and the classifier.

A forward pass reads in three files: `vit_mae.py`, `layers.py` and
`pretrained.py`.

- `config.py`: `ViTMAEConfig`, its fields, sizes and presets (plain Python);
  `config_compat.py`: what it keeps of transformers' `PretrainedConfig`.
- `layers.py`: activations, position tables, attention, patch embedding,
  masking, MLP, block, and the pixel loss.
- `vit_mae.py`: the architecture: embeddings, encoder, decoder,
  `TFViTMAEModel` and `TFViTMAEForPreTraining`.
- `pretrained.py`: `TFViTMAEPreTrainedModel` (transformers' TF API), the
  output containers and the input checks.
- `tasks.py`: what a user does with a model (`predict_images`,
  `reconstruct`, `classify`, `fit` without labels), inherited by the models.
- `classification.py`: `TFViTMAEForImageClassification` (probe, fine-tune).
- `sharding.py`: the layout map that splits each block over devices
  (`get_layout_map`, for `keras.distribution.ModelParallel`).

The models are built on `checkpoints`, `data` and `serving`, which never
import a model: the documented `from_pretrained`, `save_pretrained` and
`export` come from their mixins.
"""

from ..utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PRESETS": "config",
        "ViTMAEConfig": "config",
        "TFViTMAEPreTrainedModel": "pretrained",
        "TFViTMAEModel": "vit_mae",
        "TFViTMAEForPreTraining": "vit_mae",
        "TFViTMAEForImageClassification": "classification",
        "TFViTMAEModelOutput": "pretrained",
        "TFViTMAEForPreTrainingOutput": "pretrained",
        "TFViTMAEDecoderOutput": "pretrained",
    },
)
