from __future__ import annotations

from collections.abc import Mapping

import mudata as md
import numpy as np
import pandas as pd

import crossmodalnet as cmn


def _assert_same(a, b, path="uns"):
    """Equal after an HDF5 round trip (lists come back as arrays)."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping), path
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, np.ndarray) and a.dtype.kind in "fc":
        np.testing.assert_allclose(a, np.asarray(b), err_msg=path)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg=path)
    elif isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or a == b, path
    else:
        assert a == b, path


def test_h5mu_round_trip_keeps_every_output(mdata, trained_model, gene_sets, tmp_path):
    cmn.tl.predict_protein(mdata, trained_model)
    cmn.tl.basal_embedding(mdata, trained_model)
    cmn.tl.time_embedding(mdata, trained_model, interpolate=[2.5])
    cmn.tl.saliency(mdata, trained_model)
    cmn.tl.enrichment(mdata, protein=["prot_000", "prot_001"], gene_sets=gene_sets, permutation_num=20)
    cmn.pp.harmonize_genes(mdata, trained_model)
    path = tmp_path / "out.h5mu"
    mdata.write_h5mu(path)
    back = md.read_h5mu(path)

    pd.testing.assert_frame_equal(back.obsm["cmn_protein"], mdata.obsm["cmn_protein"])
    np.testing.assert_array_equal(back.obsm["X_cmn_basal"], mdata.obsm["X_cmn_basal"])
    pd.testing.assert_frame_equal(back["rna"].varm["cmn_saliency"], mdata["rna"].varm["cmn_saliency"])
    for key in ("cmn_protein", "cmn_basal", "cmn_time", "cmn_saliency", "cmn_enrichment", "cmn_harmonize"):
        _assert_same(mdata.uns[key], back.uns[key], key)
    for key in ("cmn_preprocessing",):
        _assert_same(mdata["prot"].uns[key], back["prot"].uns[key], key)
