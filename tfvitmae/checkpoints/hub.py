"""`from_pretrained`, `save_pretrained` and `push_to_hub`, for any model class.

A checkpoint is a local directory, a single weights file, or a Hugging Face
Hub repo id (fetched with `huggingface_hub`, which honours its cache,
`HF_HUB_OFFLINE` and `local_files_only`). The weights format is found from
the files present (see `checkpoint_files.WEIGHT_FILES` for the order).

Nothing here imports a model class: the functions take the class or model as
an argument, and a class named in a `config.json` is found in Keras' registry.
What a model may be saved as is the model's own rule (`pytorch_state_dict`,
`config_extras`), so every path to disk passes through it.
"""

import json
import os
import warnings

import keras

from .checkpoint_files import (
    KERAS_WEIGHTS_NAME,
    PREPROCESSOR_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHT_FILES,
    CheckpointError,
    read_checkpoint,
    read_keras_weights,
    write_safetensors,
    write_torch_bin,
)
from .config import CONFIG_NAME, ViTMAEConfig, as_config
from .files import commit_files, finish_commits, read_json, staging_dir
from .state_dicts import keras_state, load_state_dict
from .weights import detect_format, infer_mae_config

# Our class names and the transformers PyTorch classes with the same weights,
# as written to (and read from) `architectures` in config.json.
PYTORCH_ARCHITECTURES = {
    "TFViTMAEModel": "ViTMAEModel",
    "TFViTMAEForPreTraining": "ViTMAEForPreTraining",
    "TFViTMAEForImageClassification": "ViTForImageClassification",
}
REGISTRY_PACKAGE = "tfvitmae"


def _is_local(name):
    """Whether `name` reads as a path rather than a Hub repo id (`org/name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _download(repo_id, filename, hub_kwargs, unreachable):
    """A file of a Hub repo (from the cache when offline), or None if it is not
    there. Files that only the unreachable Hub could tell about are added to
    `unreachable`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
    )

    try:
        return hf_hub_download(repo_id, filename, library_name="tfvitmae", **hub_kwargs)
    except HFValidationError as e:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local path nor a valid Hub repo id: {e}"
        ) from None
    except LocalEntryNotFoundError:  # offline, local_files_only, or no connection, and not cached
        unreachable.append(filename)  # (a subclass of EntryNotFoundError: caught first)
        return None
    except EntryNotFoundError:
        return None


def resolve_files(
    name_or_path,
    revision=None,
    token=None,
    cache_dir=None,
    local_files_only=False,
    force_download=False,
):
    """`(config_path or None, weights_path)` for a directory, a file or a Hub repo id."""
    if os.path.exists(name_or_path):
        folder = name_or_path if os.path.isdir(name_or_path) else os.path.dirname(name_or_path)
        _finish_interrupted_saves(os.path.abspath(folder))
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
            f"No weights in the directory {name_or_path!r}: expected one of "
            f"{', '.join(WEIGHT_FILES)}, "
            f"found {sorted(os.listdir(name_or_path)) or 'nothing'}"
        )
    if _is_local(name_or_path):
        raise FileNotFoundError(f"No file or directory at {name_or_path!r}")
    if "/" not in name_or_path:
        raise FileNotFoundError(
            f"No local file or directory {name_or_path!r}, and it is not a Hub repo id "
            "('owner/name', e.g. 'facebook/vit-mae-base')"
        )
    hub_kwargs = dict(
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
    )
    unreachable = []
    config = _download(name_or_path, CONFIG_NAME, hub_kwargs, unreachable)
    for filename in WEIGHT_FILES:
        path = _download(name_or_path, filename, hub_kwargs, unreachable)
        if path is None:
            continue
        if filename == SAFE_WEIGHTS_INDEX_NAME:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            for shard in shards:
                if _download(name_or_path, shard, hub_kwargs, unreachable) is None:
                    raise CheckpointError(
                        f"{name_or_path}: the shard {shard} listed in {filename} is not available"
                    )
        return config, path
    if unreachable:
        raise CheckpointError(
            f"No local directory {name_or_path!r}, and no weights for the Hub repo of that name "
            "in the local cache; the Hub was not asked (offline mode or local_files_only) or "
            f"could not be reached. Looked for {', '.join(WEIGHT_FILES)}"
        )
    raise CheckpointError(
        f"No weights in the Hub repo {name_or_path!r}: expected one of {', '.join(WEIGHT_FILES)}"
    )


def resolve_optional_file(name_or_path, filename, **hub_kwargs):
    """The path of `filename` beside a checkpoint (a directory, a file in it, or
    a Hub repo id), or `None` when the checkpoint has none. `hub_kwargs`:
    `revision`, `token`, `cache_dir`, `local_files_only`, `force_download`."""
    if os.path.isfile(name_or_path):
        name_or_path = os.path.dirname(os.path.abspath(name_or_path))
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    if _is_local(name_or_path):
        raise FileNotFoundError(f"No file or directory at {name_or_path!r}")
    return _download(name_or_path, filename, hub_kwargs, unreachable=[])


def registered_class(name):
    """Our model class called `name` (or the class standing for the PyTorch
    class `name`), from Keras' registry; `None` if there is none."""
    ours = {v: k for k, v in PYTORCH_ARCHITECTURES.items()}.get(name, name)
    return keras.saving.get_registered_object(f"{REGISTRY_PACKAGE}>{ours}")


def architecture_class(config, default):
    """The registered class named by `config`'s `architectures`, else `default`."""
    for name in (config.extra.get("architectures") or []) if config else []:
        cls = registered_class(name)
        if cls is not None:
            return cls
    return default


def read_weights(model, weights_path):
    """`{name: array}` from one resolved weights file, named for `model`.

    A Keras `.weights.h5` is read straight from the file; its variables are
    named by `model`'s own layer paths (no second model is built).
    """
    if weights_path.endswith(".weights.h5"):
        return keras_state(model, read_keras_weights(weights_path))
    return read_checkpoint(weights_path)


def load_pretrained_weights(model, path, strict=True):
    """Load a checkpoint directory or weights file into `model`, all or nothing.

    Returns:
        A `state_dicts.LoadReport`.
    """
    _, weights_path = resolve_files(os.fspath(path))
    state = read_weights(model, weights_path)
    return load_state_dict(model, state, strict=strict, source=os.path.basename(weights_path))


def from_pretrained(
    cls,
    name_or_path,
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
    """Build `cls` from a checkpoint (see `TFViTMAEPreTrainedModel.from_pretrained`).

    `kwargs` that are `ViTMAEConfig.FIELDS` override the checkpoint's config;
    the rest go to `cls`.
    """
    del from_pt  # accepted for compatibility: the format is detected from the files
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in ViTMAEConfig.FIELDS}
    config_path, weights_path = resolve_files(
        os.fspath(name_or_path),
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
    )
    state = None
    if config is not None:
        config = as_config(config)
    elif config_path is not None:
        config = ViTMAEConfig.from_pretrained(config_path)
    else:
        state = read_checkpoint(weights_path)
        if detect_format(state) != "mae":
            raise CheckpointError(
                f"No {CONFIG_NAME} beside {weights_path}; pass config=ViTMAEConfig(...)"
            )
        config = infer_mae_config(state)  # the original MAE release ships no config
    if overrides:
        config = config.copy(**overrides)
    if "image_processor" not in kwargs:
        kwargs["image_processor"] = _read_processor(
            name_or_path,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    model = cls(config, **{**cls.init_kwargs_from_config(config), **kwargs})
    if state is None:
        state = read_weights(model, weights_path)
    report = load_state_dict(model, state, strict=strict, source=os.path.basename(weights_path))
    return (model, report) if output_loading_info else model


def _read_processor(name_or_path, **hub_kwargs):
    """The fields of the checkpoint's `preprocessor_config.json`, or `None`."""
    path = resolve_optional_file(os.fspath(name_or_path), PREPROCESSOR_NAME, **hub_kwargs)
    return None if path is None else read_json(path)


SAVE_PREFIX = ".tmp-save-"


def _finish_interrupted_saves(folder):
    """Complete a `save_pretrained` into `folder` that a kill interrupted
    while moving its files into place, so that they all come from one save."""
    try:
        finished = finish_commits(folder, prefix=SAVE_PREFIX)
    except OSError as e:
        raise CheckpointError(
            f"{folder} holds a save that was interrupted, and it could not be completed "
            f"({e}): its files may come from two saves. Load a writable copy, or save again"
        ) from None
    for staged in finished:
        warnings.warn(f"Completed the interrupted save into {folder} (from {staged})")


def _other_weights(directory, keep):
    """The stale weight files that `resolve_files` would prefer to the new one."""
    return [
        name
        for name in os.listdir(directory)
        if name != keep
        and (name in WEIGHT_FILES or (name.startswith("model-") and name.endswith(".safetensors")))
    ]


def save_pretrained(model, save_directory, pytorch=False, safe_serialization=True):
    """Write `config.json`, the weights and `preprocessor_config.json` of
    `model` (see `TFViTMAEPreTrainedModel.save_pretrained`). Returns the
    written paths.

    All files are written into a staging folder first and then moved into
    place together (`files.commit_files`): a save interrupted while writing
    leaves the directory as it was, and one interrupted while moving is
    completed by the next save or load, so the files always come from one save.
    """
    save_directory = os.fspath(save_directory)
    if os.path.isfile(save_directory):
        raise ValueError(
            f"save_directory must be a directory, received the file {save_directory!r}"
        )
    class_name = type(model).__name__
    architecture = PYTORCH_ARCHITECTURES.get(class_name, class_name) if pytorch else class_name
    # The model's own rules first: they may refuse (before anything is written).
    extras = model.config_extras(pytorch)
    state = model.pytorch_state_dict() if pytorch else None
    config = model.config.copy(**{"architectures": [architecture], **extras})
    if pytorch:
        weights_name = SAFE_WEIGHTS_NAME if safe_serialization else PT_WEIGHTS_NAME
    else:
        weights_name = KERAS_WEIGHTS_NAME
    _finish_interrupted_saves(save_directory)
    with staging_dir(save_directory, prefix=SAVE_PREFIX) as staging:
        try:
            if pytorch:
                writer = write_safetensors if safe_serialization else write_torch_bin
                writer(state, os.path.join(staging, weights_name))
            else:
                model.save_weights(os.path.join(staging, weights_name))
            config.save_pretrained(staging)
            model.image_processor.save_pretrained(staging)
        except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
            raise OSError(
                f"Could not save {class_name} to {save_directory}: writing {weights_name} and "
                f"its config failed ({type(e).__name__}: {e}). Is the disk full? "
                f"{save_directory} is unchanged"
            ) from e
        return commit_files(
            staging,
            save_directory,
            [weights_name, CONFIG_NAME, PREPROCESSOR_NAME],
            remove=_other_weights(save_directory, keep=weights_name),
        )


def push_to_hub(
    model,
    repo_id,
    commit_message=None,
    private=None,
    token=None,
    revision=None,
    create_pr=False,
    pytorch=False,
    safe_serialization=True,
):
    """Upload what `save_pretrained` writes to the Hub repo `repo_id`."""
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as folder:
        # Saved first: a model that may not be saved so is refused before any upload.
        save_pretrained(model, folder, pytorch=pytorch, safe_serialization=safe_serialization)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {type(model).__name__}",
            revision=revision,
            create_pr=create_pr,
        )
