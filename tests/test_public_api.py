"""The public API: what the README and notebooks import exists where they
import it, and the module paths of 0.1 still work for one release, warning."""

import ast
import importlib
import json
import pathlib
import re
import subprocess
import sys
import warnings

import pytest

import tfvitmae
from tfvitmae._deprecated import MOVED_MODULES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def documented_imports():
    """`(module, name)` for every `from tfvitmae... import name` in the README's
    Python blocks and the notebooks' code cells."""
    readme = (ROOT / "README.md").read_text()
    sources = re.findall(r"```python\n(.*?)```", readme, re.S)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        sources += ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = set()
    for source in sources:
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("!", "%"))]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfvitmae"):
                found.update((node.module, alias.name) for alias in node.names)
    return sorted(found)


def test_the_docs_import_something():
    modules = {module for module, _ in documented_imports()}
    assert "tfvitmae" in modules and len(documented_imports()) > 10


@pytest.mark.parametrize("module, name", documented_imports())
def test_documented_imports_resolve_without_deprecation(module, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert hasattr(importlib.import_module(module), name), f"{module} has no {name}"


@pytest.mark.parametrize(
    "name",
    [
        "make_dataset",
        "pretrain",
        "train_classifier",
        "export_saved_model",
        "CheckpointError",
        "LoadReport",
        "ViTMAEImageProcessor",
        "TFViTMAEForImageClassification",
        "masking_noise",
    ],
)
def test_the_top_level_exports_the_tools_of_the_readme(name):
    assert name in tfvitmae.__all__ and getattr(tfvitmae, name) is not None


def test_importing_the_package_loads_no_tensorflow():
    code = (
        "import sys, tfvitmae; c = tfvitmae.ViTMAEConfig(); "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_module_paths_import_with_a_warning_naming_the_new_one(old):
    """Every 0.1 module still imports, warns once, and gives the names of its new module."""
    name = f"tfvitmae.{old}"
    sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match=rf"{name} has moved to tfvitmae\.\w+\.\w+"):
        module = importlib.import_module(name)
    new = importlib.import_module(f"tfvitmae.{MOVED_MODULES[old][0]}")
    for public in new.__all__:
        assert getattr(module, public) is getattr(new, public)


def test_old_names_and_attribute_access():
    with pytest.warns(DeprecationWarning, match="tfvitmae.runs has moved"):
        sys.modules.pop("tfvitmae.runs", None)
        vars(tfvitmae).pop("runs", None)  # as in a fresh process
        runs = tfvitmae.runs  # attribute access, without an import statement
    assert runs.start_run is importlib.import_module("tfvitmae.training.runs").start_run
    with pytest.warns(DeprecationWarning, match="tfvitmae.layers has moved"):
        sys.modules.pop("tfvitmae.layers", None)
        vars(tfvitmae).pop("layers", None)
        from tfvitmae.layers import ViTMAEBlock
    assert ViTMAEBlock is importlib.import_module("tfvitmae.models.layers").ViTMAEBlock
    with pytest.warns(DeprecationWarning, match="DataEpoch has moved to tfvitmae.training"):
        from tfvitmae.data import DataEpoch
    assert DataEpoch is importlib.import_module("tfvitmae.training.callbacks").DataEpoch
    # 0.1's `training` and `data` modules are packages now, with the same names.
    from tfvitmae.data import make_dataset
    from tfvitmae.training import mae_optimizer, pretrain, train_loop

    assert all(callable(f) for f in (make_dataset, mae_optimizer, pretrain, train_loop))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = importlib.import_module("tfvitmae.export").nothing


def test_the_old_warning_points_at_the_users_import(tmp_path):
    script = tmp_path / "user_code.py"
    script.write_text("import warnings\nwarnings.simplefilter('always')\nimport tfvitmae.hub\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"{script}:3: DeprecationWarning: tfvitmae.hub has moved" in out.stderr
