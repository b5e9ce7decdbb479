from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn


def _adata(n: int = 300, *, shift: float, n_dims: int = 8, proportions=(1 / 3, 1 / 3, 1 / 3), seed: int = 0):
    """Cells with a 3-level covariate; the embedding's first dimension is shifted by ``shift`` per level."""
    rng = np.random.default_rng(seed)
    levels = rng.choice(len(proportions), size=n, p=proportions)
    x = rng.normal(size=(n, n_dims)).astype(np.float32)
    x[:, 0] += shift * levels
    adata = ad.AnnData(np.zeros((n, 1), dtype=np.float32))
    adata.obs["time"] = pd.Categorical([f"day{v}" for v in levels])
    adata.obsm["X_emb"] = x
    return adata


def test_probe_reads_a_planted_covariate():
    adata = _adata(shift=6.0)
    cmn.tl.covariate_probe(adata, key="time", obsm_key="X_emb", n_permutations=5)
    res = adata.uns["cmn_probe_time"]
    assert res["balanced_accuracy"] > 0.95
    assert res["chance"] == pytest.approx(1 / 3)
    assert len(res["per_fold"]) == 5
    assert res["balanced_accuracy"] == pytest.approx(np.mean(res["per_fold"]))
    assert list(res["categories"]) == ["day0", "day1", "day2"]
    assert res["counts"].sum() == 300
    assert res["confusion"].shape == (3, 3)
    assert res["confusion"].sum() == 300
    assert np.trace(res["confusion"]) > 0.95 * 300
    assert abs(res["permutation_mean"] - 1 / 3) < 0.08
    assert res["permutation_pvalue"] == pytest.approx(1 / 6)
    assert res["params"]["obsm_key"] == "X_emb"
    assert res["params"]["n_splits"] == 5


def test_probe_is_near_chance_without_the_covariate():
    adata = _adata(shift=0.0, n_dims=64)
    cmn.tl.covariate_probe(adata, key="time", obsm_key="X_emb", n_permutations=5)
    res = adata.uns["cmn_probe_time"]
    assert abs(res["balanced_accuracy"] - res["chance"]) < 0.08
    assert res["permutation_pvalue"] > 1 / 6


def test_probe_balanced_accuracy_ignores_category_sizes():
    """With 80% of the cells in one category, a covariate-free embedding scores chance (0.5), not 0.8."""
    rng = np.random.default_rng(1)
    n = 400
    adata = ad.AnnData(np.zeros((n, 1), dtype=np.float32))
    adata.obs["batch"] = np.where(rng.random(n) < 0.8, "a", "b")
    adata.obsm["X_emb"] = rng.normal(size=(n, 4))
    cmn.tl.covariate_probe(adata, key="batch", obsm_key="X_emb", key_added="probe")
    res = adata.uns["probe"]
    assert res["majority"] == pytest.approx((adata.obs["batch"] == "a").mean())
    assert res["chance"] == 0.5
    assert abs(res["balanced_accuracy"] - 0.5) < 0.08


def test_probe_graded_signal_and_determinism():
    weak, strong = _adata(shift=0.5), _adata(shift=2.0)
    for adata in (weak, strong):
        cmn.tl.covariate_probe(adata, key="time", obsm_key="X_emb", seed=3)
    assert weak.uns["cmn_probe_time"]["balanced_accuracy"] < strong.uns["cmn_probe_time"]["balanced_accuracy"]
    again = _adata(shift=0.5)
    cmn.tl.covariate_probe(again, key="time", obsm_key="X_emb", seed=3)
    np.testing.assert_array_equal(again.uns["cmn_probe_time"]["per_fold"], weak.uns["cmn_probe_time"]["per_fold"])


def test_probe_on_mudata_basal_embedding_copy(mdata, trained_model, assert_unchanged):
    cmn.tl.basal_embedding(mdata, trained_model)
    before = mdata.copy()
    out = cmn.tl.covariate_probe(mdata, key="batch", copy=True, n_comps=None)
    assert_unchanged(before, mdata)
    assert "cmn_probe_batch" not in mdata.uns
    res = out.uns["cmn_probe_batch"]
    assert res["chance"] == 0.5
    assert 0.0 <= res["balanced_accuracy"] <= 1.0
    assert res["params"]["obsm_key"] == "X_cmn_basal"


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"key": "missing"}, KeyError, "not a column of `.obs`"),
        (None, {"obsm_key": "X_missing"}, KeyError, "basal_embedding"),
        (None, {"n_splits": 1}, ValueError, "n_splits"),
        (None, {"n_comps": 0}, ValueError, "n_comps"),
        (None, {"c": 0.0}, ValueError, "`c`"),
        (None, {"n_permutations": -1}, ValueError, "n_permutations"),
        ("single", {}, ValueError, "single category"),
        ("small", {}, ValueError, "at least `n_splits`=5 cells"),
        ("nan_label", {}, ValueError, "missing values"),
        ("nan_row", {}, ValueError, "NaN or infinite"),
    ],
)
def test_probe_rejects_bad_input(change, kwargs, error, match):
    adata = _adata(n=60, shift=1.0)
    if change == "single":
        adata.obs["time"] = "day0"
    elif change == "small":
        adata.obs["time"] = ["rare"] * 3 + ["common"] * 57
    elif change == "nan_label":
        adata.obs["time"] = adata.obs["time"].astype(object)
        adata.obs.iloc[0, adata.obs.columns.get_loc("time")] = np.nan
    elif change == "nan_row":
        adata.obsm["X_emb"][2] = np.nan
    before = adata.copy()
    with pytest.raises(error, match=match):
        cmn.tl.covariate_probe(adata, **{"key": "time", "obsm_key": "X_emb", **kwargs})
    assert set(adata.uns) == set(before.uns)
    assert adata.obs.equals(before.obs)
