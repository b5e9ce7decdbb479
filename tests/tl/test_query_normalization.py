"""Issue 14 item 2: raw-count query RNA is normalised as the model's RNA was, or refused, on every query path."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scvi

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet

TRAIN = {"batch_size": 64, "accelerator": "cpu", "enable_progress_bar": False}


def test_model_records_rna_normalization(trained_model, tmp_path):
    assert trained_model.rna_normalization == {"method": "log1p_normalize_total", "target_sum": 1e4}
    trained_model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m")
    assert loaded.rna_normalization == trained_model.rna_normalization


def test_record_inferred_from_scanpy_normalised_data(norm_mdata):
    mdata = norm_mdata.copy()
    del mdata["rna"].uns["cmn_preprocessing"]
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    record = CrossmodalNet(mdata, n_latent=8).rna_normalization
    assert record["method"] == "log1p_normalize_total"
    assert record["inferred"] is True
    np.testing.assert_allclose(record["target_sum"], 1e4, rtol=1e-3)


def test_raw_query_is_normalised_on_every_path(trained_model, raw_mdata, norm_mdata, caplog):
    normalised = norm_mdata.copy()
    expected = trained_model.predict_protein(normalised)
    z_expected = trained_model.get_latent_representation(normalised)
    raw = raw_mdata.copy()
    with caplog.at_level(logging.INFO, logger="crossmodalnet"):
        got = trained_model.predict_protein(raw)
    assert "looks like raw counts; normalising it as the model's RNA was" in caplog.text
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-4)
    np.testing.assert_allclose(trained_model.get_latent_representation(raw), z_expected, atol=1e-4)
    # the model method wrote nothing: the user's counts are unchanged
    np.testing.assert_array_equal(raw["rna"].X.toarray(), raw_mdata["rna"].X.toarray())

    # tl path with gene matching: the library size is taken over all the query's genes, before matching
    cmn.tl.predict_protein(
        raw, trained_model, gene_id_column="gene_ids", model_gene_ids=list(raw["rna"].var["gene_ids"])
    )
    np.testing.assert_allclose(raw.obsm["cmn_protein"].to_numpy(), expected.to_numpy(), atol=1e-4)
    sal_raw = trained_model.get_saliency(raw_mdata.copy(), proteins=expected.columns[0])
    sal_norm = trained_model.get_saliency(normalised, proteins=expected.columns[0])
    np.testing.assert_allclose(sal_raw.to_numpy(), sal_norm.to_numpy(), rtol=1e-3, atol=1e-4)


def test_raw_query_refused_when_normalisation_unknown(norm_mdata, raw_mdata):
    mdata = norm_mdata.copy()
    mdata["rna"].X = mdata["rna"].X * 0.5  # normalised some other way, not recorded
    del mdata["rna"].uns["cmn_preprocessing"]
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=1, **TRAIN)
    assert model.rna_normalization == {"method": "unknown"}
    raw = raw_mdata.copy()
    with pytest.raises(ValueError, match="looks like raw counts.*Normalise the query"):
        cmn.tl.predict_protein(raw, model)
    assert "cmn_protein" not in raw.obsm
    with pytest.raises(ValueError, match="looks like raw counts"):
        cmn.tl.basal_embedding(raw, model)
