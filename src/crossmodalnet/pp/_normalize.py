"""Normalisation of RNA and protein modalities, as thin wrappers over scanpy and muon."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

from crossmodalnet._constants import DEFAULT_PROTEIN_KEY, DEFAULT_RNA_KEY
from crossmodalnet._utils import get_modality

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

PREPROCESSING_KEY = "cmn_preprocessing"


def _looks_like_counts(X) -> bool:
    values = X.data if sparse.issparse(X) else np.asarray(X)
    values = values[: min(values.size, 100_000)] if values.ndim == 1 else values.ravel()[:100_000]
    return bool(values.size == 0 or (np.all(values >= 0) and np.allclose(values, np.round(values))))


def _keep_counts(adata: AnnData, counts_layer: str | None, caller: str) -> None:
    if counts_layer is None:
        return
    if counts_layer in adata.layers:
        raise ValueError(
            f"{caller}: layer {counts_layer!r} already exists; was this modality normalised already? "
            "Pass `counts_layer=None` to skip keeping counts or another layer name."
        )
    adata.layers[counts_layer] = adata.X.copy()


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
    log1p-transformed (:func:`scanpy.pp.log1p`). Both steps act on each cell alone, so no statistic
    fitted on other cells leaks into a cell's values.

    Parameters
    ----------
    mdata
        MuData with raw RNA counts in ``mdata[rna_key].X``.
    rna_key
        RNA modality.
    target_sum
        Total counts per cell after normalisation.
    counts_layer
        Layer to keep the raw counts in; ``None`` keeps no copy.
    copy
        Return a modified copy instead of writing in place.

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

    rna = get_modality(mdata, rna_key, "cmn.pp.log_normalize", role="RNA")
    if not _looks_like_counts(rna.X):
        raise ValueError(
            f"cmn.pp.log_normalize: `mdata[{rna_key!r}].X` does not hold raw counts (negative or non-integer "
            "values); it looks normalised already."
        )
    if copy:
        mdata = mdata.copy()
        rna = mdata.mod[rna_key]
    _keep_counts(rna, counts_layer, "cmn.pp.log_normalize")
    sc.pp.normalize_total(rna, target_sum=target_sum)
    sc.pp.log1p(rna)
    rna.uns[PREPROCESSING_KEY] = {"method": "log1p_normalize_total", "target_sum": float(target_sum)}
    logger.info(
        "normalised mdata[%r].X (log1p, target_sum=%g); raw counts in layer %r", rna_key, target_sum, counts_layer
    )
    return mdata if copy else None


def clr(
    mdata: MuData,
    *,
    protein_key: str = DEFAULT_PROTEIN_KEY,
    axis: Literal[0, 1] = 1,
    counts_layer: str | None = "counts",
    copy: bool = False,
) -> MuData | None:
    """Centred-log-ratio normalise the protein modality with :func:`muon.prot.pp.clr`.

    Parameters
    ----------
    mdata
        MuData with raw protein (ADT) counts in ``mdata[protein_key].X``.
    protein_key
        Protein modality.
    axis
        ``1`` (default): across proteins within each cell, which uses no statistic of other
        cells and so cannot leak between train and test cells. ``0``: across cells for each
        protein (Seurat's ``margin=2``).
    counts_layer
        Layer to keep the raw counts in; ``None`` keeps no copy.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or a copy if ``copy=True``. Sets:

    ``mdata[protein_key].X``
        CLR-normalised abundance (dense).
    ``mdata[protein_key].layers[counts_layer]``
        The raw counts.
    ``mdata[protein_key].uns['cmn_preprocessing']``
        ``{'method': 'clr', 'axis': ...}``.
    """
    import muon as mu

    prot = get_modality(mdata, protein_key, "cmn.pp.clr", role="protein")
    if not _looks_like_counts(prot.X):
        raise ValueError(
            f"cmn.pp.clr: `mdata[{protein_key!r}].X` does not hold raw counts (negative or non-integer values)."
        )
    if copy:
        mdata = mdata.copy()
        prot = mdata.mod[protein_key]
    _keep_counts(prot, counts_layer, "cmn.pp.clr")
    if sparse.issparse(prot.X):
        prot.X = prot.X.tocsc() if axis == 0 else prot.X.tocsr()
    mu.prot.pp.clr(prot, axis=axis)
    if sparse.issparse(prot.X):
        prot.X = prot.X.toarray()
    prot.X = np.asarray(prot.X, dtype=np.float32)
    prot.uns[PREPROCESSING_KEY] = {"method": "clr", "axis": int(axis)}
    logger.info("normalised mdata[%r].X (CLR, axis=%d); raw counts in layer %r", protein_key, axis, counts_layer)
    return mdata if copy else None
