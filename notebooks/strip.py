"""Strip notebooks before committing them: outputs, execution counts, run metadata
and papermill's injected parameters go.

    python notebooks/strip.py                     # every notebook in notebooks/
    python notebooks/strip.py notebooks/03_*.ipynb --keep-figures

`--keep-figures` keeps PNG figures under 100 KB (and their text/plain stand-in),
the only outputs tests/test_notebooks.py accepts in a stored notebook.
"""

import argparse
import base64
import pathlib

import nbformat

MAX_FIGURE_BYTES = 100_000
RUN_METADATA = ("execution", "papermill")  # per-cell timings written by nbclient and papermill


def is_small_figure(output):
    """Whether `output` is a displayed PNG of less than `MAX_FIGURE_BYTES`."""
    data = output.get("data", {})
    return (
        output.get("output_type") == "display_data"
        and "image/png" in data
        and set(data) <= {"image/png", "text/plain"}
        and len(base64.b64decode(data["image/png"])) < MAX_FIGURE_BYTES
    )


def strip(notebook, keep_figures=False):
    """Strip `notebook` (an `nbformat.NotebookNode`) in place and return it."""
    notebook.cells = [
        cell
        for cell in notebook.cells
        if "injected-parameters" not in cell.metadata.get("tags", [])
    ]
    for cell in notebook.cells:
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = [
                output for output in cell.outputs if keep_figures and is_small_figure(output)
            ]
    notebook.metadata.pop("papermill", None)
    # Executing records the kernel's exact Python version: keep only the language.
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--keep-figures", action="store_true", help="keep PNG figures < 100 KB")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(pathlib.Path(__file__).resolve().parent.glob("*.ipynb"))
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        nbformat.write(strip(notebook, args.keep_figures), path)
        print(f"stripped {path}")


if __name__ == "__main__":
    main()
