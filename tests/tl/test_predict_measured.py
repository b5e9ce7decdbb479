"""`cmn.tl.predict_protein` on a query that measured some proteins (NaN = not measured): mask, scores, fill."""

from __future__ import annotations

import logging

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn
from crossmodalnet._metrics import pearson_per_protein


@pytest.fixture
def query(norm_mdata):
    """The test cells under new names (not the model's training cells), with a partial protein panel.

    Protein 0 is NaN (not measured) in every other cell, protein 1 is not in the panel, and the panel
    has a protein the model does not know (``CDX_unknown``).
    """
    rna = norm_mdata["rna"].copy()
    prot = norm_mdata["prot"].copy()
    names = [f"q_{c}" for c in norm_mdata.obs_names]
    rna.obs_names = names
    prot.obs_names = names
    X = np.asarray(prot.X, dtype=np.float64).copy()
    X[::2, 0] = np.nan
    keep = [p for i, p in enumerate(prot.var_names) if i != 1]
    values = np.hstack([X[:, [i for i in range(X.shape[1]) if i != 1]], np.ones((X.shape[0], 1))])
    panel = ad.AnnData(
        X=values.astype(np.float32),
        obs=pd.DataFrame(index=prot.obs_names.copy()),
        var=pd.DataFrame(index=[*keep, "CDX_unknown"]),
    )
    out = md.MuData({"rna": rna, "prot": panel})
    out.obs["time"] = norm_mdata.obs["time"].to_numpy()
    return out


def test_measured_mask_and_scores(trained_model, query, caplog):
    names = trained_model.protein_names
    with caplog.at_level(logging.INFO, logger="crossmodalnet"):
        cmn.tl.predict_protein(query, trained_model)
    assert "CDX_unknown" in caplog.text
    pred = query.obsm["cmn_protein"]
    mask = query.obsm["cmn_protein_measured"]
    assert list(mask.columns) == list(pred.columns) == list(names)
    assert mask.index.equals(pred.index)
    assert mask.dtypes.eq(bool).all()
    measured_0 = np.isfinite(np.asarray(query["prot"][:, names[0]].X, dtype=np.float64).ravel())
    np.testing.assert_array_equal(mask[names[0]].to_numpy(), measured_0)
    assert not mask[names[1]].any()
    assert mask[names[2:]].to_numpy().all()
    assert "cmn_protein_predicted" not in query.obsm

    uns = query.uns["cmn_protein"]
    assert list(uns["measured"]["ignored_proteins"]) == ["CDX_unknown"]
    np.testing.assert_array_equal(uns["measured"]["n_cells"], mask.sum(axis=0).to_numpy())
    per = uns["metrics"]["per_protein"]
    scored = list(per["protein_names"])
    assert names[1] not in scored
    assert "CDX_unknown" not in scored
    np.testing.assert_array_equal(per["n_measured"], mask[scored].sum(axis=0).to_numpy())
    # protein 0 is scored over the cells that measured it only
    true = np.asarray(query["prot"][:, names[0]].X, dtype=np.float64).ravel()
    expected = pearson_per_protein(pred[names[0]].to_numpy()[measured_0, None], true[measured_0, None])[0]
    assert per["pearson"][scored.index(names[0])] == pytest.approx(expected, rel=1e-5)


def test_fill_measured_keeps_the_measured_values(trained_model, query):
    plain = cmn.tl.predict_protein(query, trained_model, copy=True)
    cmn.tl.predict_protein(query, trained_model, fill_measured=True)
    names = trained_model.protein_names
    pred = plain.obsm["cmn_protein"]
    mask = query.obsm["cmn_protein_measured"]
    filled = query.obsm["cmn_protein"]
    pd.testing.assert_frame_equal(query.obsm["cmn_protein_predicted"], pred)
    observed = pd.DataFrame(np.nan, index=pred.index, columns=names)
    shared = [p for p in names if p in query["prot"].var_names]
    observed[shared] = np.asarray(query["prot"][:, shared].X, dtype=np.float64)
    np.testing.assert_allclose(filled.to_numpy()[mask.to_numpy()], observed.to_numpy()[mask.to_numpy()], rtol=1e-6)
    np.testing.assert_array_equal(filled.to_numpy()[~mask.to_numpy()], pred.to_numpy()[~mask.to_numpy()])
    assert query.uns["cmn_protein"]["measured"]["filled"]
    # the metrics score the predictions, not the filled values
    assert query.uns["cmn_protein"]["metrics"]["mse"] == plain.uns["cmn_protein"]["metrics"]["mse"]
    assert query.uns["cmn_protein"]["metrics"]["mse"] > 0


def test_panel_without_a_known_protein_warns(trained_model, query):
    query.mod["prot"].var_names = [f"other_{i}" for i in range(query["prot"].n_vars)]
    query.update()
    with pytest.warns(UserWarning, match="nothing can be scored"):
        cmn.tl.predict_protein(query, trained_model, fill_measured=True)
    assert "metrics" not in query.uns["cmn_protein"]
    assert not query.obsm["cmn_protein_measured"].to_numpy().any()
    assert "cmn_protein_predicted" not in query.obsm


def test_no_protein_modality_writes_no_mask(trained_model, query):
    rna_only = md.MuData({"rna": query["rna"].copy()})
    rna_only.obs["time"] = query.obs["time"].to_numpy()
    cmn.tl.predict_protein(rna_only, trained_model, fill_measured=True)
    assert "cmn_protein_measured" not in rna_only.obsm
    assert "measured" not in rna_only.uns["cmn_protein"]


def test_fill_measured_is_refused_with_out(trained_model, query, tmp_path):
    with pytest.raises(ValueError, match="fill_measured=True"):
        cmn.tl.predict_protein(query, trained_model, fill_measured=True, out=tmp_path / "pred.zarr")
    assert "cmn_protein" not in query.obsm
