"""The phase-length probe script ``benchmarks/phase_probe.py`` on the smallest benchmark size."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest


def test_phase_probe_rows(tmp_path, load_benchmark):
    module = load_benchmark("phase_probe")
    args = argparse.Namespace(out=str(tmp_path), size="quick", seeds="0", epochs="0,2", max_epochs=2)
    df = module.run(args)
    assert list(df["disentangle_epochs"]) == [0, 2]
    assert df["chance"].tolist() == [1 / 3, 1 / 3]
    assert df["cell_state_floor"].nunique() == 1
    assert np.isnan(df.loc[0, "term_first"])
    assert np.isfinite(df.loc[1, "term_last"])
    assert df["probe_test"].between(0, 1).all()
    assert df["test_pearson_protein"].between(-1, 1).all()
    assert np.isnan(df.loc[0, "state_weight"])  # no phase
    assert df.loc[1, "state_weight"] == 10.0  # the default preset's cell-state term
    assert df[["celltype_knn", "pca_knn"]].stack().between(0, 1).all()
    assert df[["celltype_asw", "pca_asw"]].stack().between(0, 1).all()
    assert df["pca_knn"].nunique() == 1  # one PCA per seed
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "phase_probe.csv"), df, check_dtype=False)


def test_phase_probe_state_weight(tmp_path, load_benchmark):
    module = load_benchmark("phase_probe")
    args = argparse.Namespace(out=str(tmp_path), size="quick", seeds="0", epochs="2", max_epochs=2, state_weight=0.0)
    df = module.run(args)
    assert df.loc[0, "state_weight"] == 0.0
    assert df.loc[0, "state_fit"] == "ratio"  # the default fit


def test_phase_probe_state_fit(tmp_path, load_benchmark):
    module = load_benchmark("phase_probe")
    args = argparse.Namespace(
        out=str(tmp_path), size="quick", seeds="0", epochs="0,2", max_epochs=2, state_fit="interval"
    )
    df = module.run(args)
    assert pd.isna(df.loc[0, "state_fit"])  # no phase (None on pandas 2, NaN in pandas 3's str dtype)
    assert df.loc[1, "state_fit"] == "interval"
    assert df.loc[1, "state_weight"] == 10.0  # the preset's weight stays


def test_phase_probe_asw_is_the_rescaled_silhouette(load_benchmark):
    """The script's ASW is scib-metrics' ``silhouette_label`` definition, (mean silhouette + 1) / 2, by hand here."""
    from scipy.spatial.distance import cdist

    module = load_benchmark("phase_probe")
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 30)
    x = rng.normal(size=(90, 4)) + 2.0 * (labels[:, None] == np.array(["a", "b", "c", "a"])[None, :])
    d = cdist(x, x)
    s = []
    for i in range(len(x)):
        same = (labels == labels[i]) & (np.arange(len(x)) != i)
        a = d[i, same].mean()
        b = min(d[i, labels == other].mean() for other in set(labels) - {labels[i]})
        s.append((b - a) / max(a, b))
    knn, asw = module._cell_state_scores(x, labels)
    assert asw == pytest.approx((np.mean(s) + 1) / 2, abs=1e-10)
    assert 0.5 < asw < 1  # separated clusters
    assert 0.8 < knn <= 1
