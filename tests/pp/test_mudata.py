from __future__ import annotations

import mudata as md
import pytest

import crossmodalnet as cmn


def test_to_mudata(raw_mdata):
    adata = raw_mdata["rna"].copy()
    mdata = cmn.pp.to_mudata(adata)
    assert isinstance(mdata, md.MuData)
    assert list(mdata.mod) == ["rna"]
    assert mdata["rna"] is adata
    assert list(mdata.obs_names) == list(adata.obs_names)
    assert {"time", "batch", "cell_state"} <= set(mdata.obs.columns)
    assert (mdata.obs["time"].to_numpy() == adata.obs["time"].to_numpy()).all()
    assert list(cmn.pp.to_mudata(adata, rna_key="gex").mod) == ["gex"]


def test_to_mudata_rejects(raw_mdata):
    with pytest.raises(TypeError, match="AnnData"):
        cmn.pp.to_mudata(raw_mdata)
    adata = raw_mdata["rna"].copy()
    adata.obs_names = ["a"] * adata.n_obs
    with pytest.raises(ValueError, match="unique"):
        cmn.pp.to_mudata(adata)
