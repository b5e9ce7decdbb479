from __future__ import annotations

import numpy as np
import pytest

import crossmodalnet as cmn


def test_time_embedding(mdata, trained_model, assert_unchanged):
    before = mdata.copy()
    out = cmn.tl.time_embedding(mdata, trained_model, interpolate=[2.5, 3.25], copy=True)
    assert_unchanged(before, mdata)
    rec = out.uns["cmn_time"]
    assert list(rec["time_points"]) == ["2", "3", "4"]
    np.testing.assert_array_equal(rec["time_values"], [2.0, 3.0, 4.0])
    assert rec["trained"].all()
    emb = trained_model.get_time_embedding().to_numpy()
    np.testing.assert_allclose(rec["embedding"], emb, rtol=1e-6)
    assert rec["pca"].shape == (3, 2)
    assert rec["pca_variance_ratio"].shape == (2,)
    inter = rec["interpolated"]
    np.testing.assert_allclose(inter["embedding"][0], (emb[0] + emb[1]) / 2, rtol=1e-5)
    np.testing.assert_allclose(inter["embedding"][1], 0.75 * emb[1] + 0.25 * emb[2], rtol=1e-5)
    # a linear interpolation stays linear in PCA coordinates
    np.testing.assert_allclose(inter["pca"][0], (rec["pca"][0] + rec["pca"][1]) / 2, atol=1e-5)
    assert rec["params"]["n_comps"] == 2
    assert rec["model"]["class"] == "CrossmodalNet"


def test_time_embedding_errors(mdata, trained_model):
    with pytest.raises(ValueError, match="outside the trained range"):
        cmn.tl.time_embedding(mdata, trained_model, interpolate=[10])
    assert "cmn_time" not in mdata.uns
    cmn.tl.time_embedding(mdata, trained_model, interpolate=[10], allow_extrapolation=True, n_comps=3)
    assert mdata.uns["cmn_time"]["pca"].shape == (3, 3)
