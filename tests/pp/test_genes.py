from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import crossmodalnet as cmn
from crossmodalnet.model._query import QueryMixin


class _Reference(QueryMixin):
    """A stand-in for a trained model: the model's query mixin over gene names, keys and training data."""

    def __init__(self, gene_names, adata):
        self.gene_names, self.adata = gene_names, adata

    def get_setup_arg(self, name):
        return {"rna_key": "rna", "rna_layer": None}[name]


@pytest.fixture
def reference(norm_mdata):
    return _Reference(pd.Index(norm_mdata["rna"].var_names), norm_mdata)


def _query(norm_mdata, *, n_keep, seed=0):
    rng = np.random.default_rng(seed)
    genes = rng.permutation(norm_mdata["rna"].var_names)[:n_keep]
    return cmn.pp.to_mudata(norm_mdata["rna"][:, genes].copy()), genes


def test_harmonize_shuffled_subset(norm_mdata, reference):
    query, genes = _query(norm_mdata, n_keep=45)
    with pytest.warns(UserWarning, match="15 of the model's 60 genes are missing"):
        cmn.pp.harmonize_genes(query, reference)
    rna = query["rna"]
    assert list(rna.var_names) == list(reference.gene_names)
    full = norm_mdata["rna"].X.toarray()
    X = rna.X.toarray()
    kept = reference.gene_names.isin(genes)
    np.testing.assert_array_equal(X[:, kept], full[:, kept])
    assert (X[:, ~kept] == 0).all()
    np.testing.assert_array_equal(
        rna.layers["counts"][:, kept].toarray(), norm_mdata["rna"].layers["counts"][:, kept].toarray()
    )
    info = query.uns["cmn_harmonize"]
    assert info["coverage"] == pytest.approx(0.75)
    assert (info["n_matched"], info["n_filled"], info["n_model_genes"]) == (45, 15, 60)
    assert set(info["filled_genes"]) == set(reference.gene_names[~kept])
    assert info["match_on"] == "var_names"
    # var columns carried over, missing genes filled with ""
    assert (rna.var.loc[~kept, "gene_ids"] == "").all()
    assert query.n_vars == 60


def test_harmonize_keeps_varm(norm_mdata, reference):
    query, genes = _query(norm_mdata, n_keep=50)
    query["rna"].varm["scores"] = pd.DataFrame({"a": np.arange(50.0)}, index=query["rna"].var_names)
    query["rna"].varm["loadings"] = np.ones((50, 2))
    with pytest.warns(UserWarning, match="filled"):
        cmn.pp.harmonize_genes(query, reference)
    scores = query["rna"].varm["scores"]
    assert list(scores.index) == list(reference.gene_names)
    kept = reference.gene_names.isin(genes)
    assert scores.loc[~kept, "a"].isna().all()
    np.testing.assert_array_equal(scores.loc[list(genes), "a"], np.arange(50.0))
    assert np.isnan(query["rna"].varm["loadings"][~kept]).all()


def test_harmonize_by_gene_ids(norm_mdata, reference):
    query, genes = _query(norm_mdata, n_keep=50, seed=1)
    rna = query["rna"]
    rna.var["gene_ids"] = [f"{g}.7" for g in rna.var["gene_ids"]]  # Ensembl version suffix
    rna.var_names = [f"SYMBOL{i}" for i in range(rna.n_vars)]  # names that do not match
    with pytest.raises(ValueError, match=r"only 0 of the model's 60 genes \(0.0%\).*gene_id_column"):
        cmn.pp.harmonize_genes(query, reference)
    assert query["rna"].n_vars == 50  # unchanged on error
    with pytest.warns(UserWarning, match="filled with zeros"):
        out = cmn.pp.harmonize_genes(query, reference, gene_id_column="gene_ids", copy=True)
    assert out.uns["cmn_harmonize"]["coverage"] == pytest.approx(50 / 60)
    assert out.uns["cmn_harmonize"]["match_on"] == "gene_ids"
    assert list(out["rna"].var_names) == list(reference.gene_names)
    assert query["rna"].n_vars == 50
    assert "cmn_harmonize" not in query.uns
    # the model's IDs can also be given explicitly (e.g. for a model loaded without data)
    bare = _Reference(reference.gene_names, None)
    with pytest.raises(ValueError, match="model_gene_ids"):
        cmn.pp.harmonize_genes(query, bare, gene_id_column="gene_ids", copy=True)
    ids = norm_mdata["rna"].var["gene_ids"].to_numpy()
    with pytest.warns(UserWarning, match="filled"):
        out = cmn.pp.harmonize_genes(query, bare, gene_id_column="gene_ids", model_gene_ids=ids, copy=True)
    assert out.uns["cmn_harmonize"]["n_matched"] == 50


def test_harmonize_min_coverage(norm_mdata, reference):
    query, _ = _query(norm_mdata, n_keep=20)
    with pytest.raises(ValueError, match=r"20 of the model's 60 genes \(33.3%\).*min_coverage=0.5"):
        cmn.pp.harmonize_genes(query, reference)
    with pytest.warns(UserWarning, match="40 of the model's 60"):
        cmn.pp.harmonize_genes(query, reference, min_coverage=0.3)
    assert query["rna"].n_vars == 60


def test_harmonize_identical_and_extra_genes(norm_mdata, reference):
    query = norm_mdata.copy()
    cmn.pp.harmonize_genes(query, reference)
    assert query.uns["cmn_harmonize"]["coverage"] == 1.0
    assert query.uns["cmn_harmonize"]["n_unused"] == 0
    # extra genes are dropped and counted, never silently
    import anndata as ad

    rna = norm_mdata["rna"]
    extra = ad.AnnData(
        np.ones((rna.n_obs, 3), dtype=np.float32), obs=rna.obs[[]], var=pd.DataFrame(index=["x1", "x2", "x3"])
    )
    wide = cmn.pp.to_mudata(ad.concat([rna, extra], axis=1, merge="first"))
    cmn.pp.harmonize_genes(wide, reference)
    assert wide.uns["cmn_harmonize"]["n_unused"] == 3
    assert list(wide["rna"].var_names) == list(reference.gene_names)


def test_harmonize_duplicated_model_gene_raises(norm_mdata, reference):
    rna = norm_mdata["rna"].copy()
    names = list(rna.var_names)
    names[1] = names[0]
    rna.var_names = names
    query = cmn.pp.to_mudata(rna)
    before = query.copy()
    with pytest.raises(
        ValueError, match=r"1 of the model's genes appear more than once .*\['gene_0000'\].*var_names_make_unique"
    ):
        cmn.pp.harmonize_genes(query, reference, min_coverage=0.5)
    assert list(query["rna"].var_names) == list(before["rna"].var_names)
    np.testing.assert_array_equal(query["rna"].X.toarray(), before["rna"].X.toarray())
    assert "cmn_harmonize" not in query.uns
    # by ID as well
    rna = norm_mdata["rna"].copy()
    rna.var["gene_ids"] = rna.var["gene_ids"].astype(str)
    rna.var.iloc[3, rna.var.columns.get_loc("gene_ids")] = rna.var["gene_ids"].iloc[2]
    with pytest.raises(ValueError, match=r"more than once .* by gene_ids .*deduplicate `var\['gene_ids'\]`"):
        cmn.pp.harmonize_genes(cmn.pp.to_mudata(rna), reference, gene_id_column="gene_ids")


def test_harmonize_duplicated_unused_gene_keeps_columns_aligned(norm_mdata, reference):
    import anndata as ad
    from scipy import sparse

    rna = norm_mdata["rna"]
    rng = np.random.default_rng(1)
    genes = list(rng.permutation(rna.var_names))
    extra = rng.random((rna.n_obs, 3)).astype(np.float32)
    X = sparse.hstack([sparse.csr_matrix(extra), rna[:, genes].X], format="csr")
    # a gene the model does not use, twice, before every model gene
    query = cmn.pp.to_mudata(ad.AnnData(X, obs=rna.obs[[]], var=pd.DataFrame(index=["x1", "x1", "x2", *genes])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmn.pp.harmonize_genes(query, reference)
    # nothing to warn about: every model gene is found once (mudata's own warnings aside)
    assert not [str(w.message) for w in caught if "harmonize_genes" in str(w.message)]
    assert list(query["rna"].var_names) == list(reference.gene_names)
    # every column holds the values of the gene it is named after
    np.testing.assert_array_equal(query["rna"].X.toarray(), rna.X.toarray())
    assert query.uns["cmn_harmonize"]["n_unused"] == 3


@pytest.mark.parametrize("layout", ["dense", "csr", "h5py"])
def test_align_matrix_layouts(tmp_path, layout):
    import h5py
    from scipy import sparse

    from crossmodalnet.pp._genes import align_matrix

    X = np.arange(1, 31, dtype=np.float32).reshape(6, 5)
    idx = np.array([4, -1, 0, 2])
    expected = np.column_stack([X[:, 4], np.zeros(6), X[:, 0], X[:, 2]])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        stored = {
            "dense": X,
            "csr": sparse.csr_matrix(X),
            "h5py": f.create_dataset("X", data=X),
        }[layout]
        out = align_matrix(stored, idx, chunk_size=4)  # a backed matrix is read in two chunks
        assert sparse.issparse(out) == (layout == "csr")
        np.testing.assert_array_equal(out.toarray() if sparse.issparse(out) else out, expected)
        if layout == "h5py":
            empty = align_matrix(f.create_dataset("empty", shape=(0, 5), dtype=np.float32), idx)
            assert empty.shape == (0, 4)
            assert empty.dtype == np.float32
