"""Training on a reference on disk (``mudata.read_h5mu(path, backed="r")``) gives the in-memory model.

The backed RNA ``.X`` is anndata's CSR dataset and the proteins an :class:`h5py.Dataset`; setup checks,
the closed-form fits and the mini-batches read them by rows. With the same seed on the CPU, the weights,
history and predictions must equal those trained from the same file read into memory.
"""

from __future__ import annotations

import hashlib

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scvi
import torch
from scipy import sparse

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet
from crossmodalnet.model._data import CrossmodalDataManager

TRAIN = {
    "max_epochs": 2,
    "batch_size": 64,
    "disentangle_epochs": 2,
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    mdata = cmn.datasets.synthetic_cite(n_obs=300, n_genes=40, n_proteins=5, n_time_points=3, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    out = tmp_path_factory.mktemp("backed_train") / "ref.h5mu"
    mdata.write(out)
    return out


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train(mdata, *, init=None, **train):
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    scvi.settings.seed = 0
    model = CrossmodalNet(mdata, n_latent=8, **(init or {}))
    model.train(**{**TRAIN, **train})
    return model


def _assert_same_model(a: CrossmodalNet, b: CrossmodalNet) -> None:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=1e-6, msg=key)
    for key in a.history_:
        np.testing.assert_allclose(a.history_[key].to_numpy(), b.history_[key].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.predict_protein().to_numpy(), b.predict_protein().to_numpy(), rtol=0, atol=1e-6)


def test_backed_training_equals_in_memory(path):
    backed = md.read_h5mu(path, backed="r")
    assert isinstance(backed["rna"].X, ad.abc.CSRDataset)
    before = _sha(path)
    columns = list(backed.obs.columns)
    model_backed = _train(backed)
    model_memory = _train(md.read_h5mu(path))
    assert model_backed.linear_path_genes_["choice"] == model_memory.linear_path_genes_["choice"]
    assert model_backed.split_["disentangle"]["epochs"] == 2
    _assert_same_model(model_backed, model_memory)
    # the file and the user's MuData are left as they were
    assert _sha(path) == before
    # beside scvi-tools' own `_scvi_*` bookkeeping columns, as for an in-memory MuData
    assert [c for c in backed.obs.columns if not c.startswith("_scvi_")] == columns
    assert isinstance(backed["rna"].X, ad.abc.CSRDataset)


def test_backed_training_sparse_batches_and_unsorted_split(path):
    """Mini-batches as sparse tensors, and a given split in no particular order (read in sorted chunks)."""
    gen = np.random.default_rng(1)
    cells = gen.permutation(300)
    split = {"datasplitter_kwargs": {"external_indexing": [cells[:240], cells[240:270], cells[270:]]}}
    a = _train(md.read_h5mu(path, backed="r"), sparse_batches=True, disentangle_epochs=0, **split)
    b = _train(md.read_h5mu(path), sparse_batches=True, disentangle_epochs=0, **split)
    _assert_same_model(a, b)


def test_backed_svd_input_reduction_streams(path):
    """The SVD of a backed matrix comes from a streamed genes × genes product: the exact components of the
    training cells, with the signs and (up to sklearn's randomised approximation) the values of the in-memory fit."""
    init = {"input_reduction": "svd", "n_input_features": 4}
    a = _train(md.read_h5mu(path, backed="r"), init=init, max_epochs=1, disentangle_epochs=0)
    b = _train(md.read_h5mu(path), init=init, max_epochs=1, disentangle_epochs=0)
    X = md.read_h5mu(path)["rna"].X[np.sort(a.train_indices_)].toarray().astype(np.float64)
    vt = np.linalg.svd(X, full_matrices=False)[2][:4]
    vt *= np.sign(vt[np.arange(4), np.argmax(np.abs(vt), axis=1)])[:, None]
    got = a.module.input_projection.numpy().astype(np.float64)
    np.testing.assert_allclose(got, vt.T, rtol=0, atol=1e-5)
    cosine = (got * b.module.input_projection.numpy()).sum(axis=0)
    np.testing.assert_array_less(0.99, cosine)


def test_backed_hvg_input_reduction_is_refused(path):
    backed = md.read_h5mu(path, backed="r")
    with pytest.raises(ValueError, match=r"input_reduction='hvg'.*backed.*'screen'"):
        _train(backed, init={"input_reduction": "hvg", "n_input_features": 10}, max_epochs=1)


def test_backed_h5ad_rna_beside_in_memory_proteins(path, tmp_path):
    """An RNA ``.h5ad`` opened backed with anndata, proteins in memory: the same model as from memory."""
    full = md.read_h5mu(path)
    full["rna"].write_h5ad(tmp_path / "rna.h5ad")
    rna = ad.read_h5ad(tmp_path / "rna.h5ad", backed="r")
    mdata = md.MuData({"rna": rna, "prot": full["prot"].copy()})
    mdata.obs["time"] = full.obs["time"].to_numpy()
    assert isinstance(mdata["rna"].X, ad.abc.CSRDataset)
    _assert_same_model(_train(mdata, disentangle_epochs=0), _train(full, disentangle_epochs=0))


def test_backed_setup_finds_non_finite_values(path, tmp_path):
    """The finite-value check reads the backed matrix by row blocks and still finds a NaN in the last rows."""
    mdata = md.read_h5mu(path)
    X = mdata["rna"].X.tocsr().copy()
    X.data[-1] = np.nan
    mdata["rna"].X = X
    mdata.write(tmp_path / "nan.h5mu")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        CrossmodalNet.setup_mudata(md.read_h5mu(tmp_path / "nan.h5mu", backed="r"), time_key="time")


@pytest.mark.parametrize("load_sparse_tensor", [False, True])
def test_backed_mini_batch_rows_in_requested_order(path, load_sparse_tensor):
    backed = md.read_h5mu(path, backed="r")
    memory = md.read_h5mu(path)
    CrossmodalNet.setup_mudata(backed, time_key="time")
    CrossmodalNet.setup_mudata(memory, time_key="time")
    managers = [CrossmodalNet._get_most_recent_anndata_manager(m, required=True) for m in (backed, memory)]
    assert all(isinstance(m, CrossmodalDataManager) for m in managers)
    rows = [17, 3, 250, 4, 120]
    a, b = (m.create_torch_dataset(load_sparse_tensor=load_sparse_tensor)[rows] for m in managers)
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            x, y = x.to_dense().numpy(), y.to_dense().numpy()
        np.testing.assert_array_equal(x, y, err_msg=key)
    X = memory["rna"].X
    expected = X[rows].toarray() if sparse.issparse(X) else X[rows]
    got = a["X"].to_dense().numpy() if isinstance(a["X"], torch.Tensor) else a["X"]
    np.testing.assert_allclose(got, expected)


def test_backed_uncertainty_calibration_equals_in_memory(path):
    """Calibration on the validation cells and the training-cell sketches read the backed file by rows."""
    models = [_train(md.read_h5mu(path, backed=b), max_epochs=1, disentangle_epochs=0) for b in ("r", False)]
    a, b = (m.predict_protein(return_uncertainty=True, rng=0) for m in models)
    for field in ("mean", "std", "lower", "upper"):
        np.testing.assert_allclose(getattr(a, field).to_numpy(), getattr(b, field).to_numpy(), rtol=0, atol=1e-6)


def test_zarr_sparse_dataset_trains_as_in_memory(path, tmp_path):
    """A zarr store's CSR matrix opened with ``anndata.io.sparse_dataset`` trains as the file read into memory."""
    zarr = pytest.importorskip("zarr")
    full = md.read_h5mu(path)
    full["rna"].write_zarr(tmp_path / "rna.zarr")
    rna = full["rna"].copy()
    rna.X = ad.io.sparse_dataset(zarr.open(tmp_path / "rna.zarr", mode="r")["X"])
    mdata = md.MuData({"rna": rna, "prot": full["prot"].copy()})
    mdata.obs["time"] = full.obs["time"].to_numpy()
    _assert_same_model(
        _train(mdata, max_epochs=1, disentangle_epochs=0), _train(full, max_epochs=1, disentangle_epochs=0)
    )


def test_dask_rna_training_is_refused(path):
    pytest.importorskip("dask")
    full = md.read_h5mu(path)
    full["rna"].X = ad.experimental.read_elem_lazy(md.read_h5mu(path, backed="r")["rna"].file["X"])
    with pytest.raises(ValueError, match=r"dask array.*sparse_dataset"):
        _train(full, max_epochs=1)
