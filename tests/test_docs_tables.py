"""The docs' result tables are what ``benchmarks/results/*.csv`` give (``benchmarks/make_tables.py``)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def make_tables(load_benchmark):
    return load_benchmark("make_tables")


@pytest.fixture
def results_copy(make_tables, tmp_path, monkeypatch):
    """A copy of benchmarks/results/ that the generator reads instead of the committed one."""
    copy = tmp_path / "results"
    shutil.copytree(make_tables.RESULTS, copy)
    monkeypatch.setattr(make_tables, "RESULTS", copy)
    return copy


def _edit(path: Path, match: dict[str, str], column: str, value: str) -> None:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, hits
    hits[0][column] = value
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_page_tables_match_the_csvs(make_tables):
    stale = make_tables.check()
    assert not stale, f"run `python benchmarks/make_tables.py` and commit: {stale}"


def test_every_table_is_included_in_a_page(make_tables):
    pages = "".join(p.read_text() for p in DOCS.glob("*.md"))
    missing = [name for name in make_tables.TABLES if f"generated_tables/{name}" not in pages]
    assert not missing


def test_a_changed_number_fails_the_check(make_tables, results_copy):
    assert make_tables.check() == []
    _edit(
        results_copy / "accuracy.csv",
        {"dataset": "bmmc_cite_600", "setting": "in_distribution", "method": "default"},
        "per_cell_r",
        "0.897",
    )
    stale = make_tables.check()
    assert "benchmarks_headline.md" in stale
    assert "accuracy_per_set.md" in stale


def test_a_changed_scale_row_fails_the_check(make_tables, results_copy):
    _edit(results_copy / "scale_atlas.csv", {"mode": "store", "cells": "2000000"}, "peak_rss_mb", "2600")
    assert {"scale_lead.md", "scale_atlas.md"} <= set(make_tables.check())


def test_a_mean_that_is_not_the_mean_of_its_seeds_is_an_error(make_tables, results_copy):
    _edit(
        results_copy / "accuracy.csv",
        {"dataset": "bmmc_cite_600", "setting": "in_distribution", "method": "ridge"},
        "pp_r",
        "0.690",
    )
    with pytest.raises(make_tables.TableError, match="not the mean of its seeds"):
        make_tables.render_all()


def test_fewer_than_three_seeds_are_shown_as_not_measured(make_tables):
    text = make_tables.benchmarks_headline()
    totalvi = next(line for line in text.splitlines() if line.startswith("| totalVI"))
    assert "0.450" not in totalvi  # synthetic D1, seed 0 only: a note, not a cell
    assert "n/m" in totalvi
    assert "seed 0 only, per-protein r 0.450" in text


def test_an_appended_scale_row_is_picked_up(make_tables, results_copy):
    """The newest row of a size replaces the older one in the lead table; rows need only the script's columns."""
    path = results_copy / "scale_train.csv"
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    # the newest in-memory row of a size that also has a backed row: the appended row must replace it, not the other
    backed = [r for r in rows if r.get("data") == "backed"]
    sizes = {(r["n_obs"], r["n_genes"]) for r in backed}
    last = next(
        r
        for r in reversed(rows)
        if (r.get("data") or "in memory") == "in memory" and (r["n_obs"], r["n_genes"]) in sizes
    )
    script_columns = fields[: fields.index("peak_rss_gb") + 1]  # what benchmarks/scale_train_size.py writes
    row = {k: last[k] for k in script_columns} | {"date": "2099-01-01 00:00", "peak_rss_gb": "3.21"}
    with path.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=script_columns, lineterminator="\n").writerow(row)
    lead = make_tables.scale_lead()
    assert "| 3.21 |" in lead
    assert f"| {float(last['peak_rss_gb']):.2f} |" not in lead  # the replaced row (the same size and data)
    # the newest backed row of the same size is not replaced by an in-memory one
    same_size = [r for r in backed if (r["n_obs"], r["n_genes"]) == (last["n_obs"], last["n_genes"])]
    newest_backed = max(same_size, key=lambda r: r["date"])
    assert f"| {float(newest_backed['peak_rss_gb']):.2f} |" in lead
