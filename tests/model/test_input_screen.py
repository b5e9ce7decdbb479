"""The supervised gene screen ``input_reduction="screen"``: selection, determinism, persistence, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from scipy import sparse

import crossmodalnet as cmn
from crossmodalnet.model import CrossmodalNet
from crossmodalnet.model._fitting import screen_genes, screen_ranking

TRAIN = {"batch_size": 64, "accelerator": "cpu", "enable_progress_bar": False}


@pytest.fixture
def setup_mdata(norm_mdata):
    mdata = norm_mdata.copy()
    CrossmodalNet.setup_mudata(mdata, time_key="time")
    return mdata


def _reference_screen(X: np.ndarray, Y: np.ndarray, k: int) -> np.ndarray:
    """Round-robin selection written out with np.corrcoef and loops."""
    n_genes, n_prot = X.shape[1], Y.shape[1]
    corr = np.zeros((n_genes, n_prot))
    for g in range(n_genes):
        for p in range(n_prot):
            if X[:, g].std() > 0 and Y[:, p].std() > 0:
                corr[g, p] = abs(np.corrcoef(X[:, g], Y[:, p])[0, 1])
    ranked = [sorted(range(n_genes), key=lambda g, p=p: (-corr[g, p], g)) for p in range(n_prot)]
    chosen: list[int] = []
    for r in range(n_genes):
        new = {ranked[p][r] for p in range(n_prot) if Y[:, p].std() > 0} - set(chosen)
        chosen += sorted(new, key=lambda g: (-corr[g].max(), g))
        if len(chosen) >= k:
            break
    return np.sort(chosen[:k])


def test_screen_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    X = rng.gamma(1.0, size=(80, 40)) * (rng.random((80, 40)) < 0.5)
    X[:, 7] = 0.0  # a constant gene is never preferred
    Y = np.column_stack([X[:, 3] + rng.normal(size=80), -X[:, 11] + 0.5 * X[:, 20], rng.normal(size=80)])
    Y = np.column_stack([Y, np.full(80, 2.0)])  # a constant protein is ignored
    rows = rng.permutation(80)[:60]
    for k in (1, 3, 5, 12):
        expected = _reference_screen(X[np.sort(rows)], Y[np.sort(rows)], k)
        np.testing.assert_array_equal(screen_genes(X, Y[rows], rows, k), expected)
        # sparse input, row chunks and the order of the rows give the same genes
        np.testing.assert_array_equal(screen_genes(sparse.csr_matrix(X), Y[rows], rows, k, chunk=7), expected)
    assert 7 not in screen_genes(X, Y[rows], rows, 39)
    # each protein's best gene comes first, even when another protein correlates more with many genes
    assert {3, 11}.issubset(set(screen_genes(X, Y[rows], rows, 3)))
    with pytest.raises(ValueError, match="constant"):
        screen_genes(X, np.ones((60, 2)), rows, 5)


def test_screen_ranking_orders_every_gene_so_each_top_k_is_a_prefix():
    # the linear path's "auto" candidates are prefixes of one ranking: they must equal separate screens
    rng = np.random.default_rng(1)
    X = rng.gamma(1.0, size=(70, 30)) * (rng.random((70, 30)) < 0.6)
    Y = np.column_stack([X[:, 2] + rng.normal(size=70), X[:, 9] - X[:, 4], rng.normal(size=70)])
    rows = rng.permutation(70)[:50]
    ranking = screen_ranking(X, Y[rows], rows)
    np.testing.assert_array_equal(np.sort(ranking), np.arange(30))
    for k in (1, 3, 4, 9, 17, 30):
        expected = _reference_screen(X[np.sort(rows)], Y[np.sort(rows)], k)
        np.testing.assert_array_equal(np.sort(ranking[:k]), expected)


def test_screen_selects_the_planted_driver_genes():
    mdata = cmn.datasets.synthetic_cite(n_obs=400, n_genes=500, n_proteins=6, n_time_points=1, rng=0)
    cmn.pp.log_normalize(mdata)
    cmn.pp.clr(mdata)
    drivers = mdata.uns["cmn_synthetic"]["driver_genes"]
    planted = {g for genes in drivers.values() for g in genes}
    assert len(planted) == 18
    names = mdata["rna"].var_names
    rows = np.arange(mdata.n_obs)
    kept = set(names[screen_genes(mdata["rna"].X, np.asarray(mdata["prot"].X), rows, 36)])
    # 36 of 500 genes: every planted driver (chance would find about 1.3 of them)
    assert planted <= kept
    # with one gene per protein, each protein gets one of its own drivers
    one = set(names[screen_genes(mdata["rna"].X, np.asarray(mdata["prot"].X), rows, 6)])
    assert all(one & set(genes) for genes in drivers.values())


def test_screen_model_is_fitted_on_training_cells_deterministic_and_round_trips(setup_mdata, tmp_path):
    def fit():
        scvi.settings.seed = 0
        torch.manual_seed(0)
        m = CrossmodalNet(setup_mdata, n_latent=8, input_reduction="screen", n_input_features=10)
        m.train(max_epochs=3, **TRAIN)
        return m

    model = fit()
    assert model.module.encoder.first_layer.in_features == 10
    assert bool(model.module.input_reduction_fitted)
    idx = model.module.input_index.numpy()
    train = np.sort(model.train_indices)
    X = setup_mdata["rna"].X
    expected = screen_genes(X, np.asarray(setup_mdata["prot"].X)[train], train, 10)
    np.testing.assert_array_equal(idx, expected)
    # the screen saw only the training cells: on all cells it would choose differently
    everything = np.arange(setup_mdata.n_obs)
    assert not np.array_equal(screen_genes(X, np.asarray(setup_mdata["prot"].X), everything, 10), idx)
    # retraining does not refit it
    model.train(max_epochs=1, split_seed=5, **TRAIN)
    np.testing.assert_array_equal(model.module.input_index.numpy(), idx)

    model = fit()
    again = fit()
    np.testing.assert_array_equal(again.module.input_index.numpy(), idx)
    pred = model.predict_protein()
    np.testing.assert_array_equal(again.predict_protein().to_numpy(), pred.to_numpy())

    model.save(tmp_path / "m")
    loaded = CrossmodalNet.load(tmp_path / "m", setup_mdata)
    assert loaded.module.input_reduction == "screen"
    np.testing.assert_array_equal(loaded.module.input_index.numpy(), idx)
    np.testing.assert_array_equal(loaded.predict_protein().to_numpy(), pred.to_numpy())
    assert "screen → 10 features" in repr(loaded)


def test_screen_default_size_and_bad_sizes(setup_mdata):
    n_genes = setup_mdata["rna"].n_vars
    # the default of 256 is more than this data's 60 genes
    with pytest.raises(ValueError, match="n_input_features"):
        CrossmodalNet(setup_mdata, n_latent=8, input_reduction="screen")
    for bad in (0, -3, n_genes, n_genes + 1):
        with pytest.raises(ValueError, match="n_input_features"):
            CrossmodalNet(setup_mdata, n_latent=8, input_reduction="screen", n_input_features=bad)
    ok = CrossmodalNet(setup_mdata, n_latent=8, input_reduction="screen", n_input_features=n_genes - 1)
    assert ok.module.encoder.first_layer.in_features == n_genes - 1


def test_the_fits_before_the_first_epoch_read_the_training_cells_twice(setup_mdata, monkeypatch, counting_rows):
    # one pass gathers the genes' moments, their per-time sums and their products with the proteins for the screen;
    # the linear path's gram is the second; the networks' input screen and the linear path share one ranking
    import crossmodalnet.model._fitting as fitting

    X = setup_mdata["rna"].X
    counted = counting_rows(X)
    calls = {"screen": 0}
    originals = {
        name: getattr(fitting, name) for name in ("gene_pass", "column_moments", "screen_ranking", "ridge_statistics")
    }

    def counting(name):
        def call(matrix, *a, **k):
            calls["screen"] += name == "screen_ranking"
            return originals[name](counted if matrix is X else matrix, *a, **k)

        return call

    for name in originals:
        monkeypatch.setattr(fitting, name, counting(name))
    monkeypatch.setattr(fitting, "LINEAR_SCREEN_DEFAULT", 20)  # the linear path's one set: the top 20 of 60 genes
    model = CrossmodalNet(
        setup_mdata, n_latent=8, input_reduction="screen", n_input_features=10, linear_path_genes="screen"
    )
    assert model.adata_manager.get_from_registry("X") is X
    model.train(max_epochs=1, **TRAIN)
    train = np.sort(model.train_indices)
    assert counted.rows_read == 2 * train.size
    assert calls["screen"] == 1
    ranking = originals["screen_ranking"](X, model._loss_scale_proteins(train), train)  # a pass of its own
    np.testing.assert_array_equal(model.module.input_index.numpy(), np.sort(ranking[:10]))
    rec = model.linear_path_genes_
    assert rec["choice"] == "screen20"
    np.testing.assert_array_equal(rec["genes"], np.union1d(ranking[:20], rec["coding_genes"]))
    # the pass's moments are those of the training cells, for gene_moments_ and the input scaling alike
    mean, sd = (v.astype(np.float32) for v in originals["column_moments"](X, train))
    np.testing.assert_array_equal(model.gene_moments_["mean"], mean)
    np.testing.assert_array_equal(model.gene_moments_["sd"], sd)
    counted.rows_read = 0
    scaled = CrossmodalNet(setup_mdata, n_latent=8, standardize_input=True, linear_path=False)
    scaled.train(max_epochs=1, **TRAIN)
    train = np.sort(scaled.train_indices)
    assert counted.rows_read == train.size
    mean, sd = (v.astype(np.float32) for v in originals["column_moments"](X, train))
    np.testing.assert_array_equal(scaled.module.input_mean.numpy(), mean)
    np.testing.assert_array_equal(scaled.module.input_scale.numpy(), np.where(sd > 1e-6, sd, 1.0))
    np.testing.assert_array_equal(scaled.gene_moments_["mean"], mean)
