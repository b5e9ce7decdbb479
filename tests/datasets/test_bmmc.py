from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import crossmodalnet as cmn

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bmmc_cite_600"


def test_bmmc_cite_contents():
    mdata = cmn.datasets.bmmc_cite()
    assert mdata.shape == (600, 1134)
    assert mdata["rna"].shape == (600, 1000)
    assert mdata["prot"].shape == (600, 134)
    assert set(mdata.obs["batch"]) == {"s1d1", "s1d2"}
    assert (mdata.obs["batch"] == "s1d1").sum() == 311
    assert mdata.obs["cell_type"].nunique() == 41
    assert "counts" in mdata["rna"].layers
    assert "counts" in mdata["prot"].layers
    assert mdata["rna"].var["gene_ids"].str.startswith("ENSG").all()
    assert (mdata["rna"].obs_names == mdata.obs_names).all()
    assert "GSE194122" in mdata.uns["dataset"]["source"]


def test_bmmc_cite_loads_without_the_shared_name_warning():
    """40 antibodies are named after their gene (CD4, CD14): mudata's "var_names are not unique" is kept out."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mdata = cmn.datasets.bmmc_cite()
    assert not mdata.var_names.is_unique  # the names are shared: the warning had something to say


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/bmmc_cite_600 is not beside the repository")
def test_bmmc_cite_matches_source():
    mdata = cmn.datasets.bmmc_cite()
    rna = ad.read_h5ad(SHARED / "rna.h5ad")
    adt = ad.read_h5ad(SHARED / "adt.h5ad")
    np.testing.assert_allclose(mdata["rna"].X.toarray(), rna.X.toarray(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mdata["prot"].X, adt.X.toarray(), rtol=1e-6, atol=1e-6)
    assert list(mdata["prot"].var_names) == list(adt.var_names)
