"""The linear path fitted from chunk-accumulated statistics equals the dense SVD solution."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from mudata import MuData
from scipy import linalg, sparse

import crossmodalnet.model._fitting as fitting
import crossmodalnet.model._linear as _linear
from crossmodalnet.model import CrossmodalNet, _presets
from crossmodalnet.model._linear import LINEAR_ALPHA_GRID, fit_ridge_from_statistics, ridge_statistics

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


def _reference_ridge(X, Y, t_train, n_time, X_val=None, Y_val=None, t_val=None, alpha_grid=LINEAR_ALPHA_GRID):
    """The dense linear path of crossmodalnet 08d0483 (``fit_ridge_by_time``), frozen here as the reference.

    Returns weights, intercepts, the chosen absolute penalty, the number of penalties and the criterion.
    """
    mean_x = np.tile(X.mean(0), (n_time, 1))
    mean_y = np.tile(Y.mean(0), (n_time, 1))
    for c in np.unique(t_train):
        mean_x[c], mean_y[c] = X[t_train == c].mean(0), Y[t_train == c].mean(0)
    Xc, Yc = X - mean_x[t_train], Y - mean_y[t_train]
    U, sv, Vt = linalg.svd(Xc, full_matrices=False, lapack_driver="gesdd")
    keep = sv > sv.max() * 1e-10 if sv.size else sv.astype(bool)
    U, sv, Vt = U[:, keep], sv[keep], Vt[keep]
    UtY = U.T @ Yc
    alphas = np.asarray(alpha_grid) * float(np.mean(sv**2)) if sv.size else np.ones(1)
    if X_val is not None and len(X_val):
        P = (X_val - mean_x[t_val]) @ Vt.T
        errors = [np.mean((P @ ((sv / (sv**2 + a))[:, None] * UtY) + mean_y[t_val] - Y_val) ** 2) for a in alphas]
    else:
        n = X.shape[0]
        resid_total = np.sum(Yc**2) - np.sum(UtY**2)
        errors = []
        for a in alphas:
            shrink = sv**2 / (sv**2 + a)
            rss = resid_total + np.sum(((1 - shrink)[:, None] * UtY) ** 2)
            errors.append(rss / n / max(1 - shrink.sum() / n, 1e-6) ** 2)
    best = int(np.argmin(errors))
    alpha = float(alphas[best])
    W = Vt.T @ ((sv / (sv**2 + alpha))[:, None] * UtY)
    return W, mean_y - mean_x @ W, alpha, len(alphas), float(errors[best])


def _data(n_obs=400, n_genes=50, n_prot=5, n_time=3, density=0.3, seed=0):
    """Sparse log counts whose genes and proteins shift with time, so that centring by time matters."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, n_time, n_obs)
    rate = np.exp(rng.normal(0, 1, (n_obs, 3)) @ rng.normal(0, 0.7, (3, n_genes)) + 0.8 * t[:, None])
    counts = rng.poisson(rate) * (rng.random((n_obs, n_genes)) < density)
    X = sparse.csr_matrix(np.log1p(counts).astype(np.float32))
    W = rng.normal(0, 1, (n_genes, n_prot)) * (rng.random((n_genes, n_prot)) < 0.2)
    Y = X.toarray() @ W + 2.0 * t[:, None] + rng.normal(0, 1, (n_obs, n_prot))
    return X, Y, t


def _split(n_obs, seed=1):
    perm = np.random.default_rng(seed).permutation(n_obs)
    return perm[: int(0.8 * n_obs)], perm[int(0.8 * n_obs) :]


def _assert_same(streamed, reference):
    W, b, alpha, n_alphas, err = streamed
    W0, b0, alpha0, n_alphas0, err0 = reference
    assert n_alphas == n_alphas0
    assert alpha == pytest.approx(alpha0, rel=1e-10)
    assert err == pytest.approx(err0, rel=1e-6)
    np.testing.assert_allclose(W, W0, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b, b0, rtol=1e-6, atol=1e-8)


def test_penalty_chosen_on_validation_cells_equals_dense_svd():
    # sparse input, three time points, a fourth (untrained) category: penalty chosen on validation cells
    X, Y, t = _data()
    tr, va = _split(X.shape[0])
    dense = X.toarray().astype(np.float64)
    reference = _reference_ridge(dense[tr], Y[tr], t[tr], 4, dense[va], Y[va], t[va])
    stats = ridge_statistics(X, tr, Y[tr], t[tr], 4, chunk=37)
    streamed = fit_ridge_from_statistics(stats, X_val=X, val_rows=va, Y_val=Y[va], t_val=t[va], chunk=23)
    _assert_same(streamed, reference)
    # the choice is not at the edge of the grid, so the validation MSE decided it
    assert 0 < LINEAR_ALPHA_GRID.index(pytest.approx(reference[2] / np.mean(np.linalg.eigvalsh(stats.gram)))) < 28
    # the untrained time point's intercept comes from the overall training means
    np.testing.assert_allclose(streamed[1][3], Y[tr].mean(0) - dense[tr].mean(0) @ streamed[0], rtol=1e-8)


def test_gcv_fallback_without_validation_cells_equals_dense_svd():
    X, Y, t = _data(seed=2)
    tr, _ = _split(X.shape[0])
    dense = X.toarray().astype(np.float64)
    reference = _reference_ridge(dense[tr], Y[tr], t[tr], 3)
    stats = ridge_statistics(X, tr, Y[tr], t[tr], 3, chunk=50)
    for val_rows in (None, np.zeros(0, dtype=np.int64)):
        _assert_same(fit_ridge_from_statistics(stats, X_val=X, val_rows=val_rows), reference)


def test_dense_sparse_and_chunking_give_one_solution():
    X, Y, t = _data(seed=3)
    tr, va = _split(X.shape[0])
    fits = []
    for matrix in (X, X.toarray(), sparse.csc_matrix(X)):
        for chunk in (1, 64, None):
            stats = ridge_statistics(matrix, tr, Y[tr], t[tr], 3, chunk=chunk)
            fits.append(fit_ridge_from_statistics(stats, X_val=matrix, val_rows=va, Y_val=Y[va], t_val=t[va]))
    for fit in fits[1:]:
        _assert_same(fit, fits[0])


@pytest.mark.parametrize("density", [0.3, 0.02])
def test_sparse_products_and_the_dense_route_give_one_gram(monkeypatch, density):
    """Few non-zeros: the gram comes from sparse products centred at the end, as the centred dense chunks give it."""
    X, Y, t = _data(n_obs=600, n_genes=60, density=density, seed=7)
    sparse_route = X.nnz <= _linear.SPARSE_GRAM_DENSITY * np.prod(X.shape)
    assert sparse_route == (density < 0.05)
    routes = []
    decide = _linear._sparse_products
    monkeypatch.setattr(_linear, "_sparse_products", lambda block: routes.append(decide(block)) or routes[-1])
    tr, va = _split(X.shape[0])
    dense = X.toarray().astype(np.float64)
    by_route = {}
    for name, matrix in (("sparse", X), ("dense", dense)):
        for chunk in (37, None):
            by_route[name, chunk] = ridge_statistics(matrix, tr, Y[tr], t[tr], 4, chunk=chunk)
    # the first chunk decides, once per accumulation; a dense matrix never takes the sparse products
    assert routes == [sparse_route, sparse_route, False, False]
    reference = by_route["dense", 37]
    scale = np.abs(reference.gram).max()
    for stats in by_route.values():
        np.testing.assert_allclose(stats.gram, reference.gram, rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(stats.cross, reference.cross, rtol=1e-10, atol=1e-12 * np.abs(reference.cross).max())
        np.testing.assert_array_equal(stats.gram, stats.gram.T)
    fit = fit_ridge_from_statistics(by_route["sparse", None], X_val=X, val_rows=va, Y_val=Y[va], t_val=t[va])
    _assert_same(fit, _reference_ridge(dense[tr], Y[tr], t[tr], 4, dense[va], Y[va], t[va]))


def test_one_gene_pass_gives_each_fits_own_pass(counting_rows):
    # the moments, the ridge's per-time sums and the screen's products from one pass equal those of their own
    # passes; given the sums, ridge_statistics reads the training cells once and gives the same statistics
    from crossmodalnet.model._fitting import column_moments, gene_pass, screen_ranking

    X, Y, t = _data(seed=6)
    tr, va = _split(X.shape[0])
    Y[:, 2] = 1.5  # a constant protein: no screen products
    for matrix in (X, X.toarray(), sparse.csc_matrix(X)):
        one = gene_pass(matrix, tr, t[tr], 4, Y[tr], chunk=33)
        mean, sd = column_moments(matrix, tr, chunk=33)
        np.testing.assert_array_equal(one.mean, mean)
        np.testing.assert_array_equal(one.sd, sd)
        assert one.screen_cross.shape == (50, 4)
        for chunk in (33, 4096):
            reference = screen_ranking(matrix, Y[tr], tr, chunk=chunk)
            np.testing.assert_array_equal(
                screen_ranking(matrix, Y[tr], tr, chunk=chunk, x_sd=sd, cross=one.screen_cross), reference
            )
        genes = np.arange(3, 48, 2)
        counted = counting_rows(matrix)
        given = ridge_statistics(counted, tr, Y[tr], t[tr], 4, genes=genes, time_sums=one.time_sums[:, genes])
        assert counted.rows_read == tr.size
        counted.rows_read = 0
        read = ridge_statistics(counted, tr, Y[tr], t[tr], 4, genes=genes)
        assert counted.rows_read == 2 * tr.size
        for a, b in zip(given, read, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        fits = [
            fit_ridge_from_statistics(s, X_val=matrix, val_rows=va, Y_val=Y[va], t_val=t[va]) for s in (given, read)
        ]
        _assert_same(*fits)
    assert gene_pass(X, tr, t[tr], 4).screen_cross is None
    with pytest.raises(ValueError, match="time points × genes"):
        ridge_statistics(X, tr, Y[tr], t[tr], 4, genes=genes, time_sums=one.time_sums)
    with pytest.raises(ValueError, match="holds NaN"):
        screen_ranking(X, np.where(np.arange(tr.size)[:, None] % 3 == 0, np.nan, Y[tr]), tr, cross=one.screen_cross)


@pytest.mark.parametrize("n_obs", [400, 40])  # 40 cells: fewer training cells than genes (rank-deficient gram)
def test_gene_subsets_of_one_accumulation_equal_their_own_dense_fit(n_obs):
    X, Y, t = _data(n_obs=n_obs, seed=4)
    tr, va = _split(n_obs)
    dense = X.toarray().astype(np.float64)
    union = np.arange(3, 48)
    stats = ridge_statistics(X, tr, Y[tr], t[tr], 3, genes=union)
    for genes in (union, union[::3], union[:7]):
        sub = np.searchsorted(union, genes)
        for val in (va, None):
            ref = _reference_ridge(
                dense[tr][:, genes],
                Y[tr],
                t[tr],
                3,
                None if val is None else dense[val][:, genes],
                None if val is None else Y[val],
                None if val is None else t[val],
            )
            fit = fit_ridge_from_statistics(
                stats, sub, X_val=X, val_rows=val, Y_val=None if val is None else Y[val], t_val=t[va]
            )
            _assert_same(fit, ref)


def _mdata(n_obs=300, n_genes=80, seed=5, density=0.3) -> MuData:
    X, Y, t = _data(n_obs=n_obs, n_genes=n_genes, n_prot=4, seed=seed, density=density)
    rna = ad.AnnData(X)
    rna.var_names = [f"g{i}" for i in range(n_genes)]
    rna.obs["time"] = t.astype(float)
    prot = ad.AnnData(Y.astype(np.float32))
    prot.var_names = [f"p{i}" for i in range(Y.shape[1])]
    mdata = MuData({"rna": rna, "prot": prot})
    mdata.obs["time"] = t.astype(float)
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


def _model(mdata, **train):
    import scvi

    scvi.settings.seed = 0
    torch.manual_seed(0)
    model = CrossmodalNet(mdata, n_latent=8, linear_path_genes="auto")
    model.train(max_epochs=1, lr=0.0, **TRAIN, **train)
    return model


def _reference_choice(model, mdata):
    """Every candidate gene set fitted by the dense reference on the model's own cells and loss scale."""
    m = model.module
    X = np.asarray(mdata["rna"].X.toarray(), dtype=np.float64)
    Y = (
        np.asarray(mdata["prot"].X, dtype=np.float64) - m.protein_mean.double().numpy()
    ) / m.protein_scale.double().numpy()
    t = model.adata_manager.get_from_registry("time").reshape(-1).astype(np.int64)
    tr, va = model.train_indices, model.validation_indices
    va = va[np.isin(t[va], t[tr])]
    n_time = len(model.time_categories)
    fits = {}
    for name in model.linear_path_genes_["errors"]:
        genes = np.arange(X.shape[1]) if name == "all" else fitting.screen_genes(X, Y[tr], tr, int(name[6:]))
        val = (X[va][:, genes], Y[va], t[va]) if va.size else (None, None, None)
        fits[name] = (genes, _reference_ridge(X[tr][:, genes], Y[tr], t[tr], n_time, *val))
    return fits


@pytest.mark.parametrize("density", [0.3, 0.02])  # the gram from centred dense chunks, or from sparse products
@pytest.mark.parametrize("validation", [True, False])
def test_model_linear_path_equals_dense_reference(validation, density):
    mdata = _mdata(density=density)
    if validation:
        model = _model(mdata)
    else:
        with pytest.warns(UserWarning, match="No validation cells"):
            model = _model(mdata, train_size=1.0, validation_size=0.0)
    rec = model.linear_path_genes_
    assert rec["criterion"] == ("validation_mse" if validation else "gcv")
    assert list(rec["errors"]) == ["all", "screen64"]
    fits = _reference_choice(model, mdata)
    for name, (_, ref) in fits.items():
        assert rec["errors"][name] == pytest.approx(ref[4], rel=1e-6)
    choice = min(fits, key=lambda k: fits[k][1][4])
    assert rec["choice"] == choice
    genes, (W0, b0, alpha0, *_) = fits[choice]
    np.testing.assert_array_equal(rec["genes"], genes)
    assert rec["alpha"] == pytest.approx(alpha0, rel=1e-10)
    W = np.zeros((mdata["rna"].n_vars, W0.shape[1]))
    W[genes] = W0
    # the module stores float32: compare at its precision
    np.testing.assert_allclose(model.module.linear_weight.double().numpy(), W, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.module.linear_intercept.double().numpy(), b0, rtol=1e-6, atol=1e-6)


def _count_dense_fits(monkeypatch) -> list:
    calls = []
    original = fitting.fit_ridge_by_time
    monkeypatch.setattr(fitting, "fit_ridge_by_time", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_gene_sets_past_the_gram_limit_with_few_training_cells(monkeypatch):
    # more genes than the limit but fewer training cells: every set in closed form, the large ones on dense cells
    mdata = _mdata(n_obs=200, n_genes=300)
    monkeypatch.setattr(fitting, "LINEAR_MAX_GRAM_GENES", 250)
    calls = _count_dense_fits(monkeypatch)
    model = _model(mdata)
    rec = model.linear_path_genes_
    assert list(rec["errors"]) == ["all", "screen64", "screen256"]
    assert len(calls) == 2  # all genes and screen256
    for name, (_, ref) in _reference_choice(model, mdata).items():
        assert rec["errors"][name] == pytest.approx(ref[4], rel=1e-6)


def test_gene_sets_past_the_gram_limit_with_many_training_cells(monkeypatch):
    # more genes and more training cells than the limit: the screen's first genes stand in for all genes
    mdata = _mdata(n_obs=300, n_genes=80)
    monkeypatch.setattr(fitting, "LINEAR_MAX_GRAM_GENES", 60)
    calls = _count_dense_fits(monkeypatch)
    model = _model(mdata)
    assert not calls  # nothing densified
    rec = model.linear_path_genes_
    assert list(rec["errors"]) == ["screen60", "screen64"]
    fits = _reference_choice(model, mdata)
    for name, (_, ref) in fits.items():
        assert rec["errors"][name] == pytest.approx(ref[4], rel=1e-6)
    np.testing.assert_array_equal(rec["genes"], fits[rec["choice"]][0])
    assert np.all(model.module.linear_weight.numpy()[np.setdiff1d(np.arange(80), rec["genes"])] == 0)


def test_a_large_reference_stands_in_fewer_screened_genes(monkeypatch):
    # past both limits on a large reference (bound lowered to these 300 cells): the screen's first
    # LARGE_REFERENCE_LINEAR_GENES genes stand in for all genes, fitted as any streamed set
    mdata = _mdata(n_obs=300, n_genes=80)
    monkeypatch.setattr(fitting, "LINEAR_MAX_GRAM_GENES", 60)
    monkeypatch.setattr(_presets, "LARGE_REFERENCE_CELLS", 300)
    monkeypatch.setattr(_presets, "LARGE_REFERENCE_LINEAR_GENES", 30)
    calls = _count_dense_fits(monkeypatch)
    model = _model(mdata)
    assert not calls
    rec = model.linear_path_genes_
    assert list(rec["errors"]) == ["screen30", "screen64"]
    fits = _reference_choice(model, mdata)
    assert fits["screen30"][0].size == 30
    for name, (_, ref) in fits.items():
        assert rec["errors"][name] == pytest.approx(ref[4], rel=1e-6)
    # one cell fewer is below the bound: the limit's 60 genes stand in, as before
    monkeypatch.setattr(_presets, "LARGE_REFERENCE_CELLS", 301)
    assert list(_model(mdata).linear_path_genes_["errors"]) == ["screen60", "screen64"]


@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_backed_matrix_gives_the_in_memory_solution(tmp_path, layout):
    X, Y, t = _data(seed=6)
    tr, va = _split(X.shape[0])
    ad.AnnData(X if layout == "csr" else X.toarray()).write_h5ad(tmp_path / "x.h5ad")
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    try:
        on_disk = backed.X
        fit = fit_ridge_from_statistics(
            ridge_statistics(on_disk, tr, Y[tr], t[tr], 3, genes=np.arange(2, 40), chunk=33),
            X_val=on_disk,
            val_rows=va,
            Y_val=Y[va],
            t_val=t[va],
            chunk=17,
        )
    finally:
        backed.file.close()
    dense = X.toarray().astype(np.float64)[:, 2:40]
    _assert_same(fit, _reference_ridge(dense[tr], Y[tr], t[tr], 3, dense[va], Y[va], t[va]))
