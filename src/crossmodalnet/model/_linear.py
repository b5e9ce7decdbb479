"""The linear path: ridge regression from genes to proteins with one intercept per time point (pure numpy)."""

from __future__ import annotations

import numpy as np
from scipy import linalg

LINEAR_ALPHA_GRID = tuple(float(a) for a in np.logspace(-4, 3, 29))
"""Ridge penalties of the linear path, relative to the mean squared singular value of the training RNA."""

LINEAR_SCREEN_SIZES = (64, 256, 1024)
"""Numbers of screened genes the linear path's ``"auto"`` gene set chooses from (beside all genes)."""

LINEAR_SCREEN_DEFAULT = 256
"""Number of screened genes of the linear path's ``"screen"`` gene set."""


def fit_ridge_by_time(
    X: np.ndarray,
    Y: np.ndarray,
    t_train: np.ndarray,
    n_time: int,
    X_val: np.ndarray | None = None,
    Y_val: np.ndarray | None = None,
    t_val: np.ndarray | None = None,
    alpha_grid: tuple[float, ...] = LINEAR_ALPHA_GRID,
    *,
    return_error: bool = False,
) -> tuple:
    """Fit ridge regression with per-time-point intercepts, the penalty chosen on validation cells.

    Genes and proteins are centred within each time point of the training cells, so every trained
    time point gets its own intercept (untrained time points get the overall training mean). The
    penalty is one value for all proteins, chosen from ``alpha_grid`` (times the mean squared
    singular value of the centred training genes) by the validation mean squared error; without
    validation cells, by generalised cross-validation on the training cells. All candidates come
    from one SVD of the centred training genes.

    Parameters
    ----------
    X, Y
        Training genes (cells × genes) and proteins (cells × proteins).
    t_train
        Time code of each training cell.
    n_time
        Number of time categories.
    X_val, Y_val, t_val
        Validation cells of trained time points (may be ``None`` or empty).
    alpha_grid
        Relative penalties to choose from.
    return_error
        Also return the selection criterion of the chosen penalty: the validation mean squared
        error, or the generalised cross-validation estimate of it without validation cells.

    Returns
    -------
    Weights (genes × proteins), intercepts (time categories × proteins), the chosen absolute penalty
    and the number of candidates; with ``return_error``, the criterion of the chosen penalty last.
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
    intercept = mean_y - mean_x @ W
    if return_error:
        return W, intercept, alpha, len(alphas), float(errors[best])
    return W, intercept, alpha, len(alphas)
