"""The tutorial notebooks: each runs top to bottom (its own cells check what it teaches), and the
committed copies - outputs included, so that GitHub shows their figures - stay small, executed in
order and reviewable. The rules live in tutorials/execute.py, which regenerates the outputs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

TUTORIALS = Path(__file__).parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
COURSE = (
    "00_jax_and_flax_for_vision",
    "01_efficientnet",
    "02_yolov8",
    "03_vision_transformer",
    "04_omnivec",
    "05_training_and_benchmarking",
)


def _load_execute():
    spec = importlib.util.spec_from_file_location("tutorials_execute", TUTORIALS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute = _load_execute()


def test_the_course_is_there():
    names = [p.stem for p in NOTEBOOKS]
    assert set(COURSE) <= set(names), names
    assert not (TUTORIALS / "01_looking_inside.ipynb").exists()  # absorbed into notebook 03


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    """Every cell runs (nbclient raises on the first error, or a cell past the per-cell timeout),
    and the fresh outputs would pass the committed-file rules too."""
    nb, _ = execute.execute(path)
    assert execute.problems(nb) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_small_and_reviewable(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert path.stat().st_size <= execute.NOTEBOOK_LIMIT_BYTES
    assert nb.metadata.kernelspec.name == execute.KERNEL
    assert execute.problems(nb) == []
    # The README shows this figure; tutorials/execute.py writes it beside the notebook's outputs.
    assert (execute.FIGURES / f"{path.stem}.png").read_bytes() == execute.readme_figure(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ends_with_exercises_whose_solutions_exist(path):
    nb = nbformat.read(path, as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    last = markdown[-1]
    assert last.startswith("## Exercises"), last[:80]
    solution = f"tutorials/solutions/{path.stem}.py"
    assert solution in last and (TUTORIALS.parent / solution).is_file()
    assert 2 <= len(re.findall(r"^\d\. ", last, flags=re.MULTILINE)) <= 3


def test_problems_catches_what_must_not_be_committed():
    cell = nbformat.v4.new_code_cell("x", execution_count=2)
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": "<table/>"}),
        nbformat.v4.new_output("stream", name="stdout", text="x" * (execute.TEXT_LIMIT_CHARS + 1)),
        nbformat.v4.new_output("error", ename="E", evalue="", traceback=[]),
    ]
    cell.metadata["execution"] = {"iopub.execute_input": "2024-01-01T00:00:00Z"}
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["widgets"] = {"state": {}}
    found = " | ".join(execute.problems(nb))
    for expected in (
        "text/html",
        "characters of stdout",
        "error output",
        "timing metadata",
        "widget state",
        "execution counts [2]",
        "no figure",
        "readme-figure",
    ):
        assert expected in found, (expected, found)
