"""What a model fits in closed form on its training cells before the networks train.

Gene and protein scaling, the input reduction (HVG selection, protein-correlation screen or truncated
SVD), the linear path,
and the gene moments used by saliency.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import NamedTuple

import numpy as np
import torch
from scipy import sparse

from crossmodalnet._constants import REGISTRY_KEYS
from crossmodalnet._utils import is_in_memory

from ._linear import (
    LINEAR_MAX_GRAM_GENES,
    LINEAR_SCREEN_DEFAULT,
    LINEAR_SCREEN_SIZES,
    fit_ridge_by_time,
    fit_ridge_from_statistics,
    measured_protein_groups,
    ridge_statistics,
    time_point_sums,
)
from ._presets import linear_standin_genes

logger = logging.getLogger(__name__)


def column_moments(X, rows: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of ``X`` over ``rows``, read by row chunks.

    Parameters
    ----------
    X
        Dense, sparse or backed matrix.
    rows
        Row positions to use.
    chunk
        Rows read at once.

    Returns
    -------
    Mean and (population) standard deviation of each column, over its non-NaN values (NaN marks a
    protein a cell did not measure).
    """
    moments = _Moments(X.shape[1])
    rows = np.sort(rows)
    for start in range(0, rows.size, chunk):
        moments.add(X[rows[start : start + chunk]])
    return moments.result()


class _Moments:
    """Running per-column sums of values and squares over row blocks (NaN: not measured, left out)."""

    def __init__(self, n_columns: int):
        self.total = np.zeros(n_columns)
        self.total_sq = np.zeros(n_columns)
        self.count = np.zeros(n_columns)

    def add(self, block) -> None:
        if sparse.issparse(block):
            self.total += np.asarray(block.sum(axis=0)).ravel()
            self.total_sq += np.asarray(block.multiply(block).sum(axis=0)).ravel()
            self.count += block.shape[0]
            return
        block = np.asarray(block, dtype=np.float64)
        measured = ~np.isnan(block)
        if measured.all():
            self.total += block.sum(axis=0)
            self.total_sq += (block**2).sum(axis=0)
            self.count += block.shape[0]
        else:  # NaN: not measured (proteins of another panel), left out
            block = np.where(measured, block, 0.0)
            self.total += block.sum(axis=0)
            self.total_sq += (block**2).sum(axis=0)
            self.count += measured.sum(axis=0)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        count = np.maximum(self.count, 1)
        mean = self.total / count
        return mean, np.sqrt(np.maximum(self.total_sq / count - mean**2, 0.0))


class GenePass(NamedTuple):
    """What one pass over the training cells' genes gathers for the closed-form fits (:func:`gene_pass`).

    Attributes
    ----------
    mean, sd
        Mean and population standard deviation of every gene (:func:`column_moments`).
    time_sums
        Sums of every gene over the cells of each time point (time points × genes), for the linear
        path's per-time centring (``time_sums`` of :func:`~crossmodalnet.model._linear.ridge_statistics`).
    screen_cross
        The supervised screen's gene × protein products (``cross`` of :func:`screen_ranking`), or ``None``
        when no proteins were given.
    """

    mean: np.ndarray
    sd: np.ndarray
    time_sums: np.ndarray
    screen_cross: np.ndarray | None


def gene_pass(
    X, rows: np.ndarray, t: np.ndarray, n_time: int, Y: np.ndarray | None = None, chunk: int = 4096
) -> GenePass:
    """The genes' moments, per-time sums and (with ``Y``) screen products, from one pass over row chunks.

    Each result is that of its own pass: :func:`column_moments` and :func:`screen_ranking`'s products
    exactly, the per-time sums of :func:`~crossmodalnet.model._linear.ridge_statistics`'s first pass up
    to rounding. The fits before the first epoch so read the training cells twice (this pass and the
    linear path's gram) where they read them four times, which counts most for a reference on disk.

    Parameters
    ----------
    X
        Cells × genes matrix (dense, sparse or backed).
    rows
        Row positions of the training cells (any order; read sorted).
    t
        Time code of each cell of ``rows``, in the order of ``rows``.
    n_time
        Number of time categories.
    Y
        Proteins of the cells ``rows``, in the order of ``rows``, every value measured; ``None``: no screen
        products.
    chunk
        Rows read at once.

    Returns
    -------
    The pass's statistics.
    """
    order = np.argsort(np.asarray(rows), kind="stable")
    rows, t = np.asarray(rows)[order], np.asarray(t, dtype=np.int64)[order]
    targets = None if Y is None else _screen_targets(np.asarray(Y, dtype=np.float64)[order])[0]  # the sorted copy freed
    moments = _Moments(X.shape[1])
    time_sums = np.zeros((n_time, X.shape[1]))
    cross = None if targets is None else np.zeros((X.shape[1], targets.shape[1]))
    for start in range(0, rows.size, chunk):
        block = X[rows[start : start + chunk]]
        moments.add(block)
        time_sums += time_point_sums(block, t[start : start + chunk], n_time)
        if cross is not None:
            cross += _block_cross(block, targets[start : start + chunk])
    return GenePass(*moments.result(), time_sums, cross)


def screen_genes(X, Y: np.ndarray, rows: np.ndarray, n_genes: int, chunk: int = 4096) -> np.ndarray:
    """Sorted positions of the first ``n_genes`` genes of :func:`screen_ranking`.

    Parameters
    ----------
    X, Y, rows, chunk
        As in :func:`screen_ranking`.
    n_genes
        Number of genes to keep.

    Returns
    -------
    Sorted positions of the ``n_genes`` kept genes.
    """
    return np.sort(screen_ranking(X, Y, rows, chunk=chunk)[:n_genes])


def screen_ranking(
    X,
    Y: np.ndarray,
    rows: np.ndarray,
    chunk: int = 4096,
    *,
    x_sd: np.ndarray | None = None,
    cross: np.ndarray | None = None,
) -> np.ndarray:
    """Every gene, ordered by the supervised screen: each protein's best genes first.

    Every gene's Pearson correlation with every protein is computed over ``rows``; a protein some
    cells did not measure (NaN in ``Y``) is correlated over the cells that measured it (proteins
    measured in the same cells share one pass over their rows). Genes are then taken in rounds:
    round ``r`` adds each protein's ``r``-th most correlated gene (by ``|r|``), so every protein
    gets its own top genes before any protein gets more; within the last round, genes with the
    larger ``|r|`` to any protein come first. Constant genes have correlation 0; constant proteins
    (over their measured cells) are ignored.

    Parameters
    ----------
    X
        Cells × genes matrix (dense, sparse or backed), read by row chunks.
    Y
        Proteins of the cells ``rows`` (len(rows) × proteins), in the order of ``rows``; NaN marks
        a protein the cell did not measure.
    rows
        Row positions in ``X`` of the cells to use (the training cells).
    chunk
        Rows of ``X`` read at once.
    x_sd
        Standard deviation of every gene over ``rows`` (:func:`column_moments`), when already known: it
        saves one pass over the rows (used for proteins every cell measured).
    cross
        ``screen_cross`` of :func:`gene_pass` over the same ``rows`` and ``Y``, when already known: with
        ``x_sd``, the ranking then reads nothing from ``X`` (every protein must be measured in every cell).

    Returns
    -------
    Gene positions in screen order; the screen's top ``k`` genes are the first ``k`` (the order is
    total, so every ``k`` is a prefix of the same ranking).
    """
    order = np.argsort(np.asarray(rows), kind="stable")
    rows, Yr = np.asarray(rows)[order], np.asarray(Y, dtype=np.float64)[order]
    measured = ~np.isnan(Yr)
    if cross is not None and not measured.all():
        raise ValueError("`cross` serves proteins every cell measured; `Y` holds NaN.")
    blocks = []
    for proteins in measured_protein_groups(measured):
        cells = measured[:, proteins[0]]
        if cells.any():
            if cells.all():
                Yg = Yr if proteins.size == Yr.shape[1] else Yr[:, proteins]
                blocks.append(_screen_correlations(X, rows, Yg, chunk, x_sd=x_sd, cross=cross))
            else:
                blocks.append(_screen_correlations(X, rows[cells], Yr[cells][:, proteins], chunk))
    if not blocks or sum(b.shape[1] for b in blocks) == 0:
        raise ValueError("Every protein is constant over the training cells; there is nothing to screen genes by.")
    corr = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
    # rank of each gene within each protein (0 = most correlated; ties by gene position)
    rank = np.empty(corr.shape, dtype=np.int64)
    order = np.argsort(-corr, axis=0, kind="stable")
    np.put_along_axis(rank, order, np.arange(corr.shape[0])[:, None], axis=0)
    best_rank, best_corr = rank.min(axis=1), corr.max(axis=1)
    return np.lexsort((np.arange(corr.shape[0]), -best_corr, best_rank))


def _screen_targets(Yr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-constant proteins of ``Yr`` centred and scaled to unit sd, and the mask of those proteins."""
    y_sd = Yr.std(axis=0)
    informative = y_sd > 1e-12
    Ys = Yr[:, informative]  # a copy, scaled in place (cells × proteins can be hundreds of MB)
    Ys -= Ys.mean(axis=0)
    Ys /= y_sd[informative]
    return Ys, informative


def _block_cross(block, ys: np.ndarray) -> np.ndarray:
    # ys is centred, so the block need not be: sum_i x_i (y_i - mean y) is the covariance numerator
    return np.asarray(block.T @ ys) if sparse.issparse(block) else np.asarray(block, dtype=np.float64).T @ ys


def _screen_correlations(
    X,
    rows: np.ndarray,
    Yr: np.ndarray,
    chunk: int,
    x_sd: np.ndarray | None = None,
    cross: np.ndarray | None = None,
) -> np.ndarray:
    """``|r|`` of every gene (rows of the result) with every non-constant protein of ``Yr`` over the sorted ``rows``.

    ``x_sd``: the genes' standard deviations over ``rows`` if known (otherwise read from ``X``); ``cross``:
    the genes' products with the scaled proteins if known (:func:`gene_pass`; otherwise read from ``X``).
    """
    Ys, informative = _screen_targets(Yr)
    if not informative.any():
        return np.zeros((X.shape[1], 0))
    if x_sd is None:
        _, x_sd = column_moments(X, rows, chunk=chunk)
    if cross is None:
        cross = np.zeros((X.shape[1], Ys.shape[1]))
        for start in range(0, rows.size, chunk):
            cross += _block_cross(X[rows[start : start + chunk]], Ys[start : start + chunk])
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.abs(cross / rows.size / x_sd[:, None])
    corr[~np.isfinite(corr) | (x_sd[:, None] <= 1e-12)] = 0.0
    return corr


def streamed_svd_components(X, rows: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Top ``k`` right singular vectors (genes × ``k``) of the rows ``rows`` of ``X``, uncentred, read by row chunks.

    The eigenvectors of the genes × genes ``XᵀX`` accumulated chunk by chunk (memory ``O(genes²)``): the exact
    components that :class:`~sklearn.decomposition.TruncatedSVD` approximates by randomised iterations,
    with its sign convention (each component's largest loading positive).

    Parameters
    ----------
    X
        Cells × genes matrix (dense, sparse or backed).
    rows
        Sorted row positions of the training cells.
    k
        Number of components.
    chunk
        Rows read at once.

    Returns
    -------
    Genes × ``k`` float64 array, components in decreasing order of singular value.
    """
    n_genes = X.shape[1]
    if n_genes > LINEAR_MAX_GRAM_GENES:
        raise ValueError(
            f"`input_reduction='svd'` on a backed (on-disk) RNA matrix accumulates a genes × genes matrix, "
            f"which is limited to {LINEAR_MAX_GRAM_GENES} genes; there are {n_genes}. Select genes first, use "
            "`input_reduction='screen'`, or read the MuData into memory (`mudata.read_h5mu(path)`)."
        )
    if k >= min(rows.size, n_genes):
        raise ValueError(
            f"`n_input_features={k}` SVD components need more than {k} training cells and genes; "
            f"there are {rows.size} training cells and {n_genes} genes. Use fewer components."
        )
    gram = np.zeros((n_genes, n_genes))
    for start in range(0, rows.size, chunk):
        block = X[rows[start : start + chunk]]
        block = block.toarray() if sparse.issparse(block) else np.asarray(block)
        block = block.astype(np.float64)
        gram += block.T @ block
    _, vectors = np.linalg.eigh(gram)
    components = vectors[:, ::-1][:, :k]
    signs = np.sign(components[np.argmax(np.abs(components), axis=0), np.arange(k)])
    return components * np.where(signs == 0, 1.0, signs)


class TrainingFitMixin:
    """Fit the model's closed-form parts on its training cells (each only once, at the first ``train``)."""

    def _fit_on_training_cells(self, train_idx: np.ndarray, val_idx: np.ndarray, *, seed: int) -> None:
        module = self.module
        X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        rows = np.sort(np.asarray(train_idx))
        if module.standardize_protein and not bool(module.protein_scaling_fitted):
            module.fit_protein_scaling(*self._column_moments(REGISTRY_KEYS.PROTEIN_KEY, train_idx))
        # one pass over the training cells' genes serves the input scaling, gene_moments_, the screens (their
        # products with the loss-scale proteins, when a screen will run and every protein is measured) and the
        # linear path's per-time centring
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1).astype(np.int64)
        Y = self._loss_scale_proteins(rows) if self._screens_before_training() else None
        Y = None if Y is None or np.isnan(Y).any() else Y
        fitted = gene_pass(X, rows, codes[rows], len(self.time_categories), Y)
        del Y  # cells × proteins in float64: not held while the linear path makes its own
        gene_mean, gene_sd = fitted.mean, fitted.sd
        # what the closed-form fits share, all over `rows`: the pass and (once computed) the screen's ranking of the
        # genes by the proteins on the loss scale
        self._training_fit_cache = {"rows": rows, "pass": fitted, "ranking": None}
        try:
            if module.standardize_input and not bool(module.input_scaling_fitted):
                module.fit_input_scaling(*(torch.as_tensor(v, dtype=torch.float32) for v in (gene_mean, gene_sd)))
            if module.input_reduction is not None and not bool(module.input_reduction_fitted):
                self._fit_input_reduction(train_idx, seed=seed)
            self.gene_moments_ = {"mean": gene_mean.astype(np.float32), "sd": gene_sd.astype(np.float32)}
            if module.linear_path and not bool(module.linear_path_fitted):
                self._fit_linear_path(train_idx, val_idx)
        finally:
            del self._training_fit_cache

    def _screen_ranking(self, X, Y: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """:func:`screen_ranking` of the loss-scale proteins ``Y`` of cells ``rows``, computed once per training fit.

        Over all training cells and all proteins, every one measured in each cell, the genes' sd comes from the
        training fit's moments and the ranking is kept for the next screen of the same fit (the networks' input
        screen and the linear path's share it). Any other screen (a group of proteins, fewer cells) is computed.
        """
        cache = getattr(self, "_training_fit_cache", None)
        rows = np.asarray(rows)
        shared = (
            cache is not None
            and Y.shape[1] == self.n_proteins
            and np.array_equal(np.sort(rows), cache["rows"])
            and not np.isnan(Y).any()
        )
        if not shared:
            return screen_ranking(X, Y, rows)
        if cache["ranking"] is None:
            cache["ranking"] = screen_ranking(X, Y, rows, x_sd=cache["pass"].sd, cross=cache["pass"].screen_cross)
        return cache["ranking"]

    def _screens_before_training(self) -> bool:
        """Whether a fit before the first epoch will screen genes (the networks' input or the linear path's sets)."""
        module = self.module
        if module.input_reduction == "screen" and not bool(module.input_reduction_fitted):
            return True
        return bool(module.linear_path) and not bool(module.linear_path_fitted) and self.linear_path_genes != "all"

    def _shared_time_sums(self, rows: np.ndarray, genes: np.ndarray) -> np.ndarray | None:
        """Per-time sums of ``genes`` over ``rows`` from the training fit's gene pass, if ``rows`` are its cells."""
        cache = getattr(self, "_training_fit_cache", None)
        if cache is None or not np.array_equal(np.sort(np.asarray(rows)), cache["rows"]):
            return None
        return cache["pass"].time_sums[:, genes]

    def _column_moments(self, registry_key: str, train_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        X = (
            self._registered_proteins()
            if registry_key == REGISTRY_KEYS.PROTEIN_KEY
            else self.adata_manager.get_from_registry(registry_key)
        )
        mean, std = column_moments(X, np.asarray(train_idx))
        return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

    def _fit_gene_moments(self, train_idx: np.ndarray) -> None:
        """Store the mean and standard deviation of every gene over the training cells in ``gene_moments_``."""
        mean, sd = self._column_moments(REGISTRY_KEYS.X_KEY, np.asarray(train_idx))
        self.gene_moments_ = {"mean": mean.numpy(), "sd": sd.numpy()}

    def _fit_input_reduction(self, train_idx: np.ndarray, *, seed: int) -> None:
        """Fit the HVG selection, the gene screen or the truncated SVD of the module's input on the training cells."""
        X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        k = self.module.n_features
        if self.module.input_reduction == "screen":  # read by row chunks: no copy of the training cells
            rows = np.sort(train_idx)
            ranking = self._screen_ranking(X, self._loss_scale_proteins(rows), rows)
            self.module.fit_input_reduction(torch.as_tensor(np.sort(ranking[:k])))
            return
        if not is_in_memory(X):  # a matrix on disk is never read whole
            if self.module.input_reduction == "svd":
                components = streamed_svd_components(X, np.sort(train_idx), k)
                self.module.fit_input_reduction(torch.as_tensor(components, dtype=torch.float32))
                return
            raise ValueError(
                "`input_reduction='hvg'` reads every training cell into memory (scanpy's selection), which a "
                "backed (on-disk) RNA matrix is not. Use `input_reduction='screen'` or `'svd'` (both read the file "
                "by row chunks), or read the MuData into memory (`mudata.read_h5mu(path)`)."
            )
        # scanpy's HVG selection and sklearn's truncated SVD take the training cells as one matrix: a copy
        # of their rows (sparse rows stay sparse; neither densifies a sparse matrix)
        block = X[np.sort(train_idx)]
        block = block.tocsr() if sparse.issparse(block) else np.asarray(block, dtype=np.float32)
        if self.module.input_reduction == "hvg":
            import scanpy as sc
            from anndata import AnnData

            # scanpy's seurat flavour expects log-normalised data, which is what the model is given.
            tmp = AnnData(block)
            tmp.var_names = self.gene_names.astype(str)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                sc.pp.highly_variable_genes(tmp, n_top_genes=k, flavor="seurat", inplace=True)
            disp = np.nan_to_num(tmp.var["dispersions_norm"].to_numpy(dtype=float), nan=-np.inf)
            hvg = tmp.var["highly_variable"].to_numpy(dtype=bool)
            # scanpy's selection; ties at its cut-off can give more or fewer than k genes: keep exactly k,
            # scanpy's genes first, then by normalised dispersion, then by position
            order = np.lexsort((np.arange(disp.size), -disp, ~hvg))
            self.module.fit_input_reduction(torch.as_tensor(np.sort(order[:k])))
        else:
            from sklearn.decomposition import TruncatedSVD

            if k >= min(block.shape):
                raise ValueError(
                    f"`n_input_features={k}` SVD components need more than {k} training cells and genes; "
                    f"there are {block.shape[0]} training cells. Use fewer components."
                )
            svd = TruncatedSVD(n_components=k, random_state=seed).fit(block)
            self.module.fit_input_reduction(torch.as_tensor(svd.components_.T.copy(), dtype=torch.float32))

    def _loss_scale_proteins(self, idx: np.ndarray) -> np.ndarray:
        """Registered proteins of cells ``idx`` on the loss scale (standardised with ``standardize_protein``)."""
        Y = torch.as_tensor(self._registered_dense(REGISTRY_KEYS.PROTEIN_KEY, idx), dtype=torch.float32)
        return self.module.scale_protein(Y).double().numpy()

    def _coding_gene_positions(self) -> np.ndarray:
        """Sorted positions, in the registered genes, of the proteins' coding genes (:func:`~crossmodalnet.pp.protein_genes`)."""
        from crossmodalnet.pp import protein_genes

        genes = [str(g) for g in self.gene_names]
        table = protein_genes([str(p) for p in self.protein_names], genes=genes, errors="ignore")
        symbols = {g for found in table["genes"] for g in found}
        return np.asarray([i for i, g in enumerate(genes) if g in symbols], dtype=np.int64)

    def _fit_linear_path(self, train_idx: np.ndarray, val_idx: np.ndarray) -> float:
        """Fit the linear path on the training cells, its genes and penalty chosen on validation cells.

        Proteins are taken on the loss scale. Each candidate gene set (``linear_path_genes``: all
        genes, the screened genes of :func:`screen_genes` on the training cells, or both kinds for
        ``"auto"``; with ``linear_path_coding_genes``, every screened set also holds the proteins'
        coding genes) gets its own penalty from the grid of
        :func:`~crossmodalnet.model._linear.fit_ridge_by_time`; the set and penalty with the lowest
        validation mean squared error (over validation cells of trained time points; without any,
        the generalised cross-validation estimate) win. Genes outside the chosen set get zero
        weight. The choice is recorded in ``linear_path_genes_``. An unseen time point later gets
        the intercepts interpolated with the same weights as its time embedding.

        Proteins some cells did not measure (NaN, e.g. references with different antibody panels)
        are fitted on measured values only: proteins measured in the same training cells form a
        group (:func:`~crossmodalnet.model._linear.measured_protein_groups`, typically one per
        panel combination), and each group is fitted as above on the training cells that measured
        it, with its own screen, gene set and penalty chosen by the validation error over the
        validation cells that measured its proteins. A time point trained overall but absent from a
        group's cells gets that group's intercept over all its cells (its overall mean); a group no
        training cell measured gets zero weights and intercepts. With missing values,
        ``linear_path_genes_`` holds ``"groups"``: per group its ``proteins`` (positions), ``n_cells``
        (training cells) and choice (``choice``, ``genes``, ``criterion``, ``errors``, ``alpha``); its
        top-level ``choice`` is that of the only fitted group, or ``"per_group"`` with ``genes`` the
        union of the groups' genes and ``alpha`` that of the group with the most training cells.
        Without missing values there is one group, no ``"groups"`` entry and the fit is unchanged.

        Nothing is densified beyond one row chunk: the candidate sets share one streamed
        accumulation of :func:`~crossmodalnet.model._linear.ridge_statistics` over the union of
        their genes (memory ``O(genes²)`` beside the registered matrix), and validation cells are
        predicted chunk by chunk. A set of more than
        :data:`~crossmodalnet.model._linear.LINEAR_MAX_GRAM_GENES` genes is fitted on the dense
        training cells when there are at most that many of them; with more genes and more training
        cells, the screen's first ``LINEAR_MAX_GRAM_GENES`` genes (``"screen4096"``) stand in for
        all genes, or its first :data:`~crossmodalnet.model._presets.LARGE_REFERENCE_LINEAR_GENES`
        (``"screen2048"``) on a large reference (:func:`~crossmodalnet.model._presets.linear_standin_genes`).

        Returns
        -------
        The chosen penalty (absolute); with several groups, that of the group with the most
        training cells.
        """
        train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1).astype(np.int64)
        X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        n_genes, n_time, n_proteins = X.shape[1], len(self.time_categories), self.n_proteins
        Y_train = self._loss_scale_proteins(train_idx)
        Y_val = self._loss_scale_proteins(val_idx) if val_idx.size else np.zeros((0, n_proteins))
        measured = ~np.isnan(Y_train)
        groups = measured_protein_groups(measured)
        W = np.zeros((n_genes, n_proteins))
        intercept = np.zeros((n_time, n_proteins))
        coding: list[np.ndarray] = []  # computed once, when a screened set first needs it
        records = []
        for proteins in groups:
            cells = measured[:, proteins[0]]
            rows = train_idx[cells]
            if rows.size == 0:
                logger.warning(
                    "linear path: no training cell measured protein(s) %s; their linear path is zero",
                    [str(self.protein_names[j]) for j in proteins[:5]],
                )
                records.append({"proteins": proteins.astype(np.int64), "n_cells": 0, "choice": "none"})
                continue
            t_rows = codes[rows]
            val_cells = np.isin(codes[val_idx], t_rows) & ~np.isnan(Y_val[:, proteins]).all(axis=1)
            Yg = Y_train[cells] if proteins.size == n_proteins else Y_train[cells][:, proteins]
            Yv = Y_val[val_cells] if proteins.size == n_proteins else Y_val[val_cells][:, proteins]
            W_group, b_group, record = self._fit_linear_group(X, rows, Yg, t_rows, val_idx[val_cells], Yv, coding)
            W[:, proteins] = W_group
            intercept[:, proteins] = b_group
            records.append({"proteins": proteins.astype(np.int64), "n_cells": int(rows.size), **record})
            if not measured.all():
                logger.info(
                    "linear path, %d protein(s) measured in %d training cells: genes %s (%d), ridge alpha %.4g",
                    proteins.size,
                    rows.size,
                    record["choice"],
                    record["genes"].size,
                    record["alpha"],
                )
        fitted = [r for r in records if r["n_cells"] > 0]
        main = max(fitted, key=lambda r: r["n_cells"]) if fitted else None
        alpha = float(main["alpha"]) if main is not None else float("nan")
        self.module.fit_linear_path(torch.as_tensor(W), torch.as_tensor(intercept), alpha)
        coding_genes = coding[0] if coding else np.zeros(0, dtype=np.int64)
        if measured.all() and main is not None:  # every protein measured in every training cell
            record = {k: v for k, v in main.items() if k not in ("proteins", "n_cells", "n_gene_sets", "n_alphas")}
            self.linear_path_genes_ = {**record, "coding_genes": coding_genes}
            logger.info(
                "linear path: genes %s (%d), ridge alpha %.4g (%d gene sets × %d penalties)",
                main["choice"],
                main["genes"].size,
                alpha,
                main["n_gene_sets"],
                main["n_alphas"],
            )
            return alpha
        used = [r["genes"] for r in fitted]
        if len(fitted) == 1:  # one group fitted (on the cells that measured it): its choice
            top = {k: main[k] for k in ("choice", "genes", "criterion", "errors", "alpha")}
        else:
            top = {
                "choice": "per_group",
                "genes": functools.reduce(np.union1d, used).astype(np.int64) if used else np.zeros(0, dtype=np.int64),
                "criterion": "per_group",
                "errors": {},
                "alpha": alpha,
            }
        self.linear_path_genes_ = {**top, "coding_genes": coding_genes, "groups": records}
        logger.info(
            "linear path: %d group(s) of proteins measured in the same training cells, each fitted on those cells",
            len(groups),
        )
        return alpha

    def _fit_linear_group(
        self,
        X,
        train_idx: np.ndarray,
        Y_train: np.ndarray,
        t_train: np.ndarray,
        val_known: np.ndarray,
        Y_val: np.ndarray,
        coding: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Fit the linear path of proteins every one of the cells ``train_idx`` measured (see :meth:`_fit_linear_path`).

        ``val_known`` are validation cells of the time points of ``t_train`` that measured at least one
        of the proteins (NaN in ``Y_val``: not measured, left out of the error); ``coding`` caches the
        coding-gene positions. Returns the weights (genes × proteins), the intercepts (time points ×
        proteins) and the record of the choice.
        """
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.TIME_KEY).reshape(-1).astype(np.int64)
        Y_val = Y_val if val_known.size else None
        n_genes, n_time = X.shape[1], len(self.time_categories)
        sizes = {"all": (), "screen": (LINEAR_SCREEN_DEFAULT,), "auto": LINEAR_SCREEN_SIZES}[self.linear_path_genes]
        # every gene in closed form needs a genes × genes gram, or the dense training cells when they are few;
        # past both limits the screen's first `standin` genes stand in for all genes
        all_fits = n_genes <= LINEAR_MAX_GRAM_GENES or train_idx.size <= LINEAR_MAX_GRAM_GENES
        standin = linear_standin_genes(
            getattr(self, "preset", "paper"), self.summary_stats["n_cells"], LINEAR_MAX_GRAM_GENES
        )
        candidates: dict[str, np.ndarray] = {}
        if (self.linear_path_genes != "screen" or LINEAR_SCREEN_DEFAULT >= n_genes) and all_fits:
            candidates["all"] = np.arange(n_genes)
        # "auto" keeps to all genes when no protein varies over the training cells (nothing to screen by)
        screenable = self.linear_path_genes == "screen" or bool((Y_train.std(axis=0) > 1e-12).any())
        screened = [k for k in sizes if k < n_genes and screenable]
        if self.linear_path_genes != "screen" and not all_fits:
            if not bool((Y_train.std(axis=0) > 1e-12).any()):
                raise ValueError(
                    "Every protein is constant over the training cells that measured it; the linear path cannot "
                    f"screen {n_genes} genes down to the {standin} it fits in closed form."
                )
            screened = [standin, *(k for k in screened if k != standin)]
            logger.info(
                "linear path: %d genes and %d training cells; the screen's first %d genes stand in for all genes",
                n_genes,
                train_idx.size,
                standin,
            )
        if screened and self.linear_path_coding_genes and not coding:
            coding.append(self._coding_gene_positions())
        coding_genes = coding[0] if screened and self.linear_path_coding_genes else np.zeros(0, dtype=np.int64)
        if screened:  # one screen; each candidate set is a prefix of its ranking
            ranking = self._screen_ranking(X, Y_train, train_idx)
            for k in screened:
                candidates[f"screen{k}"] = np.union1d(ranking[:k], coding_genes)
        fits, errors = {}, {}
        # sets the gram can hold come from one streamed accumulation over their union; larger ones
        # (possible only with at most LINEAR_MAX_GRAM_GENES training cells) from the dense training cells
        streamed = {k: v for k, v in candidates.items() if v.size <= LINEAR_MAX_GRAM_GENES or not all_fits}
        if streamed:
            union = functools.reduce(np.union1d, streamed.values())
            stats = ridge_statistics(
                X, train_idx, Y_train, t_train, n_time, genes=union, time_sums=self._shared_time_sums(train_idx, union)
            )
            for name, genes in streamed.items():
                *fits[name], errors[name] = fit_ridge_from_statistics(
                    stats,
                    np.searchsorted(union, genes),
                    X_val=X,
                    val_rows=val_known,
                    Y_val=Y_val,
                    t_val=codes[val_known],
                )
        for name, genes in candidates.items():
            if name in streamed:
                continue
            X_train = self._registered_dense(REGISTRY_KEYS.X_KEY, train_idx)[:, genes]
            X_val = self._registered_dense(REGISTRY_KEYS.X_KEY, val_known)[:, genes] if val_known.size else None
            *fits[name], errors[name] = fit_ridge_by_time(
                X_train, Y_train, t_train, n_time, X_val=X_val, Y_val=Y_val, t_val=codes[val_known], return_error=True
            )
            del X_train, X_val
        errors = {k: errors[k] for k in candidates}  # candidate order decides ties
        choice = min(errors, key=errors.get)  # first candidate on ties: all genes, then fewer screened genes
        W_chosen, intercept, alpha, n_alphas = fits[choice]
        W = np.zeros((n_genes, W_chosen.shape[1]))
        W[candidates[choice]] = W_chosen
        record = {
            "choice": choice,
            "genes": candidates[choice].astype(np.int64),
            "criterion": "validation_mse" if val_known.size else "gcv",
            "errors": {k: float(v) for k, v in errors.items()},
            "alpha": float(alpha),
            "n_gene_sets": len(candidates),
            "n_alphas": int(n_alphas),
        }
        return W, intercept, record
