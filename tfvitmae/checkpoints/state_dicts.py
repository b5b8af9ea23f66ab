"""Moving weights between a model and a state dict, by the name table.

`check_sizes` compares a config with a checkpoint before a model is built,
and `checkpoint_budget` bounds what a checkpoint for it may declare;
`load_state_dict` assigns a checkpoint's arrays to a model, all or nothing,
and reports what it did; `to_state_dict` writes a model's arrays in a
PyTorch layout; `keras_state` names the arrays of a Keras `.weights.h5`.
"""

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import formats
from .formats import CheckpointError
from .weight_names import (
    PARTS,
    add_model_prefix,
    block_counts,
    canonical_names,
    detect_format,
    keras_variables,
    model_parts,
    part_of,
    to_keras_layout,
    to_torch_layout,
    torch_shape,
    weight_table,
)

__all__ = [
    "LoadReport",
    "check_sizes",
    "checkpoint_budget",
    "keras_state",
    "load_state_dict",
    "to_state_dict",
]


@dataclass
class LoadReport:
    """What a checkpoint load did.

    Attributes:
        format: Checkpoint layout that was read.
        loaded: Keras variable paths that received a value.
        missing: Keras variable paths the checkpoint had no value for.
        unexpected: Checkpoint keys that map to no variable of this model.
        mismatched: `(key, expected_shape, found_shape)` for skipped tensors.
    """

    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    source: str = ""

    def summary(self) -> str:
        lines = [
            f"{len(self.loaded)} variables mapped from {self.source or 'the checkpoint'} "
            f"({self.format} layout)"
        ]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:8]) + (
                    f", ... ({len(items)} in all)" if len(items) > 8 else ""
                )
                lines.append(f"{title}: {shown}")
        for key, expected, found in self.mismatched:
            lines.append(f"shape mismatch: {key} expected {expected}, found {found}")
        return "\n".join(lines)


# Sizes that a checkpoint's shapes give, the same in every layout: the Keras
# path, the axis read, and the config field it must equal.
_SIZES = (
    ("vit/embeddings/cls_token", -1, "hidden_size"),
    ("vit/layer_0/mlp/intermediate/bias", 0, "intermediate_size"),
    ("vit/embeddings/position_embeddings", 1, "num_patches"),  # + 1, the [CLS] token's
    ("decoder/mask_token", -1, "decoder_hidden_size"),
    ("decoder/layer_0/mlp/intermediate/bias", 0, "decoder_intermediate_size"),
)
# And in the Keras layout only: the patch projection's kernel is (patch, patch, channels, width).
_KERAS_SIZES = (
    ("vit/embeddings/patch_embeddings/projection/kernel", 0, "patch_size"),
    ("vit/embeddings/patch_embeddings/projection/kernel", 2, "num_channels"),
)


def check_sizes(
    config: Any,
    shapes: Mapping[str, Sequence[int]],
    fmt: str | None = None,
    source: str = "the checkpoint",
    config_source: str = "the config",
) -> None:
    """Raise a `CheckpointError`, before a model is built, when `config`
    cannot fit a checkpoint: its block counts, widths and patch count, read
    from the checkpoint's names and `shapes` (`{name: shape}`, in layout
    `fmt`, detected when `None`). A config of a
    million blocks then fails at once instead of after building them.

    A part the checkpoint lacks (a decoder) is not compared: loading warns about it.
    """
    shapes = canonical_names(add_model_prefix(dict(shapes)))
    fmt = fmt or detect_format(shapes)
    found = {
        field: count
        for field, count in zip(
            ("num_hidden_layers", "decoder_num_hidden_layers"), block_counts(shapes, fmt)
        )
        if count
    }
    tiny = config.copy(num_hidden_layers=1, decoder_num_hidden_layers=1)
    if fmt == "keras":  # "<layer path>/<index>": named in the weight table's order
        by_layer = _table_layers(tiny)
        names = {}
        for name in shapes:
            layer, _, index = name.rpartition("/")
            if index.isdecimal() and int(index) < len(by_layer.get(layer, ())):
                names[by_layer[layer][int(index)]] = name
    else:
        names = {e.keras_path: e.names[0] for e in weight_table(tiny, fmt, ("vit", "decoder"))}
        names = {path: name for path, name in names.items() if name in shapes}
    sizes = _SIZES + (_KERAS_SIZES if fmt == "keras" else ())
    stored = {}  # config field: (weight, its shape, the axis read)
    for keras_path, axis, key in sizes:
        if keras_path in names:
            shape = tuple(int(n) for n in shapes[names[keras_path]])
            if -len(shape) <= axis < len(shape):
                found[key] = shape[axis] - 1 if key == "num_patches" else shape[axis]
                stored[key] = (names[keras_path], shape, axis)
    wrong = []
    for key, size in found.items():
        want = getattr(config, key)
        want = want[0] if isinstance(want, (tuple, list)) else want  # a patch's height
        if size == want:
            continue
        line = f"{key} = {getattr(config, key)} in {config_source}, {size} in {source}"
        if key in stored:
            name, shape, axis = stored[key]
            expected = list(shape)
            expected[axis] = want + (key == "num_patches")
            line += f" ({name}: stored {shape}, expected {tuple(expected)})"
        wrong.append(line)
    if wrong:
        raise CheckpointError(
            f"{source} does not fit {config_source}: {'; '.join(wrong)}. Nothing was built: "
            "fix the config, or pass strict=False to load what matches"
        )


def checkpoint_budget(config: Any) -> int:
    """The most values a checkpoint for a model of `config` may declare:
    `formats.CHECKPOINT_SIZE_FACTOR` times the parameters of its encoder,
    decoder and a classification head. A checkpoint that fits the model
    holds about a quarter of it; the rest is room for `strict=False` loads of
    larger checkpoints."""
    h, patches, patch_dim = config.hidden_size, config.num_patches, config.patch_dim
    d, inner = config.decoder_hidden_size, config.decoder_intermediate_size
    block = 4 * d * d + (3 * d if config.qkv_bias else 0) + 2 * d * inner + inner + 6 * d
    decoder = (
        (h + 2) * d  # embedding projection, mask token
        + (patches + 1) * d  # position embeddings
        + config.decoder_num_hidden_layers * block
        + 2 * d
        + (d + 1) * patch_dim  # pixel prediction
    )
    head = (h + 1) * config.num_labels + 4 * h  # the classifier and its norms
    return formats.CHECKPOINT_SIZE_FACTOR * (config.encoder_parameters + decoder + head)


def _non_finite(value: np.ndarray) -> bool:
    """Whether a float array holds NaN or infinity (bfloat16's kind is "V")."""
    return value.dtype.kind in "fV" and not bool(np.isfinite(value).all())


def load_state_dict(
    model: Any,
    state: Mapping[str, np.ndarray],
    fmt: str | None = None,
    strict: bool = True,
    source: str = "",
) -> LoadReport:
    """Assign a checkpoint's arrays to `model`, all or nothing.

    Args:
        model: A `TFViTMAEModel` or `TFViTMAEForPreTraining`.
        state: `{name: numpy array}` in one of `FORMATS`.
        fmt: The layout; detected from the names when `None`.
        strict: Raise on missing variables, unused keys, shape mismatches and
            non-finite values (NaN, infinity). With `strict=False` what matches
            is loaded and the rest reported.
            Either way, a part (decoder, classification head) that the
            checkpoint lacks keeps its initialisation, and checkpoint weights of
            a part the model lacks are ignored, each with a warning.
        source: File name for messages.

    Returns:
        A `LoadReport`. Nothing is assigned when an error is raised.
    """
    state = canonical_names(add_model_prefix(dict(state)))
    fmt = fmt or detect_format(state)
    variables = keras_variables(model)
    parts = model_parts(model)
    # The full table, to tell keys of parts this model lacks from unknown keys.
    everything = weight_table(model.config, fmt, parts=("vit", "decoder", "head"))
    entries = [e for e in everything if e.keras_path in variables]
    other_parts = {n for e in everything if e.keras_path not in variables for n in e.names}
    report = LoadReport(format=fmt, source=source)
    used: set[str] = set()
    assignments: list[tuple[Any, np.ndarray]] = []
    where = f" in {source}" if source else ""
    for entry in entries:
        if any(n not in state for n in entry.names):
            report.missing.append(entry.keras_path)
            continue
        used.update(entry.names)
        variable = variables[entry.keras_path]
        expected = torch_shape(
            entry.layout_shape(variable.shape), entry.transform, len(entry.names)
        )
        found = [tuple(np.shape(state[n])) for n in entry.names]
        if any(shape != expected for shape in found):
            bad = next(i for i, shape in enumerate(found) if shape != expected)
            report.mismatched.append((entry.names[bad], expected, found[bad]))
            continue
        arrays = [to_keras_layout(np.asarray(state[n]), entry.transform) for n in entry.names]
        value = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)
        assignments.append((variable, value.reshape(variable.shape).astype(variable.dtype)))
        report.loaded.append(entry.keras_path)
    unused = set(state) - used
    # Moving between the encoder, pretraining and classification models is
    # expected: a part only one side has is reported with a warning, not an error.
    ignored = sorted(unused & other_parts)
    report.unexpected = sorted(unused - other_parts)
    if ignored:
        warnings.warn(
            f"Ignored {len(ignored)} weights{where} of parts this model does not have: "
            f"{', '.join(ignored[:6])}{', ...' if len(ignored) > 6 else ''}"
        )
    optional = set(getattr(model, "optional_weights", tuple)())
    report.missing = [p for p in report.missing if p not in optional]
    for part in ("decoder", "head"):
        paths = [e.keras_path for e in entries if part_of(e.keras_path) == part]
        if part in parts and paths and all(p in report.missing for p in paths):
            report.missing = [p for p in report.missing if p not in paths]
            warnings.warn(
                f"The checkpoint{where} has no {part}; it keeps its initialisation. Not loaded: "
                f"{', '.join(paths)}"
            )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointError(
            f"The checkpoint{where} does not fit this model ({model.config.num_hidden_layers} "
            "encoder / "
            f"{model.config.decoder_num_hidden_layers} decoder blocks); nothing was loaded.\n"
            f"{report.summary()}\nPass strict=False to load what matches."
        )
    non_finite = [
        path for path, (_, value) in zip(report.loaded, assignments) if _non_finite(value)
    ]
    if non_finite:
        shown = ", ".join(non_finite[:5]) + (
            f", ... ({len(non_finite)} in all)" if len(non_finite) > 5 else ""
        )
        if strict:
            raise CheckpointError(
                f"The checkpoint{where} holds NaN or infinite values, in {shown}; nothing was "
                "loaded. Pass strict=False to load them anyway"
            )
        warnings.warn(f"Loaded NaN or infinite values{where}, in {shown}")
    for variable, value in assignments:
        variable.assign(value)
    if not strict and (report.missing or report.unexpected or report.mismatched):
        warnings.warn(f"Partial load: {report.summary()}")
    return report


def to_state_dict(model: Any, fmt: str = "transformers") -> dict[str, np.ndarray]:
    """The model's weights as `{name: numpy array}` in a PyTorch layout.

    For `TFViTMAEModel` the names lack the `vit.` prefix, like `ViTMAEModel`.
    Every weight of the model is written, or a `CheckpointError` names those
    that would not be.
    """
    if fmt not in ("transformers", "mae"):
        raise ValueError(f"Can only write the 'transformers' or 'mae' layouts, received {fmt!r}")
    variables = keras_variables(model)
    entries = [
        e
        for e in weight_table(model.config, fmt, parts=model_parts(model))
        if e.keras_path in variables
    ]
    # A weight no table entry names would be left out silently: refuse instead.
    written = {id(variables[e.keras_path]) for e in entries}
    unnamed = [v.path for v in model.weights if id(v) not in written]
    if unnamed:
        shown = ", ".join(unnamed[:6]) + (
            f", ... ({len(unnamed)} in all)" if len(unnamed) > 6 else ""
        )
        raise CheckpointError(
            f"Cannot write {type(model).__name__} {model.name!r} in the {fmt} layout: "
            f"{len(unnamed)} of its {len(model.weights)} weights have no name there ({shown}); "
            "nothing was written"
        )
    state: dict[str, np.ndarray] = {}
    for entry in entries:
        variable = variables[entry.keras_path]
        value = np.asarray(variable.numpy()).reshape(entry.layout_shape(variable.shape))
        for name, part in zip(entry.names, np.split(value, len(entry.names), axis=-1)):
            state[name] = np.ascontiguousarray(to_torch_layout(part, entry.transform))
    if model_parts(model) == ("vit",) and fmt == "transformers":
        state = {k[len("vit.") :]: v for k, v in state.items()}
    return state


def _table_layers(config: Any) -> dict[str, list[str]]:
    """The Keras variable paths of `config`'s weight table (every part), by
    layer path, in the order a layer holds its variables."""
    names: dict[str, list[str]] = {}
    for entry in weight_table(config, "keras", parts=tuple(sorted(set(PARTS.values())))):
        names.setdefault(entry.keras_path.rpartition("/")[0], []).append(entry.keras_path)
    return names


def keras_state(model: Any, layers: Mapping[str, Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """Name the arrays of `formats.read_keras_weights` by variable
    path, giving the `keras` layout that `load_state_dict` reads.

    A layer's arrays take, in order, the names of `model`'s variables at the
    same layer path; for a layer `model` lacks (a decoder, a head) the names
    come from the weight table. Arrays of layers neither knows stay under
    `"<layer path>/<index>"` and are reported as unexpected.
    """
    names = _table_layers(model.config)
    own: dict[str, list[str]] = {}
    for path in keras_variables(model):
        own.setdefault(path.rpartition("/")[0], []).append(path)
    names.update(own)
    state: dict[str, np.ndarray] = {}
    for layer, arrays in layers.items():
        layer_names = names.get(layer, ())
        if len(layer_names) != len(arrays):
            layer_names = [f"{layer}/{i}" for i in range(len(arrays))]
        state.update(zip(layer_names, arrays))
    return state
