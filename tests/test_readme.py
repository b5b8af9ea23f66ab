"""The README's commands are the ones CI and users run."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_install_and_test_commands():
    first, second = readme_commands()[:2]
    assert first == 'pip install ".[demo]" && tfvitmae demo'
    assert '".[test]"' in second and "pytest" in second


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_ci_lints_with_the_dev_extras_ruff():
    ci = (ROOT / ".ci" / "run").read_text()
    pin = re.search(r"ruff==[\d.]+", (ROOT / "setup.cfg").read_text()).group(0)
    assert f'pip install "{pin}" && ruff check . && ruff format --check .' in ci


def test_ci_type_checks_with_the_dev_extras_mypy():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    pin = re.search(r"mypy==[\d.]+", (ROOT / "setup.cfg").read_text()).group(0)
    assert f'pip install torch==2.13.0 && pip install -e ".[test]" "{pin}" && mypy' in ci


def test_core_install_is_lean_and_the_demo_has_its_extra():
    """keras-cv (with tensorflow-datasets, pyarrow and keras-core) and
    scikit-learn (with scipy) are not in every install: keras-cv is a plug-in
    augmenter, scikit-learn the demo's data."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    core = setup["options"]["install_requires"].split()
    assert not {"keras-cv", "scikit-learn"} & set(core)
    extras = setup["options.extras_require"]
    assert extras["demo"].split() == ["scikit-learn", "pillow"]
    assert {"keras-cv", "scikit-learn", "tensorboard", "pillow"} <= set(extras["test"].split())


DOCS = ("README.md", "CHANGELOG.md", "SECURITY.md")

# `tests/dir/test_x.py`, `tests/dir/test_x.py::test_y`, `tests/dir/test_x.py::Class::test_y[case]`,
# `tests/dir/`; then `::test_z` (the last file named before it) and a bare `test_w.py` (in the
# directory of the last file named before it).
TEST_REFERENCE = re.compile(
    r"(?P<path>tests(?:/[\w.-]+)*(?:/|\.py))(?P<names>(?:::\w+)*)(?P<param>\[[^\]\s]*\])?"
    r"|`::(?P<more>\w+(?:::\w+)*)(?:\[[^\]\s]*\])?`"
    r"|`(?P<bare>test_\w+\.py)`"
)


def defined_tests(path: pathlib.Path) -> set:
    """The test functions of `path`, and `Class::method` for test classes' methods."""
    import ast

    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
    return names


def broken_test_references(text: str, root: pathlib.Path = ROOT) -> list:
    """Every test reference in `text` that names no file, directory or test of `root`."""
    broken, last_file = [], None
    for match in TEST_REFERENCE.finditer(text):
        if match["path"]:
            path, names = match["path"], match["names"]
        elif match["bare"]:
            if last_file is None:
                broken.append(f"{match['bare']} (no tests/ path before it)")
                continue
            path, names = f"{pathlib.PurePosixPath(last_file).parent}/{match['bare']}", ""
        else:
            if last_file is None:
                broken.append(f"::{match['more']} (no tests/ file before it)")
                continue
            path, names = last_file, "::" + match["more"]
        target = root / path
        if path.endswith("/"):
            if not target.is_dir():
                broken.append(path)
            continue
        if not target.is_file():
            broken.append(path)
            continue
        last_file = path
        name = names[2:]
        if name and name not in defined_tests(target):
            broken.append(f"{path}::{name}")
    return broken


def test_every_test_a_document_names_exists():
    """README, CHANGELOG and SECURITY name the tests behind their claims: each name must be a
    test that exists, so a renamed or deleted test cannot leave a claim pointing at nothing."""
    for doc in DOCS:
        assert broken_test_references((ROOT / doc).read_text()) == [], doc


def test_a_wrong_test_name_is_caught(tmp_path):
    (tmp_path / "tests" / "models").mkdir(parents=True)
    (tmp_path / "tests" / "models" / "test_a.py").write_text(
        "def test_one():\n    pass\n\n\nclass TestGroup:\n    def test_two(self):\n        pass\n"
    )
    (tmp_path / "tests" / "models" / "test_b.py").write_text("def test_three():\n    pass\n")
    good = (
        "(`tests/models/test_a.py::test_one`, `::TestGroup::test_two`) and"
        " `tests/models/test_a.py::test_one[case-1]`, `test_b.py`; `tests/models/`,"
        " <!-- tested by: tests/models/test_b.py::test_three -->"
    )
    assert broken_test_references(good, tmp_path) == []
    bad = (
        "`tests/models/test_a.py::test_on` (`::test_two`), `tests/models/test_c.py`,"
        " `tests/data/`, `test_d.py`, <!-- tests/models/test_b.py::test_four -->"
    )
    assert broken_test_references(bad, tmp_path) == [
        "tests/models/test_a.py::test_on",
        "tests/models/test_a.py::test_two",
        "tests/models/test_c.py",
        "tests/data/",
        "tests/models/test_d.py",
        "tests/models/test_b.py::test_four",
    ]
