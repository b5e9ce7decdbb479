"""Saliency methods checked against values computed by hand on a linear network, and their arguments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import crossmodalnet as cmn


@pytest.fixture(scope="module")
def linear_model(norm_mdata):
    """A trained model whose encoder and decoder are swapped for bias-free linear maps, so ŷ = D(E x + c)."""
    import scvi

    from crossmodalnet.model import CrossmodalNet

    scvi.settings.seed = 0
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    model = CrossmodalNet(mdata, preset="paper", n_latent=4)
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    gen = torch.Generator().manual_seed(0)
    enc = torch.nn.Linear(model.n_genes, 4, bias=False)
    dec = torch.nn.Linear(4, model.n_proteins, bias=False)
    with torch.no_grad():
        enc.weight.copy_(torch.randn(4, model.n_genes, generator=gen))
        dec.weight.copy_(torch.randn(model.n_proteins, 4, generator=gen))
    model.module.encoder, model.module.decoder = enc, dec
    W = (dec.weight @ enc.weight).detach().double().numpy()  # proteins × genes
    X = np.asarray(mdata["rna"].X.toarray() if hasattr(mdata["rna"].X, "toarray") else mdata["rna"].X, np.float64)
    return model, mdata, W, X


def test_gene_moments_are_those_of_the_training_cells(linear_model):
    model, _, _, X = linear_model
    train = np.asarray(model.train_indices)
    assert 150 < train.size < 170  # about 80 % of 200 cells
    assert not np.allclose(X[train].std(0), X.std(0), rtol=1e-3)  # all cells would give other values
    np.testing.assert_allclose(model.gene_moments_["mean"], X[train].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.gene_moments_["sd"], X[train].std(0), rtol=1e-4, atol=1e-6)


def test_gradient_is_the_weight_matrix(linear_model):
    model, mdata, W, X = linear_model
    got = model.get_saliency(mdata, method="gradient", aggregate="sum")
    np.testing.assert_allclose(got.to_numpy(), X.shape[0] * W.T, rtol=1e-4, atol=1e-4)


def test_gradient_x_sd_is_the_weight_matrix_scaled_by_the_training_sd(linear_model):
    model, mdata, W, _ = linear_model
    sd = model.gene_moments_["sd"].astype(np.float64)
    got = model.get_saliency(mdata, method="gradient_x_sd", aggregate="mean")
    np.testing.assert_allclose(got.to_numpy(), W.T * sd[:, None], rtol=1e-4, atol=1e-6)
    assert got.to_numpy().std() > 0


@pytest.mark.parametrize("baseline", ["zeros", "mean"])
@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_baseline_attributions_on_a_linear_net(linear_model, method, baseline):
    """On a linear net both methods give W·(x − b) per cell: check the signed mean and the mean magnitude."""
    model, mdata, W, X = linear_model
    b = model.gene_moments_["mean"].astype(np.float64) if baseline == "mean" else np.zeros(X.shape[1])
    per_cell = W[None, :, :] * (X - b)[:, None, :]  # cells × proteins × genes
    for aggregate, expected in (("mean", per_cell.mean(0)), ("abs_mean", np.abs(per_cell).mean(0))):
        got = model.get_saliency(mdata, method=method, aggregate=aggregate, baseline=baseline, n_steps=3)
        np.testing.assert_allclose(got.to_numpy(), expected.T, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_from_the_mean_cell_sum_to_the_prediction_change(linear_model):
    """Completeness: a cell's attributions over genes add up to ŷ(x) − ŷ(mean training cell)."""
    model, mdata, W, X = linear_model
    mean = model.gene_moments_["mean"].astype(np.float64)
    cell = 7
    got = model.get_saliency(mdata, method="integrated_gradients", baseline="mean", indices=[cell])
    np.testing.assert_allclose(got.sum(axis=0).to_numpy(), W @ (X[cell] - mean), rtol=1e-4, atol=1e-5)


def test_smoothgrad_on_a_linear_net_equals_gradient_x_sd(linear_model):
    model, mdata, _, _ = linear_model
    ref = model.get_saliency(mdata, method="gradient_x_sd")
    got = model.get_saliency(mdata, method="smoothgrad", n_samples=3, noise_scale=0.5)
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-4, atol=1e-5)


def test_smoothgrad_is_seeded(mdata, trained_model):
    """On a non-linear net the noise matters: same seed, same scores; another seed, other scores."""
    kw = {"proteins": ["prot_000", "prot_001"], "method": "smoothgrad", "n_samples": 4, "noise_scale": 0.5}
    a = trained_model.get_saliency(mdata, random_state=3, **kw)
    b = trained_model.get_saliency(mdata, random_state=3, **kw)
    c = trained_model.get_saliency(mdata, random_state=4, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy(), rtol=1e-3, atol=0)
    # no noise: exactly gradient × sd
    zero = trained_model.get_saliency(mdata, **(kw | {"noise_scale": 0.0}))
    ref = trained_model.get_saliency(mdata, proteins=kw["proteins"], method="gradient_x_sd")
    np.testing.assert_allclose(zero.to_numpy(), ref.to_numpy(), rtol=1e-5, atol=1e-7)


def test_tl_saliency_records_method_arguments(mdata, trained_model):
    cmn.tl.saliency(
        mdata, trained_model, method="integrated_gradients", baseline="mean", aggregate="abs_sum", n_steps=2
    )
    meta = mdata.uns["cmn_saliency"]
    assert (meta["method"], meta["baseline"], meta["n_steps"]) == ("integrated_gradients", "mean", 2)
    assert "n_samples" not in meta
    cmn.tl.saliency(mdata, trained_model, method="smoothgrad", n_samples=2, random_state=5)
    meta = mdata.uns["cmn_saliency"]
    assert (meta["n_samples"], meta["noise_scale"], meta["random_state"]) == (2, 0.15, 5)
    assert "baseline" not in meta


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "deeplift"}, "`method` must be one of"),
        ({"method": "gradient", "baseline": "mean"}, "`baseline` applies to"),
        ({"method": "smoothgrad", "baseline": "zeros"}, "`baseline` applies to"),
        ({"method": "integrated_gradients", "baseline": "median"}, "`baseline` must be 'zeros' or 'mean'"),
        ({"method": "smoothgrad", "n_samples": 0}, "`n_samples` must be at least 1"),
        ({"method": "smoothgrad", "noise_scale": -0.1}, "`noise_scale` must be a non-negative"),
        ({"method": "smoothgrad", "noise_scale": float("nan")}, "`noise_scale` must be a non-negative"),
    ],
)
def test_saliency_argument_errors_leave_mdata_untouched(mdata, trained_model, assert_unchanged, kwargs, match):
    before = mdata.copy()
    with pytest.raises(ValueError, match=match):
        cmn.tl.saliency(mdata, trained_model, **kwargs)
    assert_unchanged(before, mdata)
    assert "cmn_saliency" not in mdata.uns


def test_gene_moments_saved_with_the_model(tmp_path, mdata, trained_model):
    from crossmodalnet.model import CrossmodalNet

    trained_model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.gene_moments_["sd"], trained_model.gene_moments_["sd"])
    pd.testing.assert_frame_equal(
        loaded.get_saliency(mdata, method="gradient_x_sd"), trained_model.get_saliency(mdata, method="gradient_x_sd")
    )
    del loaded.gene_moments_
    with pytest.raises(ValueError, match="no gene statistics of its training cells"):
        loaded.get_saliency(mdata, method="gradient_x_sd")


def test_integrated_gradients_completeness_on_the_trained_net(mdata, trained_model):
    """On the non-linear trained net, IG along the path from the mean training cell sums to ŷ(x) − ŷ(mean)."""
    from scipy import sparse

    cell = mdata[3:4].copy()
    mean_cell = cell.copy()
    mean_cell.mod["rna"].X = sparse.csr_matrix(trained_model.gene_moments_["mean"][None, :].astype(np.float32))
    change = trained_model.predict_protein(cell).to_numpy()[0] - trained_model.predict_protein(mean_cell).to_numpy()[0]
    assert np.abs(change).max() > 0.05  # the check below is not trivial
    ig = trained_model.get_saliency(cell, method="integrated_gradients", baseline="mean", n_steps=64)
    np.testing.assert_allclose(ig.sum(axis=0).to_numpy(), change, rtol=0.02, atol=0.01)


@pytest.fixture(scope="module")
def coding_gene_model():
    """Planted coding genes: protein j follows gene j; half the genes barely vary and carry no signal."""
    import anndata as ad
    import mudata as md
    import scvi

    from crossmodalnet.model import CrossmodalNet

    rng = np.random.default_rng(0)
    n_obs, n_genes, n_prot = 400, 40, 5
    sd = np.where(np.arange(n_genes) < 20, 1.0, 0.05)  # genes 20..39: low variance, like housekeeping genes
    X = (2.0 + rng.normal(size=(n_obs, n_genes)) * sd).astype(np.float32)
    Y = (X[:, :n_prot] - 2.0 + 0.3 * rng.normal(size=(n_obs, n_prot))).astype(np.float32)
    genes = [f"g{i}" for i in range(n_genes)]
    rna = ad.AnnData(X, var=pd.DataFrame(index=genes))
    prot = ad.AnnData(Y, var=pd.DataFrame(index=[f"p{i}" for i in range(n_prot)]))
    rna.obs_names = prot.obs_names = [f"c{i}" for i in range(n_obs)]
    mdata = md.MuData({"rna": rna, "prot": prot})
    scvi.settings.seed = 0
    CrossmodalNet.setup_mudata(mdata)
    model = CrossmodalNet(mdata, n_latent=32)
    model.train(max_epochs=30, batch_size=64, accelerator="cpu", enable_progress_bar=False)
    return mdata, model


def test_default_saliency_ranks_the_planted_coding_gene_first(coding_gene_model):
    mdata, model = coding_gene_model
    cmn.tl.saliency(mdata, model)  # the default method and aggregate
    from crossmodalnet.benchmark import coding_gene_rank

    ranks = coding_gene_rank(mdata["rna"].varm["cmn_saliency"], {f"p{j}": (f"g{j}",) for j in range(5)})
    assert len(ranks) == 5
    assert (ranks["rank"] <= 3).all(), ranks
