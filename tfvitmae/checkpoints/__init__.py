"""Checkpoints: the PyTorch <-> Keras weight-name table, the file formats,
state dicts, and the Hugging Face Hub.

- `weight_names.py`: one table from every Keras variable to its name and
  array layout in each checkpoint format, read in both directions.
- `formats.py`: readers and writers of every weights file, and the file names.
- `state_dicts.py`: all-or-nothing loading with a `LoadReport`; saving in a
  PyTorch layout.
- `hub.py`: resolving directories, files and Hub repo ids, and `HubMixin`
  (`from_pretrained`, `save_pretrained`, `push_to_hub`).

Nothing here imports a model class: functions take the model or class, and
classes named in a `config.json` are found in Keras' registry.
"""

from ..utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CONFIG_NAME": "formats",
        "KERAS_WEIGHTS_NAME": "formats",
        "PREPROCESSOR_NAME": "formats",
        "PT_WEIGHTS_NAME": "formats",
        "SAFE_WEIGHTS_INDEX_NAME": "formats",
        "SAFE_WEIGHTS_NAME": "formats",
        "TF_LEGACY_WEIGHTS_NAME": "formats",
        "WEIGHT_FILES": "formats",
        "CheckpointError": "formats",
        "read_checkpoint": "formats",
        "FORMATS": "weight_names",
        "detect_format": "weight_names",
        "keras_variables": "weight_names",
        "weight_table": "weight_names",
        "LoadReport": "state_dicts",
        "load_state_dict": "state_dicts",
        "to_state_dict": "state_dicts",
        "HubMixin": "hub",
        "architecture_class": "hub",
        "finish_interrupted_save": "hub",
        "resolve_files": "hub",
    },
)
