"""Sparse first layer, sparse training batches and the optional HVG / SVD input reduction."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scvi
import torch
from anndata import AnnData
from scipy import sparse

from crossmodalnet.model import CrossmodalNet
from crossmodalnet.module import CrossmodalModule, Encoder

TRAIN = {"batch_size": 64, "accelerator": "cpu", "enable_progress_bar": False}


def _csr_tensor(X: sparse.csr_matrix) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        torch.from_numpy(X.indptr.astype(np.int64)),
        torch.from_numpy(X.indices.astype(np.int64)),
        torch.from_numpy(X.data.astype(np.float32)),
        size=X.shape,
    )


@pytest.fixture
def setup_mdata(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


def test_encoder_sparse_forward_and_backward_match_dense():
    torch.manual_seed(0)
    X = sparse.random(40, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    enc = Encoder(30, 8, dropout_rate=0.0).eval()
    dense_out = enc(torch.from_numpy(X.toarray()))
    sparse_out = enc(_csr_tensor(X))
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-5, atol=1e-6)
    # the first-layer weight gets the same gradient through the sparse product
    enc.train()
    enc.zero_grad()
    enc(torch.from_numpy(X.toarray())).pow(2).sum().backward()
    g_dense = enc.first_layer.weight.grad.clone()
    enc.zero_grad()
    enc(_csr_tensor(X)).pow(2).sum().backward()
    torch.testing.assert_close(enc.first_layer.weight.grad, g_dense, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_reduction": "pca", "n_input_features": 5}, "must be 'auto', None, 'hvg', 'screen' or 'svd'"),
        ({"input_reduction": "hvg", "n_input_features": 60}, "n_input_features"),
        ({"input_reduction": "svd", "n_input_features": 0}, "n_input_features"),
        ({"input_reduction": "hvg", "n_input_features": 10, "standardize_input": True}, "not both"),
    ],
)
def test_input_reduction_validation(setup_mdata, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossmodalNet(setup_mdata, n_latent=8, **kwargs)


def test_module_reduction_requires_matching_values():
    m = CrossmodalModule(20, 3, [2], n_latent=4, input_reduction="hvg", n_input_features=5)
    with pytest.raises(ValueError, match="5 gene indices"):
        m.fit_input_reduction(torch.arange(6))
    plain = CrossmodalModule(20, 3, [2], n_latent=4)
    with pytest.raises(ValueError, match="no input reduction"):
        plain.fit_input_reduction(torch.arange(5))
    # a model without reduction keeps the state-dict keys of earlier versions
    assert not any(k.startswith("input_index") or k.startswith("input_projection") for k in plain.state_dict())


def test_hvg_reduction_is_fitted_on_training_cells(setup_mdata):
    scvi.settings.seed = 0
    # without the default linear path, which takes every gene (its saliency is not confined to the HVGs)
    model = CrossmodalNet(setup_mdata, n_latent=8, input_reduction="hvg", n_input_features=20, linear_path=False)
    assert model.module.encoder.first_layer.in_features == 20
    assert not bool(model.module.input_reduction_fitted)
    model.train(max_epochs=2, **TRAIN)
    assert bool(model.module.input_reduction_fitted)
    idx = model.module.input_index.numpy()
    assert idx.shape == (20,)
    assert np.all(np.diff(idx) > 0)
    # scanpy's seurat flavour on the training cells only; at a tie on its cut-off scanpy flags more than
    # n_top_genes (which side of it a gene falls on depends on the floating-point rounding of the machine), and the
    # model keeps exactly 20: scanpy's genes with the highest normalised dispersion
    X = setup_mdata["rna"].X
    train = AnnData(X[np.sort(model.train_indices)])
    sc.pp.highly_variable_genes(train, n_top_genes=20, flavor="seurat")
    flagged = np.flatnonzero(train.var["highly_variable"].to_numpy())
    assert flagged.size >= 20
    assert np.isin(idx, flagged).all()
    disp = train.var["dispersions_norm"].to_numpy(dtype=float)
    left_out = np.setdiff1d(flagged, idx)
    assert left_out.size == flagged.size - 20
    assert np.all(disp[left_out] <= disp[idx].min() + 1e-6)
    # genes outside the selection get exactly zero saliency; predictions have the right shape
    sal = model.get_saliency(proteins=list(model.protein_names[:2]))
    outside = np.setdiff1d(np.arange(model.n_genes), idx)
    assert np.all(sal.to_numpy()[outside] == 0)
    assert np.any(sal.to_numpy()[idx] != 0)
    pred = model.predict_protein()
    assert pred.shape == (setup_mdata.n_obs, model.n_proteins)
    assert np.isfinite(pred.to_numpy()).all()
    # retraining does not refit the reduction
    model.train(max_epochs=1, split_seed=5, **TRAIN)
    np.testing.assert_array_equal(model.module.input_index.numpy(), idx)


def test_svd_reduction_sparse_batches_and_round_trip(setup_mdata, tmp_path):
    from sklearn.decomposition import TruncatedSVD

    scvi.settings.seed = 0
    model = CrossmodalNet(setup_mdata, n_latent=8, input_reduction="svd", n_input_features=12)
    model.train(max_epochs=3, sparse_batches=True, **TRAIN)
    P = model.module.input_projection.numpy()
    X = setup_mdata["rna"].X
    svd = TruncatedSVD(n_components=12, random_state=0).fit(X[np.sort(model.train_indices)])
    np.testing.assert_allclose(P, svd.components_.T, rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.history["loss_train"].to_numpy()).all()
    pred = model.predict_protein()
    model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", setup_mdata)
    assert loaded.module.input_reduction == "svd"
    torch.testing.assert_close(loaded.module.input_projection, model.module.input_projection, rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.predict_protein().to_numpy(), pred.to_numpy())
    assert "svd → 12 features" in repr(loaded)


def test_sparse_batches_train_the_same_model_up_to_rounding(setup_mdata):
    def fit(sparse_batches):
        scvi.settings.seed = 0
        m = CrossmodalNet(setup_mdata, n_latent=8)
        m.train(max_epochs=2, sparse_batches=sparse_batches, **TRAIN)
        return m

    assert sparse.issparse(setup_mdata["rna"].X)
    dense, sparse_ = fit(False), fit(True)
    np.testing.assert_allclose(
        sparse_.predict_protein().to_numpy(), dense.predict_protein().to_numpy(), rtol=1e-3, atol=1e-3
    )


def test_batch_size_must_be_positive(trained_model):
    with pytest.raises(ValueError, match="batch_size"):
        trained_model.predict_protein(batch_size=0)
