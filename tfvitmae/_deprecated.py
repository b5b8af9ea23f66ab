"""Module paths that moved, kept importable for one release: those of
tfvitmae 0.1 (one flat folder) and the model modules merged since
(`tfvitmae.models.inputs`, ...). `import tfvitmae.layers` still works,
warns with a `DeprecationWarning` naming the new module, and finds every
name in it. `CHANGELOG.md` lists each move."""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["MOVED_MODULES", "install"]

# Old module -> the modules that now hold its names, searched in order.
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "activations": ("models.layers",),
    "attention": ("models.layers",),
    "augmentation": ("data.augmentation",),
    "base_model": ("models.vit_mae", "models.pretrained", "models.tasks"),
    "callbacks": ("training.callbacks",),
    "checkpoint_files": ("checkpoints.formats",),
    "classification": ("models.classification",),
    "commands": ("cli.commands",),
    "config": ("models.config", "checkpoints.formats"),
    "demo": ("cli.demo",),
    "export": ("serving.saved_model", "serving.requests"),
    "files": ("utils.files",),
    "hub": ("checkpoints.hub",),
    "image_folders": ("data.folders",),
    "image_processor": ("data.image_processor",),
    "inputs": ("models.pretrained", "models.layers", "utils.checks"),
    "layers": ("models.layers",),
    "loops": ("training.distributed",),
    "modeling": ("models.vit_mae", "models.pretrained", "models.tasks"),
    "optimizers": ("training.optimizers",),
    "outputs": ("models.pretrained",),
    "patches": ("models.layers",),
    "position": ("models.layers",),
    "runs": ("training.runs",),
    "schedules": ("training.optimizers",),
    "seeds": ("models.layers",),
    "stacks": ("models.vit_mae",),
    "state_dicts": ("checkpoints.state_dicts",),
    "visualization": ("training.visualization",),
    "weights": ("checkpoints.weight_names", "checkpoints.formats"),
    # tfvitmae 0.2: the model subpackage's own moves.
    "models.activations": ("models.layers",),
    "models.inputs": ("models.pretrained", "models.layers"),
    "models.outputs": ("models.pretrained",),
}
_PACKAGE = __name__.rpartition(".")[0]


def _warn(message: str) -> None:
    """Warn at the first frame outside the import machinery: the user's import.

    `warnings` itself skips the frozen `importlib._bootstrap` frames when it
    counts `stacklevel`, so only the other frames are counted here."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 2  # our caller's frame
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
            continue
        if not (name.startswith("importlib") or name in (__name__, _PACKAGE)):
            break
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


class _MovedModule(types.ModuleType):
    """Stands for an old module: every attribute comes from its new modules."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved to {', '.join(targets)}.")
        self.__targets = targets

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {', '.join(self.__targets)}) has no "
            f"attribute {attr!r}"
        )

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__targets:
            names.update(getattr(importlib.import_module(target), "__all__", ()))
        return sorted(names)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        prefix, _, old = fullname.partition(".")
        if prefix == _PACKAGE and old in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        old = spec.name.partition(".")[2]
        targets = tuple(f"{_PACKAGE}.{t}" for t in MOVED_MODULES[old])
        _warn(
            f"{spec.name} has moved to {' and '.join(targets)}; the old path will be removed "
            "in the next release"
        )
        return _MovedModule(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
