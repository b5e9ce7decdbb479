from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn
from crossmodalnet._metrics import pearson_per_protein


def test_predict_protein_writes(mdata, trained_model):
    assert cmn.tl.predict_protein(mdata, trained_model) is None
    pred = mdata.obsm["cmn_protein"]
    assert isinstance(pred, pd.DataFrame)
    assert pred.shape == (200, 8)
    assert list(pred.index) == list(mdata.obs_names)
    assert list(pred.columns) == list(trained_model.protein_names)
    np.testing.assert_allclose(pred.to_numpy(), trained_model.predict_protein(mdata).to_numpy(), rtol=1e-6)

    meta = mdata.uns["cmn_protein"]
    assert set(meta) >= {"params", "model", "protein_names", "coverage", "metrics"}
    assert meta["params"]["key_added"] == "cmn_protein"
    assert meta["params"]["trained_here"] is False
    assert "time" not in meta["params"]  # None is omitted, never stored
    assert meta["model"]["class"] == "CrossmodalNet"
    assert meta["model"]["n_latent"] == 16
    assert meta["model"]["time_key"] == "time"
    assert "batch_key" not in meta["model"]
    assert list(meta["protein_names"]) == list(pred.columns)
    assert meta["coverage"] == 1.0

    m = meta["metrics"]
    # a copy of the model's training data: its training and validation cells are left out by name
    test = np.sort(np.asarray(trained_model.test_indices))
    assert m["cells"] == "test"
    assert m["n_cells"] == test.size
    assert m["n_excluded_training_cells"] == 200 - test.size
    assert sorted(m["cell_names"]) == sorted(mdata.obs_names[test])
    for name in ("pearson_protein", "pearson_cell", "spearman_protein", "spearman_cell", "mse"):
        assert np.isfinite(m[name]), name
    for name in ("pearson", "spearman", "mse"):
        assert m["per_protein"][name].shape == (8,)
    observed = mdata["prot"].X[test]
    got = pred.to_numpy()[test]
    np.testing.assert_allclose(m["per_protein"]["pearson"], pearson_per_protein(got, observed), rtol=1e-6)
    np.testing.assert_allclose(m["mse"], ((got - observed) ** 2).mean(), rtol=1e-6)


def test_predict_protein_copy_and_key(mdata, trained_model, assert_unchanged):
    before = mdata.copy()
    out = cmn.tl.predict_protein(mdata, trained_model, key_added="pred", copy=True)
    assert_unchanged(before, mdata)
    assert "pred" in out.obsm
    assert "pred" in out.uns
    assert "cmn_protein" not in out.obsm


def test_predict_protein_time_override(mdata, trained_model):
    cmn.tl.predict_protein(mdata, trained_model, time=3.5)
    assert mdata.uns["cmn_protein"]["params"]["time"] == 3.5
    expected = trained_model.predict_protein(mdata, time=3.5)
    np.testing.assert_allclose(mdata.obsm["cmn_protein"].to_numpy(), expected.to_numpy(), rtol=1e-6)
    # prediction-space interpolation is passed through and recorded
    cmn.tl.predict_protein(mdata, trained_model, time=3.5, interpolation="prediction", key_added="pred_interp")
    assert mdata.uns["pred_interp"]["params"]["interpolation"] == "prediction"
    blended = trained_model.predict_protein(mdata, time=3.5, interpolation="prediction")
    np.testing.assert_allclose(mdata.obsm["pred_interp"].to_numpy(), blended.to_numpy(), rtol=1e-6)
    assert not np.allclose(blended.to_numpy(), expected.to_numpy())


def test_predict_protein_rna_only_query(norm_mdata, trained_model):
    """Impute into an RNA-only AnnData whose genes are a shuffled, partly missing subset of the model's."""
    rng = np.random.default_rng(1)
    genes = rng.permutation(norm_mdata["rna"].var_names)[:48]
    adata = norm_mdata["rna"][:, genes].copy()
    del adata.obs["time"]
    query = cmn.pp.to_mudata(adata)
    with pytest.raises(KeyError, match="time"):
        cmn.tl.predict_protein(query, trained_model)
    assert "cmn_protein" not in query.obsm
    with pytest.warns(UserWarning, match="12 of the model's 60 genes are missing"):
        cmn.tl.predict_protein(query, trained_model, time=3)
    pred = query.obsm["cmn_protein"]
    assert pred.shape == (200, 8)
    assert np.isfinite(pred.to_numpy()).all()
    meta = query.uns["cmn_protein"]
    assert meta["coverage"] == pytest.approx(0.8)
    assert meta["genes"]["n_filled"] == 12
    assert meta["genes"]["match_on"] == "var_names"
    assert "metrics" not in meta  # no observed proteins
    assert list(query["rna"].var_names) == list(genes)  # the user's RNA is not touched
    # the same as predicting from the explicitly harmonised matrix
    with pytest.warns(UserWarning, match="filled with zeros"):
        harmonised = cmn.pp.harmonize_genes(query, trained_model, copy=True)
    expected = trained_model.predict_protein(harmonised, time=3)
    np.testing.assert_allclose(pred.to_numpy(), expected.to_numpy(), rtol=1e-5)


def test_predict_protein_min_coverage(norm_mdata, trained_model):
    adata = norm_mdata["rna"][:, :20].copy()
    query = cmn.pp.to_mudata(adata)
    with pytest.raises(ValueError, match=r"only 20 of the model's 60 genes \(33.3%\)"):
        cmn.tl.predict_protein(query, trained_model)
    assert "cmn_protein" not in query.obsm
    assert "cmn_protein" not in query.uns


def test_predict_protein_cells_without_rna(norm_mdata, trained_model):
    rna = norm_mdata["rna"][:150].copy()
    prot = norm_mdata["prot"].copy()
    mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["time"] = norm_mdata.obs["time"].reindex(mdata.obs_names)
    cmn.tl.predict_protein(mdata, trained_model)
    pred = mdata.obsm["cmn_protein"]
    assert pred.shape == (200, 8)
    missing = ~mdata.obs_names.isin(rna.obs_names)
    assert pred[missing].isna().all().all()
    assert pred[~missing].notna().all().all()
    # cells with RNA, less the model's training and validation cells (same names as its training data)
    unseen = ~rna.obs_names.isin(trained_model.training_cells)
    assert mdata.uns["cmn_protein"]["metrics"]["n_cells"] == int(unseen.sum())


def test_predict_protein_trains_when_no_model(mdata, caplog):
    with caplog.at_level("INFO", logger="crossmodalnet"):
        out = cmn.tl.predict_protein(
            mdata,
            setup_kwargs={"time_key": "time"},
            model_kwargs={"n_latent": 8},
            train_kwargs={"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False},
            copy=True,
        )
    assert "no model given; trained" in caplog.text
    assert "added mdata.obsm['cmn_protein']" in caplog.text
    meta = out.uns["cmn_protein"]
    assert meta["params"]["trained_here"] is True
    assert meta["params"]["train_kwargs"]["max_epochs"] == 2
    assert meta["model"]["n_latent"] == 8
    assert meta["model"]["n_epochs"] == 2
    assert meta["metrics"]["cells"] == "test"  # scored on the held-out cells of its own training data
    assert out.obsm["cmn_protein"].shape == (200, 8)
    assert "cmn_protein" not in mdata.obsm


def test_predict_protein_errors(mdata, trained_model):
    with pytest.raises(TypeError, match="CrossmodalNet"):
        cmn.tl.predict_protein(mdata, object())
    with pytest.raises(KeyError, match="modality 'gex'"):
        cmn.tl.predict_protein(mdata, trained_model, rna_key="gex")
    rna_only = cmn.pp.to_mudata(mdata["rna"].copy())
    with pytest.raises(ValueError, match="Pass a trained model"):
        cmn.tl.predict_protein(rna_only)
    with pytest.raises(ValueError, match="key_added"):
        cmn.tl.predict_protein(mdata, trained_model, key_added="a/b")


def test_predict_protein_dense_query_with_other_genes(norm_mdata, trained_model):
    """A dense RNA-only query with shuffled, partly missing and extra genes is aligned like the sparse one."""
    rng = np.random.default_rng(2)
    genes = list(rng.permutation(norm_mdata["rna"].var_names)[:50])
    sparse_rna = norm_mdata["rna"][:, genes].copy()
    dense_rna = sparse_rna.copy()
    dense_rna.X = np.asarray(sparse_rna.X.toarray())
    extra = np.random.default_rng(3).random((dense_rna.n_obs, 2)).astype(np.float32)
    dense_rna = ad_concat_genes(dense_rna, extra, ["x1", "x2"])
    queries = {"dense": cmn.pp.to_mudata(dense_rna), "sparse": cmn.pp.to_mudata(sparse_rna)}
    for query in queries.values():
        with pytest.warns(UserWarning, match="10 of the model's 60 genes are missing"):
            cmn.tl.predict_protein(query, trained_model)
    assert isinstance(queries["dense"]["rna"].X, np.ndarray)  # the user's matrix is not touched
    dense, sparse = (q.obsm["cmn_protein"].to_numpy() for q in queries.values())
    np.testing.assert_allclose(dense, sparse, rtol=1e-5, atol=1e-6)
    # the same as the model's prediction with the 10 missing genes set to 0 in the registered data
    full = norm_mdata.copy()
    missing = ~full["rna"].var_names.isin(genes)
    X = full["rna"].X.toarray()
    X[:, missing] = 0
    full["rna"].X = X
    np.testing.assert_allclose(dense, trained_model.predict_protein(full).to_numpy(), rtol=1e-5, atol=1e-6)
    assert queries["dense"].uns["cmn_protein"]["genes"]["n_unused"] == 2


def ad_concat_genes(adata, values, names):
    """``adata`` with extra gene columns ``names`` holding ``values`` (dense)."""
    import anndata as ad

    extra = ad.AnnData(values, obs=adata.obs[[]], var=pd.DataFrame(index=names))
    out = ad.concat([adata, extra], axis=1, merge="first")
    out.obs = adata.obs.copy()
    return out


def test_predict_protein_query_with_missing_time_values(norm_mdata, trained_model):
    query = cmn.pp.to_mudata(norm_mdata["rna"].copy())
    query.obs["time"] = query.obs["time"].astype(float)
    query.obs.iloc[[3, 10], query.obs.columns.get_loc("time")] = np.nan
    obs, obsm, uns = query.obs.copy(), set(query.obsm), set(query.uns)
    with pytest.raises(ValueError, match=r"`mdata.obs\['time'\]` has missing values; pass `time=` or fill them"):
        cmn.tl.predict_protein(query, trained_model)
    pd.testing.assert_frame_equal(query.obs, obs)
    assert set(query.obsm) == obsm
    assert set(query.uns) == uns
    with pytest.raises(ValueError, match="has missing values"):
        trained_model.predict_protein(query)
    # a time point for every cell makes it well defined
    cmn.tl.predict_protein(query, trained_model, time=3)
    np.testing.assert_allclose(
        query.obsm["cmn_protein"].to_numpy(), trained_model.predict_protein(norm_mdata, time=3).to_numpy(), rtol=1e-5
    )


def test_predict_protein_duplicated_query_gene_raises(norm_mdata, trained_model):
    rna = norm_mdata["rna"][:, 5:].copy()  # other genes than the model's, so they are matched by name
    names = list(rna.var_names)
    names[3] = names[7]
    rna.var_names = names
    query = cmn.pp.to_mudata(rna)
    X = query["rna"].X.toarray()
    with pytest.raises(ValueError, match=r"cmn.tl.predict_protein: 1 of the model's genes appear more than once"):
        cmn.tl.predict_protein(query, trained_model, time=3)
    assert "cmn_protein" not in query.obsm
    assert "cmn_protein" not in query.uns
    assert list(query["rna"].var_names) == names
    np.testing.assert_array_equal(query["rna"].X.toarray(), X)


def test_metrics_leave_out_training_cells_of_a_model_loaded_without_data(mdata, trained_model, tmp_path):
    """Issue 14 item 3: a model loaded without data still scores only its test cells."""
    from crossmodalnet.model import CrossmodalNet

    trained_model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m")
    assert loaded.adata is None
    cmn.tl.predict_protein(mdata, loaded)
    m = mdata.uns["cmn_protein"]["metrics"]
    test = np.sort(np.asarray(trained_model.test_indices))
    assert m["cells"] == "test"
    assert m["n_cells"] == test.size
    assert sorted(m["cell_names"]) == sorted(mdata.obs_names[test])

    # cells the model never saw: all are scored, and uns says so
    other = mdata.copy()
    other.obs_names = [f"new_{c}" for c in other.obs_names]
    cmn.tl.predict_protein(other, loaded)
    assert other.uns["cmn_protein"]["metrics"]["cells"] == "all (none used in training)"
    assert other.uns["cmn_protein"]["metrics"]["n_cells"] == 200

    # a model that does not know its training cells (saved before they were recorded) says so
    loaded.training_cells_ = None
    cmn.tl.predict_protein(mdata, loaded)
    assert mdata.uns["cmn_protein"]["metrics"]["cells"] == "all cells (includes training cells)"
    assert mdata.uns["cmn_protein"]["metrics"]["n_cells"] == 200


def test_loaded_model_matches_by_saved_gene_ids(norm_mdata, trained_model, tmp_path):
    """Issue 14 item 6: the model saves its gene IDs, so a model loaded without data matches by ID."""
    from crossmodalnet.model import CrossmodalNet

    trained_model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.gene_ids_["gene_ids"], norm_mdata["rna"].var["gene_ids"].to_numpy())
    query = cmn.pp.to_mudata(norm_mdata["rna"].copy())
    query["rna"].var_names = [f"SYMBOL{i}" for i in range(query["rna"].n_vars)]  # only the IDs match
    query.obs["time"] = norm_mdata.obs["time"].to_numpy()
    cmn.tl.predict_protein(query, loaded, gene_id_column="gene_ids")
    assert query.uns["cmn_protein"]["coverage"] == 1.0
    np.testing.assert_allclose(
        query.obsm["cmn_protein"].to_numpy(), trained_model.predict_protein(norm_mdata.copy()).to_numpy(), atol=1e-5
    )


def test_predictions_for_scanpy_and_muon_plotting(mdata, trained_model):
    """Issue 14 item 13: predictions as obs columns or as a modality, besides obsm (the default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import muon as mu
    import scanpy as sc

    cmn.tl.predict_protein(mdata, trained_model)
    pred = mdata.obsm["cmn_protein"]
    assert not any(c.startswith("cmn_protein_") for c in mdata.obs.columns)
    assert "cmn_protein" not in mdata.mod

    obs_version = mdata.copy()
    cmn.tl.predict_protein(obs_version, trained_model, add_to="obs")
    np.testing.assert_allclose(obs_version.obs["cmn_protein_prot_000"].to_numpy(), pred["prot_000"].to_numpy())
    assert obs_version.uns["cmn_protein"]["params"]["add_to"] == "obs"
    cmn.tl.basal_embedding(obs_version, trained_model)
    mu.pl.embedding(obs_version, basis="X_cmn_basal", color="cmn_protein_prot_000", show=False)

    with warnings.catch_warnings():  # the new modality's proteins share their names with mdata['prot']'s
        warnings.filterwarnings("error", message="var_names are not unique")
        cmn.tl.predict_protein(mdata, trained_model, add_to="modality")
    mod = mdata["cmn_protein"]
    assert mod.shape == (200, 8)
    assert list(mod.var_names) == list(trained_model.protein_names)
    np.testing.assert_allclose(mod.X, pred.to_numpy())
    assert "cmn_protein" in mdata.mod
    assert mdata.n_obs == 200
    mod.obsm["X_pca"] = np.random.default_rng(0).normal(size=(200, 2))
    sc.pl.embedding(mod, basis="pca", color="prot_001", show=False)
    plt.close("all")
    cmn.tl.predict_protein(mdata, trained_model, add_to="modality")  # overwriting its own modality is fine
    with pytest.raises(ValueError, match="already has a modality 'prot'"):
        cmn.tl.predict_protein(mdata, trained_model, key_added="prot", add_to="modality")
    with pytest.raises(ValueError, match="`add_to` must be"):
        cmn.tl.predict_protein(mdata, trained_model, add_to="layer")


def test_raw_observed_proteins_are_scored_after_the_models_clr(raw_mdata, norm_mdata, trained_model):
    """Issue 26 item 3: raw ADT counts are CLR-transformed as the model's proteins were before scoring."""
    assert trained_model.protein_normalization["method"] == "clr"
    assert trained_model.protein_normalization["axis"] == 1
    raw, norm = raw_mdata.copy(), norm_mdata.copy()
    cmn.tl.predict_protein(raw, trained_model)
    cmn.tl.predict_protein(norm, trained_model)
    got, expected = raw.uns["cmn_protein"]["metrics"], norm.uns["cmn_protein"]["metrics"]
    assert got["n_cells"] == expected["n_cells"] > 0
    for key in ("mse", "pearson_protein", "pearson_cell"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    assert expected["mse"] < 10  # on the CLR scale (raw counts would give thousands)


def test_raw_observed_proteins_without_a_repeatable_transform_are_not_scored(raw_mdata, norm_mdata):
    """Issue 26 item 3: a transform the model did not record cannot be repeated: warn and skip the metrics."""
    import scvi

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    del mdata["prot"].uns["cmn_preprocessing"]  # normalised in a way the model cannot know
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=8)
    assert model.protein_normalization == {"method": "unknown"}
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    raw = raw_mdata.copy()
    with pytest.warns(
        UserWarning, match=r"mdata\['prot'\].X looks like raw ADT counts.*no metrics were computed"
    ) as rec:
        cmn.tl.predict_protein(raw, model, uncertainty=True)
    ours = [w for w in rec if "looks like raw ADT counts" in str(w.message)]
    assert len(ours) == 1  # once, not again for the uncertainty record
    assert ours[0].filename == __file__
    assert "metrics" not in raw.uns["cmn_protein"]
    assert "coverage" not in raw.uns["cmn_protein"]["uncertainty"]
    assert raw.obsm["cmn_protein"].shape == (raw.n_obs, 8)  # the predictions are still written


def test_metrics_pair_observed_proteins_by_cell_name(norm_mdata):
    """Observed proteins listed in another cell order than ``mdata`` give the same metrics and coverage."""
    from crossmodalnet.model import CrossmodalNet

    train = norm_mdata.copy()
    CrossmodalNet.setup_mudata(train, time_key="time")
    model = CrossmodalNet(train, n_latent=8)  # the linear path alone predicts well: misaligned cells would show
    model.train(max_epochs=2, disentangle_epochs=0, accelerator="cpu", enable_progress_bar=False)
    names = pd.Index([f"query_{c}" for c in norm_mdata.obs_names])  # cells the model never saw: all are scored
    time = pd.Series(norm_mdata.obs["time"].to_numpy(), index=names)
    order = np.random.default_rng(0).permutation(norm_mdata.n_obs)
    results = []
    for prot_order in (np.arange(norm_mdata.n_obs), order):
        rna = ad.AnnData(norm_mdata["rna"].X.copy(), obs=pd.DataFrame(index=names), var=norm_mdata["rna"].var.copy())
        prot = ad.AnnData(norm_mdata["prot"].X.copy(), obs=pd.DataFrame(index=names), var=norm_mdata["prot"].var.copy())
        query = md.MuData({"rna": rna, "prot": prot[prot_order].copy()})
        query.obs["time"] = time.reindex(query.obs_names).to_numpy()
        cmn.tl.predict_protein(query, model, uncertainty=True)
        results.append(query)
    same, shuffled = results
    assert same["prot"].obs_names.equals(same.obs_names)
    assert not shuffled["prot"].obs_names.equals(shuffled.obs_names)
    pd.testing.assert_frame_equal(shuffled.obsm["cmn_protein"].loc[same.obs_names], same.obsm["cmn_protein"])
    m, m_same = shuffled.uns["cmn_protein"]["metrics"], same.uns["cmn_protein"]["metrics"]
    assert m["n_cells"] == m_same["n_cells"] == norm_mdata.n_obs
    for name in ("pearson_protein", "pearson_cell", "spearman_protein", "spearman_cell", "mse"):
        assert m[name] == pytest.approx(m_same[name], rel=1e-6), name
    for name in ("pearson", "spearman", "mse"):
        np.testing.assert_allclose(m["per_protein"][name], m_same["per_protein"][name], rtol=1e-6)
    # and both are the metrics of each cell's own observed proteins
    observed = pd.DataFrame(norm_mdata["prot"].X, index=names).loc[same.obs_names].to_numpy()
    np.testing.assert_allclose(
        m["per_protein"]["pearson"],
        pearson_per_protein(same.obsm["cmn_protein"].to_numpy(), observed),
        rtol=1e-5,
    )
    assert np.nanmean(m["per_protein"]["pearson"]) > 0.3
    u, u_same = shuffled.uns["cmn_protein"]["uncertainty"], same.uns["cmn_protein"]["uncertainty"]
    assert u["coverage"] == pytest.approx(u_same["coverage"])
    np.testing.assert_allclose(u["spearman"], u_same["spearman"], rtol=1e-6)
