"""Evaluation metrics on numpy arrays (no torch)."""

from __future__ import annotations

import numpy as np


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


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean per-protein and per-cell Pearson correlation and MSE of a prediction.

    Parameters
    ----------
    pred, true
        Predicted and observed proteins, cells × proteins, on the same scale.

    Returns
    -------
    ``pearson_protein`` (mean over proteins), ``pearson_cell`` (mean over cells) and ``mse``;
    constant rows or columns are left out of the means.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"Shapes differ: prediction {pred.shape} vs observation {true.shape}.")
    return {
        "pearson_protein": float(np.nanmean(pearson_per_protein(pred, true))),
        "pearson_cell": float(np.nanmean(pearson_per_cell(pred, true))),
        "mse": float(np.mean((pred - true) ** 2)),
    }
