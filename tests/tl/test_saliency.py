from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn


def _driver_auroc(scores: pd.DataFrame, drivers) -> pd.Series:
    from sklearn.metrics import roc_auc_score

    return pd.Series({p: roc_auc_score(scores.index.isin(list(drivers[p])), scores[p].abs()) for p in scores.columns})


def test_saliency_writes(mdata, trained_model, caplog):
    with caplog.at_level("INFO", logger="crossmodalnet"):
        cmn.tl.saliency(mdata, trained_model, n_top=5)
    table = mdata["rna"].varm["cmn_saliency"]
    assert isinstance(table, pd.DataFrame)
    assert table.shape == (60, 8)
    assert list(table.index) == list(mdata["rna"].var_names)
    assert list(table.columns) == list(trained_model.protein_names)
    np.testing.assert_allclose(table.to_numpy(), trained_model.get_saliency(mdata).to_numpy(), rtol=1e-6)
    meta = mdata.uns["cmn_saliency"]
    assert meta["method"] == "gradient"
    assert meta["aggregate"] == "sum"
    assert meta["n_cells"] == 200
    assert "baseline" not in meta
    top = meta["top_genes"]
    assert set(top) == set(table.columns)
    for protein, genes in top.items():
        assert len(genes) == 5
        assert list(genes) == list(table[protein].abs().sort_values(ascending=False).index[:5])
    assert caplog.text.count("added mdata['rna'].varm['cmn_saliency']") == 1
    assert "top genes" in caplog.text


def test_saliency_integrated_gradients_subset(mdata, trained_model, assert_unchanged):
    mdata.obs["early"] = (mdata.obs["time"] == 2).to_numpy()
    before = mdata.copy()
    proteins = list(trained_model.protein_names[:3])
    out = cmn.tl.saliency(
        mdata,
        trained_model,
        proteins=proteins,
        method="integrated_gradients",
        aggregate="abs_mean",
        mask_obs="early",
        n_steps=4,
        key_added="ig",
        copy=True,
    )
    assert_unchanged(before, mdata)
    table = out["rna"].varm["ig"]
    assert list(table.columns) == proteins
    assert (table.to_numpy() >= 0).all()
    idx = np.flatnonzero(mdata.obs["early"].to_numpy())
    expected = trained_model.get_saliency(
        mdata, proteins=proteins, method="integrated_gradients", aggregate="abs_mean", indices=idx, n_steps=4
    )
    np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), rtol=1e-5)
    meta = out.uns["ig"]
    assert meta["n_cells"] == idx.size
    assert meta["baseline"] == "zeros"
    assert meta["n_steps"] == 4
    assert meta["params"]["mask_obs"] == "early"
    assert list(meta["protein_names"]) == proteins


def test_saliency_query_genes_reindexed(norm_mdata, trained_model):
    """Saliency on a query with other genes lands on the query's genes; genes the model lacks get NaN."""
    import anndata as ad

    rna = norm_mdata["rna"]
    genes = list(rna.var_names[::-1][:55])
    extra = ad.AnnData(np.zeros((rna.n_obs, 2), dtype=np.float32), obs=rna.obs[[]], var=pd.DataFrame(index=["x", "y"]))
    query = cmn.pp.to_mudata(ad.concat([rna[:, genes], extra], axis=1, merge="first"))
    query.obs["time"] = norm_mdata.obs["time"]
    with pytest.warns(UserWarning, match="5 of the model's 60 genes are missing"):
        cmn.tl.saliency(query, trained_model, proteins="prot_000")
    table = query["rna"].varm["cmn_saliency"]
    assert list(table.index) == genes + ["x", "y"]
    assert table.loc[["x", "y"]].isna().all().all()
    assert table.loc[genes].notna().all().all()


def test_saliency_errors(mdata, trained_model):
    with pytest.raises(KeyError, match="unknown protein"):
        cmn.tl.saliency(mdata, trained_model, proteins="nope")
    with pytest.raises(ValueError, match="method"):
        cmn.tl.saliency(mdata, trained_model, method="deeplift")
    with pytest.raises(ValueError, match="selects no cell"):
        cmn.tl.saliency(mdata, trained_model, mask_obs=np.zeros(200, dtype=bool))
    assert "cmn_saliency" not in mdata["rna"].varm
    assert "cmn_saliency" not in mdata.uns


@pytest.fixture(scope="module")
def driver_model():
    """A model trained long enough to learn the planted drivers (1200 cells × 200 genes × 8 proteins)."""
    import scvi

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = 0
    mdata = cmn.datasets.synthetic_cite(n_obs=1200, n_genes=200, n_proteins=8, rng=1)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=64)
    model.train(max_epochs=60, accelerator="cpu", enable_progress_bar=False)
    return mdata, model


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_saliency_ranks_planted_drivers(driver_model, method):
    """Saliency recovers the planted driver genes of every protein far above chance (AUROC 0.5)."""
    mdata, model = driver_model
    drivers = mdata.uns["cmn_synthetic"]["driver_genes"]
    cmn.tl.saliency(mdata, model, method=method, n_steps=8, batch_size=512)
    auroc = _driver_auroc(mdata["rna"].varm["cmn_saliency"], drivers)
    assert auroc.mean() > 0.9, auroc
    assert auroc.min() > 0.7, auroc


@pytest.fixture
def linear_model(norm_mdata):
    """A model whose ReLUs are replaced by identities: a linear map, so every gradient is known exactly."""
    import scvi
    import torch

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=6, use_batch_norm=False, dropout_rate=0.0)
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    enc, dec = model.module.encoder.layers, model.module.decoder.layers
    assert isinstance(enc[1], torch.nn.ReLU)
    assert isinstance(dec[1], torch.nn.ReLU)
    enc[1] = dec[1] = torch.nn.Identity()
    # proteins × genes: d prediction / d expression, the same for every cell and time point
    jacobian = dec[2].weight @ dec[0].weight @ enc[3].weight @ enc[0].weight
    return mdata, model, jacobian.detach().double().numpy()


@pytest.mark.parametrize("aggregate", ["sum", "mean", "abs_sum", "abs_mean"])
def test_gradient_saliency_by_hand(linear_model, aggregate):
    mdata, model, jacobian = linear_model
    cells = np.arange(0, 150, 3)  # 50 cells over several batches
    scores = model.get_saliency(aggregate=aggregate, indices=cells, batch_size=16)
    assert scores.shape == (model.n_genes, model.n_proteins)
    per_cell = np.abs(jacobian.T) if aggregate.startswith("abs") else jacobian.T
    expected = per_cell * (len(cells) if aggregate.endswith("sum") else 1)
    np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=f"aggregate={aggregate!r}")


def test_integrated_gradients_by_hand(linear_model):
    mdata, model, jacobian = linear_model
    cells = np.arange(0, 150, 3)
    x = mdata["rna"].X[cells]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    scores = model.get_saliency(method="integrated_gradients", indices=cells, n_steps=3, batch_size=16)
    # a constant gradient integrates exactly: cell i's attribution to gene g is (x_ig - 0) · J[:, g]
    np.testing.assert_allclose(
        scores.to_numpy(), x.sum(0)[:, None] * jacobian.T, rtol=1e-4, atol=1e-6, err_msg="Σ_i x_i ⊙ ∇ŷ"
    )
    # completeness: attributions of one cell sum to its prediction minus the prediction at the zero baseline
    one = model.get_saliency(method="integrated_gradients", indices=[cells[0]], n_steps=3)
    pred = model.predict_protein().to_numpy()[cells[0]]
    zero = mdata.copy()
    zero["rna"].X = zero["rna"].X * 0
    baseline = model.predict_protein(zero).to_numpy()[cells[0]]
    np.testing.assert_allclose(one.sum(axis=0).to_numpy(), pred - baseline, rtol=1e-4, atol=1e-5)


def test_saliency_log_line_gives_each_gene_its_sign(mdata, trained_model, caplog):
    """Issue 26 item 7: the logged top genes carry their signed score, so a gene that lowers a protein shows it."""
    with caplog.at_level("INFO", logger="crossmodalnet"):
        cmn.tl.saliency(mdata, trained_model)
    table = mdata["rna"].varm["cmn_saliency"]
    line = next(r.getMessage() for r in caplog.records if "top genes" in r.getMessage())
    signs = set()
    for protein in table.columns[:5]:
        genes = table[protein].abs().sort_values(ascending=False).index[:3]
        shown = ", ".join(f"{g} ({table.at[g, protein]:+.3g})" for g in genes)
        assert f"{protein}: {shown}" in line
        signs |= {np.sign(table.at[g, protein]) for g in genes}
    assert signs == {-1.0, 1.0}  # both directions occur among the logged genes
