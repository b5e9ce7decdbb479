"""Prediction of a dask RNA matrix: lazy ``map_blocks`` predictions equal the in-memory ones, on a cluster too."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import sparse

import crossmodalnet as cmn

da = pytest.importorskip("dask.array")

TOL = {"rtol": 1e-5, "atol": 1e-6}
CHUNK = 41  # does not divide the number of cells


@pytest.fixture(scope="module")
def model(covariate_model):
    return covariate_model


def _rna(model, *, genes=None) -> ad.AnnData:
    """The model's cells (shuffled) as an in-memory CSR AnnData with time and batch in ``obs``."""
    order = np.random.default_rng(1).permutation(model.adata.n_obs)
    rna = model.adata["rna"][order].copy()
    for col in ("time", "batch"):
        rna.obs[col] = model.adata.obs[col].reindex(rna.obs_names).to_numpy()
    rna.layers.clear(keep_x=True)
    if genes is not None:
        rna = rna[:, genes].copy()
    rna.X = sparse.csr_matrix(rna.X, dtype=np.float32)
    return rna


def _expected(model, rna: ad.AnnData) -> np.ndarray:
    mem = cmn.pp.to_mudata(rna.copy())
    cmn.tl.predict_protein(mem, model)
    return mem.obsm["cmn_protein"].to_numpy()


def _lazy(rna: ad.AnnData, path) -> ad.AnnData:
    """``rna`` with its X read lazily from zarr (sparse CSR chunks) by :func:`anndata.experimental.read_elem_lazy`."""
    rna.write_zarr(path)
    lazy = ad.experimental.read_elem_lazy(zarr.open_group(path)["X"], chunks=(CHUNK, rna.n_vars))
    return ad.AnnData(X=lazy, obs=rna.obs.copy(), var=rna.var.copy())


@pytest.mark.parametrize("source", ["dense", "lazy-zarr-csr"])
def test_dask_predictions_equal_in_memory(model, tmp_path, source):
    rna = _rna(model)
    want = _expected(model, rna)
    if source == "dense":
        query = ad.AnnData(X=da.from_array(rna.X.toarray(), chunks=(CHUNK, 7)), obs=rna.obs.copy(), var=rna.var.copy())
    else:
        query = _lazy(rna, tmp_path / "rna.zarr")
        assert sparse.issparse(query.X.blocks[0].compute())
    mdata = cmn.pp.to_mudata(query)

    pred = model.predict_protein(mdata)
    assert isinstance(pred, da.Array)
    assert pred.shape == (rna.n_obs, model.n_proteins)
    assert pred.dtype == np.float32
    assert pred.chunks[0] == query.X.chunks[0]
    np.testing.assert_allclose(pred.compute(), want, **TOL)
    # the predictor is one key of the graph, shared by every block's task
    graph = dict(pred.__dask_graph__())
    assert sum(str(key).startswith("BlockPredictor-") for key in graph) == 1

    cmn.tl.predict_protein(mdata, model)
    lazy = mdata.obsm["cmn_protein"]
    assert isinstance(lazy, da.Array)
    assert list(mdata.uns["cmn_protein"]["protein_names"]) == list(model.protein_names)
    da.to_zarr(lazy, tmp_path / "pred_dask.zarr")
    np.testing.assert_allclose(da.from_zarr(tmp_path / "pred_dask.zarr").compute(), want, **TOL)


def test_dask_gene_matching_and_counts_per_block(model, tmp_path):
    """Raw counts with the genes reversed and two missing: normalised and matched inside each block's task."""
    genes = list(model.adata["rna"].var_names[::-1][2:])
    rna = _rna(model, genes=genes)
    counts = model.adata["rna"].layers["counts"]
    # integer counts above 20 are recognised as raw counts, and normalised as the model's RNA was
    rna.X = 3 * sparse.csr_matrix(
        counts[model.adata.obs_names.get_indexer(rna.obs_names)][:, model.adata["rna"].var_names.get_indexer(genes)],
        dtype=np.float32,
    )
    with pytest.warns(UserWarning, match="filled with zeros"):
        want = _expected(model, rna)
    mdata = cmn.pp.to_mudata(_lazy(rna, tmp_path / "counts.zarr"))
    with pytest.warns(UserWarning, match="filled with zeros"):
        cmn.tl.predict_protein(mdata, model)
    np.testing.assert_allclose(mdata.obsm["cmn_protein"].compute(), want, **TOL)


@pytest.mark.parametrize("suffix", [".zarr", ".h5ad"])
def test_dask_to_store(model, tmp_path, suffix):
    rna = _rna(model)
    want = _expected(model, rna)
    mdata = cmn.pp.to_mudata(_lazy(rna, tmp_path / "rna.zarr"))
    out = tmp_path / f"pred{suffix}"
    cmn.tl.predict_protein(mdata, model, out=out)
    got = ad.read_zarr(out) if suffix == ".zarr" else ad.read_h5ad(out)
    assert got.obs_names.equals(rna.obs_names)
    assert list(got.var_names) == list(model.protein_names)
    np.testing.assert_allclose(got.X, want, **TOL)
    assert "cmn_protein" not in mdata.obsm


def test_dask_refusals(model):
    rna = _rna(model)
    query = ad.AnnData(X=da.from_array(rna.X.toarray(), chunks=(CHUNK, -1)), obs=rna.obs.copy(), var=rna.var.copy())
    mdata = cmn.pp.to_mudata(query)
    with pytest.raises(ValueError, match="not supported for a dask RNA matrix"):
        cmn.tl.predict_protein(mdata, model, uncertainty=True)
    with pytest.raises(ValueError, match="not supported for a dask RNA matrix"):
        model.predict_protein(mdata, return_uncertainty=True)
    # cells of the MuData in another order than the RNA rows
    other = ad.AnnData(obs=pd.DataFrame(index=rna.obs_names[::-1].copy()))
    shuffled = md.MuData({"other": other, "rna": query})
    for col in ("time", "batch"):
        shuffled.obs[col] = rna.obs[col].reindex(shuffled.obs_names).to_numpy()
    assert not shuffled.obs_names.equals(rna.obs_names)
    with pytest.raises(ValueError, match="same order"):
        model.predict_protein(shuffled)


@pytest.mark.slow  # starting two worker processes that import torch takes 20-50 s on 2 cores
def test_dask_on_a_distributed_local_cluster(model, tmp_path):
    """Two worker processes: the model travels to them inside the graph; results equal the in-memory ones."""
    distributed = pytest.importorskip("distributed")
    rna = _rna(model)
    want = _expected(model, rna)
    mdata = cmn.pp.to_mudata(_lazy(rna, tmp_path / "rna.zarr"))
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pred = model.predict_protein(mdata)
        got = client.compute(pred).result()
        np.testing.assert_allclose(got, want, **TOL)
        # the zarr store is written by the workers
        out = tmp_path / "pred.zarr"
        cmn.tl.predict_protein(mdata, model, out=out)
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(ad.read_zarr(out).X, want, **TOL)
