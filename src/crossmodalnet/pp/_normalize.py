"""Normalisation of RNA and protein modalities, as thin wrappers over scanpy and muon.

Leakage: the paper normalises "after data split" (its §3.2). Library-size normalisation, log1p and
per-cell CLR use each cell alone. CLR across cells and DSB's technical-noise regression use statistics
shared across cells; with ``train_mask`` these are fitted on the training cells only and then applied
to every cell, so neither validation, test nor query cells change the values of a training cell.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

from crossmodalnet import _keys
from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY
from crossmodalnet._docs import docs
from crossmodalnet._settings import quiet_third_party
from crossmodalnet._utils import (
    detect_control_features,
    get_modality,
    is_nonnegative_integer,
    obs_mask,
    resolve_seed,
    shared_feature_names_quiet,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


def _check_counts(X, what: str, caller: str) -> None:
    if not is_nonnegative_integer(X):
        raise ValueError(
            f"{caller}: {what} does not hold raw counts (negative or non-integer values); it looks normalised already."
        )


def _same_values(a, b) -> bool:
    if a.shape != b.shape:
        return False
    if sparse.issparse(a) or sparse.issparse(b):
        a, b = sparse.csr_matrix(a), sparse.csr_matrix(b)
        return (a != b).nnz == 0
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _keep_counts(adata: AnnData, counts_layer: str | None, caller: str) -> None:
    if counts_layer is None:
        return
    if counts_layer in adata.layers:
        # scanpy's convention: raw counts in .X with a copy in layers['counts'] before normalising
        if _same_values(adata.layers[counts_layer], adata.X):
            logger.info("%s: layer %r already holds the counts of `.X`; kept as it is", caller, counts_layer)
            return
        raise ValueError(
            f"{caller}: layer {counts_layer!r} already exists and differs from `.X`; was this modality normalised "
            "already? Pass `counts_layer=None` to skip keeping counts or another layer name."
        )
    adata.layers[counts_layer] = adata.X.copy()


def _added(caller: str, mod_key: str, counts_layer: str | None, what: str) -> None:
    layer = f"mdata[{mod_key!r}].layers[{counts_layer!r}] (raw counts), " if counts_layer else ""
    logger.info(
        "%s: normalised mdata[%r].X (%s); added %smdata[%r].uns[%r]",
        caller,
        mod_key,
        what,
        layer,
        mod_key,
        _keys.PREPROCESSING,
    )


def _fit_record(mask: np.ndarray | None, n_obs: int) -> dict:
    return {
        "fit_on": "all" if mask is None else "train_mask",
        "n_fit_cells": int(n_obs if mask is None else mask.sum()),
    }


@docs.dedent
def log_normalize(
    mdata: MuData,
    *,
    rna_key: str = DEFAULT_RNA_KEY,
    target_sum: float = 1e4,
    counts_layer: str | None = "counts",
    copy: bool = False,
) -> MuData | None:
    """Library-size normalise and log1p-transform the RNA modality with scanpy.

    Each cell is scaled to ``target_sum`` total counts (:func:`scanpy.pp.normalize_total`) and
    log1p-transformed (:func:`scanpy.pp.log1p`), Seurat's ``NormalizeData`` as used in the paper.
    Both steps act on each cell alone, so no statistic of other cells (training or test) enters a
    cell's values: there is nothing to fit on training cells only.

    With ``copy=False`` the RNA modality is changed in place. A MuData built with
    ``md.MuData({"rna": adata, ...})`` holds ``adata`` itself, not a copy, so ``adata`` changes too;
    pass ``copy=True`` (which leaves it untouched) or build the MuData from ``adata.copy()``.

    Parameters
    ----------
    %(mdata)s Raw RNA counts in ``mdata[rna_key].X``.
    %(rna_key)s
    target_sum
        Total counts per cell after normalisation.
    counts_layer
        Layer to keep the raw counts in; ``None`` keeps no copy. An existing layer that already holds
        the counts of ``.X`` (scanpy's convention) is kept; one that differs raises.
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata[rna_key].X``
        log1p(counts / total × ``target_sum``).
    ``mdata[rna_key].layers[counts_layer]``
        The raw counts.
    ``mdata[rna_key].uns['cmn_preprocessing']``
        ``{'method': 'log1p_normalize_total', 'target_sum': ...}``.
    """
    import scanpy as sc

    caller = "cmn.pp.log_normalize"
    rna = get_modality(mdata, rna_key, caller, role="RNA")
    _check_counts(rna.X, f"`mdata[{rna_key!r}].X`", caller)
    if copy:
        mdata = mdata.copy()
        rna = mdata.mod[rna_key]
    _keep_counts(rna, counts_layer, caller)
    sc.pp.normalize_total(rna, target_sum=target_sum)
    sc.pp.log1p(rna)
    rna.uns[_keys.PREPROCESSING] = {"method": "log1p_normalize_total", "target_sum": float(target_sum)}
    _added(caller, rna_key, counts_layer, f"log1p, target_sum={target_sum:g}")
    return mdata if copy else None


@docs.dedent
def clr(
    mdata: MuData,
    *,
    protein_key: str = DEFAULT_PROTEIN_KEY,
    axis: Literal[0, 1] = 1,
    train_mask: str | Sequence[bool] | np.ndarray | None = None,
    counts_layer: str | None = "counts",
    copy: bool = False,
) -> MuData | None:
    """Centred-log-ratio normalise the protein modality, Seurat's flavour of :func:`muon.prot.pp.clr`.

    ``axis=1`` runs :func:`muon.prot.pp.clr` across the proteins of each cell, which uses no
    statistic of other cells. ``axis=0`` normalises each protein by its geometric mean across cells,
    ``log1p(x / exp(mean(log1p(x))))``, the same formula as muon; the mean is taken over the
    training cells only (``train_mask``) and applied to every cell.

    NaN means "not measured" (panels joined with ``anndata.concat(join="outer")``): it stays NaN,
    and each geometric mean is taken over the measured values only (with ``axis=1``, over the
    proteins the cell's panel measured). A cell's CLR values then depend on its panel, so the same
    antibody is on a different scale in a 14-antibody and a 134-antibody panel: normalise each
    reference on its own before joining them (tutorial *Two references, two panels*), and use this
    only where a joined matrix is all you have.

    Parameters
    ----------
    %(mdata)s Raw protein (ADT) counts in ``mdata[protein_key].X``.
    %(protein_key)s
    axis
        ``1`` (default): across proteins within each cell. ``0``: across cells for each protein
        (Seurat's ``margin=2``).
    %(train_mask)s Only used with ``axis=0``.
    counts_layer
        Layer to keep the raw counts in; ``None`` keeps no copy.
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata[protein_key].X``
        CLR-normalised abundance (dense ``float32``).
    ``mdata[protein_key].layers[counts_layer]``
        The raw counts.
    ``mdata[protein_key].uns['cmn_preprocessing']``
        ``{'method': 'clr', 'axis': ..., 'flavor': 'seurat', 'protein_names': ...}`` (the proteins the
        transform was computed over); with ``axis=0`` also the fitted per-protein ``log_mean``, ``fit_on`` and
        ``n_fit_cells``. A model set up on these proteins records it, and
        :func:`crossmodalnet.tl.predict_protein` applies the same transform to raw observed ADT counts.
    """
    with quiet_third_party():  # muon's import warns about scanpy's `__version__`
        import muon as mu

    caller = "cmn.pp.clr"
    if axis not in (0, 1):
        raise ValueError(f"{caller}: `axis` must be 0 or 1, got {axis!r}.")
    prot = get_modality(mdata, protein_key, caller, role="protein")
    _check_counts(prot.X, f"`mdata[{protein_key!r}].X`", caller)
    mask = obs_mask(mdata, train_mask, "train_mask", caller, obs_names=prot.obs_names) if axis == 0 else None
    if copy:
        mdata = mdata.copy()
        prot = mdata.mod[protein_key]
    _keep_counts(prot, counts_layer, caller)
    record: dict = {
        "method": "clr",
        "axis": int(axis),
        "flavor": "seurat",
        "protein_names": np.asarray(prot.var_names, dtype=str),
    }
    n_missing = _n_not_measured(prot.X)
    if n_missing:
        logger.info(
            "%s: %d value(s) of `mdata[%r].X` are NaN (not measured); they stay NaN, and each geometric mean is "
            "taken over the measured values only",
            caller,
            n_missing,
            protein_key,
        )
    if axis == 1 and not n_missing:
        X = prot.X.tocsr() if sparse.issparse(prot.X) else prot.X
        prot.X = X
        mu.prot.pp.clr(prot, axis=1)
        X = prot.X.toarray() if sparse.issparse(prot.X) else prot.X
    elif axis == 1:
        X = _clr_measured(prot.X, axis=1)
    else:
        counts = prot.X.toarray() if sparse.issparse(prot.X) else np.asarray(prot.X)
        counts = counts.astype(np.float64)
        fit = counts if mask is None else counts[mask]
        log_mean = _log_mean_measured(fit, axis=0)
        X = np.log1p(counts / np.exp(log_mean))
        record |= {"log_mean": log_mean, **_fit_record(mask, prot.n_obs)}
    prot.X = np.asarray(X, dtype=np.float32)
    prot.uns[_keys.PREPROCESSING] = record
    _added(caller, protein_key, counts_layer, f"CLR, axis={axis}")
    return mdata if copy else None


def _n_not_measured(X) -> int:
    """Number of NaN (not measured) values of a protein matrix, e.g. after ``anndata.concat(join="outer")``."""
    values = X.data if sparse.issparse(X) else np.asarray(X)
    return int(np.isnan(values).sum()) if values.dtype.kind == "f" else 0


def _log_mean_measured(counts: np.ndarray, *, axis: int) -> np.ndarray:
    """Mean of ``log1p(counts)`` along ``axis`` over the measured (non-NaN) values; NaN where none is measured."""
    logs = np.log1p(counts)
    measured = ~np.isnan(logs)
    n = measured.sum(axis=axis, keepdims=axis == 1)
    total = np.where(measured, logs, 0.0).sum(axis=axis, keepdims=axis == 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _clr_measured(X, *, axis: int) -> np.ndarray:
    """Seurat-flavour CLR, ``log1p(x / exp(mean(log1p(x))))``, with the mean over the measured values only.

    NaN (not measured) stays NaN; a cell or protein without any measured value is all NaN.
    """
    counts = (X.toarray() if sparse.issparse(X) else np.asarray(X)).astype(np.float64)
    return np.log1p(counts / np.exp(_log_mean_measured(counts, axis=axis)))


def _background_means(scaled: np.ndarray, seed: int | None) -> np.ndarray:
    """Per-cell background level: the lower mean of a 2-component Gaussian mixture over the cell's proteins.

    The same procedure as :func:`muon.prot.pp.dsb` (tied vs full covariance, chosen by BIC); each cell
    is fitted alone, so the result of a cell does not depend on other cells.
    """
    from sklearn.mixture import GaussianMixture

    shared = GaussianMixture(n_components=2, covariance_type="tied", init_params="random", random_state=seed)
    separate = GaussianMixture(n_components=2, covariance_type="full", init_params="random", random_state=seed)
    out = np.empty(scaled.shape[0], scaled.dtype)
    for c in range(scaled.shape[0]):
        x = scaled[c, :, np.newaxis]
        shared.fit(x)
        separate.fit(x)
        out[c] = np.min(shared.means_) if shared.bic(x) < separate.bic(x) else np.min(separate.means_)
    return out


@docs.dedent
def dsb(
    mdata: MuData,
    *,
    empty: AnnData,
    protein_key: str = DEFAULT_PROTEIN_KEY,
    isotype_controls: Sequence[str] | None = None,
    set_aside_isotypes: bool = True,
    pseudocount: int = 10,
    denoise_counts: bool = True,
    train_mask: str | Sequence[bool] | np.ndarray | None = None,
    counts_layer: str | None = "counts",
    rng: int | np.random.Generator | None = 0,
    copy: bool = False,
) -> MuData | None:
    """Normalise the protein modality with DSB, denoised and scaled by background :cite:p:`Mule2022`.

    Step I, with :func:`muon.prot.pp.dsb`: ``log(x + pseudocount)`` of every cell is centred and
    scaled by the mean and standard deviation of each protein in the empty droplets. Step II
    (``denoise_counts=True``), as in muon: each cell's background level (the lower component of a
    two-component Gaussian mixture over its proteins), combined with the isotype controls by a
    one-component PCA when they are given, is the technical covariate, and its linear effect on each
    protein is regressed out. Step I and the per-cell mixtures use no statistic of other cells; the
    PCA and the regression are fitted on the training cells (``train_mask``) and applied to every
    cell. With ``train_mask=None`` the result equals :func:`muon.prot.pp.dsb` on all cells.

    Parameters
    ----------
    %(mdata)s Raw protein (ADT) counts of the cells in ``mdata[protein_key].X``.
    empty
        Raw protein counts of empty droplets, with the same proteins (``var_names``) as
        ``mdata[protein_key]``. Droplets whose barcode is also a cell's are ignored, as in muon.
    %(protein_key)s
    isotype_controls
        Names of isotype-control proteins, used with the background level as the technical covariate.
        ``None``: detected by name (e.g. ``IgG2a_control_TotalSeqB``, ``MouseIgG1kappaisotype``) and a
        boolean ``var['isotype']``, and logged; ``[]``: none.
    set_aside_isotypes
        Move the isotype controls out of ``mdata[protein_key]`` after normalisation, into
        ``mdata[protein_key].obsm['cmn_isotype_controls']``, so they do not become prediction targets.
    pseudocount
        Added to the counts before the log.
    denoise_counts
        Run step II; ``False`` only centres and scales by the background.
    %(train_mask)s
    counts_layer
        Layer to keep the raw counts in; ``None`` keeps no copy.
    %(rng)s Seeds the Gaussian mixtures.
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata[protein_key].X``
        DSB-normalised abundance (dense).
    ``mdata[protein_key].layers[counts_layer]``
        The raw counts.
    ``mdata[protein_key].uns['cmn_preprocessing']``
        ``{'method': 'dsb', 'pseudocount', 'denoise_counts', 'n_empty_droplets', 'fit_on',
        'n_fit_cells'}`` and ``isotype_controls`` when given.

    Examples
    --------
    >>> mdata = cmn.datasets.synthetic_cite(n_isotypes=2)
    >>> empty = cmn.datasets.synthetic_empty_droplets(mdata)
    >>> cmn.pp.dsb(mdata, empty=empty, isotype_controls=["Isotype_1", "Isotype_2"])
    """
    import anndata as ad

    with quiet_third_party():  # muon's import warns about scanpy's `__version__`
        import muon as mu
    import pandas as pd

    caller = "cmn.pp.dsb"
    prot = get_modality(mdata, protein_key, caller, role="protein")
    _check_counts(prot.X, f"`mdata[{protein_key!r}].X`", caller)
    if not isinstance(empty, ad.AnnData):
        raise TypeError(f"{caller}: `empty` must be an AnnData of empty-droplet protein counts, got {type(empty)}.")
    missing = prot.var_names.difference(empty.var_names)
    if len(missing):
        raise ValueError(f"{caller}: `empty` lacks {len(missing)} protein(s) of the cells, e.g. {list(missing[:5])}.")
    _check_counts(empty.X, "`empty.X`", caller)
    if isotype_controls is None:
        ctrl = detect_control_features(prot.var)[0]
        if ctrl:
            logger.info("%s: isotype controls detected by name: %s", caller, ctrl)
    else:
        ctrl = [str(c) for c in isotype_controls]
    unknown = [c for c in ctrl if c not in prot.var_names]
    if unknown:
        raise KeyError(f"{caller}: isotype control(s) {unknown} are not proteins of `mdata[{protein_key!r}]`.")
    if pseudocount < 0:
        raise ValueError(f"{caller}: `pseudocount` must be non-negative, got {pseudocount}.")
    mask = obs_mask(mdata, train_mask, "train_mask", caller, obs_names=prot.obs_names)
    seed = resolve_seed(rng)

    # Step I with muon, on throw-away objects (muon writes into its inputs).
    cells = ad.AnnData(X=prot.X.copy(), obs=pd.DataFrame(index=prot.obs_names), var=pd.DataFrame(index=prot.var_names))
    background = ad.AnnData(
        X=empty[:, prot.var_names].X.copy(),
        obs=pd.DataFrame(index=empty.obs_names),
        var=pd.DataFrame(index=prot.var_names),
    )
    with warnings.catch_warnings():
        # muon announces that it treats every non-cell droplet as empty, which is what `empty` means here.
        warnings.filterwarnings("ignore", message="empty_counts_range values are not provided", category=UserWarning)
        mu.prot.pp.dsb(cells, background, pseudocount=pseudocount, denoise_counts=False)
    n_empty = int((~background.obs_names.isin(prot.obs_names)).sum())
    scaled = np.asarray(cells.X)

    if denoise_counts:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LinearRegression

        fit = slice(None) if mask is None else mask
        bg = _background_means(scaled, seed)
        if ctrl:
            pca = PCA(n_components=1, whiten=True)
            tech = np.hstack((scaled[:, prot.var_names.get_indexer(ctrl)], bg[:, np.newaxis]))
            pca.fit(tech[fit])
            covar = pca.transform(tech)
        else:
            covar = bg[:, np.newaxis]
        # The covariate is centred on the (training) cells before its effect is removed: muon's
        # `LinearRegression(copy_X=False)` centres it in place; the PCA output is centred already.
        covar = covar - covar[fit].mean(axis=0)
        reg = LinearRegression(fit_intercept=True).fit(covar[fit], scaled[fit])
        scaled = scaled - (covar @ reg.coef_.T).astype(scaled.dtype, copy=False)

    if copy:
        mdata = mdata.copy()
        prot = mdata.mod[protein_key]
    _keep_counts(prot, counts_layer, caller)
    prot.X = scaled
    record = {
        "method": "dsb",
        "pseudocount": int(pseudocount),
        "denoise_counts": bool(denoise_counts),
        "n_empty_droplets": n_empty,
        **_fit_record(mask, prot.n_obs),
    }
    if ctrl:
        record["isotype_controls"] = np.asarray(ctrl, dtype=str)
    prot.uns[_keys.PREPROCESSING] = record
    _added(caller, protein_key, counts_layer, "DSB" + (", denoised" if denoise_counts else ""))
    if ctrl and set_aside_isotypes:
        _set_aside(mdata, protein_key, ctrl, caller)
    return mdata if copy else None


def _set_aside(mdata: MuData, protein_key: str, features: list[str], caller: str) -> None:
    """Move ``features`` out of ``mdata[protein_key]`` into its ``.obsm`` (normalised values, cells × features)."""
    import pandas as pd

    prot = mdata.mod[protein_key]
    X = prot[:, features].X
    aside = pd.DataFrame(X.toarray() if sparse.issparse(X) else np.asarray(X), index=prot.obs_names, columns=features)
    kept = prot[:, ~prot.var_names.isin(features)].copy()
    kept.obsm[_keys.ISOTYPES] = aside
    kept.uns[_keys.PREPROCESSING]["isotypes_set_aside"] = True
    mdata.mod[protein_key] = kept
    with shared_feature_names_quiet():
        mdata.update()
    logger.info(
        "%s: set %d isotype control(s) aside: mdata[%r].obsm[%r]", caller, len(features), protein_key, _keys.ISOTYPES
    )


@docs.dedent
def normalize_protein(
    mdata: MuData,
    *,
    empty: AnnData | None = None,
    isotype_controls: Sequence[str] | None = None,
    protein_key: str = DEFAULT_PROTEIN_KEY,
    train_mask: str | Sequence[bool] | np.ndarray | None = None,
    counts_layer: str | None = "counts",
    rng: int | np.random.Generator | None = 0,
    copy: bool = False,
) -> MuData | None:
    """Normalise the protein modality: DSB when empty droplets are given, per-cell CLR otherwise.

    The paper uses DSB (:func:`crossmodalnet.pp.dsb`), which needs empty droplets; without them,
    :func:`crossmodalnet.pp.clr` across the proteins of each cell is the standard alternative. The
    transform used is recorded in ``mdata[protein_key].uns['cmn_preprocessing']['method']``.

    Parameters
    ----------
    %(mdata)s Raw protein (ADT) counts in ``mdata[protein_key].X``.
    empty
        Raw protein counts of empty droplets; selects DSB.
    isotype_controls
        Isotype-control proteins for DSB's denoising; needs ``empty``.
    %(protein_key)s
    %(train_mask)s Used by DSB; per-cell CLR fits nothing across cells.
    counts_layer
        Layer to keep the raw counts in; ``None`` keeps no copy.
    %(rng)s Used by DSB.
    %(copy)s

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets what :func:`crossmodalnet.pp.dsb` or
    :func:`crossmodalnet.pp.clr` (``axis=1``) sets.
    """
    if empty is not None:
        return dsb(
            mdata,
            empty=empty,
            protein_key=protein_key,
            isotype_controls=isotype_controls,
            train_mask=train_mask,
            counts_layer=counts_layer,
            rng=rng,
            copy=copy,
        )
    if isotype_controls is not None:
        raise ValueError(
            "cmn.pp.normalize_protein: `isotype_controls` are used by DSB, which needs empty droplets; pass `empty=`."
        )
    return clr(mdata, protein_key=protein_key, axis=1, counts_layer=counts_layer, copy=copy)
