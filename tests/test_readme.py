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
