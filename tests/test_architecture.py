"""The package's layering: imports run one way between subpackages, and the
public API is explicit.

Subpackages, bottom up (the order in `tfvitmae/__init__.py`): a module may
import from its own subpackage and from those below it, counting imports
inside functions too. `checkpoints`, `data` and `serving` never import a
model: they take one as an argument.
"""

import ast
import importlib
import inspect
import pathlib

import numpy as np
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfvitmae"

FLOORS = ("utils", "checkpoints", "data", "serving", "models", "training", "cli")
RANK = {name: floor for floor, name in enumerate(FLOORS)}
# Top-level modules: the public API and the old module paths (both may name any subpackage).
TOP_LEVEL = {"__init__", "__main__", "_deprecated"}
MODEL_CLASS_MODULES = {"models.vit_mae", "models.pretrained", "models.classification"}


def resolve(path, node):
    """The absolute dotted module (below `tfvitmae`) that an import names, or None."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = parts[:-1]  # the importing module's package, below tfvitmae
    if isinstance(node, ast.ImportFrom) and node.level:
        base = package[: len(package) - (node.level - 1)]
        if node.level - 1 > len(package):
            raise AssertionError(f"{path}: relative import beyond the package")
        module = (*base, *(node.module.split(".") if node.module else ()))
        if node.module:
            return [".".join(module)]
        return [".".join((*module, a.name)) for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfvitmae."):
        return [node.module.split(".", 1)[1]]
    if isinstance(node, ast.Import):
        return [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("tfvitmae.")]
    return []


def package_imports(path):
    """The tfvitmae modules (dotted, below `tfvitmae`) imported anywhere in `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(m for m in resolve(path, node) if m)
    return found


MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
)
SUBPACKAGE_MODULES = [m for m in MODULES if "." in m]


def test_every_subpackage_has_a_floor():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(FLOORS)
    assert {m for m in MODULES if "." not in m} == TOP_LEVEL


@pytest.mark.parametrize("module", SUBPACKAGE_MODULES)
def test_imports_run_one_way(module):
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    own = module.split(".")[0]
    upward = sorted(m for m in package_imports(path) if RANK.get(m.split(".")[0], -1) > RANK[own])
    assert upward == [], f"{module} imports {upward}, which are above {own}"


@pytest.mark.parametrize("module", [m for m in SUBPACKAGE_MODULES if m.split(".")[0] != "models"])
def test_only_training_and_the_cli_import_a_model_class(module):
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    if RANK[module.split(".")[0]] < RANK["models"]:
        assert not package_imports(path) & (MODEL_CLASS_MODULES | {"models"})


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = PACKAGE / "training" / "example.py"  # resolved as if it were there
    tree = "def f():\n    from ..models.vit_mae import X\n    from . import runs\n"
    fake = tmp_path / "example.py"
    fake.write_text(tree)
    found = set()
    for node in ast.walk(ast.parse(tree)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(resolve(source, node))
    assert found == {"models.vit_mae", "training.runs"}


# `__main__` runs the command line when imported: it has no API to declare.
@pytest.mark.parametrize("module", [m for m in MODULES if m != "__main__"])
def test_every_module_declares_its_public_names(module):
    name = "tfvitmae." + module.removesuffix("__init__") if module != "__init__" else "tfvitmae"
    imported = importlib.import_module(name.rstrip("."))
    names = getattr(imported, "__all__", None)
    assert names is not None, f"tfvitmae.{module} has no __all__"
    missing = sorted(n for n in names if not hasattr(imported, n))
    assert missing == [], f"tfvitmae.{module}.__all__ names {missing}, which it lacks"


def unannotated(path):
    """`name: [parameters]` of the public functions and methods in `path`
    that lack an annotation (a parameter's, or the return's)."""
    found = []

    def visit(node, prefix, public):
        for item in node.body:
            if isinstance(item, ast.ClassDef):
                visit(item, f"{prefix}{item.name}.", public and not item.name.startswith("_"))
            elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and public:
                if item.name.startswith("_") and item.name not in ("__init__", "__call__"):
                    continue
                arguments = item.args.posonlyargs + item.args.args + item.args.kwonlyargs
                missing = [
                    a.arg
                    for a in arguments
                    if a.annotation is None and a.arg not in ("self", "cls")
                ]
                if item.returns is None and item.name != "__init__":
                    missing.append("return")
                if missing:
                    found.append(f"{prefix}{item.name}: {missing}")

    visit(ast.parse(path.read_text()), "", True)
    return found


@pytest.mark.parametrize("module", MODULES)
def test_the_public_api_is_annotated(module):
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    assert unannotated(path) == []


def test_the_annotation_check_sees_what_is_missing(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "def f(a: int, b) -> int: ...\n"
        "def g(a: int): ...\n"
        "def _private(a): ...\n"
        "class C:\n"
        "    def __init__(self, x): ...\n"
        "    def method(self, *, y: int = 0) -> None: ...\n"
    )
    assert unannotated(source) == ["f: ['b']", "g: ['return']", "C.__init__: ['x']"]


# The CHANGELOG's list of lower-level options that are keyword-only.
KEYWORD_ONLY = {
    "tfvitmae.training.visualization:reconstruction_grid": ("processor", "seed", "titles"),
    "tfvitmae.training.visualization:write_reconstruction_grid": ("processor", "seed", "titles"),
    "tfvitmae.serving.saved_model:export_saved_model": ("raw_inputs", "warmup", "top_k", "verbose"),
    "tfvitmae.models.pretrained:check_pixel_values": ("data_format", "interpolate_pos_encoding"),
    "tfvitmae.models.layers:unpatchify": ("image_size", "channels"),
    "tfvitmae.models.layers:per_patch_error": ("norm_pix_loss",),
    "tfvitmae.data.folders:split_files": ("seed",),
    "tfvitmae.data.augmentation:mixers": ("seed",),
    "tfvitmae.data.augmentation:batch_augment": ("seed", "num_classes"),
    "tfvitmae.data.augmentation:random_resized_crop": ("scale", "ratio", "method"),
    "tfvitmae.data.image_processor:channel_stats": ("dtype",),
}


@pytest.mark.parametrize("where", KEYWORD_ONLY)
def test_lower_level_options_are_keyword_only(where):
    module, name = where.split(":")
    parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    for option in KEYWORD_ONLY[where]:
        assert parameters[option].kind is inspect.Parameter.KEYWORD_ONLY, (where, option)


# ------------------------------------------------ the model reads like the paper
def test_the_model_file_is_the_architecture():
    """`vit_mae.py` holds the architecture alone (issue 31): about 650 lines, the
    pretraining model about 170, and the first `call` within 80 lines of the
    imports, so a reader meets the forward pass on the first screens."""
    from tfvitmae.models.vit_mae import TFViTMAEForPreTraining

    path = PACKAGE / "models" / "vit_mae.py"
    source = path.read_text()
    tree = ast.parse(source)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "call"]
    assert len(source.splitlines()) <= 650
    assert len(inspect.getsourcelines(TFViTMAEForPreTraining)[0]) <= 170
    assert min(n.lineno for n in calls) - max(n.end_lineno for n in imports) <= 80


def test_a_forward_pass_reads_in_three_files():
    """Every line of package code that one pretraining forward pass runs, with
    every output and dropout, is in `vit_mae.py`, `layers.py` or `pretrained.py`."""
    import sys

    from tfvitmae import TFViTMAEForPreTraining

    from .helpers import noise_for, pixels, tiny_config

    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = TFViTMAEForPreTraining(config)
    x, noise = pixels(config), noise_for(config)
    model(x, noise=noise)  # Keras' first call builds and traces what it needs
    ran = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(str(PACKAGE)):
            ran.add(pathlib.Path(frame.f_code.co_filename).relative_to(PACKAGE).as_posix())

    sys.setprofile(profile)
    try:
        out = model(
            {"pixel_values": x, "output_attentions": True},
            noise=noise,
            head_mask=np.ones(config.num_attention_heads, "float32"),
            output_hidden_states=True,
            training=True,
        )
    finally:
        sys.setprofile(None)
    assert len(out.attentions) == config.num_hidden_layers  # the call ran them all
    assert ran == {"models/vit_mae.py", "models/layers.py", "models/pretrained.py"}


def test_architecture_md_points_at_the_code():
    """Each `file:first-last` `Name` in ARCHITECTURE.md spans exactly that
    definition (several names: from the first's start to the last's end)."""
    import re

    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"`(models/\w+\.py):(\d+)-(\d+)` ((?:`[\w.]+`(?:, )?)+)", text)
    assert len(rows) >= 10
    for path, first, last, names in rows:
        tree = ast.parse((PACKAGE / path).read_text())
        spans = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                spans[node.name] = (node.lineno, node.end_lineno)
                for member in getattr(node, "body", []) if isinstance(node, ast.ClassDef) else []:
                    if isinstance(member, ast.FunctionDef):
                        spans[f"{node.name}.{member.name}"] = (member.lineno, member.end_lineno)
        found = [spans[name] for name in re.findall(r"`([\w.]+)`", names)]
        assert (found[0][0], found[-1][1]) == (int(first), int(last)), (path, names)
