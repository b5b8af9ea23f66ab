"""`from_pretrained`, `save_pretrained` and `push_to_hub`, for any model class.

A checkpoint is a local directory, a single weights file, or a Hugging Face
Hub repo id (fetched with `huggingface_hub`, which honours its cache,
`HF_HUB_OFFLINE` and `local_files_only`). The weights format is found from
the files present (see `formats.WEIGHT_FILES` for the order).

`HubMixin` gives a model class the documented `from_pretrained`,
`save_pretrained`, `push_to_hub` and `load_pretrained_weights`. Nothing here
imports a model class: the mixin works on the class or model it is part of
(its `config_class` parses `config.json`), and a class named in a
`config.json` is found in Keras' registry. What a model may be saved as is
the model's own rule (`pytorch_state_dict`, `config_extras`), so every path
to disk passes through it.
"""

import contextlib
import json
import os
import warnings
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from ..utils.files import (
    CommitPlanError,
    atomic_write_text,
    commit_files,
    finish_commits,
    locked_folder,
    pending_commits,
    remove_staging_leftovers,
    staging_dir,
)
from ..utils.types import PathLike
from .formats import (
    CONFIG_NAME,
    KERAS_WEIGHTS_NAME,
    PREPROCESSOR_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHT_FILES,
    CheckpointError,
    inside_folder,
    keras_layers,
    keras_weights_size,
    open_checkpoint,
    save_keras_weights,
    shard_names,
    write_failure,
    write_safetensors,
    write_torch_bin,
)
from .state_dicts import (
    LoadReport,
    check_sizes,
    checkpoint_budget,
    keras_state,
    load_state_dict,
    to_state_dict,
)
from .weight_names import detect_format, mae_config_values

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

__all__ = [
    "HUB_OPTIONS",
    "PYTORCH_ARCHITECTURES",
    "HubMixin",
    "architecture_class",
    "finish_interrupted_save",
    "in_subfolder",
    "read_weights",
    "registered_class",
    "reading",
    "resolve_files",
    "resolve_optional_file",
]

# The `huggingface_hub` download options that travel together.
HUB_OPTIONS = (
    "revision",
    "token",
    "cache_dir",
    "local_files_only",
    "force_download",
    "subfolder",
)


def in_subfolder(name_or_path: str, subfolder: str | None) -> str:
    """`name_or_path/subfolder` for a local folder (which must hold it, see
    `formats.inside_folder`); a Hub id as it is (`subfolder` then goes to
    `hf_hub_download`)."""
    if not subfolder or not os.path.isdir(name_or_path):
        return name_or_path
    path = inside_folder(name_or_path, subfolder, what="The subfolder")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No subfolder {subfolder!r} in {name_or_path!r}")
    return path


# Our class names and the transformers PyTorch classes with the same weights,
# as written to (and read from) `architectures` in config.json.
PYTORCH_ARCHITECTURES = {
    "TFViTMAEModel": "ViTMAEModel",
    "TFViTMAEForPreTraining": "ViTMAEForPreTraining",
    "TFViTMAEForImageClassification": "ViTForImageClassification",
}
REGISTRY_PACKAGE = "tfvitmae"


def _is_local(name: str) -> bool:
    """Whether `name` reads as a path rather than a Hub repo id (`org/name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _download(
    repo_id: str, filename: str, *, hub_kwargs: dict[str, Any], unreachable: list[str]
) -> str | None:
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


def resolve_files(name_or_path: str, **hub_options: Any) -> tuple[str | None, str]:
    """`(config_path or None, weights_path)` for a directory, a file or a Hub
    repo id. `hub_options`: any of `HUB_OPTIONS` (`subfolder` for local folders too)."""
    name_or_path, hub_options = _local_subfolder(name_or_path, hub_options)
    config: str | None  # (`_download` gives None for a file the Hub repo lacks)
    path: str | None
    if os.path.isfile(name_or_path):  # the user's own file; the config beside it is checked
        folder = os.path.dirname(os.path.abspath(name_or_path))
        config = os.path.join(folder, CONFIG_NAME)
        return _checked(
            folder, CONFIG_NAME, config if os.path.isfile(config) else None
        ), name_or_path
    if os.path.isdir(name_or_path):
        config = _checked(name_or_path, CONFIG_NAME, _saved_file(name_or_path, CONFIG_NAME))
        for filename in WEIGHT_FILES:
            path = _checked(name_or_path, filename, _saved_file(name_or_path, filename))
            if path is not None:
                return config, path
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
    hub_kwargs = _check_hub_options(hub_options)
    unreachable: list[str] = []
    config = _download(name_or_path, CONFIG_NAME, hub_kwargs=hub_kwargs, unreachable=unreachable)
    for filename in WEIGHT_FILES:
        path = _download(name_or_path, filename, hub_kwargs=hub_kwargs, unreachable=unreachable)
        if path is None:
            continue
        if filename == SAFE_WEIGHTS_INDEX_NAME:
            for shard in shard_names(path):
                if (
                    _download(name_or_path, shard, hub_kwargs=hub_kwargs, unreachable=unreachable)
                    is None
                ):
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


def resolve_optional_file(name_or_path: str, filename: str, **hub_options: Any) -> str | None:
    """The path of `filename` beside a checkpoint (a directory, a file in it, or
    a Hub repo id), or `None` when the checkpoint has none. `hub_options`:
    any of `HUB_OPTIONS`."""
    name_or_path, hub_options = _local_subfolder(name_or_path, hub_options)
    if os.path.isfile(name_or_path):
        name_or_path = os.path.dirname(os.path.abspath(name_or_path))
    if os.path.isdir(name_or_path):
        return _checked(name_or_path, filename, _saved_file(name_or_path, filename))
    if _is_local(name_or_path):
        raise FileNotFoundError(f"No file or directory at {name_or_path!r}")
    return _download(
        name_or_path, filename, hub_kwargs=_check_hub_options(hub_options), unreachable=[]
    )


def _checked(folder: str, filename: str, path: str | None) -> str | None:
    """`path`, where `filename` of the local checkpoint `folder` was found (or
    `None`), once the entry and `path` are checked to resolve inside `folder`
    (see `formats.inside_folder`): a link there may lead anywhere, and a link
    out is refused whether or not it leads to a file."""
    if os.path.lexists(os.path.join(folder, filename)):
        inside_folder(folder, filename)
    return None if path is None else inside_folder(folder, os.path.relpath(path, folder))


def _local_subfolder(name_or_path: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A local folder's `subfolder` joined to it (and left out of the Hub options)."""
    if options.get("subfolder") and os.path.isdir(name_or_path):
        options = dict(options)
        return in_subfolder(name_or_path, options.pop("subfolder")), options
    return name_or_path, options


def _check_hub_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown Hub options {unknown}; the options are {list(HUB_OPTIONS)}")
    return dict(options)


def registered_class(name: str) -> type[Any] | None:
    """Our model class called `name` (or the class standing for the PyTorch
    class `name`), from Keras' registry; `None` if there is none."""
    ours = {v: k for k, v in PYTORCH_ARCHITECTURES.items()}.get(name, name)
    return keras.saving.get_registered_object(f"{REGISTRY_PACKAGE}>{ours}")


def architecture_class(config: Any, default: type[Any]) -> type[Any]:
    """The registered class named by `config`'s `architectures`, else `default`."""
    for name in getattr(config, "architectures", None) or []:
        cls = registered_class(name)
        if cls is not None:
            return cls
    return default


def read_weights(model: Any, weights_path: str) -> dict[str, np.ndarray]:
    """`{name: array}` from one resolved weights file, named for `model`,
    within the `checkpoint_budget` of its config.

    A Keras `.weights.h5` is read straight from the file; its variables are
    named by `model`'s own layer paths (no second model is built).
    """
    with open_checkpoint(weights_path) as checkpoint:
        arrays = checkpoint.read(checkpoint_budget(model.config))
    if weights_path.endswith(".weights.h5"):
        return keras_state(model, keras_layers(arrays))
    return arrays


SAVE_PREFIX = ".tmp-save-"


_locked = locked_folder  # (the name the save and the loads hold the folder by)


def reading(name_or_path: PathLike) -> contextlib.AbstractContextManager[None]:
    """Hold a local checkpoint's folder while its files are read: a
    `save_pretrained` into it waits until the reads are done."""
    path = os.fspath(name_or_path)
    if not os.path.exists(path):
        return contextlib.nullcontext()
    return _locked(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)), False)


def _save_file(name: str) -> bool:
    """Whether a save writes or replaces a file called `name`."""
    return (
        name in (CONFIG_NAME, PREPROCESSOR_NAME)
        or name in WEIGHT_FILES
        or (name.startswith("model-") and name.endswith(".safetensors"))  # shards
    )


def _interrupted_save(folder: str) -> tuple[str, dict[str, Any]] | None:
    """The staging folder and plan of a save into `folder` that a kill
    interrupted while moving its files in, if there is one (a save completes
    any earlier one before its own, so there is at most one).

    Raises:
        CheckpointError: A staging folder holds a plan that is not ours (see
            `utils.files.read_commit_plan`), or one that would touch files
            a save never writes.
    """
    try:
        plans = pending_commits(folder, SAVE_PREFIX)
    except CommitPlanError as e:
        raise CheckpointError(str(e)) from None
    for staged, plan in plans:
        foreign = [name for name in [*plan["move"], *plan["remove"]] if not _save_file(name)]
        if foreign:
            raise CheckpointError(
                f"{staged} holds a save plan naming {foreign[0]!r}, which no save writes; "
                f"it is not carried out and nothing was changed. Remove {staged} if it is not yours"
            )
    return plans[0] if plans else None


def _saved_file(folder: str, filename: str) -> str | None:
    """The visible `folder/filename`, or `None`. A load never obeys a save
    plan: a folder holding one (a save that a kill interrupted while moving
    its files in, so that the visible files may come from two saves) is
    refused, saying how to complete it."""
    interrupted = _interrupted_save(folder)
    if interrupted is not None:
        raise CheckpointError(
            f"{folder} holds a save that was interrupted while moving its files in "
            f"({interrupted[0]}), so its files may come from two saves. Complete it with "
            "tfvitmae.checkpoints.finish_interrupted_save(folder) (a save_pretrained into "
            "the folder also completes it first), then load"
        )
    path = os.path.join(folder, filename)
    return path if os.path.isfile(path) else None


def _finish_interrupted_saves(folder: str) -> list[str]:
    """Complete a `save_pretrained` into `folder` that a kill interrupted
    while moving its files into place (a new save does this first, holding
    the folder's lock). A plan that is not ours is refused, changing nothing."""
    _interrupted_save(folder)  # refuses a plan that is not a save's
    try:
        finished = finish_commits(folder, prefix=SAVE_PREFIX)
    except CommitPlanError as e:
        raise CheckpointError(str(e)) from None
    for staged in finished:
        warnings.warn(f"Completed the interrupted save into {folder} (from {staged})")
    return finished


def finish_interrupted_save(folder: PathLike) -> list[str]:
    """Complete a `save_pretrained` into the local `folder` that a kill
    interrupted while moving its files in, so that it loads again.

    Only a plan that a save of this package wrote is carried out (see
    `utils.files.read_commit_plan`): it moves staged files of the sizes it
    records into `folder` and removes the files a save replaces, never
    anything else.

    Raises:
        CheckpointError: A plan is not ours; nothing is changed.

    Returns:
        The staging folders whose saves were completed.
    """
    folder = os.fspath(folder)
    with _locked(folder, exclusive=True):
        return _finish_interrupted_saves(folder)


def _other_weights(directory: str, keep: str) -> list[str]:
    """The stale weight files that `resolve_files` would prefer to the new one."""
    return [
        name
        for name in os.listdir(directory)
        if name != keep and name not in (CONFIG_NAME, PREPROCESSOR_NAME) and _save_file(name)
    ]


# The config fields a transformers `ViTConfig` has: the encoder's.
_DECODER_FIELDS = ("mask_ratio", "norm_pix_loss")


def _vit_config(config: Any, architecture: str) -> dict[str, Any]:
    """`config.json` of transformers' ViT (`model_type: "vit"`): the encoder's fields."""
    out = config.copy(model_type="vit", architectures=[architecture]).to_dict()
    return {
        k: v for k, v in out.items() if not k.startswith("decoder_") and k not in _DECODER_FIELDS
    }


def _save(
    model: Any, save_directory: str, *, pytorch: bool | str, safe_serialization: bool
) -> list[str]:
    """Write `config.json`, the weights and `preprocessor_config.json`.

    All files are written into a staging folder first and then moved into
    place together (`utils.files.commit_files`): a save interrupted while writing
    leaves the directory as it was, and one interrupted while moving is
    completed by the next save (a load refuses it), so the files always come
    from one save.
    """
    if os.path.isfile(save_directory):
        raise ValueError(
            f"save_directory must be a directory, received the file {save_directory!r}"
        )
    if pytorch not in (False, True, "vit"):
        raise ValueError(f"pytorch must be True, False or 'vit', received {pytorch!r}")
    class_name = type(model).__name__
    # The model's own rules first: they may refuse (before anything is written).
    state: dict[str, np.ndarray] = {}
    if pytorch == "vit":
        architecture, state = model.vit_state_dict()
        config = model.config.copy(**model.config_extras(True))
        config_text = json.dumps(_vit_config(config, architecture), indent=2, sort_keys=True)
    else:
        architecture = PYTORCH_ARCHITECTURES.get(class_name, class_name) if pytorch else class_name
        extras = model.config_extras(bool(pytorch))
        state = model.pytorch_state_dict() if pytorch else {}
        config = model.config.copy(**{"architectures": [architecture], **extras})
        config_text = config.to_json_string()
    if pytorch:
        weights_name = SAFE_WEIGHTS_NAME if safe_serialization else PT_WEIGHTS_NAME
    else:
        weights_name = KERAS_WEIGHTS_NAME
    with staging_dir(save_directory, prefix=SAVE_PREFIX) as staging:
        weights_path = os.path.join(staging, weights_name)
        needed = sum(a.nbytes for a in state.values()) if pytorch else keras_weights_size(model)
        try:
            if pytorch:
                writer = write_safetensors if safe_serialization else write_torch_bin
                writer(state, weights_path)
            else:
                save_keras_weights(model, weights_path)
            atomic_write_text(os.path.join(staging, CONFIG_NAME), config_text.rstrip("\n") + "\n")
            model.image_processor.save_pretrained(staging)
        except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
            reason = write_failure(e, save_directory, weights_name, needed)
            raise OSError(
                f"Could not save {class_name} to {save_directory}: {reason} "
                f"{save_directory} is unchanged"
            ) from e
        with _locked(save_directory, exclusive=True):  # no load reads half of it
            _finish_interrupted_saves(save_directory)
            written = commit_files(
                staging,
                save_directory,
                [weights_name, CONFIG_NAME, PREPROCESSOR_NAME],
                remove=_other_weights(save_directory, keep=weights_name),
            )
            remove_staging_leftovers(save_directory, SAVE_PREFIX)  # crashed saves'
            return written


class HubMixin:
    """Hugging Face's checkpoint methods for a Keras model class.

    The class sets `config_class` (which reads `config.json`) and
    `processor_class` (`preprocessor_config.json`), and may
    override `init_kwargs_from_config`, `config_extras`, `pytorch_state_dict`
    and `optional_weights` for what its checkpoints carry beyond the config.
    """

    config_class: Any  # the model's config class, e.g. `ViTMAEConfig`
    processor_class: Any  # reads `preprocessor_config.json`, e.g. `ViTMAEImageProcessor`

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: PathLike,
        *,
        config: Any = None,
        from_pt: bool | None = None,
        strict: bool = True,
        output_loading_info: bool = False,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        subfolder: str | None = None,
        **kwargs: Any,
    ) -> Any:
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
            output_loading_info: Also return the `LoadReport`.
            revision, token, cache_dir, local_files_only, force_download:
                Passed to `huggingface_hub` for Hub ids.
            subfolder: Where the files are inside the directory or Hub repo.
            **kwargs: Config fields to override (any of
                `ViTMAEConfig.FIELDS`, e.g. `mask_ratio=0.5` or
                `output_hidden_states=True`) and model arguments
                (`data_format`, `attn_implementation`, ...).

        Returns:
            The model, or `(model, report)` with `output_loading_info=True`.
        """
        del from_pt  # accepted for compatibility: the format is detected from the files
        hub_options = dict(
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        if subfolder:
            hub_options["subfolder"] = subfolder
        name_or_path = os.fspath(pretrained_model_name_or_path)
        fields = cls.config_class.FIELDS
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        # A save into the folder waits: the files come from one save.
        with reading(in_subfolder(name_or_path, subfolder)):
            config_path, weights_path = resolve_files(name_or_path, **hub_options)
            source = os.path.basename(weights_path)
            config_source = CONFIG_NAME if config is None and config_path and not overrides else ""
            keras_file = weights_path.endswith(".weights.h5")  # named once a model exists
            # The file is described before anything is read or built: its sizes
            # are checked against the config, and against the budget it gives.
            with open_checkpoint(weights_path) as checkpoint:
                shapes = checkpoint.shapes
                if config is not None:
                    config = (
                        cls.config_class.from_dict(config) if isinstance(config, dict) else config
                    )
                elif config_path is not None:
                    config = cls.config_class.from_pretrained(config_path)
                else:
                    if keras_file or detect_format(shapes) != "mae":
                        raise CheckpointError(
                            f"No {CONFIG_NAME} beside {weights_path}; pass config=ViTMAEConfig(...)"
                        )
                    config = cls.config_class(**mae_config_values(shapes))  # MAE's has none
                if overrides:
                    config = config.copy(**overrides)
                if strict:
                    fmt = "keras" if keras_file else None
                    check_sizes(config, shapes, fmt, source, config_source or "the config")
                arrays = checkpoint.read(checkpoint_budget(config))
            if "image_processor" not in kwargs:
                path = resolve_optional_file(name_or_path, PREPROCESSOR_NAME, **hub_options)
                kwargs["image_processor"] = (
                    None if path is None else cls.processor_class.from_json_file(path)
                )
        # The mixin is part of a model class, whose constructor takes the config.
        model = cls(config, **{**cls.init_kwargs_from_config(config), **kwargs})  # type: ignore[call-arg]
        named = keras_state(model, keras_layers(arrays)) if keras_file else arrays
        report = load_state_dict(model, named, strict=strict, source=source)
        return (model, report) if output_loading_info else model

    def load_pretrained_weights(self, path: PathLike, strict: bool = True) -> LoadReport:
        """Load a checkpoint directory or weights file into this model, all or nothing.

        Returns:
            A `LoadReport` of what was loaded, missing and unused.
        """
        with reading(path):
            _, weights_path = resolve_files(os.fspath(path))
            state = read_weights(self, weights_path)
        return load_state_dict(self, state, strict=strict, source=os.path.basename(weights_path))

    def save_pretrained(
        self,
        save_directory: PathLike,
        pytorch: bool | str = False,
        safe_serialization: bool = True,
        push_to_hub: bool = False,
        **hub_kwargs: Any,
    ) -> list[str]:
        """Write `config.json`, the weights and `preprocessor_config.json` to
        `save_directory`.

        Args:
            save_directory: Created if missing. Files are staged in a temporary
                folder first, so a failed save leaves the directory as it was.
            pytorch: Write the `transformers` PyTorch layout, which
                `transformers.ViTMAEForPreTraining.from_pretrained` (or
                `ViTMAEModel`) loads, instead of this package's `model.weights.h5`.
                `"vit"`: transformers' ViT layout (`model_type: "vit"`) of the
                encoder, which `transformers.ViTModel` loads (a CLS classifier:
                `ViTForImageClassification`); see `vit_state_dict`.
            safe_serialization: With `pytorch=True`, `model.safetensors`
                (default) rather than `pytorch_model.bin` (which needs torch).
            push_to_hub: Also upload to the Hub repo `hub_kwargs["repo_id"]`
                (default: the directory's name).
            **hub_kwargs: Arguments of `push_to_hub` (only with `push_to_hub=True`).

        Returns:
            The paths written.
        """
        if "saved_model" in hub_kwargs:  # transformers' TF models take it
            raise TypeError(
                "save_pretrained does not take saved_model: write a SavedModel for TensorFlow "
                "Serving with model.export(directory) (or tfvitmae export)"
            )
        if hub_kwargs and not push_to_hub:
            raise TypeError(
                f"save_pretrained got unexpected arguments {sorted(hub_kwargs)}; arguments "
                "beyond pytorch and safe_serialization are push_to_hub's, and need push_to_hub=True"
            )
        save_directory = os.fspath(save_directory)
        written = _save(
            self, save_directory, pytorch=pytorch, safe_serialization=safe_serialization
        )
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
            self.push_to_hub(
                repo_id, pytorch=pytorch, safe_serialization=safe_serialization, **hub_kwargs
            )
        return written

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        pytorch: bool | str = False,
        safe_serialization: bool = True,
    ) -> "CommitInfo":
        """Upload what `save_pretrained` writes to the Hub repo `repo_id`."""
        import tempfile

        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as folder:
            # Saved first: a model that may not be saved so is refused before any upload.
            _save(self, folder, pytorch=pytorch, safe_serialization=safe_serialization)
            api = HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                revision=revision,
                create_pr=create_pr,
            )

    # ------------------------------------------- what a checkpoint carries
    @classmethod
    def init_kwargs_from_config(cls, config: Any) -> dict[str, Any]:
        """Constructor arguments stored in a saved `config.json` beside the config."""
        return {}

    def config_extras(self, pytorch: bool = False) -> dict[str, Any]:
        """Keys `save_pretrained` adds to `config.json` (see `init_kwargs_from_config`)."""
        return {}

    def pytorch_state_dict(self) -> dict[str, np.ndarray]:
        """The weights in the transformers PyTorch layout, as NumPy arrays.

        Every PyTorch save (`save_pretrained(pytorch=True)`, `push_to_hub`)
        goes through this method, so a model that cannot be written in that
        layout refuses here.
        """
        return to_state_dict(self, "transformers")

    def vit_state_dict(self) -> tuple[str, dict[str, np.ndarray]]:
        """`(architecture, weights)` in transformers' ViT layout: the encoder
        as a `ViTModel` (whose weights are ViTMAE's; the fixed sin-cos
        table becomes ViT's position embedding). `ViTModel`'s pooler has no
        counterpart: transformers initialises it and says so, so read
        `last_hidden_state`, not `pooler_output`. A pretraining model's
        decoder has no place there: it is left out, with a warning."""
        state = self.pytorch_state_dict()
        decoder = [k for k in state if k.startswith("decoder.")]
        if decoder:
            warnings.warn(
                f"transformers' ViT layout holds the encoder only: the decoder's {len(decoder)} "
                "weights are not saved (load the folder with TFViTMAEModel, or save with "
                "pytorch=True to keep them)",
                stacklevel=4,
            )
        encoder = {k.removeprefix("vit."): v for k, v in state.items() if k not in decoder}
        return "ViTModel", encoder
