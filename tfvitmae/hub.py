"""`from_pretrained`, `save_pretrained` and `push_to_hub` for the ViTMAE models.

A checkpoint is a local directory, a single weights file, or a Hugging Face
Hub repo id (fetched with `huggingface_hub`, which honours its cache,
`HF_HUB_OFFLINE` and `local_files_only`). The weights format is found from
the files present (see `weights.WEIGHT_FILES` for the order).
"""

import json
import os
import shutil
import tempfile

from .config import CONFIG_NAME, ViTMAEConfig
from .weights import (
    KERAS_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHT_FILES,
    CheckpointError,
    detect_format,
    infer_mae_config,
    load_state_dict,
    read_checkpoint,
    write_safetensors,
    write_torch_bin,
)

# The names Hugging Face's PyTorch classes use for our classes, in config.json.
_PYTORCH_ARCHITECTURE = {
    "TFViTMAEModel": "ViTMAEModel",
    "TFViTMAEForPreTraining": "ViTMAEForPreTraining",
    "TFViTMAEForImageClassification": "ViTForImageClassification",
}


def _model_classes():
    from .classification import TFViTMAEForImageClassification
    from .modeling import TFViTMAEForPreTraining, TFViTMAEModel

    return {c.__name__: c for c in (TFViTMAEModel, TFViTMAEForPreTraining, TFViTMAEForImageClassification)}
_CONFIG_FIELDS = set(ViTMAEConfig().to_dict()) - {"model_type"}


def _is_local(name):
    """Whether `name` reads as a path rather than a Hub repo id (`org/name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _download(repo_id, filename, hub_kwargs, unreachable):
    """A file of a Hub repo (from the cache when offline), or None if it is not
    there. Files that only the unreachable Hub could tell about are added to
    `unreachable`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(repo_id, filename, library_name="tfvitmae", **hub_kwargs)
    except LocalEntryNotFoundError:  # offline, local_files_only, or no connection, and not cached
        unreachable.append(filename)  # (a subclass of EntryNotFoundError: caught first)
        return None
    except EntryNotFoundError:
        return None


def resolve_files(name_or_path, revision=None, token=None, cache_dir=None, local_files_only=False,
                  force_download=False):
    """`(config_path or None, weights_path)` for a directory, a file or a Hub repo id."""
    if os.path.isfile(name_or_path):
        config = os.path.join(os.path.dirname(os.path.abspath(name_or_path)), CONFIG_NAME)
        return (config if os.path.isfile(config) else None), name_or_path
    if os.path.isdir(name_or_path):
        config = os.path.join(name_or_path, CONFIG_NAME)
        for filename in WEIGHT_FILES:
            path = os.path.join(name_or_path, filename)
            if os.path.isfile(path):
                return (config if os.path.isfile(config) else None), path
        raise CheckpointError(
            f"No weights in the directory {name_or_path!r}: expected one of {', '.join(WEIGHT_FILES)}, "
            f"found {sorted(os.listdir(name_or_path)) or 'nothing'}"
        )
    if _is_local(name_or_path):
        raise FileNotFoundError(f"No file or directory at {name_or_path!r}")
    from huggingface_hub.errors import HFValidationError

    hub_kwargs = dict(
        revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only,
        force_download=force_download,
    )
    unreachable = []
    try:
        config = _download(name_or_path, CONFIG_NAME, hub_kwargs, unreachable)
    except HFValidationError as e:
        raise FileNotFoundError(f"{name_or_path!r} is neither a local path nor a valid Hub repo id: {e}") from None
    for filename in WEIGHT_FILES:
        path = _download(name_or_path, filename, hub_kwargs, unreachable)
        if path is None:
            continue
        if filename == SAFE_WEIGHTS_INDEX_NAME:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            for shard in shards:
                if _download(name_or_path, shard, hub_kwargs, unreachable) is None:
                    raise CheckpointError(f"{name_or_path}: the shard {shard} listed in {filename} is not available")
        return config, path
    if unreachable:
        raise CheckpointError(
            f"No weights for {name_or_path!r} in the local cache, and the Hub was not asked (offline mode or "
            f"local_files_only) or could not be reached; looked for {', '.join(WEIGHT_FILES)}"
        )
    raise CheckpointError(f"No weights in the Hub repo {name_or_path!r}: expected one of {', '.join(WEIGHT_FILES)}")


def _read_keras_weights(path, config):
    """The variables of our own `.weights.h5`, by path, via the class that wrote it."""
    classes = _model_classes()
    names = [a for a in config.extra.get("architectures", ()) if a in classes]
    writer = classes[names[0]] if names else classes["TFViTMAEForPreTraining"]
    source = writer(config, **writer.init_kwargs_from_config(config))
    try:
        source.load_weights(path)
    except Exception as e:  # Keras raises several types for corrupt or mismatched files
        raise CheckpointError(f"Cannot read {path} as {writer.__name__} weights for its config.json: {e}") from None
    from .weights import keras_variables

    return {name: variable.numpy() for name, variable in keras_variables(source).items()}


def load_any_model(name_or_path, **kwargs):
    """The checkpoint's own model class (from `architectures` in its config),
    loaded with `from_pretrained`; `TFViTMAEForPreTraining` when unsaid."""
    config_path, _ = resolve_files(os.fspath(name_or_path))
    classes = _model_classes()
    by_name = {**{v: classes[k] for k, v in _PYTORCH_ARCHITECTURE.items()}, **classes}
    architectures = ViTMAEConfig.from_pretrained(config_path).extra.get("architectures", []) if config_path else []
    cls = next((by_name[a] for a in architectures if a in by_name), classes["TFViTMAEForPreTraining"])
    return cls.from_pretrained(name_or_path, **kwargs)


def load_weights_file(model, config, weights_path, strict=True):
    """Load one resolved weights file into `model` (all or nothing); returns a `LoadReport`."""
    source = os.path.basename(weights_path)
    if source == KERAS_WEIGHTS_NAME or weights_path.endswith(".weights.h5"):
        if config is None:
            raise CheckpointError(f"{weights_path} needs the config.json it was saved with, beside it")
        state = _read_keras_weights(weights_path, config)
    else:
        state = read_checkpoint(weights_path)
    return load_state_dict(model, state, strict=strict, source=source)


def from_pretrained(cls, name_or_path, config=None, from_pt=None, strict=True, output_loading_info=False,
                    revision=None, token=None, cache_dir=None, local_files_only=False, force_download=False,
                    **kwargs):
    """See `TFViTMAEPreTrainedModel.from_pretrained`."""
    del from_pt  # accepted for compatibility: the format is detected from the files
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    config_path, weights_path = resolve_files(
        os.fspath(name_or_path), revision=revision, token=token, cache_dir=cache_dir,
        local_files_only=local_files_only, force_download=force_download,
    )
    state = None
    if config is not None:
        config = config if isinstance(config, ViTMAEConfig) else ViTMAEConfig.from_dict(config)
    elif config_path is not None:
        config = ViTMAEConfig.from_pretrained(config_path)
    else:
        state = read_checkpoint(weights_path)
        if detect_format(state) != "mae":
            raise CheckpointError(f"No {CONFIG_NAME} beside {weights_path}; pass config=ViTMAEConfig(...)")
        config = infer_mae_config(state)  # the original MAE release ships no config
    if overrides:
        config = config.copy(**overrides)
    model = cls(config, **{**cls.init_kwargs_from_config(config), **kwargs})
    if state is not None:
        report = load_state_dict(model, state, strict=strict, source=os.path.basename(weights_path))
    else:
        report = load_weights_file(model, config, weights_path, strict=strict)
    return (model, report) if output_loading_info else model


def _clear_other_weights(directory, keep):
    """Remove stale weight files that `resolve_files` would prefer to the new one."""
    for name in os.listdir(directory):
        stale = name in WEIGHT_FILES or (name.startswith("model-") and name.endswith(".safetensors"))
        if stale and name != keep:
            os.remove(os.path.join(directory, name))


def save_pretrained(model, save_directory, pytorch=False, safe_serialization=True):
    """See `TFViTMAEPreTrainedModel.save_pretrained`. Returns the written paths."""
    save_directory = os.fspath(save_directory)
    if os.path.isfile(save_directory):
        raise ValueError(f"save_directory must be a directory, received the file {save_directory!r}")
    os.makedirs(save_directory, exist_ok=True)
    class_name = type(model).__name__
    architecture = _PYTORCH_ARCHITECTURE.get(class_name, class_name) if pytorch else class_name
    config = model.config.copy(architectures=[architecture], **model.config_extras(pytorch))
    # Write everything into a temporary folder first: an interrupted save
    # leaves the directory as it was.
    staging = tempfile.mkdtemp(prefix=".tmp-save-", dir=save_directory)
    try:
        if pytorch:
            state = model.pytorch_state_dict()
            weights_name = SAFE_WEIGHTS_NAME if safe_serialization else PT_WEIGHTS_NAME
            writer = write_safetensors if safe_serialization else write_torch_bin
            writer(state, os.path.join(staging, weights_name))
        else:
            weights_name = KERAS_WEIGHTS_NAME
            model.save_weights(os.path.join(staging, weights_name))
        config.save_pretrained(staging)
        _clear_other_weights(save_directory, keep=weights_name)
        written = []
        for name in (weights_name, CONFIG_NAME):
            os.replace(os.path.join(staging, name), os.path.join(save_directory, name))
            written.append(os.path.join(save_directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def push_to_hub(model, repo_id, commit_message=None, private=None, token=None, revision=None, create_pr=False,
                pytorch=False, safe_serialization=True):
    """See `TFViTMAEPreTrainedModel.push_to_hub`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, pytorch=pytorch, safe_serialization=safe_serialization)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {type(model).__name__}",
            revision=revision,
            create_pr=create_pr,
        )
