"""The model: its config, layers, the two documented models and the classifier.

- `config.py`: `ViTMAEConfig` (fields, derived sizes, I/O, validation) and the
  published sizes (plain Python).
- `config_compat.py`: what the config keeps of transformers' `PretrainedConfig`
  (its base class: kept keys, class names, refused settings, misspellings, the
  memory estimate).
- `activations.py`: the `hidden_act` table (plain Python until called).
- `layers.py`: position tables, attention, patch embedding, masking, MLP,
  block, and the pixel loss.
- `vit_mae.py`: the encoder and decoder stacks, `TFViTMAEPreTrainedModel`,
  `TFViTMAEModel` and `TFViTMAEForPreTraining`.
- `classification.py`: `TFViTMAEForImageClassification` (probe, fine-tune).
- `outputs.py`, `inputs.py`: the output containers and the input checks.

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
        "TFViTMAEPreTrainedModel": "vit_mae",
        "TFViTMAEModel": "vit_mae",
        "TFViTMAEForPreTraining": "vit_mae",
        "TFViTMAEForImageClassification": "classification",
        "TFViTMAEModelOutput": "outputs",
        "TFViTMAEForPreTrainingOutput": "outputs",
        "TFViTMAEDecoderOutput": "outputs",
    },
)
