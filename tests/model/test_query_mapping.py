"""Query mapping (`CrossmodalNet.map_query`): a new batch embedding learned from a query's few measured proteins."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet

N_MEASURED = 4  # of 12 proteins the query measured


@pytest.fixture(scope="module")
def planted():
    """Three batches; each shifts the proteins along one planted pattern (-1, +1 and, for the query, +2 times it).

    The reference (batch_0, batch_1) learns the pattern as a direction of its batch embedding; the
    query (batch_2) measured 4 of the 12 proteins (NaN elsewhere). ``truth`` holds all 12.
    """
    cmn.settings.seed = 0
    md = cmn.datasets.synthetic_cite(n_obs=600, n_genes=60, n_proteins=12, n_batches=3, sparse=False, rng=0)
    cmn.pp.log_normalize(md)
    cmn.pp.clr(md)
    X = np.asarray(md.mod["prot"].X, dtype=np.float32).copy()
    pattern = np.random.default_rng(1).normal(0.0, 1.0, X.shape[1]).astype(np.float32)
    shift = md.obs["batch"].astype(str).map({"batch_0": -1.0, "batch_1": 1.0, "batch_2": 2.0}).to_numpy(np.float32)
    md.mod["prot"].X = X + shift[:, None] * pattern[None, :]
    ref = md[md.obs["batch"] != "batch_2"].copy()
    query = md[md.obs["batch"] == "batch_2"].copy()
    truth = np.asarray(query.mod["prot"].X, dtype=np.float64).copy()
    Xq = truth.copy()
    Xq[:, N_MEASURED:] = np.nan
    query.mod["prot"].X = Xq.astype(np.float32)
    CrossmodalNet.setup_mudata(ref, time_key="time", batch_key="batch")
    model = CrossmodalNet(ref, preset="paper", n_latent=16)
    model.train(max_epochs=60, early_stopping=False, enable_progress_bar=False)
    model.calibrate_uncertainty()
    return model, query, truth


@pytest.fixture(scope="module")
def mapped(planted):
    model, query, _ = planted
    cmn.settings.seed = 0
    return model.map_query(query, max_epochs=200)


def _state(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def test_surgery_changes_only_the_new_embedding(planted):
    model, query, _ = planted
    before = _state(model)
    uncertainty = model.uncertainty_
    cmn.settings.seed = 0
    qm = model.map_query(query, max_epochs=20, calibration_fraction=0.0)
    after = _state(qm)
    assert set(after) == {*before, "query_batch_embedding"}
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert after["query_batch_embedding"].shape == (1, 16)
    assert not torch.equal(after["query_batch_embedding"][0], before["covariate_embeddings.1.weight"].mean(0))
    # the reference is untouched: its weights, its (missing) query record and its calibration
    for key, value in _state(model).items():
        assert torch.equal(value, before[key]), key
    assert model.query_ is None
    assert model.uncertainty_ is uncertainty
    assert qm.query_batch_categories.tolist() == ["batch_2"]
    assert model.query_batch_categories.tolist() == []


def test_mapping_lowers_error_on_unmeasured_proteins(planted, mapped):
    model, query, truth = planted
    unmeasured = slice(N_MEASURED, None)
    average = model.predict_protein(query).to_numpy(np.float64)
    own = mapped.predict_protein(query).to_numpy(np.float64)
    mse_average = np.mean((average - truth)[:, unmeasured] ** 2)
    mse_mapped = np.mean((own - truth)[:, unmeasured] ** 2)
    assert mse_mapped < 0.7 * mse_average, (mse_mapped, mse_average)
    record = mapped.query_
    assert record["heldout_mse_mapped"] < record["heldout_mse_average"]
    assert record["proteins_used"] == model.protein_names[:N_MEASURED].tolist()
    assert sum(record["n_cells_fitted"]) + sum(record["n_cells_held_out"]) == query.n_obs
    assert record["n_cells_held_out"] == [40]
    # the writer uses the query embedding too
    out = cmn.tl.predict_protein(query, mapped, copy=True)
    np.testing.assert_array_equal(out.obsm["cmn_protein"].to_numpy(), own.astype(np.float32))


def test_mapping_is_deterministic(planted):
    model, query, _ = planted
    rows = []
    for _ in range(2):
        cmn.settings.seed = 0
        # mini-batches and a held-out split: both drawn from `cmn.settings.seed`
        qm = model.map_query(query, max_epochs=5, batch_size=64)
        rows.append((qm.module.query_batch_embedding.detach().clone(), qm.query_))
    assert torch.equal(rows[0][0], rows[1][0])
    assert rows[0][1]["loss"] == rows[1][1]["loss"]
    assert rows[0][1]["calibration"] == rows[1][1]["calibration"]


def test_calibration_on_held_out_query_cells(mapped):
    record = mapped.query_["calibration"]
    assert record["n_cells"] == 40
    assert record["n_values"] == 40 * N_MEASURED
    assert record["multiplier"] >= 1.0
    assert record["coverage_after"] >= record["coverage_before"]
    assert record["coverage_after"] >= record["level"] - 0.05


def test_calibration_widens_under_covering_intervals(planted):
    model, query, _ = planted
    cmn.settings.seed = 0
    # too few epochs to reach the planted shift: the reference's intervals under-cover the query
    qm = model.map_query(query, max_epochs=1, lr=1e-4)
    record = qm.query_["calibration"]
    assert record["coverage_before"] < record["level"]
    assert record["multiplier"] > 1.0
    assert record["coverage_after"] >= record["level"]
    np.testing.assert_allclose(
        qm.uncertainty_["scores"], model.uncertainty_["scores"] * record["multiplier"], rtol=1e-6
    )
    ref = model.predict_protein(query[:20].copy(), return_uncertainty=True, batch="batch_1")
    assert ref.multiplier.notna().all()
    unc = qm.predict_protein(query[:20].copy(), return_uncertainty=True)
    np.testing.assert_allclose(unc.multiplier.to_numpy(), ref.multiplier.to_numpy() * record["multiplier"], rtol=1e-5)


def test_save_load_keeps_the_query_embedding(mapped, planted, tmp_path):
    _, query, _ = planted
    mapped.save(tmp_path / "query_model")
    loaded = CrossmodalNet.load(tmp_path / "query_model")
    assert loaded.query_batch_categories.tolist() == ["batch_2"]
    assert loaded.query_["calibration"] == mapped.query_["calibration"]
    assert torch.equal(loaded.module.query_batch_embedding, mapped.module.query_batch_embedding)
    np.testing.assert_array_equal(loaded.predict_protein(query).to_numpy(), mapped.predict_protein(query).to_numpy())


def _unchanged(before, after):
    for key in before.mod:
        np.testing.assert_array_equal(np.asarray(before[key].X), np.asarray(after[key].X))
        assert before[key].var_names.equals(after[key].var_names)
    # a copied MuData may store a string column with another dtype: compare the values
    pd.testing.assert_frame_equal(before.obs.astype(str), after.obs.astype(str))


def test_query_panel_without_a_known_protein(planted):
    model, query, _ = planted
    bad = query.copy()
    bad.mod["prot"].var_names = [f"other_{i}" for i in range(bad.mod["prot"].n_vars)]
    bad.update()
    before = bad.copy()
    with pytest.raises(ValueError, match=r"no protein of the query's panel .*other_0.*" + model.protein_names[0]):
        model.map_query(bad)
    _unchanged(before, bad)


def test_query_without_matching_genes(planted):
    model, query, _ = planted
    bad = query.copy()
    bad.mod["rna"].var_names = [f"ENSG{i:011d}" for i in range(bad.mod["rna"].n_vars)]
    bad.update()
    with pytest.raises(ValueError, match="no gene of `mdata\\['rna'\\]`"):
        model.map_query(bad)


def test_query_batch_that_exists_in_the_reference(planted):
    model, query, _ = planted
    bad = query.copy()
    bad.obs["batch"] = "batch_1"
    before = bad.copy()
    with pytest.raises(ValueError, match=r"\['batch_1'\] already exist in the model.*new label.*without mapping"):
        model.map_query(bad)
    _unchanged(before, bad)


def test_query_without_measured_proteins_keeps_the_average_embedding(planted, caplog):
    model, query, _ = planted
    empty = query.copy()
    empty.mod["prot"].X = np.full(empty.mod["prot"].shape, np.nan, dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="crossmodalnet"):
        qm = model.map_query(empty)
    assert "without any measured protein" in caplog.text
    assert qm.query_["batch_categories"] == []
    assert qm.query_["unmapped_batch_categories"] == ["batch_2"]
    assert "query_batch_embedding" not in qm.module.state_dict()
    np.testing.assert_array_equal(qm.predict_protein(query).to_numpy(), model.predict_protein(query).to_numpy())


def test_default_preset_keeps_the_linear_path(planted):
    """With the linear path (default preset, fully measured reference): only the query rows are new."""
    _, query, _ = planted
    cmn.settings.seed = 0
    md = cmn.datasets.synthetic_cite(n_obs=200, n_genes=60, n_proteins=12, n_batches=2, sparse=False, rng=0)
    cmn.pp.log_normalize(md)
    cmn.pp.clr(md)
    CrossmodalNet.setup_mudata(md, time_key="time", batch_key="batch")
    model = CrossmodalNet(md, n_latent=16)
    model.train(max_epochs=2, enable_progress_bar=False)
    assert model.module.linear_path
    small = query.copy()
    small.mod["rna"].var_names = md["rna"].var_names.copy()
    small.mod["prot"].var_names = md["prot"].var_names.copy()
    small.update()
    before = _state(model)
    qm = model.map_query(small, max_epochs=5, calibration_fraction=0.0)
    after = _state(qm)
    assert set(after) - set(before) == {"query_batch_embedding"}
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    pred = qm.predict_protein(small)
    assert np.isfinite(pred.to_numpy()).all()
    assert not np.array_equal(pred.to_numpy(), model.predict_protein(small).to_numpy())
