"""Every tutorial notebook executes from top to bottom (CI runs this with --runslow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def test_tutorials_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {
        "getting_started.ipynb",
        "time_resolved_interpretation.ipynb",
        "rna_only_imputation.ipynb",
        "uncertainty.ipynb",
        "two_panels.ipynb",
    } <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_executes(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    # execute a copy inside tutorials/ so relative paths (../../shared) resolve as for a reader
    work = TUTORIALS / f".test_{path.name}"
    shutil.copy(path, work)
    try:
        nb = nbformat.read(work, as_version=4)
        NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
        ).execute()
        errors = [
            o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
        ]
        assert not errors
    finally:
        work.unlink(missing_ok=True)
