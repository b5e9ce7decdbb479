"""The lever-screen script ``benchmarks/levers.py``: its ensemble, its bookkeeping and its SVD size rule."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def levers(load_benchmark):
    return load_benchmark("levers")


def _args(out: Path, **kw) -> argparse.Namespace:
    base = {
        "out": str(out),
        "data": "synthetic:quick",
        "seeds": "0",
        "levers": "default,ensemble",
        "references": "ridge",
        "threads": 1,
        "max_epochs": 2,
        "setting": "in_distribution",
        "data_dir": None,
    }
    return argparse.Namespace(**{**base, **kw})


def test_lever_arguments(levers):
    assert levers.lever_arguments("default", 800, 3000) == ({}, {})
    assert levers.lever_arguments("svd", 800, 3000) == ({"input_reduction": "svd", "n_input_features": 256}, {})
    # fewer training cells (dyngen: 160) or genes than 256: the largest power of two below both
    assert levers.lever_arguments("svd", 160, 3000)[0]["n_input_features"] == 128
    assert levers.lever_arguments("svd", 800, 120)[0]["n_input_features"] == 64
    assert levers.lever_arguments("svd", 128, 3000)[0]["n_input_features"] == 64  # TruncatedSVD needs k < cells
    assert levers.lever_arguments("group_lasso", 800, 3000)[1] == {
        "input_group_lasso": 1e-4,
        "early_stopping_patience": 50,
    }
    assert levers.lever_arguments("regularised", 800, 3000) == (
        {"dropout_rate": 0.3},
        {"lr": 3e-4, "weight_decay": 1e-3},
    )
    assert levers.lever_arguments("screen256", 800, 3000) == (
        {"input_reduction": "screen", "n_input_features": 256},
        {},
    )
    assert levers.lever_arguments("screen512", 800, 3000)[0]["n_input_features"] == 512
    assert levers.lever_arguments("screen512", 800, 300)[0]["n_input_features"] == 299  # fewer genes
    with pytest.raises(ValueError, match="Unknown lever"):
        levers.lever_arguments("bagging", 800, 3000)


def test_ensemble_is_the_mean_of_its_members_and_reruns_skip(levers, tmp_path):
    from crossmodalnet.benchmark import load_dataset, make_split

    df = levers.run(_args(tmp_path))
    assert list(df["lever"]) == ["default", "ensemble", "ridge"]
    row = df.set_index("lever")
    data = load_dataset("synthetic:quick", seed=0)
    train, val, test = make_split(data, "in_distribution", seed=0)
    assert row.loc["default", "n_train"] == len(train)
    assert row.loc["default", "n_val"] == len(val)
    assert row.loc["default", "n_test"] == len(test)

    members = [np.load(tmp_path / "preds" / f"{data.name}_seed0_member{o}.npz") for o in levers.ENSEMBLE_OFFSETS]
    # member 0 is the default run itself; the other two have other model seeds, so they differ
    assert not np.allclose(members[0]["pred"], members[1]["pred"])
    mean = np.mean([m["pred"] for m in members], axis=0)
    pp, pc, mse = levers.scores(mean[test], data.Y[test])
    assert row.loc["ensemble", "test_pearson_protein"] == pytest.approx(pp, abs=1e-12)
    assert row.loc["ensemble", "test_mse"] == pytest.approx(mse, abs=1e-12)
    assert levers.scores(members[0]["pred"][test], data.Y[test])[0] == pytest.approx(
        row.loc["default", "test_pearson_protein"], abs=1e-12
    )
    assert row.loc["ensemble", "fit_seconds"] == pytest.approx(sum(float(m["fit_s"]) for m in members))

    # a rerun finds every row done and fits nothing
    again = levers.run(_args(tmp_path))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False)
    assert "| ensemble |" in levers.summarise(again)


def test_ensemble_is_deterministic_on_cpu(levers, tmp_path):
    """Two fresh runs of the ensemble lever (same seeds, CPU) give bit-identical members and scores."""
    from crossmodalnet.benchmark import load_dataset

    name = load_dataset("synthetic:quick", seed=0).name
    runs = []
    for folder in ("first", "second"):
        df = levers.run(_args(tmp_path / folder, references=""))
        members = [
            np.load(tmp_path / folder / "preds" / f"{name}_seed0_member{o}.npz")["pred"]
            for o in levers.ENSEMBLE_OFFSETS
        ]
        runs.append((df.set_index("lever"), members))
    (first, first_members), (second, second_members) = runs
    for a, b in zip(first_members, second_members, strict=True):
        np.testing.assert_array_equal(a, b)
    for column in ("test_pearson_protein", "test_pearson_cell", "test_mse", "val_pearson_protein"):
        assert first.loc["ensemble", column] == second.loc["ensemble", column]
