"""The large-reference script ``benchmarks/large_reference_accuracy.py``: its ridge regression on every gene."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from crossmodalnet.model._linear import LINEAR_ALPHA_GRID, fit_ridge_by_time


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("large_reference_accuracy")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n, g, p = 900, 60, 7
    X = sparse.random(n, g, density=0.2, format="csr", random_state=4, data_rvs=lambda k: rng.gamma(2.0, 1.0, k))
    t = rng.integers(0, 3, n)
    W = rng.normal(size=(g, p)) * (rng.random((g, 1)) < 0.3)
    Y = X @ W + np.array([0.0, 1.5, -2.0])[t, None] + rng.normal(scale=2.0, size=(n, p))
    order = rng.permutation(n)
    return X, Y, t, order[:600], order[600:750], order[750:]


def test_ridge_all_genes_is_the_linear_paths_estimator(script, data):
    X, Y, t, train, validation, test = data
    predict, alpha, solves = script.ridge_all_genes(X, Y, t, 3, train, validation, chunk=128, search="full")
    assert solves == len(LINEAR_ALPHA_GRID)
    dense = X.toarray()
    W, intercept, absolute, _ = fit_ridge_by_time(
        dense[train], Y[train], t[train], 3, dense[validation], Y[validation], t[validation]
    )
    expected = dense[test] @ W + intercept[t[test]]
    np.testing.assert_allclose(predict(np.sort(test)), expected[np.argsort(test)], rtol=1e-8, atol=1e-8)
    # the same penalty: relative × mean squared singular value (full column rank: trace / genes)
    centred = dense[train] - np.stack([dense[train][t[train] == c].mean(0) for c in range(3)])[t[train]]
    assert absolute == pytest.approx(alpha * np.sum(centred**2) / X.shape[1], rel=1e-10)


def test_refined_search_finds_the_full_grids_penalty(script, data):
    X, Y, t, train, validation, _ = data
    _, full, _ = script.ridge_all_genes(X, Y, t, 3, train, validation, search="full")
    _, refined, solves = script.ridge_all_genes(X, Y, t, 3, train, validation, search="refine")
    assert refined == full
    assert solves <= 12
    # the full grid's choice lies between the coarse penalties: only the refinement reaches it
    assert LINEAR_ALPHA_GRID.index(full) % 4 != 0


def test_ridge_all_genes_refuses(script, data):
    X, Y, t, train, validation, _ = data
    with pytest.raises(ValueError, match="`search` must be"):
        script.ridge_all_genes(X, Y, t, 3, train, validation, search="grid")
    with pytest.raises(ValueError, match=r"Time codes \[3\] have no training cells"):
        script.ridge_all_genes(X, Y, t, 4, train, validation)
