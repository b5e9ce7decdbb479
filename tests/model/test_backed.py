"""Prediction, basal embedding and saliency on backed MuData (``mudata.read_h5mu(path, backed="r")``).

With mudata 0.3.10 / anndata 0.12, a backed MuData keeps every modality's ``.X`` on disk: a sparse
matrix is an :class:`anndata.abc.CSRDataset`, a dense one an :class:`h5py.Dataset`. The getters read one
sorted chunk of rows at a time from it, so they must give the in-memory results, also when the MuData's
cell order is not the order of the rows in the file. Writers store their results in memory
(``.obsm``/``.uns``/``.varm`` of the backed MuData); the read-only file is left as it is.
"""

from __future__ import annotations

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pytest
import scvi
from scipy import sparse

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet

N_OBS = 120
BATCH = 37  # does not divide N_OBS
TOL = {"rtol": 1e-5, "atol": 1e-6}
LAYOUTS = ("csr", "dense")


@pytest.fixture(scope="module")
def model():
    """A tiny CrossmodalNet (CPU, one epoch): accuracy does not matter here, only that it is trained."""
    mdata = cmn.datasets.synthetic_cite(n_obs=N_OBS, n_genes=30, n_proteins=4, n_time_points=3, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8)
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    return model


def _rna(model, layout: str, order: np.ndarray) -> ad.AnnData:
    """The model's registered RNA (log-normalised, sparse CSR) in cell order ``order``, as ``layout``."""
    rna = model.adata["rna"][order].copy()
    rna.obs["time"] = model.adata.obs["time"].reindex(rna.obs_names).to_numpy()
    rna.X = sparse.csr_matrix(rna.X, dtype=np.float32) if layout == "csr" else np.asarray(rna.X.toarray(), np.float32)
    rna.layers.clear()
    return rna


def _cite(model, layout: str, rng: int = 0) -> md.MuData:
    """In-memory CITE-seq MuData whose cell order (that of its first modality) differs from its RNA rows."""
    gen = np.random.default_rng(rng)
    n = model.adata.n_obs
    prot = model.adata["prot"][gen.permutation(n)].copy()
    rna = _rna(model, layout, gen.permutation(n))
    mdata = md.MuData({"prot": prot, "rna": rna})
    mdata.obs["time"] = model.adata.obs["time"].reindex(mdata.obs_names).to_numpy()
    assert not mdata.obs_names.equals(rna.obs_names)
    return mdata


def _backed(mdata: md.MuData, path) -> md.MuData:
    mdata.write_h5mu(path)
    return md.read_h5mu(path, backed="r")


@pytest.fixture
def close_files():
    opened: list[md.MuData] = []
    yield opened
    for mdata in opened:
        mdata.file.close()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_backed_rna_stays_on_disk(model, tmp_path, close_files, layout):
    backed = _backed(_cite(model, layout), tmp_path / "cite.h5mu")
    close_files.append(backed)
    assert backed.isbacked
    assert backed["rna"].isbacked
    assert isinstance(backed["rna"].X, ad.abc.CSRDataset if layout == "csr" else h5py.Dataset)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_getters_match_in_memory(model, tmp_path, close_files, layout):
    mem = _cite(model, layout)
    backed = _backed(mem, tmp_path / "cite.h5mu")
    close_files.append(backed)
    assert backed.obs_names.equals(mem.obs_names)
    assert not backed.obs_names.equals(backed["rna"].obs_names)

    ref = model.predict_protein(mem, batch_size=BATCH)
    pred = model.predict_protein(backed, batch_size=BATCH)
    assert pred.index.equals(mem.obs_names)
    np.testing.assert_allclose(pred.to_numpy(), ref.to_numpy(), **TOL)
    # and both equal the prediction on the model's own (differently ordered) training data
    own = model.predict_protein(batch_size=BATCH).reindex(mem.obs_names)
    np.testing.assert_allclose(pred.to_numpy(), own.to_numpy(), rtol=1e-5, atol=1e-5)
    # a counterfactual time point goes through the same streaming
    np.testing.assert_allclose(
        model.predict_protein(backed, time=model.time_categories[0], batch_size=BATCH).to_numpy(),
        model.predict_protein(mem, time=model.time_categories[0], batch_size=BATCH).to_numpy(),
        **TOL,
    )

    z_ref = model.get_latent_representation(mem, batch_size=BATCH)
    z = model.get_latent_representation(backed, batch_size=BATCH)
    assert z.shape == (mem.n_obs, model.module.n_latent)
    np.testing.assert_allclose(z, z_ref, **TOL)

    cells = np.arange(3, mem.n_obs, 2)  # a subset, in MuData positions
    # saliency batches of 50 (the last one short): fewer batched backward passes, which are slow
    for kwargs in ({}, {"method": "integrated_gradients", "n_steps": 1, "indices": cells}):
        s_ref = model.get_saliency(mem, batch_size=50, **kwargs)
        s = model.get_saliency(backed, batch_size=50, **kwargs)
        assert s.index.equals(s_ref.index)
        np.testing.assert_allclose(s.to_numpy(), s_ref.to_numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rna_only_backed_query(model, tmp_path, close_files, layout):
    order = np.random.default_rng(1).permutation(model.adata.n_obs)
    mem = cmn.pp.to_mudata(_rna(model, layout, order))
    path = tmp_path / "query.h5mu"
    backed = _backed(mem, path)
    close_files.append(backed)
    assert list(backed.mod) == ["rna"]
    assert "time" in backed.obs

    ref = model.predict_protein(mem, batch_size=BATCH)
    pred = model.predict_protein(backed, batch_size=BATCH)
    np.testing.assert_allclose(pred.to_numpy(), ref.to_numpy(), **TOL)
    np.testing.assert_allclose(
        model.get_latent_representation(backed, batch_size=BATCH),
        model.get_latent_representation(mem, batch_size=BATCH),
        **TOL,
    )

    # the writers store their results in the backed MuData (in memory); the read-only file is unchanged
    cmn.tl.predict_protein(backed, model, batch_size=BATCH)
    cmn.tl.basal_embedding(backed, model, batch_size=BATCH)
    cmn.tl.saliency(backed, model, batch_size=N_OBS)
    np.testing.assert_allclose(backed.obsm["cmn_protein"].to_numpy(), ref.to_numpy(), **TOL)
    assert backed.obsm["cmn_protein"].index.equals(mem.obs_names)
    assert list(backed.obsm["cmn_protein"].columns) == list(model.protein_names)
    np.testing.assert_allclose(
        backed.obsm["X_cmn_basal"], model.get_latent_representation(mem, batch_size=BATCH), **TOL
    )
    cmn.tl.saliency(mem, model, batch_size=N_OBS)
    np.testing.assert_allclose(
        backed["rna"].varm["cmn_saliency"].to_numpy(), mem["rna"].varm["cmn_saliency"].to_numpy(), rtol=1e-5, atol=1e-7
    )
    assert {"cmn_protein", "cmn_basal", "cmn_saliency"} <= set(backed.uns)
    with h5py.File(path, "r") as f:
        assert "cmn_protein" not in f["obsm"]
        assert "cmn_protein" not in f["uns"]


def test_predict_writer_scores_backed_proteins(model, tmp_path, close_files):
    """Metrics against a backed (dense, h5py) protein modality whose rows are not in the MuData's cell order."""
    gen = np.random.default_rng(2)
    n = model.adata.n_obs
    mem = md.MuData(
        {"rna": _rna(model, "csr", gen.permutation(n)), "prot": model.adata["prot"][gen.permutation(n)].copy()}
    )
    mem.obs["time"] = model.adata.obs["time"].reindex(mem.obs_names).to_numpy()
    backed = _backed(mem, tmp_path / "cite.h5mu")
    close_files.append(backed)
    assert isinstance(backed["prot"].X, h5py.Dataset)
    assert not backed.obs_names.equals(backed["prot"].obs_names)

    cmn.tl.predict_protein(mem, model, batch_size=BATCH)
    cmn.tl.predict_protein(backed, model, batch_size=BATCH)
    np.testing.assert_allclose(backed.obsm["cmn_protein"].to_numpy(), mem.obsm["cmn_protein"].to_numpy(), **TOL)
    got, want = backed.uns["cmn_protein"]["metrics"], mem.uns["cmn_protein"]["metrics"]
    # the model's own cells: its training and validation cells are left out of the metrics
    assert got["n_cells"] == want["n_cells"] == n - len(model.training_cells)
    for key in ("pearson_protein", "spearman_protein", "pearson_cell", "mse"):
        assert got[key] == pytest.approx(want[key], rel=1e-5)


def test_predict_writer_harmonizes_backed_genes(model, tmp_path, close_files):
    """A backed RNA-only query with the model's genes in another order is aligned, as in memory."""
    rna = _rna(model, "csr", np.arange(model.adata.n_obs))
    mem = cmn.pp.to_mudata(rna[:, rna.var_names[::-1]].copy())
    backed = _backed(mem, tmp_path / "reversed.h5mu")
    close_files.append(backed)

    cmn.tl.predict_protein(mem, model, batch_size=BATCH)
    cmn.tl.predict_protein(backed, model, batch_size=BATCH)
    np.testing.assert_allclose(backed.obsm["cmn_protein"].to_numpy(), mem.obsm["cmn_protein"].to_numpy(), **TOL)
    np.testing.assert_allclose(
        backed.obsm["cmn_protein"].to_numpy(), model.predict_protein(batch_size=BATCH).to_numpy(), **TOL
    )
