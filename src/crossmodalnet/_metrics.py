"""Evaluation metrics on numpy arrays (no torch)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((ac**2).sum(axis=1) * (bc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac * bc).sum(axis=1) / denom
    r[denom == 0] = np.nan
    return r


def pearson_per_cell(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation across proteins for each cell (NaN where a row is constant)."""
    return _pearson_rows(pred, true)


def pearson_per_protein(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation across cells for each protein (NaN where a column is constant)."""
    return _pearson_rows(np.asarray(pred).T, np.asarray(true).T)


def _finite_mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def prediction_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    """Pearson, Spearman and MSE of a prediction, per protein and per cell.

    Parameters
    ----------
    pred, true
        Predicted and observed proteins, cells × proteins, on the same scale.

    Returns
    -------
    ``pearson_protein``, ``spearman_protein`` (means over proteins), ``pearson_cell``,
    ``spearman_cell`` (means over cells), ``mse`` (over all entries) and ``per_protein`` (a dict of
    arrays ``pearson``, ``spearman`` and ``mse``, one value per protein). Correlations of constant rows
    or columns are NaN and left out of the means; a mean over no defined value is NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"Shapes differ: prediction {pred.shape} vs observation {true.shape}.")
    rank_p0, rank_t0 = rankdata(pred, axis=0), rankdata(true, axis=0)
    rank_p1, rank_t1 = rankdata(pred, axis=1), rankdata(true, axis=1)
    per_protein = {
        "pearson": pearson_per_protein(pred, true),
        "spearman": pearson_per_protein(rank_p0, rank_t0),
        "mse": ((pred - true) ** 2).mean(axis=0),
    }
    per_cell = {
        "pearson": pearson_per_cell(pred, true),
        "spearman": pearson_per_cell(rank_p1, rank_t1),
    }
    return {
        "pearson_protein": _finite_mean(per_protein["pearson"]),
        "spearman_protein": _finite_mean(per_protein["spearman"]),
        "pearson_cell": _finite_mean(per_cell["pearson"]),
        "spearman_cell": _finite_mean(per_cell["spearman"]),
        "mse": float(per_protein["mse"].mean()),
        "per_protein": per_protein,
    }
