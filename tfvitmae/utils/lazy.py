"""Lazy exports for package `__init__` files: a name is imported from its
module on first use, so importing a package (or any one module in it) does
not import its siblings. `import tfvitmae` and `ViTMAEConfig` stay free of
TensorFlow this way, and the `tfvitmae` command starts fast."""

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], moved: Mapping[str, str] | None = None
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """`(__all__, __getattr__, __dir__)` for the package named `package`.

    Args:
        package: The package's `__name__`.
        exports: `{name: module}`: the public names and the module (relative
            to `package`) that defines each.
        moved: `{old name: "absolute.module:name"}`: names that lived here
            before; they still resolve for one release, with a
            `DeprecationWarning` naming the new place.
    """
    moved = dict(moved or {})

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        elif name in moved:
            module, _, new_name = moved[name].partition(":")
            warnings.warn(
                f"{package}.{name} has moved to {module}.{new_name}; the old name will be "
                "removed in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(module), new_name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        importlib.import_module(package).__dict__[name] = value  # next time, no lookup
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return sorted(exports), __getattr__, __dir__
