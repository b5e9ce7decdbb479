from __future__ import annotations

import mudata as md
import numpy as np
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


def test_to_mudata_names_the_fix_for_a_lazily_read_anndata(raw_mdata, tmp_path):
    import anndata as ad
    import h5py

    path = tmp_path / "atlas.h5ad"
    raw_mdata["rna"].write_h5ad(path)
    with h5py.File(path, "r") as f:
        lazy = ad.experimental.read_lazy(f)
        with pytest.raises(TypeError, match=r"adata.obs.*read_lazy.*read_elem_lazy"):
            cmn.pp.to_mudata(lazy)
        # the fix the message gives: only the matrix lazy
        fixed = ad.AnnData(
            X=ad.experimental.read_elem_lazy(f["X"]), obs=ad.io.read_elem(f["obs"]), var=ad.io.read_elem(f["var"])
        )
        mdata = cmn.pp.to_mudata(fixed)
        assert mdata.shape == raw_mdata["rna"].shape
        assert list(mdata.obs_names) == list(raw_mdata["rna"].obs_names)


def _with_isotypes(norm_mdata):
    """``norm_mdata`` whose last two proteins are isotype controls named as in ECCITE-seq."""
    mdata = norm_mdata.copy()
    names = list(mdata["prot"].var_names)
    mdata["prot"].var_names = [*names[:-2], "IgG1", "IgG2a"]
    mdata.update()
    return mdata


def test_drop_proteins_updates_the_mudata(norm_mdata):
    """Issue 26 item 1: the documented removal of isotypes leaves a MuData that can be subset and copied."""
    mdata = _with_isotypes(norm_mdata)
    n_genes, n_prot = mdata["rna"].n_vars, mdata["prot"].n_vars
    kept = list(mdata["prot"].var_names[:-2])
    before = mdata["prot"].X.copy()
    out = cmn.pp.drop_proteins(mdata, ["IgG1", "IgG2a"], copy=True)
    assert mdata["prot"].n_vars == n_prot  # copy=True: the input is untouched
    np.testing.assert_array_equal(mdata["prot"].X, before)
    assert cmn.pp.drop_proteins(mdata, "IgG1") is None
    cmn.pp.drop_proteins(mdata, ["IgG2a"])
    for result in (out, mdata):
        assert list(result["prot"].var_names) == kept
        assert result.n_vars == n_genes + n_prot - 2
        assert list(result.var_names[-len(kept) :]) == kept
        np.testing.assert_array_equal(result["prot"].X, before[:, :-2])
        sub = result[result.obs_names[:10]].copy()  # positional subsetting of the MuData reads the right features
        assert sub["prot"].shape == (10, len(kept))
        np.testing.assert_array_equal(sub["prot"].X, before[:10, :-2])


def test_drop_proteins_errors_leave_the_mudata_untouched(norm_mdata):
    mdata = _with_isotypes(norm_mdata)
    names = list(mdata["prot"].var_names)
    with pytest.raises(KeyError, match=r"2 name\(s\) are not proteins of `mdata\['prot'\]`: \['IgG3', 'igg1'\]"):
        cmn.pp.drop_proteins(mdata, ["IgG1", "IgG3", "igg1"])
    with pytest.raises(ValueError, match="would leave `mdata\\['prot'\\]` without proteins"):
        cmn.pp.drop_proteins(mdata, names)
    with pytest.raises(KeyError, match="no protein modality 'adt'"):
        cmn.pp.drop_proteins(mdata, "IgG1", protein_key="adt")
    assert list(mdata["prot"].var_names) == names
    assert mdata.n_vars == mdata["rna"].n_vars + len(names)
