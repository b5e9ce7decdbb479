"""Calibrated uncertainty of predicted proteins: coverage, determinism, widening, persistence, errors."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet, ProteinUncertainty
from crossmodalnet.model._uncertainty import conformal_quantile

TRAIN = {"max_epochs": 15, "batch_size": 64, "accelerator": "cpu", "enable_progress_bar": False}


def _observed(mdata, cells) -> np.ndarray:
    X = mdata["prot"][cells].X
    return (X.toarray() if sparse.issparse(X) else np.asarray(X)).astype(float)


@pytest.fixture(scope="module")
def unc_model(norm_mdata):
    """A model with 50 validation cells (for calibration) and 50 test cells."""
    import scvi

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=16)
    model.train(train_size=0.5, validation_size=0.25, **TRAIN)
    return model


def _holdout_model(n_time_points: int, holdout: int):
    """A model trained without one time point (strong time effect), which is predicted by interpolation."""
    import scvi

    scvi.settings.seed = 0
    mdata = cmn.datasets.synthetic_cite(
        n_obs=80 * n_time_points, n_genes=60, n_proteins=8, n_time_points=n_time_points, time_effect=3.0, rng=1
    )
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=16)
    times = np.sort(mdata.obs["time"].unique())
    model.train(split="holdout_time", holdout_time=times[holdout], train_size=0.6, validation_size=0.3, **TRAIN)
    return model


@pytest.fixture(scope="module")
def holdout_model():
    """Days 2, 3, 4 with day 3 held out: two trained time points, no interior one to leave out."""
    return _holdout_model(3, 1)


@pytest.fixture(scope="module")
def holdout4_model():
    """Days 2, 3, 4, 5 with day 4 held out: day 3 is an interior trained time point."""
    return _holdout_model(4, 2)


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 20, dtype=float)  # 19 scores: rank ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.9) == 18.0
    assert conformal_quantile(scores, 0.5) == 10.0
    assert conformal_quantile(np.arange(5.0), 0.9) == np.inf  # too few values for 90%


def test_returns_mean_std_and_interval(unc_model):
    res = unc_model.predict_protein(return_uncertainty=True)
    assert isinstance(res, ProteinUncertainty)
    plain = unc_model.predict_protein()
    pd.testing.assert_frame_equal(res.mean, plain)
    for frame in (res.std, res.lower, res.upper):
        assert frame.shape == plain.shape
        assert frame.index.equals(plain.index)
        assert frame.columns.equals(plain.columns)
    assert (res.std.to_numpy() > 0).all()
    assert res.level == 0.9
    # 50 calibration cells: fewer than 100, so one pooled multiplier
    assert res.calibration == "pooled"
    assert res.multiplier.nunique() == 1
    k = res.multiplier.to_numpy()
    np.testing.assert_allclose(res.upper.to_numpy() - res.mean.to_numpy(), k * res.std.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(res.mean.to_numpy() - res.lower.to_numpy(), k * res.std.to_numpy(), rtol=1e-5)
    assert unc_model.uncertainty_["n_cells"] == 50
    assert unc_model.uncertainty_["scores"].shape == (50, unc_model.n_proteins)


def test_coverage_on_test_cells_is_close_to_nominal(unc_model):
    mdata = unc_model.adata
    cells = mdata.obs_names[np.sort(unc_model.test_indices)]
    y = _observed(mdata, cells)
    for level in (0.5, 0.9):
        res = unc_model.predict_protein(return_uncertainty=True, level=level)
        inside = (y >= res.lower.loc[cells].to_numpy()) & (y <= res.upper.loc[cells].to_numpy())
        # 50 test cells × 8 proteins; split conformal targets `level` (plus at most 1/51)
        assert level - 0.1 <= inside.mean() <= level + 0.08, (level, inside.mean())
    wide = unc_model.predict_protein(return_uncertainty=True, level=0.95)
    narrow = unc_model.predict_protein(return_uncertainty=True, level=0.5)
    assert (wide.upper.to_numpy() - wide.lower.to_numpy() > narrow.upper.to_numpy() - narrow.lower.to_numpy()).all()


def test_level_term_follows_training_residuals_at_the_predicted_value(unc_model):
    """A value's level spread is the RMS residual of the training cells with the nearest prediction of that protein."""
    unc_model.calibrate_uncertainty()
    state = dict(unc_model.uncertainty_)
    ref_pred = np.asarray(state["reference_prediction"], dtype=float)
    assert ref_pred.shape == (len(unc_model.train_indices), unc_model.n_proteins)
    train = unc_model.adata[np.asarray(unc_model._reference_cells(state["seed"]))].copy()
    np.testing.assert_allclose(unc_model.predict_protein(train).to_numpy(), ref_pred, rtol=1e-5, atol=1e-5)
    # plant residuals: large where the training prediction of a protein is above that protein's median
    high = ref_pred > np.median(ref_pred, axis=0)
    state["reference_residual_sq"] = np.where(high, 4.0, 0.01)
    lo, hi = ref_pred.min(axis=0), ref_pred.max(axis=0)
    query = np.vstack([lo, hi, (lo + hi) / 2, np.full(unc_model.n_proteins, np.nan)])
    level = unc_model._level_spread(query, state)
    np.testing.assert_allclose(level[0], 0.1)  # the 20 lowest predictions: all small residuals
    np.testing.assert_allclose(level[1], 2.0)  # the 20 highest: all large
    assert np.isnan(level[3]).all()
    # the calibrated spread of the model's own cells follows the same term
    cells = unc_model.adata.obs_names[np.sort(unc_model.test_indices)]
    res = unc_model.predict_protein(unc_model.adata[cells].copy(), return_uncertainty=True)
    local = unc_model._local_spread(unc_model.adata[cells].copy(), unc_model.uncertainty_, batch_size=1024)
    rho = [np.corrcoef(res.std.to_numpy()[:, j], local[:, j])[0, 1] for j in range(unc_model.n_proteins)]
    assert np.nanmean(rho) > 0.9


def test_spread_scale_is_pooled_below_100_calibration_cells(unc_model):
    """50 calibration cells: one spread scale for all proteins, the RMS of all scaled validation errors."""
    unc_model.calibrate_uncertainty()
    state = unc_model.uncertainty_
    scale, scores = np.asarray(state["scale"]), np.asarray(state["scores"], dtype=float)
    assert state["n_cells"] < 100
    assert scale.shape == (unc_model.n_proteins,)
    assert np.ptp(scale) == 0
    assert scale[0] > 0
    # scores are |error| / (scale · spread): pooled over proteins their RMS is 1, per protein it varies
    np.testing.assert_allclose(np.sqrt(np.mean(scores**2)), 1.0, rtol=1e-4)
    assert np.ptp(np.sqrt(np.mean(scores**2, axis=0))) > 0.05


def test_deterministic_for_a_seed(unc_model):
    a = unc_model.predict_protein(return_uncertainty=True, rng=3)
    b = unc_model.predict_protein(return_uncertainty=True, rng=3)
    c = unc_model.predict_protein(return_uncertainty=True, rng=4)
    pd.testing.assert_frame_equal(a.std, b.std)
    pd.testing.assert_frame_equal(a.lower, b.lower)
    assert not np.allclose(a.std.to_numpy(), c.std.to_numpy())


def test_same_seed_same_calibration(norm_mdata, unc_model):
    import scvi

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    other = CrossmodalNet(mdata, n_latent=16)
    other.train(train_size=0.5, validation_size=0.25, **TRAIN)
    a = unc_model.predict_protein(return_uncertainty=True)
    b = other.predict_protein(return_uncertainty=True)
    np.testing.assert_array_equal(a.upper.to_numpy(), b.upper.to_numpy())


def test_missing_genes_widen_intervals(unc_model):
    mdata = unc_model.adata
    cells = mdata.obs_names[np.sort(unc_model.test_indices)]
    full = cmn.pp.to_mudata(mdata["rna"][cells].copy())
    full.obs["time"] = mdata.obs.loc[cells, "time"].to_numpy()
    # half of the genes are missing, among them every planted driver of a protein
    drivers = {str(g) for genes in mdata.uns["cmn_synthetic"]["driver_genes"].values() for g in genes}
    genes = pd.Index(unc_model.gene_names)
    others = np.random.default_rng(0).permutation(np.flatnonzero(~genes.isin(drivers)))
    keep = others[: unc_model.n_genes // 2]
    assert not genes[keep].isin(drivers).any()
    half = cmn.pp.to_mudata(mdata["rna"][cells][:, np.sort(keep)].copy())
    half.obs["time"] = full.obs["time"].to_numpy()
    cmn.tl.predict_protein(full, unc_model, uncertainty=True)
    with pytest.warns(UserWarning, match="filled with zeros"):
        cmn.tl.predict_protein(half, unc_model, uncertainty=True, min_coverage=0.4)
    assert half.uns["cmn_protein"]["uncertainty"]["n_missing_genes"] == unc_model.n_genes - keep.size
    assert full.uns["cmn_protein"]["uncertainty"]["n_missing_genes"] == 0
    ratio = half.obsm["cmn_protein_std"].to_numpy() / full.obsm["cmn_protein_std"].to_numpy()
    assert np.median(ratio) > 1.08, np.median(ratio)
    # without the imputation term the spreads are of the same size: the widening comes from it
    bare = unc_model.predict_protein(_aligned(half, unc_model), return_uncertainty=True)
    assert np.median(half.obsm["cmn_protein_std"].to_numpy() / bare.std.to_numpy()) > 1.08


def _query(model, rna, cells, missing):
    """An RNA-only query of ``cells`` with the ``missing`` genes zeroed (not measured) and the model's time column."""
    adata = rna[cells].copy()
    X = adata.X.toarray() if sparse.issparse(adata.X) else np.array(adata.X)
    X[:, adata.var_names.get_indexer(missing)] = 0.0
    adata.X = sparse.csr_matrix(X)
    query = cmn.pp.to_mudata(adata)
    query.obs["time"] = model.adata.obs.loc[cells, "time"].to_numpy()
    return query


def test_raw_count_query_with_missing_genes(unc_model, raw_mdata, caplog):
    """A raw-count query with missing genes is normalised as the training RNA was, and says so once per call."""
    cells = unc_model.adata.obs_names[np.sort(unc_model.test_indices)]
    missing = [str(g) for g in unc_model.gene_names[::6]]
    raw = _query(unc_model, raw_mdata["rna"], cells, missing)
    normalised = cmn.pp.log_normalize(raw, target_sum=unc_model.rna_normalization["target_sum"], copy=True)
    expected = unc_model.predict_protein(normalised, return_uncertainty=True, missing_genes=missing, rng=1)
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="crossmodalnet"):
            got = unc_model.predict_protein(raw, return_uncertainty=True, missing_genes=missing, rng=1)
        n_lines = sum("looks like raw counts" in r.getMessage() for r in caplog.records)
        assert n_lines == 1, f"the raw-count line was logged {n_lines} times in one call"
    for name in ("mean", "std", "lower", "upper"):
        np.testing.assert_allclose(
            getattr(got, name).to_numpy(), getattr(expected, name).to_numpy(), rtol=1e-4, atol=1e-5
        )
    # the normalised query is not announced
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="crossmodalnet"):
        unc_model.predict_protein(normalised, return_uncertainty=True, missing_genes=missing, rng=1)
    assert "raw counts" not in caplog.text


def test_missing_gene_imputation_reads_the_query_in_batches(unc_model, raw_mdata, monkeypatch):
    """The imputation term reads at most ``batch_size`` query rows at a time, as the prediction passes do."""
    cells = unc_model.adata.obs_names[np.sort(unc_model.test_indices)]
    missing = [str(g) for g in unc_model.gene_names[::6]]
    query = _query(unc_model, raw_mdata["rna"], cells, missing)
    reads = []

    class Spy:
        def __init__(self, X):
            self.X, self.shape = X, X.shape

        def __getitem__(self, rows):
            block = self.X[rows]
            reads.append(block.shape[0])
            return block

    rna_rows = type(unc_model)._rna_rows

    def spied(self, mdata):
        X, rows = rna_rows(self, mdata)
        return (Spy(X) if mdata is query else X), rows

    monkeypatch.setattr(type(unc_model), "_rna_rows", spied)
    res = unc_model.predict_protein(query, return_uncertainty=True, missing_genes=missing, batch_size=16)
    assert np.isfinite(res.std.to_numpy()).all()
    assert reads
    assert max(reads) <= 16, max(reads)


def test_missing_gene_spread_widens_the_proteins_that_depend_on_them(unc_model):
    """The imputation term widens the values that depend on the missing genes, not all values alike.

    The planted drivers of one protein are missing. Against the same query without ``missing_genes``,
    the spread of that protein widens by far more than the spread of the proteins whose drivers were
    measured; without the imputation term only the pooled recalibration would change it, by one
    factor for every protein.
    """
    mdata = unc_model.adata
    drivers = mdata.uns["cmn_synthetic"]["driver_genes"]
    protein = "prot_000"
    missing = [str(g) for g in drivers[protein]]
    cells = mdata.obs_names[np.sort(unc_model.test_indices)]
    query = _query(unc_model, mdata["rna"], cells, missing)
    bare = unc_model.predict_protein(query, return_uncertainty=True)
    res = unc_model.predict_protein(query, return_uncertainty=True, missing_genes=missing)
    pd.testing.assert_frame_equal(res.mean, bare.mean)
    widening = np.median(res.std.to_numpy() / bare.std.to_numpy(), axis=0)
    j = list(unc_model.protein_names).index(protein)
    others = np.delete(widening, j)
    assert widening[j] > others.max(), widening
    assert widening[j] > 1.3 * np.median(others), widening


def _aligned(query, model):
    """``query`` with the model's genes, missing ones as zeros."""
    import anndata as ad

    X = np.zeros((query.n_obs, model.n_genes), dtype=np.float32)
    idx = pd.Index(query["rna"].var_names).get_indexer(model.gene_names)
    rna = query["rna"].X
    rna = rna.toarray() if sparse.issparse(rna) else np.asarray(rna)
    X[:, idx >= 0] = rna[:, idx[idx >= 0]]
    out = cmn.pp.to_mudata(ad.AnnData(X, obs=query["rna"].obs.copy(), var=pd.DataFrame(index=model.gene_names)))
    out.obs["time"] = query.obs["time"].to_numpy()
    return out


def _without_time_term(model):
    """``model`` with the time term switched off (restored on exit)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        state = model.uncertainty_
        model.uncertainty_ = {**state, "time_scale": 0.0}
        try:
            yield
        finally:
            model.uncertainty_ = state

    return ctx()


def test_interpolated_time_widens_intervals(holdout4_model):
    model = holdout4_model
    mdata = model.adata
    test = np.sort(model.test_indices)
    assert mdata.obs["time"].iloc[test].nunique() == 1  # the held-out time point
    query = mdata[test].copy()
    interpolated = model.predict_protein(query, return_uncertainty=True)
    scale = model.uncertainty_["time_scale"]
    assert model.uncertainty_["time_scale_method"] == "leave-one-time-point-out"
    assert scale > 0
    trained_time = model.time_categories[model._trained_codes()[0]]
    at_trained = model.predict_protein(query, time=trained_time, return_uncertainty=True)
    ratio = interpolated.std.to_numpy() / at_trained.std.to_numpy()
    assert np.median(ratio) > 1.0, np.median(ratio)
    # the spread between the neighbouring time points' predictions: positive at the interpolated time only
    extra = model._time_variance(query, interpolated.mean.to_numpy(float), time=None, allow_extrapolation=False)
    assert (extra > 0).all()
    same = model._time_variance(query, at_trained.mean.to_numpy(float), time=trained_time, allow_extrapolation=False)
    assert (same == 0).all()
    # the variance added at the interpolated time point is the left-out time points' scale times that spread
    with _without_time_term(model):
        without = model.predict_protein(query, return_uncertainty=True)
    added = interpolated.std.to_numpy(float) ** 2 - without.std.to_numpy(float) ** 2
    np.testing.assert_allclose(added, scale * extra, rtol=1e-3, atol=1e-6)
    y = _observed(mdata, query.obs_names)
    inside = (y >= interpolated.lower.to_numpy()) & (y <= interpolated.upper.to_numpy())
    assert inside.mean() > 0.75


def test_time_scale_is_the_excess_error_of_the_left_out_interior_time_point(holdout4_model):
    model = holdout4_model
    state = model.uncertainty_
    mdata = model.adata
    times = np.sort(mdata.obs["time"].unique())
    interior = model._time_code(times[1])  # days 2, 3, 5 trained: day 3 is the only interior one
    np.testing.assert_array_equal(model._interior_time_codes()[0], [interior])
    reference = model._reference_cells(int(state["seed"]))
    cells = np.union1d(state["calibration_indices"], reference)
    cells = cells[mdata.obs["time"].to_numpy()[cells] == times[1]]
    assert state["time_scale_cells"] == cells.size > 0
    sub = mdata[cells].copy()
    y = _observed(mdata, sub.obs_names)
    own = model.predict_protein(sub).to_numpy(float)
    trained = model.trained_time_codes_.copy()
    with model._without_time_point(interior):
        assert interior not in model._trained_codes()
        interpolated = model.predict_protein(sub).to_numpy(float)
        term = model._time_variance(sub, interpolated, time=None, allow_extrapolation=False)
    np.testing.assert_array_equal(model.trained_time_codes_, trained)
    assert not np.allclose(interpolated, own)
    assert (term > 0).all()
    excess = np.mean((y - interpolated) ** 2 - (y - own) ** 2)
    assert state["time_scale"] == pytest.approx(max(excess, 0.0) / term.mean(), rel=1e-4)


def test_time_scale_follows_the_interpolation_errors(holdout4_model):
    """Observed values at the interior time point equal to the interpolated predictions: no excess, no time term."""
    model = holdout4_model
    state = model.uncertainty_
    mdata = model.adata.copy()
    times = np.sort(mdata.obs["time"].unique())
    at_interior = np.flatnonzero(mdata.obs["time"].to_numpy() == times[1])
    sub = mdata[at_interior].copy()
    with model._without_time_point(model._time_code(times[1])):
        interpolated = model.predict_protein(sub).to_numpy(np.float32)
    X = np.asarray(mdata["prot"].X.toarray() if sparse.issparse(mdata["prot"].X) else mdata["prot"].X).copy()
    X[mdata["prot"].obs_names.get_indexer(sub.obs_names)] = interpolated
    try:
        model.adata.mod["prot"].X = X
        model.calibrate_uncertainty()
        assert model.uncertainty_["time_scale"] == 0.0
        assert model.uncertainty_["time_scale_cells"] == state["time_scale_cells"]
    finally:
        model.adata.mod["prot"].X = mdata["prot"].X
        model.uncertainty_ = state


def test_two_trained_time_points_add_no_time_term(holdout_model):
    model = holdout_model
    model.calibrate_uncertainty()
    state = model.uncertainty_
    assert model._interior_time_codes()[0].size == 0
    assert state["time_scale"] == 0.0
    assert state["time_scale_cells"] == 0
    assert "2 trained time point(s)" in state["time_scale_method"]
    query = model.adata[np.sort(model.test_indices)].copy()
    res = model.predict_protein(query, return_uncertainty=True)
    extra = model._time_variance(query, res.mean.to_numpy(float), time=None, allow_extrapolation=False)
    assert (extra > 0).all()  # the neighbours disagree, but nothing calibrates how much that costs
    try:
        model.uncertainty_ = {**state, "time_scale": 1.0}
        wider = model.predict_protein(query, return_uncertainty=True)
    finally:
        model.uncertainty_ = state
    assert (wider.std.to_numpy() > res.std.to_numpy()).all()


def test_time_scale_is_deterministic_and_saved(holdout4_model, tmp_path):
    model = holdout4_model
    state = model.uncertainty_
    model.calibrate_uncertainty(rng=0)
    first = model.uncertainty_["time_scale"]
    model.calibrate_uncertainty(rng=0)
    assert model.uncertainty_["time_scale"] == first
    query = model.adata[np.sort(model.test_indices)].copy()
    before = model.predict_protein(query, return_uncertainty=True)
    model.save(tmp_path / "m", overwrite=True)
    loaded = CrossmodalNet.load(tmp_path / "m")
    assert loaded.uncertainty_["time_scale"] == first
    assert loaded.uncertainty_["time_scale_method"] == model.uncertainty_["time_scale_method"]
    after = loaded.predict_protein(query, return_uncertainty=True)
    pd.testing.assert_frame_equal(before.std, after.std)
    pd.testing.assert_frame_equal(before.lower, after.lower)
    model.uncertainty_ = state


def test_save_load_gives_identical_intervals(unc_model, tmp_path):
    before = unc_model.predict_protein(return_uncertainty=True)
    unc_model.save(tmp_path / "m", overwrite=True)
    loaded = CrossmodalNet.load(tmp_path / "m")  # without data: calibration comes from the file
    after = loaded.predict_protein(unc_model.adata, return_uncertainty=True)
    pd.testing.assert_frame_equal(before.std, after.std)
    pd.testing.assert_frame_equal(before.upper, after.upper)
    assert loaded.uncertainty_["gene_quantiles"].shape[1] == unc_model.n_genes


def test_uncalibrated_model_without_data_raises(unc_model, tmp_path):
    state = unc_model.uncertainty_
    try:
        unc_model.uncertainty_ = None
        unc_model.save(tmp_path / "u", overwrite=True)
    finally:
        unc_model.uncertainty_ = state
    loaded = CrossmodalNet.load(tmp_path / "u")
    with pytest.raises(ValueError, match="not calibrated"):
        loaded.predict_protein(unc_model.adata, return_uncertainty=True)
    # calibrating on explicit held-out cells works without the training data
    loaded.calibrate_uncertainty(unc_model.adata, indices=unc_model.validation_indices)
    assert loaded.uncertainty_["gene_quantiles"].shape[0] == 0
    loaded.predict_protein(unc_model.adata, return_uncertainty=True)
    with pytest.raises(ValueError, match="gene values to impute"):
        loaded.predict_protein(unc_model.adata, return_uncertainty=True, missing_genes=[unc_model.gene_names[0]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"level": 1.5}, ValueError, "`level`"),
        ({"level": 0}, ValueError, "`level`"),
        ({"calibration": "cells"}, ValueError, "`calibration`"),
        ({"n_imputations": 0}, ValueError, "`n_imputations`"),
        ({"missing_genes": ["not_a_gene"]}, KeyError, "does not use"),
        ({"missing_genes": "gene_0"}, TypeError, "sequence"),
        ({"calibration": "protein", "level": 0.99}, ValueError, "too few"),
    ],
)
def test_bad_arguments(unc_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        unc_model.predict_protein(return_uncertainty=True, **kwargs)


def test_calibrate_bad_arguments(unc_model):
    state = unc_model.uncertainty_
    with pytest.raises(ValueError, match="`n_samples`"):
        unc_model.calibrate_uncertainty(n_samples=1)
    with pytest.raises(ValueError, match="at least 5"):
        unc_model.calibrate_uncertainty(unc_model.adata, indices=[0, 1, 2])
    query = cmn.pp.to_mudata(unc_model.adata["rna"].copy())
    with pytest.raises(KeyError, match="prot"):
        unc_model.calibrate_uncertainty(query)
    assert unc_model.uncertainty_ is state


def test_no_validation_cells_raises(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, validation_size=0.0, accelerator="cpu", enable_progress_bar=False)
    with pytest.raises(ValueError, match="no validation cells"):
        model.predict_protein(return_uncertainty=True)


def test_calibration_with_gene_named_proteins_raises_no_join_warning(norm_mdata):
    """Issue 26 item 7: ADT names equal to gene symbols (CD4, CD14) give no `Cannot join columns` warnings."""
    import mudata as md

    rna, prot = norm_mdata["rna"].copy(), norm_mdata["prot"].copy()
    rna.var_names = ["CD4", "CD14", *rna.var_names[2:]]
    prot.var_names = ["CD4", "CD14", *prot.var_names[2:]]
    mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["time"] = norm_mdata.obs["time"].to_numpy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=8)
    model.train(**{**TRAIN, "max_epochs": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unc = model.predict_protein(return_uncertainty=True)
    assert not [str(w.message) for w in caught if "Cannot join columns" in str(w.message)]
    assert unc.std.shape == (mdata.n_obs, 8)
    assert np.isfinite(unc.std.to_numpy()).all()
    assert model.uncertainty_["n_cells"] == len(model.validation_indices_)
    np.testing.assert_array_equal(
        np.sort(model.uncertainty_["calibration_indices"]), np.sort(model.validation_indices_)
    )
