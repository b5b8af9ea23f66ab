"""The package's layering: imports run one way, and every module is placed.

Each module may import only from rows above its own, or from earlier modules
in its own row, counting imports inside functions too. The rows are the ones
listed in `tfvitmae/__init__.py`.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfvitmae"

FLOORS = (
    ("activations", "seeds", "files", "config"),
    ("position", "attention", "layers", "outputs", "inputs", "patches"),
    ("stacks",),
    ("checkpoint_files", "weights", "state_dicts", "hub", "image_processor"),
    ("image_folders", "augmentation", "data", "export"),
    ("base_model", "modeling", "classification"),
    ("schedules", "optimizers", "visualization", "callbacks", "loops", "runs", "training"),
    ("demo", "commands", "cli", "__main__"),
)
RANK = {name: (floor, i) for floor, names in enumerate(FLOORS) for i, name in enumerate(names)}
MODEL_MODULES = {"base_model", "modeling", "classification"}


def package_imports(path):
    """The tfvitmae modules that the file at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x (a module, or a name of __init__)
                found.update(a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists())
            elif node.module and node.module.startswith("tfvitmae."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("tfvitmae."))
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_floor():
    assert sorted(set(MODULES) - set(RANK)) == []
    assert sorted(set(RANK) - set(MODULES)) == []


@pytest.mark.parametrize("module", MODULES)
def test_imports_run_one_way(module):
    imports = package_imports(PACKAGE / f"{module}.py")
    upward = sorted(name for name in imports if RANK[name] >= RANK[module])
    assert upward == [], f"{module} imports {upward}, which are not below it"


@pytest.mark.parametrize(
    "module",
    [
        "checkpoint_files",
        "weights",
        "state_dicts",
        "hub",
        "image_processor",
        "image_folders",
        "data",
        "export",
    ],
)
def test_checkpoint_and_serving_code_never_imports_a_model(module):
    assert not package_imports(PACKAGE / f"{module}.py") & MODEL_MODULES


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("def f():\n    from .modeling import X\n    from . import hub, __version__\n")
    assert package_imports(source) == {"modeling", "hub"}


@pytest.mark.parametrize("module", MODULES + ["__init__"])
def test_modules_stay_small(module):
    lines = len((PACKAGE / f"{module}.py").read_text().splitlines())
    assert lines <= 450, f"{module}.py has {lines} lines: split it by job"
