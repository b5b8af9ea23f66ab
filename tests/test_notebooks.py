"""The notebooks in notebooks/: stored stripped, and run top to bottom with tiny
settings, as papermill would run them.

Every notebook's first code cell is tagged `parameters`. The execution test
inserts a cell tagged `injected-parameters` after it with the notebook's entry
in `CI_PARAMETERS`, runs it in a python3 kernel with a temporary working
directory and `HF_HUB_OFFLINE=1`, and fails on the first cell error.
"""

import base64
import importlib.util
import os
import pathlib
import subprocess
import sys
import time

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell; the CI settings keep whole notebooks near half a minute

# Per notebook, the parameters CI runs it with: tiny models, no network.
CI_PARAMETERS = {
    "01_pretrain_and_visualize.ipynb": dict(epochs=4, show_every=2),
    "02_probe_and_finetune.ipynb": dict(
        pretrain_epochs=3, finetune_epochs=2, probe_epochs=2, draws=1, steps=2
    ),
    "03_pytorch_checkpoint.ipynb": dict(
        source="local",
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
    ),
    "04_export_and_serve.ipynb": dict(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2
    ),
}


def load_strip_script():
    spec = importlib.util.spec_from_file_location("strip", NOTEBOOK_DIR / "strip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


strip_script = load_strip_script()


def tags(cell):
    return cell.metadata.get("tags", [])


def parameters_index(notebook, name):
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and "parameters" in tags(cell):
            return i
    raise AssertionError(
        f"{name} has no code cell tagged 'parameters'. Tag the cell of settings (papermill's "
        "convention: in Jupyter, View > Cell Toolbar > Tags) so CI can shrink them."
    )


def inject_parameters(notebook, parameters, name):
    """Papermill's injection: a cell of assignments right after the `parameters` cell."""
    lines = ["# Parameters"] + [f"{key} = {value!r}" for key, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(parameters_index(notebook, name) + 1, cell)


def stripping_problems(notebook):
    """What keeps `notebook` from being stored: outputs other than small PNG
    figures, execution counts, and injected parameters."""
    problems = []
    for i, cell in enumerate(notebook.cells):
        if "injected-parameters" in tags(cell):
            problems.append(f"cell {i} holds injected parameters")
        if cell.cell_type != "code":
            continue
        if cell.execution_count is not None:
            problems.append(f"cell {i} has execution_count {cell.execution_count}")
        for output in cell.outputs:
            if not strip_script.is_small_figure(output):
                kinds = sorted(output.get("data", {})) or output.get("name", "")
                problems.append(f"cell {i} has a {output.output_type} output {kinds}")
    return problems


@pytest.fixture(scope="module")
def python3_kernel(tmp_path_factory):
    """A `python3` kernelspec for this interpreter, first on JUPYTER_PATH, so the
    kernel runs where the package is installed (a venv included), whatever other
    kernelspecs the machine has. Notebooks run offline."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter_path = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(jupyter_path / "kernels" / "python3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_path))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        yield


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2, sorted(p.name for p in NOTEBOOK_DIR.iterdir())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_stored_notebook_is_valid_and_stripped(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    problems = stripping_problems(notebook)
    assert problems == [], f"run `python notebooks/strip.py {path.name}`: {problems}"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and "parameters" in tags(code[0]), "the first code cell must be tagged parameters"
    assert notebook.metadata.kernelspec.name == "python3"
    assert path.name in CI_PARAMETERS, f"add the CI settings of {path.name} to CI_PARAMETERS"


def test_strip_script(tmp_path):
    new_output = nbformat.v4.new_output
    small_png = base64.b64encode(b"\x89PNG" + bytes(1000)).decode()
    large_png = base64.b64encode(b"\x89PNG" + bytes(200_000)).decode()
    figure = new_output("display_data", data={"image/png": small_png, "text/plain": "f"})
    cells = [
        nbformat.v4.new_code_cell("a = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("a = 2", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell(
            "show()",
            execution_count=3,
            metadata={"execution": {"iopub.status.idle": "2026-01-01T00:00:00Z"}},
            outputs=[
                new_output("stream", name="stdout", text="hello\n"),
                new_output("execute_result", data={"text/plain": "1"}, execution_count=3),
                figure,
                new_output("display_data", data={"image/png": large_png}),
            ],
        ),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / "run.ipynb"
    for flags, kept in (([], []), (["--keep-figures"], [figure])):
        nbformat.write(notebook, path)
        subprocess.run(
            [sys.executable, NOTEBOOK_DIR / "strip.py", path, *flags], check=True, timeout=60
        )
        stripped = nbformat.read(path, as_version=4)
        nbformat.validate(stripped)
        assert stripping_problems(stripped) == []
        assert [cell.source for cell in stripped.cells] == ["a = 1", "show()"]
        assert stripped.cells[1].outputs == kept
        assert "execution" not in stripped.cells[1].metadata


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_top_to_bottom(path, python3_kernel, tmp_path):
    from nbclient import NotebookClient

    if path.name not in CI_PARAMETERS:
        pytest.fail(f"{path.name} has no entry in CI_PARAMETERS: add the tiny settings CI uses")
    notebook = nbformat.read(path, as_version=4)
    inject_parameters(notebook, CI_PARAMETERS[path.name], path.name)
    repository = sorted(os.listdir(ROOT)), sorted(os.listdir(NOTEBOOK_DIR))
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the traceback, on the first failing cell
    print(f"{path.name} ran in {time.perf_counter() - start:.0f} s")
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "some cells did not run"
    assert (sorted(os.listdir(ROOT)), sorted(os.listdir(NOTEBOOK_DIR))) == repository
