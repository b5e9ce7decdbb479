from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from crossmodalnet._metrics import prediction_metrics


def test_prediction_metrics_match_scipy():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(30, 5))
    pred = true + rng.normal(scale=0.5, size=true.shape)
    m = prediction_metrics(pred, true)
    r_prot = [pearsonr(pred[:, j], true[:, j])[0] for j in range(5)]
    rho_prot = [spearmanr(pred[:, j], true[:, j])[0] for j in range(5)]
    r_cell = [pearsonr(pred[i], true[i])[0] for i in range(30)]
    rho_cell = [spearmanr(pred[i], true[i])[0] for i in range(30)]
    np.testing.assert_allclose(m["per_protein"]["pearson"], r_prot)
    np.testing.assert_allclose(m["per_protein"]["spearman"], rho_prot)
    np.testing.assert_allclose(m["per_protein"]["mse"], ((pred - true) ** 2).mean(axis=0))
    assert m["pearson_protein"] == pytest.approx(np.mean(r_prot))
    assert m["spearman_protein"] == pytest.approx(np.mean(rho_prot))
    assert m["pearson_cell"] == pytest.approx(np.mean(r_cell))
    assert m["spearman_cell"] == pytest.approx(np.mean(rho_cell))
    assert m["mse"] == pytest.approx(np.mean((pred - true) ** 2))


def test_prediction_metrics_leave_constant_columns_out():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(20, 3))
    pred = true.copy()
    pred[:, 1] = 0.5  # a constant prediction: Pearson undefined for that protein
    m = prediction_metrics(pred, true)
    assert np.isnan(m["per_protein"]["pearson"][1])
    assert m["pearson_protein"] == pytest.approx(1.0)
    pred[:] = 0.5  # every protein constant: the mean over proteins is NaN, the MSE is still defined
    m = prediction_metrics(pred, true)
    assert np.isnan(m["pearson_protein"])
    assert m["mse"] == pytest.approx(np.mean((0.5 - true) ** 2))


def test_prediction_metrics_shape_mismatch():
    with pytest.raises(ValueError, match=r"Shapes differ: prediction \(4, 2\) vs observation \(4, 3\)"):
        prediction_metrics(np.zeros((4, 2)), np.zeros((4, 3)))
