"""Run the tutorial notebooks top to bottom and save them with their outputs.

    python tutorials/execute.py                      # every tutorials/*.ipynb, one after another
    python tutorials/execute.py tutorials/01_efficientnet.ipynb

The outputs are committed so that a reader on GitHub sees the figures without running anything;
run this after editing a notebook. A notebook is saved only if every cell ran and the result
passes :func:`problems` (the rules ``tests/test_tutorials.py`` checks the committed files
against): small (figures as PNG, no large text, no widget state), executed in order, and free of
machine-specific metadata (cell timings, the Python version), so that diffs show what changed.
The figure of the one code cell tagged ``readme-figure`` is also written to
``tutorials/figures/<notebook>.png``, where the README shows it. Prints each notebook's wall time;
exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

import nbformat

TUTORIALS = Path(__file__).resolve().parent
FIGURES = TUTORIALS / "figures"
README_TAG = "readme-figure"  # the code cell whose figure the README shows
KERNEL = "python3"
CELL_TIMEOUT_S = 300  # the longest cell trains a small model for about a minute
NOTEBOOK_LIMIT_BYTES = 400_000  # a committed notebook, outputs included
IMAGE_LIMIT_BYTES = 200_000  # one figure, base64-encoded PNG
TEXT_LIMIT_CHARS = 10_000  # one text output (a stream, or a result's text/plain)
ALLOWED_MIME = frozenset({"text/plain", "image/png"})
ALLOWED_OUTPUTS = frozenset({"stream", "display_data", "execute_result"})


def notebooks() -> list[Path]:
    """The tutorial notebooks, in course order."""
    return sorted(TUTORIALS.glob("*.ipynb"))


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes from run to run or machine to machine without changing the content."""
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps
        cell.metadata.pop("widgets", None)
    return nb


def execute(path: Path, *, timeout: int = CELL_TIMEOUT_S) -> tuple[nbformat.NotebookNode, float]:
    """Run ``path`` in a fresh kernel (working directory: its folder); returns the executed,
    cleaned notebook and the wall time in seconds. Raises ``nbclient.exceptions.CellExecutionError``
    when a cell fails and ``CellTimeoutError`` when one runs longer than ``timeout`` seconds."""
    import nbclient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return clean(nb), time.perf_counter() - start


def readme_figure(nb: nbformat.NotebookNode) -> bytes | None:
    """The PNG of the (first) cell tagged :data:`README_TAG`, or None."""
    for cell in nb.cells:
        if cell.cell_type == "code" and README_TAG in cell.metadata.get("tags", []):
            for output in cell.get("outputs", []):
                if "image/png" in output.get("data", {}):
                    return base64.b64decode(output.data["image/png"])
    return None


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why ``nb`` should not be committed as it is (an empty list if it may)."""
    found = []
    size = len(nbformat.writes(nb).encode())
    if size > NOTEBOOK_LIMIT_BYTES:
        found.append(f"{size:,} bytes, more than {NOTEBOOK_LIMIT_BYTES:,}")
    if "widgets" in nb.metadata:
        found.append("widget state in the notebook metadata")
    counts, figures = [], 0
    for index, cell in enumerate(nb.cells):
        where = f"cell {index}"
        if "execution" in cell.metadata:
            found.append(f"{where}: timing metadata (run tutorials/execute.py)")
        if cell.cell_type != "code":
            continue
        counts.append(cell.execution_count)
        for output in cell.outputs:
            kind = output.output_type
            if kind not in ALLOWED_OUTPUTS:
                found.append(f"{where}: a {kind} output")
                continue
            if kind == "stream":
                if len(output.text) > TEXT_LIMIT_CHARS:
                    found.append(f"{where}: {len(output.text):,} characters of {output.name}")
                continue
            for mime, data in output.data.items():
                if mime not in ALLOWED_MIME:
                    found.append(f"{where}: a {mime} output")
                elif mime == "image/png":
                    figures += 1
                    if len(data) > IMAGE_LIMIT_BYTES:
                        found.append(f"{where}: a {len(data):,}-byte figure")
                elif len(data) > TEXT_LIMIT_CHARS:
                    found.append(f"{where}: {len(data):,} characters of text/plain")
    if counts != list(range(1, len(counts) + 1)):
        found.append(f"code cells not executed once each, in order: execution counts {counts}")
    if not figures:
        found.append("no figure (image/png output)")
    tagged = [c for c in nb.cells if README_TAG in c.metadata.get("tags", [])]
    if len(tagged) != 1 or readme_figure(nb) is None:
        found.append(f"not exactly one code cell tagged {README_TAG!r} with a figure")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: all)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell")
    args = parser.parse_args(argv)
    failed = 0
    total = 0.0
    for path in args.paths or notebooks():
        try:
            nb, seconds = execute(path.resolve(), timeout=args.timeout)
        except Exception as error:  # a failing cell: report it, keep the committed file
            failed += 1
            print(f"FAILED {path.name}: {type(error).__name__}: {str(error)[-2000:]}", flush=True)
            continue
        total += seconds
        issues = problems(nb)
        if issues:
            failed += 1
            print(f"NOT SAVED {path.name} ({seconds:.0f} s): " + "; ".join(issues), flush=True)
            continue
        nbformat.write(nb, path)
        FIGURES.mkdir(exist_ok=True)
        (FIGURES / f"{path.stem}.png").write_bytes(readme_figure(nb))
        print(f"{path.name}: {seconds:.0f} s, {path.stat().st_size / 1000:.0f} kB", flush=True)
    print(f"total {total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
