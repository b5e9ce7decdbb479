"""Evaluation metrics on numpy arrays (no torch)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``.

    Entries where ``b`` is NaN (not measured) are left out of their row, together with the same entries
    of ``a``; a row with fewer than two measured entries, or constant over them, gets NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    measured = ~np.isnan(b)
    if measured.all():
        ac = a - a.mean(axis=1, keepdims=True)
        bc = b - b.mean(axis=1, keepdims=True)
    else:
        n = measured.sum(axis=1, keepdims=True)
        a = np.where(measured, a, 0.0)
        b = np.where(measured, b, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ac = np.where(measured, a - a.sum(axis=1, keepdims=True) / n, 0.0)
            bc = np.where(measured, b - b.sum(axis=1, keepdims=True) / n, 0.0)
    denom = np.sqrt((ac**2).sum(axis=1) * (bc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac * bc).sum(axis=1) / denom
    r[denom == 0] = np.nan
    if not measured.all():
        r[measured.sum(axis=1) < 2] = np.nan
    return r


def pearson_per_cell(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation across proteins for each cell (NaN where a row is constant).

    Proteins a cell did not measure (NaN in ``true``) are left out of its correlation.
    """
    return _pearson_rows(pred, true)


def pearson_per_protein(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation across cells for each protein (NaN where a column is constant).

    Cells that did not measure a protein (NaN in ``true``) are left out of its correlation.
    """
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
    ``spearman_cell`` (means over cells), ``mse`` (mean of the per-protein MSEs) and ``per_protein`` (a
    dict of arrays ``pearson``, ``spearman``, ``mse`` and ``n_measured``, one value per protein).
    Correlations of constant rows or columns are NaN and left out of the means; a mean over no defined
    value is NaN. NaN in ``true`` means "not measured": those entries are left out of every score.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"Shapes differ: prediction {pred.shape} vs observation {true.shape}.")
    measured = ~np.isnan(true)
    if not measured.all():  # not measured: left out of every score, with the same entries of the prediction
        pred = np.where(measured, pred, np.nan)
    rank_p0, rank_t0 = rankdata(pred, axis=0, nan_policy="omit"), rankdata(true, axis=0, nan_policy="omit")
    rank_p1, rank_t1 = rankdata(pred, axis=1, nan_policy="omit"), rankdata(true, axis=1, nan_policy="omit")
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a protein no cell measured: NaN
        mse = np.nanmean((pred - true) ** 2, axis=0)
    per_protein = {
        "pearson": pearson_per_protein(pred, true),
        "spearman": pearson_per_protein(rank_p0, rank_t0),
        "mse": mse,
        "n_measured": measured.sum(axis=0),
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
        "mse": _finite_mean(per_protein["mse"]),
        "per_protein": per_protein,
    }
