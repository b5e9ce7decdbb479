"""The linear path: ridge regression from genes to proteins with one intercept per time point (pure numpy)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import linalg, sparse

LINEAR_ALPHA_GRID = tuple(float(a) for a in np.logspace(-4, 3, 29))
"""Ridge penalties of the linear path, relative to the mean squared singular value of the training RNA."""

LINEAR_SCREEN_SIZES = (64, 256, 1024)
"""Numbers of screened genes the linear path's ``"auto"`` gene set chooses from (beside all genes)."""

LINEAR_SCREEN_DEFAULT = 256
"""Number of screened genes of the linear path's ``"screen"`` gene set."""


def measured_protein_groups(measured: np.ndarray) -> list[np.ndarray]:
    """Partition proteins by the cells that measured them: proteins with identical columns share a group.

    Parameters
    ----------
    measured
        Boolean cells × proteins matrix, ``True`` where a protein was measured (not NaN).

    Returns
    -------
    Sorted protein positions of each group, groups ordered by their first protein. Without any
    missing value this is one group of every protein.
    """
    measured = np.asarray(measured, dtype=bool)
    n_proteins = measured.shape[1]
    if n_proteins == 0:
        return []
    if measured.all():
        return [np.arange(n_proteins)]
    packed = np.packbits(measured, axis=0)  # one column of bytes per protein
    _, first, inverse = np.unique(packed.T, axis=0, return_index=True, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [np.flatnonzero(inverse == g) for g in np.argsort(first, kind="stable")]


def _validation_mse(residual: np.ndarray, Y_val: np.ndarray) -> float:
    """Mean squared ``residual`` over the measured (non-NaN) entries of ``Y_val``."""
    measured = ~np.isnan(Y_val)
    if measured.all():
        return float(np.mean(residual**2))
    return float(np.sum(np.where(measured, residual, 0.0) ** 2) / max(int(measured.sum()), 1))


def _require_measured(Y: np.ndarray, function: str) -> None:
    if np.isnan(Y).any():
        raise ValueError(
            f"`{function}` needs every protein measured in every training cell, but `Y` holds NaN (not measured). "
            "Fit each group of proteins measured in the same cells on those cells "
            "(`crossmodalnet.model._linear.measured_protein_groups`), as the model's linear path does."
        )


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
    from one SVD of the centred training genes. This needs every training cell dense; the model
    uses it only where that is no larger than a genes × genes matrix, and otherwise fits the same
    estimator from streamed statistics (:func:`ridge_statistics`, :func:`fit_ridge_from_statistics`).

    Parameters
    ----------
    X, Y
        Training genes (cells × genes) and proteins (cells × proteins).
    t_train
        Time code of each training cell.
    n_time
        Number of time categories.
    X_val, Y_val, t_val
        Validation cells of trained time points (may be ``None`` or empty). NaN in ``Y_val`` marks
        a protein the cell did not measure: the validation error is taken over measured values only.
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
    _require_measured(np.asarray(Y), "fit_ridge_by_time")
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
        errors = [
            _validation_mse(P @ ((sv / (sv**2 + a))[:, None] * UtY) + mean_y[t_val] - Y_val, Y_val) for a in alphas
        ]
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


LINEAR_MAX_GRAM_GENES = 4096
"""Most genes a gene set of the linear path is fitted on in closed form from its genes × genes statistics.

A set of ``g`` genes costs a ``g × g`` float64 gram matrix (accumulated over row chunks in
``O(cells · g²)`` operations) and its eigendecomposition (``O(g³)``). A larger set is fitted on the
densified training cells instead when there are at most this many of them (``O(cells · g)`` memory);
otherwise the ``"all"`` candidate is replaced by the screen's first ``LINEAR_MAX_GRAM_GENES`` genes.
"""

LINEAR_RANK_TOL = 1e-10
"""Eigenvalues of the centred gram matrix at most this fraction of the largest are treated as zero."""

_CHUNK_ELEMENTS = 1 << 22
"""Dense elements (float64) of one row chunk of the streamed statistics (32 MB)."""

SPARSE_GRAM_DENSITY = 0.05
"""Largest fraction of non-zeros in the first row chunk for which :func:`ridge_statistics` forms the gram from
sparse products (``Xᵀ X`` of each chunk, centred once at the end); denser chunks are densified, centred and
multiplied by BLAS. On 2,048 genes, sparse products took a quarter of the time of the dense route at 5 % non-zeros
and more than it from about 8 %."""


class RidgeStatistics(NamedTuple):
    """Sufficient statistics of the linear path's ridge regression, accumulated over row chunks.

    Attributes
    ----------
    genes
        Column positions (in the registered matrix) the statistics cover, sorted.
    n
        Number of training cells.
    mean_x, mean_y
        Per-time means of genes and proteins over the training cells (time categories × genes /
        proteins); untrained time points hold the overall training mean.
    gram
        Per-time-centred ``Xᶜᵀ Xᶜ`` (genes × genes).
    cross
        Per-time-centred ``Xᶜᵀ Yᶜ`` (genes × proteins).
    yy
        ``Σ (Yᶜ)²`` over training cells and proteins.
    """

    genes: np.ndarray
    n: int
    mean_x: np.ndarray
    mean_y: np.ndarray
    gram: np.ndarray
    cross: np.ndarray
    yy: float


def _rows_of(X, rows: np.ndarray, genes: np.ndarray | None):
    """Rows ``rows`` (sorted) of ``X`` restricted to ``genes``, sparse or dense as ``X`` gives them."""
    block = X[rows]
    return block if genes is None else block[:, genes]


def _as_dense(block) -> np.ndarray:
    """A row chunk as a dense float64 array."""
    return block.toarray().astype(np.float64) if sparse.issparse(block) else np.asarray(block, dtype=np.float64)


def _sparse_products(block) -> bool:
    """Whether the gram is formed from sparse products: a sparse chunk with few non-zeros (see ``SPARSE_GRAM_DENSITY``)."""
    return sparse.issparse(block) and block.nnz <= SPARSE_GRAM_DENSITY * block.shape[0] * block.shape[1]


def time_point_sums(block, t: np.ndarray, n_time: int) -> np.ndarray:
    """Sums of the rows of ``block`` (dense or sparse) per time code ``t`` (``n_time`` × columns, float64)."""
    indicator = sparse.csr_matrix((np.ones(t.size), (t, np.arange(t.size))), shape=(n_time, t.size))
    sums = indicator @ block
    return np.asarray(sums.toarray() if sparse.issparse(sums) else sums, dtype=np.float64)


def _chunk_rows(n_columns: int, chunk: int | None) -> int:
    return int(chunk) if chunk is not None else int(np.clip(_CHUNK_ELEMENTS // max(n_columns, 1), 64, 8192))


def ridge_statistics(
    X,
    rows: np.ndarray,
    Y: np.ndarray,
    t: np.ndarray,
    n_time: int,
    *,
    genes: np.ndarray | None = None,
    chunk: int | None = None,
    time_sums: np.ndarray | None = None,
) -> RidgeStatistics:
    """Accumulate the statistics of :func:`fit_ridge_from_statistics` over row chunks of ``X``.

    Two passes over the rows: the first sums genes per time point (skipped when ``time_sums`` gives
    them), the second adds each chunk's ``Xᶜᵀ Xᶜ`` and ``Xᶜᵀ Yᶜ`` (``Xᶜ``: ``genes`` centred by their
    time point's mean). A dense chunk, or a sparse one with more than ``SPARSE_GRAM_DENSITY`` non-zeros
    (judged on the first chunk), is densified and centred before the product, which keeps the gram free
    of the cancellation of ``XᵀX − n m mᵀ``; sparser chunks add their sparse ``XᵀX``, centred once at
    the end (in float64, for log-normalised counts, agreeing with the dense route to about 1e-12).
    Memory is ``O(genes² + chunk · genes)`` beside ``X`` itself, whatever the number of rows.

    Parameters
    ----------
    X
        Cells × genes matrix: dense, sparse or backed (read by sorted row chunks).
    rows
        Row positions of the training cells in ``X``.
    Y
        Proteins of the training cells (len(rows) × proteins), in the order of ``rows``; every value
        measured (no NaN). With proteins missing from some cells, accumulate the statistics of each
        group of :func:`measured_protein_groups` over the cells that measured it.
    t
        Time code of each training cell, in the order of ``rows``.
    n_time
        Number of time categories.
    genes
        Sorted column positions to accumulate (``None``: every column).
    chunk
        Rows per chunk (``None``: as many as fit 32 MB of dense float64).
    time_sums
        Sums of ``genes`` over the rows of each time point (``n_time`` × genes), when already known
        (:func:`~crossmodalnet.model._fitting.gene_pass` of the same rows and time codes): the rows
        are then read once.

    Returns
    -------
    The statistics; ``gram`` and ``cross`` are float64.

    Raises
    ------
    ValueError
        If ``Y`` holds NaN.
    """
    order = np.argsort(np.asarray(rows), kind="stable")
    rows = np.asarray(rows)[order]
    Y = np.asarray(Y, dtype=np.float64)[order]
    _require_measured(Y, "ridge_statistics")
    t = np.asarray(t, dtype=np.int64)[order]
    genes = None if genes is None else np.asarray(genes, dtype=np.int64)
    n, n_genes = rows.size, X.shape[1] if genes is None else genes.size
    step = _chunk_rows(n_genes, chunk)

    counts = np.bincount(t, minlength=n_time)
    if time_sums is not None:
        sums = np.asarray(time_sums, dtype=np.float64)
        if sums.shape != (n_time, n_genes):
            raise ValueError(f"`time_sums` must be time points × genes {(n_time, n_genes)}, got {sums.shape}.")
    else:
        sums = np.zeros((n_time, n_genes))
        for start in range(0, n, step):
            block = X[rows[start : start + step]]
            if genes is not None:
                block = block[:, genes]
            sums += time_point_sums(block, t[start : start + step], n_time)
    mean_x = np.tile(sums.sum(axis=0) / n, (n_time, 1))
    mean_y = np.tile(Y.mean(axis=0), (n_time, 1))
    trained = counts > 0
    mean_x[trained] = sums[trained] / counts[trained, None]
    for c in np.flatnonzero(trained):
        mean_y[c] = Y[t == c].mean(axis=0)
    Yc = Y - mean_y[t]

    gram = np.zeros((n_genes, n_genes), order="F")
    cross = np.zeros((n_genes, Y.shape[1]))
    start, sparse_products = 0, False
    while start < n:
        block = _rows_of(X, rows[start : start + step], genes)
        stop = start + block.shape[0]
        if start == 0 and _sparse_products(block):
            # sparse chunks: Σ x xᵀ over the chunks' non-zeros, centred once at the end; as many rows per chunk as
            # hold about the dense chunk's number of elements in non-zeros
            sparse_products = True
            if chunk is None:
                step = int(np.clip(_CHUNK_ELEMENTS * block.shape[0] // max(block.nnz, 1), step, 1 << 16))
        if sparse_products:
            block = sparse.csr_matrix(block, dtype=np.float64)
            gram += (block.T.tocsr() @ block).toarray()
            # Σ x ycᵀ equals Σ (x - m_t) ycᵀ: yc sums to zero within each time point
            cross += block.T @ Yc[start:stop]
        else:
            block = _as_dense(block)
            block -= mean_x[t[start:stop]]
            # upper triangle of gram += blockᵀ block (block.T is Fortran-ordered: no copy)
            gram = linalg.blas.dsyrk(1.0, block.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=True)
            cross += block.T @ Yc[start:stop]
        start = stop
    if sparse_products:
        # Σ (x - m_t)(x - m_t)ᵀ = Σ x xᵀ - Σ_t s_t s_tᵀ / n_t, with s_t the sum of x over time point t's rows
        gram -= sums[trained].T @ (sums[trained] / counts[trained, None])
    gram = np.triu(gram) + np.triu(gram, 1).T
    return RidgeStatistics(
        genes=np.arange(X.shape[1]) if genes is None else genes,
        n=n,
        mean_x=mean_x,
        mean_y=mean_y,
        gram=gram,
        cross=cross,
        yy=float(np.sum(Yc**2)),
    )


def fit_ridge_from_statistics(
    stats: RidgeStatistics,
    subset: np.ndarray | None = None,
    *,
    X_val=None,
    val_rows: np.ndarray | None = None,
    Y_val: np.ndarray | None = None,
    t_val: np.ndarray | None = None,
    alpha_grid: tuple[float, ...] = LINEAR_ALPHA_GRID,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float, int, float]:
    """Fit :func:`fit_ridge_by_time`'s ridge regression from chunk-accumulated statistics.

    The same estimator, penalty grid and selection as :func:`fit_ridge_by_time`, computed from
    the eigendecomposition ``Xᶜᵀ Xᶜ = V diag(d) Vᵀ`` of the centred gram matrix instead of the
    SVD of the centred cells × genes matrix (``d`` are the squared singular values, ``V`` the right
    singular vectors). With ``C = Vᵀ Xᶜᵀ Yᶜ`` the weights at penalty ``a`` are
    ``V diag(1 / (d + a)) C``. Without validation cells the generalised cross-validation estimate
    uses the residual sum of squares ``Σ(Yᶜ)² − Σ C²/d + Σ (a / (d + a))² C²/d`` and the effective
    degrees of freedom ``Σ d / (d + a)``. Validation cells are predicted chunk by chunk from ``X_val``.

    Parameters
    ----------
    stats
        Statistics from :func:`ridge_statistics`.
    subset
        Positions within ``stats.genes`` of the gene set to fit (``None``: all of them).
    X_val
        Matrix holding the validation cells (dense, sparse or backed), read by row chunks.
    val_rows
        Row positions of the validation cells (of trained time points) in ``X_val``; ``None`` or
        empty selects the penalty by generalised cross-validation.
    Y_val, t_val
        Proteins and time codes of the validation cells, in the order of ``val_rows``. NaN in
        ``Y_val`` marks a protein the cell did not measure: the validation error is the mean squared
        error over measured values only.
    alpha_grid
        Relative penalties to choose from (times the mean of the non-zero eigenvalues).
    chunk
        Validation rows read at once (``None``: 32 MB of dense float64 per chunk).

    Returns
    -------
    Weights (genes of the set × proteins), intercepts (time categories × proteins), the chosen absolute
    penalty, the number of candidate penalties and the criterion of the chosen penalty.
    """
    positions = np.arange(stats.genes.size) if subset is None else np.asarray(subset, dtype=np.int64)
    genes = stats.genes[positions]
    gram = stats.gram if subset is None else stats.gram[np.ix_(positions, positions)]
    B, mean_x = stats.cross[positions], stats.mean_x[:, positions]
    if gram.size:
        d, V = linalg.eigh(gram, check_finite=False, driver="evd")
    else:
        d, V = np.zeros(0), np.zeros((0, 0))
    keep = d > d.max() * LINEAR_RANK_TOL if d.size and d.max() > 0 else np.zeros(d.size, dtype=bool)
    d, V = d[keep], V[:, keep]
    C = V.T @ B
    alphas = np.asarray(alpha_grid, dtype=np.float64) * float(np.mean(d)) if d.size else np.ones(1)

    def weights(a: np.ndarray) -> np.ndarray:  # genes × len(a) × proteins
        scaled = C[:, None, :] / (d[:, None, None] + a[None, :, None])
        return (V @ scaled.reshape(d.size, -1)).reshape(genes.size, a.size, B.shape[1])

    if val_rows is not None and len(val_rows):
        order = np.argsort(np.asarray(val_rows), kind="stable")
        val_rows = np.asarray(val_rows)[order]
        Y_val = np.asarray(Y_val, dtype=np.float64)[order]
        t_val = np.asarray(t_val, dtype=np.int64)[order]
        step = _chunk_rows(genes.size, chunk)
        # as many penalties at once as keep the stacked weights near one chunk's size
        per_group = max(1, _CHUNK_ELEMENTS // max(genes.size * B.shape[1], 1))
        measured = ~np.isnan(Y_val)
        all_measured = bool(measured.all())
        sse = np.zeros(alphas.size)
        for g0 in range(0, alphas.size, per_group):
            group = alphas[g0 : g0 + per_group]
            W = weights(group)
            W = W.reshape(genes.size, -1)
            intercepts = stats.mean_y[:, None, :] - (mean_x @ W).reshape(-1, group.size, B.shape[1])
            for start in range(0, val_rows.size, step):
                block = X_val[val_rows[start : start + step]][:, genes]
                pred = np.asarray(block @ W if sparse.issparse(block) else np.asarray(block, dtype=np.float64) @ W)
                pred = pred.reshape(-1, group.size, B.shape[1]) + intercepts[t_val[start : start + step]]
                residual = pred - Y_val[start : start + step, None, :]
                if not all_measured:  # NaN: not measured, no error
                    residual = np.where(measured[start : start + step, None, :], residual, 0.0)
                sse[g0 : g0 + group.size] += np.sum(residual**2, axis=(0, 2))
        errors = sse / (Y_val.size if all_measured else max(int(measured.sum()), 1))
    else:
        n = stats.n
        energy = np.sum(C**2, axis=1) / d if d.size else np.zeros(0)
        resid_total = stats.yy - energy.sum()
        errors = np.empty(alphas.size)
        for i, a in enumerate(alphas):
            shrink = d / (d + a)
            rss = resid_total + np.sum((1 - shrink) ** 2 * energy)
            errors[i] = rss / n / max(1 - shrink.sum() / n, 1e-6) ** 2
    best = int(np.argmin(errors))
    alpha = float(alphas[best])
    W = weights(alphas[best : best + 1])[:, 0, :]
    intercept = stats.mean_y - mean_x @ W
    return W, intercept, alpha, alphas.size, float(errors[best])
