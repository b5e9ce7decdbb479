"""The fit-cost script ``benchmarks/fit_cost.py``: every variant timed in each repeat, ratio within a repeat."""

from __future__ import annotations

import argparse

import pandas as pd


def test_fit_cost_times_each_variant_per_repeat(tmp_path, load_benchmark):
    module = load_benchmark("fit_cost")
    args = argparse.Namespace(out=str(tmp_path), data="synthetic:quick", seed=0, repeats=2, max_epochs=2, data_dir=None)
    df = module.run(args)
    assert list(df["variant"]) == ["paper", "default", "default_no_phase"] * 2
    assert list(df["repeat"]) == [0, 0, 0, 1, 1, 1]
    assert (df["fit_seconds"] > 0).all()
    written = pd.read_csv(tmp_path / "fit_cost.csv")
    pd.testing.assert_frame_equal(written, df, check_dtype=False)
    summary = (tmp_path / "summary.md").read_text()
    wide = df.pivot(index="repeat", columns="variant", values="fit_seconds")
    ratio = (wide["default"] / wide["paper"]).mean()
    assert f"Mean default / paper ratio: {ratio:.2f}" in summary
    assert summary.count("\n| ") == 3  # header and two repeats


def test_fit_cost_times_the_cell_state_term_when_asked(tmp_path, load_benchmark):
    module = load_benchmark("fit_cost")
    assert list(module.variants()) == ["paper", "default", "default_no_phase"]
    state = module.variants(10.0)["default_state"]
    assert state == ({}, {"disentangle_kwargs": {"state_weight": 10.0}})
    # the default has the term: weight 0 is the default without it, a variant of its own
    assert module.variants(0.0)["default_state"] == ({}, {"disentangle_kwargs": {"state_weight": 0.0}})
    args = argparse.Namespace(
        out=str(tmp_path), data="synthetic:quick", seed=0, repeats=1, max_epochs=2, data_dir=None, state_weight=0.0
    )
    df = module.run(args)
    assert list(df["variant"]) == ["paper", "default", "default_no_phase", "default_state"]
    wide = df.pivot(index="repeat", columns="variant", values="fit_seconds")
    ratio = (wide["default_state"] / wide["paper"]).mean()
    summary = (tmp_path / "summary.md").read_text()
    assert "Default with state_weight=0 (s) per repeat" in summary
    assert f"mean ratio to the paper preset {ratio:.2f}" in summary
