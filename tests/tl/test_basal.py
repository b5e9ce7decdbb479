from __future__ import annotations

import numpy as np
import scanpy as sc
from matplotlib.figure import Figure

import crossmodalnet as cmn


def test_basal_embedding(mdata, trained_model, assert_unchanged):
    before = mdata.copy()
    out = cmn.tl.basal_embedding(mdata, trained_model, copy=True)
    assert_unchanged(before, mdata)
    z = out.obsm["X_cmn_basal"]
    assert isinstance(z, np.ndarray)
    assert z.shape == (200, 16)
    np.testing.assert_allclose(z, trained_model.get_latent_representation(mdata), rtol=1e-6)
    meta = out.uns["cmn_basal"]
    assert meta["params"]["key_added"] == "cmn_basal"
    assert meta["model"]["n_latent"] == 16
    assert meta["coverage"] == 1.0


def test_basal_embedding_with_scanpy(mdata, trained_model):
    """The embedding works with scanpy's neighbours, UMAP and embedding plot on the MuData directly."""
    import matplotlib.pyplot as plt

    cmn.tl.basal_embedding(mdata, trained_model)
    sc.pp.neighbors(mdata, use_rep="X_cmn_basal", n_neighbors=10)
    sc.tl.umap(mdata, random_state=0)
    assert mdata.obsm["X_umap"].shape == (200, 2)
    fig = sc.pl.embedding(mdata, basis="cmn_basal", color="time", show=False, return_fig=True)
    assert isinstance(fig, Figure)
    plt.close("all")


def test_basal_embedding_query_subset(norm_mdata, trained_model):
    adata = norm_mdata["rna"][:50, norm_mdata["rna"].var_names[::-1]].copy()  # other gene order
    query = cmn.pp.to_mudata(adata)
    cmn.tl.basal_embedding(query, trained_model)
    expected = trained_model.get_latent_representation(norm_mdata)[:50]
    np.testing.assert_allclose(query.obsm["X_cmn_basal"], expected, rtol=1e-5, atol=1e-6)
    assert query.uns["cmn_basal"]["genes"]["n_filled"] == 0
