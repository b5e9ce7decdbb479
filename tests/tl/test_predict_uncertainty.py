"""tl.predict_protein(uncertainty=True): written keys, metadata, round-trip and argument checks."""

from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn


@pytest.fixture(scope="module")
def model(norm_mdata):
    import scvi

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, n_latent=16)
    model.train(max_epochs=10, train_size=0.5, validation_size=0.25, accelerator="cpu", enable_progress_bar=False)
    return model


def test_writes_spread_interval_and_record(model):
    mdata = cmn.tl.predict_protein(model.adata, model, uncertainty=True, level=0.8, key_added="p", copy=True)
    pred = mdata.obsm["p"]
    for key in ("p_std", "p_lower", "p_upper"):
        frame = mdata.obsm[key]
        assert isinstance(frame, pd.DataFrame)
        assert frame.index.equals(pred.index)
        assert list(frame.columns) == list(pred.columns)
    assert (mdata.obsm["p_lower"].to_numpy() < pred.to_numpy()).all()
    assert (mdata.obsm["p_upper"].to_numpy() > pred.to_numpy()).all()
    rec = mdata.uns["p"]["uncertainty"]
    assert rec["level"] == 0.8
    assert rec["calibration"] == "pooled"
    assert rec["n_calibration_cells"] == 50
    assert rec["multipliers"].shape == (len(rec["levels"]), pred.shape[1])
    assert 0.8 in rec["levels"]
    # on the model's own data only its test cells are scored
    assert len(rec["eval_indices"]) == len(model.test_indices)
    assert 0.0 <= rec["coverage"] <= 1.0
    assert rec["spearman"].shape == (pred.shape[1],)
    assert mdata.uns["p"]["params"]["uncertainty"] is True
    k = rec["multipliers"][list(rec["levels"]).index(0.8)]
    np.testing.assert_allclose(
        mdata.obsm["p_upper"].to_numpy() - pred.to_numpy(), k * mdata.obsm["p_std"].to_numpy(), rtol=1e-4
    )


def test_h5mu_round_trip(mdata, model, tmp_path):
    cmn.tl.predict_protein(mdata, model, uncertainty=True)
    path = tmp_path / "u.h5mu"
    mdata.write_h5mu(path)
    back = md.read_h5mu(path)
    for key in ("cmn_protein_std", "cmn_protein_lower", "cmn_protein_upper"):
        pd.testing.assert_frame_equal(back.obsm[key], mdata.obsm[key], check_dtype=False)
    before, after = mdata.uns["cmn_protein"]["uncertainty"], back.uns["cmn_protein"]["uncertainty"]
    assert set(before) == set(after)
    np.testing.assert_array_equal(before["multipliers"], after["multipliers"])


def test_copy_leaves_input_untouched(mdata, model, assert_unchanged):
    before = mdata.copy()
    out = cmn.tl.predict_protein(mdata, model, uncertainty=True, copy=True)
    assert_unchanged(before, mdata)
    assert "cmn_protein_std" in out.obsm


def test_without_uncertainty_writes_no_interval(mdata, model):
    cmn.tl.predict_protein(mdata, model)
    assert "cmn_protein_std" not in mdata.obsm
    assert "uncertainty" not in mdata.uns["cmn_protein"]


@pytest.mark.parametrize("level", [0.0, 1.0, 90, "0.9", True])
def test_bad_level_is_an_early_error(mdata, model, assert_unchanged, level):
    before = mdata.copy()
    with pytest.raises(ValueError, match="`level`"):
        cmn.tl.predict_protein(mdata, model, uncertainty=True, level=level)
    assert_unchanged(before, mdata)
